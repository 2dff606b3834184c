# mypy: allow-untyped-defs
"""``snailjob check`` against the real server: a right token, a wrong one, and no server.

The command runs as a user runs it (``python -m snailjob check``), configured only
by ``SNAIL_*`` variables; its exit code and lines are what the test reads.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.e2e import harness

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def check(srv, tmp_path, **overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAIL_")}
    env.update(srv.client_env(host_port=harness.free_port()))
    env.update({"SNAIL_BIND_HOST": "127.0.0.1", "SNAIL_HEARTBEAT_INTERVAL": "1",
                "PYTHONPATH": str(harness.REPO_ROOT)})
    env.update(overrides)
    out = subprocess.run([sys.executable, "-m", "snailjob", "check", "--timeout", "20"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout + out.stderr


def test_check_passes_with_the_groups_token(srv, tmp_path):
    code, text = check(srv, tmp_path)
    assert code == 0, text
    assert f"ok   server 127.0.0.1:{srv.grpc_port}: gRPC port reachable" in text, text
    assert "ok   advertised address: 127.0.0.1" in text and "FAIL" not in text, text
    assert "all ok" in text and srv.group_token not in text


def test_check_names_a_wrong_token_and_the_fix(srv, tmp_path):
    code, text = check(srv, tmp_path, SNAIL_TOKEN="SJ_not_the_groups_token_at_all")
    assert code == 1, text
    fails = [line for line in text.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1 and "Token authentication failed" in fails[0], text
    assert "fix: " in text and "SNAIL_TOKEN" in text.split(fails[0], 1)[1], text
    assert "SJ_not_the_groups_token_at_all" not in text and srv.group_token not in text


def test_check_without_a_server(srv, tmp_path):
    nothing = harness.free_port()
    code, text = check(srv, tmp_path, SNAIL_SERVER_PORT=str(nothing))
    assert code == 1, text
    assert f"FAIL server 127.0.0.1:{nothing}" in text and "SNAIL_SERVER_HOST" in text, text


def test_check_tells_the_web_port_from_the_grpc_port(srv, tmp_path):
    code, text = check(srv, tmp_path, SNAIL_SERVER_PORT=str(srv.http_port))
    assert code == 1, text
    assert f"FAIL server 127.0.0.1:{srv.http_port}: not a gRPC port: it answers HTTP/1.x, not HTTP/2" in text, text
    assert ("fix: this is an HTTP (web) port; SNAIL_SERVER_PORT (or the port in SNAIL_SERVER_HOST) must be the "
            "server's gRPC port, snail-job.server-port (default 17888)") in text, text
    assert "gRPC port reachable" not in text and srv.group_token not in text


def test_openapi_status_names_the_url_setting(srv, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAIL_")}
    env.update(srv.client_env(), PYTHONPATH=str(harness.REPO_ROOT))
    without_context = f"http://127.0.0.1:{srv.http_port}"
    out = subprocess.run([sys.executable, "-m", "snailjob", "status", "1"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env={**env, "SNAIL_OPENAPI_URL": without_context})
    assert out.returncode == 1, out
    assert out.stderr.startswith(f"snailjob status: OpenApiHTTPError: /api/job/detail/id: HTTP 404 Not Found from "
                                 f"{without_context}/api/job/detail/id: "), out.stderr
    assert out.stderr.endswith("; is SNAIL_OPENAPI_URL missing the /snail-job context path?\n"), out.stderr
    assert "<" not in out.stderr and out.stderr.count("\n") == 1 and len(out.stderr) < 500
    missing = "987654321"  # no such job, whatever the tests before this one created
    ok = subprocess.run([sys.executable, "-m", "snailjob", "status", missing], cwd=tmp_path, capture_output=True,
                        text=True, timeout=60, env={**env, "SNAIL_OPENAPI_URL": srv.base_url})
    assert ok.stderr == f"snailjob status: no job {missing} in group {srv.group}\n", ok  # reached: no such job
