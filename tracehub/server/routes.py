"""HTTP routes. Every error leaves as JSON: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from tracehub.faults import ACTIONS, DEFAULT_DURATION_MS, MAX_DURATION_MS, TIMED
from tracehub.ingest import EpochConflict, QueueFull, StateContention
from tracehub.protocol import LEVEL_ALIASES, LEVELS, SEQ_LIMIT, RequestError, parse_batch, parse_timestamp, validate_service
from tracehub.server.metrics import queue_figures, snapshot
from tracehub.server.state import NODE, PRINCIPAL, TOKENS, Node
from tracehub.storage import LogQuery, QueryTimeout, StorageError, StorageUnavailable, decode_cursor, encode_cursor

log = logging.getLogger(__name__)

routes = web.RouteTableDef()
MAX_LIMIT = 1000
REPLAY_STATUSES = ("pending", "completed", "lost")
BODY_ENCODINGS = ("gzip", "deflate")
# Each gzip member costs a new inflater; thousands of empty ones would keep the
# event loop busy for seconds while inflating nothing.
MAX_GZIP_MEMBERS = 64
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib's window bits value for a gzip header and trailer
DEFAULT_BODY_READ_TIMEOUT_S = 30.0
BODY_READ_TIMEOUT = web.AppKey("body_read_timeout_s", float)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=dumps_json(data), status=status,
        content_type="application/json", headers=headers,
    )  # fmt: skip


def dumps_json(data: Any) -> bytes:
    try:
        return orjson.dumps(data, default=_default)
    except TypeError:
        # orjson cannot write integers beyond 64 bits, but jsonb attrs can contain
        # them, because a float such as 1e20 is read back as an int.
        return json.dumps(data, default=_default, ensure_ascii=False).encode()


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None, **extra: Any) -> web.Response:  # fmt: skip
    return json_response({"error": {"code": code, "message": message, "field": field}, **extra}, status, headers)


# --- ingest --------------------------------------------------------------------------


def decode_json(body: bytes) -> Any:
    """Decode a JSON body; raises RequestError saying where and what to send instead."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        fast_error = exc
    try:  # the standard library reads integers beyond 64 bits, which orjson refuses
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(400, "invalid_encoding", "body",
                           f"the body is not valid UTF-8 (byte {exc.start}); send UTF-8 JSON") from None  # fmt: skip
    except (ValueError, RecursionError):
        raise RequestError(400, "invalid_json", "body",
                           f"the body is not valid JSON: {fast_error}; send one JSON object") from None  # fmt: skip


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the whole body, inflating it when it is gzip or deflate encoded.

    Raises RequestError: 415 for another Content-Encoding, 413 as soon as the
    body (after inflation) passes limit, 400 for broken compressed data, and 408
    when the body does not arrive within the node's body read timeout.
    """
    encoding = check_content_encoding(request)
    if request.content_length is not None and request.content_length > limit:
        raise RequestError(413, "body_too_large", "body",
                           f"the body has {request.content_length} bytes, the limit is {limit}; send smaller batches")  # fmt: skip
    timeout_s = request.app.get(BODY_READ_TIMEOUT, DEFAULT_BODY_READ_TIMEOUT_S)
    try:
        async with asyncio.timeout(timeout_s):
            if encoding is None:
                return await request.read()
            return await _inflate(request, encoding, limit)
    except TimeoutError:
        log.warning("%s %s: body not received within %.1fs", request.method, request.path, timeout_s)
        raise RequestError(408, "body_timeout", "body",
                           f"the body did not arrive within {timeout_s:g} s; send it at once") from None  # fmt: skip
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit, encoding) from None


async def _inflate(request: web.Request, encoding: str, limit: int) -> bytes:
    """Inflate the body as it arrives, never holding more than limit + 1 bytes of
    output, so a compression bomb is rejected after limit bytes of work."""
    inflater = zlib.decompressobj(GZIP_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    body = bytearray()
    members = 1
    async for chunk in request.content.iter_any():
        data = chunk
        while data:
            try:
                body += inflater.decompress(data, limit + 1 - len(body))
            except zlib.error as exc:
                raise _bad_compression(encoding, str(exc)) from None
            if len(body) > limit:
                raise _too_large(limit, encoding)
            data = inflater.unconsumed_tail
            if inflater.eof and inflater.unused_data:  # the next member of a multi-member gzip
                members += 1
                if members > MAX_GZIP_MEMBERS:
                    raise _bad_compression(encoding, f"the body has more than {MAX_GZIP_MEMBERS} gzip members")
                data = inflater.unused_data
                inflater = zlib.decompressobj(GZIP_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    if not inflater.eof:
        raise _bad_compression(encoding, "the compressed data ends early")
    return bytes(body)


def _too_large(limit: int, encoding: str | None) -> RequestError:
    inflated = " after decompression" if encoding else ""
    return RequestError(413, "body_too_large", "body",
                        f"the body is over the limit of {limit} bytes{inflated}; send smaller batches")  # fmt: skip


def _bad_compression(encoding: str, reason: str) -> RequestError:
    return RequestError(400, "invalid_compression", "Content-Encoding",
                        f"the body is not valid {encoding} data ({reason}); send it as Content-Encoding declares")  # fmt: skip


def check_content_encoding(request: web.Request) -> str | None:
    """Return the body's compression (gzip or deflate), or None; raises a 415 for others."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding not in BODY_ENCODINGS:
        raise RequestError(415, "unsupported_encoding", "Content-Encoding",
                           f"Content-Encoding must be gzip, deflate or identity, got {encoding[:40]!r}")  # fmt: skip
    return encoding


def check_json_type(request: web.Request) -> None:
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise RequestError(415, "unsupported_media_type", "Content-Type",
                           f"Content-Type must be application/json, got {ctype or 'none'}")  # fmt: skip


@routes.post("/ingest")
async def ingest(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    started = time.perf_counter()
    if node.faults.is_active("drop-network"):
        return await _drop_connection(request)
    check_json_type(request)
    s = node.settings
    body = decode_json(await read_body(request, s.max_body_bytes))
    received_at = datetime.now(timezone.utc)
    batch = parse_batch(
        body, now=received_at, max_entries=s.max_batch_entries, max_message_bytes=s.max_message_bytes,
        max_attrs_bytes=s.max_attrs_bytes, max_attrs_depth=s.max_attrs_depth, dumps=orjson.dumps,
    )  # fmt: skip
    if not request[PRINCIPAL].can_ingest(batch.service):
        raise RequestError(403, "forbidden", "service", f"this token may not write service {batch.service!r}")
    if not batch.entries:
        first = batch.rejected[0]
        return error_response(
            422, "invalid_entries", f"every entry of the batch is invalid; entry {first.index}: {first.reason}",
            f"batch[{first.index}].{first.field}", rejected=[r.to_json() for r in batch.rejected],
        )  # fmt: skip
    try:
        ack = await node.ingestor.ingest(batch, received_at)
    except QueueFull as exc:
        return error_response(429, "queue_full", f"{exc}; retry later", None, {"Retry-After": "1"})
    except EpochConflict as exc:
        return error_response(409, "epoch_conflict", str(exc), "epoch", nextSeq=exc.next_seq)
    except StateContention as exc:
        return error_response(503, "state_contention", str(exc), None, {"Retry-After": "1"})
    body_out = ack.to_json(s.missing_cap)
    node.latency.add((time.perf_counter() - started) * 1000)
    node.hub.ack_sent(batch.service, ack.ack_till, body_out["missing"])
    if node.faults.is_active("delay-ack"):
        await asyncio.sleep(node.faults.remaining_s("delay-ack"))
    return json_response(body_out)


async def _drop_connection(request: web.Request) -> web.StreamResponse:
    """Cut the connection without a response, as a broken network would."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError  # aiohttp drops a handler cancelled with its connection


# --- queries -------------------------------------------------------------------------


def _query_param_error(field: str, message: str) -> RequestError:
    return RequestError(400, "invalid_query", field, message)


def _is_ascii_number(raw: str, max_digits: int) -> bool:
    # str.isdigit alone accepts "²" and other digits that int() rejects.
    return raw.isascii() and raw.isdigit() and len(raw) <= max_digits


def _epoch_or_text(raw: str) -> int | str:
    """Return raw as epoch seconds when it is a plain number, else as RFC 3339 text."""
    return int(raw) if _is_ascii_number(raw, 20) else raw


def parse_limit(params: Any) -> int:
    """Return the limit query parameter (default 100); raises RequestError naming it."""
    raw = params.get("limit", "100")
    if not _is_ascii_number(raw, 4) or not 1 <= int(raw) <= MAX_LIMIT:
        raise _query_param_error("limit", f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw[:40]!r}")
    return int(raw)


def parse_log_query(params: Any) -> LogQuery:
    """Validate the query string of GET /logs into a LogQuery; raises RequestError."""
    service = params.get("service") or None
    if service is not None:
        validate_service(service)
    levels: list[str] = []
    for raw in filter(None, (params.get("level") or "").split(",")):
        level = LEVEL_ALIASES.get(raw.lower(), raw.lower())
        if level not in LEVELS:
            raise _query_param_error("level", f"unknown level {raw!r}; use one or more of {', '.join(LEVELS)}, comma-separated")
        levels.append(level)
    bounds = {}
    for name in ("from", "to"):
        raw = params.get(name)
        if raw:
            try:
                value = parse_timestamp(_epoch_or_text(raw))
            except OverflowError:  # a year-1 time with a positive offset has no UTC value
                value = None
            if value is None:
                raise _query_param_error(name, f"{name}={raw[:40]!r} is not an RFC 3339 time or epoch seconds")
            bounds[name] = value
    limit = parse_limit(params)
    cursor = None
    if params.get("cursor"):
        try:
            cursor = decode_cursor(params["cursor"])
        except (ValueError, OverflowError, OSError):  # datetime raises all three for huge times
            message = f"cursor {params['cursor'][:40]!r} is not a nextCursor returned by GET /logs"
            raise _query_param_error("cursor", message) from None
    text = params.get("q") or None
    if text is not None and ("\x00" in text or len(text) > 1000):
        raise _query_param_error("q", "q must be at most 1000 characters with no NUL")
    return LogQuery(service=service, levels=tuple(levels), text=text, since=bounds.get("from"),
                    until=bounds.get("to"), cursor=cursor, limit=limit)  # fmt: skip


@routes.get("/logs")
async def get_logs(request: web.Request) -> web.Response:
    query = parse_log_query(request.query)
    rows = await request.app[NODE].store.query_logs(query)
    next_cursor = encode_cursor(rows[-1]["ts"], rows[-1]["id"]) if len(rows) == query.limit else None
    return json_response({"logs": rows, "nextCursor": next_cursor})


@routes.get("/logs/replay")
async def list_replays(request: web.Request) -> web.Response:
    params = request.query
    service = params.get("service") or None
    if service is not None:
        validate_service(service)
    status = params.get("status") or None
    if status is not None and status not in REPLAY_STATUSES:
        raise _query_param_error("status", f"status must be one of {', '.join(REPLAY_STATUSES)}, got {status!r}")
    limit = parse_limit(params)
    store = request.app[NODE].store
    rows = await store.list_replays(service=service, status=status, limit=limit)
    return json_response({"replays": rows, "counts": await store.replay_counts()})


@routes.post("/logs/replay")
async def request_replay(request: web.Request) -> web.Response:
    check_json_type(request)
    body = decode_json(await read_body(request, 64 * 1024))
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_body", "body", 'send {"service": …, "fromSeq": …, "toSeq": …}')
    service = validate_service(body.get("service"))
    bounds = []
    for name in ("fromSeq", "toSeq"):
        value = body.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < SEQ_LIMIT:
            raise RequestError(400, "invalid_seq", name, f"{name} must be an integer from 1 to 2^63-1")
        bounds.append(value)
    if bounds[0] > bounds[1]:
        raise RequestError(400, "invalid_range", "toSeq", "toSeq must be at least fromSeq")
    node = request.app[NODE]
    state = await node.ingestor.state_of(service)
    if state is None:
        raise RequestError(404, "service_not_found", "service",
                           f"service {service!r} has sent no logs; nothing can be replayed")  # fmt: skip
    if bounds[1] > state["ackTill"]:
        raise RequestError(400, "invalid_range", "toSeq",
                           f"toSeq {bounds[1]} is beyond ackTill {state['ackTill']}; seqs never sent cannot be replayed")  # fmt: skip
    row = await node.store.create_replay(service, bounds[0], bounds[1])
    # Seqs of the range that are acknowledged but not stored become missing again,
    # so a resend (or the producer buffer) counts as new instead of a duplicate.
    requested = await node.ingestor.request_again(service, [(bounds[0], bounds[1])])
    log.info("replay %d of service %s (%d..%d) requested; %d seqs missing again",
             row["id"], service, bounds[0], bounds[1], requested)  # fmt: skip
    return json_response({"replay": row}, status=202)


# --- metrics, control and health -----------------------------------------------------


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return json_response(await node_snapshot(node))


async def node_snapshot(node: Node) -> dict[str, Any]:
    return await snapshot(node.queue, node.store, node.ingestor, node.faults, node.latency)


@routes.get("/metrics/queue")
async def metrics_queue(request: web.Request) -> web.Response:
    return json_response(await queue_figures(request.app[NODE].queue))


@routes.post("/metrics/control")
async def control(request: web.Request) -> web.Response:
    check_json_type(request)
    body = decode_json(await read_body(request, 64 * 1024))
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_body", "body", 'send {"action": …, "durationMs": …}')
    action = body.get("action")
    if action not in ACTIONS:
        raise RequestError(400, "invalid_action", "action", f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    duration = body.get("durationMs", DEFAULT_DURATION_MS.get(action, 1))
    if action in TIMED and (isinstance(duration, bool) or not isinstance(duration, int)
                            or not 1 <= duration <= MAX_DURATION_MS):  # fmt: skip
        raise RequestError(400, "invalid_duration", "durationMs", f"durationMs must be an integer from 1 to {MAX_DURATION_MS}")
    wipe = body.get("all", False)
    if not isinstance(wipe, bool):
        raise RequestError(400, "invalid_all", "all", "all must be true or false")
    node = request.app[NODE]
    result = await node.apply_control(action, duration, wipe)
    return json_response(result)


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    postgres, redis_ok = await asyncio.gather(node.store.ping(), node.queue.ping())
    body = {"status": "ok" if postgres and redis_ok else "degraded",
            "postgres": "up" if postgres else "down", "redis": "up" if redis_ok else "down"}  # fmt: skip
    return json_response(body, 200 if postgres and redis_ok else 503)


# --- access control and errors -------------------------------------------------------

PUBLIC_ROUTES = {("GET", "/health"), ("GET", "/openapi.json")}


def required_permission(method: str, path: str) -> str | None:
    """Return the permission a request needs: ingest, admin, read, or None."""
    if (method, path) in PUBLIC_ROUTES or path.startswith("/socket.io"):
        return None
    if path == "/ingest":
        return "ingest"
    if path == "/metrics/control" or (method == "POST" and path == "/logs/replay"):
        return "admin"
    return "read"


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    needed = required_permission(request.method, request.path)
    if needed is None:
        return await handler(request)
    principal = request.app[TOKENS].principal(request.headers.get("Authorization"))
    if principal is None:
        raise RequestError(401, "unauthorized", "Authorization",
                           "missing or invalid token; send 'Authorization: Bearer <token>'")  # fmt: skip
    allowed = {
        "read": principal.can_read(),
        "admin": principal.can_admin(),
        "ingest": principal.role in ("admin", "open", "ingest"),
    }[needed]
    if not allowed:
        raise RequestError(403, "forbidden", "Authorization", f"this token does not grant {needed} access")
    request[PRINCIPAL] = principal
    return await handler(request)


# --- errors --------------------------------------------------------------------------


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return json_response(exc.to_json(), exc.status, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        message = f"{exc.reason}: {request.method} {request.path}"
        if exc.status == 405:
            message += f"; allowed: {exc.headers.get('Allow', '')}"  # type: ignore[union-attr]
        return error_response(exc.status, code, message, headers={k: v for k, v in exc.headers.items()
                                                                   if k == "Allow"})  # fmt: skip
    except StateContention as exc:
        return error_response(503, "state_contention", str(exc), headers={"Retry-After": "1"})
    except QueryTimeout as exc:
        log.warning("%s %s?%s: %s", request.method, request.path, request.query_string[:200], exc)
        return error_response(504, "query_timeout", str(exc))
    except StorageUnavailable as exc:
        log.warning("%s %s: %s", request.method, request.path, exc)
        return error_response(503, "postgres_unavailable", "PostgreSQL is unreachable; retry later",
                              headers={"Retry-After": "2"})  # fmt: skip
    except (RedisError, OSError) as exc:
        log.warning("%s %s: Redis failed: %s", request.method, request.path, exc)
        return error_response(503, "redis_unavailable", "Redis is unreachable; retry later",
                              headers={"Retry-After": "2"})  # fmt: skip
    except StorageError as exc:
        log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(500, "storage_error", "the database rejected the operation")
