"""The whole retry flow between a real client and the emulator's retry
server: report, scheduled replays, results, callbacks, console calls,
RETRY logs.  Each test ends with the emulator's ``problems`` empty
(checked by the ``run_client`` fixture)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from typing import Any, List

import pytest

import snailjob as sj
from snailjob.wire.enums import RetryStatusEnum, RetryTaskStatusEnum

from .conftest import wait_for

SUCCESS, FAIL = int(RetryTaskStatusEnum.SUCCESS), int(RetryTaskStatusEnum.FAIL)
FINISH, MAX_COUNT = int(RetryStatusEnum.FINISH), int(RetryStatusEnum.MAX_COUNT)


@dataclasses.dataclass
class Parcel:
    id: int
    weight: float


class Gateway:
    """Fails the first ``failures`` calls, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: List[Any] = []
        self.lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        with self.lock:
            self.calls.append(args)
            n = len(self.calls)
        if n <= self.failures:
            raise ConnectionError(f"gateway down (call {n})")
        return {"calls": n}


def test_local_failure_is_replayed_until_success_and_called_back(run_client, snailjob_emulator):
    emu = snailjob_emulator
    emu.add_retry_scene("ship", max_retry_count=5, interval=0.2, callback=True)
    gateway = Gateway(failures=3)
    done: List[sj.RetryCall] = []
    in_replay: List[Any] = []

    @sj.retryable("ship", local_times=1, local_interval=0.01, biz_no=lambda p: f"P{p.id}",
                  on_success=done.append)
    def ship(parcel: Parcel) -> dict:
        try:
            in_replay.append(sj.current_retry().retry_task_id)
        except sj.NotInJobError:
            in_replay.append(None)
        sj.SnailLog.REMOTE.info("shipping parcel %s", parcel.id)
        return gateway(parcel)

    run_client([ship])
    with pytest.raises(ConnectionError, match="call 2"):
        ship(Parcel(7, 1.5))
    retry = wait_for(lambda: emu.retries_for("ship") and emu.retries_for("ship")[0])
    assert (retry.biz_no, retry.executor_name, retry.serializer_name) == ("P7", ship.executor_name, "jackson")
    assert json.loads(retry.args_str) == [{"id": 7, "weight": 1.5}]
    assert retry.wait(10) == FINISH
    assert [t.status for t in retry.retry_tasks] == [FAIL, SUCCESS]
    assert retry.retry_tasks[0].exception_msg == "ConnectionError: gateway down (call 3)"
    assert json.loads(retry.retry_tasks[1].result) == {"calls": 4}
    assert in_replay[:2] == [None, None] and in_replay[2:] == [t.id for t in retry.retry_tasks]
    assert retry.wait_callback(10) == SUCCESS
    assert done == [sj.RetryCall("ship", ship.executor_name, (Parcel(7, 1.5),), {}, retry.callback_id,
                                 retry.callback_tasks[0].id, FINISH)]
    # the replays' logs are the retry's logs, per attempt
    # (a log parcel and the attempt's result travel apart: the result may arrive first)
    def logged() -> set:
        return {e["retryTaskId"] for e in emu.retry_logs
                if any(f["value"] == "shipping parcel 7" for f in e["fieldList"])}

    wait_for(lambda: logged() == {t.id for t in retry.retry_tasks}, timeout=10)
    assert logged() == {t.id for t in retry.retry_tasks}


def test_max_count_calls_the_give_up_callback(run_client, snailjob_emulator):
    emu = snailjob_emulator
    emu.add_retry_scene("hopeless", max_retry_count=2, interval=0.1, callback=True)
    gave_up: List[sj.RetryCall] = []

    @sj.retryable("hopeless", strategy="remote_only", on_max_count=gave_up.append)
    async def probe(host: str, *, port: int = 80) -> None:
        await asyncio.sleep(0)
        raise TimeoutError(f"{host}:{port}")

    run_client([probe])
    with pytest.raises(TimeoutError):
        asyncio.run(probe("db", port=5432))
    retry = wait_for(lambda: emu.retries_for("hopeless") and emu.retries_for("hopeless")[0])
    assert retry.wait(10) == MAX_COUNT and [t.status for t in retry.retry_tasks] == [FAIL, FAIL]
    assert retry.wait_callback(10) == SUCCESS
    assert [(c.args, c.kwargs, c.retry_status) for c in gave_up] == [(("db",), {"port": 5432}, MAX_COUNT)]


def test_stop_retry_in_a_replay_ends_the_retry_at_its_maximum(run_client, snailjob_emulator):
    emu = snailjob_emulator
    emu.add_retry_scene("refund", max_retry_count=3, interval=0.1)
    runs: List[str] = []

    @sj.retryable("refund", strategy="remote_only")
    def refund(order: str) -> None:
        runs.append(order)
        raise sj.StopRetry(f"order {order} was cancelled")

    run_client([refund])
    refund.report("A1")
    retry = wait_for(lambda: emu.retries_for("refund") and emu.retries_for("refund")[0])
    assert retry.wait(10) == MAX_COUNT
    assert [t.status for t in retry.retry_tasks] == [FAIL, FAIL, FAIL]
    assert all(t.exception_msg.startswith("StopRetry: order A1 was cancelled") for t in retry.retry_tasks)
    assert runs == ["A1"]  # later replays are answered without running the function


def test_duplicate_reports_are_one_retry_and_console_calls_use_the_client(run_client, snailjob_emulator):
    emu = snailjob_emulator
    emu.add_retry_scene("mail", max_retry_count=3, interval=5)  # no replay during the test

    @sj.retryable("mail", idempotent_id=lambda to, subject: f"{to}|{subject}")
    def mail(to: str, subject: str) -> None:
        pass

    client = run_client([mail])
    assert mail.report("a@x", "hi") == mail.report("a@x", "hi") == "a@x|hi"
    client.flush(5)
    emu.wait_until(lambda: len(emu.retry_reports) == 2, timeout=5)
    assert len(emu.retries_for("mail")) == 1  # de-duplicated by the server
    # what the console does when an operator adds a retry by hand, once the server lists the node
    # (its reports can arrive before its first heartbeat does)
    emu.wait_until(lambda: any(n.host_id == client.host_id and n.alive for n in emu.nodes), timeout=10)
    assert emu.generate_idempotent_id("mail", mail.executor_name, '["b@x", "yo"]') == "b@x|yo"
    assert emu.deserialize_args("mail", mail.executor_name, '["b@x","yo"]') == ["b@x", "yo"]
    added = emu.add_retry("mail", mail.executor_name, '["b@x","yo"]')
    assert added is not None and added.idempotent_id == "b@x|yo"


def test_unknown_scene_is_refused_without_losing_other_scenes(run_client, snailjob_emulator, caplog):
    emu = snailjob_emulator
    emu.add_retry_scene("known", interval=5)

    @sj.retryable("known")
    def known(x: int) -> None:
        pass

    @sj.retryable("missing")
    def missing(x: int) -> None:
        pass

    client = run_client([known, missing])
    known.report(1)
    missing.report(2)
    assert client.flush(5)
    assert [json.loads(r.args_str) for r in emu.retries_for("known")] == [[1]]
    assert emu.retries_for("missing") == []
    assert client.stats()["retry_reports_refused"] == 1
    assert "retry report(s) of scene missing" in caplog.text


def test_a_replay_past_the_scene_timeout_is_interrupted_and_tried_again(run_client, snailjob_emulator):
    emu = snailjob_emulator
    emu.add_retry_scene("slow", max_retry_count=3, interval=0.1, executor_timeout=1)
    runs: List[str] = []

    @sj.retryable("slow", strategy="remote_only")
    def slow(n: int) -> str:
        runs.append("start")
        if len(runs) == 1:
            try:
                while True:  # ignores its stop event: interrupted by the client's timeout
                    threading.Event().wait(0.05)
            except sj.TaskInterrupted:
                runs.append("interrupted")
                raise
        return "fast enough"

    run_client([slow], snail_interrupt_delay=0.1)
    slow.report(1)
    retry = wait_for(lambda: emu.retries_for("slow") and emu.retries_for("slow")[0])
    assert retry.wait(10) == FINISH
    first, second = retry.retry_tasks
    assert (first.status, first.timed_out, second.status, second.result) == (FAIL, True, SUCCESS, "fast enough")
    assert runs == ["start", "interrupted", "start"]
