"""Shared test fixtures: a recording transport (the swap point for unit
tests) and helpers that call a client's inbound server over real gRPC."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import grpc
import pytest

from snailjob import Client, Settings
from snailjob.testing import ServerEmulator
from snailjob.transport import Reply
from snailjob.wire import snailjob_pb2 as pb

TOKEN = "SJ_test_token_0123456789"


class RecordingTransport:
    """A ``Transport`` that records calls and answers like a healthy server.

    ``responder(uri, body)`` may return a ``Reply`` or raise
    ``TransportError`` to simulate an outage.
    """

    def __init__(self, target: str, headers: Callable[[], Dict[str, str]]) -> None:
        self.target = target
        self.headers = headers
        self.calls: List[Tuple[str, Any, Dict[str, str]]] = []
        self.lock = threading.Lock()
        self.responder: Optional[Callable[[str, Any], Reply]] = None
        self.closed = False

    def _answer(self, uri: str, body: str) -> Reply:
        parsed = json.loads(body)
        with self.lock:
            self.calls.append((uri, parsed, dict(self.headers())))
        if self.responder is not None:
            return self.responder(uri, parsed)
        if uri == "/sync/version":  # the group config: none (as a server without the group's config)
            return Reply(1, "", None)
        return Reply(1, "", "PONG" if uri == "/beat" else True)

    def call(self, uri: str, body: str, timeout: float) -> Reply:
        return self._answer(uri, body)

    def close(self) -> None:
        self.closed = True

    def bodies(self, uri: str) -> List[Any]:
        with self.lock:
            return [body for u, body, _ in self.calls if u == uri]


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01,
             what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)


def test_settings(**overrides: Any) -> Settings:
    values: Dict[str, Any] = dict(
        snail_server_host="127.0.0.1", snail_server_port=1, snail_host_ip="127.0.0.1",
        snail_host_port=0, snail_bind_host="127.0.0.1", snail_token=TOKEN,
        snail_heartbeat_interval=0.2, snail_rpc_timeout=2.0, snail_shutdown_grace=0.0,
        snail_log_remote_interval=0.2,
    )
    values.update(overrides)
    return Settings.load(env_file=None, **values)


test_settings.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture
def make_client() -> Iterator[Callable[..., Tuple[Client, RecordingTransport]]]:
    """Start clients on a recording transport; stopped after the test."""
    started: List[Client] = []

    def factory(executors: Any = (), **overrides: Any) -> Tuple[Client, RecordingTransport]:
        holder: Dict[str, RecordingTransport] = {}

        def transport_factory(target: str, headers: Callable[[], Dict[str, str]]) -> RecordingTransport:
            holder["t"] = RecordingTransport(target, headers)
            return holder["t"]

        client = Client(test_settings(**overrides), executors=executors,
                        transport_factory=transport_factory)
        client.start()
        started.append(client)
        return client, holder["t"]

    yield factory
    for client in started:
        client.stop(grace=0)


@pytest.fixture(params=("grpc", "native"))
def inbound_kind(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once per inbound server: ``SNAIL_INBOUND`` for the
    clients it starts, and ``inbound_server`` for bare servers."""
    monkeypatch.setenv("SNAIL_INBOUND", request.param)
    return str(request.param)


def inbound_server(*args: Any, **kwargs: Any) -> Any:
    """A bare inbound server of the kind ``SNAIL_INBOUND`` names (grpcio's unless native)."""
    import os

    from snailjob.inbound import InboundServer
    from snailjob.native_inbound import NativeInboundServer

    kind = NativeInboundServer if os.environ.get("SNAIL_INBOUND", "").lower() == "native" else InboundServer
    return kind(*args, **kwargs)


def call_inbound(port: int, uri: str, body: str, token: Optional[str] = TOKEN,
                 headers: Optional[Dict[str, str]] = None, timeout: float = 3.0) -> pb.GrpcResult:
    """Call a client's inbound server the way the SnailJob server does."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["SJ-TOKEN"] = token
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_unary("/UnaryRequest/unaryRequest",
                                     request_serializer=pb.GrpcSnailJobRequest.SerializeToString,
                                     response_deserializer=pb.GrpcResult.FromString)
        request = pb.GrpcSnailJobRequest(reqId=7, metadata=pb.Metadata(uri=uri, headers=hdrs), body=body)
        return method(request, timeout=timeout)


_ids = iter(range(10_000, 10**9))


def dispatch_body(executor: str, task_type: int = 1, **fields: Any) -> Dict[str, Any]:
    """A dispatch request as the server builds it (null fields omitted)."""
    batch = fields.pop("taskBatchId", next(_ids))
    request: Dict[str, Any] = {
        "namespaceId": "764d604ec6fc45f68cd92514c40e9e1a", "jobId": 1, "taskBatchId": batch,
        "taskId": next(_ids), "taskType": task_type, "groupName": "snail_job_demo_group",
        "parallelNum": 1, "executorType": 2, "executorInfo": executor, "executorTimeout": 60,
        "taskName": "CLUSTER_TASK", "argsStr": json.dumps({"jobParams": "hello"}),
        "retry": False, "retryStatus": False,
    }
    request.update(fields)
    return request


def dispatch(port: int, request: Dict[str, Any], token: Optional[str] = TOKEN) -> pb.GrpcResult:
    return call_inbound(port, "/job/dispatch/v1", json.dumps([request]), token=token)


def client_for(emu: Any, executors: Any, **overrides: Any) -> Client:
    """A (not started) client pointed at a ``ServerEmulator``."""
    env = emu.client_env()
    values: Dict[str, Any] = dict(
        snail_server_host=env["SNAIL_SERVER_HOST"], snail_server_port=int(env["SNAIL_SERVER_PORT"]),
        snail_namespace=env["SNAIL_NAMESPACE"], snail_group_name=env["SNAIL_GROUP_NAME"],
        snail_token=env["SNAIL_TOKEN"], snail_host_port=0, snail_bind_host="127.0.0.1",
        snail_heartbeat_interval=0.5, snail_shutdown_grace=0, snail_log_remote_interval=0.2,
        snail_interrupt_delay=0.2)
    values.update(overrides)
    return Client(Settings.load(env_file=None, **values), executors=executors)


@pytest.fixture
def emu() -> Iterator[ServerEmulator]:
    """A started emulator (for the raw emulator tests)."""
    with ServerEmulator() as emulator:
        yield emulator


@pytest.fixture
def run_client(snailjob_emulator: Any) -> Iterator[Callable[..., Client]]:
    """Start clients against the test's emulator; stopped after the test, which
    then also checks that the emulator saw no protocol violation."""
    clients: List[Client] = []

    def start(executors: Any, **overrides: Any) -> Client:
        client = client_for(snailjob_emulator, executors, **overrides).start()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.stop(grace=0)
    assert snailjob_emulator.problems == []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Captured output and logs with lone surrogates (tests of undecodable names log them)
    are kept with the surrogates escaped: pytest-xdist sends reports between processes as
    UTF-8, which cannot carry them, and a worker would crash on the report."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    report.sections = [(title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
                       for title, text in report.sections]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The end-to-end suite, when off, is this one line (tests/e2e/conftest.py collects nothing)."""
    import os

    if os.environ.get("SNAILJOB_E2E") != "1":
        from tests.e2e.conftest import OFF

        terminalreporter.write_line(OFF)


@pytest.fixture
def given_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread named ``given-loop`` (as the inbound server's)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="given-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
