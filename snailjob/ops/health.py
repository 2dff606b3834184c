"""HTTP endpoints for operations: ``/livez``, ``/readyz``, ``/stats``, ``/metrics``.

Standard library only; it reads the client through its public API
(``health()``, ``stats()``) and never blocks it.  ``/metrics`` serves the
Prometheus text format when prometheus-client is installed (``pip install
"snail-job-python[prometheus]"``) and a ``metrics`` object was given;
otherwise it answers 501 with how to enable it.

What each path tells: ``/livez`` and ``/readyz`` answer what a probe needs
(live / ready and coarse reasons such as "not connected to a server"), never
addresses, host ids, group names, tokens, paths or versions.  ``/stats`` and
``/metrics`` describe the node (the server in use, the host id and address,
batch ids, executor names): do not expose the port beyond the cluster network
(bind ``SNAIL_HEALTH_HOST`` to a private interface, or filter the port).

Against hostile or broken clients: one thread (``snailjob-health``) accepts
connections and reads request heads without blocking, so a connection that
has not sent its whole request holds no thread.  A connection must send its
request line and headers (at most 8 KiB, 64 header lines) within
``request_timeout`` seconds of being accepted (5 s, in total, not per byte),
or it is closed without an answer; the answer must be taken within the same
time.  At most ``max_connections`` are open at once (1024, or a quarter of
the process's open-file limit if lower); a new connection beyond that
replaces the oldest open one.  Complete requests go to at most ``workers``
threads (4, started when needed), which only compute the answer.  Only GET
and HEAD; request bodies are never read; every connection is closed after
its answer.  Clients that disconnect are logged at DEBUG, never above.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import re
import selectors
import socket
import threading
import time
from http import HTTPStatus
from typing import Any, Deque, Dict, List, Optional, Set, Tuple, Union

logger = logging.getLogger(__name__)

_ENABLE_METRICS = ('metrics need the prometheus extra: pip install "snail-job-python[prometheus]" '
                   "(then client_main() and `snailjob run` serve them here)\n")

MAX_HEAD_BYTES = 8192  # request line and headers
MAX_HEADER_LINES = 64
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_ACCEPTS_PER_WAKE = 64
_BACKLOG = 128
_TEXT = "text/plain; charset=utf-8"
# the reasons a probe is told, cut before any detail (a server address, an error message)
_PROBE_REASONS = ("client is ", "heartbeat thread is not running", "not connected to a server",
                  "executors not registered yet", "last heartbeat accepted ")

Answer = Tuple[int, str, bytes]


class _Conn:
    """One accepted connection, owned by the selector thread."""

    __slots__ = ("sock", "head", "deadline", "out")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.head = bytearray()
        self.deadline = deadline
        self.out: Optional[memoryview] = None


class HealthServer:
    """Serves one client's health on ``host:port`` (port 0: a free one, see ``.port``).

    ``request_timeout``: seconds a connection has to send its request head
    (and then to take the answer); ``max_connections``: open connections at
    most (None: 1024, or a quarter of the open-file limit if lower);
    ``workers``: threads computing answers at most.
    """

    def __init__(self, client: Any, port: int, host: str = "0.0.0.0", metrics: Any = None, *,
                 request_timeout: float = 5.0, max_connections: Optional[int] = None,
                 workers: int = 4) -> None:
        if request_timeout <= 0 or workers < 1 or (max_connections is not None and max_connections < 1):
            raise ValueError("request_timeout, max_connections and workers must be positive")
        self.client = client
        self.metrics = metrics  # an ops.metrics.Metrics, or None
        self.request_timeout = float(request_timeout)
        self.max_connections = max_connections if max_connections is not None else _default_max_connections()
        self.max_workers = workers
        family_host = host.strip("[]")
        self.host = family_host
        self._listener = _listen(family_host, port)
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        # owned by the selector thread: connections reading a head or writing an answer, in the
        # order of their deadlines (all are "an event + request_timeout"), and those with a worker
        self._open: Dict[_Conn, None] = {}
        self._busy: Set[_Conn] = set()
        self._accept_paused_until: Optional[float] = None
        # shared with the workers
        self._jobs: queue.Queue[Optional[Tuple[_Conn, bool, str]]] = queue.Queue()
        self._done: Deque[Tuple[_Conn, bytes]] = collections.deque()
        self._lock = threading.Lock()
        self._workers: List[threading.Thread] = []
        self._idle = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="snailjob-health", daemon=True)
        self._closed = False

    def start(self) -> HealthServer:
        self._thread.start()
        logger.info("health endpoints on http://%s:%d (/livez /readyz /stats /metrics)",
                    f"[{self.host}]" if ":" in self.host else self.host, self.port)
        return self

    def close(self) -> None:
        """Stop serving; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        if self._thread.is_alive():
            self._wake()
            self._thread.join(5)
        with self._lock:
            workers = list(self._workers)
        for _ in workers:
            self._jobs.put(None)
        for conn in list(self._open) + list(self._busy):
            conn.sock.close()
        self._open.clear()
        self._busy.clear()
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    @property
    def open_connections(self) -> int:
        """Connections open now (reading a request, being answered, or writing the answer)."""
        return len(self._open) + len(self._busy)

    @property
    def worker_threads(self) -> int:
        """Threads started to compute answers (at most ``workers``)."""
        with self._lock:
            return len(self._workers)

    # --- answers ------------------------------------------------------------

    def answer(self, path: str) -> Answer:
        """(status, content type, body) for a GET of ``path``."""
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/livez":
            health = self.client.health()
            return _json(200 if health["live"] else 503,
                         {"live": bool(health["live"]), "state": str(health["state"])[:20],
                          "reasons": probe_reasons(health["reasons"])})
        if path == "/readyz":
            health = self.client.health()
            return _json(200 if health["ready"] else 503,
                         {"ready": bool(health["ready"]), "reasons": probe_reasons(health["reasons"])})
        if path == "/stats":
            return _json(200, {**self.client.stats(), "held_batches": self.client.held_batches(),
                               "health": self.client.health()})
        if path == "/metrics":
            if self.metrics is None:
                return 501, _TEXT, _ENABLE_METRICS.encode()
            body, content_type = self.metrics.render()
            return 200, content_type, body
        return 404, _TEXT, b"not found: try /livez /readyz /stats /metrics\n"

    def _respond(self, head_only: bool, target: str) -> bytes:
        try:
            status, content_type, body = self.answer(target)
        except Exception:  # a probe must get an answer, never a dropped connection
            logger.exception("health endpoint %s failed", target[:100])
            status, content_type, body = 500, _TEXT, b"internal error\n"
        return _response(status, content_type, body, head_only)

    # --- the workers ----------------------------------------------------------

    def _submit(self, conn: _Conn, head_only: bool, target: str) -> None:
        self._jobs.put((conn, head_only, target))
        with self._lock:
            if self._idle or len(self._workers) >= self.max_workers or self._stopping:
                return
            worker = threading.Thread(target=self._work, name=f"snailjob-health-{len(self._workers) + 1}",
                                      daemon=True)
            self._workers.append(worker)
        worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
            if job is None:
                return
            conn, head_only, target = job
            self._done.append((conn, self._respond(head_only, target)))
            self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full: a wake-up is pending anyway; closed: stopping
            pass

    # --- the selector thread ---------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            timeout: Optional[float] = None
            if self._open:
                timeout = max(0.0, next(iter(self._open)).deadline - now)
            if self._accept_paused_until is not None:
                pause = max(0.0, self._accept_paused_until - now)
                timeout = pause if timeout is None else min(timeout, pause)
            for key, mask in self._selector.select(timeout):
                if self._stopping:
                    return
                try:
                    self._event(key.data, mask)
                except Exception:  # a bug here must not end the endpoints
                    logger.exception("health endpoints: unexpected error")
                    if isinstance(key.data, _Conn):
                        self._close(key.data)
            self._expire(time.monotonic())

    def _event(self, data: Any, mask: int) -> None:
        if data == "accept":
            self._accept()
        elif data == "wake":
            self._answers_ready()
        elif mask & selectors.EVENT_WRITE:
            self._write(data)
        else:
            self._read(data)

    def _expire(self, now: float) -> None:
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        while self._open:
            oldest = next(iter(self._open))
            if oldest.deadline > now:
                break
            logger.debug("health: connection closed after %.1fs without a complete request or answer",
                         self.request_timeout)
            self._close(oldest)

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionError:  # reset before it was accepted
                continue
            except OSError as exc:  # out of file descriptors or memory
                logger.debug("health: accept failed: %s", exc)
                if self._open:
                    self._close(next(iter(self._open)))
                    continue
                self._selector.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + 0.1
                return
            if self.open_connections >= self.max_connections:
                if not self._open:  # all are being answered: no room
                    sock.close()
                    continue
                self._close(next(iter(self._open)))  # the oldest gives way
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic() + self.request_timeout)
            self._open[conn] = None
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(min(4096, MAX_HEAD_BYTES + 1 - len(conn.head)))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            logger.debug("health: client went away while sending: %s", exc)
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.head += data
        end = _HEAD_END.search(conn.head)
        if end is None or end.start() > MAX_HEAD_BYTES:
            if len(conn.head) > MAX_HEAD_BYTES:
                self._reply(conn, _response(431, _TEXT, b"request head too large\n", False), registered=True)
            return
        request = parse_head(bytes(conn.head[:end.start()]))
        if isinstance(request, bytes):  # an error answer
            self._reply(conn, request, registered=True)
            return
        self._selector.unregister(conn.sock)
        del self._open[conn]
        self._busy.add(conn)
        self._submit(conn, *request)

    def _answers_ready(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self._done:
            conn, out = self._done.popleft()
            if conn in self._busy:
                self._busy.discard(conn)
                self._reply(conn, out, registered=False)

    def _reply(self, conn: _Conn, out: bytes, registered: bool) -> None:
        """Start writing ``out``; the rest is written when the socket can take it."""
        conn.out = memoryview(out)
        conn.deadline = time.monotonic() + self.request_timeout
        self._open.pop(conn, None)
        self._open[conn] = None  # last in deadline order
        if registered:
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        else:
            self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        assert conn.out is not None
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            logger.debug("health: client went away before its answer: %s", exc)
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            _discard_unread(conn.sock)
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self._open.pop(conn, None)
        self._busy.discard(conn)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()


def parse_head(head: bytes) -> Union[bytes, Tuple[bool, str]]:
    """``(head_only, target)`` of a request head, or the bytes of an error answer."""
    lines = head.split(b"\n")
    parts = lines[0].rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1]:
        return _response(400, _TEXT, b"bad request\n", False)
    if len(lines) - 1 > MAX_HEADER_LINES:
        return _response(431, _TEXT, b"too many header lines\n", False)
    if any(b":" not in line or line[:1] in (b" ", b"\t") for line in lines[1:]):
        return _response(400, _TEXT, b"bad header line\n", False)
    method = parts[0]
    if method not in (b"GET", b"HEAD"):
        return _response(405, _TEXT, b"only GET and HEAD\n", False, ("Allow: GET, HEAD",))
    return method == b"HEAD", parts[1].decode("latin-1")


def probe_reasons(reasons: List[str]) -> List[str]:
    """The reasons a probe is told: known ones without their details, others generic."""
    told = []
    for reason in reasons:
        head = str(reason).split(":", 1)[0]
        told.append(head[:60] if head.startswith(_PROBE_REASONS) else "not ready")
    return told


def _discard_unread(sock: socket.socket) -> None:
    """After the answer: what the client sent beyond the head (a body, an oversized head) is read
    and dropped, so that closing sends FIN and not RST, which could destroy the answer in flight."""
    try:
        sock.shutdown(socket.SHUT_WR)
        for _ in range(16):
            if not sock.recv(65536):
                return
    except OSError:  # nothing more now (EAGAIN) or the client is gone
        pass


def _response(status: int, content_type: str, body: bytes, head_only: bool, extra: Tuple[str, ...] = ()) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    lines = [f"HTTP/1.1 {status} {phrase}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
             "Cache-Control: no-store", "Connection: close", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if hasattr(socket, "SO_REUSEADDR") and not hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # POSIX
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _default_max_connections() -> int:
    """1024, or a quarter of the soft open-file limit if that is lower (the client needs the rest)."""
    try:
        import resource
    except ImportError:  # Windows
        return 1024
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1024
    return max(16, min(1024, soft // 4))


def _json(status: int, data: Any) -> Answer:
    return status, "application/json", (json.dumps(data, sort_keys=True, default=str) + "\n").encode()


def serve_health(client: Any, port: int, host: str = "0.0.0.0", metrics: Any = None) -> HealthServer:
    """Start serving ``client``'s health endpoints; returns the started server."""
    return HealthServer(client, port, host, metrics).start()


def metrics_or_none(client: Any) -> Optional[Any]:
    """Prometheus metrics for ``client`` if prometheus-client is installed, else None."""
    try:
        from snailjob.ops.metrics import Metrics
    except ImportError:
        return None
    return Metrics(client)


def start_operations(client: Any) -> Optional[HealthServer]:
    """What ``client_main()`` and ``snailjob run`` add to a client: when
    ``SNAIL_HEALTH_PORT`` is set, the health endpoints, with Prometheus
    metrics if prometheus-client is installed. None when the port is unset."""
    settings = client.settings
    if settings.snail_health_port is None:
        return None
    return serve_health(client, settings.snail_health_port, settings.snail_health_host,
                        metrics_or_none(client))
