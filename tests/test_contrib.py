"""The framework integrations with the real frameworks installed: FastAPI's
lifespan, the Flask extension, Django's in-process mode and settings.

(The example projects, run as their own processes by ``make examples``,
cover ``manage.py snailjob_worker``, uvicorn and Flask's server:
tests/test_examples.py.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from contextlib import asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Dict, Iterator, List

import pytest
from fastapi import FastAPI
from flask import Flask, current_app, g

import snailjob as sj
from snailjob.contrib.asgi import current_app as asgi_app
from snailjob.contrib.asgi import lifespan
from snailjob.contrib.flask import SnailJob, _serving_process
from snailjob.testing import ServerEmulator

from .conftest import client_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE = os.path.join(ROOT, "example", "django_site")


@contextmanager
def asgi_lifespan(app: Any, timeout: float = 30) -> Iterator[None]:
    """Run ``app``'s ASGI lifespan as a server (uvicorn) does, on an event loop in its own
    thread: ``lifespan.startup`` on entry, ``lifespan.shutdown`` on exit.  (Starlette's
    TestClient would do it too, through httpx, which Starlette now deprecates for it.)"""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="asgi-server", daemon=True)
    thread.start()

    async def queues() -> List[asyncio.Queue[Dict[str, Any]]]:
        return [asyncio.Queue(), asyncio.Queue()]  # made on the loop (Python 3.9 binds them at creation)

    inbox, outbox = asyncio.run_coroutine_threadsafe(queues(), loop).result(timeout)

    async def exchange(message: str) -> Dict[str, Any]:
        await inbox.put({"type": message})
        return await outbox.get()

    def call(message: str) -> None:
        reply = asyncio.run_coroutine_threadsafe(exchange(message), loop).result(timeout)
        assert reply["type"] == f"{message}.complete", reply

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    served = asyncio.run_coroutine_threadsafe(app(scope, inbox.get, outbox.put), loop)
    try:
        call("lifespan.startup")
        yield
        call("lifespan.shutdown")
        served.result(timeout)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()


@pytest.fixture
def emu() -> Iterator[ServerEmulator]:
    with ServerEmulator() as emulator:
        yield emulator


# --- ASGI --------------------------------------------------------------------------------------


@sj.job("asgiCount")
async def asgi_count(args: sj.JobArgs) -> Dict[str, Any]:
    app = asgi_app()
    async with app.state.lock:
        app.state.count += 1
    return {"count": app.state.count, "on_app_loop": asyncio.get_running_loop() is app.state.loop}


@sj.job("asgiSlow")
async def asgi_slow(args: sj.JobArgs) -> str:
    await asyncio.sleep(0.8)
    return "finished during the drain"


@asynccontextmanager
async def resources(app: FastAPI) -> AsyncIterator[Dict[str, Any]]:
    app.state.loop = asyncio.get_running_loop()
    app.state.lock = asyncio.Lock()
    app.state.count = 0
    yield {"ready": True}


def test_the_lifespan_starts_the_client_runs_jobs_on_the_app_loop_and_drains(emu: ServerEmulator) -> None:
    made: List[sj.Client] = []

    def make() -> sj.Client:
        made.append(client_for(emu, [asgi_count, asgi_slow], snail_shutdown_grace=5))
        return made[-1]

    app = FastAPI(lifespan=lifespan(make, then=resources))
    assert made == []  # the client is made at startup, not at import
    with asgi_lifespan(app):
        client = app.state.snailjob
        assert client is made[0] and client.running
        emu.wait_for_clients(1)
        first = emu.trigger("asgiCount")
        assert first.wait(10) == 3
        assert first.tasks[0].result == '{"count":1,"on_app_loop":true}'
        slow = emu.trigger("asgiSlow")
        emu.wait_until(lambda: bool(slow.tasks) and bool(slow.tasks[0].dispatch_replies), timeout=10)
    # leaving the app stopped the client, after the running job finished and was reported
    assert not client.running
    assert slow.status == 3 and slow.tasks[0].result == "finished during the drain"


def test_current_app_outside_the_lifespan_says_so(emu: ServerEmulator) -> None:
    @sj.job("asgiOutside")
    def outside(args: sj.JobArgs) -> str:
        try:
            asgi_app()
        except LookupError as exc:
            return str(exc)
        return "found an app"

    client = client_for(emu, [outside]).start()
    try:
        emu.wait_for_clients(1)
        batch = emu.trigger("asgiOutside")
        assert batch.wait(10) == 3 and "was not started by snailjob.contrib.asgi.lifespan" in batch.tasks[0].result
    finally:
        client.stop(grace=0)


# --- Flask -------------------------------------------------------------------------------------


@sj.job("flaskContext")
def flask_context(args: sj.JobArgs) -> str:
    g.job = args.job_params
    return f"{current_app.config['GREETING']} {g.job} from {current_app.name}"


def test_flask_jobs_run_inside_the_app_context(emu: ServerEmulator) -> None:
    app = Flask("contrib_test")
    env = emu.client_env()
    app.config.update(GREETING="hi", SNAILJOB_START=False, SNAILJOB={
        "SERVER_HOST": env["SNAIL_SERVER_HOST"], "SERVER_PORT": env["SNAIL_SERVER_PORT"],
        "TOKEN": env["SNAIL_TOKEN"], "GROUP_NAME": env["SNAIL_GROUP_NAME"], "NAMESPACE": env["SNAIL_NAMESPACE"],
        "HOST_PORT": 0, "BIND_HOST": "127.0.0.1", "HEARTBEAT_INTERVAL": 0.5, "SHUTDOWN_GRACE": 0})
    torn_down: List[Any] = []
    app.teardown_appcontext(lambda exc: torn_down.append(exc))
    extension = SnailJob(app, executors=[flask_context])
    assert app.extensions["snailjob"] is extension and extension.client is not None
    assert not extension.client.running  # SNAILJOB_START = False
    extension.client.start()
    try:
        emu.wait_for_clients(1)
        batch = emu.trigger("flaskContext", args_str="there")
        assert batch.wait(10) == 3 and batch.tasks[0].result == "hi there from contrib_test"
        assert torn_down == [None]  # the job's app context was popped after it
    finally:
        extension.stop()
        extension.stop()
    assert not extension.client.running


def test_flask_settings_keys_are_checked() -> None:
    app = Flask("bad_keys")
    app.config.update(SNAILJOB_START=False, SNAILJOB={"SERVER_HOTS": "10.0.0.1"})
    with pytest.raises(sj.ConfigurationError, match="SNAIL_SERVER_HOTS does not exist"):
        SnailJob(app)


def test_flask_starts_only_in_the_serving_process(monkeypatch: Any) -> None:
    app = Flask("reloader")
    app.debug = True
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    assert not _serving_process(app)  # the reloader's watcher
    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")
    assert _serving_process(app)  # its child, which serves
    monkeypatch.delenv("FLASK_RUN_FROM_CLI")
    monkeypatch.delenv("WERKZEUG_RUN_MAIN")
    assert _serving_process(app)  # app.run() without the reloader, gunicorn...


# --- Django ------------------------------------------------------------------------------------

_DJANGO_PROBE = """
import os, sys
sys.path.insert(0, {site!r})
sys.argv = ["manage.py"] + os.environ.get("PROBE_ARGS", "runserver").split()
os.environ["DJANGO_SETTINGS_MODULE"] = "site_config.settings"
import django
django.setup()
from snailjob.contrib.django import runtime
print("started", len(runtime._started))
if runtime._started:
    client = runtime._started[0]
    import time
    deadline = time.monotonic() + 20
    while not client.registered and time.monotonic() < deadline:
        time.sleep(0.1)
    print("registered", client.registered, sorted(client.registry.names()))
    client.stop(grace=0)
"""


def django_probe(emu: ServerEmulator, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SNAIL_", "RUN_MAIN"))}
    full.update(emu.client_env())
    full.update({"SNAIL_HOST_PORT": "0", "SNAIL_BIND_HOST": "127.0.0.1", "SNAIL_HEARTBEAT_INTERVAL": "0.5",
                 "EXAMPLE_SNAILJOB_IN_PROCESS": "1", "PYTHONPATH": ROOT, **env})
    out = subprocess.run([sys.executable, "-c", _DJANGO_PROBE.format(site=SITE)], env=full, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_django_in_process_mode_starts_once_and_never_in_the_reloader_watcher(emu: ServerEmulator) -> None:
    assert "started 0" in django_probe(emu)  # runserver's watcher process
    assert "started 0" in django_probe(emu, PROBE_ARGS="migrate")  # not a serving command
    text = django_probe(emu, RUN_MAIN="true")  # the child that serves
    assert "started 1" in text and "registered True ['djangoBuildReport']" in text, text
    text = django_probe(emu, PROBE_ARGS="runserver --noreload")
    assert "started 1" in text, text


def test_django_settings_come_from_settings_snailjob_over_the_environment() -> None:
    script = f"""
import os, sys
sys.path.insert(0, {SITE!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "site_config.settings"
import django
django.setup()
from django.conf import settings
from snailjob.contrib.django import snailjob_settings, discover_executors
s = snailjob_settings()
print(s.snail_labels, s.snail_group_name, [e.executor_name for e in discover_executors()])
settings.SNAILJOB = {{"GROUP_NAEM": "x"}}
try:
    snailjob_settings()
except Exception as exc:
    print(type(exc).__name__, exc)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAIL_")}
    env.update({"SNAIL_GROUP_NAME": "from_the_environment", "PYTHONPATH": ROOT})
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first == "app:django-example from_the_environment ['djangoBuildReport']"
    assert second.startswith("ConfigurationError") and "SNAIL_GROUP_NAEM does not exist" in second
