"""The console's script executors (snailjob.builtin.scripts) with real ``sh``
processes: the form, the workspace, the sources (a local HTTP server of the
test's own for DOWNLOAD), output shipped line by line, the result, and stop
ending the script's whole process group."""

from __future__ import annotations

import http.server
import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from snailjob.args import build_args
from snailjob.builtin._process import Output
from snailjob.builtin.scripts import script_job
from snailjob.context import TaskContext, enter, leave
from snailjob.dispatcher import _raise_in_thread
from snailjob.errors import TaskInterrupted
from snailjob.settings import Settings
from snailjob.wire.models import DispatchJobRequest, ExecuteResult
from tests.conftest import dispatch_body

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="runs sh")

REMOTE = "snailjob.remote"


def make_settings(tmp_path: Path, **fields: Any) -> Settings:
    return Settings(snail_builtin_workspace=str(tmp_path / "ws"), **fields)


def run_job(settings: Settings, params: Any, kind: str = "shell", stop: Optional[threading.Event] = None,
            job_id: int = 7) -> ExecuteResult:
    """Run the job function as the dispatcher does: inside the task's context."""
    body = dispatch_body("snailJobShellJobExecutor", jobId=job_id, argsStr=json.dumps({"jobParams": params}))
    request = DispatchJobRequest.model_validate(body)
    args = build_args(request).args
    token = enter(TaskContext(request, args, stop or threading.Event(), None))  # type: ignore[arg-type]
    try:
        result = script_job(kind, settings)(args)
        assert isinstance(result, ExecuteResult)
        return result
    finally:
        leave(token)


def code(text: str, charset: str = "") -> Dict[str, str]:
    return {"method": "SCRIPT_CODE", "scriptParams": text, "charset": charset}


def remote_lines(caplog: pytest.LogCaptureFixture) -> List[Tuple[str, int]]:
    return [(r.getMessage(), r.levelno) for r in caplog.records if r.name == REMOTE]


def live_members(pgid: int) -> List[int]:
    """Processes of group ``pgid`` that are not zombies (nothing reaps orphans here)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                found.append(int(entry))
    return found


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} not written")


@pytest.fixture(autouse=True)
def _remote_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=REMOTE)


# --- running, output, result ---------------------------------------------------


def test_success_ships_each_line_in_order_with_its_level(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    result = run_job(make_settings(tmp_path), code("echo one\nsleep 0.2\necho two >&2\nsleep 0.2\necho three\n"))
    assert result.is_success and result.result == {"exitCode": 0}
    lines = [line for line in remote_lines(caplog) if line[0] in ("one", "two", "three")]
    assert lines == [("one", logging.INFO), ("two", logging.WARNING), ("three", logging.INFO)]
    assert all(r.thread == threading.get_ident() for r in caplog.records if r.name == REMOTE)
    assert any("script exited with code 0" in m for m, _ in remote_lines(caplog))


def test_lines_are_shipped_as_they_come(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert run_job(make_settings(tmp_path), code("echo early\nsleep 1\necho late")).is_success
    at = {r.getMessage(): r.created for r in caplog.records if r.name == REMOTE}
    assert at["late"] - at["early"] > 0.8


def test_job_params_as_a_dict_or_as_json_text(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert run_job(make_settings(tmp_path), json.dumps(code("echo as-text"))).is_success
    assert run_job(make_settings(tmp_path), code("echo as-dict")).is_success
    assert {"as-text", "as-dict"} <= {m for m, _ in remote_lines(caplog)}


def test_non_zero_exit_is_a_failure_with_the_code_and_stderr_tail(tmp_path: Path) -> None:
    script = "echo out\nfor i in $(seq 1 15); do echo err$i >&2; done\nexit 3\n"
    result = run_job(make_settings(tmp_path), code(script))
    assert not result.is_success and result.message == "script exited with code 3"
    assert result.result["message"] == "script exited with code 3"
    assert result.result["exitCode"] == 3
    assert result.result["stderrTail"] == [f"err{i}" for i in range(6, 16)]


def test_stderr_tail_is_capped_in_bytes(tmp_path: Path) -> None:
    result = run_job(make_settings(tmp_path), code("for i in 1 2 3 4 5; do head -c 900 /dev/zero | tr '\\0' x >&2; "
                                                 "echo >&2; done; exit 1"))
    tail = result.result["stderrTail"]
    assert len(tail) == 2 and sum(len(line) + 1 for line in tail) <= 2048


def test_killed_by_a_signal_names_it(tmp_path: Path) -> None:
    result = run_job(make_settings(tmp_path), code("kill -KILL $$"))
    assert not result.is_success and result.message == "script killed by signal SIGKILL"
    assert result.result["signal"] == "SIGKILL"


def test_charset_writes_the_script_and_reads_its_output(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    result = run_job(make_settings(tmp_path), code("printf '%s' '你好' | od -An -tx1\necho 你好", "gbk"))
    assert result.is_success
    messages = [m for m, _ in remote_lines(caplog)]
    assert "c4 e3 ba c3" in [m.strip() for m in messages]  # written in GBK
    assert "你好" in messages  # and read back with it


def test_unknown_charset_warns_and_uses_utf8(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for charset in ("no-such-charset", "base64"):
        caplog.clear()
        assert run_job(make_settings(tmp_path), code("echo été", charset)).is_success
        lines = remote_lines(caplog)
        assert (f"unknown charset {charset!r}: using utf-8", logging.WARNING) in lines
        assert ("été", logging.INFO) in lines


def test_unencodable_script_text_names_the_charset(tmp_path: Path) -> None:
    result = run_job(make_settings(tmp_path), code("echo 你好", "latin-1"))
    assert not result.is_success and "charset latin-1 cannot encode" in result.message


def test_long_lines_are_cut_and_the_rest_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = "head -c 100000 /dev/zero | tr '\\0' a; echo; echo next"
    assert run_job(make_settings(tmp_path), code(script)).is_success
    messages = [m for m, _ in remote_lines(caplog)]
    index = messages.index("a" * 8192 + " [cut at 8192 characters]")
    assert messages[index + 1] == "next"


def test_the_number_of_lines_is_capped(caplog: pytest.LogCaptureFixture) -> None:
    output = Output("utf-8", max_lines=5)
    output.feed("out", b"".join(b"line%d\r\n" % i for i in range(8)))
    output.feed("err", b"last without newline")
    output.finish()
    assert remote_lines(caplog) == [(f"line{i}", logging.INFO) for i in range(5)] + [
        ("4 more output line(s) not shipped (at most 5 lines per task)", logging.WARNING)]
    assert output.stderr_tail() == ["last without newline"]


def test_undecodable_bytes_are_replaced(caplog: pytest.LogCaptureFixture) -> None:
    output = Output("utf-8")
    output.feed("out", b"ok \xff\xfe end\n\xe4\xbd")  # and a character split between reads
    output.feed("out", b"\xa0\n")
    output.finish()
    assert [m for m, _ in remote_lines(caplog)] == ["ok \ufffd\ufffd end", "你"]


def test_runs_in_its_task_directory_with_the_java_file_name_and_no_stdin(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path)
    result = run_job(settings, code("pwd\necho \"$0\"\ncat\necho \"mode $(stat -c %a .) $(stat -c %a \"$0\")\""),
                     job_id=42)
    assert result.is_success
    messages = [m for m, _ in remote_lines(caplog)]
    workspace = str(tmp_path / "ws")
    cwd = next(m for m in messages if m.startswith(workspace))
    assert os.path.basename(cwd).startswith("job42-task")
    assert os.path.join(cwd, "shell_42.sh") in messages
    assert "mode 700 700" in messages
    assert os.listdir(workspace) == []  # removed afterwards


def test_the_task_directory_is_removed_even_when_made_read_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert run_job(settings, code("mkdir -p d/e && touch d/e/f && chmod 500 d/e d && exit 2")).result["exitCode"] == 2
    assert os.listdir(tmp_path / "ws") == []


# --- sources -------------------------------------------------------------------


def test_local_script_is_copied(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "job.sh"
    source.write_text("echo from the file\n")
    form = {"method": "LOCAL_SCRIPT", "scriptParams": f" {source}\n", "charset": ""}
    assert run_job(make_settings(tmp_path), form).is_success
    assert ("from the file", logging.INFO) in remote_lines(caplog)
    assert source.read_text() == "echo from the file\n"


def test_missing_local_script_names_the_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = str(tmp_path / "nope.sh")
    result = run_job(make_settings(tmp_path), {"method": "LOCAL_SCRIPT", "scriptParams": missing})
    assert not result.is_success
    assert result.message == result.result == (f"LOCAL_SCRIPT: cannot read the script file {missing!r} "
                                                "on this node: No such file or directory")
    assert (result.message, logging.ERROR) in remote_lines(caplog)
    assert os.listdir(tmp_path / "ws") == []


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/ok":
            self._send(200, b"echo downloaded\n")
        elif self.path == "/created":
            self._send(201, b"echo no\n")
        elif self.path == "/big":
            self._send(200, b"#" * 2000)
        elif self.path == "/big-unsized":
            self.send_response(200)
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            self.wfile.write(b"#" * 2000)
        elif self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"#")
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path in ("/to-file", "/to-ftp"):
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd" if self.path == "/to-file" else "ftp://127.0.0.1/x")
            self.end_headers()
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.end_headers()
        else:
            self._send(404, b"no")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def download(tmp_path: Path, url: str, **fields: Any) -> ExecuteResult:
    return run_job(make_settings(tmp_path, **fields), {"method": "DOWNLOAD", "scriptParams": url, "charset": ""})


def test_download(tmp_path: Path, server: str, caplog: pytest.LogCaptureFixture) -> None:
    assert download(tmp_path, f"{server}/ok").is_success
    assert download(tmp_path, f"{server}/redirect").is_success
    assert remote_lines(caplog).count(("downloaded", logging.INFO)) == 2


def test_download_errors(tmp_path: Path, server: str) -> None:
    assert download(tmp_path, f"{server}/missing").message == \
        f"DOWNLOAD: {server}/missing answered HTTP 404 Not Found, expected 200"
    assert download(tmp_path, f"{server}/created").message == \
        f"DOWNLOAD: {server}/created answered HTTP 201 Created, expected 200"
    for path in ("/big", "/big-unsized"):
        assert download(tmp_path, server + path, snail_script_download_max_bytes=1000).message == \
            f"DOWNLOAD: {server}{path} is larger than SNAIL_SCRIPT_DOWNLOAD_MAX_BYTES (1000 bytes)"
    assert download(tmp_path, f"{server}/big", snail_script_download_max_bytes=2000).is_success  # "#": a comment
    started = time.monotonic()
    slow = download(tmp_path, f"{server}/slow", snail_script_download_timeout=0.5)
    assert slow.message == f"DOWNLOAD: {server}/slow took longer than SNAIL_SCRIPT_DOWNLOAD_TIMEOUT (0.5 s)"
    assert time.monotonic() - started < 2
    assert download(tmp_path, f"{server}/to-ftp").message == \
        f"DOWNLOAD: {server}/to-ftp redirects to 'ftp://127.0.0.1/x', which is not an http or https URL"
    assert "Redirection to url 'file:///etc/passwd' is not allowed" in download(tmp_path, f"{server}/to-file").message
    assert os.listdir(tmp_path / "ws") == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x.sh", "/etc/passwd", "http://"])
def test_download_takes_only_http_urls(tmp_path: Path, url: str) -> None:
    result = download(tmp_path, url)
    assert result.message == f"DOWNLOAD: scriptParams must be an http or https URL, not {url!r}"


def test_download_messages_hide_the_password(tmp_path: Path) -> None:
    result = download(tmp_path, "http://user:secret@127.0.0.1:9/x.sh")
    assert "secret" not in result.message and "127.0.0.1:9/x.sh" in result.message


def test_a_stop_during_the_download_ends_it(tmp_path: Path, server: str) -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    result = run_job(make_settings(tmp_path), {"method": "DOWNLOAD", "scriptParams": f"{server}/slow"}, stop=stop)
    assert result.message == "DOWNLOAD: stopped during the download"


# --- the form ------------------------------------------------------------------


@pytest.mark.parametrize("params, expected", [
    (None, "the job parameters are empty"),
    ("  ", "the job parameters are empty"),
    ("{not json", "the job parameters are not JSON"),
    ("[1, 2]", "the job parameters are a JSON array, not an object"),
    ({}, "method is missing: it must be one of LOCAL_SCRIPT, SCRIPT_CODE, DOWNLOAD"),
    ({"method": "script_code", "scriptParams": "x"}, "method is 'script_code': it must be one of"),
    ({"method": "LOCAL_SCRIPT", "scriptParams": "", "charset": ""},
     "scriptParams is blank: with method LOCAL_SCRIPT it must be the path of a script file on the node"),
    ({"method": "SCRIPT_CODE"}, "scriptParams is missing: with method SCRIPT_CODE it must be the script's text"),
    ({"method": "DOWNLOAD", "scriptParams": 5}, "scriptParams is not text: with method DOWNLOAD"),
    ({"method": "SCRIPT_CODE", "scriptParams": "echo", "charset": 8}, "charset must be a charset name"),
])
def test_bad_forms_fail_naming_the_field(tmp_path: Path, params: Any, expected: str) -> None:
    result = run_job(make_settings(tmp_path), params)
    assert not result.is_success and result.message.startswith(expected), result.message
    assert result.result == result.message


# --- the workspace -------------------------------------------------------------


def test_the_default_workspace_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert run_job(Settings(), code("true")).is_success
    workspace = tmp_path / ".snailjob" / "workspace"
    assert workspace.is_dir() and workspace.stat().st_mode & 0o777 == 0o700
    assert os.listdir(workspace) == []


def test_a_workspace_writable_by_others_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    os.chmod(tmp_path / "ws", 0o770)
    result = run_job(make_settings(tmp_path), code("touch ran"))
    assert not result.is_success
    assert result.message == (f"the script workspace {tmp_path / 'ws'} (SNAIL_BUILTIN_WORKSPACE) is writable by "
                              f"group or others (mode 0770): make it private (chmod 700 {tmp_path / 'ws'})")
    assert os.listdir(tmp_path / "ws") == []


def test_a_symlinked_or_non_directory_workspace_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "ws").symlink_to(tmp_path / "real")
    assert "(SNAIL_BUILTIN_WORKSPACE) is a symbolic link" in run_job(make_settings(tmp_path), code("true")).message
    (tmp_path / "ws").unlink()
    (tmp_path / "ws").write_text("")
    assert "(SNAIL_BUILTIN_WORKSPACE) is not a directory" in run_job(make_settings(tmp_path), code("true")).message


# --- platforms -----------------------------------------------------------------


def test_cmd_runs_only_on_windows(tmp_path: Path) -> None:
    result = run_job(make_settings(tmp_path), code("echo hi"), kind="cmd")
    assert not result.is_success and result.message.startswith("cmd.exe runs only on Windows nodes")


@pytest.mark.skipif(shutil.which("pwsh") is not None, reason="pwsh is installed here")
def test_powershell_without_pwsh_says_to_install_it(tmp_path: Path) -> None:
    result = run_job(make_settings(tmp_path), code("Write-Output hi"), kind="powershell")
    assert not result.is_success and "need PowerShell 7" in result.message and "pwsh" in result.message


def test_unknown_kind() -> None:
    with pytest.raises(ValueError):
        script_job("bash", Settings())


# --- stop and the process group ------------------------------------------------


def start_in_thread(settings: Settings, script: str, stop: threading.Event) -> Tuple[threading.Thread, List[Any]]:
    """Run the job in a thread of its own; the list gets its result or exception."""
    outcome: List[Any] = []

    def target() -> None:
        try:
            outcome.append(run_job(settings, code(script), stop=stop))
        except BaseException as exc:  # noqa: B036
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def wait_for_members(pgid: int, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(live_members(pgid)) < count:
        assert time.monotonic() < deadline, live_members(pgid)
        time.sleep(0.02)


def test_stop_ends_the_whole_group(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, snail_script_kill_grace=3)
    stop = threading.Event()
    script = f"echo $$ > {tmp_path}/pid\n(sleep 600; echo never) & sleep 600; wait\n"
    thread, outcome = start_in_thread(settings, script, stop)
    pgid = int(wait_for_file(tmp_path / "pid"))
    wait_for_members(pgid, 4)  # sh, the subshell, its sleep (a grandchild), the foreground sleep
    started = time.monotonic()
    stop.set()
    thread.join(settings.snail_script_kill_grace + 1)
    assert not thread.is_alive() and time.monotonic() - started < settings.snail_script_kill_grace + 1
    assert live_members(pgid) == []
    result = outcome[0]
    assert not result.is_success and result.result["stopped"] is True
    assert result.message.startswith("stopped (the batch was stopped or timed out): script killed by signal SIGTERM")
    assert ("stopped: SIGTERM sent to the script's process group; SIGKILL after 3 s", logging.WARNING) \
        in remote_lines(caplog)
    assert os.listdir(tmp_path / "ws") == []


def test_stop_kills_a_group_that_ignores_sigterm(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, snail_script_kill_grace=0.5)
    stop = threading.Event()
    script = f"trap '' TERM\nsleep 600 &\necho $$ > {tmp_path}/pid\nwhile true; do sleep 0.05; done\n"
    thread, outcome = start_in_thread(settings, script, stop)
    pgid = int(wait_for_file(tmp_path / "pid"))
    wait_for_members(pgid, 2)
    started = time.monotonic()
    stop.set()
    thread.join(settings.snail_script_kill_grace + 1)
    elapsed = time.monotonic() - started
    assert not thread.is_alive() and 0.5 <= elapsed < settings.snail_script_kill_grace + 1
    assert live_members(pgid) == []
    assert outcome[0].message == "stopped (the batch was stopped or timed out): script killed by signal SIGKILL"
    assert ("the script's process group was still running 0.5 s after SIGTERM: SIGKILL sent", logging.WARNING) \
        in remote_lines(caplog)
    assert os.listdir(tmp_path / "ws") == []


def test_task_interrupted_waits_for_the_grace_then_propagates(tmp_path: Path) -> None:
    """As the dispatcher does: the stop event, then TaskInterrupted raised in the task's thread."""
    settings = make_settings(tmp_path, snail_script_kill_grace=1.0)
    stop = threading.Event()
    script = f"trap '' TERM\necho $$ > {tmp_path}/pid\nsleep 600 & while true; do sleep 0.05; done\n"
    thread, outcome = start_in_thread(settings, script, stop)
    pgid = int(wait_for_file(tmp_path / "pid"))
    wait_for_members(pgid, 2)
    started = time.monotonic()
    stop.set()
    time.sleep(0.3)
    assert thread.ident is not None
    _raise_in_thread(thread.ident, TaskInterrupted)
    thread.join(settings.snail_script_kill_grace + 2)
    assert not thread.is_alive() and time.monotonic() - started >= 1.0
    assert isinstance(outcome[0], TaskInterrupted)
    assert live_members(pgid) == []
    assert os.listdir(tmp_path / "ws") == []


def test_interrupted_before_any_stop_still_ends_the_group(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, snail_script_kill_grace=1.0)
    thread, outcome = start_in_thread(settings, f"echo $$ > {tmp_path}/pid\nsleep 600\n", threading.Event())
    pgid = int(wait_for_file(tmp_path / "pid"))
    wait_for_members(pgid, 2)
    assert thread.ident is not None
    _raise_in_thread(thread.ident, TaskInterrupted)
    thread.join(3)
    assert not thread.is_alive() and isinstance(outcome[0], TaskInterrupted)
    assert live_members(pgid) == []
    assert os.listdir(tmp_path / "ws") == []


def test_children_left_after_a_normal_exit_are_ended(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path)
    started = time.monotonic()
    result = run_job(settings, code(f"sleep 600 &\necho $$ > {tmp_path}/pid\necho done\n"))
    assert result.is_success and time.monotonic() - started < 3
    assert live_members(int((tmp_path / "pid").read_text())) == []
    assert ("the script exited and left 1 process(es) running in its group: SIGTERM sent to them; SIGKILL after 5 s",
            logging.WARNING) in remote_lines(caplog)
