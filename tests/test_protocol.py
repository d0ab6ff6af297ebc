"""The protocol without I/O: validation rules and the reference ACK model."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from tracehub.protocol import (
    REPLACED_ATTR,
    TRUNCATED_ATTR,
    AckModel,
    RequestError,
    expand,
    merge,
    parse_batch,
    parse_timestamp,
    to_ranges,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def parse(body: object, **limits: int):  # type: ignore[no-untyped-def]
    options = dict(max_entries=100, max_message_bytes=1024, max_attrs_bytes=512, max_attrs_depth=4)
    options.update(limits)
    return parse_batch(body, now=NOW, dumps=orjson.dumps, **options)


def one(**fields: object) -> dict[str, object]:
    entry: dict[str, object] = {"seq": 1, "level": "info", "message": "m"}
    entry.update(fields)
    return {"service": "svc", "batch": [entry]}


@pytest.mark.parametrize("service", ["", "a" * 129, "has space", "semi;colon", "ünï", 5, None])
def test_invalid_service_rejected(service: object) -> None:
    with pytest.raises(RequestError) as info:
        parse({"service": service, "batch": [{"seq": 1, "level": "info", "message": "m"}]})
    assert info.value.field == "service"
    assert info.value.status == 400


@pytest.mark.parametrize("service", ["a", "a" * 128, "payment-service", "v1.2_x-y"])
def test_valid_service_accepted(service: str) -> None:
    assert parse({"service": service, "batch": [{"seq": 1, "level": "info", "message": "m"}]}).service == service


@pytest.mark.parametrize("body", [[], "text", 5, None])
def test_body_must_be_object(body: object) -> None:
    with pytest.raises(RequestError) as info:
        parse(body)
    assert info.value.field == "body"


@pytest.mark.parametrize("value", [None, {}, [], "x"])
def test_batch_must_be_nonempty_list(value: object) -> None:
    with pytest.raises(RequestError) as info:
        parse({"service": "svc", "batch": value})
    assert info.value.field == "batch"


def test_batch_over_entry_limit_is_413() -> None:
    body = {"service": "svc", "batch": [{"seq": i, "level": "info", "message": "m"} for i in range(1, 12)]}
    with pytest.raises(RequestError) as info:
        parse(body, max_entries=10)
    assert info.value.status == 413


@pytest.mark.parametrize("seq", ["1", -1, 0, 1.5, 1.0, True, None, 2**63, 2**64])
def test_invalid_seq_rejected_without_coercion(seq: object) -> None:
    batch = parse(one(seq=seq))
    assert batch.entries == []
    assert batch.rejected[0].field == "seq"


def test_largest_seq_accepted() -> None:
    assert parse(one(seq=2**63 - 1)).entries[0].seq == 2**63 - 1


@pytest.mark.parametrize(("raw", "level"), [("INFO", "info"), ("Warning", "warn"), ("critical", "fatal"),
                                            ("TRACE", "trace"), ("fatal", "fatal"), ("warn", "warn")])  # fmt: skip
def test_levels_normalised(raw: str, level: str) -> None:
    assert parse(one(level=raw)).entries[0].level == level


@pytest.mark.parametrize("level", [5, "verbose", "", None])
def test_unknown_level_rejected(level: object) -> None:
    assert parse(one(level=level)).rejected[0].field == "level"


@pytest.mark.parametrize("message", [123, [], None, {"a": 1}])
def test_message_must_be_string(message: object) -> None:
    assert parse(one(message=message)).rejected[0].field == "message"


def test_message_missing_rejected() -> None:
    body = {"service": "svc", "batch": [{"seq": 1, "level": "info"}]}
    assert parse(body).rejected[0].field == "message"


def test_long_message_truncated_and_marked() -> None:
    entry = parse(one(message="é" * 1000), max_message_bytes=100).entries[0]
    assert len(entry.message.encode()) <= 100
    assert entry.attrs is not None
    assert entry.attrs[TRUNCATED_ATTR] == 2000


def test_nul_replaced_and_marked() -> None:
    entry = parse(one(message="a\x00b")).entries[0]
    assert entry.message == "a\ufffdb"
    assert entry.attrs == {REPLACED_ATTR: True}


def test_lone_surrogate_rejected() -> None:
    assert parse(one(message="bad \ud800")).rejected[0].field == "message"


@pytest.mark.parametrize(("ts", "expected"), [
    ("2026-01-15T10:30:00Z", datetime(2026, 1, 15, 10, 30, tzinfo=timezone.utc)),
    ("2026-01-15T12:30:00+02:00", datetime(2026, 1, 15, 10, 30, tzinfo=timezone.utc)),
    (1768473000, datetime(2026, 1, 15, 10, 30, tzinfo=timezone.utc)),
    (1768473000000, datetime(2026, 1, 15, 10, 30, tzinfo=timezone.utc)),
    (1768473000.5, datetime(2026, 1, 15, 10, 30, 0, 500000, tzinfo=timezone.utc)),
])  # fmt: skip
def test_timestamps_parsed_to_utc(ts: object, expected: datetime) -> None:
    assert parse(one(ts=ts)).entries[0].ts == expected


@pytest.mark.parametrize("ts", ["yesterday", "2026-13-01T00:00:00Z", "2026-01-15", "2026-01-15T10:30:00",
                                "3026-01-01T00:00:00Z", "1969-12-31T23:59:59Z", True, float("nan")])  # fmt: skip
def test_bad_or_out_of_range_ts_rejected(ts: object) -> None:
    assert parse(one(ts=ts)).rejected[0].field == "ts"


def test_missing_ts_is_receive_time() -> None:
    assert parse(one()).entries[0].ts == NOW


def test_extra_keys_become_attrs() -> None:
    assert parse(one(host="web-1", pid=42)).entries[0].attrs == {"host": "web-1", "pid": 42}


def test_deep_attrs_rejected() -> None:
    deep: object = "leaf"
    for _ in range(6):
        deep = {"d": deep}
    assert parse(one(nested=deep)).rejected[0].field == "attrs"


def test_huge_attrs_rejected() -> None:
    assert parse(one(blob="x" * 1000)).rejected[0].field == "attrs"


def test_in_batch_duplicate_keeps_first_and_reports_conflict() -> None:
    body = {"service": "svc", "batch": [
        {"seq": 11, "level": "info", "message": "x"},
        {"seq": 11, "level": "info", "message": "y"},
        {"seq": 9, "level": "info", "message": "z"},
        {"seq": 9, "level": "info", "message": "z"},
    ]}  # fmt: skip
    batch = parse(body)
    assert [(e.seq, e.message) for e in batch.entries] == [(9, "z"), (11, "x")]
    assert batch.in_batch_duplicates == 2
    assert [c["seq"] for c in batch.conflicts] == [11]


def test_rejected_entry_with_valid_seq_is_settled() -> None:
    body = {"service": "svc", "batch": [{"seq": 1, "level": "info", "message": "m"},
                                        {"seq": 2, "level": "nope", "message": "m"},
                                        {"seq": "3", "level": "info", "message": "m"}]}  # fmt: skip
    batch = parse(body)
    assert batch.settled_seqs == [2]
    assert [r.index for r in batch.rejected] == [1, 2]


def test_parse_timestamp_rejects_naive_text() -> None:
    assert parse_timestamp("2026-01-15 10:30:00") is None


# --- ranges and the ACK model --------------------------------------------------------


def test_to_ranges_collapses_runs() -> None:
    assert to_ranges([1, 2, 3, 5, 7, 8]) == [(1, 3), (5, 5), (7, 8)]


def test_expand_respects_cap() -> None:
    assert expand([(1, 1_000_000)], 3) == [1, 2, 3]


def test_merge_joins_adjacent() -> None:
    assert merge([(4, 6), (1, 2), (3, 3), (9, 9)]) == [(1, 6), (9, 9)]


def test_model_records_gap_and_fill() -> None:
    model = AckModel()
    first = model.receive([1, 2, 3])
    gap = model.receive([7, 8, 9])
    fill = model.receive([4, 5, 6])
    assert (first.ack_till, first.missing) == (3, [])
    assert (gap.ack_till, gap.missing, gap.new_gaps) == (9, [(4, 6)], [(4, 6)])
    assert (fill.accepted, fill.filled, fill.missing) == ([(4, 6)], 3, [])


def test_model_accepts_but_never_requests_below_base() -> None:
    model = AckModel()
    model.receive([100, 101])
    late = model.receive([1, 2])
    again = model.receive([1, 2])
    assert late.accepted == [(1, 2)]
    assert late.missing == []
    assert again.duplicates == 2


def test_model_durable_ignores_ranges_below_base() -> None:
    model = AckModel()
    model.receive([100, 101])
    model.receive([1, 2])
    model.commit([(1, 2)])
    assert model.durable_till == 99
    model.commit([(100, 101)])
    assert model.durable_till == 101


def test_model_million_gap_is_one_range() -> None:
    model = AckModel()
    model.receive([1])
    result = model.receive([1_000_002])
    assert result.missing == [(2, 1_000_001)]


def test_model_durable_follows_done_prefix() -> None:
    model = AckModel()
    model.receive([1, 2, 3, 4, 5])
    model.commit([(3, 5)])
    assert model.durable_till == 0
    model.commit([(1, 2)])
    assert model.durable_till == 5


def test_model_lost_gap_releases_durable() -> None:
    model = AckModel()
    model.receive([1, 2])
    model.receive([5])
    model.commit([(1, 2), (5, 5)])
    assert model.durable_till == 2
    model.declare_lost([(3, 4)])
    assert model.durable_till == 5
    assert model.missing == []


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_model_any_delivery_order_converges(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 60))
    seqs = list(range(1, n + 1))
    extra = data.draw(st.lists(st.sampled_from(seqs), max_size=30))
    order = data.draw(st.permutations(seqs + extra))
    cut_points = sorted(data.draw(st.sets(st.integers(1, len(order) - 1), max_size=10))) if len(order) > 1 else []
    model = AckModel()
    accepted: list[int] = []
    start = 0
    first_batch_min = None
    for end in [*cut_points, len(order)]:
        chunk = sorted(set(order[start:end]))
        start = end
        if first_batch_min is None:
            first_batch_min = chunk[0]
        result = model.receive(chunk)
        accepted += expand(result.accepted, 10**6)
        for seq in expand(result.missing, 10**6):
            assert seq >= model.base  # nothing below the base is requested
    assert model.base == first_batch_min
    assert model.hwm == n
    assert model.missing == []
    assert sorted(accepted) == seqs  # each seq accepted exactly once


def test_nul_in_attrs_replaced_and_marked() -> None:
    entry = parse(one(note="a\x00b", nested={"k\x00": ["\x00"]})).entries[0]
    assert entry.attrs == {"note": "a\ufffdb", "nested": {"k\ufffd": ["\ufffd"]}, REPLACED_ATTR: True}


def test_timestamp_before_year_one_rejected() -> None:
    assert parse(one(ts="0001-01-01T00:00:00+14:00")).rejected[0].field == "ts"


def test_reserved_attr_keys_rejected() -> None:
    assert parse(one(_truncated_bytes=5)).rejected[0].field == "attrs"
    assert parse(one(_replaced_nul=True)).rejected[0].field == "attrs"
