"""Log line formats: detection and parsing into level, timestamp, message and fields.

Each ``parse_*`` function reads one line of its format and returns None for a line
of another shape. ``LineParser`` picks the format (``auto`` tries each in turn and
tries the last match first). Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import orjson

from tracehub.protocol import MAX_REQUEST_ID
from tracehub.ship.levels import level_from_name, level_from_number, split_priority
from tracehub.ship.timestamps import (
    MONTHS,
    TimeRules,
    fraction_to_micros,
    localize,
    parse_iso,
    two_digit_year,
    with_inferred_year,
)

FORMATS = ("auto", "syslog", "apache", "log4j", "hdfs", "json", "raw")


@dataclass(slots=True)
class Parsed:
    """The first line of a log entry, read by one format."""

    format: str
    level: str
    message: str
    ts: datetime | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None


def parse_raw(text: str) -> Parsed:
    """Return a line of no known format as an info entry with the line as message."""
    return Parsed("raw", "info", text)


# --- syslog --------------------------------------------------------------------------

RFC5424_RE = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+)"
    r" (?P<msgid>\S+) (?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?"
)
# RFC 3164 and the file format of syslog daemons: a PRI only on the wire, and either
# "Mmm dd hh:mm:ss" or (rsyslog's high-precision format) an RFC 3339 time with a zone.
RFC3164_RE = re.compile(
    r"(?:<(?P<pri>\d{1,3})>)?"
    r"(?:(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" {1,2}(?P<day>\d{1,2})"
    r" (?P<hms>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r"|(?P<iso>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})))"
    r" (?P<host>[^\s:\[\]]+)"
    r"(?: (?P<tag>[^\s:\[\]]{1,48})(?:\[(?P<pid>[^\]\s]{1,32})\])?:)?"
    r"(?: (?P<msg>.*)|$)"
)
# Programs that log through syslog without a priority often start the message with
# their level, as sshd does with "error: " and "fatal: ".
MESSAGE_LEVEL_RE = re.compile(
    r"(?P<level>emerg|alert|crit|critical|fatal|error|warning|warn|notice|info|debug)\d?:\s",
    re.IGNORECASE,
)


def parse_syslog(text: str, rules: TimeRules) -> Parsed | None:
    """Parse an RFC 5424 or RFC 3164 syslog line, or a syslog daemon's file line."""
    match = RFC5424_RE.match(text)
    if match is not None:
        return _from_rfc5424(match, rules)
    match = RFC3164_RE.match(text)
    if match is None:
        return None
    ts = _rfc3164_time(match, rules)
    message = match["msg"] or ""
    fields = _present(
        host=match["host"], component=match["tag"], pid=_number(match["pid"])
    )
    if match["pri"] is not None:
        level, fields["facility"] = split_priority(int(match["pri"]))
    else:
        level = _level_in_message(message)
    return Parsed("syslog", level, message, ts, fields)


def _from_rfc5424(match: re.Match[str], rules: TimeRules) -> Parsed:
    level, facility = split_priority(int(match["pri"]))
    ts = None if match["ts"] == "-" else parse_iso(match["ts"], rules)
    message = (match["msg"] or "").removeprefix("\ufeff")
    fields = _present(
        host=_nil(match["host"]),
        component=_nil(match["app"]),
        pid=_number(_nil(match["procid"])),
        msgid=_nil(match["msgid"]),
        structured_data=_nil(match["sd"]),
    )
    fields["facility"] = facility
    return Parsed("syslog", level, message, ts, fields)


def _rfc3164_time(match: re.Match[str], rules: TimeRules) -> datetime | None:
    if match["iso"] is not None:
        return parse_iso(match["iso"], rules)
    hour, minute, second = (int(part) for part in match["hms"].split(":"))
    clock = (hour, minute, second, fraction_to_micros(match["frac"]))
    return with_inferred_year(MONTHS[match["month"]], int(match["day"]), clock, rules)


def _level_in_message(message: str) -> str:
    match = MESSAGE_LEVEL_RE.match(message)
    if match is None:
        return "info"
    return level_from_name(match["level"]) or "info"


# --- Apache httpd error log ----------------------------------------------------------

# "[Sun Dec 04 04:47:44 2005] [error] ..." (httpd 2.2) and
# "[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 4328636416] ..." (2.4).
APACHE_RE = re.compile(
    r"\[[A-Z][a-z]{2} (?P<month>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2})"
    r" (?P<hms>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,6}))? (?P<year>\d{4})\]"
    r" \[(?:(?P<module>[\w-]+):)?(?P<level>[a-z]+\d?)\](?P<rest>.*)"
)
APACHE_TAG_RE = re.compile(r" \[(?P<key>pid|client|remote) (?P<value>[^\]]*)\]")


def parse_apache(text: str, rules: TimeRules) -> Parsed | None:
    """Parse a line of the Apache httpd error log (2.2 or 2.4 layout)."""
    match = APACHE_RE.match(text)
    if match is None or match["month"] not in MONTHS:
        return None
    level = level_from_name(match["level"])
    if level is None:
        return None
    fields = _present(component=match["module"])
    rest = match["rest"]
    while (tag := APACHE_TAG_RE.match(rest)) is not None:
        _apache_tag(tag["key"], tag["value"], fields)
        rest = rest[tag.end() :]
    ts = _apache_time(match, rules)
    return Parsed("apache", level, rest.removeprefix(" "), ts, fields)


def _apache_tag(key: str, value: str, fields: dict[str, Any]) -> None:
    if key != "pid":
        fields[key] = value
        return
    pid, _, tid = value.partition(":tid ")
    fields["pid"] = _number(pid)
    if tid:
        fields["tid"] = _number(tid)


def _apache_time(match: re.Match[str], rules: TimeRules) -> datetime | None:
    hour, minute, second = (int(part) for part in match["hms"].split(":"))
    try:
        naive = datetime(
            int(match["year"]),
            MONTHS[match["month"]],
            int(match["day"]),
            hour,
            minute,
            second,
            fraction_to_micros(match["frac"]),
        )
    except ValueError:
        return None
    return localize(naive, rules)


# --- log4j and logback ---------------------------------------------------------------

# A bracketed thread name that may contain one level of brackets itself, as
# ZooKeeper's "[QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774]".
BRACKET = r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]"
LOG4J_LEVELS = "TRACE|DEBUG|INFO|WARNING|WARN|ERROR|FATAL|SEVERE|CRITICAL|NOTICE"
# The layouts of log4j's ISO8601 and Spark's "yy/MM/dd HH:mm:ss" dates, then the
# level, the thread in brackets before or after it, and an optional logger name.
LOG4J_RE = re.compile(
    r"(?:(?P<iso>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}"
    r"(?:[.,]\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?)"
    r"|(?P<short>\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}))"
    r"\s+(?:-\s+)?"
    r"(?:(?P<pre>" + BRACKET + r")\s+)?"
    r"\[?(?P<level>" + LOG4J_LEVELS + r")\]?"
    r"(?:\s+(?P<post>" + BRACKET + r"))?"
    r"(?:\s+(?P<logger>[A-Za-z_$][\w$.]*)(?::|\s+-)(?=\s|$))?"
    r"(?:\s+-)?"
    r"(?:\s+(?P<msg>.*)|\s*$)"
)
# ZooKeeper's thread pattern "%t:%C{1}@%L": the thread, the class and the code line.
THREAD_CLASS_RE = re.compile(
    r"(?P<thread>.*):(?P<logger>[A-Za-z_$][\w$.]*)@(?P<line>\d+)"
)
SHORT_DATE_RE = re.compile(r"(\d{2})/(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2})")


def parse_log4j(text: str, rules: TimeRules) -> Parsed | None:
    """Parse a log4j or logback line (ZooKeeper, Hadoop, Spark and default layouts)."""
    match = LOG4J_RE.match(text)
    if match is None:
        return None
    if match["iso"] is not None:
        ts = parse_iso(match["iso"], rules)
    else:
        ts = _short_date(match["short"], rules)
    fields: dict[str, Any] = {}
    bracket = match["pre"] or match["post"]
    if bracket is not None:
        _thread_fields(bracket[1:-1], fields)
    if match["logger"] is not None:
        fields["component"] = match["logger"]
    level = level_from_name(match["level"]) or "info"
    return Parsed("log4j", level, match["msg"] or "", ts, fields)


def _thread_fields(inside: str, fields: dict[str, Any]) -> None:
    match = THREAD_CLASS_RE.fullmatch(inside)
    if match is None:
        fields["thread"] = inside
        return
    fields["thread"] = match["thread"]
    fields["component"] = match["logger"]
    fields["code_line"] = int(match["line"])


def _short_date(text: str, rules: TimeRules) -> datetime | None:
    match = SHORT_DATE_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    try:
        naive = datetime(two_digit_year(year), month, day, hour, minute, second)
    except ValueError:
        return None
    return localize(naive, rules)


# --- HDFS ----------------------------------------------------------------------------

# "081109 203615 148 INFO dfs.DataNode$PacketResponder: message": yyMMdd HHmmss, the
# process id, the level and the logging class.
HDFS_RE = re.compile(
    r"(?P<date>\d{6}) (?P<time>\d{6}) (?P<pid>\d+) (?P<level>[A-Z]+)"
    r" (?P<component>[^\s:]+):(?: (?P<msg>.*)|$)"
)


def parse_hdfs(text: str, rules: TimeRules) -> Parsed | None:
    """Parse a line of a Hadoop HDFS log in the layout of the 2008 HDFS traces."""
    match = HDFS_RE.match(text)
    if match is None:
        return None
    level = level_from_name(match["level"])
    if level is None:
        return None
    date, clock = match["date"], match["time"]
    try:
        naive = datetime(
            two_digit_year(int(date[:2])),
            int(date[2:4]),
            int(date[4:]),
            int(clock[:2]),
            int(clock[2:4]),
            int(clock[4:]),
        )
    except ValueError:
        return None
    fields = {"pid": int(match["pid"]), "component": match["component"]}
    return Parsed("hdfs", level, match["msg"] or "", localize(naive, rules), fields)


# --- JSON lines ----------------------------------------------------------------------

LEVEL_KEYS = ("level", "severity", "lvl", "log.level", "loglevel")
MESSAGE_KEYS = ("msg", "message")
TIME_KEYS = ("time", "timestamp", "ts", "@timestamp")
# Epoch numbers above these are taken as milliseconds, microseconds, nanoseconds.
EPOCH_MS_ABOVE = 100_000_000_000
EPOCH_US_ABOVE = EPOCH_MS_ABOVE * 1000
EPOCH_NS_ABOVE = EPOCH_US_ABOVE * 1000


def parse_json(text: str, rules: TimeRules) -> Parsed | None:
    """Parse a JSON object line; its other keys become fields."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        document = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    fields = dict(document)
    level = _json_level(_pop_first(fields, LEVEL_KEYS), fields)
    message = _json_message(_pop_first(fields, MESSAGE_KEYS), stripped)
    ts = _json_time(_pop_first(fields, TIME_KEYS), fields, rules)
    request_id = fields.pop("request_id", None)
    if not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID:
        if request_id is not None:
            fields["original_request_id"] = request_id
        request_id = None
    return Parsed("json", level, message, ts, fields, request_id)


def _pop_first(fields: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any] | None:
    for key in keys:
        if key in fields:
            return key, fields.pop(key)
    return None


def _json_level(item: tuple[str, Any] | None, fields: dict[str, Any]) -> str:
    if item is None:
        return "info"
    key, value = item
    level = None
    if isinstance(value, str):
        level = level_from_name(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        level = level_from_number(value)
    if level is None:
        fields[f"original_{key}"] = value
        return "info"
    return level


def _json_message(item: tuple[str, Any] | None, line: str) -> str:
    if item is None:
        return line
    value = item[1]
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _json_time(
    item: tuple[str, Any] | None, fields: dict[str, Any], rules: TimeRules
) -> datetime | None:
    if item is None:
        return None
    key, value = item
    ts = None
    if isinstance(value, str):
        ts = parse_iso(value, rules)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ts = _epoch(value)
    if ts is None:
        fields[f"original_{key}"] = value
    return ts


def _epoch(value: float) -> datetime | None:
    """Read epoch seconds, or milli-, micro- or nanoseconds judged by magnitude."""
    magnitude = abs(value)
    for limit, scale in (
        (EPOCH_NS_ABOVE, 1e9),
        (EPOCH_US_ABOVE, 1e6),
        (EPOCH_MS_ABOVE, 1e3),
    ):
        if magnitude > limit:
            value = value / scale
            break
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


# --- format selection ----------------------------------------------------------------

HEAD_PARSERS: dict[str, Callable[[str, TimeRules], Parsed | None]] = {
    "json": parse_json,
    "apache": parse_apache,
    "log4j": parse_log4j,
    "hdfs": parse_hdfs,
    "syslog": parse_syslog,
}


class LineParser:
    """Parses lines in one format, or with ``auto`` in the first format that matches.

    ``auto`` tries the format of the last matching line first, so a file in one
    format costs one match a line. ``raw`` recognises no line.
    """

    def __init__(self, log_format: str, rules: TimeRules) -> None:
        if log_format not in FORMATS:
            raise ValueError(
                f"unknown format {log_format!r}; use one of {', '.join(FORMATS)}"
            )
        self.rules = rules
        self._auto = log_format == "auto"
        if self._auto:
            self._order = list(HEAD_PARSERS)
        elif log_format == "raw":
            self._order = []
        else:
            self._order = [log_format]

    def parse(self, text: str) -> Parsed | None:
        """Return the parsed line, or None when no format recognises it."""
        for index, name in enumerate(self._order):
            parsed = HEAD_PARSERS[name](text, self.rules)
            if parsed is None:
                continue
            if index and self._auto:
                self._order.insert(0, self._order.pop(index))
            return parsed
        return None


def _present(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _nil(value: str | None) -> str | None:
    """Return None for the RFC 5424 nil value "-"."""
    return None if value in (None, "-") else value


def _number(value: str | None) -> int | str | None:
    """Return a process or thread id as an integer when it is all digits."""
    if value is not None and value.isdigit():
        return int(value)
    return value
