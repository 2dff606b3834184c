"""``@retryable(retry_if_result=...)``: a returned value that asks for a retry is
retried like an exception (Java's ``retryIfResult``): local attempts, then the
report; and a server replay that returns it is reported as a failure."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, List

import pytest

import snailjob as sj
from snailjob.errors import RetryDefinitionError

from .conftest import wait_for
from .test_retry import dispatch_retry, reports, results

BUSY = {"code": "BUSY"}


def busy(value: Any) -> bool:
    return value == BUSY


class Answers:
    """Returns the given answers in turn (the last one for ever)."""

    def __init__(self, *answers: Any) -> None:
        self.answers, self.calls = list(answers), 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


def test_a_result_that_asks_for_a_retry_is_retried_locally_until_it_does_not(make_client):
    answers = Answers(BUSY, BUSY, {"code": "OK"})

    @sj.retryable("busy-local", local_times=3, local_interval=0, retry_if_result=busy)
    def ask(order: int) -> Any:
        return answers()

    client, transport = make_client([ask])
    assert ask(1) == {"code": "OK"} and answers.calls == 3
    client.flush(2)
    assert reports(transport) == []


def test_after_the_local_attempts_the_call_is_reported_and_the_last_value_returned(make_client):
    answers = Answers(BUSY)

    @sj.retryable("busy-report", local_times=2, local_interval=0, retry_if_result=busy)
    def ask(order: int) -> Any:
        return answers()

    client, transport = make_client([ask])
    assert ask(7) == BUSY and answers.calls == 3
    assert client.flush(5)
    [report] = reports(transport)
    assert (report["sceneName"], json.loads(report["argsStr"])) == ("busy-report", [7])


def test_with_throw_false_the_fallback_gets_a_retry_result(make_client):
    seen: List[Any] = []

    def fallback(exc: Any, order: int) -> str:
        seen.append((type(exc), exc.value, order))
        return "later"

    @sj.retryable("busy-fallback", local_times=1, local_interval=0, retry_if_result=busy, throw=False,
                  fallback=fallback, strategy="local_only")
    def ask(order: int) -> Any:
        return BUSY

    make_client([ask])
    assert ask(3) == "later"
    assert seen == [(sj.RetryResult, BUSY, 3)]


def test_a_predicate_that_raises_keeps_the_result(make_client, caplog):
    def broken(value: Any) -> bool:
        raise KeyError("oops")

    @sj.retryable("busy-broken", local_times=3, local_interval=0, retry_if_result=broken)
    def ask(order: int) -> str:
        return "value"

    make_client([ask])
    with caplog.at_level(logging.ERROR, logger="snailjob.retry"):
        assert ask(1) == "value"
    assert "retry_if_result of" in caplog.text and "KeyError" in caplog.text


def test_exceptions_are_still_retried_and_a_good_result_ends_it(make_client):
    calls: List[int] = []

    @sj.retryable("busy-mixed", local_times=3, local_interval=0, retry_if_result=busy)
    def ask(order: int) -> Any:
        calls.append(order)
        if len(calls) == 1:
            raise ConnectionError("down")
        return BUSY if len(calls) == 2 else "done"

    make_client([ask])
    assert ask(2) == "done" and len(calls) == 3


def test_coroutines_too(make_client):
    answers = Answers(BUSY, "fine")

    @sj.retryable("busy-async", local_times=2, local_interval=0, retry_if_result=busy)
    async def ask(order: int) -> Any:
        await asyncio.sleep(0)
        return answers()

    make_client([ask])
    assert asyncio.run(ask(1)) == "fine" and answers.calls == 2


def test_a_replay_whose_result_asks_for_a_retry_is_reported_as_a_failure(make_client):
    answers = Answers(BUSY, {"code": "OK"})

    @sj.retryable("busy-replay", local_times=5, local_interval=0, retry_if_result=busy)
    def ask(order: int) -> Any:
        return answers()

    client, transport = make_client([ask])
    for task_id in (1, 2):
        assert dispatch_retry(client.host_port, "busy-replay", ask.executor_name, "[5]", task_id).status == 1
        wait_for(lambda task_id=task_id: task_id in results(transport))
    got = results(transport)
    assert got[1]["taskStatus"] == 4
    assert got[1]["exceptionMsg"].startswith("RetryResult: the result {'code': 'BUSY'} asked for a retry")
    assert got[2]["taskStatus"] == 3 and json.loads(got[2]["result"]) == {"code": "OK"}
    assert answers.calls == 2  # one attempt per replay


def test_a_replay_of_a_coroutine_checks_its_result_too(make_client):
    @sj.retryable("busy-replay-async", local_times=0, retry_if_result=busy)
    async def ask(order: int) -> Any:
        return BUSY

    client, transport = make_client([ask])
    assert dispatch_retry(client.host_port, "busy-replay-async", ask.executor_name, "[1]", 1).status == 1
    got = wait_for(lambda: results(transport).get(1))
    assert got["taskStatus"] == 4 and got["exceptionMsg"].startswith("RetryResult:")


def test_the_predicate_must_be_callable():
    with pytest.raises(RetryDefinitionError, match="retry_if_result must be a function"):
        sj.retryable("x", retry_if_result="BUSY")(lambda order: None)  # type: ignore[arg-type]
