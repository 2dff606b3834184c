"""Process lifecycle: SIGTERM waits for running jobs, a second signal stops
at once, Client.stop() is idempotent, two clients share a process."""

import os
import signal
import subprocess
import sys
import threading
import time

import snailjob as sj

from .conftest import client_for

PROGRAM = os.path.join(os.path.dirname(__file__), "programs", "slow_client.py")


def start(emu, **env):
    full = {**os.environ, **emu.client_env(), "SNAIL_HOST_PORT": "0", "SNAIL_BIND_HOST": "127.0.0.1",
            "SNAIL_HEARTBEAT_INTERVAL": "0.5", **env}
    return subprocess.Popen([sys.executable, PROGRAM], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def running_batch(emu):
    emu.wait_for_clients(1, timeout=20)
    batch = emu.trigger("slowJob", 1)
    emu.wait_until(lambda: bool(batch.tasks) and batch.tasks[0].dispatch_count == 1, timeout=10)
    time.sleep(0.3)
    return batch


def test_sigterm_waits_for_the_running_job(snailjob_emulator):
    proc = start(snailjob_emulator, SLOW_SECONDS="1.5", SNAIL_SHUTDOWN_GRACE="10")
    batch = running_batch(snailjob_emulator)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert batch.wait(5) == 3 and batch.tasks[0].result == "finished"
    # a dispatch during the grace period would have been refused; after exit the node is gone
    assert "signal received" in out


def test_second_signal_stops_at_once(snailjob_emulator):
    proc = start(snailjob_emulator, SLOW_SECONDS="30", SNAIL_SHUTDOWN_GRACE="60", SNAIL_INTERRUPT_DELAY="0")
    batch = running_batch(snailjob_emulator)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert time.monotonic() - started < 10
    assert snailjob_emulator.results == []  # interrupted job: no report
    assert batch.tasks[0].status == 2


def test_dispatch_refused_while_shutting_down(snailjob_emulator):
    client = client_for(snailjob_emulator, [sj.job("slowJob")(lambda a: time.sleep(1.0))]).start()
    batch = running_batch(snailjob_emulator)
    stopper = threading.Thread(target=client.stop, kwargs={"grace": 5})
    stopper.start()
    time.sleep(0.2)
    late = snailjob_emulator.trigger("slowJob", 1)
    assert late.wait(5) == 4
    assert "shutting down" in late.tasks[0].dispatch_replies[0].message
    stopper.join(10)
    assert batch.wait(5) == 3


def test_stop_is_idempotent_and_two_clients_coexist(snailjob_emulator):
    a = client_for(snailjob_emulator, [sj.job("a")(lambda args: "A")]).start()
    b = client_for(snailjob_emulator, [sj.job("b")(lambda args: "B")]).start()
    try:
        snailjob_emulator.wait_for_clients(2)
        assert a.host_port != b.host_port and a.host_id != b.host_id
        ba = snailjob_emulator.trigger("a", 1, node=a.host_id)
        bb = snailjob_emulator.trigger("b", 1, node=b.host_id)
        assert ba.wait(5) == 3 and bb.wait(5) == 3
        assert {ba.tasks[0].node, bb.tasks[0].node} == {a.host_id, b.host_id}
    finally:
        a.stop(grace=0)
        a.stop(grace=0)
        b.stop(grace=0)
    assert not a.running and not b.running
