"""The native transport and a server that has gone silent without closing
(a dropped NAT entry, a frozen host, a partition): a call whose deadline
passes with nothing at all received meanwhile makes the connection send a
PING; no answer within ``PROBE_TIMEOUT`` and the connection is given up, so
the next call makes a new one instead of timing out on the dead one until
TCP gives up, minutes later.  A server that answers the PING keeps it."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterator, List

import pytest

from snailjob import http2, native_transport
from snailjob.errors import TransportError
from snailjob.native_transport import NativeTransport

from .test_native_transport import HEADERS, _frame


class _Mute:
    """A server that opens HTTP/2 (its SETTINGS) and then answers no call;
    with ``pings`` it answers PINGs, as a live but slow server does."""

    def __init__(self, pings: bool) -> None:
        self.pings = pings
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.target = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)
            conn.sendall(_frame(http2.SETTINGS, 0, 0, b""))
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buf = bytearray()
        while True:
            try:
                chunk = conn.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            if buf.startswith(http2.PREFACE):
                del buf[:len(http2.PREFACE)]
            while len(buf) >= 9 and len(buf) - 9 >= int.from_bytes(buf[:3], "big"):
                length = int.from_bytes(buf[:3], "big")
                kind, flags, payload = buf[3], buf[4], bytes(buf[9:9 + length])
                del buf[:9 + length]
                if self.pings and kind == http2.PING and not flags & http2.ACK:
                    try:
                        conn.sendall(_frame(http2.PING, http2.ACK, 0, payload))
                    except OSError:  # closed by the test's end
                        return

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def quick_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_transport, "PROBE_TIMEOUT", 0.3)


@pytest.fixture
def transport() -> Iterator[Callable[[str], NativeTransport]]:
    made: List[NativeTransport] = []

    def make(target: str) -> NativeTransport:
        made.append(NativeTransport(target, lambda: HEADERS))
        return made[-1]

    yield make
    for one in made:
        one.close()


def _deadline(transport: NativeTransport, uri: str) -> None:
    with pytest.raises(TransportError) as caught:
        transport.call(uri, "[]", 0.3)
    assert caught.value.code == "DEADLINE_EXCEEDED", caught.value


def test_a_connection_silent_through_a_deadline_and_a_ping_is_replaced(quick_probe: None, transport: Any) -> None:
    mute = _Mute(pings=False)
    try:
        client = transport(mute.target)
        _deadline(client, "/first")  # the server's SETTINGS came while it waited
        _deadline(client, "/second")  # nothing came: a PING goes out
        time.sleep(0.3 + 0.4)  # the PING's time to be answered, and more
        _deadline(client, "/third")
        assert len(mute.accepted) == 2, "the third call went over the dead connection"
    finally:
        mute.close()


def test_a_connection_that_answers_the_ping_is_kept(quick_probe: None, transport: Any) -> None:
    slow = _Mute(pings=True)
    try:
        client = transport(slow.target)
        _deadline(client, "/first")
        _deadline(client, "/second")  # a PING goes out, and is answered
        time.sleep(0.3 + 0.4)
        _deadline(client, "/third")
        assert len(slow.accepted) == 1, "a live connection was given up"
    finally:
        slow.close()
