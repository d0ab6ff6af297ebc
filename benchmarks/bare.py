"""A bare aiohttp server, the HTTP ceiling of the ingest path.

``POST /ingest`` decodes the body with orjson and responds with a small JSON object
(the entry count), with none of TraceHub's validation, Redis or storage work.
``POST /sink`` reads the body and responds with a constant: load against it measures the
load generator itself. Run as ``python -m benchmarks.bare PORT``; it uses uvloop,
as ``tracehub serve`` does.
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web

MAX_BODY_BYTES = 64 * 1024 * 1024
SINK_ANSWER = b'{"status":"ok"}'


async def ingest(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    answer = {
        "status": "ok",
        "accepted": len(body["batch"]),
        "service": body["service"],
    }
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def sink(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=SINK_ANSWER, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.Response(body=SINK_ANSWER, content_type="application/json")


def main() -> None:
    port = int(sys.argv[1])
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.add_routes(
        [
            web.post("/ingest", ingest),
            web.post("/sink", sink),
            web.get("/health", health),
        ]
    )
    try:
        import uvloop
    except ImportError:
        loop = None
    else:
        loop = uvloop.new_event_loop()
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop
    )


if __name__ == "__main__":
    main()
