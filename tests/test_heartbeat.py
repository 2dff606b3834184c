"""Heartbeat and registration: survives errors, re-registers after outages,
one warning per outage."""

import logging
import time

import snailjob as sj
from snailjob.errors import TransportError
from snailjob.transport import Reply

from .conftest import wait_for

BEAT, REGISTER = "/beat", "/register/job/executors"


def test_registers_again_when_the_server_comes_back(make_client, caplog):
    client, transport = make_client([sj.job("r1")(lambda a: None)])
    wait_for(lambda: transport.bodies(REGISTER))
    down = [True]

    def responder(uri, body):
        if down[0]:
            raise TransportError("UNAVAILABLE: connection refused", code="UNAVAILABLE")
        return Reply(1, "", "PONG" if uri == BEAT else True)

    with caplog.at_level(logging.WARNING, logger="snailjob"):
        transport.responder = responder
        wait_for(lambda: not client.server_up)
        beats_before = len(transport.bodies(BEAT))
        wait_for(lambda: len(transport.bodies(BEAT)) >= beats_before + 4, timeout=10)
        down[0] = False
        wait_for(lambda: len(transport.bodies(REGISTER)) == 2 and client.registered, timeout=10)
    assert caplog.text.count("unreachable") == 1  # one warning for the whole outage (shorter than a minute)
    assert transport.bodies(REGISTER)[1] == [[{"executorInfo": "r1"}]]


def test_heartbeat_survives_unexpected_errors(make_client):
    client, transport = make_client()
    wait_for(lambda: client.server_up)
    calls = [0]

    def broken(uri, body):
        calls[0] += 1
        if calls[0] <= 3:
            raise RuntimeError("bug in a transport")
        return Reply(1, "", "PONG")

    transport.responder = broken
    count = len(transport.bodies(BEAT))
    wait_for(lambda: len(transport.bodies(BEAT)) >= count + 6, timeout=10)
    assert client.server_up


def test_registration_refused_is_retried(make_client, monkeypatch, caplog):
    import snailjob.heartbeat

    monkeypatch.setattr(snailjob.heartbeat, "REGISTER_RETRY", 0.3)
    refusals = [2]

    def responder(uri, body):
        if uri == REGISTER and refusals[0] > 0:
            refusals[0] -= 1
            return Reply(0, "database busy", "false")
        return Reply(1, "", "PONG" if uri == BEAT else True)

    client, transport = make_client()
    transport.responder = responder
    with caplog.at_level(logging.WARNING, logger="snailjob"):
        client.register(sj.job("late")(lambda a: None))  # registering after start re-registers
        wait_for(lambda: client.registered and len(transport.bodies(REGISTER)) >= 3, timeout=10)
    assert caplog.text.count("refused the executor registration") == 1  # not once per attempt


def test_beat_period_is_the_setting(make_client):
    client, transport = make_client(snail_heartbeat_interval=0.3)
    time.sleep(1.3)
    assert 3 <= len(transport.bodies(BEAT)) <= 6
