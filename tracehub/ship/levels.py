"""Mapping the level names and numbers of common log formats to TraceHub levels."""

from __future__ import annotations

import re

from tracehub.protocol import LEVELS

# Names used by syslog, Apache, log4j/logback, java.util.logging, Python and Go
# loggers, lowercased.
LEVEL_NAMES = {
    "trace": "trace",
    "finest": "trace",
    "finer": "trace",
    "verbose": "trace",
    "debug": "debug",
    "dbg": "debug",
    "fine": "debug",
    "info": "info",
    "inf": "info",
    "information": "info",
    "informational": "info",
    "notice": "info",
    "config": "info",
    "warn": "warn",
    "wrn": "warn",
    "warning": "warn",
    "error": "error",
    "err": "error",
    "eror": "error",
    "severe": "error",
    "fatal": "fatal",
    "critical": "fatal",
    "crit": "fatal",
    "alert": "fatal",
    "emerg": "fatal",
    "emergency": "fatal",
    "panic": "fatal",
}
# Syslog severities 0 (emergency) to 7 (debug), RFC 5424 section 6.2.1.
SYSLOG_SEVERITIES = (
    "fatal",
    "fatal",
    "fatal",
    "error",
    "warn",
    "info",
    "info",
    "debug",
)
SYSLOG_FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "audit",
    "alert",
    "clock",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
)
# Apache httpd 2.4 has trace1 to trace8 below debug.
NUMBERED_TRACE_RE = re.compile(r"trace\d")


def level_from_name(name: str) -> str | None:
    """Return the TraceHub level for a level name in any case, or None if unknown."""
    key = name.strip().lower()
    if key in LEVELS:
        return key
    if NUMBERED_TRACE_RE.fullmatch(key):
        return "trace"
    return LEVEL_NAMES.get(key)


def level_from_number(value: int) -> str | None:
    """Return the level for a numeric level: syslog 0-7, or the 10-60 of pino/bunyan."""
    if 0 <= value <= 7:
        return SYSLOG_SEVERITIES[value]
    if 10 <= value <= 60 and value % 10 == 0:
        return LEVELS[value // 10 - 1]
    return None


def split_priority(priority: int) -> tuple[str, str]:
    """Split a syslog PRI value into its level and facility name."""
    facility = priority >> 3
    name = (
        SYSLOG_FACILITIES[facility]
        if facility < len(SYSLOG_FACILITIES)
        else str(facility)
    )
    return SYSLOG_SEVERITIES[priority & 7], name
