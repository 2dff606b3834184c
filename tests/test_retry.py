"""``@retryable``: local retries, reports, and the server-driven side, with
the client's inbound gRPC server called as the SnailJob server calls it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import threading
import time
from decimal import Decimal
from typing import Any, Dict, List, Optional

import pytest

import snailjob as sj
from snailjob.errors import TransportError
from snailjob.retry import RetryRegistry, default_idempotent_id
from snailjob.transport import Reply

from .conftest import call_inbound, wait_for

REPORT = "/batch/report"
RESULT = "/report/retry/dispatch/result"
CALLBACK_RESULT = "/report/retry/callback/result"
LOGS = "/batch/server/report/log"


class Flaky:
    """A callable failing ``failures`` times, then returning ``value``."""

    def __init__(self, failures: int, exc: type = ConnectionError, value: Any = "ok") -> None:
        self.failures, self.exc, self.value = failures, exc, value
        self.calls: List[tuple] = []
        self.lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.calls.append((args, kwargs))
            n = len(self.calls)
        if n <= self.failures:
            raise self.exc(f"failure {n}")
        return self.value


def reports(transport: Any) -> List[Dict[str, Any]]:
    return [entry for body in transport.bodies(REPORT) for entry in body[0]]


# --- local retries -------------------------------------------------------------


def test_local_retries_then_success_without_report(make_client):
    flaky = Flaky(2)

    @sj.retryable("pay", local_times=3, local_interval=0.01)
    def pay(order: int) -> str:
        return flaky(order)

    client, transport = make_client([pay])
    assert pay(7) == "ok"
    assert len(flaky.calls) == 3
    client.flush(2)
    assert reports(transport) == []


def test_local_failure_is_reported_and_raised(make_client):
    flaky = Flaky(99)

    @sj.retryable("pay", local_times=2, local_interval=0.01, biz_no="order")
    def pay(order: int, amount: Decimal, note: str = "n") -> str:
        return flaky(order)

    client, transport = make_client([pay])
    with pytest.raises(ConnectionError, match="failure 3"):
        pay(7, Decimal("9.50"))
    assert len(flaky.calls) == 3  # the call and two local retries
    assert client.flush(5)
    [entry] = reports(transport)
    assert entry == {
        "groupName": "snail_job_demo_group", "sceneName": "pay",
        "executorName": f"{__name__}.test_local_failure_is_reported_and_raised.<locals>.pay",
        "idempotentId": default_idempotent_id("pay", entry["executorName"], '[7,"9.50","n"]'),
        "bizNo": "7", "argsStr": '[7,"9.50","n"]', "extAttrs": "", "serializerName": "jackson",
    }
    assert client.stats()["retry_reports_sent"] == 1


class Base(Exception):
    pass


class Sub(Base):
    pass


class Other(Exception):
    pass


# (include, exclude, raised, retried): the Java client's rules (SnailRetryInterceptor.retryIfException,
# 1.10.1 and 2.0.2), case by case
FILTERS = [
    ((), (), Other, True),                  # neither: everything
    ((Base,), (), Sub, True),               # an include match (a subclass too)
    ((Base,), (), Other, False),            # only include: nothing else
    ((), (Base,), Sub, False),              # an exclude match
    ((), (Base,), Other, True),             # only exclude: everything else
    ((Base,), (Sub,), Sub, True),           # both match: include wins
    ((Sub,), (Base,), Sub, True),           # both match, the other way round: include still wins
    ((Sub,), (Base,), Base, False),         # only exclude matches
    ((Sub,), (Other,), Base, True),         # both given, neither matches: retried (exclude is given)
    ((Base,), (Other,), Other, False),      # exclude matches, include does not
    ((Other,), (), sj.StopRetry, False),    # StopRetry never, whatever the filters
    ((sj.StopRetry,), (), sj.StopRetry, False),
]


@pytest.mark.parametrize("include,exclude,raised,retried", FILTERS)
def test_the_exception_filters_follow_the_java_client(include, exclude, raised, retried):
    function = sj.retryable("filters", include=include, exclude=exclude, local_times=0)(lambda order: None)
    assert function.should_retry(raised("x")) is retried


def test_filters_and_stop_retry(make_client):
    flaky = Flaky(99, exc=KeyError)

    @sj.retryable("s", include=(ConnectionError,), exclude=(KeyError,), local_interval=0)
    def excluded() -> None:
        flaky()

    client, transport = make_client([excluded])
    with pytest.raises(KeyError):
        excluded()
    assert len(flaky.calls) == 1  # excluded: no retry

    other = Flaky(99, exc=ValueError)

    @sj.retryable("s", include=ConnectionError, local_interval=0)
    def not_included() -> None:
        other()

    with pytest.raises(ValueError):
        not_included()
    assert len(other.calls) == 1

    stops = Flaky(99, exc=sj.StopRetry)

    @sj.retryable("s", local_interval=0)
    def stopping() -> None:
        stops()

    with pytest.raises(sj.StopRetry):
        stopping()
    assert len(stops.calls) == 1
    client.flush(2)
    assert reports(transport) == []


def test_strategies_and_fallback(make_client):
    local = Flaky(99)
    remote = Flaky(99)

    @sj.retryable("s", strategy=sj.RetryStrategy.LOCAL_ONLY, local_times=2, local_interval=0,
                  throw=False, fallback=lambda exc, x: f"fallback {x} after {exc}")
    def local_only(x: int) -> str:
        return local(x)

    @sj.retryable("s", strategy="remote_only", local_times=5, local_interval=0, throw=False, fallback=-1)
    def remote_only(x: int) -> int:
        return remote(x)

    client, transport = make_client([local_only, remote_only])
    assert local_only(1) == "fallback 1 after failure 3"
    assert remote_only(2) == -1
    assert (len(local.calls), len(remote.calls)) == (3, 1)
    client.flush(5)
    assert [(e["executorName"].rsplit(".", 1)[1], e["argsStr"]) for e in reports(transport)] == \
        [("remote_only", "[2]")]


def test_exponential_backoff_with_jitter_bounds():
    @sj.retryable("s", backoff="exponential", local_interval=0.5, max_interval=3, jitter=0.5)
    def f() -> None:
        pass

    for attempt, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        delays = [f.delay(attempt) for _ in range(200)]
        assert nominal * 0.5 <= min(delays) and max(delays) <= nominal
        assert max(delays) - min(delays) > nominal * 0.2  # jittered, not constant
    fixed = sj.retryable("s", local_interval=0.25)(lambda: None)
    assert {fixed.delay(n) for n in (1, 2, 5)} == {0.25}


def test_no_nested_retries_but_threads_and_tasks_are_independent(make_client):
    inner_calls = Flaky(99)

    @sj.retryable("inner", local_times=3, local_interval=0)
    def inner() -> None:
        inner_calls()

    outer_calls = Flaky(1)

    @sj.retryable("outer", local_times=1, local_interval=0)
    def outer() -> str:
        outer_calls()
        inner()  # nested: runs once, no retries, no report
        return "done"

    client, transport = make_client([inner, outer])
    with pytest.raises(ConnectionError):
        outer()
    # outer ran twice (call + 1 retry); each ran inner once
    assert (len(outer_calls.calls), len(inner_calls.calls)) == (2, 1)
    client.flush(5)
    assert [e["sceneName"] for e in reports(transport)] == ["outer"]

    # two threads retrying at the same time both retry in full
    gate = threading.Barrier(2)
    both = Flaky(4)

    @sj.retryable("t", local_times=3, local_interval=0.05)
    def threaded() -> str:
        gate.wait(2) if len(both.calls) < 2 else None
        return both()

    results: List[Any] = []
    threads = [threading.Thread(target=lambda: results.append(threaded())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == ["ok", "ok"] and len(both.calls) == 6

    # and so do two asyncio tasks on one loop
    attempts: Dict[str, int] = {}

    @sj.retryable("a", local_times=2, local_interval=0.02)
    async def coro(name: str) -> str:
        attempts[name] = attempts.get(name, 0) + 1
        await asyncio.sleep(0.01)
        if attempts[name] < 3:
            raise ConnectionError(name)
        return name

    async def main() -> List[str]:
        return list(await asyncio.gather(coro("x"), coro("y")))

    assert asyncio.run(main()) == ["x", "y"] and attempts == {"x": 3, "y": 3}


def test_async_retryable_reports_after_local_failure(make_client):
    @sj.retryable("async", local_times=1, local_interval=0)
    async def fetch(url: str) -> str:
        raise TimeoutError(url)

    client, transport = make_client([fetch])
    with pytest.raises(TimeoutError):
        asyncio.run(fetch("http://x"))
    client.flush(5)
    assert [e["argsStr"] for e in reports(transport)] == ['["http://x"]']


# --- arguments and definitions ---------------------------------------------------


@dataclasses.dataclass
class Order:
    id: int
    when: datetime.date
    tags: List[str]


def ship(order: Order, *extra: int, express: bool = False, **meta: str) -> Dict[str, Any]:
    return {"order": order, "extra": extra, "express": express, "meta": meta}


def test_arguments_round_trip_with_declared_types():
    r = sj.retryable("ship")(ship)
    order = Order(5, datetime.date(2026, 11, 28), ["a"])
    text = r.encode_args((order, 1, 2), {"express": True, "gift": "yes"})
    assert json.loads(text) == [{"id": 5, "when": "2026-11-28", "tags": ["a"]}, [1, 2], True, {"gift": "yes"}]
    args, kwargs = r.decode_args(text)
    assert args == (order, 1, 2) and kwargs == {"express": True, "gift": "yes"}
    assert r.func(*args, **kwargs)["order"] == order

    with pytest.raises(sj.RetrySerializationError, match="argument 'order' of .*ship.*id"):
        r.decode_args('[{"id": "x", "when": "2026-11-28", "tags": []}]')
    with pytest.raises(sj.RetrySerializationError, match="JSON array"):
        r.decode_args('{"a": 1}')
    with pytest.raises(sj.RetrySerializationError, match="not JSON"):
        r.decode_args("[1,")


class Conn:
    pass


def uses_conn(conn: Conn) -> None: ...


def uses_later(item: Later) -> None: ...


@dataclasses.dataclass
class Later:
    id: int


def test_unserializable_arguments_and_bad_definitions_fail_clearly(make_client):
    @sj.retryable("s", local_times=0)
    def takes_anything(thing):  # type: ignore[no-untyped-def]
        raise ConnectionError("down")

    client, transport = make_client([takes_anything])
    with pytest.raises(sj.RetrySerializationError, match="argument 'thing' .* lock is not JSON-serializable"):
        takes_anything.report(threading.Lock())
    # a failing call with such an argument still raises its own exception; the
    # report problem is logged, never silent
    with pytest.raises(ConnectionError):
        takes_anything(threading.Lock())

    with pytest.raises(sj.RetryDefinitionError, match="parameter 'conn' of type Conn cannot be sent"):
        sj.retryable("s")(uses_conn)
    sj.retryable("s", strategy="local_only")(uses_conn)  # local only: allowed
    # an annotation naming a class defined later is resolved on first use
    later = sj.retryable("s")(uses_later)
    assert later.decode_args('[{"id": 1}]') == ((Later(id=1),), {})

    class Service:
        def method(self, x: int) -> int:
            return x

    with pytest.raises(sj.RetryDefinitionError, match="cannot send 'self'"):
        sj.retryable("s")(Service.method)
    with pytest.raises(sj.RetryDefinitionError, match="scene must be a non-blank string"):
        sj.retryable(" ")(ship)
    with pytest.raises(sj.RetryDefinitionError, match="longer than the server's 64"):
        sj.retryable("x" * 65)(ship)
    with pytest.raises(sj.RetryDefinitionError, match="exception classes"):
        sj.retryable("s", include=["nope"])(ship)  # type: ignore[list-item]
    with pytest.raises(sj.RetryDefinitionError, match="jitter"):
        sj.retryable("s", jitter=2)(ship)
    with pytest.raises(sj.RetryDefinitionError, match="'snail'"):
        sj.retryable("s", strategy="snail")(ship)


def test_method_with_local_only_strategy_binds_self():
    class Service:
        def __init__(self) -> None:
            self.n = 0

        @sj.retryable("s", strategy="local_only", local_times=2, local_interval=0)
        def work(self, x: int) -> int:
            self.n += 1
            if self.n < 3:
                raise ConnectionError()
            return x * self.n

    assert Service().work(5) == 15


def test_report_without_running_client_names_the_fix():
    @sj.retryable("s")
    def lonely() -> None:
        pass

    with pytest.raises(sj.SnailJobError, match="no running SnailJob client has retryable .*register it"):
        lonely.report()


def test_manual_report_custom_ids_and_refusal(make_client, caplog):
    @sj.retryable("manual", idempotent_id=lambda order: f"order-{order}", biz_no=lambda order: f"B{order}")
    def settle(order: int) -> None:
        raise AssertionError("must not run")

    @sj.retryable("unknown-scene")
    def other(x: int) -> None:
        pass

    def responder(uri: str, body: Any) -> Reply:
        if uri == REPORT and body[0][0]["sceneName"] == "unknown-scene":
            return Reply(1, "failed to report data, no scene configuration found", False)
        return Reply(1, "", True)

    client, transport = make_client([settle, other])
    transport.responder = responder
    assert settle.report(42) == "order-42"
    with caplog.at_level(logging.ERROR, logger="snailjob"):
        other.report(1)
        assert client.flush(5)
    sent = transport.bodies(REPORT)
    # one call per scene, so the unknown scene does not sink the other
    assert sorted(len(b[0]) for b in sent) == [1, 1]
    assert [e for b in sent for e in b[0] if e["sceneName"] == "manual"][0]["bizNo"] == "B42"
    assert "refused 1 retry report(s) of scene unknown-scene" in caplog.text
    assert "no scene configuration found" in caplog.text
    stats = client.stats()
    assert (stats["retry_reports_sent"], stats["retry_reports_refused"]) == (1, 1)


def test_reports_survive_an_outage_and_are_batched(make_client):
    down = threading.Event()
    down.set()

    def responder(uri: str, body: Any) -> Reply:
        if uri == REPORT and down.is_set():
            raise TransportError("UNAVAILABLE: simulated", code="UNAVAILABLE")
        return Reply(1, "", True)

    @sj.retryable("bulk")
    def bulk(i: int) -> None:
        pass

    client, transport = make_client([bulk], snail_retry_report_interval=0.2)
    transport.responder = responder
    for i in range(120):
        bulk.report(i)
    time.sleep(0.5)
    assert client.stats()["retry_reports_pending"] == 120
    down.clear()
    assert client.flush(10)
    sent = [json.loads(e["argsStr"])[0] for e in reports(transport)]
    assert sorted(set(sent)) == list(range(120))
    assert max(len(b[0]) for b in transport.bodies(REPORT)) == 50  # batches of at most 50


# --- the server-driven side -----------------------------------------------------------


def dispatch_retry(port: int, scene: str, executor: str, args_str: str, retry_task_id: int,
                   timeout: int = 5, **extra: Any) -> Any:
    body = {"namespaceId": "764d604ec6fc45f68cd92514c40e9e1a", "groupName": "snail_job_demo_group",
            "sceneName": scene, "argsStr": args_str, "executorName": executor, "retryCount": 1,
            "retryTaskId": retry_task_id, "retryId": 900 + retry_task_id, "executorTimeout": timeout,
            "serializerName": "jackson"}
    body.update(extra)
    return call_inbound(port, "/retry/dispatch/v1",
                        json.dumps([body, {"retry": True, "retryId": str(body["retryId"]), "ddl": timeout}]))


def results(transport: Any, uri: str = RESULT) -> Dict[int, Dict[str, Any]]:
    return {b[0]["retryTaskId"]: b[0] for b in transport.bodies(uri)}


def test_server_replay_runs_once_and_reports_each_outcome(make_client):
    calls: List[Any] = []

    @sj.retryable("replay", local_times=5, local_interval=0)
    def charge(order: Order, amount: float) -> Dict[str, Any]:
        calls.append((order, amount))
        sj.SnailLog.REMOTE.info("charging %s", order.id)
        if amount < 0:
            raise ValueError("negative amount")
        if amount == 0:
            raise sj.StopRetry("nothing to charge")
        return {"charged": amount}

    client, transport = make_client([charge])
    name = charge.executor_name
    order = '{"id": 3, "when": "2026-01-02", "tags": []}'
    for task_id, amount in [(1, 5.5), (2, -1), (3, 0)]:
        reply = dispatch_retry(client.host_port, "replay", name, f"[{order}, {amount}]", task_id)
        assert (reply.status, reply.data) == (1, "true")
    got = wait_for(lambda: len(results(transport)) == 3 and results(transport))
    assert got[1]["taskStatus"] == 3 and json.loads(got[1]["result"]) == {"charged": 5.5}
    assert got[2]["taskStatus"] == 4 and got[2]["exceptionMsg"] == "ValueError: negative amount"
    # StopRetry is reported as a failure (servers up to 2.0.2 do not apply STOP) ...
    assert got[3]["taskStatus"] == 4 and got[3]["exceptionMsg"] == "StopRetry: nothing to charge"
    assert got[1]["sceneName"] == "replay" and got[1]["retryId"] == 901 and got[1]["groupName"]
    assert len(calls) == 3  # one attempt per dispatch: no local retries in a replay
    assert calls[0][0] == Order(3, datetime.date(2026, 1, 2), [])
    logs = wait_for(lambda: [e for b in transport.bodies(LOGS) for e in b[0] if e["logType"] == "RETRY"])
    charging = [e for e in logs if any(f["value"] == "charging 3" for f in e["fieldList"])]
    assert {e["retryTaskId"] for e in charging} == {1, 2, 3}
    assert all(e["retryId"] == 900 + e["retryTaskId"] and "jobId" not in e for e in charging)
    assert not reports(transport)  # the failing replay is not reported again
    # ... and a later replay of that retry is answered the same way without running the function
    assert dispatch_retry(client.host_port, "replay", name, f"[{order}, 0]", 4, retryId=903).status == 1
    again = wait_for(lambda: results(transport).get(4))
    assert again["taskStatus"] == 4 and again["exceptionMsg"].startswith("StopRetry: nothing to charge")
    assert len(calls) == 3


def test_replay_refusals_name_the_problem(make_client):
    @sj.retryable("known")
    def known(x: int) -> int:
        return x

    client, transport = make_client([known])
    name = known.executor_name
    cases = [
        (dict(scene="other", executor=name, args_str="[1]"), "no retryable for scene 'other'"),
        (dict(scene="known", executor="x.y", args_str="[1]"), "registered: 'known/"),
        (dict(scene="known", executor=name, args_str='["a"]'), "argument 'x'"),
        (dict(scene="known", executor=name, args_str="[1]", serializerName="fory"),
         "serializer 'fory' is not supported"),
    ]
    for i, (kw, message) in enumerate(cases):
        reply = dispatch_retry(client.host_port, retry_task_id=50 + i, **kw)  # type: ignore[arg-type]
        assert (reply.status, reply.data) == (0, "false") and message in reply.message, reply.message
    reply = call_inbound(client.host_port, "/retry/dispatch/v1", json.dumps([{"sceneName": "known"}]))
    assert reply.status == 0 and "executorName: Field required" in reply.message
    assert client.stats()["results_delivered"] == 0


def test_replay_timeout_interrupts_and_stop_cancels(make_client):
    started = threading.Event()
    ended: List[str] = []

    @sj.retryable("slow")
    def slow(seconds: float) -> None:
        started.set()
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.05)
            ended.append("finished")
        except sj.TaskInterrupted:
            ended.append("interrupted")
            raise

    client, transport = make_client([slow], snail_interrupt_delay=0.1)
    assert dispatch_retry(client.host_port, "slow", slow.executor_name, "[30]", 71, timeout=1).status == 1
    wait_for(lambda: ended == ["interrupted"], timeout=5)
    started.clear()
    assert dispatch_retry(client.host_port, "slow", slow.executor_name, "[30]", 72, timeout=60).status == 1
    assert started.wait(3)
    stop = {"namespaceId": "n", "groupName": "g", "scene": "slow", "retryTaskId": 72, "retryId": 972}
    assert call_inbound(client.host_port, "/retry/stop/v1", json.dumps([stop])).data == "true"
    wait_for(lambda: ended == ["interrupted", "interrupted"], timeout=5)
    time.sleep(0.3)
    assert results(transport) == {}  # stopped and timed-out runs are not reported


def test_callbacks_run_with_the_call_and_report(make_client):
    seen: List[sj.RetryCall] = []

    def on_success(call: sj.RetryCall) -> None:
        seen.append(call)
        sj.SnailLog.REMOTE.info("callback for %s", call.args)

    def on_max(call: sj.RetryCall) -> None:
        raise RuntimeError("alert failed")

    @sj.retryable("cb", on_success=on_success, on_max_count=on_max)
    def job(x: int, *, y: str = "d") -> None:
        pass

    @sj.retryable("cb2")
    def plain(x: int) -> None:
        pass

    client, transport = make_client([job, plain])

    def callback(task_id: int, status: int, executor: str, scene: str = "cb") -> Any:
        body = {"namespaceId": "n", "groupName": "snail_job_demo_group", "sceneName": scene,
                "argsStr": '[4, "z"]' if scene == "cb" else "[1]", "executorName": executor,
                "retryStatus": status, "retryTaskId": task_id, "retryId": 7, "executorTimeout": 5,
                "serializerName": "jackson"}
        return call_inbound(client.host_port, "/retry/callback/v1", json.dumps([body]))

    assert callback(81, 1, job.executor_name).data == "true"
    assert callback(82, 2, job.executor_name).data == "true"
    assert callback(83, 1, plain.executor_name, scene="cb2").data == "true"
    got = wait_for(lambda: len(results(transport, CALLBACK_RESULT)) == 3 and results(transport, CALLBACK_RESULT))
    assert (got[81]["taskStatus"], got[82]["taskStatus"], got[83]["taskStatus"]) == (3, 4, 3)
    assert got[82]["exceptionMsg"] == "RuntimeError: alert failed" and "result" not in got[82]
    assert seen == [sj.RetryCall("cb", job.executor_name, (4,), {"y": "z"}, 7, 81, 1)]
    logs = wait_for(lambda: [e for b in transport.bodies(LOGS) for e in b[0]
                             if any(f["value"] == "callback for (4,)" for f in e["fieldList"])])
    assert logs[0]["logType"] == "RETRY" and logs[0]["retryTaskId"] == 81


def test_console_idempotent_id_and_argument_display(make_client):
    @sj.retryable("ids")
    def default_id(a: int, b: Optional[str] = None) -> None:
        pass

    @sj.retryable("ids2", idempotent_id=lambda a, b=None: f"id-{a}")
    def custom_id(a: int, b: Optional[str] = None) -> None:
        pass

    client, transport = make_client([default_id, custom_id])

    def ask(uri: str, scene: str, executor: str, args_str: str) -> Any:
        body = {"group": "g", "scene": scene, "argsStr": args_str, "executorName": executor,
                "serializerName": "jackson", "namespaceId": "n"}
        return call_inbound(client.host_port, uri, json.dumps([body]))

    # the console's spacing does not change the id: it is computed from the canonical text
    reply = ask("/retry/generate/idempotent-id/v1", "ids", default_id.executor_name, '[ 1 , "x" ]')
    assert reply.status == 1
    assert json.loads(reply.data) == default_id.build_report((1, "x"), {}).idempotentId
    reply = ask("/retry/generate/idempotent-id/v1", "ids2", custom_id.executor_name, "[5]")
    assert json.loads(reply.data) == "id-5"
    reply = ask("/retry/deserialize/args/v1", "ids", default_id.executor_name, "[1]")
    assert json.loads(reply.data) == [1, None]
    reply = ask("/retry/deserialize/args/v1", "ids", default_id.executor_name, '["one"]')
    assert reply.status == 0 and "argument 'a'" in reply.message


def test_registration_paths_share_one_registry():
    registry = RetryRegistry()

    @sj.retryable("r")
    def f() -> None:
        pass

    registry.register(f)
    registry.register(f)  # idempotent
    assert registry.get("r", f.executor_name) is f

    @sj.retryable("r", executor_name=f.executor_name)
    def g() -> None:
        pass

    with pytest.raises(sj.RetryDefinitionError, match="share the executor name"):
        registry.register(g)
    with pytest.raises(sj.RetryDefinitionError, match="not a @retryable"):
        registry.register(lambda: None)  # type: ignore[arg-type]


def test_undelivered_reports_survive_a_restart_with_an_outbox_file(make_client, tmp_path):
    path = str(tmp_path / "outbox.db")

    def down(uri: str, body: Any) -> Reply:
        if uri == REPORT:
            raise TransportError("UNAVAILABLE: simulated", code="UNAVAILABLE")
        return Reply(1, "", True)

    @sj.retryable("durable")
    def durable(i: int) -> None:
        pass

    first, transport = make_client([durable], snail_outbox_path=path, snail_retry_report_interval=0.1)
    transport.responder = down
    for i in range(3):
        durable.report(i)
    time.sleep(0.3)
    assert reports(transport) and first.stats()["retry_reports_sent"] == 0  # tried, never taken
    first.stop(grace=0)  # they stay in the file

    second, transport2 = make_client([durable], snail_outbox_path=path, snail_retry_report_interval=0.1)
    assert second.flush(5)
    assert sorted(json.loads(e["argsStr"])[0] for e in reports(transport2)) == [0, 1, 2]
    second.stop(grace=0)
    third, transport3 = make_client([durable], snail_outbox_path=path, snail_retry_report_interval=0.1)
    time.sleep(0.3)
    assert third.flush(2) and reports(transport3) == []  # delivered ones are not sent again


def test_a_failing_id_function_does_not_replace_the_callers_exception(make_client, caplog):
    @sj.retryable("s", local_times=0, idempotent_id=lambda x: {}["missing"])
    def f(x: int) -> None:
        raise ConnectionError("the real problem")

    make_client([f])
    with caplog.at_level(logging.ERROR, logger="snailjob"):
        with pytest.raises(ConnectionError, match="the real problem"):
            f(1)
    assert "its idempotent_id or biz_no function failed" in caplog.text and "KeyError" in caplog.text


# --- hostile argsStr: refused as the arguments' fault, naming the scene ---------------------------


@sj.retryable("pay")
def pay(order_id: int, amount: float) -> None:
    PAID.append((order_id, amount))


@sj.retryable("loose")
def loose(a, *rest, **opts):  # type: ignore[no-untyped-def]
    PAID.append((a, rest, opts))


PAID: List[Any] = []

RETRY_URIS = ["/retry/dispatch/v1", "/retry/callback/v1", "/retry/deserialize/args/v1",
              "/retry/generate/idempotent-id/v1"]


def ask_retry(port: int, uri: str, scene: str, executor: str, args_str: str, task_id: int) -> Any:
    """A server call of ``uri`` carrying ``args_str``, as the server builds it."""
    if uri in ("/retry/dispatch/v1", "/retry/callback/v1"):
        body: Dict[str, Any] = {
            "namespaceId": "n", "groupName": "snail_job_demo_group", "sceneName": scene, "argsStr": args_str,
            "executorName": executor, "retryCount": 1, "retryStatus": 1, "retryTaskId": task_id,
            "retryId": task_id, "executorTimeout": 5, "serializerName": "jackson"}
    else:
        body = {"group": "g", "scene": scene, "argsStr": args_str, "executorName": executor,
                "serializerName": "jackson", "namespaceId": "n"}
    return call_inbound(port, uri, json.dumps([body]))


HOSTILE_ARGS = [
    ("[" * 100_000, "scene 'pay': argsStr is nested too deeply (limit 200)"),
    ("[1, " + "[" * 300 + "]" * 300 + "]", "scene 'pay': argsStr is nested too deeply (limit 200)"),
    ('["' + "[" * 100_000 + '"]', "scene 'pay': argsStr holds 1 argument, pay() takes 2"),  # brackets in a string
    ("[1, 2.5, 3]", "scene 'pay': argsStr holds 3 arguments, pay() takes 2"),
    ("[]", "scene 'pay': argsStr holds 0 arguments, pay() takes 2"),
    ('{"order_id": 1}', "scene 'pay': argsStr must be a JSON array (one value per parameter), got a JSON object"),
    ('"[1, 2]"', "got a JSON string"),
    ("[1, 2", "scene 'pay': argsStr is not JSON ("),
    ('[1, "lots"]', "scene 'pay': argument 'amount' of pay(): Input should be a valid number"),
    ("[" + "9" * 5000 + ", 1]", "scene 'pay': argsStr holds a number of 5000 digits (limit 4300)"),
    ("[1, 1." + "5" * 5000 + "]", "scene 'pay': argsStr holds a number of 5002 characters (limit 4300)"),
]


@pytest.mark.parametrize("uri", RETRY_URIS)
def test_hostile_args_are_refused_naming_the_scene(make_client, caplog, uri):
    client, transport = make_client([pay, loose])
    PAID.clear()
    caplog.set_level(logging.DEBUG, logger="snailjob")
    for i, (args_str, message) in enumerate(HOSTILE_ARGS):
        reply = ask_retry(client.host_port, uri, "pay", pay.executor_name, args_str, 300 + i)
        assert reply.status == 0 and message in reply.message, (args_str[:40], reply.message)
        for blame in ("TypeError", "RecursionError", "client error", "raised", "Traceback"):
            assert blame not in reply.message, reply.message
    loose_cases = [
        ("[1, 5]", "scene 'loose': argument 'rest' (*rest) must be a JSON array or null, got a JSON number"),
        ("[1, [], []]", "scene 'loose': argument 'opts' (**opts) must be a JSON object or null, got a JSON array"),
        ('[1, [], {"a": 2}]', "scene 'loose': argument 'opts' (**opts) repeats the parameter 'a'"),
        ("[1, [], {}, 4]", "scene 'loose': argsStr holds 4 arguments, loose() takes 1 to 3"),
    ]
    for i, (args_str, message) in enumerate(loose_cases):
        reply = ask_retry(client.host_port, uri, "loose", loose.executor_name, args_str, 400 + i)
        assert reply.status == 0 and message in reply.message, (args_str, reply.message)
    # no traceback, no error: each refusal is one warning
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    refusals = [r for r in caplog.records if r.getMessage().startswith("retry call refused")]
    assert len(refusals) == len(HOSTILE_ARGS) + len(loose_cases)
    time.sleep(0.2)
    assert PAID == [] and results(transport) == {} and results(transport, CALLBACK_RESULT) == {}
    # the node keeps answering: a valid call of the same URI works
    reply = ask_retry(client.host_port, uri, "pay", pay.executor_name, '[7, 1.5]', 500)
    assert reply.status == 1, reply.message
    reply = ask_retry(client.host_port, uri, "loose", loose.executor_name, '[1, [2], {"b": 3}]', 501)
    assert reply.status == 1, reply.message
    if uri == "/retry/dispatch/v1":
        wait_for(lambda: len(PAID) == 2)
        assert (7, 1.5) in PAID and (1, (2,), {"b": 3}) in PAID
        assert wait_for(lambda: len(results(transport)) == 2 and results(transport))[500]["taskStatus"] == 3
    elif uri == "/retry/deserialize/args/v1":
        assert json.loads(reply.data) == [1, [2], {"b": 3}]


def test_depth_scan_ignores_brackets_in_strings():
    from snailjob.wire.codec import too_deep

    assert too_deep("[" * 201, 200) and not too_deep("[" * 200, 200)
    assert not too_deep("[]" * 1000, 1) and too_deep("[{}]", 1)
    assert not too_deep('["' + "[{" * 500 + '"]', 2)  # inside a string
    assert not too_deep('["a\\"' + "[" * 500 + '"]', 2)  # an escaped quote does not end the string
    assert too_deep('["a\\\\"' + "[" * 500 + "]", 2)  # an escaped backslash does
    assert too_deep('[1, "unterminated' + "]" * 3 + "[" * 10, 2) is False  # the rest is string text
    assert too_deep("[" * 5 + '"x"' + "[" * 5, 9)
