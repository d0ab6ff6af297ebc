"""The HTTP calls the dashboard makes, on one shared httpx.AsyncClient."""

from __future__ import annotations

import logging
from typing import Any

import httpx

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0


class ApiError(Exception):
    """A failed call to the TraceHub API, with the server's message when it sent one."""


class TraceHubApi:
    """Calls the routes of GET /metrics, /logs, /logs/replay and POST /metrics/control."""

    def __init__(
        self, base_url: str, token: str | None = None, timeout_s: float = TIMEOUT_S
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, headers=headers
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def metrics(self) -> dict[str, Any]:
        return await self._call("GET", "/metrics")

    async def queue(self) -> dict[str, Any]:
        return await self._call("GET", "/metrics/queue")

    async def recent_logs(self, limit: int = 100) -> list[dict[str, Any]]:
        """Return the newest stored logs, oldest first."""
        body = await self._call("GET", "/logs", params={"limit": limit})
        return list(reversed(body["logs"]))

    async def replays(
        self, service: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if service:
            params["service"] = service
        return await self._call("GET", "/logs/replay", params=params)

    async def request_replay(
        self, service: str, from_seq: int, to_seq: int
    ) -> dict[str, Any]:
        body = {"service": service, "fromSeq": from_seq, "toSeq": to_seq}
        return await self._call("POST", "/logs/replay", json=body)

    async def control(self, action: str) -> dict[str, Any]:
        """Start a fault, flush the queue or reset, with the server's default durations."""
        return await self._call("POST", "/metrics/control", json={"action": action})

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(
                f"{method} {path} failed: {exc or type(exc).__name__}"
            ) from exc
        if response.status_code >= 400:
            raise ApiError(
                f"{method} {path} failed with {response.status_code}: {_message(response)}"
            )
        return response.json()


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
