"""The OpenAPI document at GET /openapi.json, held to the live server by schemathesis:
generated requests, valid and invalid, get no 5xx and only responses that the
document describes (status, content type, headers and body)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import Isolated, RunningServer, ThreadedServer, free_port, stop_server
from tracehub.auth import ADMIN, Principal, Tokens
from tracehub.node import open_backends
from tracehub.server.app import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]  # fmt: skip
ROUTES = {
    ("POST", "/ingest"), ("GET", "/logs"), ("GET", "/logs/replay"), ("POST", "/logs/replay"),
    ("GET", "/metrics"), ("GET", "/metrics/queue"), ("POST", "/metrics/control"), ("GET", "/health"),
    ("GET", "/openapi.json"),
}  # fmt: skip
EXAMPLES_PER_OPERATION = 40


def load_schema(url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_document_describes_every_route(threaded_server: ThreadedServer) -> None:
    response = httpx.get(f"{threaded_server.url}/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert operations == ROUTES
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert document["paths"]["/health"]["get"]["security"] == []
    batch = document["components"]["schemas"]["IngestRequest"]["properties"]["batch"]
    assert batch["maxItems"] == threaded_server.running.settings.max_batch_entries


def test_document_loads_in_schemathesis(threaded_server: ThreadedServer) -> None:
    operations = [result.ok() for result in load_schema(threaded_server.url).get_all_operations()]
    # schemathesis leaves out the operation that serves the document it loaded.
    assert {(op.method.upper(), op.path) for op in operations} == ROUTES - {("GET", "/openapi.json")}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_server_conforms_to_document(threaded_server: ThreadedServer, isolated: Isolated, mode: GenerationMode) -> None:
    url = threaded_server.url
    schema = load_schema(url)
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: schemathesis.Case) -> None:
            try:
                case.call_and_validate(base_url=url, checks=CHECKS, timeout=30)
            finally:
                if operation.path == "/metrics/control":
                    # A generated fault (drop-network, delay-ack) would break the next calls.
                    reset = httpx.post(f"{url}/metrics/control", json={"action": "reset"}, timeout=30)
                    assert reset.status_code == 200

        if mode == GenerationMode.NEGATIVE and not has_inputs(operation):
            continue  # nothing to make invalid
        call()


def has_inputs(operation: schemathesis.APIOperation) -> bool:
    return bool(operation.query or operation.headers or operation.body)


async def test_document_is_public_when_tokens_are_set(isolated: Isolated) -> None:
    port = free_port()
    settings = isolated.settings(port=port)
    backends = await open_backends(settings)
    tokens = Tokens({"adm-1": Principal(ADMIN)})
    runner = web.AppRunner(create_app(backends, run_worker=False, tokens=tokens), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            document = await client.get("/openapi.json")
            metrics = await client.get("/metrics")
    finally:
        await stop_server(RunningServer("", backends, settings), runner)
    assert document.status_code == 200
    assert metrics.status_code == 401
    assert document.json()["security"] == [{"bearer": []}]
