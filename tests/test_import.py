"""Importing snailjob has no side effects, and the 0.1.3 names exist."""

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
