"""Retry propagation across services (``snailjob.retry_site``,
``snailjob.contrib.propagation``), over real local HTTP servers: the
``snail-job`` request header sent by httpx and requests during a retry, with
what is left of the chain's budget, and no call once it is spent; the
ASGI, WSGI/Flask and Django middlewares putting a request in the retry flow
(a retryable runs once and reports nothing) and answering
``snail-job-status: 519`` or relaying it; a retryable, and a server replay,
whose downstream answered 519.  Retries go to the emulator."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import httpx
import pytest
import requests
import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from flask import Flask
from werkzeug.serving import make_server

import snailjob as sj
from snailjob import retry_site
from snailjob.contrib import propagation
from snailjob.wire.enums import RetryStatusEnum, RetryTaskStatusEnum

from .conftest import wait_for

ROOT = str(Path(__file__).resolve().parents[1])
FAIL, MAX_COUNT = int(RetryTaskStatusEnum.FAIL), int(RetryStatusEnum.MAX_COUNT)


# --- servers ------------------------------------------------------------------------


class Downstream:
    """A plain HTTP service: records the ``snail-job`` header of each request
    and answers ``code`` with ``snail-job-status: status`` when set."""

    def __init__(self) -> None:
        self.headers: List[Optional[str]] = []
        self.code = 200
        self.status: Optional[str] = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.headers.append(self.headers.get("snail-job"))
                self.send_response(outer.code)
                if outer.status is not None:
                    self.send_header("snail-job-status", outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sent(self) -> List[Dict[str, Any]]:
        return [json.loads(h) for h in self.headers if h is not None]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    server = Downstream()
    yield server
    server.close()


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def chain_header(ddl: int = 60000, retry_id: str = "upstream-7") -> Dict[str, str]:
    return {"snail-job": json.dumps({"retry": True, "retryId": retry_id, "ddl": ddl})}


# --- outgoing -------------------------------------------------------------------------


def test_httpx_and_requests_send_the_header_during_a_retryable_call_only(run_client, snailjob_emulator,
                                                                        downstream):
    snailjob_emulator.add_retry_scene("ship")
    sync_httpx = propagation.install(httpx.Client())
    session = propagation.install(requests.Session())
    assert propagation.install(session) is session  # twice: no second wrapper
    assert sum(isinstance(a, propagation.RetryHeadersAdapter) for a in session.adapters.values()) == 2
    assert not any(isinstance(a.inner, propagation.RetryHeadersAdapter)
                   for a in session.adapters.values())
    attempts: List[int] = []

    @sj.retryable("ship", local_times=2, local_interval=0.01, strategy="local_only")
    def ship() -> None:
        attempts.append(len(downstream.headers))
        sync_httpx.get(downstream.url)
        time.sleep(0.3)
        session.get(downstream.url)
        if len(attempts) < 3:
            raise ConnectionError("again")

    run_client([ship])
    sync_httpx.get(downstream.url)  # outside a retry: no header
    session.get(downstream.url)
    ship()
    assert downstream.headers[:2] == [None, None]
    sent = downstream.sent()
    assert len(sent) == 6 and all(h["retry"] is True for h in sent)
    # one chain per attempt: a fresh budget each time, the same id within an attempt
    for first, second in zip(sent[::2], sent[1::2]):
        assert first["retryId"] == second["retryId"]
        assert 59000 < first["ddl"] <= 60000
        assert first["ddl"] - 1000 < second["ddl"] <= first["ddl"] - 250  # 0.3 s spent between the calls
    assert len({h["retryId"] for h in sent}) == 3


def test_the_budget_is_the_scenes_ddl_from_the_group_config(run_client, snailjob_emulator, downstream):
    emu = snailjob_emulator
    emu.add_retry_scene("quick")
    session = propagation.install(requests.Session())

    @sj.retryable("quick", local_times=0, strategy="local_only")
    def quick() -> None:
        session.get(downstream.url)

    client = run_client([quick])
    emu.wait_for_clients(1)
    emu.config = {"version": 4, "sceneList": [{"sceneName": "quick", "ddl": 2500}], "notifyList": []}
    assert emu.push_config()[0] == 1 and client.scene_ddl("quick") == 2500
    quick()
    (header,) = downstream.sent()
    assert 2000 < header["ddl"] <= 2500  # the scene's 2.5 s, not the 60 s default


def test_async_httpx_sends_the_header_from_a_coroutine_retryable(downstream):
    calls: List[int] = []

    @sj.retryable("ship", strategy="local_only", local_times=0)
    async def ship() -> None:
        async with httpx.AsyncClient(event_hooks=propagation.httpx_async_event_hooks()) as http:
            calls.append((await http.get(downstream.url)).status_code)
            # a task created inside inherits the chain
            await asyncio.create_task(http.get(downstream.url))

    asyncio.run(ship())
    sent = downstream.sent()
    assert calls == [200] and len(sent) == 2 and sent[0]["retryId"] == sent[1]["retryId"]


def test_no_call_is_sent_once_the_chain_deadline_passed(downstream):
    session = propagation.install(requests.Session())
    app = Flask(__name__)

    @app.get("/relay")
    def relay() -> Any:
        time.sleep(0.3)
        try:
            session.get(downstream.url)
        except propagation.CallChainTimeout as exc:
            return str(exc), 504
        return "sent"

    app.wsgi_app = propagation.RetryHeadersWSGI(app.wsgi_app)  # type: ignore[method-assign]
    with serve_wsgi(app) as base:
        late = requests.get(f"{base}/relay", headers=chain_header(ddl=150))
        assert late.status_code == 504 and "call chain has timed out" in late.text, late.text
        assert downstream.headers == []
        fine = requests.get(f"{base}/relay", headers=chain_header(ddl=5000, retry_id="r-1"))
    assert fine.text == "sent"
    (header,) = downstream.sent()
    assert header["retryId"] == "r-1" and 4000 < header["ddl"] <= 4700  # the incoming budget, less 0.3 s


def test_install_takes_only_the_clients_it_knows(downstream) -> None:
    with pytest.raises(TypeError, match="request_headers"):
        propagation.install(object())
    assert propagation.request_headers() == {}

    class Mine(httpx.Client):  # a subclass in the user's module
        pass

    mine = propagation.install(Mine())
    assert propagation.install(mine).event_hooks["request"].count(propagation.httpx_event_hooks()["request"][0]) == 1
    adapter = requests.Session().adapters["http://"]
    wrapped = propagation.RetryHeadersAdapter(adapter)
    assert wrapped.max_retries is adapter.max_retries and copy.copy(wrapped).inner is adapter
    with retry_site.attempt(ddl_ms=5000, retry_id="x"):
        mine.get(downstream.url)
        assert json.loads(propagation.request_headers()["snail-job"])["retryId"] == "x"
    assert downstream.sent()[0]["retryId"] == "x"


# --- incoming: the retry flow and the 519 answer ---------------------------------------


def _work_app(kind: str, failing: Any, downstream_url: str) -> Any:
    """An app whose ``/work`` calls ``failing()`` and, with ``?down=1``, the
    downstream first (through an installed client)."""
    if kind == "asgi":
        api = FastAPI()
        http = propagation.install(httpx.AsyncClient())

        @api.get("/work")
        async def work(down: int = 0) -> Any:
            if down:
                await http.get(downstream_url)
            try:
                await failing()
            except ConnectionError as exc:
                return PlainTextResponse(str(exc), status_code=500)
            return PlainTextResponse("done")

        return propagation.RetryHeadersASGI(api)
    flask_app = Flask(__name__)
    session = propagation.install(requests.Session())

    @flask_app.get("/work")
    def work_wsgi() -> Any:
        from flask import request

        if request.args.get("down"):
            session.get(downstream_url)
        failing()  # an error: Flask's own 500 answer
        return "done"

    flask_app.wsgi_app = propagation.RetryHeadersWSGI(flask_app.wsgi_app)  # type: ignore[method-assign]
    return flask_app


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_request_in_the_retry_flow_runs_a_retryable_once_and_a_reported_retry_answers_519(
        kind, run_client, snailjob_emulator, downstream):
    emu = snailjob_emulator
    emu.add_retry_scene("charge", interval=30)
    runs: List[str] = []
    if kind == "asgi":
        @sj.retryable("charge", local_times=2, local_interval=0.01, report_timeout=5)
        async def charge() -> None:
            runs.append("run")
            raise ConnectionError("card service down")
    else:
        @sj.retryable("charge", local_times=2, local_interval=0.01, report_timeout=5)
        def charge() -> None:
            runs.append("run")
            raise ConnectionError("card service down")

    run_client([charge])
    serve = serve_asgi if kind == "asgi" else serve_wsgi
    with serve(_work_app(kind, charge, downstream.url)) as base:
        flow = requests.get(f"{base}/work?down=1", headers=chain_header(ddl=20000, retry_id="up-1"))
        assert flow.status_code == 500 and "snail-job-status" not in flow.headers
        assert runs == ["run"]  # once: the caller owns the retry
        assert emu.retry_reports == []  # report_timeout: a report would have been sent before the answer
        (onward,) = downstream.sent()  # the chain goes on, with the caller's id and what is left
        assert onward["retryId"] == "up-1" and 15000 < onward["ddl"] <= 20000

        runs.clear()
        owner = requests.get(f"{base}/work", headers={"snail-job": "{not json"})  # ignored: no 400, no 500 of ours
        assert owner.status_code == 500 and owner.headers["snail-job-status"] == "519"
        assert runs == ["run"] * 3 and len(emu.retry_reports) == 1

        plain = requests.get(f"{base}/work?down=1", headers={"snail-job": json.dumps({"retry": False})})
        assert plain.status_code == 500 and plain.headers["snail-job-status"] == "519"
        assert downstream.headers[-1] is None  # sent by the view itself, outside any retry


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_downstream_519_stops_the_retryable_and_is_relayed(kind, run_client, snailjob_emulator, downstream):
    emu = snailjob_emulator
    emu.add_retry_scene("book")
    downstream.code, downstream.status = 500, "519"
    client = httpx.Client(event_hooks=propagation.httpx_event_hooks())
    runs: List[str] = []

    @sj.retryable("book", local_times=3, local_interval=0.01, report_timeout=5)
    def book() -> None:
        runs.append("run")
        client.get(downstream.url).raise_for_status()

    run_client([book])
    with pytest.raises(httpx.HTTPStatusError):
        book()
    assert runs == ["run"] and emu.retry_reports == []  # the downstream owns the retry

    async def relay() -> None:
        async with httpx.AsyncClient(event_hooks=propagation.httpx_async_event_hooks()) as http:
            await http.get(downstream.url)

    def relay_sync() -> None:
        client.get(downstream.url)

    app = _work_app(kind, relay if kind == "asgi" else relay_sync, downstream.url)
    serve = serve_asgi if kind == "asgi" else serve_wsgi
    with serve(app) as base:
        answer = requests.get(f"{base}/work")
    assert answer.text == "done" and answer.headers["snail-job-status"] == "519"


def test_a_replay_whose_downstream_answered_519_stops_the_retry(run_client, snailjob_emulator, downstream):
    emu = snailjob_emulator
    emu.add_retry_scene("sync", max_retry_count=3, interval=0.1, executor_timeout=5)
    downstream.code, downstream.status = 500, "519"
    client = propagation.install(httpx.Client())
    runs: List[str] = []

    @sj.retryable("sync", strategy="remote_only")
    def sync_stock(sku: str) -> None:
        runs.append(sku)
        client.get(downstream.url).raise_for_status()

    run_client([sync_stock])
    sync_stock.report("A1")
    retry = wait_for(lambda: emu.retries_for("sync") and emu.retries_for("sync")[0])
    assert retry.wait(10) == MAX_COUNT
    assert [t.status for t in retry.retry_tasks] == [FAIL] * 3
    assert all(t.exception_msg.startswith("StopRetry: a downstream service answered snail-job-status: 519")
               for t in retry.retry_tasks), retry.retry_tasks[0].exception_msg
    assert runs == ["A1"]  # later replays are answered without running the function
    (header,) = downstream.sent()  # the replay's call carried the server's retry id and its timeout's budget
    assert header["retryId"] == str(retry.id) and 4000 < header["ddl"] <= 5000


def test_parse_header_takes_only_a_well_formed_retry_header() -> None:
    parse = retry_site.parse_header
    assert parse('{"retry":true,"retryId":"9","ddl":1500}') == ("9", 1500)
    assert parse('{"retry":true}') == ("", 60000)  # Java's defaults
    assert parse('{"retry":true,"retryId":12,"ddl":-5}') == ("12", 0)  # spent: onward calls refused
    assert parse('{"retry":true,"retryId":"a b\\n","ddl":10}') == ("", 10)  # an odd id is dropped, not the flow
    for bad in (None, "", "  ", "{", "[]", '{"retry":"true"}', '{"retry":false}', '{"retry":true,"ddl":"x"}',
                '{"retry":true,"ddl":true}', '{"retry":true,"ddl":NaN}', '{"retry":true,"x":"' + "a" * 5000 + '"}'):
        assert parse(bad) is None, bad


# --- Django ----------------------------------------------------------------------------

_DJANGO_SERVICE = """
import asyncio, json, os, socket, sys, threading
import django
from django.conf import settings
settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="x",
                   MIDDLEWARE=["snailjob.contrib.django.middleware.RetryHeadersMiddleware"])
django.setup()
from django.http import HttpResponse
from django.urls import path
import httpx
import snailjob as sj
from snailjob.contrib import propagation

runs = []

@sj.retryable("django-scene", local_times=2, local_interval=0.01, report_timeout=5)
def charge():
    runs.append(1)
    raise ConnectionError("down")

def relay(request):
    propagation.install(httpx.Client()).get(os.environ["DOWNSTREAM"])
    return HttpResponse("relayed")

def work(request):
    runs.clear()
    try:
        charge()
    except ConnectionError:
        pass
    return HttpResponse(str(len(runs)), status=500)

async def awork(request):
    return await asyncio.to_thread(work, request)  # a sync retryable, from an async view

urlpatterns = [path("work", work), path("awork", awork), path("relay", relay)]
client = sj.Client(sj.Settings.load(), executors=[charge])
client.start()
sock = socket.socket(); sock.bind(("127.0.0.1", 0))
if os.environ["MODE"] == "wsgi":
    from wsgiref.simple_server import make_server, WSGIRequestHandler
    from django.core.handlers.wsgi import WSGIHandler
    class Quiet(WSGIRequestHandler):
        def log_message(self, *a): pass
    port = sock.getsockname()[1]; sock.close()
    server = make_server("127.0.0.1", port, WSGIHandler(), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
else:
    import uvicorn
    from django.core.handlers.asgi import ASGIHandler
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(ASGIHandler(), log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started: __import__("time").sleep(0.05)
print("port", port, flush=True)
sys.stdin.read()
client.stop(grace=0)
"""


@pytest.mark.parametrize("mode", ["wsgi", "asgi"])
def test_django_middleware_retry_flow_519_and_relay(mode, snailjob_emulator, downstream):
    emu = snailjob_emulator
    emu.add_retry_scene("django-scene", interval=30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAIL_")}
    env.update(emu.client_env())
    env.update({"SNAIL_HOST_PORT": "0", "SNAIL_BIND_HOST": "127.0.0.1", "SNAIL_HEARTBEAT_INTERVAL": "0.5",
                "PYTHONPATH": ROOT, "MODE": mode, "DOWNSTREAM": downstream.url})
    proc = subprocess.Popen([sys.executable, "-c", _DJANGO_SERVICE], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("port"), proc.stderr.read() if proc.stderr else line
        base = f"http://127.0.0.1:{line.split()[1]}"
        wait_for(lambda: emu.nodes, timeout=20)
        for view in ("work", "awork"):
            flow = requests.get(f"{base}/{view}", headers=chain_header())
            assert (flow.status_code, flow.text) == (500, "1") and "snail-job-status" not in flow.headers
            assert emu.retry_reports == []
        owner = requests.get(f"{base}/work")
        assert (owner.text, owner.headers["snail-job-status"]) == ("3", "519")
        assert len(emu.retry_reports) == 1
        downstream.status = "519"
        relayed = requests.get(f"{base}/relay", headers=chain_header(retry_id="dj"))
        assert relayed.text == "relayed" and relayed.headers["snail-job-status"] == "519"
        assert downstream.sent()[-1]["retryId"] == "dj"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_519_answer_is_kept_over_later_statuses_and_goes_up_to_the_request() -> None:
    with retry_site.serving(None) as request:
        with retry_site.attempt() as attempt:
            retry_site.record_status("519")
            retry_site.record_status("200")
            assert attempt.refused
        retry_site.record_status("")  # empty: ignored
        for odd in ("5 19", "519\r\nX-Evil: 1", "é", "x" * 65):  # relayed upstream: only a short token is kept
            with retry_site.serving(None) as other:
                retry_site.record_status(odd)
                assert other.status is None, odd
    assert request.response_status() == "519"
    with retry_site.serving(None) as other:
        assert other.response_status() is None and retry_site.outgoing_header() is None
