"""``@retryable(report_timeout=...)``: the report is sent by the caller's thread
and the call returns only when the server took it (Java's ``async=false``), or
raises ``RetryReportError`` within the timeout."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, List

import pytest

import snailjob as sj
from snailjob.client import Client
from snailjob.errors import RetryDefinitionError, TransportError
from snailjob.transport import Reply

from .conftest import test_settings
from .test_retry import reports


def test_the_report_is_taken_before_the_call_returns(make_client):
    @sj.retryable("sync-ok", local_times=0, report_timeout=5)
    def pay(order: int) -> None:
        raise ConnectionError("gateway down")

    client, transport = make_client([pay])
    threads_before = {t.name for t in threading.enumerate()}
    with pytest.raises(ConnectionError):
        pay(9)
    [report] = reports(transport)  # already there: not waiting for the background sender
    assert report["sceneName"] == "sync-ok" and report["argsStr"] == "[9]"
    assert "snailjob-retry-reports" not in {t.name for t in threading.enumerate()} - threads_before
    assert client.stats()["retry_reports_sent"] == 1


def test_a_refused_report_raises_with_the_servers_reason(make_client):
    @sj.retryable("sync-refused", local_times=0, report_timeout=5)
    def pay(order: int) -> None:
        raise ConnectionError("gateway down")

    client, transport = make_client([pay])
    transport.responder = lambda uri, body: Reply(0, "scene sync-refused does not exist", None) \
        if uri == "/batch/report" else Reply(1, "", True)
    with pytest.raises(sj.RetryReportError, match="refused .*scene sync-refused does not exist") as caught:
        pay(1)
    assert isinstance(caught.value.__cause__, ConnectionError)  # the call's own exception, chained


def test_an_unreachable_server_raises_within_the_timeout(make_client):
    attempts: List[float] = []

    def unavailable(uri: str, body: Any) -> Reply:
        if uri == "/batch/report":
            attempts.append(time.monotonic())
            raise TransportError("connection refused", "UNAVAILABLE")
        return Reply(1, "", True)

    @sj.retryable("sync-down", local_times=0, report_timeout=1.0)
    def pay(order: int) -> None:
        raise ConnectionError("gateway down")

    client, transport = make_client([pay])
    transport.responder = unavailable
    started = time.monotonic()
    with pytest.raises(sj.RetryReportError, match=r"did not take the report of .* within 1s"):
        pay(2)
    assert time.monotonic() - started < 1.5
    assert len(attempts) >= 2  # tried again while the server could not be reached


def test_over_real_grpc_a_stopped_server_raises_within_the_timeout():
    with socket.socket() as probe:  # a port with nothing listening: a server that is not running
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]

    @sj.retryable("sync-real", local_times=0, report_timeout=1.5)
    def pay(order: int) -> None:
        raise ConnectionError("gateway down")

    client = Client(test_settings(snail_server_port=dead), executors=[pay]).start()
    try:
        started = time.monotonic()
        with pytest.raises(sj.RetryReportError, match="within 1.5s"):
            pay.report(3)
        assert 0.5 < time.monotonic() - started < 2.5
    finally:
        client.stop(grace=0)


def test_the_timeout_must_be_positive():
    with pytest.raises(RetryDefinitionError, match="report_timeout must be > 0"):
        sj.retryable("x", report_timeout=0)(lambda order: None)
