"""What both inbound servers do with a call once its request message is in
(``snailjob.inbound`` on grpcio, ``snailjob.native_inbound`` on
``snailjob.http2``): read the envelope without decoding the body, check
``SJ-TOKEN`` before the body is decoded, then run the handler on the
event-loop thread (the URIs ``inline`` accepts) or on a pool of worker
threads, and build the ``GrpcResult``.  Refusals are logged at most once a
minute per peer, quoted.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib
import logging
import threading
import time
from collections import OrderedDict
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

from snailjob.wire.codec import dumps, short

if TYPE_CHECKING:
    from snailjob.transport import Reply
    from snailjob.wire import snailjob_pb2 as pb
else:
    pb = None  # set by _load_pb()

TOKEN_HEADER = "SJ-TOKEN"
_MAX_REPLY_MESSAGE = 2000


def _load_pb() -> None:
    if pb is None:
        globals()["pb"] = importlib.import_module("snailjob.wire.snailjob_pb2")


# --- the request envelope, read without decoding the body -------------------


class EnvelopeError(ValueError):
    """The bytes are not a ``GrpcSnailJobRequest``."""


@dataclass
class Envelope:
    req_id: int
    uri: str
    headers: Dict[str, str]
    body: memoryview  # UTF-8 bytes, decoded only once the token is checked


def _read_varint(data: memoryview, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise EnvelopeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise EnvelopeError("varint longer than 10 bytes")


def read_envelope(raw: bytes) -> Envelope:
    """The fields of a serialized ``GrpcSnailJobRequest`` (reqId 1,
    metadata 2, body 3), with protobuf's rules: unknown fields skipped, the
    last scalar wins, repeated ``metadata`` fields merge.  Only the metadata
    is parsed; the body stays a slice of ``raw``."""
    _load_pb()
    data = memoryview(raw)
    req_id, metadata, body = 0, [], data[0:0]
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, kind = key >> 3, key & 7
        if number == 0:
            raise EnvelopeError("field number 0")
        if kind == 0:
            value, pos = _read_varint(data, pos)
            if number == 1:
                req_id = value - (1 << 64) if value >= 1 << 63 else value
        elif kind == 2:
            length, pos = _read_varint(data, pos)
            end = pos + length
            if end > len(data):
                raise EnvelopeError("truncated field")
            if number == 2:
                metadata.append(data[pos:end])
            elif number == 3:
                body = data[pos:end]
            elif number == 1:
                raise EnvelopeError("reqId is not a varint")
            pos = end
        elif kind in (1, 5):
            if number in (1, 2, 3):
                raise EnvelopeError(f"field {number} has the wrong wire type")
            pos += 8 if kind == 1 else 4
            if pos > len(data):
                raise EnvelopeError("truncated field")
        else:
            raise EnvelopeError(f"wire type {kind} is not allowed here")
    try:
        meta = pb.Metadata.FromString(b"".join(bytes(m) for m in metadata))
    except Exception as exc:  # google.protobuf.message.DecodeError, invalid UTF-8
        raise EnvelopeError(f"metadata: {exc}") from None
    return Envelope(req_id, meta.uri, dict(meta.headers), body)


def token_of(headers: Dict[str, str]) -> Optional[str]:
    """``SJ-TOKEN`` as the server spells it; any case is accepted."""
    token = headers.get(TOKEN_HEADER)
    if token is None:
        token = next((v for k, v in headers.items() if k.lower() == "sj-token"), None)
    return token


def token_refusal(headers: Dict[str, str], expected: str) -> Optional[str]:
    """Why the call's token is refused, or None (constant-time compare)."""
    token = token_of(headers)
    if token is None:
        return "SJ-TOKEN header missing"
    if not hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode("utf-8", "replace")):
        return "SJ-TOKEN does not match this client's token"
    return None


# --- refusals, logged once a minute per peer ----------------------------------


class RefusalLog:
    """Logs refusals at WARNING at most once per ``interval`` per key (a
    peer's address, or a reason: ``per`` names it), with the count of those
    not logged since.  Remembers at most ``keys`` keys (the least recently
    refused are forgotten)."""

    def __init__(self, log: logging.Logger, interval: float = 60.0, keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic, per: str = "peer") -> None:
        self._log = log
        self._per = per
        self._interval = interval
        self._keys = keys
        self._clock = clock
        self._seen: OrderedDict[str, List[float]] = OrderedDict()  # key -> [last logged, not logged since]
        self._lock = threading.Lock()

    def refused(self, key: str, what: str) -> bool:
        """Note one refusal; log it unless ``key`` was logged within the
        interval.  ``what`` must already be quoted.  True when logged."""
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self._interval:
                entry[1] += 1
                self._seen.move_to_end(key)
                return False
            skipped = int(entry[1]) if entry is not None else 0
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self._keys:
                self._seen.popitem(last=False)
        more = f" ({skipped} more like it since the last line)" if skipped else ""
        self._log.warning("refused %s%s; at most one line a minute per %s", what, more, self._per)
        return True


def peer_host(peer: str) -> str:
    """``ipv4:10.0.0.1:5000`` / ``ipv6:[::1]:5000`` -> the address without the port."""
    host = peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer
    return host.split(":", 1)[1] if ":" in host else host



def reply_message(req_id: int, status: int, message: str, data: Any) -> Any:
    """The ``GrpcResult`` of a reply; a long message is cut, never echoed whole."""
    message = message or ""
    if len(message) > _MAX_REPLY_MESSAGE:
        message = message[:_MAX_REPLY_MESSAGE] + "... (cut)"
    text = "true" if data is True else "null" if data is None else dumps(data)
    return pb.GrpcResult(reqId=req_id, status=status, message=message, data=text)


InboundHandler = Callable[[str, Dict[str, str], str], "Reply"]


@dataclass
class Abort:
    """End the call with a gRPC error status (``code`` is its name)."""

    code: str
    message: str


@dataclass
class Work:
    """A call that passed the token check: the handler's arguments."""

    req_id: int
    uri: str
    headers: Dict[str, str]
    body: str
    inline: bool  # quick enough for the event-loop thread


class Calls:
    """The handler of both inbound servers, from a request message to a
    ``GrpcResult``.  ``handler(uri, headers, body)`` returns a ``Reply``; an
    exception in it becomes a ``status=0`` reply, never a gRPC error."""

    def __init__(self, handler: InboundHandler, workers: int, token: Optional[str],
                 inline: Callable[[str], bool], log: logging.Logger) -> None:
        _load_pb()
        self._handler = handler
        self._workers = workers
        self._token = token
        self._inline = inline
        self._log = log
        self._refusals = RefusalLog(log)
        self._pool: Optional[futures.ThreadPoolExecutor] = None
        self.refused = 0  # calls refused for their token

    def prepare(self, data: bytes, peer: str) -> Union[Abort, Any, Work]:
        """What to do with the request message ``data`` from ``peer`` (its
        host): an ``Abort``, a ``GrpcResult`` to send at once (a refusal),
        or ``Work`` for ``answer``."""
        try:
            envelope = read_envelope(data)
        except EnvelopeError as exc:
            self.note_refusal(peer, "", f"not a SnailJob request ({exc})")
            return Abort("INVALID_ARGUMENT", f"not a SnailJob request: {exc}")
        uri = envelope.uri
        if self._token is not None:
            refusal = token_refusal(envelope.headers, self._token)
            if refusal is not None:
                self.refused += 1
                self.note_refusal(peer, uri, refusal)
                return pb.GrpcResult(reqId=envelope.req_id, status=0, message=refusal, data="false")
        try:
            body = str(envelope.body, "utf-8")
        except UnicodeDecodeError as exc:
            return Abort("INVALID_ARGUMENT", f"body is not UTF-8: {exc.reason}")
        return Work(envelope.req_id, uri, envelope.headers, body, self._inline(uri.split("?", 1)[0]))

    async def answer(self, work: Work, loop: asyncio.AbstractEventLoop) -> Any:
        """The ``GrpcResult`` of ``work``, run inline or on a worker thread."""
        if work.inline:
            return self.run(work)
        return await loop.run_in_executor(self._executor(), self.run, work)

    def run(self, work: Work) -> Any:
        try:
            reply = self._handler(work.uri, work.headers, work.body)
            status, message, data = reply.status, reply.message, reply.data
        except Exception as exc:  # the inbound server must never fail a call
            self._log.exception("inbound handler failed for %s", short(work.uri))
            status, message, data = 0, f"client error: {type(exc).__name__}", None
        return reply_message(work.req_id, status, message, data)

    def note_refusal(self, peer: str, uri: str, reason: str) -> None:
        where = f" {short(uri)}" if uri else ""
        self._refusals.refused(peer, f"call{where} from {short(peer)}: {reason}")

    def _executor(self) -> futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = futures.ThreadPoolExecutor(max_workers=self._workers,
                                                    thread_name_prefix="snailjob-inbound-call")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class LoopServer:
    """What both inbound servers share around their calls: the event loop
    on its own thread (``snailjob-inbound``) and the ``Calls``."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="snailjob-inbound", daemon=True)
        self._thread.start()

    @property
    def refused(self) -> int:
        """Calls refused for their token."""
        return self._calls.refused

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server runs on (in its own thread)."""
        return self._loop

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _on_loop(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
