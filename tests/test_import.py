"""Importing snailjob has no side effects, and the 0.1.3 names exist."""

import json
import os
import subprocess
import sys
import textwrap


def test_import_has_no_side_effects(tmp_path):
    (tmp_path / ".env").write_text("SNAIL_SERVER_PORT=not-a-number\n")
    code = textwrap.dedent("""
        import logging, os, threading
        before = set(os.listdir("."))
        import snailjob
        from snailjob import *
        assert threading.active_count() == 1, threading.enumerate()
        assert logging.getLogger().handlers == [], logging.getLogger().handlers
        pkg = logging.getLogger("snailjob").handlers
        assert [type(h).__name__ for h in pkg] == ["NullHandler"], pkg
        assert logging.getLogger("snailjob.remote").handlers == []
        assert set(os.listdir(".")) == before, set(os.listdir(".")) - before
        print("clean")
    """)
    # a .env with a bad value proves settings are not read at import
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def test_star_import_provides_the_013_api():
    namespace: dict = {}
    exec("from snailjob import *", namespace)
    for name in ["job", "MapExecutor", "MapReduceExecutor", "ExecutorManager", "client_main", "JobArgs",
                 "ShardingJobArgs", "MapArgs", "ReduceArgs", "MergeReduceArgs", "ExecuteResult",
                 "mr_do_map", "ROOT_MAP", "SnailLog", "ThreadPoolCache", "SnailJobError",
                 "SnailContextManager"]:
        assert name in namespace, name
    assert namespace["ROOT_MAP"] == "ROOT_MAP"
    assert issubclass(namespace["SnailJobError"], RuntimeError)
    assert hasattr(namespace["SnailLog"], "LOCAL") and hasattr(namespace["SnailLog"], "REMOTE")


def test_execute_result_013_semantics():
    from snailjob import ExecuteResult

    ok = ExecuteResult.success({"rows": 3})
    assert ok.status == 1 and ok.result == {"rows": 3}
    failed = ExecuteResult.failure("disk full")
    assert failed.status == 0
    assert failed.result == "disk full"  # 0.1.3 put the text in result...
    assert failed.message == "disk full"  # ...and now also in message, for alarms
    assert ExecuteResult.failure().message == "Task execution failed"
    assert ExecuteResult.failure({"code": 7}, message="bad input").message == "bad input"


# Modules a plain job client (import, @job, client_main) must not load: they
# belong to features it does not use and load on first use.
NOT_FOR_A_JOB_CLIENT = [
    "snailjob.retry", "snailjob.retry_args", "snailjob.retry_work", "snailjob.retry_endpoint", "snailjob.openapi",
    "snailjob.testing", "snailjob.ops", "snailjob.cli", "snailjob.contrib", "snailjob.processes",
    "pydantic_settings", "multiprocessing", "http.server", "sqlite3",
    "snailjob.builtin.http", "snailjob.builtin.scripts", "snailjob.builtin._process", "snailjob.builtin._sources",
    "http.client",
]


def test_a_job_client_loads_only_what_it_uses(tmp_path):
    code = textwrap.dedent("""
        import json, sys
        import snailjob as sj
        from snailjob.compat import client_main  # the path client_main() takes

        @sj.job("plain")
        def plain(args):
            return sj.ExecuteResult.success()

        sj.ExecutorManager.register(plain)
        client = sj.Client(sj.Settings.load(env_file=None), executors=sj.ExecutorManager.registry,
                           retries=sj.ExecutorManager.retries)
        client.stats(), client.health()
        print(json.dumps(sorted(sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert "snailjob.client" in loaded and "snailjob.compat" in loaded
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in NOT_FOR_A_JOB_CLIENT))
    assert heavy == [], heavy


def test_lazy_names_resolve():
    import snailjob
    import snailjob.retry as retry

    for name in ["Backoff", "Retryable", "RetryCall", "RetryRegistry", "RetryStrategy", "StopRetry", "retryable"]:
        assert name in snailjob.__all__ and name in dir(snailjob), name
        assert getattr(snailjob, name) is getattr(retry, name), name
    assert snailjob.RetryRegistry is retry.RetryRegistry
    try:
        snailjob.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")


def test_retryable_registers_after_a_lazy_import():
    code = textwrap.dedent("""
        import sys
        import snailjob as sj
        from snailjob.retry_registry import is_retryable
        assert not is_retryable(print) and not is_retryable(None)
        assert not [m for m in sys.modules if m.startswith("snailjob.retry") and m != "snailjob.retry_registry"]

        @sj.retryable("scene")
        def pay(order):
            return order

        assert is_retryable(pay)
        sj.ExecutorManager.register(pay)
        assert sj.ExecutorManager.retries.get("scene", pay.executor_name) is pay
        client = sj.Client(sj.Settings.load(env_file=None), executors=[pay])
        assert len(client.retries) == 1
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_grpc_loads_with_the_first_channel():
    code = "import sys, snailjob; print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
