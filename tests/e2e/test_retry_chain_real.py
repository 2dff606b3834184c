# mypy: allow-untyped-defs
"""A retry chain across a Python and a Java service, on the real server: one retry task.

The Java service is SnailJob's own Java client (the version of the server) with
``java/RetryChain.java``: ``@RestController`` endpoints calling ``@Retryable``
methods, and a RestTemplate whose interceptor uses the client's
``RequestHeaderPlugins`` / ``ResponseHeaderPlugins`` (java_chain.py builds it).
The Python service is ``chain_service.py``: a node with two ``@retryable``
functions and a Flask app behind ``RetryHeadersWSGI``, calling out through
an installed ``httpx.Client``.  Each service has its own group, so the
server's replays of one never go to the other.

(a) Python upstream, Java downstream: every Python attempt (the call, its
local retry, the server's replays) reaches Java with the ``snail-job``
header, Java runs its ``@Retryable`` once per attempt and reports nothing:
the server holds exactly one retry, Python's, which finishes once Java
recovers.  (b) Java upstream, Python downstream: Python reports its retry
and answers ``snail-job-status: 519``; Java neither retries nor reports.
Each ends with a control: the same Java call without the chain (no header;
a 500 without the status) makes Java retry and report, so the silence
before was the propagation's doing.  Java reports synchronously
(``async = false``) and the tests wait 12 s more (its batches go every 10 s).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.e2e import harness, java_chain
from tests.e2e.clients import HERE, ClientProcess, client_env
from tests.e2e.harness import RetryStatus, RetryTaskType
from tests.e2e.test_faults import new_group
from tests.e2e.test_real_server import uid

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

JAVA_CLIENT = {"2.0.2": "2.0.2", "1.10.0": "1.10.0"}  # server version -> the Java client of that line
QUIET = 12  # seconds to wait for a report that must not come (Java batches reports every 10 s)


def wait_until(what, check, timeout=60, poll=0.5):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(poll)


class Chain:
    def __init__(self, srv, py_group, java_group, py_url, java_url):
        self.srv, self.py_group, self.java_group = srv, py_group, java_group
        self.py_url, self.java_url = py_url, java_url
        self.http = httpx.Client(timeout=60)

    def py(self, path, **params):
        return self.http.get(f"{self.py_url}{path}", params=params)

    def java(self, path, **params):
        return self.http.get(f"{self.java_url}{path}", params=params)

    def java_stats(self):
        return self.java("/chain/stats").json()

    def py_stats(self):
        return self.py("/stats").json()

    def retries(self, group, scene):
        return self.srv.retries(scene=scene, group=group, task_type=RetryTaskType.RETRY)


@pytest.fixture(scope="module")
def chain(run):
    srv = run.srv
    version = JAVA_CLIENT.get(srv.version)
    if version is None:
        pytest.skip(f"no Java client of the {srv.version} line to build")
    why = java_chain.unavailable(version)
    if why:
        pytest.skip(f"the Java service cannot be built here: {why}")
    java_chain.build_jar(version)
    py_group, py_token = new_group(srv, "chainpy")
    java_group, java_token = new_group(srv, "chainjava")
    for scene in ("py_chain_upstream", "py_chain_work"):
        srv.create_retry_scene(scene, group=py_group, max_retry_count=6, executor_timeout=10, callback=False)
    for scene in ("javaChainWork", "javaChainUpstream"):
        srv.create_retry_scene(scene, group=java_group, max_retry_count=3, executor_timeout=10, callback=False)

    java_http, py_http = harness.free_port(), harness.free_port()
    java_url, py_url = f"http://127.0.0.1:{java_http}", f"http://127.0.0.1:{py_http}"
    java_env = client_env(srv, "java-chain", run.markers, SNAIL_GROUP_NAME=java_group, SNAIL_TOKEN=java_token)
    java_log = run.workdir / "java-chain.log"
    java = java_chain.start(version, java_env, java_http, java_log)
    py_env = client_env(srv, "py-chain", run.markers, SNAIL_GROUP_NAME=py_group, SNAIL_TOKEN=py_token,
                        SNAIL_HOST_ID=f"py-e2e-chain-{uid()}", CHAIN_HTTP_PORT=py_http, CHAIN_JAVA_URL=java_url)
    py = ClientProcess("py-chain", py_env, run.workdir, program=HERE / "chain_service.py")
    run.clients.append(py)
    py.start()
    try:
        run.wait_online(py)
        srv.wait_node_online(f"127.0.0.1:{java_env['SNAIL_HOST_PORT']}", group=java_group, timeout=120)

        def java_up():
            try:
                return httpx.get(f"{java_url}/chain/stats", timeout=5).status_code == 200
            except httpx.HTTPError:
                assert java.poll() is None, java_log.read_text(errors="replace")[-4000:]
                return False

        wait_until("the Java service answers", java_up, timeout=120)
        yield Chain(srv, py_group, java_group, py_url, java_url)
    except BaseException:
        print(f"--- Java service log ---\n{java_log.read_text(errors='replace')[-6000:]}")
        print(f"--- Python service log ---\n{py.output()[-6000:]}")
        raise
    finally:
        py.stop()
        java.terminate()
        try:
            java.wait(20)
        except Exception:
            java.kill()
            java.wait(10)


def test_python_upstream_java_downstream_leaves_one_retry_task(chain, run):
    srv, key = chain.srv, f"a-{uid()}"
    assert chain.java("/chain/failing", on="true").text == "true"
    runs_before = chain.java_stats()["workRuns"]
    answer = chain.py("/upstream", key=key)
    assert answer.status_code == 502, answer.text

    # Python's call and its local retry each reached Java once, marked; Java did not retry in place
    stats = chain.java_stats()
    assert stats["workRuns"] - runs_before == 2, stats
    local = [json.loads(h) for h in stats["headers"][-2:]]
    assert all(h["retry"] is True and 50000 < h["ddl"] <= 60000 for h in local), local
    assert local[0]["retryId"] != local[1]["retryId"]  # one chain per attempt

    (row,) = wait_until("Python's retry", lambda: chain.retries(chain.py_group, "py_chain_upstream"))
    retry_id = int(row["id"])
    assert json.loads(row["args_str"]) == [key], row

    # the server replays it on the Python node: the call reaches Java with the retry's id, and fails
    def replay_headers():
        heads = [json.loads(h) for h in chain.java_stats()["headers"] if h]
        return [h for h in heads if h["retryId"] == str(retry_id)]

    (replayed,) = wait_until("a replay reaching Java", replay_headers, timeout=90)
    assert 0 < replayed["ddl"] <= 10000, replayed  # at most the scene's executorTimeout
    assert chain.java("/chain/failing", on="false").text == "false"
    done = srv.wait_retry(retry_id, timeout=120)
    assert int(done["retry_status"]) == RetryStatus.FINISH, done

    # exactly one retry task in the server: Python's; Java ran once per Python attempt and reported nothing
    time.sleep(QUIET)
    assert chain.retries(chain.java_group, "javaChainWork") == []
    assert [int(r["id"]) for r in chain.retries(chain.py_group, "py_chain_upstream")] == [retry_id]
    py_runs = [r for r in chain.py_stats()["call_java"] if r[0] == key]
    assert chain.java_stats()["workRuns"] - runs_before == len(py_runs) >= 4, py_runs

    # control: called without the chain, the same Java method retries in place and reports
    assert chain.java("/chain/failing", on="true").text == "true"
    assert chain.java("/chain/work", key=f"ctl-{key}").status_code == 500
    java_rows = wait_until("Java's own retry", lambda: chain.retries(chain.java_group, "javaChainWork"), timeout=30)
    assert len(java_rows) == 1, java_rows
    run.note(f"Python upstream -> Java downstream: 1 retry task (Python's, FINISH after "
             f"{len(py_runs) - 2} replays); Java ran once per attempt, reported nothing "
             "(and did report when called without the header)")


def test_java_upstream_python_downstream_leaves_one_retry_task(chain, run):
    srv, key = chain.srv, f"b-{uid()}"
    assert chain.py("/failing", on="1").text == "ok"
    calls_before = chain.java_stats()["callOutRuns"]
    answer = chain.java("/chain/upstream", url=f"{chain.py_url}/work?key={key}")
    assert answer.status_code == 500, answer.text

    # Python ran its call and its local retry, reported, answered 519: Java did not retry
    runs = [r for r in chain.py_stats()["py_work"] if r[0] == key]
    assert runs == [[key, None], [key, None]], runs
    assert chain.java_stats()["callOutRuns"] - calls_before == 1
    (row,) = wait_until("Python's retry", lambda: [r for r in chain.retries(chain.py_group, "py_chain_work")
                                                  if json.loads(r["args_str"]) == [key]])
    time.sleep(QUIET)
    assert chain.retries(chain.java_group, "javaChainUpstream") == []

    assert chain.py("/failing", on="0").text == "ok"
    done = srv.wait_retry(int(row["id"]), timeout=120)
    assert int(done["retry_status"]) == RetryStatus.FINISH, done
    assert [r for r in chain.retries(chain.py_group, "py_chain_work") if json.loads(r["args_str"]) == [key]] == [done]
    assert chain.retries(chain.java_group, "javaChainUpstream") == []

    # control: a downstream 500 without the status header, and Java retries in place and reports
    assert chain.java("/chain/upstream", url=f"{chain.py_url}/plain").status_code == 500
    assert chain.java_stats()["callOutRuns"] - calls_before == 3  # 1 above + the call and its local retry
    java_rows = wait_until("Java's own retry", lambda: chain.retries(chain.java_group, "javaChainUpstream"),
                           timeout=30)
    assert len(java_rows) == 1, java_rows
    run.note("Java upstream -> Python downstream: 1 retry task (Python's, FINISH); Python answered 519 and "
             "Java neither retried nor reported (and did both after a 500 without it)")
