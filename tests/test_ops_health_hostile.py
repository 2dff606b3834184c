"""The health port against strangers: half-open connections by the thousand,
a slowloris, clients that vanish mid-request, oversized or odd requests, and
what /readyz tells.  Real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import resource
import select
import socket
import statistics
import struct
import threading
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import snailjob as sj
from snailjob.ops.health import MAX_HEAD_BYTES, MAX_HEADER_LINES, HealthServer
from snailjob.testing import ServerEmulator

from .conftest import client_for, wait_for

# heavy or timing-bound: these modules share one pytest-xdist worker (make test: --dist loadgroup),
# so they never compete with each other for the 2 cores
pytestmark = pytest.mark.xdist_group("heavy")

HALF_REQUEST = b"GET /livez HT"  # half a request line, then nothing


class Fine:
    """A client that is live and ready, with a large /stats."""

    def __init__(self, stats_bytes: int = 10) -> None:
        self.blob = "x" * stats_bytes

    def health(self) -> Dict[str, Any]:
        return {"live": True, "ready": True, "state": "running", "reasons": []}

    def stats(self) -> Dict[str, Any]:
        return {"blob": self.blob}

    def held_batches(self) -> List[Any]:
        return []


@sj.job("hostileOk")
def hostile_ok(args: sj.JobArgs) -> str:
    return "ok"


@pytest.fixture
def many_files() -> Iterator[None]:
    """Room for a few thousand sockets (the test is root; the limit is put back after)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = before
    need = 8192
    if soft != resource.RLIM_INFINITY and soft < need:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= need else need
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, new_hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def request(port: int, raw: bytes, timeout: float = 5.0) -> Tuple[int, Dict[str, str], bytes]:
    """Send ``raw``, read the answer until the server closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def get(port: int, path: str) -> Tuple[int, bytes]:
    status, _, body = request(port, f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
    return status, body


def half_open(port: int, count: int) -> List[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(HALF_REQUEST)
        socks.append(sock)
    return socks


def closed_by_server(sock: socket.socket, wait: float = 0.0) -> bool:
    """True if the server closed ``sock`` (EOF or reset) without answering."""
    readable, _, _ = select.select([sock], [], [], wait)
    if not readable:
        return False
    try:
        data = sock.recv(1)
    except ConnectionResetError:
        return True
    assert data == b"", f"the server answered {data!r} instead of closing"
    return True


def close_all(socks: List[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def probe_latencies(port: int, count: int) -> List[float]:
    latencies = []
    for i in range(count):
        path = "/livez" if i % 2 else "/readyz"
        started = time.perf_counter()
        status, body = get(port, path)
        latencies.append(time.perf_counter() - started)
        assert status == 200, (path, status, body)
        assert json.loads(body)["ready" if path == "/readyz" else "live"] is True
    return latencies


def report(capsys: Any, text: str) -> None:
    with capsys.disabled():
        print(f"\n[health report] {text}")


# --- (a) a thousand half-open connections -----------------------------------------------------------


def test_probes_are_answered_promptly_beside_1000_half_open_connections(many_files: None, capsys: Any) -> None:
    threads_before = threading.active_count()
    server = HealthServer(Fine(), 0, "127.0.0.1", request_timeout=60).start()
    socks: List[socket.socket] = []
    try:
        socks = half_open(server.port, 1000)
        wait_for(lambda: server.open_connections >= 1000, timeout=10, what="1000 connections accepted")
        peak = threading.active_count()
        latencies = probe_latencies(server.port, 20)
        peak = max(peak, threading.active_count())
        assert max(latencies) < 1.0, latencies
        assert peak - threads_before <= 10, f"{peak - threads_before} threads more with 1000 connections"
        # the half-open connections were not simply dropped to make room: they are still open
        assert server.open_connections >= 1000
        assert not any(closed_by_server(sock) for sock in socks[:50])
        report(capsys, f"1000 half-open connections: threads {threads_before} -> {peak} "
                       f"(+{peak - threads_before}), answer threads {server.worker_threads}; "
                       f"20 probes p50 {statistics.median(latencies) * 1000:.1f} ms, "
                       f"max {max(latencies) * 1000:.1f} ms")
    finally:
        close_all(socks)
        server.close()


def test_beyond_max_connections_the_oldest_give_way_and_probes_still_pass(many_files: None) -> None:
    threads_before = threading.active_count()
    server = HealthServer(Fine(), 0, "127.0.0.1", request_timeout=60, max_connections=50).start()
    socks: List[socket.socket] = []
    try:
        socks = half_open(server.port, 300)
        wait_for(lambda: closed_by_server(socks[249], 0.01), timeout=5, what="the old connections dropped")
        assert server.open_connections <= 50
        assert closed_by_server(socks[0], 1.0)  # the oldest went first
        assert not closed_by_server(socks[-1])  # the newest stay
        assert max(probe_latencies(server.port, 10)) < 1.0
        assert threading.active_count() - threads_before <= 10
    finally:
        close_all(socks)
        server.close()


def test_the_default_connection_cap_leaves_the_client_file_descriptors() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (400, before[1]))
        server = HealthServer(Fine(), 0, "127.0.0.1")
        assert server.max_connections == 100
        server.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)
    server = HealthServer(Fine(), 0, "127.0.0.1", max_connections=7)
    assert server.max_connections == 7
    server.close()


# --- (b) the time limit is for the whole head --------------------------------------------------------


def test_a_slowloris_is_cut_off_after_the_time_limit_in_total() -> None:
    server = HealthServer(Fine(), 0, "127.0.0.1", request_timeout=0.5).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow, \
                socket.create_connection(("127.0.0.1", server.port), timeout=5) as silent:
            started = time.monotonic()
            closed_after = None
            # one byte every 0.05 s, ten times faster than the limit: a per-byte timer never fires
            for byte in b"GET /livez HTTP/1.1\r\nX-Slow: " + b"a" * 200:
                try:
                    slow.send(bytes([byte]))
                except OSError:
                    closed_after = time.monotonic() - started
                    break
                if closed_by_server(slow, 0.05):
                    closed_after = time.monotonic() - started
                    break
            assert closed_after is not None, "the slowloris was never cut off"
            assert 0.4 <= closed_after <= 1.5, closed_after
            assert closed_by_server(silent, 1.0)  # a connection that sends nothing: closed as well
        assert server.open_connections == 0
        assert get(server.port, "/livez")[0] == 200
    finally:
        server.close()


def test_a_slow_but_complete_request_within_the_limit_is_answered() -> None:
    server = HealthServer(Fine(), 0, "127.0.0.1", request_timeout=2.0).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            for part in (b"GET /liv", b"ez HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
                sock.sendall(part)
                time.sleep(0.1)
            assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    finally:
        server.close()


def test_limits_of_a_request() -> None:
    server = HealthServer(Fine(), 0, "127.0.0.1").start()
    port = server.port
    try:
        assert request(port, b"GET /livez HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n")[0] == 431
        many = b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEADER_LINES + 1))
        assert request(port, b"GET /livez HTTP/1.1\r\n" + many + b"\r\n")[0] == 431
        status, headers, body = request(port, b"POST /livez HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        status, headers, body = request(port, b"HEAD /livez HTTP/1.1\r\n\r\n")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
        assert headers["Connection"] == "close" and "Server" not in headers
        assert request(port, b"garbage\r\n\r\n")[0] == 400
        assert request(port, b"GET /livez HTTP/2.0\r\n\r\n")[0] == 400
        assert request(port, b"GET /livez HTTP/1.1\r\n folded\r\n\r\n")[0] == 400
        assert request(port, b"GET /livez HTTP/1.0\n\n")[0] == 200  # bare line feeds are fine
    finally:
        server.close()


# --- (c) vanishing clients make no noise ----------------------------------------------------------


def test_400_clients_vanishing_mid_request_print_and_warn_nothing(capfd: Any, caplog: Any,
                                                                   many_files: None) -> None:
    caplog.set_level(logging.DEBUG, logger="snailjob.ops.health")
    threads_before = threading.active_count()
    server = HealthServer(Fine(stats_bytes=4_000_000), 0, "127.0.0.1").start()
    socks: List[socket.socket] = []
    try:
        for i in range(400):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the big answer cannot fit
            # half of them stop mid-request; the others ask for a 4 MB answer and never read it
            sock.sendall(HALF_REQUEST if i % 2 else b"GET /stats HTTP/1.1\r\n\r\n")
            socks.append(sock)
        wait_for(lambda: server.open_connections >= 400 or server.worker_threads > 0, timeout=10)
        time.sleep(0.2)
        for i, sock in enumerate(socks):
            if i % 4 < 2:  # a reset rather than a close, for half of each kind
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        wait_for(lambda: server.open_connections == 0, timeout=30, what="all connections closed")
        assert get(server.port, "/livez")[0] == 200
        assert threading.active_count() - threads_before <= 10
    finally:
        close_all(socks)
        server.close()
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == []
    quiet = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("went away while sending" in m for m in quiet)  # the resets were seen, and kept quiet
    assert any("went away before its answer" in m for m in quiet)


# --- (d) what a probe is told ---------------------------------------------------------------------


def test_readyz_and_livez_tell_nothing_about_the_node() -> None:
    with ServerEmulator() as emu:
        client = client_for(emu, [hostile_ok], snail_heartbeat_interval=0.3)
        server = HealthServer(client, 0, "127.0.0.1").start()
        try:
            client.start()
            wait_for(lambda: get(server.port, "/readyz")[0] == 200, timeout=10)
            settings = client.settings
            secrets = [client.host_id, settings.snail_group_name, settings.snail_namespace, emu.address,
                       str(emu.port), str(client.host_port), "127.0.0.1", settings.snail_token]
            stats = get(server.port, "/stats")[1].decode()
            assert client.host_id in stats and emu.address in stats  # /stats still has the details
            for path in ("/readyz", "/livez"):
                body = get(server.port, path)[1].decode()
                assert not [s for s in secrets if s and s in body], (path, body)
            assert json.loads(get(server.port, "/readyz")[1]) == {"ready": True, "reasons": []}

            emu.stop()  # not connected any more: the reason has no address, no error text
            wait_for(lambda: get(server.port, "/readyz")[0] == 503, timeout=10)
            assert emu.address in json.dumps(client.health())  # what was there to leak
            body = get(server.port, "/readyz")[1].decode()
            assert not [s for s in secrets if s and s in body], body
            assert json.loads(body) == {"ready": False, "reasons": ["not connected to a server"]}
            assert not [s for s in secrets if s and s in get(server.port, "/livez")[1].decode()]
        finally:
            client.stop(grace=0)
            server.close()
