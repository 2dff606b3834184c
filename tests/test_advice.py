"""A node that cannot register keeps saying so (issue 25, item 6): the right
word (refused / unreachable), a fix line, a pointer to ``snailjob check``,
repeated at an interval while the problem lasts, one INFO line when it clears."""

import logging
import socket
import time

import pytest

import snailjob as sj
from snailjob import Client
from snailjob.advice import CHECK_HINT, FIX_SERVER, FIX_TOKEN, REFUSED, UNREACHABLE, LastingProblem
from snailjob.errors import TransportError
from snailjob.testing import ServerEmulator
from snailjob.transport import Reply

from .conftest import client_for, wait_for

BEAT = "/beat"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def warnings_of(caplog, text):
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_schedule_first_then_after_a_minute_then_every_five(caplog):
    clock = Clock()
    log = logging.getLogger("snailjob.test_lasting")
    problem = LastingProblem(log, "heartbeat", clock=clock)
    logged = []
    with caplog.at_level(logging.WARNING, logger="snailjob.test_lasting"):
        for second in range(0, 1000, 10):  # a heartbeat every 10 s for 16 minutes
            clock.now = 1000.0 + second
            if problem.failed(REFUSED, "10.0.0.1:17888", "Token authentication failed", FIX_TOKEN):
                logged.append(second)
    assert logged == [0, 60, 360, 660, 960]
    first, second = caplog.records[0].getMessage(), caplog.records[1].getMessage()
    assert first.startswith("SnailJob server 10.0.0.1:17888 refused the heartbeat: Token authentication failed")
    assert f"\n    fix: {FIX_TOKEN}" in first and CHECK_HINT in first and "next warning in 1m 0s" in first
    assert "still refuses the heartbeat after 1m 0s (7 failed attempts)" in second
    assert "next warning in 5m 0s" in second
    clock.now += 5
    assert problem.cleared() == "after 16m 35s of refused heartbeats (100 failed attempts)"  # 990 s + 5
    assert problem.cleared() is None


def test_a_change_of_kind_is_logged_at_once():
    clock = Clock()
    problem = LastingProblem(logging.getLogger("snailjob.test_lasting"), "heartbeat", clock=clock)
    assert problem.failed(UNREACHABLE, "s:1", "UNAVAILABLE", FIX_SERVER)
    clock.now += 10
    assert not problem.failed(UNREACHABLE, "s:1", "UNAVAILABLE", FIX_SERVER)
    assert problem.failed(REFUSED, "s:1", "Token authentication failed", FIX_TOKEN)
    clock.now += 10
    assert not problem.failed(REFUSED, "s:1", "Token authentication failed", FIX_TOKEN)


@pytest.fixture
def short_interval(monkeypatch):
    monkeypatch.setattr(Client, "warn_again", (0.6, 0.6))


def test_wrong_token_says_refused_with_the_fix_and_says_it_again(snailjob_emulator, short_interval, caplog):
    client = client_for(snailjob_emulator, [sj.job("e")(lambda a: None)], snail_token="SJ_wrong_token_value",
                        snail_heartbeat_interval=0.1)
    with caplog.at_level(logging.WARNING, logger="snailjob"):
        client.start()
        try:
            wait_for(lambda: len(warnings_of(caplog, "refuses the heartbeat")) >= 2, timeout=10,
                     what="a second warning")
            failures = client.heartbeat_failures
        finally:
            client.stop(grace=0)
    first = warnings_of(caplog, "refused the heartbeat")[0].getMessage()
    assert "Token authentication failed" in first and "unavailable" not in first.lower()
    assert f"fix: {FIX_TOKEN}" in first and "snailjob check" in first
    again = warnings_of(caplog, "still refuses the heartbeat")[0].getMessage()
    assert " after " in again and "failed attempts)" in again and f"fix: {FIX_TOKEN}" in again
    # not one line per heartbeat
    assert len(warnings_of(caplog, "the heartbeat")) < failures
    assert "SJ_wrong_token_value" not in caplog.text


def test_dead_server_says_unreachable(short_interval, caplog):
    placeholder = ServerEmulator(port=free_port())  # nothing listens there
    client = client_for(placeholder, [], snail_heartbeat_interval=0.1, snail_rpc_timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="snailjob"):
        client.start()
        try:
            wait_for(lambda: warnings_of(caplog, "still unreachable for the heartbeat"), timeout=10,
                     what="a repeated warning")
        finally:
            client.stop(grace=0)
    first = warnings_of(caplog, "unreachable for the heartbeat")[0].getMessage()
    assert f"fix: {FIX_SERVER}" in first and "snailjob check" in first and "refused the" not in first


def test_recovery_is_one_info_line(make_client, short_interval, caplog):
    client, transport = make_client([sj.job("r")(lambda a: None)])
    wait_for(lambda: client.registered)
    down = [True]

    def responder(uri, body):
        if down[0]:
            return Reply(0, "Token authentication failed. [namespace:x groupName:y token:abc]", None)
        return Reply(1, "", "PONG" if uri == BEAT else True)

    with caplog.at_level(logging.INFO, logger="snailjob"):
        transport.responder = responder
        wait_for(lambda: warnings_of(caplog, "still refuses the heartbeat"), timeout=10)
        down[0] = False
        wait_for(lambda: client.server_up and client.registered, timeout=10)
        time.sleep(0.5)  # more good beats: no more lines
    back = [r for r in caplog.records if r.levelno == logging.INFO and "refused heartbeats" in r.getMessage()]
    assert len(back) == 1
    assert back[0].getMessage().startswith("connected to SnailJob server")
    assert "failed attempts)" in back[0].getMessage()
    assert "token:abc" not in caplog.text and "token:***" in caplog.text


def test_registration_transport_failure_is_not_logged_per_attempt(make_client, short_interval, caplog):
    def responder(uri, body):
        if uri == "/register/job/executors":
            raise TransportError("/register/job/executors: DEADLINE_EXCEEDED", code="DEADLINE_EXCEEDED")
        return Reply(1, "", "PONG" if uri == BEAT else True)

    with caplog.at_level(logging.WARNING, logger="snailjob"):
        client, transport = make_client([sj.job("x")(lambda a: None)])
        transport.responder = responder
        client.register(sj.job("y")(lambda a: None))
        wait_for(lambda: len(transport.bodies("/register/job/executors")) >= 8, timeout=10)
    lines = warnings_of(caplog, "executor registration")
    assert 1 <= len(lines) < 4
    assert "unreachable for the executor registration" in lines[0].getMessage()
