"""ASGI middleware that runs before any route: API keys and the request body size limit.

- With API keys configured, every ``/v1/`` request must carry ``Authorization: Bearer <key>``
  for one of them; otherwise 401. The chat page, ``/health`` and ``/metrics`` stay open.
- A body larger than ``max_body_bytes`` gets 413, whether it announces its length or streams
  chunks: reading past the limit raises ``BodyTooLarge``, which the app turns into 413.
- A POST must say ``Content-Type: application/json``; anything else gets 415. A web page may
  send a cross-site ``text/plain`` or form POST without asking the browser first (a "simple
  request"), so a JSON body under another type would let any page drive a keyless local server.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from .protocol import error_body

Scope = dict[str, Any]


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the request body exceeds the limit of {limit} bytes")
        self.limit = limit


class Guard:
    def __init__(self, app: Any, *, api_keys: list[str], max_body_bytes: int):
        self.app, self.api_keys, self.max_body_bytes = app, [k.encode() for k in api_keys], max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_keys and scope["path"].startswith("/v1/") and not self._authorized(headers):
            return await _reply(send, 401, "invalid or missing API key: pass 'Authorization: Bearer <key>'",
                                code="invalid_api_key")
        if scope["method"] == "POST" and not _is_json(headers.get(b"content-type", b"")):
            return await _reply(send, 415, "the request body must be sent as 'Content-Type: application/json'",
                                code="unsupported_media_type")
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _reply(send, 400, "the Content-Length header is not a number")
            if int(length) > self.max_body_bytes:
                return await _reply(send, 413, str(BodyTooLarge(self.max_body_bytes)), code="body_too_large")
        seen = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        await self.app(scope, counting_receive, send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        auth = headers.get(b"authorization", b"")
        if not auth[:7].lower() == b"bearer ":
            return False
        key = auth[7:].strip()
        return any(hmac.compare_digest(key, k) for k in self.api_keys)


def _is_json(content_type: bytes) -> bool:
    return content_type.split(b";")[0].strip().lower() == b"application/json"


async def _reply(send: Any, status: int, message: str, code: str | None = None) -> None:
    body = json.dumps(error_body(status, message, None, code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
