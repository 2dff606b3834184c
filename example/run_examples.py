"""Run every example against the embedded server emulator and print each
job's outcome.  No SnailJob server is needed: ``python example/run_examples.py``.

Each example program runs as its own process, exactly as a user would start
it (``python main.py``), pointed at the emulator through SNAIL_* variables.
It exits non-zero if any job ends differently from what its code implies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, List, Optional, Tuple

from snailjob.testing import EmulatedBatch, ServerEmulator

HERE = os.path.dirname(os.path.abspath(__file__))
STATUS = {3: "SUCCESS", 4: "FAIL", 5: "STOP", 6: "CANCEL"}
Check = Callable[[Any], Tuple[int, str]]


LOG_DIR = os.path.join(tempfile.gettempdir(), "snailjob-examples")


def start_program(emu: ServerEmulator, script: str, *args: str, cwd: str = HERE,
                  **extra_env: str) -> subprocess.Popen:
    """Start an example program; its own console output goes to LOG_DIR."""
    env = {**os.environ, **emu.client_env(), "SNAIL_HOST_PORT": "0", "SNAIL_BIND_HOST": "127.0.0.1",
           "SNAIL_HOST_IP": "127.0.0.1", "SNAIL_HEARTBEAT_INTERVAL": "1", "SNAIL_SHUTDOWN_GRACE": "5",
           "SNAIL_LOG_REMOTE_INTERVAL": "0.5", **extra_env}
    os.makedirs(LOG_DIR, exist_ok=True)
    prefix = "" if cwd == HERE else os.path.basename(cwd) + "-"
    out = open(os.path.join(LOG_DIR, prefix + script.replace(".py", ".log")), "w")
    return subprocess.Popen([sys.executable, script, *args], cwd=cwd, env=env, stdout=out,
                            stderr=subprocess.STDOUT)


def stop_program(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


def results(batch: EmulatedBatch, name: Optional[str] = None) -> List[str]:
    return sorted(t.result for t in batch.tasks if name is None or t.task_name == name)


def log_lines(emu: ServerEmulator, batch_id: int) -> List[str]:
    """The messages of a batch's job log, as the console would show them."""
    return [f["value"] for e in emu.logs if e["taskBatchId"] == batch_id
            for f in e["fieldList"] if f["name"] == "message"]


def stopped_after(emu: ServerEmulator, executor: str, delay: float) -> EmulatedBatch:
    batch = emu.trigger(executor, 1)
    emu.wait_until(lambda: bool(batch.tasks) and batch.tasks[0].dispatch_count > 0, timeout=10)
    time.sleep(delay)
    batch.stop()
    return batch


class Runner:
    def __init__(self) -> None:
        self.rows: List[Tuple[str, str, str, str, bool]] = []

    def check(self, program: str, job: str, status: int, expected: int, detail: str) -> None:
        """One row; an expected outcome other than SUCCESS (a job meant to fail or to be
        stopped) is marked "(intended)" when it happens."""
        outcome = STATUS.get(status, str(status))
        if status == expected and expected != 3:
            outcome += " (intended)"
        self.rows.append((program, job, outcome, detail, status == expected))

    def print(self) -> bool:
        width = [max(len(str(r[i])) for r in self.rows) for i in range(3)]
        print(f"{'program':<{width[0]}}  {'job':<{width[1]}}  {'outcome':<{width[2]}}  result")
        for program, job, status, detail, ok in self.rows:
            mark = "" if ok else "   <-- unexpected"
            print(f"{program:<{width[0]}}  {job:<{width[1]}}  {status:<{width[2]}}  {detail}{mark}")
        return all(r[4] for r in self.rows)


def run_main(emu: ServerEmulator, runner: Runner) -> None:
    proc = start_program(emu, "main.py")
    try:
        emu.wait_for_clients(1, timeout=30)
        emu.wait_until(lambda: "demoMapReduceJob" in emu.registered_executors, timeout=10)
        b = emu.trigger("demoClusterJob", 1, args_str="hello")
        runner.check("main.py", "cluster", b.wait(15), 3, results(b)[0])
        b = emu.trigger("demoBroadcastJob", 2)
        runner.check("main.py", "broadcast", b.wait(15), 3, f"{len(b.tasks)} node(s): {results(b)[0]}")
        b = emu.trigger("demoShardingJob", 3, args_str='["north","south","east"]', parallel_num=3)
        runner.check("main.py", "sharding (3 shards)", b.wait(15), 3, "; ".join(results(b)))
        b = emu.trigger("demoAsyncJob", 1)
        runner.check("main.py", "async job", b.wait(15), 3, results(b)[0])
        b = emu.trigger("demoTypedJob", 1, args_str='{"customer": "acme", "amounts": [10, 20]}')
        runner.check("main.py", "typed job", b.wait(15), 3, results(b)[0])
        b = emu.trigger("demoTypedJob", 1, args_str='{"customer": "acme", "amounts": ["ten"]}')
        runner.check("main.py", "typed job, bad parameters", b.wait(15), 4,
                     (b.tasks[0].execute_result or {}).get("message", ""))
        b = emu.trigger("demoMapJob", 4, args_str="300", parallel_num=8)
        status = b.wait(30)
        pages = b.tasks_named("PAGE")
        runner.check("main.py", "map (ROOT_MAP -> 300 pages)", status, 3,
                     f"{len(pages)} sub-tasks, sum {sum(int(t.result) for t in pages)}")
        b = emu.trigger("demoMapReduceJob", 5, shard_num=2, parallel_num=4)
        status = b.wait(30)
        merge = b.tasks_in_stage(3)
        runner.check("main.py", "map-reduce (2 reduces + merge)", status, 3,
                     f"reduces {results(b, 'REDUCE_TASK')}, merge {merge[0].result if merge else '-'}")
        wf = emu.trigger_workflow([{"executor": "demoWorkflowExtract"}, {"executor": "demoWorkflowTransform"},
                                   {"executor": "demoWorkflowLoad"}])
        status = wf.wait(30)
        runner.check("main.py", "workflow (3 nodes)", status, 3, wf.batches[-1].tasks[0].result)
        b = stopped_after(emu, "demoStopAwareJob", 0.5)
        status = b.wait(10)
        emu.wait_until(lambda: bool(log_lines(emu, b.id)), 10)
        runner.check("main.py", "stop-aware job, stopped", status, 5,
                     f"job log: {log_lines(emu, b.id)[-1]!r}; task stays {STATUS[b.tasks[0].status]}")
    finally:
        code = stop_program(proc)
        runner.check("main.py", "SIGTERM", 3 if code == 0 else 4, 3, f"exit code {code}")


def run_readme(emu: ServerEmulator, runner: Runner, script: str,
               go: Callable[[ServerEmulator], Tuple[int, int, str]]) -> None:
    proc = start_program(emu, script)
    try:
        emu.wait_until(lambda: any(n.alive for n in emu.nodes) and bool(emu.registered_executors), 30)
        status, expected, detail = go(emu)
        runner.check(script, "0.1.3 README example", status, expected, detail)
    finally:
        stop_program(proc)


def readme_job(emu: ServerEmulator) -> Tuple[int, int, str]:
    b = emu.trigger("testJobExecutor", 1, args_str="from the README")
    status = b.wait(15)
    emu.wait_until(lambda: bool(log_lines(emu, b.id)), 10)
    return status, 3, f"job log: {log_lines(emu, b.id)[0]!r}"


def readme_map(emu: ServerEmulator) -> Tuple[int, int, str]:
    b = emu.trigger("testMyMapExecutor", 4)
    return b.wait(15), 3, f"ROOT_MAP result {results(b)}"


def readme_mapreduce(emu: ServerEmulator) -> Tuple[int, int, str]:
    # The 0.1.3 README's ROOT_MAP returns "MONTH_MAP" without fanning out, so
    # its reduce gets ["MONTH_MAP"] and int() fails: FAIL is what that code does.
    b = emu.trigger("testMapReduceJobExecutor", 5, shard_num=2)
    status = b.wait(15)
    reduce = b.tasks_in_stage(2)
    reason = (reduce[0].execute_result or {}).get("message", "") if reduce else "no reduce task"
    return status, 4, f"reduce failed as the example's code implies: {reason}"


def readme_stop(emu: ServerEmulator) -> Tuple[int, int, str]:
    b = stopped_after(emu, "testJobExecutor", 1.0)
    status = b.wait(10)
    emu.wait_until(lambda: bool(log_lines(emu, b.id)), 10)
    return status, 5, f"job log: {log_lines(emu, b.id)[-1]!r}; task stays {STATUS[b.tasks[0].status]}"


def run_retry(emu: ServerEmulator, runner: Runner) -> None:
    """retry_example.py: a charge fails twice in place, is handed to the
    (emulated) server, replayed until it succeeds, then called back."""
    emu.add_retry_scene("examplePayment", max_retry_count=5, interval=0.5, callback=True)
    state = tempfile.mkdtemp(prefix="snailjob-retry-example-")
    os.environ["RETRY_EXAMPLE_STATE"] = state
    try:
        proc = start_program(emu, "retry_example.py")
    finally:
        del os.environ["RETRY_EXAMPLE_STATE"]
    try:
        emu.wait_until(lambda: "retryExampleCheckout" in emu.registered_executors, timeout=30)
        b = emu.trigger("retryExampleCheckout", 1, args_str="order-42")
        runner.check("retry_example.py", "checkout (charge fails twice)", b.wait(15), 3, results(b)[0])
        emu.wait_until(lambda: bool(emu.retries_for("examplePayment")), timeout=10)
        retry = emu.retries_for("examplePayment")[0]
        status = retry.wait(20)
        attempts = ", ".join(STATUS.get(t.status, str(t.status)) for t in retry.retry_tasks)
        runner.check("retry_example.py", "server replays of the charge", 3 if status == 1 else 4, 3,
                     f"retry {'FINISH' if status == 1 else status} after replays: {attempts}")
        callback = retry.wait_callback(20)
        note = os.path.join(state, "order-42.callback")
        outcome = open(note).read() if os.path.exists(note) else "(no callback ran)"
        runner.check("retry_example.py", "completion callback", callback, 3, f"callback: {outcome}")
    finally:
        code = stop_program(proc)
        runner.check("retry_example.py", "SIGTERM", 3 if code == 0 else 4, 3, f"exit code {code}")


def run_retry_chain(emu: ServerEmulator, runner: Runner) -> None:
    """retry_chain.py: the shop's call to the stock service fails twice in
    place; only the shop reports (the stock service ran once per request,
    in the retry flow); the server's replays finish it."""
    import socket

    emu.add_retry_scene("exampleShop", max_retry_count=5, interval=0.5)
    emu.add_retry_scene("exampleStock", max_retry_count=5, interval=0.5)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = start_program(emu, "retry_chain.py", RETRY_CHAIN_STATE=tempfile.mkdtemp(prefix="snailjob-retry-chain-"),
                         RETRY_CHAIN_PORT=str(port))
    try:
        emu.wait_until(lambda: "retryChainCheckout" in emu.registered_executors, timeout=30)
        b = emu.trigger("retryChainCheckout", 1, args_str="sku-7")
        runner.check("retry_chain.py", "order (stock fails twice)", b.wait(15), 3, results(b)[0])
        emu.wait_until(lambda: bool(emu.retries_for("exampleShop")), timeout=10)
        status = emu.retries_for("exampleShop")[0].wait(20)
        stock = len(emu.retries_for("exampleStock"))
        runner.check("retry_chain.py", "one retry task for the chain", 3 if (status, stock) == (1, 0) else 4, 3,
                     f"shop's retry {'FINISH' if status == 1 else status}; stock reported {stock}")
    finally:
        code = stop_program(proc)
        runner.check("retry_chain.py", "SIGTERM", 3 if code == 0 else 4, 3, f"exit code {code}")


def run_builtin(emu: ServerEmulator, runner: Runner) -> None:
    """builtin_jobs.py: the two jobs created through the OpenAPI client (a fake of its server), then
    triggered on the emulator as the server sends them, on the node it starts."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    target = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{target.server_address[1]}/health"
    try:
        out = subprocess.run([sys.executable, "builtin_jobs.py", "--sync"], cwd=HERE, capture_output=True,
                             text=True, timeout=60, env={**os.environ, "EXAMPLE_HTTP_TARGET": url})
        runner.check("builtin_jobs.py", "--sync (OpenAPI, the console's forms)",
                     3 if out.returncode == 0 and out.stdout.count("added") == 2 else 4, 3,
                     (out.stdout.strip().splitlines() or [out.stderr.strip()[-200:]])[0])
        sys.path.insert(0, HERE)
        os.environ["EXAMPLE_HTTP_TARGET"] = url  # read by builtin_jobs.py's definitions
        from builtin_jobs import JOBS

        with tempfile.TemporaryDirectory() as workspace:
            proc = start_program(emu, "builtin_jobs.py", EXAMPLE_HTTP_TARGET=url,
                                 SNAIL_BUILTIN_WORKSPACE=os.path.join(workspace, "ws"))
            emu.wait_for_clients(1, timeout=15)
            for spec, what in zip(JOBS, ("HTTP job (GET /health)", "shell job")):
                b = emu.trigger(spec.executor, args_str=spec.args_str, executor_type=int(spec.executor_type))
                status = b.wait(20)
                detail = results(b)[0]
                if spec.executor != JOBS[0].executor:  # the script's lines, as the console's task log shows them
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline and not any("report done" in ln for ln in log_lines(emu, b.id)):
                        time.sleep(0.1)
                    detail = "; ".join(log_lines(emu, b.id)[:3]) or detail
                runner.check("builtin_jobs.py", what, status, 3, detail)
            code = stop_program(proc)
            runner.check("builtin_jobs.py", "SIGTERM", 3 if code == 0 else 4, 3, f"exit code {code}")
    finally:
        target.shutdown()


def run_openapi(runner: Runner) -> None:
    """openapi_jobs.py needs no emulator: it starts an in-process fake of the server's OpenAPI."""
    env = {k: v for k, v in os.environ.items() if k != "SNAIL_OPENAPI_URL"}
    out = subprocess.run([sys.executable, "openapi_jobs.py"], cwd=HERE, env=env, capture_output=True, text=True,
                         timeout=120)
    lines = out.stdout.splitlines()
    added = sum(" added " in ln for ln in lines if ln.startswith("sync 1:"))
    updated = sum(" updated " in ln for ln in lines if ln.startswith("sync 2:"))
    runner.check("openapi_jobs.py", "sync_jobs (jobs as code)", 3 if (added, updated) == (3, 3) else 4, 3,
                 f"{added} added, then {updated} updated")
    last = lines[-1] if lines else out.stderr.strip()[-200:]
    runner.check("openapi_jobs.py", "trigger + wait_job_batch", 3 if out.returncode == 0 and "SUCCESS" in last
                 else 4, 3, last)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_json(port: int, path: str, timeout: float = 30.0) -> Any:
    """GET a JSON page, waiting for the web server to listen: the SnailJob
    client starts (and can run jobs) before the app's HTTP port is bound."""
    import json
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                return json.loads(reply.read())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def drained(log_name: str, code: int) -> Tuple[int, int, str]:
    """A web server may end by re-raising SIGTERM (exit -15) once it shut down
    cleanly; what matters is that the client stopped first, which it logs."""
    with open(os.path.join(LOG_DIR, log_name)) as log:
        stopped = any("snailjob client" in line and line.rstrip().endswith("stopped") for line in log)
    return (3 if stopped and code in (0, -signal.SIGTERM) else 4), 3, f"exit code {code}, client stopped: {stopped}"


def run_django(emu: ServerEmulator, runner: Runner) -> None:
    """example/django_site: python manage.py snailjob_worker, jobs writing through the ORM."""
    site = os.path.join(HERE, "django_site")
    db = os.path.join(tempfile.mkdtemp(prefix="snailjob-django-"), "db.sqlite3")
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--run-syncdb"], cwd=site,
                             env={**os.environ, "EXAMPLE_DJANGO_DB": db}, capture_output=True, text=True, timeout=120)
    if migrate.returncode != 0:
        runner.check("django_site", "migrate", 4, 3, migrate.stderr.strip()[-200:])
        return
    proc = start_program(emu, "manage.py", "snailjob_worker", cwd=site, EXAMPLE_DJANGO_DB=db)
    try:
        emu.wait_until(lambda: "djangoBuildReport" in emu.registered_executors, timeout=60)
        details = []
        for name in ("daily", "weekly"):
            b = emu.trigger("djangoBuildReport", 1, args_str=name)
            status = b.wait(15)
            details.append(results(b)[0])
            runner.check("django_site", f"ORM job ({name})", status, 3, results(b)[0])
    finally:
        code = stop_program(proc)
        runner.check("django_site", "SIGTERM", 3 if code == 0 else 4, 3, f"exit code {code}")


def run_fastapi(emu: ServerEmulator, runner: Runner) -> None:
    """example/fastapi_app.py under uvicorn: the lifespan starts and drains the client."""
    port = free_port()
    proc = start_program(emu, "fastapi_app.py", EXAMPLE_HTTP_PORT=str(port))
    try:
        emu.wait_until(lambda: "fastapiRefreshStats" in emu.registered_executors, timeout=60)
        b = emu.trigger("fastapiRefreshStats", 1)
        status = b.wait(15)
        served = http_json(port, "/stats")
        runner.check("fastapi_app.py", "async job on the app's loop", status, 3,
                     f"{results(b)[0]}; GET /stats -> refreshes {served['refreshes']}")
    finally:
        code = stop_program(proc)
        runner.check("fastapi_app.py", "SIGTERM drains the client", *drained("fastapi_app.log", code))


def run_flask(emu: ServerEmulator, runner: Runner) -> None:
    """example/flask_app.py: SnailJob(app); jobs run inside the app context."""
    port = free_port()
    proc = start_program(emu, "flask_app.py", EXAMPLE_HTTP_PORT=str(port))
    try:
        emu.wait_until(lambda: "flaskGreeting" in emu.registered_executors, timeout=60)
        b = emu.trigger("flaskGreeting", 1, args_str="SnailJob")
        status = b.wait(15)
        served = http_json(port, "/health")
        runner.check("flask_app.py", "job with current_app", status, 3,
                     f"{results(b)[0]}; app contexts torn down: {served['torn_down']}")
    finally:
        code = stop_program(proc)
        runner.check("flask_app.py", "SIGTERM drains the client", *drained("flask_app.log", code))


def main() -> int:
    runner = Runner()
    run_openapi(runner)
    for integration in (run_django, run_fastapi, run_flask):
        with ServerEmulator() as emu:
            integration(emu, runner)
    with ServerEmulator() as emu:
        run_main(emu, runner)
    with ServerEmulator() as emu:
        run_retry(emu, runner)
    with ServerEmulator() as emu:
        run_retry_chain(emu, runner)
    with ServerEmulator() as emu:
        run_builtin(emu, runner)
    for script, go in [("readme_job.py", readme_job), ("readme_map.py", readme_map),
                       ("readme_mapreduce.py", readme_mapreduce), ("readme_stop.py", readme_stop)]:
        with ServerEmulator() as emu:
            run_readme(emu, runner, script, go)
    ok = runner.print()
    print("all examples behaved as expected" if ok else "SOME EXAMPLES MISBEHAVED")
    print(f"(each example program's own log is in {LOG_DIR})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
