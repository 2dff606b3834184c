"""Operations: observers, the health endpoints, Prometheus metrics, tracing,
and what the log says while results are held for the server."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Tuple

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families

import snailjob as sj
from snailjob.ops import serve_health
from snailjob.ops.health import HealthServer, metrics_or_none
from snailjob.ops.metrics import Metrics
from snailjob.ops.tracing import Tracing, batch_span_context
from snailjob.testing import ServerEmulator

from .conftest import client_for, wait_for

PROVIDER = TracerProvider()
EXPORTED = InMemorySpanExporter()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTED))
USER_TRACER = PROVIDER.get_tracer("user-code")


@sj.job("opsOk")
def ops_ok(args: sj.JobArgs) -> str:
    with USER_TRACER.start_as_current_span("inside the job"):
        sj.SnailLog.REMOTE.info("working on %s", args.job_params)
    return f"done {args.job_params}"


@sj.job("opsFail")
def ops_fail(args: sj.JobArgs) -> None:
    raise ValueError("broken on purpose")


@sj.job("opsAsync")
async def ops_async(args: sj.JobArgs) -> str:
    with USER_TRACER.start_as_current_span("inside the coroutine"):
        await asyncio.sleep(0.01)
    return "async done"


ops_map = sj.MapExecutor("opsMap")


@ops_map.map()
def ops_root(args: sj.MapArgs) -> sj.ExecuteResult:
    return sj.mr_do_map([1, 2, 3], "ITEM")


@ops_map.map("ITEM")
def ops_item(args: sj.MapArgs) -> int:
    return 2


EXECUTORS = [ops_ok, ops_fail, ops_async, ops_map]


def get(port: int, path: str) -> Tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def get_json(port: int, path: str) -> Tuple[int, Dict[str, Any]]:
    status, _, body = get(port, path)
    return status, json.loads(body)


def samples(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def emu():
    with ServerEmulator() as emulator:
        yield emulator


# --- health -----------------------------------------------------------------------------------


def test_livez_readyz_and_stats_follow_the_client(emu: ServerEmulator) -> None:
    client = client_for(emu, EXECUTORS, snail_heartbeat_interval=0.3)
    health = serve_health(client, 0, "127.0.0.1")
    try:
        assert get_json(health.port, "/livez")[0] == 503  # not started
        status, ready = get_json(health.port, "/readyz")
        assert status == 503 and "client is new" in ready["reasons"]
        client.start()
        wait_for(lambda: get_json(health.port, "/readyz")[0] == 200, timeout=10)
        status, ready = get_json(health.port, "/readyz")
        assert ready == {"ready": True, "reasons": []}  # what a probe needs, nothing more
        detail = get_json(health.port, "/stats")[1]["health"]  # the details are in /stats
        assert detail["live"] and detail["ready"]
        assert detail["server"] == emu.address and detail["address"] == f"127.0.0.1:{client.host_port}"
        assert 0 <= detail["last_heartbeat_age"] < 5
        emu.trigger("opsOk", args_str="x").wait(10)
        # the batch completes when the server has the result, just before its answer reaches the client
        wait_for(lambda: get_json(health.port, "/stats")[1]["results_delivered"] == 1, timeout=5)
        status, stats = get_json(health.port, "/stats")
        assert status == 200
        assert stats["results_delivered"] == 1 and stats["tasks_active"] == 0
        assert stats["held_batches"] == [] and stats["health"]["ready"] is True
        assert {"results_held", "delivery_retries", "heartbeat_failures", "logs_dropped"} <= set(stats)

        emu.stop()  # the server goes away: still live, no longer ready
        wait_for(lambda: get_json(health.port, "/readyz")[0] == 503, timeout=10)
        status, ready = get_json(health.port, "/readyz")
        assert ready["reasons"] == ["not connected to a server"], ready  # without the error's details
        assert get_json(health.port, "/livez")[0] == 200
        assert get_json(health.port, "/stats")[1]["heartbeat_failures"] >= 1

        client.stop(grace=0)
        status, live = get_json(health.port, "/livez")
        assert status == 503 and live["state"] == "stopped"
        assert get(health.port, "/nope")[0] == 404
    finally:
        client.stop(grace=0)
        health.close()
        health.close()  # idempotent


def test_a_failing_client_still_gets_an_answer() -> None:
    class Broken:
        def health(self) -> Dict[str, Any]:
            raise RuntimeError("boom")

    server = HealthServer(Broken(), 0, "127.0.0.1").start()
    try:
        assert get(server.port, "/readyz")[0] == 500
        assert get(server.port, "/livez")[0] == 500
    finally:
        server.close()


def test_health_on_ipv6() -> None:
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")

    class Fine:
        def health(self) -> Dict[str, Any]:
            return {"live": True, "ready": True, "state": "running", "reasons": []}

    server = HealthServer(Fine(), 0, "::1").start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/livez", timeout=5) as reply:
            assert reply.status == 200
    finally:
        server.close()


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_count_tasks_outcomes_durations_and_client_counters(emu: ServerEmulator) -> None:
    client = client_for(emu, EXECUTORS)
    metrics = Metrics(client)
    health = serve_health(client, 0, "127.0.0.1", metrics)
    client.start()
    try:
        emu.wait_for_clients(1)
        assert emu.trigger("opsOk", args_str="a").wait(10) == 3
        assert emu.trigger("opsOk", args_str="b").wait(10) == 3
        assert emu.trigger("opsFail").wait(10) == 4
        assert emu.trigger("opsMap", task_type=4).wait(10) == 3
        assert client.flush(5)
        status, content_type, body = get(health.port, "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        found = samples(body.decode())
        ok = (("executor", "opsOk"), ("task_type", "CLUSTER"))
        assert found[("snailjob_tasks_started_total", ok)] == 2
        assert found[("snailjob_tasks_finished_total", tuple(sorted(ok + (("outcome", "success"),))))] == 2
        fail = tuple(sorted((("executor", "opsFail"), ("task_type", "CLUSTER"), ("outcome", "failure"))))
        assert found[("snailjob_tasks_finished_total", fail)] == 1
        assert found[("snailjob_task_duration_seconds_count", ok)] == 2
        assert found[("snailjob_tasks_started_total", (("executor", "opsMap"), ("task_type", "MAP")))] == 4
        assert found[("snailjob_results_delivered_total", ())] >= 7
        assert found[("snailjob_server_up", ())] == 1 and found[("snailjob_registered", ())] == 1
        # a task's result can reach the server before its worker has put it down: the gauge follows
        wait_for(lambda: samples(get(health.port, "/metrics")[2].decode())[("snailjob_tasks_running", ())] == 0,
                 timeout=5, what="snailjob_tasks_running back to 0")
        assert ("snailjob_heartbeat_failures_total", ()) in found
        assert ("snailjob_log_entries_dropped_total", ()) in found
        assert ("snailjob_result_delivery_retries_total", ()) in found
        assert found[("snailjob_inbound_acceptors", ())] == client.stats()["inbound_acceptors"]
    finally:
        client.stop(grace=0)
        health.close()


def test_without_prometheus_metrics_say_how_to_enable_them(monkeypatch: Any, emu: ServerEmulator) -> None:
    client = client_for(emu, EXECUTORS)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "snailjob.ops.metrics", raising=False)
    assert metrics_or_none(client) is None
    server = serve_health(client, 0, "127.0.0.1", None)
    try:
        status, _, body = get(server.port, "/metrics")
        assert status == 501 and b'pip install "snail-job-python[prometheus]"' in body
    finally:
        server.close()


# --- tracing ----------------------------------------------------------------------------------


def test_one_span_per_task_current_while_the_job_runs(emu: ServerEmulator) -> None:
    EXPORTED.clear()
    client = client_for(emu, EXECUTORS)
    Tracing(client, tracer_provider=PROVIDER)
    client.start()
    try:
        emu.wait_for_clients(1)
        ok = emu.trigger("opsOk", args_str="t")
        assert ok.wait(10) == 3
        assert emu.trigger("opsFail").wait(10) == 4
        assert emu.trigger("opsAsync").wait(10) == 3
        mapped = emu.trigger("opsMap", task_type=4)
        assert mapped.wait(10) == 3
    finally:
        client.stop(grace=0)
    spans = EXPORTED.get_finished_spans()
    by_name: Dict[str, List[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [task_span] = by_name["snailjob opsOk"]
    [inner] = by_name["inside the job"]
    assert inner.parent is not None and inner.parent.span_id == task_span.context.span_id
    assert inner.context.trace_id == task_span.context.trace_id
    attributes = dict(task_span.attributes or {})
    task = ok.tasks[0]
    assert attributes["snailjob.batch_id"] == ok.id and attributes["snailjob.task_id"] == task.task_id
    assert attributes["snailjob.job_id"] == ok.job_id and attributes["snailjob.executor"] == "opsOk"
    assert attributes["snailjob.task_type"] == "CLUSTER" and attributes["snailjob.outcome"] == "success"
    assert attributes["snailjob.retry_count"] == 0
    expected = batch_span_context(emu.namespace, ok.id)
    assert task_span.context.trace_id == expected.trace_id and task_span.parent.span_id == expected.span_id

    [failed] = by_name["snailjob opsFail"]
    assert failed.status.status_code == StatusCode.ERROR and "broken on purpose" in (failed.status.description or "")
    assert any(event.name == "exception" for event in failed.events)

    [coroutine_span] = by_name["snailjob opsAsync"]
    [inside_coroutine] = by_name["inside the coroutine"]
    assert inside_coroutine.parent.span_id == coroutine_span.context.span_id

    map_spans = by_name["snailjob opsMap"]
    assert len(map_spans) == 4  # the root and its three items
    assert {s.context.trace_id for s in map_spans} == {batch_span_context(emu.namespace, mapped.id).trace_id}
    assert {dict(s.attributes or {})["snailjob.task_name"] for s in map_spans} == {"ROOT_MAP", "ITEM"}


# --- observers ----------------------------------------------------------------------------------


def test_a_broken_observer_never_fails_a_task(emu: ServerEmulator, caplog: Any) -> None:
    seen: List[Tuple[str, str, float]] = []

    class Broken:
        def task_started(self, task: Any) -> None:
            raise RuntimeError("observer bug")

        def task_finished(self, task: Any, state: Any, outcome: str, duration: float, error: Any) -> None:
            raise RuntimeError("observer bug too")

    class Recorder:
        def task_started(self, task: Any) -> str:
            return f"state of {task.task_id}"

        def task_finished(self, task: Any, state: Any, outcome: str, duration: float, error: Any) -> None:
            seen.append((state, outcome, duration))

    client = client_for(emu, EXECUTORS)
    client.add_observer(Broken())
    client.add_observer(Recorder())
    client.start()
    try:
        emu.wait_for_clients(1)
        batch = emu.trigger("opsOk", args_str="o")
        assert batch.wait(10) == 3
        assert batch.tasks[0].result == "done o"
    finally:
        client.stop(grace=0)
    assert seen and seen[0][0] == f"state of {batch.tasks[0].task_id}" and seen[0][1] == "success"
    assert "observer bug" in caplog.text


# --- held results in the log ---------------------------------------------------------------------


def test_held_results_are_logged_once_per_outage_and_when_delivered(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="snailjob")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    release = threading.Event()

    @sj.job("opsHeld")
    def held(args: sj.JobArgs) -> str:
        release.wait(10)
        return "kept"

    first = ServerEmulator(port=port).start()
    client = client_for(first, [held], snail_heartbeat_interval=0.3).start()
    try:
        first.wait_for_clients(1)
        batches = [first.trigger("opsHeld", executor_timeout=60) for _ in range(3)]
        first.wait_until(lambda: all(b.tasks and b.tasks[0].dispatch_replies for b in batches))
        first.stop()
        release.set()
        wait_for(lambda: client.stats()["results_held"] == 3, timeout=15)
        assert sorted(client.held_batches()) == sorted(b.id for b in batches)
        time.sleep(1.5)  # more failed attempts: still one warning
        holding = [r.getMessage() for r in caplog.records if "holding" in r.getMessage()]
        assert len(holding) == 1, holding
        assert "task result(s) until the server takes them (batches" in holding[0]
        assert any(str(b.id) in holding[0] for b in batches), holding
        with ServerEmulator(port=port) as second:
            second.wait_until(lambda: len(second.results) == 3, timeout=20)
            wait_for(lambda: client.stats()["results_late"] == 3, timeout=10)
        late = [r.getMessage() for r in caplog.records if "late, after" in r.getMessage()]
        assert len(late) == 3 and all("(batch " in m and "result of task " in m for m in late), late
        wait_for(lambda: "every held task result has been delivered" in caplog.text, timeout=5)
        stats = client.stats()
        assert stats["results_held"] == 0 and stats["delivery_retries"] >= 3
    finally:
        client.stop(grace=0)
