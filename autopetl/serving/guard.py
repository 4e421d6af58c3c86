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
- at most :attr:`GuardLimits.max_uploads` bodies are received at once (503 beyond);
- a connection must finish its request headers within :attr:`GuardLimits.header_timeout_s`
  (408 and closed), and connections beyond :attr:`GuardLimits.max_connections` are answered 503
  and closed at once;
- every answer is JSON ``{"error": CODE, "detail": TEXT}``: Ray's proxy errors (503 back
  pressure, 408 timeout, 500) and uvicorn's own 400s (a garbage request line, TLS bytes on the
  plain port, a bad Content-Length) included.

Ray Serve no longer takes proxy middlewares as an option; its supported hook is the callback
named by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``, called in each proxy at start. The
serve command sets it (and the limits, as JSON) in the Serve controller's environment, which
the proxies inherit: :func:`controller_options`. The header timeout, the connection limit and
the JSON 400s wrap methods of uvicorn's protocol classes, checked against uvicorn 0.55 (every
wrapped name is checked first; a uvicorn without them keeps its own behaviour and says so in the
proxy's log).
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import os
import resource
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

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
        max_uploads: Bodies being received at once; beyond, 503.
    """

    max_body_bytes: int = 8 * 1024 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 4096
    max_uploads: int = 512

    def to_env(self) -> dict[str, str]:
        """The environment a proxy needs to install the guard with these limits."""
        return {CALLBACK_ENV: CALLBACK, LIMITS_ENV: json.dumps(asdict(self))}


def controller_options(limits: GuardLimits) -> dict[str, Any]:
    """``serve.start(controller_options=...)``: the proxies inherit the controller's env vars."""
    return {"runtime_env": {"env_vars": limits.to_env()}}


def error_body(code: str, detail: str) -> bytes:
    return json.dumps({"error": code, "detail": detail}).encode()


def raw_response(status: int, code: str, detail: str) -> bytes:
    """A whole HTTP/1.1 JSON error response that closes the connection (written to a socket)."""
    body = error_body(code, detail)
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


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
        self.uploads = 0

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
        if self.uploads >= self.limits.max_uploads:
            await reply(
                send,
                503,
                "too_many_uploads",
                f"{self.uploads} uploads are in progress (at most {self.limits.max_uploads}); "
                "retry in a second",
            )
            return
        self.uploads += 1
        try:
            body = await self._receive_body(receive, send)
        finally:
            self.uploads -= 1
        if body is None:
            return
        await self.app(scope, _replay(body, receive), send)

    async def _receive_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once the client was answered (413, 408) or went away."""
        limit = self.limits.max_body_bytes
        chunks: list[bytes] = []
        size = 0

        async def read() -> str:
            nonlocal size
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return "gone"
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return "too_large"
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


# -- uvicorn's connection layer (below ASGI) ------------------------------------------------------
_WRAPPED = ("connection_made", "on_response_complete", "send_400_response")


def patch_uvicorn(limits: GuardLimits) -> list[str]:
    """Give uvicorn's protocols a header timeout, a connection limit and JSON 400s.

    Returns the names of the classes patched. Idempotent.
    """
    patched = []
    classes: list[Any] = []
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        classes.append(HttpToolsProtocol)
    except ImportError:  # httptools is optional in uvicorn; h11 is always there
        pass
    from uvicorn.protocols.http.h11_impl import H11Protocol

    classes.append(H11Protocol)
    for cls in classes:
        if getattr(cls, "_autopetl_guard", None) is not None:
            cls._autopetl_guard = limits
            patched.append(cls.__name__)
            continue
        if not all(callable(getattr(cls, name, None)) for name in _WRAPPED):
            log.warning("autopetl guard: %s lacks %s; its limits are not applied", cls, _WRAPPED)
            continue
        _patch(cls, limits)
        patched.append(cls.__name__)
    return patched


def _patch(cls: Any, limits: GuardLimits) -> None:
    made = cls.connection_made
    complete = cls.on_response_complete
    cls._autopetl_guard = limits

    def arm(self: Any) -> None:
        # The timer fires unless a new request's headers completed since (uvicorn makes a new
        # cycle at that moment) or the connection is already gone.
        armed = getattr(self, "cycle", None)
        timeout = cls._autopetl_guard.header_timeout_s

        def fire() -> None:
            transport = getattr(self, "transport", None)
            if (
                transport is None
                or transport.is_closing()
                or getattr(self, "cycle", None) is not armed
            ):
                return
            if armed is not None and not getattr(armed, "response_complete", True):
                return  # still answering the previous request
            transport.write(
                raw_response(
                    408, "header_timeout", f"request headers not received within {timeout:g} s"
                )
            )
            transport.close()

        old = getattr(self, "_autopetl_timer", None)
        if old is not None:
            old.cancel()
        self._autopetl_timer = asyncio.get_event_loop().call_later(timeout, fire)

    def connection_made(self: Any, transport: Any) -> None:
        allowed = cls._autopetl_guard.max_connections
        if len(self.server_state.connections) >= allowed:
            _shed(
                transport,
                raw_response(
                    503,
                    "too_many_connections",
                    f"the server holds {allowed} connections, its limit; retry in a second",
                ),
            )
            return
        made(self, transport)
        arm(self)

    def on_response_complete(self: Any) -> None:
        complete(self)
        if not self.transport.is_closing():
            arm(self)

    def send_400_response(self: Any, msg: str) -> None:
        self.transport.write(raw_response(400, "bad_request", msg))
        self.transport.close()

    cls.connection_made = connection_made
    cls.on_response_complete = on_response_complete
    cls.send_400_response = send_400_response


class _Drain(asyncio.Protocol):
    """Reads and drops what a shed client still sends, so closing does not reset the answer."""

    def data_received(self, data: bytes) -> None:
        pass


def _shed(transport: Any, response: bytes) -> None:
    """Answer a connection uvicorn never sees, then close it once the client had time to read.

    Closing a socket with unread input sends a TCP reset, which can destroy the answer before
    the client reads it; so the client's request is read and dropped for a second first.
    """
    transport.set_protocol(_Drain())
    transport.write(response)
    if transport.can_write_eof():
        transport.write_eof()
    asyncio.get_event_loop().call_later(1.0, transport.close)


def _raise_open_files(wanted: int) -> None:
    """Let the proxy hold ``wanted`` connections: the soft open-files limit, up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + 256  # Ray's own sockets and files
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def proxy_middlewares() -> list[Any]:
    """Ray Serve's proxy callback: install the guard with the limits the serve command set."""
    from starlette.middleware import Middleware

    limits = GuardLimits(**json.loads(os.environ.get(LIMITS_ENV, "{}")))
    _raise_open_files(limits.max_connections)
    patched = patch_uvicorn(limits)
    log.info("autopetl guard in the proxy: %s on %s", limits, ", ".join(patched) or "nothing")
    return [Middleware(RequestGuard, limits=limits)]
