"""Pure tests of `tracehub ship`: formats, timestamps, lines, multi-line joining.

The log lines come from the Loghub samples in tests/data/loghub, copied here as
text (one sample line to a constant, unwrapped) so these tests do no I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from tracehub.ship.entries import FIELDS_BUDGET_BYTES, entry_body
from tracehub.ship.lines import Line, LineSplitter
from tracehub.ship.multiline import Joiner, LogEntry
from tracehub.ship.parsers import LineParser, Parsed
from tracehub.ship.sender import BACKOFF_MAX_S, backoff_delay, request_body
from tracehub.ship.timestamps import TimeRules, parse_zone, two_digit_year

NOW = datetime(2026, 12, 4, 16, 0, tzinfo=timezone.utc)
RULES = TimeRules(now=NOW)

APACHE_NOTICE = "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok /etc/httpd/conf/workers2.properties"
APACHE_ERROR = (
    "[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6"
)
APACHE_CLIENT = "[Sun Dec 04 05:15:09 2005] [error] [client 222.166.160.184] Directory index forbidden by rule: /var/www/html/"
HDFS_INFO = "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating"
HDFS_WARN = "081109 214043 2561 WARN dfs.DataNode$DataXceiver: 10.251.30.85:50010:Got exception while serving blk_-2918118818249673980 to /10.251.90.64:"
SSH_INFO = (
    "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186"
)
SSH_ERROR = "Dec 10 07:51:15 LabSZ sshd[24324]: error: Received disconnect from 195.154.37.122: 3: com.jcraft.jsch.JSchException: Auth fail [preauth]"
SSH_FATAL = "Dec 10 11:03:53 LabSZ sshd[25457]: fatal: Write failed: Connection reset by peer [preauth]"
ZK_INFO = "2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774] - Notification time out: 3200"
ZK_WARN = "2015-07-29 19:04:29,071 - WARN  [SendWorker:188978561024:QuorumCnxManager$SendWorker@688] - Send worker leaving thread"
ZK_ERROR = "2015-07-29 23:44:28,903 - ERROR [CommitProcessor:1:NIOServerCnxn@180] - Unexpected Exception: "


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def parse(line: str, log_format: str = "auto", rules: TimeRules = RULES) -> Parsed:
    parsed = LineParser(log_format, rules).parse(line)
    assert parsed is not None, f"no format matched {line!r}"
    return parsed


# --- Apache --------------------------------------------------------------------------


def test_apache_notice_is_info() -> None:
    parsed = parse(APACHE_NOTICE)
    assert parsed.format == "apache"
    assert parsed.level == "info"
    assert parsed.ts == utc(2005, 12, 4, 4, 47, 44)
    assert parsed.message == "workerEnv.init() ok /etc/httpd/conf/workers2.properties"


def test_apache_error_with_client() -> None:
    parsed = parse(APACHE_CLIENT)
    assert parsed.level == "error"
    assert parsed.ts == utc(2005, 12, 4, 5, 15, 9)
    assert parsed.fields == {"client": "222.166.160.184"}
    assert parsed.message == "Directory index forbidden by rule: /var/www/html/"


def test_apache_24_module_pid_tid() -> None:
    line = "[Wed Oct 11 14:32:52.123456 2000] [core:warn] [pid 35708:tid 4328636416] AH00098: pid file overwritten"
    parsed = parse(line)
    assert parsed.level == "warn"
    assert parsed.ts == utc(2000, 10, 11, 14, 32, 52, 123456)
    assert parsed.fields == {"component": "core", "pid": 35708, "tid": 4328636416}
    assert parsed.message == "AH00098: pid file overwritten"


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("emerg", "fatal"),
        ("crit", "fatal"),
        ("error", "error"),
        ("warn", "warn"),
        ("notice", "info"),
        ("info", "info"),
        ("debug", "debug"),
        ("trace3", "trace"),
    ],
)
def test_apache_level_names(name: str, level: str) -> None:
    assert parse(f"[Sun Dec 04 04:47:44 2005] [{name}] x").level == level


# --- HDFS ----------------------------------------------------------------------------


def test_hdfs_info_line() -> None:
    parsed = parse(HDFS_INFO)
    assert parsed.format == "hdfs"
    assert parsed.level == "info"
    assert parsed.ts == utc(2008, 11, 9, 20, 36, 15)
    assert parsed.fields == {"pid": 148, "component": "dfs.DataNode$PacketResponder"}
    assert (
        parsed.message
        == "PacketResponder 1 for block blk_38865049064139660 terminating"
    )


def test_hdfs_warn_line() -> None:
    parsed = parse(HDFS_WARN)
    assert parsed.level == "warn"
    assert parsed.ts == utc(2008, 11, 9, 21, 40, 43)


# --- OpenSSH and syslog --------------------------------------------------------------


def test_openssh_line_year_from_clock() -> None:
    parsed = parse(SSH_INFO)
    assert parsed.format == "syslog"
    assert parsed.level == "info"
    # December 10 is six days ahead of the clock, so it belongs to the year before.
    assert parsed.ts == utc(2025, 12, 10, 6, 55, 46)
    assert parsed.fields == {"host": "LabSZ", "component": "sshd", "pid": 24200}
    assert parsed.message == "Invalid user webmaster from 173.234.31.186"


def test_openssh_line_with_given_year() -> None:
    rules = TimeRules(year=2015, now=NOW)
    assert parse(SSH_INFO, rules=rules).ts == utc(2015, 12, 10, 6, 55, 46)


def test_openssh_error_and_fatal_prefixes() -> None:
    assert parse(SSH_ERROR).level == "error"
    assert parse(SSH_FATAL).level == "fatal"
    assert (
        parse(SSH_FATAL).message
        == "fatal: Write failed: Connection reset by peer [preauth]"
    )


def test_rfc5424_with_bom() -> None:
    line = "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \ufeff'su root' failed for lonvick on /dev/pts/8"
    parsed = parse(line)
    assert parsed.format == "syslog"
    assert parsed.level == "fatal"  # severity 2, critical
    assert parsed.ts == utc(2003, 10, 11, 22, 14, 15, 3000)
    assert parsed.fields == {
        "host": "mymachine.example.com",
        "component": "su",
        "msgid": "ID47",
        "facility": "auth",
    }
    assert parsed.message == "'su root' failed for lonvick on /dev/pts/8"


def test_rfc5424_structured_data() -> None:
    line = (
        '<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - [exampleSDID@32473 iut="3"'
        ' eventSource="Application"] An application event log entry'
    )
    parsed = parse(line)
    assert parsed.level == "info"  # severity 5, notice
    assert parsed.ts == utc(2003, 8, 24, 12, 14, 15, 3)
    assert parsed.fields["facility"] == "local4"
    assert parsed.fields["pid"] == 8710
    assert (
        parsed.fields["structured_data"]
        == '[exampleSDID@32473 iut="3" eventSource="Application"]'
    )
    assert parsed.message == "An application event log entry"


def test_rfc3164_with_priority() -> None:
    parsed = parse(
        "<13>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8"
    )
    assert parsed.level == "info"  # severity 5, notice
    assert parsed.fields == {"host": "mymachine", "component": "su", "facility": "user"}
    assert parsed.ts == utc(2026, 10, 11, 22, 14, 15)


def test_syslog_file_line_with_rfc3339_time() -> None:
    parsed = parse("2024-03-01T10:00:00.5+01:00 web1 nginx[77]: started")
    assert parsed.format == "syslog"
    assert parsed.ts == utc(2024, 3, 1, 9, 0, 0, 500000)
    assert parsed.fields == {"host": "web1", "component": "nginx", "pid": 77}


# --- log4j and logback ---------------------------------------------------------------


def test_zookeeper_info_line() -> None:
    parsed = parse(ZK_INFO)
    assert parsed.format == "log4j"
    assert parsed.level == "info"
    assert parsed.ts == utc(2015, 7, 29, 17, 41, 44, 747000)
    assert parsed.fields == {
        "thread": "QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181",
        "component": "FastLeaderElection",
        "code_line": 774,
    }
    assert parsed.message == "Notification time out: 3200"


def test_zookeeper_warn_and_error_lines() -> None:
    assert parse(ZK_WARN).level == "warn"
    assert parse(ZK_WARN).fields["component"] == "QuorumCnxManager$SendWorker"
    error = parse(ZK_ERROR)
    assert error.level == "error"
    assert error.ts == utc(2015, 7, 29, 23, 44, 28, 903000)
    assert error.message == "Unexpected Exception: "


def test_spark_short_date_line() -> None:
    line = "17/06/09 20:10:40 INFO executor.CoarseGrainedExecutorBackend: Registered signal handlers for [TERM, HUP, INT]"
    parsed = parse(line)
    assert parsed.format == "log4j"
    assert parsed.level == "info"
    assert parsed.ts == utc(2017, 6, 9, 20, 10, 40)
    assert parsed.fields == {"component": "executor.CoarseGrainedExecutorBackend"}
    assert parsed.message == "Registered signal handlers for [TERM, HUP, INT]"


def test_logback_default_layout() -> None:
    parsed = parse(
        "2024-01-15 10:30:00.123 [main] ERROR com.example.App - payment failed"
    )
    assert parsed.level == "error"
    assert parsed.fields == {"thread": "main", "component": "com.example.App"}
    assert parsed.message == "payment failed"


def test_hadoop_level_before_thread() -> None:
    parsed = parse(
        "2015-10-18 18:01:47,978 WARN [main] org.apache.hadoop.mapreduce.v2.app.MRAppMaster: Created MRAppMaster"
    )
    assert parsed.level == "warn"
    assert parsed.fields == {
        "thread": "main",
        "component": "org.apache.hadoop.mapreduce.v2.app.MRAppMaster",
    }
    assert parsed.message == "Created MRAppMaster"


def test_log4j_message_without_logger() -> None:
    parsed = parse("2024-01-15 10:30:00,000 FATAL Starting server on port 80: failed")
    assert parsed.level == "fatal"
    assert parsed.fields == {}
    assert parsed.message == "Starting server on port 80: failed"


# --- JSON lines ----------------------------------------------------------------------


def test_json_usual_keys() -> None:
    parsed = parse(
        '{"level":"warning","msg":"disk low","time":"2024-01-15T10:30:00Z","host":"db1","free":3}'
    )
    assert parsed.format == "json"
    assert parsed.level == "warn"
    assert parsed.message == "disk low"
    assert parsed.ts == utc(2024, 1, 15, 10, 30)
    assert parsed.fields == {"host": "db1", "free": 3}


@pytest.mark.parametrize(
    ("line", "level", "ts"),
    [
        (
            '{"severity":"ERROR","message":"x","timestamp":"2024-01-15 10:30:00"}',
            "error",
            utc(2024, 1, 15, 10, 30),
        ),
        ('{"lvl":"crit","msg":"x","ts":1705314600}', "fatal", utc(2024, 1, 15, 10, 30)),
        (
            '{"level":50,"msg":"x","time":1705314600000}',
            "error",
            utc(2024, 1, 15, 10, 30),
        ),
        (
            '{"level":"debug","msg":"x","@timestamp":"2024-01-15T11:30:00+01:00"}',
            "debug",
            utc(2024, 1, 15, 10, 30),
        ),
    ],
)
def test_json_level_and_time_variants(line: str, level: str, ts: datetime) -> None:
    parsed = parse(line)
    assert parsed.level == level
    assert parsed.ts == ts


def test_json_unknown_values_kept() -> None:
    parsed = parse(
        '{"level":"loud","msg":{"a":1},"time":"yesterday","request_id":"r-7"}'
    )
    assert parsed.level == "info"
    assert parsed.message == '{"a":1}'
    assert parsed.ts is None
    assert parsed.request_id == "r-7"
    assert parsed.fields == {"original_level": "loud", "original_time": "yesterday"}


def test_json_naive_time_uses_zone() -> None:
    rules = TimeRules(zone=parse_zone("+02:00"), now=NOW)
    parsed = parse('{"msg":"x","time":"2024-01-15T12:30:00"}', rules=rules)
    assert parsed.ts == utc(2024, 1, 15, 10, 30)


def test_json_array_is_not_json_entry() -> None:
    assert LineParser("json", RULES).parse("[1, 2]") is None
    assert LineParser("json", RULES).parse("{not json") is None


# --- format choice and time rules ----------------------------------------------------


def test_forced_format_rejects_others() -> None:
    assert LineParser("apache", RULES).parse(SSH_INFO) is None
    assert LineParser("syslog", RULES).parse(SSH_INFO) is not None


def test_raw_format_recognises_nothing() -> None:
    assert LineParser("raw", RULES).parse(APACHE_NOTICE) is None


def test_unknown_format_raises() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        LineParser("csv", RULES)


def test_apache_time_in_given_zone() -> None:
    rules = TimeRules(zone=parse_zone("Europe/Berlin"), now=NOW)
    # December is winter time in Berlin: UTC+1.
    assert parse(APACHE_ERROR, rules=rules).ts == utc(2005, 12, 4, 3, 47, 44)


def test_year_rule_near_new_year() -> None:
    now = utc(2027, 1, 1, 12, 0)
    rules = TimeRules(now=now)
    assert parse("Jan  2 06:00:00 h app: x", rules=rules).ts == utc(2027, 1, 2, 6)
    assert parse("Jan  5 06:00:00 h app: x", rules=rules).ts == utc(2026, 1, 5, 6)
    assert parse("Dec 31 23:59:59 h app: x", rules=rules).ts == utc(
        2026, 12, 31, 23, 59, 59
    )


def test_year_rule_february_29() -> None:
    assert parse("Feb 29 01:02:03 h app: x").ts == utc(2024, 2, 29, 1, 2, 3)


def test_zone_parsing() -> None:
    assert parse_zone("UTC") == timezone.utc
    assert parse_zone("-05:30") == timezone(-timedelta(hours=5, minutes=30))
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_zone("Mars/Olympus")


def test_two_digit_years() -> None:
    assert two_digit_year(8) == 2008
    assert two_digit_year(68) == 2068
    assert two_digit_year(69) == 1969


# --- line splitting ------------------------------------------------------------------


def split(chunks: list[bytes], max_bytes: int = 1024) -> list[Line]:
    splitter = LineSplitter(max_bytes)
    lines: list[Line] = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
    return lines + splitter.finish()


def test_lines_crlf_cr_and_lf() -> None:
    lines = split([b"one\r\ntwo\rthree\nfour"])
    assert [line.text for line in lines] == ["one", "two", "three", "four"]
    assert [line.end for line in lines] == [5, 9, 15, 19]
    assert [line.number for line in lines] == [1, 2, 3, 4]


def test_lines_crlf_split_across_chunks() -> None:
    lines = split([b"one\r", b"\ntwo\r", b"three"])
    assert [line.text for line in lines] == ["one", "two", "three"]
    assert lines[0].end == 5


def test_lines_cr_at_end_waits_for_next_byte() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\r") == []
    assert [line.text for line in splitter.feed(b"two\n")] == ["one", "two"]


def test_lines_invalid_utf8_replaced() -> None:
    (line,) = split([b"caf\xe9 \xff ok\n"])
    assert line.text == "caf\ufffd \ufffd ok"
    assert line.invalid_utf8


def test_lines_real_replacement_char_not_flagged() -> None:
    (line,) = split(["already \ufffd here\n".encode()])
    assert not line.invalid_utf8


def test_lines_long_line_cut() -> None:
    (line, after) = split([b"x" * 5000 + b"\n", b"next\n"], max_bytes=1000)
    assert line.text == "x" * 1000
    assert line.cut_bytes == 4000
    assert line.end == 5001
    assert after.text == "next"
    assert after.cut_bytes == 0


def test_lines_cut_inside_multibyte_char() -> None:
    (line,) = split(["é".encode() * 10 + b"\n"], max_bytes=9)
    assert line.text == "é" * 4
    assert line.cut_bytes == 12
    assert not line.invalid_utf8


def test_lines_long_line_across_chunks() -> None:
    chunks = [b"y" * 700 for _ in range(10)] + [b"\n"]
    (line,) = split(chunks, max_bytes=1000)
    assert len(line.text) == 1000
    assert line.cut_bytes == 6000


def test_lines_resume_offset_and_number() -> None:
    splitter = LineSplitter(offset=100, number=7)
    (line,) = splitter.feed(b"abc\n")
    assert line.start == 100
    assert line.end == 104
    assert line.number == 8


# --- multi-line joining --------------------------------------------------------------


def join(
    text: bytes, max_bytes: int = 64 * 1024, max_lines: int = 1000
) -> list[LogEntry]:
    joiner = Joiner(LineParser("auto", RULES), max_bytes, max_lines)
    entries: list[LogEntry] = []
    for line in split([text], max_bytes):
        entries += joiner.feed(line)
    return entries + joiner.flush()


STACK_TRACE = (
    ZK_ERROR + "\n"
    "java.nio.channels.CancelledKeyException\n"
    "\tat sun.nio.ch.SelectionKeyImpl.ensureValid(SelectionKeyImpl.java:73)\n"
    "\tat org.apache.zookeeper.server.NIOServerCnxn.sendBuffer(NIOServerCnxn.java:153)\n"
    "Caused by: java.io.IOException: Broken pipe\n"
    "\t... 3 more\n" + ZK_INFO + "\n"
)


def test_stack_trace_joined() -> None:
    first, second = join(STACK_TRACE.encode())
    assert first.parsed.level == "error"
    assert first.message.splitlines()[0] == "Unexpected Exception: "
    assert first.message.splitlines()[1] == "java.nio.channels.CancelledKeyException"
    assert first.message.endswith("\t... 3 more")
    assert len(first.message.splitlines()) == 6
    assert first.line_number == 1
    assert first.last_line_number == 6
    assert second.line_number == 7
    assert second.parsed.message == "Notification time out: 3200"


def test_entry_end_offset_covers_joined_lines() -> None:
    data = STACK_TRACE.encode()
    first, second = join(data)
    assert first.end == data.index(ZK_INFO.encode())
    assert second.end == len(data)


def test_unknown_lines_are_separate_raw_entries() -> None:
    entries = join(b"plain one\nplain two\n  indented joins\n")
    assert [e.message for e in entries] == ["plain one", "plain two\n  indented joins"]
    assert entries[0].parsed.format == "raw"
    assert entries[0].parsed.level == "info"


def test_blank_lines_skipped() -> None:
    entries = join(b"\n   \n" + HDFS_INFO.encode() + b"\n\n")
    assert len(entries) == 1
    assert entries[0].line_number == 3


def test_leading_continuation_is_own_entry() -> None:
    entries = join(b"\tat nothing.Before(X.java:1)\n")
    assert [e.message for e in entries] == ["\tat nothing.Before(X.java:1)"]


def test_joined_entry_split_at_line_limit() -> None:
    text = ZK_ERROR + "\n" + "".join(f"\tat frame{i}\n" for i in range(5))
    first, second = join(text.encode(), max_lines=3)
    assert len(first.message.splitlines()) == 3
    assert second.continued
    assert second.parsed.level == "error"
    assert second.parsed.ts == first.parsed.ts
    assert second.message == "\tat frame2\n\tat frame3\n\tat frame4"


def test_joined_entry_split_at_byte_limit() -> None:
    text = "head line\n" + "".join(f"\t{'z' * 50}\n" for i in range(4))
    entries = join(text.encode(), max_bytes=120)
    assert len(entries) == 2
    assert all(len(e.message.encode()) <= 120 for e in entries)
    assert entries[1].continued


# --- entry bodies --------------------------------------------------------------------


def entry_of(text: str, **flags: object) -> LogEntry:
    (entry,) = join(text.encode())
    for name, value in flags.items():
        setattr(entry, name, value)
    return entry


def test_body_fields_and_metadata() -> None:
    body = entry_body(entry_of(ZK_WARN), "zk.log", NOW)
    assert body["level"] == "warn"
    assert body["ts"] == "2015-07-29T19:04:29.071000+00:00"
    assert body["message"] == "Send worker leaving thread"
    assert body["file"] == "zk.log"
    assert body["line_number"] == 1
    assert body["format"] == "log4j"
    assert body["component"] == "QuorumCnxManager$SendWorker"
    assert "seq" not in body


def test_body_flags_truncation_and_utf8() -> None:
    body = entry_body(entry_of("plain", cut_bytes=40, invalid_utf8=True), None, NOW)
    assert body["truncated"] is True
    assert body["truncated_bytes"] == 40
    assert body["invalid_utf8"] is True
    assert "file" not in body


def test_body_renames_colliding_fields() -> None:
    body = entry_body(
        entry_of('{"msg":"x","seq":9,"file":"a.py","format":"v2"}'), "app.log", NOW
    )
    assert body["field_seq"] == 9
    assert body["field_file"] == "a.py"
    assert body["field_format"] == "v2"
    assert body["file"] == "app.log"


def test_body_future_time_left_to_server() -> None:
    body = entry_body(entry_of('{"msg":"x","time":"2030-01-01T00:00:00Z"}'), None, NOW)
    assert "ts" not in body
    assert body["ts_out_of_range"] == "2030-01-01T00:00:00+00:00"


def test_body_oversized_fields_go_to_message() -> None:
    line = orjson.dumps(
        {"msg": "big", "blob": "b" * (FIELDS_BUDGET_BYTES + 1)}
    ).decode()
    body = entry_body(entry_of(line), None, NOW)
    assert "blob" not in body
    assert body["fields_in_message"] is True
    assert body["message"].startswith("big\n{")


# --- request bodies and backoff ------------------------------------------------------


def test_request_body_splices_seq() -> None:
    raw = request_body(
        "svc",
        "e1",
        [(7, '{"level":"info","message":"a"}'), (8, '{"level":"warn","message":"b"}')],
    )
    decoded = orjson.loads(raw)
    assert decoded == {
        "service": "svc",
        "epoch": "e1",
        "batch": [
            {"seq": 7, "level": "info", "message": "a"},
            {"seq": 8, "level": "warn", "message": "b"},
        ],
    }


def test_backoff_grows_and_stays_capped() -> None:
    first = [backoff_delay(1) for _ in range(50)]
    late = [backoff_delay(30) for _ in range(50)]
    assert all(0.1 <= d <= 0.2 for d in first)
    assert all(BACKOFF_MAX_S / 2 <= d <= BACKOFF_MAX_S for d in late)
    assert len(set(late)) > 1  # jitter


def test_backoff_honours_retry_after() -> None:
    assert backoff_delay(1, retry_after=3.0) == 3.0
