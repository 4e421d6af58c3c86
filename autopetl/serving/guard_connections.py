"""The request guard's connection layer, below ASGI: uvicorn's protocols in Ray Serve's proxy get a
header timeout, a connection limit, JSON 400s and a lingering close.

These wrap methods of uvicorn's protocol classes, checked against uvicorn 0.55 (every wrapped name
is checked first; a uvicorn without them keeps its own behaviour and says so in the proxy's log).

**Lingering close** (nginx's ``lingering_close``): a client told 413 (or 408) while its body is
still coming must be able to read that answer. Closing a socket with unread input makes the
kernel send a TCP reset, which destroys the answer in the client's buffers; a client that sends
the whole body before it reads (Python's ``urllib``, ``http.client``) then sees ``Connection reset
by peer`` instead of the 413. So after such an answer the server half-closes (the client reads
the answer to its end) and reads and drops whatever still arrives, until the client stops
sending for :attr:`GuardLimits.linger_idle_s` or :attr:`GuardLimits.linger_s` have passed; then
it closes. Nothing is buffered: memory stays flat however big the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import resource
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autopetl.serving.guard import GuardLimits

log = logging.getLogger(__name__)

_WRAPPED = ("connection_made", "on_response_complete", "send_400_response")


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


class _Linger(asyncio.Protocol):
    """Reads and drops what a client still sends after its answer, then closes, within bounds.

    ``previous`` is the uvicorn protocol the transport had: it is told when the connection is
    finally lost, so uvicorn's count of open connections stays true.
    """

    def __init__(self, transport: Any, previous: Any, total_s: float, idle_s: float) -> None:
        self.transport = transport
        self.previous = previous
        self.idle_s = idle_s
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.call_later(total_s, transport.close)
        self.idle = self.loop.call_later(idle_s, transport.close)

    def data_received(self, data: bytes) -> None:
        self.idle.cancel()
        self.idle = self.loop.call_later(self.idle_s, self.transport.close)

    def eof_received(self) -> None:  # the client has sent everything: close now
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline.cancel()
        self.idle.cancel()
        if self.previous is not None:
            self.previous.connection_lost(exc)


def _linger(transport: Any, previous: Any, total_s: float, idle_s: float) -> None:
    """Half-close ``transport`` once what was written is sent, and drain it (see the module)."""
    transport.set_protocol(_Linger(transport, previous, total_s, idle_s))
    # uvicorn may have paused reading at its high-water mark; some loops refuse to resume a
    # transport that is not paused.
    with contextlib.suppress(RuntimeError):
        transport.resume_reading()
    if transport.can_write_eof():
        transport.write_eof()


class _LingeringTransport:
    """uvicorn's transport, whose close lingers when the request's body is still coming.

    uvicorn closes the transport as soon as a ``connection: close`` answer is written
    (``RequestResponseCycle.send``); the current cycle then says whether its request's body was
    read to its end (``more_body``). Everything else is the transport's own.
    """

    def __init__(self, transport: Any, protocol: Any) -> None:
        self._transport = transport
        self._protocol = protocol
        self._lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._lingering or self._transport.is_closing()

    def close(self) -> None:
        if self._lingering:
            return  # the linger's own timers close it
        cycle = getattr(self._protocol, "cycle", None)
        unread = (
            cycle is not None
            and getattr(cycle, "response_complete", False)
            and getattr(cycle, "more_body", False)
            and not getattr(cycle, "disconnected", True)
        )
        if not unread or self._transport.is_closing():
            self._transport.close()
            return
        self._lingering = True
        limits = type(self._protocol)._autopetl_guard
        _linger(self._transport, self._protocol, limits.linger_s, limits.linger_idle_s)


def patch_uvicorn(limits: GuardLimits) -> list[str]:
    """Give uvicorn's protocols a header timeout, a connection limit, JSON 400s and a lingering
    close.

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
        # Every cycle of this connection gets the lingering transport (uvicorn hands
        # self.transport to each new cycle); flow control keeps the real one.
        self.transport = _LingeringTransport(transport, self)
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


def _shed(transport: Any, response: bytes) -> None:
    """Answer a connection uvicorn never sees, then close it once the client had time to read
    (a lingering close of a second: its request is read and dropped meanwhile)."""
    transport.write(response)
    _linger(transport, None, total_s=1.0, idle_s=1.0)


def raise_open_files(wanted: int) -> None:
    """Let the proxy hold ``wanted`` connections: the soft open-files limit, up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + 256  # Ray's own sockets and files
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
