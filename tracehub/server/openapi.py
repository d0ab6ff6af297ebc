"""The OpenAPI 3 document of the HTTP API, served at GET /openapi.json.

The document is built from the node's settings, so the limits it states (batch
entries, body bytes) are the ones the node enforces. tests/test_openapi.py runs
schemathesis against it and a live node.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tracehub.config import Settings
from tracehub.faults import ACTIONS, MAX_DURATION_MS
from tracehub.protocol import LEVEL_ALIASES, LEVELS, MAX_EPOCH, MAX_REQUEST_ID, SEQ_LIMIT
from tracehub.server.routes import MAX_LIMIT, REPLAY_STATUSES, json_response

OPENAPI_VERSION = "3.0.3"
SERVICE_PATTERN = "^[A-Za-z0-9._-]{1,128}$"
DOCUMENT = web.AppKey("openapi_document", dict)

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def integer(minimum: int | None = None, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "format": "int64"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def obj(properties: dict[str, Schema], required: list[str] | None = None, extra: bool = False) -> Schema:
    """Return an object schema; every property is required unless required says otherwise."""
    names = list(properties) if required is None else required
    return {"type": "object", "properties": properties, "required": names, "additionalProperties": extra}


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


SEQ = integer(1, SEQ_LIMIT - 1)
NUMBER = {"type": "number"}
TEXT = {"type": "string"}
TIME = {"type": "string", "format": "date-time"}
BOOL = {"type": "boolean"}
COUNT = integer(0)


# --- components ----------------------------------------------------------------------


def _request_schemas(settings: Settings) -> dict[str, Schema]:
    levels = list(LEVELS) + list(LEVEL_ALIASES)
    entry = obj(
        {
            "seq": SEQ,
            "level": {"type": "string", "enum": levels, "description": "any case is accepted"},
            "message": {"type": "string", "description": f"cut at {settings.max_message_bytes} bytes of UTF-8"},
            "request_id": nullable({"type": "string", "maxLength": MAX_REQUEST_ID}),
            "ts": {"oneOf": [TIME, {"type": "number", "description": "epoch seconds, or milliseconds above 1e11"}]},
        },
        required=["seq", "level", "message"],
        extra=True,
    )
    entry["description"] = (
        f"Any other key is stored in attrs (at most {settings.max_attrs_depth} levels"
        f" deep and {settings.max_attrs_bytes} bytes as JSON)."
    )
    epoch = {"oneOf": [{"type": "string", "minLength": 1, "maxLength": MAX_EPOCH}, integer()]}
    return {
        "LogEntry": entry,
        "IngestRequest": obj(
            {"service": {"type": "string", "pattern": SERVICE_PATTERN}, "epoch": epoch,
             "batch": {"type": "array", "minItems": 1, "maxItems": settings.max_batch_entries,
                       "items": ref("LogEntry")}},
            required=["service", "batch"],
        ),  # fmt: skip
        "ReplayRequest": obj({"service": {"type": "string", "pattern": SERVICE_PATTERN}, "fromSeq": SEQ, "toSeq": SEQ}),
        "ControlRequest": obj(
            {"action": {"type": "string", "enum": list(ACTIONS)}, "durationMs": integer(1, MAX_DURATION_MS),
             "all": BOOL},
            required=["action"],
        ),  # fmt: skip
    }


def _error_schemas() -> dict[str, Schema]:
    error = obj({"code": TEXT, "message": TEXT, "field": nullable(TEXT)})
    rejection = obj({"index": COUNT, "seq": nullable(SEQ), "field": TEXT, "reason": TEXT})
    return {
        "Error": obj({"error": error}),
        "Rejection": rejection,
        "Conflict": obj({"index": COUNT, "seq": SEQ, "reason": TEXT}),
        "InvalidEntries": obj({"error": error, "rejected": {"type": "array", "items": ref("Rejection")}}),
        "EpochConflict": obj({"error": error, "nextSeq": SEQ}),
    }


def _log_schemas() -> dict[str, Schema]:
    pair = {"type": "array", "items": SEQ, "minItems": 2, "maxItems": 2}
    ack = obj({
        "batchId": TEXT, "ackTill": COUNT, "missing": {"type": "array", "items": SEQ},
        "missingRanges": {"type": "array", "items": pair}, "missingTotal": COUNT,
        "status": {"type": "string", "enum": ["ok", "partial"]}, "replay": obj({"queued": COUNT}),
        "accepted": COUNT, "duplicates": COUNT, "durableTill": COUNT,
        "rejected": {"type": "array", "items": ref("Rejection")},
        "conflicts": {"type": "array", "items": ref("Conflict")},
    })  # fmt: skip
    row = obj({
        "id": integer(1), "service": TEXT, "seq": SEQ, "level": {"type": "string", "enum": list(LEVELS)},
        "message": TEXT, "request_id": nullable(TEXT), "ts": TIME,
        "attrs": nullable({"type": "object", "additionalProperties": True}), "received_at": TIME,
    })  # fmt: skip
    replay = obj({
        "id": integer(1), "service": TEXT, "from_seq": SEQ, "to_seq": SEQ,
        "status": {"type": "string", "enum": list(REPLAY_STATUSES)}, "reason": TEXT, "created_at": TIME,
        "completed_at": nullable(TIME), "attempts": COUNT, "filled": COUNT,
    })  # fmt: skip
    counts = {"type": "object", "additionalProperties": COUNT}
    return {
        "Ack": ack,
        "LogRow": row,
        "LogPage": obj({"logs": {"type": "array", "items": ref("LogRow")}, "nextCursor": nullable(TEXT)}),
        "Replay": replay,
        "ReplayList": obj({"replays": {"type": "array", "items": ref("Replay")}, "counts": counts}),
        "ReplayCreated": obj({"replay": ref("Replay")}),
    }


def _metrics_schemas() -> dict[str, Schema]:
    window = obj({"1s": NUMBER, "1m": NUMBER})
    fault = obj({"action": TEXT, "startedAt": NUMBER, "endsAt": NUMBER, "remainingMs": COUNT})
    worker = obj(
        {"name": TEXT, "pid": integer(), "host": TEXT, "state": TEXT, "at": NUMBER, "startedAt": NUMBER,
         "batches": COUNT, "rows": COUNT, "lastBatchAt": nullable(NUMBER), "alive": BOOL},
        required=["name", "alive"], extra=True,
    )  # fmt: skip
    service = obj({
        "service": TEXT, "base": SEQ, "ackTill": COUNT, "durableTill": COUNT, "missingTotal": COUNT,
        "lost": COUNT, "epoch": nullable(TEXT), "eps1s": NUMBER, "eps1m": NUMBER, "errorRate": NUMBER,
        "lag": integer(),
    })  # fmt: skip
    metrics = obj({
        "at": NUMBER, "eps": window, "committedEps": window, "ackRate": window, "errorRate": NUMBER,
        "ackLatencyMs": obj({"p50": nullable(NUMBER), "p99": nullable(NUMBER)}),
        "queue": obj({"depth": COUNT, "pending": COUNT, "retry": COUNT, "dead": COUNT}),
        "replays": obj({"pending": COUNT, "completed": COUNT, "lost": COUNT}),
        "workers": {"type": "array", "items": worker}, "services": {"type": "array", "items": service},
        "faults": {"type": "array", "items": ref("Fault")},
    })  # fmt: skip
    keyed = obj({"key": TEXT, "length": COUNT})
    queue = obj({
        "stream": obj({"key": TEXT, "length": COUNT, "pending": COUNT}), "retry": keyed, "dead": keyed,
        "consumers": {"type": "array", "items": obj({"name": TEXT, "pending": COUNT, "idleMs": COUNT})},
    })  # fmt: skip
    control = obj(
        {"action": TEXT, "startedAt": NUMBER, "endsAt": NUMBER, "remainingMs": COUNT,
         "flushed": obj({"stream": COUNT, "retry": COUNT}), "all": BOOL,
         "active": {"type": "array", "items": ref("Fault")}, "at": NUMBER},
        required=["action", "active", "at"],
    )  # fmt: skip
    up_down = {"type": "string", "enum": ["up", "down"]}
    health = obj({"status": {"type": "string", "enum": ["ok", "degraded"]}, "postgres": up_down, "redis": up_down})
    return {"Fault": fault, "Metrics": metrics, "QueueFigures": queue, "ControlResult": control, "Health": health}


# --- operations ----------------------------------------------------------------------

ERROR_MEANINGS = {
    "400": "the body or query cannot be used; field names it",
    "401": "missing or unknown bearer token",
    "403": "the token does not grant this operation (or this service)",
    "408": "the body did not arrive within the body read timeout",
    "409": "the epoch changed while seqs at or below ackTill were sent",
    "404": "the service has sent no logs",
    "413": "the body, after decompression, or the batch is over its limit",
    "415": "Content-Type is not JSON, or Content-Encoding is not gzip, deflate or identity",
    "422": "every entry of the batch is invalid",
    "429": "the queue is full; nothing was queued",
    "503": "Redis or PostgreSQL is unreachable",
    "504": "the query ran past the query timeout; narrow it",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}


def _json(schema: Schema, description: str, headers: Schema | None = None) -> Schema:
    response: Schema = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(*statuses: str, bodies: dict[str, str] | None = None) -> dict[str, Schema]:
    responses = {}
    for status in statuses:
        headers = RETRY_AFTER if status in ("429", "503") else None
        responses[status] = _json(ref((bodies or {}).get(status, "Error")), ERROR_MEANINGS[status], headers)
    return responses | {"400": _bad_request()}


def _bad_request() -> Schema:
    """Return the 400 response, which is plain text when aiohttp rejects the request itself."""
    response = _json(ref("Error"), ERROR_MEANINGS["400"])
    response["description"] += (
        "; a request line or header over 8190 bytes, or malformed HTTP, is rejected by"
        " aiohttp before TraceHub reads it, with a text/plain body"
    )
    response["content"]["text/plain"] = {"schema": {"type": "string"}}
    return response


READ_ERRORS = ("401", "403", "503")
BODY_ERRORS = ("400", "401", "403", "408", "413", "415", "503")


def _body(name: str) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": ref(name)}}}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _log_parameters() -> list[Schema]:
    level_list = "|".join(list(LEVELS) + list(LEVEL_ALIASES))
    return [
        _query("service", {"type": "string", "pattern": SERVICE_PATTERN}, "only this service"),
        _query("level", {"type": "string", "pattern": f"^(({level_list}),)*({level_list})$"},
               "comma-separated levels"),
        _query("q", {"type": "string", "maxLength": 1000}, "text the message contains, matched literally"),
        _query("from", {"type": "string"}, "RFC 3339 time or epoch seconds; ts at or after it"),
        _query("to", {"type": "string"}, "RFC 3339 time or epoch seconds; ts at or before it"),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}, "rows per page"),
        _query("cursor", {"type": "string"}, "nextCursor of the previous page"),
    ]  # fmt: skip


def _paths() -> dict[str, Schema]:
    public: list[Schema] = []
    return {
        "/ingest": {"post": {
            "summary": "Send a batch of logs of one service", "operationId": "ingest",
            "requestBody": _body("IngestRequest"),
            "parameters": [{"name": "Content-Encoding", "in": "header", "required": False,
                            "schema": {"type": "string", "enum": ["identity", "gzip", "deflate"]}}],
            "responses": {"200": _json(ref("Ack"), "the ACK of the batch"),
                          **_errors(*BODY_ERRORS, "409", "422", "429",
                                    bodies={"409": "EpochConflict", "422": "InvalidEntries"})},
        }},
        "/logs": {"get": {
            "summary": "Query stored logs, newest first", "operationId": "listLogs",
            "parameters": _log_parameters(),
            "responses": {"200": _json(ref("LogPage"), "one page of logs"), **_errors("400", "504", *READ_ERRORS)},
        }},
        "/logs/replay": {
            "get": {
                "summary": "List gap replays", "operationId": "listReplays",
                "parameters": [
                    _query("service", {"type": "string", "pattern": SERVICE_PATTERN}, "only this service"),
                    _query("status", {"type": "string", "enum": list(REPLAY_STATUSES)}, "only this status"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
                           "rows"),
                ],
                "responses": {"200": _json(ref("ReplayList"), "replays, newest first"),
                              **_errors("400", *READ_ERRORS)},
            },
            "post": {
                "summary": "Request a replay of a seq range", "operationId": "requestReplay",
                "requestBody": _body("ReplayRequest"),
                "responses": {"202": _json(ref("ReplayCreated"), "the replay, pending"),
                              **_errors(*BODY_ERRORS, "404")},
            },
        },
        "/metrics": {"get": {
            "summary": "Cluster figures", "operationId": "metrics",
            "responses": {"200": _json(ref("Metrics"), "the figures"), **_errors(*READ_ERRORS)},
        }},
        "/metrics/queue": {"get": {
            "summary": "Queue figures", "operationId": "queueMetrics",
            "responses": {"200": _json(ref("QueueFigures"), "the queue figures"), **_errors(*READ_ERRORS)},
        }},
        "/metrics/control": {"post": {
            "summary": "Start a fault, flush the queue, or reset", "operationId": "control",
            "requestBody": _body("ControlRequest"),
            "responses": {"200": _json(ref("ControlResult"), "what was done"), **_errors(*BODY_ERRORS)},
        }},
        "/health": {"get": {
            "summary": "PostgreSQL and Redis reachability", "operationId": "health", "security": public,
            "responses": {"200": _json(ref("Health"), "both are up"),
                          "503": _json(ref("Health"), "one is down"), "400": _bad_request()},
        }},
        "/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi", "security": public,
            "responses": {"200": _json({"type": "object"}, "the OpenAPI document"), "400": _bad_request()},
        }},
    }  # fmt: skip


def build_document(settings: Settings) -> dict[str, Any]:
    """Return the OpenAPI document of a node running with settings."""
    schemas = {**_request_schemas(settings), **_error_schemas(), **_log_schemas(), **_metrics_schemas()}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "TraceHub",
            "version": "0.1.0",
            "description": (
                "Sequenced log ingest with exact ACKs. Every error body is"
                ' {"error": {"code", "message", "field"}}. Request bodies may be gzip or deflate'
                f" encoded; the limit of {settings.max_body_bytes} bytes applies after decompression."
            ),
        },
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def get_openapi(request: web.Request) -> web.Response:
    return json_response(request.app[DOCUMENT])


def add_openapi_route(app: web.Application, settings: Settings) -> None:
    """Build the document for settings and serve it at GET /openapi.json."""
    app[DOCUMENT] = build_document(settings)
    app.router.add_get("/openapi.json", get_openapi)
