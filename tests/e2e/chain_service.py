# mypy: allow-untyped-defs
"""The Python service of ``test_retry_chain_real.py``: a SnailJob node with
two ``@retryable`` functions, and a Flask app (werkzeug's threaded server on
``CHAIN_HTTP_PORT``) wrapped in ``RetryHeadersWSGI``; its outgoing calls go
through an ``httpx.Client`` with the propagation installed.

- ``GET /upstream?key=K``  calls ``call_java(K)``: GET ``<CHAIN_JAVA_URL>/chain/work?key=K``
  (scene ``py_chain_upstream``: one local retry, then the server's replays);
- ``GET /work?key=K``      calls ``py_work(K)``, which fails while ``/failing?on=1``
  (scene ``py_chain_work``: one local retry, then the server's replays); an
  exception is Flask's own 500 answer;
- ``GET /plain``           a 500 without any retryable (the control: no status header);
- ``GET /stats``           the runs of each function, with the replay's retry task id.

Settings: the ``SNAIL_*`` variables, ``CHAIN_HTTP_PORT``, ``CHAIN_JAVA_URL``.
"""

from __future__ import annotations

import os
import threading

import httpx
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

import snailjob as sj
from snailjob.contrib import propagation

JAVA = os.environ.get("CHAIN_JAVA_URL", "")
# --8<-- [start:outgoing]
http = propagation.install(httpx.Client(timeout=30))  # or an AsyncClient, or a requests.Session
# --8<-- [end:outgoing]
state = {"failing": True, "call_java": [], "py_work": []}
lock = threading.Lock()


def _replay_id():
    try:
        return sj.current_retry().retry_task_id
    except sj.NotInJobError:
        return None


@sj.retryable("py_chain_upstream", local_times=1, local_interval=1, executor_name="pyChainCallJava")
def call_java(key: str) -> str:
    with lock:
        state["call_java"].append([key, _replay_id()])
    answer = http.get(f"{JAVA}/chain/work", params={"key": key})
    answer.raise_for_status()
    return answer.text


@sj.retryable("py_chain_work", local_times=1, local_interval=1, executor_name="pyChainWork")
def py_work(key: str) -> str:
    with lock:
        state["py_work"].append([key, _replay_id()])
        failing = state["failing"]
    if failing:
        raise ConnectionError(f"python work failing for {key}")
    return f"python ok {key}"


app = Flask(__name__)


@app.get("/upstream")
def upstream():
    try:
        return call_java(request.args["key"])
    except httpx.HTTPError as exc:
        return f"java failed: {exc}", 502


@app.get("/work")
def work():
    return py_work(request.args["key"])


@app.get("/plain")
def plain():
    return "plain failure", 500


@app.get("/failing")
def set_failing():
    with lock:
        state["failing"] = request.args["on"] == "1"
    return "ok"


@app.get("/stats")
def stats():
    with lock:
        return jsonify(state)


# --8<-- [start:incoming]
app.wsgi_app = propagation.RetryHeadersWSGI(app.wsgi_app)  # type: ignore[method-assign]
# --8<-- [end:incoming]

if __name__ == "__main__":
    server = make_server("127.0.0.1", int(os.environ["CHAIN_HTTP_PORT"]), app, threaded=True)
    threading.Thread(target=server.serve_forever, name="chain-http", daemon=True).start()
    sj.ExecutorManager.register(call_java)
    sj.ExecutorManager.register(py_work)
    sj.client_main()
