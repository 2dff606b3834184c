"""gRPC transport on grpcio (``SNAIL_TRANSPORT=grpc``): one long-lived
channel to the server (grpcio's inbound server, ``SNAIL_INBOUND=grpc``, is
``snailjob.inbound``).

Both directions use the single method ``/UnaryRequest/unaryRequest``.  Every
outbound call carries a deadline.  ``Transport`` is the seam tests can swap:
anything with ``call`` and ``close`` will do; ``snailjob.native_transport``
is the other implementation, and the default (``SNAIL_TRANSPORT=native``:
HTTP/2 of its own, no grpcio), and builds its requests with the same
``RequestEncoder``.  ``FailoverTransport`` and ``Reply`` serve both.

grpcio and the generated messages (about 20 MB of RSS and the largest part
of the import time) are imported when the first channel or server is made,
not with this module: a program that only defines jobs does not load them.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import itertools
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Protocol, Set

from snailjob.errors import TransportError
from snailjob.wire.codec import clean, decode_data

if TYPE_CHECKING:
    import grpc

    from snailjob.wire import snailjob_pb2 as pb
else:
    grpc = pb = None  # set by _load_grpc()

logger = logging.getLogger(__name__)

METHOD = "/UnaryRequest/unaryRequest"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the server sends up to 10 MiB
_req_ids = itertools.count(1)


@dataclass(frozen=True)
class Reply:
    """A ``GrpcResult``: ``status`` 1 = accepted, ``data`` decoded from JSON."""

    status: int
    message: str
    data: Any

    @property
    def ok(self) -> bool:
        return self.status == 1

    @property
    def accepted(self) -> bool:
        """Accepted and, where the server answers a boolean, ``true``."""
        return self.status == 1 and self.data is not False


class Transport(Protocol):
    def call(self, uri: str, body: str, timeout: float) -> Reply: ...

    def close(self) -> None: ...


Done = Callable[[Optional[Reply], Optional[TransportError]], None]
"""What ``call_async`` calls once the call ends: ``(reply, None)`` or ``(None, error)``.
A transport may offer ``call_async(uri, body, timeout, done)``: start the call
and return without waiting (``ResultOutbox`` uses it when present)."""


def _load_grpc() -> None:
    """Import grpcio and the generated messages into this module's globals."""
    if grpc is None:
        globals()["grpc"] = importlib.import_module("grpc")
        importlib.import_module("grpc.aio")
    load_messages()


def load_messages() -> Any:
    """The generated messages (protobuf only), imported on first use."""
    if pb is None:
        globals()["pb"] = importlib.import_module("snailjob.wire.snailjob_pb2")
    return pb


class RequestEncoder:
    """Serialized ``GrpcSnailJobRequest`` bytes with ``headers()``; the
    ``metadata`` field is serialized once per URI and kept while the
    headers stay equal."""

    def __init__(self, headers: Callable[[], Dict[str, str]]) -> None:
        load_messages()
        self._headers = headers
        self._meta_headers: Dict[str, str] = {}
        self._meta: Dict[str, bytes] = {}

    def __call__(self, uri: str, body: str) -> bytes:
        headers = self._headers()
        if headers != self._meta_headers:
            self._meta_headers, self._meta = dict(headers), {}
        meta = self._meta.get(uri)
        if meta is None:
            meta = _field(2, pb.Metadata(uri=uri, headers=headers).SerializeToString())
            self._meta[uri] = meta
        return encode_request(next(_req_ids), meta, body)


def _channel_options() -> list:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # The server sends GOAWAY to clients that ping more often than every
        # 5 minutes, so no keepalive pings from this side.
        ("grpc.keepalive_time_ms", 2**31 - 1),
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.min_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5000),
        ("grpc.enable_retries", 0),
    ]


class GrpcTransport:
    """Calls the server over one channel; ``headers`` are sent on every call."""

    def __init__(self, target: str, headers: Callable[[], Dict[str, str]]) -> None:
        _load_grpc()
        self._target = target
        self._channel = grpc.insecure_channel(target, options=_channel_options())
        self._method = self._channel.unary_unary(
            METHOD,
            request_serializer=_identity,  # ``_request`` builds the bytes
            response_deserializer=pb.GrpcResult.FromString,
        )
        self._request = RequestEncoder(headers)
        self._calls: Set[Any] = set()  # calls started by call_async (a dropped future cancels its call)
        self._loop: Optional[asyncio.AbstractEventLoop] = None  # set by use_loop
        self._aio_method: Any = None
        self._aio_channel: Any = None
        self._closed = False
        self.state: Optional[grpc.ChannelConnectivity] = None

    @property
    def target(self) -> str:
        return self._target

    def watch(self) -> None:
        """Keep the channel connecting in the background and track its state
        (used to health-check standby servers)."""
        self._channel.subscribe(self._on_state, try_to_connect=True)

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        self.state = state

    @property
    def failing(self) -> bool:
        return self.state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)

    def call(self, uri: str, body: str, timeout: float) -> Reply:
        """One call with a deadline; ``TransportError`` on any gRPC failure."""
        try:
            result = self._method(self._request(uri, body), timeout=timeout)
        except grpc.RpcError as exc:
            raise _transport_error(uri, exc) from None
        except ValueError as exc:  # channel closed
            raise TransportError(f"{uri}: {exc}") from None
        return Reply(result.status, result.message, decode_data(result.data))

    def use_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make ``call_async`` start its calls on ``loop`` (an event loop
        running in another thread: the inbound server's), over a ``grpc.aio``
        channel of its own: grpcio's synchronous futures cost more CPU per
        call, and their channel starts a completion thread whenever it goes
        from no call in flight to one.  (A result sent alone goes by ``call``
        from the thread that has it: ``ResultOutbox.offer(wait=True)``.)"""
        self._loop = loop

    def detach_loop(self) -> None:
        """Undo ``use_loop`` before that loop stops: close the ``grpc.aio``
        channel on it (calls still in flight on it end as cancelled); later
        calls use the synchronous channel."""
        channel, loop = self._aio_channel, self._loop
        self._loop = self._aio_channel = self._aio_method = None
        if channel is not None and loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(channel.close(), loop).result(2.0)
            except Exception as exc:  # the loop ended meanwhile: grpcio frees the channel itself
                logger.debug("closing the results channel: %r", exc)

    def call_async(self, uri: str, body: str, timeout: float, done: Done) -> None:
        """Start one call with a deadline and return at once; ``done`` is
        called when it ends, on gRPC's thread or the loop of ``use_loop``
        (on this one if it cannot start)."""
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._start_on_loop, uri, self._request(uri, body), timeout, done)
            except RuntimeError as exc:  # the loop is closed
                done(None, TransportError(f"{uri}: {exc}", code="CANCELLED"))
            return
        try:
            future = self._method.future(self._request(uri, body), timeout=timeout)
        except ValueError as exc:  # channel closed
            done(None, TransportError(f"{uri}: {exc}"))
            return
        self._calls.add(future)
        future.add_done_callback(functools.partial(self._call_ended, uri, done))

    def _start_on_loop(self, uri: str, request: bytes, timeout: float, done: Done) -> None:
        if self._closed:
            done(None, TransportError(f"{uri}: channel closed", code="CANCELLED"))
            return
        if self._aio_method is None:
            self._aio_channel = grpc.aio.insecure_channel(self._target, options=_channel_options())
            self._aio_method = self._aio_channel.unary_unary(
                METHOD, request_serializer=_identity, response_deserializer=pb.GrpcResult.FromString)
        task = asyncio.get_running_loop().create_task(self._aio_call(uri, request, timeout, done))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _aio_call(self, uri: str, request: bytes, timeout: float, done: Done) -> None:
        try:
            result = await self._aio_method(request, timeout=timeout)
        except grpc.RpcError as exc:
            done(None, _transport_error(uri, exc))
        except asyncio.CancelledError:
            done(None, TransportError(f"{uri}: cancelled", code="CANCELLED"))
        except Exception as exc:
            done(None, TransportError(f"{uri}: {type(exc).__name__}", code="CANCELLED"))
        else:
            done(Reply(result.status, result.message, decode_data(result.data)), None)

    def _call_ended(self, uri: str, done: Done, future: Any) -> None:
        self._calls.discard(future)
        try:
            result = future.result()
        except grpc.RpcError as exc:
            done(None, _transport_error(uri, exc))
        except Exception as exc:  # cancelled (channel closed)
            done(None, TransportError(f"{uri}: {type(exc).__name__}", code="CANCELLED"))
        else:
            done(Reply(result.status, result.message, decode_data(result.data)), None)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.detach_loop()
            if self.state is not None:
                self._channel.unsubscribe(self._on_state)
            self._channel.close()


def _identity(data: bytes) -> bytes:
    return data


def _varint(value: int) -> bytes:
    """Protobuf varint of a non-negative int."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def encode_request(req_id: int, metadata_field: bytes, body: str) -> bytes:
    """``GrpcSnailJobRequest`` bytes with an already serialized ``metadata``
    field (2), in field order between ``reqId`` (1) and ``body`` (3)."""
    data = pb.GrpcSnailJobRequest(reqId=req_id, body=body).SerializeToString()
    if not req_id:
        return metadata_field + data
    end = 2  # past the tag and the first byte of reqId's varint
    while data[end - 1] & 0x80:
        end += 1
    return data[:end] + metadata_field + data[end:]


_FAILOVER_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN")


class FailoverTransport:
    """Several SnailJob servers: all calls go to one of them (sticky); when a
    call to it fails at the transport level, the next call goes to the next
    server whose channel is not failing.  Every channel keeps reconnecting in
    the background, which is how standby servers are health-checked.

    The servers of one SnailJob cluster share their database, so any of them
    can take heartbeats and results for a job another one dispatched.
    """

    def __init__(self, targets: List[str], headers: Callable[[], Dict[str, str]],
                 factory: Callable[[str, Callable[[], Dict[str, str]]], Any] = GrpcTransport) -> None:
        if not targets:
            raise ValueError("no server targets")
        self._members = [factory(target, headers) for target in targets]
        for member in self._members:
            if hasattr(member, "watch"):
                member.watch()
        self._current = 0
        self._lock = threading.Lock()
        self.can_call_async = all(callable(getattr(m, "call_async", None)) for m in self._members)
        self.lone_call_blocking = all(getattr(m, "lone_call_blocking", True) for m in self._members)

    @property
    def target(self) -> str:
        return str(self._members[self._current].target)

    def _failed(self, index: int, error: TransportError) -> None:
        if error.code not in _FAILOVER_CODES:
            return
        with self._lock:
            if index != self._current:
                return
            count = len(self._members)
            order = [(index + step) % count for step in range(1, count + 1)]
            healthy = [i for i in order if not getattr(self._members[i], "failing", False)]
            self._current = (healthy or order)[0]
            chosen = self._members[self._current].target
        if self._current != index:
            logger.warning("server %s failed (%s); switching to %s", self._members[index].target,
                           clean(str(error)), chosen)

    def call(self, uri: str, body: str, timeout: float) -> Reply:
        index = self._current
        try:
            return self._members[index].call(uri, body, timeout)
        except TransportError as exc:
            self._failed(index, exc)
            raise

    def use_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        for member in self._members:
            use = getattr(member, "use_loop", None)
            if callable(use):
                use(loop)

    def detach_loop(self) -> None:
        for member in self._members:
            detach = getattr(member, "detach_loop", None)
            if callable(detach):
                detach()

    def call_async(self, uri: str, body: str, timeout: float, done: Done) -> None:
        """``call`` without waiting (when ``can_call_async``: every member has it)."""
        index = self._current

        def ended(reply: Optional[Reply], error: Optional[TransportError]) -> None:
            if error is not None:
                self._failed(index, error)
            done(reply, error)

        self._members[index].call_async(uri, body, timeout, ended)

    def close(self) -> None:
        for member in self._members:
            member.close()


def _transport_error(uri: str, exc: grpc.RpcError) -> TransportError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    return TransportError(f"{uri}: {name}: {details}", code=name)
