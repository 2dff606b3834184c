"""snailjob.builtin.http: the console's built-in HTTP executor, against a
local HTTP server of the test's own, called inside a real task context."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from snailjob import context as task_context
from snailjob.args import build_args
from snailjob.builtin import http as http_module
from snailjob.builtin.http import RESULT_CAP, http_job
from snailjob.context import TaskContext
from snailjob.wire.models import DispatchJobRequest, ExecuteResult
from snailjob.work import run_function

from .conftest import dispatch_body, test_settings

Answer = Tuple[int, Dict[str, str], bytes]


@dataclass
class Seen:
    method: str
    path: str
    headers: Any  # email.message.Message: case-insensitive get()
    body: bytes


@dataclass
class Server:
    """What the test server saw, and how it answers (``None``: never)."""

    port: int = 0
    seen: List[Seen] = field(default_factory=list)
    answer: Optional[Callable[[Seen], Answer]] = None
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, status: int = 200, body: str = "ok", **headers: str) -> None:
        self.answer = lambda seen: (status, headers, body.encode("utf-8"))


def _handler(state: Server) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(self.command, self.path, self.headers, self.rfile.read(length))
            state.seen.append(seen)
            if state.answer is None:
                state.release.wait(10)
                self.close_connection = True
                return
            status, headers, body = state.answer(seen)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_one

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _serve(tls: Optional[ssl.SSLContext] = None) -> Iterator[Server]:
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    state.reply()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    yield from _serve()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (cert file, key file)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_server(certificate: Tuple[str, str]) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    yield from _serve(context)


def run(form: Any, wf: Optional[Dict[str, Any]] = None, changes: Optional[Dict[str, Any]] = None,
        stop: Optional[threading.Event] = None, **settings: Any) -> ExecuteResult:
    """Run the executor on ``form`` in a task context, as the dispatcher does."""
    args_str = json.dumps({"jobParams": form if isinstance(form, str) or form is None else json.dumps(form)})
    fields: Dict[str, Any] = {"argsStr": args_str}
    if wf is not None:
        fields["wfContext"] = json.dumps(wf)
    request = DispatchJobRequest.model_validate(dispatch_body("snailJobHttpExecutor", **fields))
    args = build_args(request).args
    for key, value in (changes or {}).items():
        args.append_context(key, value)
    token = task_context.enter(TaskContext(request, args, stop or threading.Event(), None))  # type: ignore[arg-type]
    try:
        result = http_job(test_settings(**settings))(args)
    finally:
        task_context.leave(token)
    assert isinstance(result, ExecuteResult)
    return result


def form(server: Server, **fields: Any) -> Dict[str, Any]:
    """The console's default form, aimed at the test server."""
    values: Dict[str, Any] = {"method": "POST", "url": server.url + "/hook", "headers": {}, "body": "",
                              "mediaType": "application/json", "timeout": 60}
    values.update(fields)
    return values


def failed(result: ExecuteResult, *words: str) -> str:
    assert not result.is_success, result
    for word in words:
        assert word in result.message, (word, result.message)
    return result.message


# --- methods, bodies, URLs ---

@pytest.mark.parametrize("method", ["POST", "put", "Delete"])
def test_post_put_delete_are_sent_with_their_body(server: Server, method: str) -> None:
    result = run(form(server, method=method, body='{"a": 1}'))
    assert result.is_success and result.result == "ok"
    seen = server.seen[-1]
    assert (seen.method, seen.path, seen.body) == (method.upper(), "/hook", b'{"a": 1}')
    assert seen.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("method", ["GET", "PATCH", "head", "OPTIONS", None, ""])
def test_other_methods_are_sent_as_get_without_a_body(server: Server, method: Optional[str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    fields = {"method": method} if method is not None else {}
    body = form(server, body='{"a": 1}', **fields)
    if method is None:
        del body["method"]
    with caplog.at_level(logging.INFO, logger="snailjob.remote"):
        assert run(body).is_success
    seen = server.seen[-1]
    assert (seen.method, seen.body, seen.headers["Content-Type"], seen.headers["Content-Length"]) == (
        "GET", b"", None, None)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if method and method.upper() != "GET":
        assert len(warnings) == 1 and f"{method.upper()} is sent as GET" in warnings[0]
    else:
        assert warnings == []


@pytest.mark.parametrize("body", ["", "   ", None])
def test_a_blank_body_is_sent_as_empty_json_object(server: Server, body: Optional[str]) -> None:
    assert run(form(server, body=body, mediaType="")).is_success
    assert server.seen[-1].body == b"{}" and server.seen[-1].headers["Content-Type"] == "application/json"


def test_url_without_scheme_gets_http_and_any_case_is_accepted(server: Server) -> None:
    assert run(form(server, url=f"127.0.0.1:{server.port}/a?b=1")).is_success
    assert run(form(server, url=f"HTTP://127.0.0.1:{server.port}/c")).is_success
    assert run(form(server, url=f"  127.0.0.1:{server.port}  ")).is_success
    assert [s.path for s in server.seen] == ["/a?b=1", "/c", "/"]


def test_spaces_and_non_ascii_in_the_url_are_percent_encoded(server: Server) -> None:
    assert run(form(server, url=server.url + "/a b/é?q=中 x%20y")).is_success
    assert server.seen[-1].path == "/a%20b/%C3%A9?q=%E4%B8%AD%20x%20y"


@pytest.mark.parametrize("url, word", [
    ("file:///etc/passwd", "file:"), ("ftp://example.com/x", "ftp:"), ("javascript:alert(1)", "javascript:"),
    ("http://", "no host"), ("127.0.0.1:99999/x", "invalid port"), ("http://u:p@127.0.0.1/", "credentials"),
    ("http://127.0.0.1/a\r\nX: y", "control characters"),
])
def test_unusable_urls_fail_naming_the_problem(server: Server, url: str, word: str) -> None:
    failed(run(form(server, url=url)), "url", word)
    assert server.seen == []


def test_https_to_a_plain_http_port_is_a_clean_failure(server: Server) -> None:
    failed(run(form(server, url=f"https://127.0.0.1:{server.port}/", timeout=2)), "POST https://", "SSLError")


def test_https_certificates_are_verified(tls_server: Server) -> None:
    url = f"https://127.0.0.1:{tls_server.port}/secure"
    failed(run(form(tls_server, url=url, timeout=5)), f"POST {url} failed", "CERTIFICATE_VERIFY_FAILED")
    assert tls_server.seen == []


def _trust(monkeypatch: pytest.MonkeyPatch, cert: str) -> None:
    make = ssl.create_default_context
    monkeypatch.setattr(http_module.ssl, "create_default_context", lambda: make(cafile=cert))


def test_https_with_a_trusted_certificate(tls_server: Server, certificate: Tuple[str, str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _trust(monkeypatch, certificate[0])
    result = run(form(tls_server, url=f"HTTPS://127.0.0.1:{tls_server.port}/secure", body="x"))
    assert result.is_success and result.result == "ok"
    assert (tls_server.seen[-1].path, tls_server.seen[-1].body) == ("/secure", b"x")


def test_a_stop_ends_an_https_call_too(tls_server: Server, certificate: Tuple[str, str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _trust(monkeypatch, certificate[0])
    tls_server.answer = None
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    result = run(form(tls_server, url=f"https://127.0.0.1:{tls_server.port}/", timeout=30), stop=stop)
    timer.join()
    assert "stopped" in failed(result) and time.monotonic() - started < 1.0
    assert len(tls_server.seen) == 1 and _helpers() == []


def test_connection_refused_is_a_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message = failed(run({"url": f"127.0.0.1:{port}/x", "timeout": 2}), f"GET http://127.0.0.1:{port}/x")
    assert "ConnectionRefusedError" in message


# --- Content-Type ---

@pytest.mark.parametrize("media_type, body, user, expected", [
    ("text/plain", '{"a": 1}', None, "text/plain"),
    ("", '{"a": 1}', None, "application/json"),
    ("", "[1, 2]", None, "application/json"),
    ("", "a=1&b=2", None, None),
    ("", '{"a": 1} trailing', None, None),
    ("", '{"a": 1}', "application/vnd.x+json", "application/vnd.x+json"),
    ("text/xml", "<a/>", "application/json", "text/xml"),
])
def test_content_type(server: Server, media_type: str, body: str, user: Optional[str],
                      expected: Optional[str]) -> None:
    headers = {"content-type": user} if user else {}
    assert run(form(server, mediaType=media_type, body=body, headers=headers)).is_success
    assert server.seen[-1].headers.get_all("Content-Type") == ([expected] if expected else None)
    assert server.seen[-1].body == body.encode()


# --- headers ---

def test_workflow_context_entries_become_headers(server: Server) -> None:
    wf = {"plain": "text", "number": 12, "real": 1.5, "flag": True, "none": None, "object": {"k": "v", "n": [1, 2]},
          "chinese": "订单 42", "rare": "\u9fa6", "accent": "café", "X-User": "from context"}
    user = {"x-user": "from form", "X-Other": "kept", "X-Number": 7}
    assert run(form(server, headers=user), wf=wf, changes={"number": 13, "added": "by the task"}).is_success
    headers = server.seen[-1].headers
    assert headers["plain"] == "text" and headers["number"] == "13" and headers["real"] == "1.5"
    assert headers["flag"] == "true" and headers["none"] == "null" and headers["added"] == "by the task"
    assert headers["object"] == '{"k":"v","n":[1,2]}'
    assert headers["chinese"] == base64.b64encode("订单 42".encode()).decode()
    assert base64.b64decode(headers["rare"]).decode() == "\u9fa6"  # outside Java's range, inside ours
    assert headers["accent"] == "café"  # sent as ISO-8859-1 bytes
    assert headers.get_all("X-User") == ["from context"] and headers["X-Other"] == "kept"
    assert headers["X-Number"] == "7"


def test_cjk_inside_an_object_value_encodes_the_whole_json(server: Server) -> None:
    assert run(form(server), wf={"obj": {"name": "张三"}}).is_success
    assert base64.b64decode(server.seen[-1].headers["obj"]).decode() == '{"name":"张三"}'


@pytest.mark.parametrize("headers, wf, words", [
    ({"a b": "x"}, None, ["header 'a b'", "name"]),
    ({"X-A": "one\r\nX-Injected: 1"}, None, ["header 'X-A'", "control"]),
    ({"X-A": "한국어"}, None, ["header 'X-A'", "ISO-8859-1"]),
    ({"X-A": {"nested": 1}}, None, ["header 'X-A'", "object"]),
    ({"X-A": None}, None, ["header 'X-A'", "null"]),
    (["X-A"], None, ["headers", "array"]),
    ("X-A: 1", None, ["headers", "string"]),
    ({}, {"line": "a\nb"}, ["workflow-context header 'line'", "control"]),
    ({}, {"kana": "カタカナ"}, ["workflow-context header 'kana'", "ISO-8859-1"]),
    ({}, {"bad name": "x"}, ["workflow-context header 'bad name'", "name"]),
])
def test_unsendable_headers_fail_naming_the_header(server: Server, headers: Any, wf: Optional[Dict[str, Any]],
                                                   words: List[str]) -> None:
    failed(run(form(server, headers=headers), wf=wf), *words)
    assert server.seen == []


def test_a_bad_media_type_fails(server: Server) -> None:
    failed(run(form(server, mediaType="text/plain\r\nX: 1")), "mediaType", "control")


# --- bad forms ---

@pytest.mark.parametrize("params, words", [
    (None, ["jobParams is empty"]), ("", ["jobParams is empty"]), ("   ", ["jobParams is empty"]),
    ("{not json", ["jobParams is not valid JSON"]), ("[1, 2]", ["JSON array, not an object"]),
    ('"http://x"', ["JSON string, not an object"]), ("{}", ["url is empty"]), ('{"url": "  "}', ["url is empty"]),
    ('{"url": 5}', ["url must be a JSON string", "number"]),
    ('{"url": "x", "body": {"a": 1}}', ["body must be a JSON string", "object"]),
    ('{"url": "x", "method": 1}', ["method must be a JSON string"]),
    ('{"url": "x", "mediaType": []}', ["mediaType must be a JSON string"]),
    ('{"url": "x", "timeout": "soon"}', ["timeout must be a number", "soon"]),
    ('{"url": "x", "timeout": true}', ["timeout must be a number", "boolean"]),
    ('{"url": "x", "timeout": [1]}', ["timeout must be a number", "array"]),
    ('{"url": "x", "timeout": 1e300}', ["timeout must be at most 86400 seconds"]),
])
def test_bad_forms_fail_naming_the_problem(params: Optional[str], words: List[str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="snailjob.remote"):
        message = failed(run(params), "snailJobHttpExecutor", *words)
    assert [r.getMessage() for r in caplog.records] == [f"[snail-job] {message}"]


def test_a_dict_form_is_accepted_too(server: Server) -> None:
    request = DispatchJobRequest.model_validate(dispatch_body("snailJobHttpExecutor"))
    args = build_args(request).args
    args.job_params = {"url": server.url + "/dict"}
    assert http_job(test_settings())(args).is_success
    assert server.seen[-1].path == "/dict"


def test_runs_through_run_function_outside_a_task_context(server: Server) -> None:
    """The annotation does not make the client decode ``job_params``; no
    task context: no stop event, still a call."""
    request = DispatchJobRequest.model_validate(dispatch_body(
        "snailJobHttpExecutor", argsStr=json.dumps({"jobParams": json.dumps({"url": server.url})}),
        wfContext='{"k": "v"}'))
    result = run_function(http_job(test_settings()), build_args(request).args)
    assert result.is_success and server.seen[-1].headers["k"] == "v"


# --- timeout, stop, logs ---

@pytest.mark.parametrize("timeout, shown", [(None, "60"), (0, "60"), (-5, "60"), (30, "30"), ("2.5", "2.5")])
def test_the_log_lines_name_method_url_and_timeout_in_seconds(server: Server, timeout: Any, shown: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="snailjob.remote"):
        assert run(form(server, timeout=timeout)).is_success
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"[snail-job] HTTP request: POST {server.url}/hook, timeout {shown} s"
    assert lines[1].startswith(f"[snail-job] HTTP 200 OK from POST {server.url}/hook in ") and lines[1].endswith(" s")
    assert len(lines) == 2


def test_a_server_that_never_answers_fails_at_the_timeout(server: Server) -> None:
    server.answer = None
    started = time.monotonic()
    message = failed(run(form(server, timeout=1)), "POST http://", "no answer within the timeout")
    assert 0.9 < time.monotonic() - started < 3, message


def _helpers() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "snailjob-http-stop"]


def test_a_stop_ends_the_call_promptly_and_leaves_no_thread(server: Server) -> None:
    server.answer = None
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    result = run(form(server, timeout=30), stop=stop)
    elapsed = time.monotonic() - started
    timer.join()
    assert not result.is_success and "stopped" in result.message
    assert 0.25 < elapsed < 1.0, elapsed
    assert len(server.seen) == 1 and _helpers() == []


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose connects hang: a listener that never accepts, its queue full."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler = [socket.socket() for _ in range(4)]
        for sock in filler:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        time.sleep(0.1)
        with socket.socket() as probe:
            probe.settimeout(0.3)
            try:
                probe.connect(("127.0.0.1", port))
                hangs = False
            except OSError:
                hangs = True
        try:
            if not hangs:
                pytest.skip("this system does not leave a connect to a full queue pending")
            yield port
        finally:
            for sock in filler:
                sock.close()


def test_a_connect_that_hangs_fails_at_the_timeout(unanswered_port: int) -> None:
    started = time.monotonic()
    failed(run({"url": f"127.0.0.1:{unanswered_port}", "timeout": 1}), "no connection within 1 s")
    assert 0.9 < time.monotonic() - started < 2 and _helpers() == []


def test_a_stop_ends_a_hanging_connect(unanswered_port: int) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    assert "stopped" in failed(run({"url": f"127.0.0.1:{unanswered_port}", "timeout": 30}, stop=stop))
    timer.join()
    assert time.monotonic() - started < 1.0 and _helpers() == []


def test_a_task_stopped_before_the_call_sends_nothing(server: Server) -> None:
    stop = threading.Event()
    stop.set()
    assert "stopped" in failed(run(form(server), stop=stop))
    assert server.seen == [] and _helpers() == []


def test_no_thread_is_left_after_a_normal_call(server: Server) -> None:
    assert run(form(server)).is_success and _helpers() == []


# --- status and result ---

@pytest.mark.parametrize("status", [201, 204, 404, 500])
def test_only_status_200_succeeds(server: Server, status: int, caplog: pytest.LogCaptureFixture) -> None:
    server.reply(status, "" if status == 204 else "nope " * 1000)
    with caplog.at_level(logging.INFO, logger="snailjob.remote"):
        result = run(form(server))
    message = failed(result, f"HTTP {status} ", f"from POST {server.url}/hook")
    assert result.result["status"] == status and result.result["message"] == message
    assert len(result.result["body"].encode()) < 2200 and (status == 204 or "cut" in result.result["body"])
    assert caplog.records[-1].levelno == logging.WARNING and f"HTTP {status}" in caplog.records[-1].getMessage()


def test_redirects_are_not_followed(server: Server) -> None:
    server.reply(302, "", Location="/elsewhere")
    result = run(form(server, method="GET"))
    failed(result, "HTTP 302", "redirects are not followed")
    assert result.result["location"] == "/elsewhere" and [s.path for s in server.seen] == ["/hook"]


def test_the_result_is_the_body_cut_at_64_kib(server: Server) -> None:
    server.reply(200, "é" * RESULT_CAP)  # 2 bytes each
    result = run(form(server))
    assert result.is_success and result.result.startswith("é" * (RESULT_CAP // 2) + "\n[cut: the first 65536 of")
    assert "131072 bytes]" in result.result
    server.reply(200, "x" * RESULT_CAP)
    assert run(form(server)).result == "x" * RESULT_CAP


def test_the_body_is_decoded_with_the_response_charset(server: Server) -> None:
    server.answer = lambda seen: (200, {"Content-Type": "text/plain; charset=iso-8859-1"}, "café".encode("latin-1"))
    assert run(form(server)).result == "café"


# --- the configured response check ---

@pytest.mark.parametrize("body, ok, word", [
    ('{"code": 200, "data": 1}', True, ""),
    ('{"code": 500}', False, "'code' is 500, not 200"),
    ('{"code": "200"}', False, "'code' is \"200\", not 200"),
    ('{"code": 200.0}', False, "is 200.0, not 200"),
    ('{"code": true}', False, "is true"),
    ('{"status": 200}', False, "no field 'code'"),
    ("[200]", False, "JSON array, not an object"),
    ("200 OK", False, "not JSON"),
])
def test_json_response_check(server: Server, body: str, ok: bool, word: str) -> None:
    server.reply(200, body)
    result = run(form(server), snail_http_response_code=200)
    if ok:
        assert result.is_success and result.result == body
    else:
        failed(result, word, f"(HTTP 200 from POST {server.url}/hook)")
        assert result.result["status"] == 200 and result.result["body"] == body


def test_json_response_check_with_another_field_and_code(server: Server) -> None:
    server.reply(200, '{"code": 200, "errno": 0}')
    assert run(form(server), snail_http_response_code=0, snail_http_response_field="errno").is_success
    failed(run(form(server), snail_http_response_code=200, snail_http_response_field="errno"), "'errno' is 0")


@pytest.mark.parametrize("body, ok", [("200", True), (" 200\n", True), ("201", False), ("", False),
                                      ('{"code": 200}', False)])
def test_text_response_check(server: Server, body: str, ok: bool) -> None:
    server.reply(200, body)
    result = run(form(server), snail_http_response_code=200, snail_http_response_type="text")
    assert result.is_success is ok
    if not ok:
        failed(result, "the response body is not 200")


def test_without_a_configured_code_any_200_body_succeeds(server: Server) -> None:
    server.reply(200, '{"code": 500}')
    assert run(form(server)).is_success
