"""Java's ``propagation``, ``retryMethod`` and ``forceReport``, as this
client carries them over: ``@retryable(propagation=...)``, ``retry_with=``
and ``force_report=``, through a real client and the emulated server."""

from __future__ import annotations

import asyncio
import json
from typing import Any, List

import pytest

import snailjob as sj
from snailjob.errors import RetryDefinitionError

from .conftest import wait_for
from .test_retry import REPORT, Flaky, dispatch_retry, reports, results


def scenes(transport: Any) -> List[str]:
    return sorted(e["sceneName"] for e in reports(transport))


@pytest.mark.parametrize("propagation, inner_runs, reported", [
    ("required", 2, ["outer"]),                 # joins: once per outer attempt, the outer call reports
    ("requires_new", 2 * 3, ["inner", "outer"]),  # its own 2 local retries and report, in each outer attempt
])
def test_a_nested_retryable_joins_or_opens_its_own_retry(make_client, propagation, inner_runs, reported):
    inner_calls = Flaky(99)

    @sj.retryable("inner", local_times=2, local_interval=0, propagation=propagation,
                  idempotent_id=lambda: "inner-1", throw=False)
    def inner() -> None:
        inner_calls()

    outer_calls = Flaky(99)

    @sj.retryable("outer", local_times=1, local_interval=0)
    def outer() -> None:
        try:
            inner()  # raises when it joins; with its own retry its throw=False returns None
        except ConnectionError:
            pass
        outer_calls()

    client, transport = make_client([inner, outer])
    with pytest.raises(ConnectionError):
        outer()
    assert len(outer_calls.calls) == 2
    assert len(inner_calls.calls) == inner_runs
    client.flush(5)
    assert sorted(set(scenes(transport))) == reported
    # after its own retry the outer one still retries and reports: its state came back
    assert scenes(transport).count("outer") == 1


def test_requires_new_called_alone_or_by_itself_retries_once_per_call(make_client):
    depth: List[int] = []

    @sj.retryable("rec", local_times=1, local_interval=0, propagation="requires_new")
    def recurse(n: int) -> None:
        depth.append(n)
        if n > 0:
            recurse(n - 1)  # already the call being retried: runs once, no retry of its own
        raise ConnectionError("down")

    client, transport = make_client([recurse])
    with pytest.raises(ConnectionError):
        recurse(1)
    assert depth == [1, 0, 1, 0]  # two attempts of the outer call, each running the inner one once
    client.flush(5)
    assert [json.loads(e["argsStr"]) for e in reports(transport)] == [[1]]


def test_requires_new_inside_a_server_replay_runs_once(make_client):
    inner_calls = Flaky(99)

    @sj.retryable("inner", local_times=3, local_interval=0, propagation="requires_new")
    def inner() -> None:
        inner_calls()

    @sj.retryable("outer", local_times=3, local_interval=0)
    def outer(n: int) -> None:
        inner()

    client, transport = make_client([inner, outer])
    dispatch_retry(client.host_port, "outer", outer.executor_name, "[1]", 11)
    got = wait_for(lambda: results(transport).get(11))
    assert got["taskStatus"] == 4 and got["exceptionMsg"] == "ConnectionError: failure 1"
    assert len(inner_calls.calls) == 1
    client.flush(2)
    assert reports(transport) == []


def test_requires_new_in_coroutines(make_client):
    inner_calls = Flaky(99)

    @sj.retryable("inner", local_times=2, local_interval=0, propagation="requires_new", throw=False)
    async def inner() -> None:
        inner_calls()

    @sj.retryable("outer", local_times=0, local_interval=0, strategy="local_only")
    async def outer() -> str:
        await inner()
        return "done"

    client, transport = make_client([inner, outer])
    assert asyncio.run(outer()) == "done"
    assert len(inner_calls.calls) == 3
    client.flush(5)
    assert scenes(transport) == ["inner"]


def test_retry_with_runs_the_local_retries_and_the_replays(make_client):
    first: List[int] = []
    again: List[int] = []

    def pay_again(order: int, amount: float = 1.0) -> str:
        again.append(order)
        if len(again) < 2:
            raise ConnectionError("still down")
        return f"paid {order} on retry"

    @sj.retryable("pay", local_times=3, local_interval=0, retry_with=pay_again)
    def pay(order: int, amount: float = 1.0) -> str:
        first.append(order)
        raise ConnectionError("down")

    client, transport = make_client([pay])
    assert pay(5) == "paid 5 on retry"
    assert (first, again) == ([5], [5, 5])
    # a server replay calls it too, under the decorated function's executor name
    dispatch_retry(client.host_port, "pay", pay.executor_name, "[8, 2.5]", 21)
    got = wait_for(lambda: results(transport).get(21))
    assert got["taskStatus"] == 3 and got["result"] == "paid 8 on retry"
    assert first == [5] and again == [5, 5, 8]


def test_retry_with_is_checked_at_decoration():
    def two(a: int, b: int) -> None: ...

    async def coro(a: int, b: int) -> None: ...

    with pytest.raises(RetryDefinitionError, match=r"retry_with does not take the function's arguments \['a', 'b'\]"):
        sj.retryable("s", retry_with=lambda a: None)(two)
    with pytest.raises(RetryDefinitionError, match="retry_with must be a plain function"):
        sj.retryable("s", retry_with=coro)(two)
    with pytest.raises(RetryDefinitionError, match="retry_with must be a coroutine function"):
        sj.retryable("s", retry_with=two)(coro)
    with pytest.raises(RetryDefinitionError, match="retry_with must be a function"):
        sj.retryable("s", retry_with="two")(two)  # type: ignore[arg-type]
    with pytest.raises(RetryDefinitionError, match="requires_old"):
        sj.retryable("s", propagation="requires_old")(two)
    sj.retryable("s", retry_with=lambda *a, **k: None)(two)  # anything taking the arguments will do


@pytest.mark.parametrize("force", [False, True])
def test_a_manual_report_inside_a_replay_is_sent_only_when_forced(make_client, caplog, force):
    @sj.retryable("side", strategy="remote_only", force_report=force)
    def side(n: int) -> None: ...

    @sj.retryable("main", local_times=0)
    def main(n: int) -> str:
        side.report(n + 100)
        return "ok"

    client, transport = make_client([side, main])
    caplog.set_level("INFO", logger="snailjob.retry")
    dispatch_retry(client.host_port, "main", main.executor_name, "[1]", 31)
    assert wait_for(lambda: results(transport).get(31))["taskStatus"] == 3
    client.flush(5)
    sent = [json.loads(e["argsStr"]) for e in reports(transport)]
    assert sent == ([[101]] if force else [])
    assert ("not reported: called inside a server replay" in caplog.text) is not force
    # outside a replay the manual report is always sent
    side.report(7)
    client.flush(5)
    assert [json.loads(e["argsStr"]) for e in reports(transport)][-1] == [7]
    assert transport.bodies(REPORT)
