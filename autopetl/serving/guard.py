"""The request guard that runs inside Ray Serve's HTTP proxy: what one client can cost is bounded
before its request reaches the application.

Ray Serve's proxy is a uvicorn server that forwards every request to the ingress replica, body
and all, as fast as the client sends it; it sets no header or body timeout and no connection
limit, and its own errors are plain text. Measured before this guard (issue 18): 260 clients
stalled mid-body held all 256 ingress slots and ``/healthz`` got no answer; 52 oversized chunked
bodies grew the proxy by 449 MiB and the ingress by 479 MiB, never released. The guard is the
nginx-style front such a server needs, in the proxy process itself:

- a body is received whole, within :attr:`GuardLimits.body_timeout_s` and up to
  :attr:`GuardLimits.max_body_bytes`, before the request is forwarded, so a stalled or oversized
  upload never holds an ingress slot and never crosses into Ray (413 on Content-Length before a
  byte is read; 408 when too slow);
- the bodies being received hold at most :attr:`GuardLimits.max_buffered_bytes` between them
  (503 beyond): what a body costs is the bytes it has sent, so a thousand uploads stalled after
  100 bytes cost 100 KB and shut out no one (issue 32; a count of upload slots did);
- a connection must finish its request headers within :attr:`GuardLimits.header_timeout_s`
  (408 and closed), and connections beyond :attr:`GuardLimits.max_connections` are answered 503
  and closed at once;
- an answer given while the body still comes (413, 408) closes with a bounded lingering read,
  so a client that sends the whole body before reading gets the answer, not a reset
  (:mod:`autopetl.serving.guard_connections`);
- every answer is JSON ``{"error": CODE, "detail": TEXT}``: Ray's proxy errors (503 back
  pressure, 408 timeout, 500) and uvicorn's own 400s (a garbage request line, TLS bytes on the
  plain port, a bad Content-Length) included.

Ray Serve no longer takes proxy middlewares as an option; its supported hook is the callback
named by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``, called in each proxy at start. The
serve command sets it (and the limits, as JSON) in the Serve controller's environment, which
the proxies inherit: :func:`controller_options`. The header timeout, the connection limit, the
JSON 400s and the lingering close are in uvicorn's connection layer:
:mod:`autopetl.serving.guard_connections`.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

from autopetl.serving.guard_connections import (
    error_body,
    patch_uvicorn,
    raise_open_files,
)

__all__ = ["GuardLimits", "RequestGuard", "controller_options", "patch_uvicorn", "reply"]

log = logging.getLogger(__name__)

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "autopetl.serving.guard:proxy_middlewares"
LIMITS_ENV = "AUTOPETL_SERVE_GUARD"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Methods that carry no body in this API: forwarded at once, never buffered.
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
# Ray's plain-text errors mapped to this API's codes.
_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    500: "internal_error",
    503: "unavailable",
    504: "gateway_timeout",
}


@dataclass(frozen=True)
class GuardLimits:
    """What one client may cost the proxy.

    Attributes:
        max_body_bytes: Largest request body (the image, or the whole multipart form).
        header_timeout_s: Time a connection has to send a request's headers.
        body_timeout_s: Time a request has to send its whole body.
        max_connections: Open connections, idle or not; beyond, 503 and closed.
        max_buffered_bytes: Bytes held by all the bodies being received or forwarded at once;
            beyond, 503. Each body counts what it has sent so far, not what it declares.
        linger_s: Longest a connection answered before its body ended is drained before closing.
        linger_idle_s: The drain ends sooner once the client has sent nothing for this long.
    """

    max_body_bytes: int = 8 * 1024 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 4096
    max_buffered_bytes: int = 256 * 1024 * 1024
    linger_s: float = 10.0
    linger_idle_s: float = 2.0

    def to_env(self) -> dict[str, str]:
        """The environment a proxy needs to install the guard with these limits."""
        return {CALLBACK_ENV: CALLBACK, LIMITS_ENV: json.dumps(asdict(self))}


def controller_options(limits: GuardLimits) -> dict[str, Any]:
    """``serve.start(controller_options=...)``: the proxies inherit the controller's env vars."""
    return {"runtime_env": {"env_vars": limits.to_env()}}


async def reply(send: Send, status: int, code: str, detail: str, *, close: bool = True) -> None:
    """An ASGI JSON error answer; ``close`` also drops the connection (an unread body follows)."""
    body = error_body(code, detail)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """ASGI middleware: bodies received whole and bounded first; every error answer JSON."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limits: GuardLimits):
        self.app = app
        self.limits = limits
        self.buffered = 0  # bytes held by the bodies in progress, all requests together

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _json_errors(send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        chunked = b"transfer-encoding" in headers
        if scope.get("method") in _BODILESS and not chunked and declared in (None, b"0"):
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await reply(send, 400, "bad_content_length", "Content-Length is not a number")
                return
            if size > limit:
                await reply(send, 413, "body_too_large", f"the body is over {limit} bytes")
                return
        held = [0]  # what this body holds of the shared budget, released when it is answered
        try:
            body = await self._receive_body(receive, send, held)
            if body is not None:
                await self.app(scope, _replay(body, receive), send)
        finally:
            self.buffered -= held[0]

    async def _receive_body(self, receive: Receive, send: Send, held: list[int]) -> bytes | None:
        """The whole body, or None once the client was answered (413, 408, 503) or went away.

        ``held[0]`` counts the bytes this body has taken of the shared budget."""
        limit = self.limits.max_body_bytes
        budget = self.limits.max_buffered_bytes
        chunks: list[bytes] = []

        async def read() -> str:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return "gone"
                chunk = message.get("body", b"")
                if held[0] + len(chunk) > limit:
                    return "too_large"
                if self.buffered + len(chunk) > budget:
                    return "busy"
                held[0] += len(chunk)
                self.buffered += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return "ok"

        try:
            outcome = await asyncio.wait_for(read(), self.limits.body_timeout_s)
        except asyncio.TimeoutError:
            await reply(
                send,
                408,
                "body_timeout",
                f"the body did not arrive within {self.limits.body_timeout_s:g} s",
            )
            return None
        if outcome == "too_large":
            chunks.clear()
            await reply(send, 413, "body_too_large", f"the body is over {limit} bytes")
            return None
        if outcome == "busy":
            chunks.clear()
            mib = 1024 * 1024
            await reply(
                send,
                503,
                "too_many_uploads",
                f"uploads in progress hold {self.buffered / mib:.1f} MiB, the server's limit of "
                f"{budget / mib:.0f} MiB; retry in a second",
            )
            return None
        return b"".join(chunks) if outcome == "ok" else None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the buffered body once, then waits on the client (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _json_errors(send: Send) -> Send:
    """Rewrite a plain-text error answer (Ray's proxy: 503 back pressure, 408, 500) as JSON."""
    held: Message | None = None
    text = bytearray()

    async def wrapped(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] >= 400:
            kinds = [v for k, v in message.get("headers", []) if k.lower() == b"content-type"]
            if not any(b"json" in v for v in kinds):
                held = message
                return
        if held is not None and message["type"] == "http.response.body":
            text.extend(message.get("body", b"")[: 4096 - len(text)])
            if message.get("more_body", False):
                return
            status = held["status"]
            detail = text.decode("utf-8", "replace").strip() or http.HTTPStatus(status).phrase
            keep = [
                (k, v)
                for k, v in held.get("headers", [])
                if k.lower() not in (b"content-type", b"content-length")
            ]
            body = error_body(_CODES.get(status, "http_error"), detail)
            keep += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            if status == 503 and not any(k.lower() == b"retry-after" for k, _ in keep):
                keep.append((b"retry-after", b"1"))
            await send({**held, "headers": keep})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            held = None
            return
        await send(message)

    return wrapped


def proxy_middlewares() -> list[Any]:
    """Ray Serve's proxy callback: install the guard with the limits the serve command set."""
    from starlette.middleware import Middleware

    limits = GuardLimits(**json.loads(os.environ.get(LIMITS_ENV, "{}")))
    raise_open_files(limits.max_connections)
    patched = patch_uvicorn(limits)
    log.info("autopetl guard in the proxy: %s on %s", limits, ", ".join(patched) or "nothing")
    return [Middleware(RequestGuard, limits=limits)]
