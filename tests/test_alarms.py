"""Client-side alarms and the group config: each channel's payload against a
real local HTTP receiver, email against a local SMTP server, the rate
limit, redaction, bad configs, the server's push, and that raising an alarm
never waits for a receiver."""

from __future__ import annotations

import json
import logging
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from snailjob.alarms import Alarms, ClientScene, Identity
from snailjob.alarms.channels import MailSettings, redact_url
from snailjob.config_sync import DEFAULT_DDL_MS, ConfigCache, parse_config

from .conftest import TOKEN, call_inbound, wait_for

JOB_ERR, REPORT_ERR, COMPONENT_ERR = ClientScene.JOB_CLIENT_ERROR, ClientScene.CLIENT_REPORT_ERROR, \
    ClientScene.CLIENT_COMPONENT_ERROR
IDENTITY = Identity("ns-1", "grp-1", "py-0123", "10.0.0.7:17889", secrets=(TOKEN,))


class Receiver:
    """A real HTTP server recording each POST: (path, headers, body bytes)."""

    def __init__(self, answer: bytes = b'{"errcode":0}', status: int = 200) -> None:
        self.answer, self.status = answer, status
        self.requests: List[Tuple[str, Dict[str, str], bytes]] = []
        self.gate: Optional[threading.Event] = None  # when set: each request waits for it
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.gate is not None:
                    receiver.gate.wait(10)
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def json(self, n: int = 0) -> Any:
        return json.loads(self.requests[n][2])

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def config(*recipients: Tuple[int, Dict[str, Any]], job: int = 2, retry: Optional[int] = None,
           version: int = 3, scenes: Any = ()) -> Dict[str, Any]:
    """A ConfigRequest as the server sends it, one notify entry."""
    notify: Dict[str, Any] = {"recipients": [{"notifyType": t, "notifyAttribute": json.dumps(a)}
                                             for t, a in recipients], "notifyThreshold": 0}
    if retry is not None:
        notify["retryNotifyScene"] = retry
    notify["jobNotifyScene"] = job
    return {"sceneList": [{"sceneName": n, "ddl": d} for n, d in scenes], "notifyList": [notify], "version": version}


def alarms_for(data: Dict[str, Any], **kw: Any) -> Tuple[Alarms, ConfigCache]:
    cache = ConfigCache()
    assert cache.update(data, "a test")
    return Alarms(cache, IDENTITY, **kw), cache


# --- channels -------------------------------------------------------------------


def test_webhook_posts_title_and_text_with_its_secret_header(receiver):
    alarms, _ = alarms_for(config((5, {"webhookUrl": receiver.url(), "contentType": 1, "secret": "hook-s3cret"})))
    alarms.raise_alarm(JOB_ERR, f"could not deliver the result of task 7 (token {TOKEN})")
    wait_for(lambda: alarms.sent == 1)
    path, headers, _ = receiver.requests[0]
    body = receiver.json()
    assert path == "/hook" and headers["content-type"].startswith("application/json")
    assert headers["secret"] == "hook-s3cret"
    assert set(body) == {"title", "text"} and "grp-1" in body["title"]
    for fact in ("JOB_CLIENT_ERROR", "ns-1", "grp-1", "py-0123", "10.0.0.7:17889", "result of task 7", "time: "):
        assert fact in body["text"], fact
    assert TOKEN not in body["text"] and "***" in body["text"]
    alarms.close(1)


def test_webhook_form_content_type_still_sends_json(receiver):
    alarms, _ = alarms_for(config((5, {"webhookUrl": receiver.url(), "contentType": 2})))
    alarms.raise_alarm(JOB_ERR, "x")
    wait_for(lambda: alarms.sent == 1)
    _, headers, _ = receiver.requests[0]
    assert headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert "secret" not in headers and set(receiver.json()) == {"title", "text"}


def test_dingtalk_markdown_with_mentions(receiver):
    alarms, _ = alarms_for(config((1, {"webhookUrl": receiver.url("/robot/send?access_token=abc123tok"),
                                       "ats": ["13800000000"]})))
    alarms.raise_alarm(JOB_ERR, "dropped a result")
    wait_for(lambda: alarms.sent == 1)
    path, _, _ = receiver.requests[0]
    body = receiver.json()
    assert path == "/robot/send?access_token=abc123tok"
    assert body["msgtype"] == "markdown" and set(body["markdown"]) == {"title", "text"}
    assert "dropped a result" in body["markdown"]["text"] and "@13800000000" in body["markdown"]["text"]
    assert body["at"] == {"atMobiles": ["13800000000"], "isAtAll": False}


def test_dingtalk_refusal_is_a_failure_logged_without_the_access_token(receiver, caplog):
    receiver.answer = b'{"errcode":310000,"errmsg":"keywords not in content"}'
    alarms, _ = alarms_for(config((1, {"webhookUrl": receiver.url("/robot/send?access_token=abc123tok")})))
    with caplog.at_level(logging.WARNING, logger="snailjob.alarms"):
        alarms.raise_alarm(JOB_ERR, "x")
        wait_for(lambda: alarms.failed == 1)
    assert "310000" in caplog.text and "keywords not in content" in caplog.text
    assert "abc123tok" not in caplog.text and "access_token=***" in caplog.text


def test_wecom_markdown_cut_to_4096_bytes(receiver):
    alarms, _ = alarms_for(config((3, {"webhookUrl": receiver.url("/cgi-bin/webhook/send?key=k-secret"),
                                       "ats": ["zhangsan"]})))
    alarms.raise_alarm(JOB_ERR, "失败" * 3000)  # 18 000 bytes of UTF-8
    wait_for(lambda: alarms.sent == 1)
    body = receiver.json()
    assert body["msgtype"] == "markdown" and set(body["markdown"]) == {"content"}
    content = body["markdown"]["content"]
    assert len(content.encode("utf-8")) <= 4096 and content.startswith("**SnailJob client alarm")


def test_lark_interactive_card(receiver):
    receiver.answer = b'{"code":0,"msg":"success"}'
    alarms, _ = alarms_for(config((4, {"webhookUrl": receiver.url("/open-apis/bot/v2/hook/0f4b7c1e-aaaa-bbbb"),
                                       "ats": ["ou_123"]})))
    alarms.raise_alarm(JOB_ERR, "x")
    wait_for(lambda: alarms.sent == 1)
    card = receiver.json()
    assert card["msg_type"] == "interactive"
    title = card["card"]["header"]["title"]["content"]
    assert card["card"]["header"] == {"template": "red", "title": {"tag": "plain_text", "content": title}}
    assert "grp-1" in card["card"]["header"]["title"]["content"]
    [element] = card["card"]["elements"]
    assert element["tag"] == "markdown" and "<at id=ou_123></at>" in element["content"]


def test_lark_error_code_is_a_failure(receiver):
    receiver.answer = b'{"code":19021,"msg":"sign match fail"}'
    alarms, _ = alarms_for(config((4, {"webhookUrl": receiver.url()})))
    alarms.raise_alarm(JOB_ERR, "x")
    wait_for(lambda: alarms.failed == 1)
    assert alarms.sent == 0


class _Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP: records MAIL FROM, RCPT TO and the DATA of each message."""

    def handle(self) -> None:
        server: Any = self.server
        self.wfile.write(b"220 test ESMTP\r\n")
        mail: Dict[str, Any] = {"rcpt": []}
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line.decode().strip().upper()
            if verb.startswith(("EHLO", "HELO")):
                self.wfile.write(b"250 test\r\n")
            elif verb.startswith("MAIL FROM"):
                mail["from"] = line.decode().strip()[10:]
                self.wfile.write(b"250 ok\r\n")
            elif verb.startswith("RCPT TO"):
                mail["rcpt"].append(line.decode().strip()[8:])
                self.wfile.write(b"250 ok\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go\r\n")
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    data += self.rfile.readline()
                mail["data"] = data.decode()
                server.mails.append(mail)
                mail = {"rcpt": []}
                self.wfile.write(b"250 queued\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_email_goes_to_the_tos_through_the_smtp_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp)
    server.mails = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mail = MailSettings("127.0.0.1", server.server_address[1], sender="alarms@example.com")
        alarms, _ = alarms_for(config((2, {"tos": ["ops@example.com", "dev@example.com"]})), mail=mail)
        alarms.raise_alarm(JOB_ERR, "could not deliver 3 results")
        wait_for(lambda: alarms.sent == 1)
        [sent] = server.mails  # type: ignore[attr-defined]
        assert sent["from"] == "<alarms@example.com>" and sorted(sent["rcpt"]) == ["<dev@example.com>",
                                                                                  "<ops@example.com>"]
        assert "Subject: SnailJob client alarm: job result not delivered [grp-1]" in sent["data"]
        assert "could not deliver 3 results" in sent["data"] and "ns-1" in sent["data"]
    finally:
        server.shutdown()
        server.server_close()


def test_email_without_smtp_settings_fails_with_the_reason():
    alarms, _ = alarms_for(config((2, {"tos": ["ops@example.com"]})))
    [outcome] = alarms.test()
    assert not outcome.ok and "SNAIL_MAIL_HOST" in outcome.error and outcome.target == "ops@example.com"


# --- queue, rate limit, redaction --------------------------------------------------


def test_rate_limit_per_scene_and_recipient_then_the_held_back_are_counted(receiver):
    now = [1000.0]
    data = config((5, {"webhookUrl": receiver.url("/a")}))
    data["notifyList"].append({"recipients": [{"notifyType": 5, "notifyAttribute": json.dumps(
        {"webhookUrl": receiver.url("/b")})}], "retryNotifyScene": 3, "jobNotifyScene": 0})
    alarms, _ = alarms_for(data, rate_limit=2, clock=lambda: now[0])
    for n in range(5):
        alarms.raise_alarm(JOB_ERR, f"failure {n}")
    alarms.raise_alarm(REPORT_ERR, "a retry report")  # another scene and recipient: its own budget
    wait_for(lambda: alarms.sent == 3)
    assert alarms.limited == 3 and alarms.raised == 6
    assert sorted(p for p, _, _ in receiver.requests) == ["/a", "/a", "/b"]
    now[0] += 61
    alarms.raise_alarm(JOB_ERR, "failure 5")
    wait_for(lambda: alarms.sent == 4)
    last = json.loads(receiver.requests[-1][2])["text"]
    assert "failure 5" in last and "3 more alarm(s) of this scene held back" in last
    assert alarms.stats()["alarms_rate_limited"] == 3


def test_raising_never_waits_for_a_receiver_and_counts_what_the_full_queue_drops(receiver):
    receiver.gate = threading.Event()  # the receiver hangs until the test lets it go
    alarms, _ = alarms_for(config((5, {"webhookUrl": receiver.url()})), rate_limit=0, queue_max=3, timeout=20)
    for n in range(50):
        alarms.raise_alarm(JOB_ERR, f"failure {n}")
    assert not receiver.gate.is_set()  # every raise returned while the first message still hangs
    assert alarms.raised == 50 and alarms.dropped == 50 - 1 - 3  # one in the sender, three queued
    receiver.gate.set()
    wait_for(lambda: alarms.sent == 4, timeout=10)


def test_no_recipients_no_alarm_and_the_off_switch(receiver):
    alarms, _ = alarms_for(config((5, {"webhookUrl": receiver.url()})), enabled=False)
    alarms.raise_alarm(JOB_ERR, "x")
    alarms2, _ = alarms_for(config((5, {"webhookUrl": receiver.url()})))
    alarms2.raise_alarm(COMPONENT_ERR, "no recipient for this scene")
    assert alarms.raised == alarms2.raised == 0 and receiver.requests == []


@pytest.mark.parametrize("url, shown", [
    ("https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef",
     "https://oapi.dingtalk.com/robot/send?access_token=***"),
    ("https://open.feishu.cn/open-apis/bot/v2/hook/0f4b7c1e-1111-2222-3333-444455556666",
     "https://open.feishu.cn/open-apis/bot/v2/hook/***"),
    ("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***"),
    ("http://user:pass@127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
    ("not a url", "<not a URL>"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_an_unreachable_receiver_is_logged_redacted(caplog):
    alarms, _ = alarms_for(config((3, {"webhookUrl": "http://127.0.0.1:9/cgi-bin/webhook/send?key=wecom-key-1"})),
                           timeout=2)
    with caplog.at_level(logging.WARNING, logger="snailjob.alarms"):
        alarms.raise_alarm(JOB_ERR, "x")
        wait_for(lambda: alarms.failed == 1)
    assert "WeCom" in caplog.text and "key=***" in caplog.text and "wecom-key-1" not in caplog.text


# --- the group config -----------------------------------------------------------------


def test_scene_numbers_and_ddl():
    data = config((5, {"webhookUrl": "http://h/a"}), scenes=[("orders", 5000)])
    data["notifyList"] += [
        {"recipients": [{"notifyType": 5, "notifyAttribute": '{"webhookUrl":"http://h/b"}'}], "retryNotifyScene": 3,
         "jobNotifyScene": 0},
        {"recipients": [{"notifyType": 5, "notifyAttribute": '{"webhookUrl":"http://h/c"}'}], "retryNotifyScene": 4,
         "jobNotifyScene": 0},
        {"recipients": [{"notifyType": 5, "notifyAttribute": '{"webhookUrl":"http://h/d"}'}], "jobNotifyScene": 0},
    ]
    parsed = parse_config(data)
    assert parsed.version == 3
    assert {s: [json.loads(r.attribute)["webhookUrl"][-1] for r in rs] for s, rs in parsed.recipients.items()} == {
        JOB_ERR: ["a"], REPORT_ERR: ["b"], COMPONENT_ERR: ["c"]}
    cache = ConfigCache()
    assert cache.scene_ddl("orders") == DEFAULT_DDL_MS == 60_000
    cache.update(data, "a test")
    assert cache.scene_ddl("orders") == 5000 and cache.scene_ddl("other") == DEFAULT_DDL_MS


@pytest.mark.parametrize("bad, problem", [
    ([], "expected a JSON object, got list"),
    ({"version": "three"}, "version"),
    ({"notifyList": {"recipients": []}}, "notifyList"),
    ({"sceneList": [{"ddl": 5}]}, "sceneName"),
    ({"notifyList": [{"recipients": [{"notifyType": "x"}]}]}, "notifyType"),
])
def test_a_bad_config_is_logged_and_the_old_one_kept(bad, problem, caplog):
    cache = ConfigCache()
    assert cache.update(config((5, {"webhookUrl": "http://h/a"}), version=7), "a test")
    with caplog.at_level(logging.WARNING, logger="snailjob.config_sync"):
        assert not cache.update(bad, "the server's reply")
    assert problem in caplog.text and "keeping version 7" in caplog.text
    assert cache.version == 7 and cache.recipients(JOB_ERR) and cache.rejected == 1


def test_the_server_push_is_taken_and_a_bad_one_ignored(make_client):
    client, _ = make_client()
    pushed = config((5, {"webhookUrl": "http://h/a", "secret": "p"}), version=9, scenes=[("s1", 1234)])
    reply = call_inbound(client.host_port, "/sync/version", json.dumps([pushed]))
    assert reply.status == 1
    assert client.config.version == 9 and client.scene_ddl("s1") == 1234
    reply = call_inbound(client.host_port, "/sync/version", json.dumps([{"sceneList": "nope"}]))
    assert reply.status == 1 and "config ignored" in reply.message  # the server only logs the answer
    reply = call_inbound(client.host_port, "/sync/version", "[7]")
    assert reply.status == 1 and "object" in reply.message
    assert client.config.version == 9 and client.stats()["config_rejected"] == 2


def test_the_node_pulls_after_connecting(make_client):
    from snailjob.transport import Reply

    client, transport = make_client(snail_config_sync_interval=0.2)
    answer = config((5, {"webhookUrl": "http://h/a"}), version=4)
    transport.responder = lambda uri, body: (Reply(1, "", answer) if uri == "/sync/version"
                                             else Reply(1, "", "PONG" if uri == "/beat" else True))
    wait_for(lambda: client.config.version == 4)
    assert transport.bodies("/sync/version")[0] == []  # the Java client's args-less call, as an empty array


# --- with the server emulator --------------------------------------------------------


def test_a_result_the_node_cannot_deliver_raises_an_alarm(receiver):
    """The emulator answers /sync/version with a webhook for JOB_CLIENT_ERROR;
    the server goes away while a job runs, and its result cannot be delivered."""
    import snailjob as sj
    from snailjob.testing import ServerEmulator

    from .conftest import client_for

    started, release = threading.Event(), threading.Event()

    @sj.job("slowJob")
    def slow(args: Any) -> str:
        started.set()
        release.wait(10)
        return "done"

    with ServerEmulator() as emu:
        emu.config = config((5, {"webhookUrl": receiver.url(), "secret": "e2e-secret"}), version=2)
        client = client_for(emu, [slow]).start()
        try:
            wait_for(lambda: client.config.version == 2, timeout=10, what="the config pull")
            emu.wait_for_clients(1)
            batch = emu.trigger("slowJob", executor_timeout=60)
            assert started.wait(10)
            emu.stop()
            release.set()
            wait_for(lambda: receiver.requests, timeout=15, what="the alarm")
            body = receiver.json()
            assert receiver.requests[0][1]["secret"] == "e2e-secret"
            assert "JOB_CLIENT_ERROR" in body["text"] and f"batches {batch.id}" in body["text"]
            assert client.host_id in body["text"] and emu.token not in body["text"]
            wait_for(lambda: client.stats()["alarms_sent"] >= 1)
        finally:
            release.set()
            client.stop(grace=0)


def test_send_test_alarm_reports_each_recipient(make_client, receiver):
    from snailjob.transport import Reply

    broken = Receiver(status=500)
    try:
        client, transport = make_client()
        answer = config((5, {"webhookUrl": receiver.url(), "secret": "s"}), (5, {"webhookUrl": broken.url("/x")}))
        transport.responder = lambda uri, body: (Reply(1, "", answer) if uri == "/sync/version"
                                                 else Reply(1, "", "PONG" if uri == "/beat" else True))
        results = client.send_test_alarm()
        assert [(r.scene, r.channel, r.ok) for r in results] == [("JOB_CLIENT_ERROR", "webhook", True),
                                                                 ("JOB_CLIENT_ERROR", "webhook", False)]
        assert "HTTP 500" in results[1].error and results[1].target == broken.url("/x")
        assert "test alarm" in receiver.json()["text"]
    finally:
        broken.close()


def test_cli_alarm_test_reports_each_recipient(snailjob_emulator, receiver):
    import subprocess

    from .test_cli import command, emu_env

    emu = snailjob_emulator
    broken = Receiver(status=404)
    try:
        emu.config = config((5, {"webhookUrl": receiver.url("/ok"), "secret": "cli-secret"}),
                            (1, {"webhookUrl": broken.url("/robot/send?access_token=cli-ding-token")}), version=5)
        done = subprocess.run(command("alarm-test", "--timeout", "10"), env=emu_env(emu), capture_output=True,
                              text=True, timeout=60)
        lines = done.stdout.splitlines()
        assert done.returncode == 1, done.stdout + done.stderr
        assert lines[0].startswith("group config version 5 of group ")
        assert lines[1] == f"ok    JOB_CLIENT_ERROR via webhook to {receiver.url('/ok')}"
        assert lines[2].startswith("FAIL  JOB_CLIENT_ERROR via DingTalk to ") and "HTTP 404" in lines[2]
        assert "access_token=***" in lines[2]
        assert "cli-ding-token" not in done.stdout + done.stderr and emu.token not in done.stdout + done.stderr
        assert receiver.requests[0][1]["secret"] == "cli-secret" and "test alarm" in receiver.json()["text"]
        emu.config = config(version=6)
        done = subprocess.run(command("alarm-test", "--timeout", "10"), env=emu_env(emu), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1 and "FAIL  no notify recipient for a client scene" in done.stdout
    finally:
        broken.close()


def test_golden_config_reply_of_the_real_server():
    import pathlib

    data = json.loads((pathlib.Path(__file__).parent / "golden" / "config_request.json").read_text())["reply"]
    parsed = parse_config(data)
    assert parsed.version == 4 and parsed.ddl == {"orders": 60000, "payments": 1500}
    assert set(parsed.recipients) == {JOB_ERR, REPORT_ERR}
    [job] = parsed.recipients[JOB_ERR]
    assert job.notify_type == 5 and json.loads(job.attribute)["webhookUrl"] == "http://127.0.0.1:9/client"
    [report] = parsed.recipients[REPORT_ERR]
    assert report.notify_type == 1 and parsed.thresholds[REPORT_ERR] == 3
    assert "py-e2e" not in parsed.describe() and "access_token" not in parsed.describe()


# --- the other client scenes, end to end in one node ------------------------------------


def _serve(answer: Dict[str, Any], **special: Any) -> Any:
    """A responder: the group config, ``special[uri]`` (a Reply or an exception), else success."""
    from snailjob.transport import Reply

    def respond(uri: str, body: Any) -> Any:
        if uri == "/sync/version":
            return Reply(1, "", answer)
        if uri in special:
            outcome = special[uri]
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return Reply(1, "", "PONG" if uri == "/beat" else True)

    return respond


def _retry_report() -> Any:
    from snailjob.wire.models import RetryTaskRequest

    return RetryTaskRequest(groupName="g", sceneName="orders", idempotentId="id-1", executorName="charge",
                            argsStr="[]", serializerName="jackson")


def test_retry_reports_the_server_refuses_or_cannot_take_raise_client_report_error(make_client, receiver):
    from snailjob.errors import TransportError
    from snailjob.transport import Reply

    client, transport = make_client(snail_retry_report_interval=0.05)
    answer = config((5, {"webhookUrl": receiver.url("/report")}), job=0, retry=3)
    transport.responder = _serve(answer, **{"/batch/report": Reply(1, "scene orders is closed", False)})
    assert client.sync_config()
    client._reports.queue_retry_report(_retry_report())
    wait_for(lambda: client.stats()["alarms_sent"] == 1, timeout=10)
    text = receiver.json()["text"]
    assert "CLIENT_REPORT_ERROR" in text and "scene orders is closed" in text and "id-1" in text
    transport.responder = _serve(answer, **{"/batch/report": TransportError("UNAVAILABLE: down",
                                                                           code="UNAVAILABLE")})
    client._reports.queue_retry_report(_retry_report())
    wait_for(lambda: client.stats()["alarms_sent"] == 2, timeout=15)
    assert "could not be sent (3 attempts): UNAVAILABLE: down; kept and tried again" in receiver.json(1)["text"]


def test_an_internal_error_answering_the_server_raises_client_component_error(make_client, receiver):
    client, transport = make_client()
    transport.responder = _serve(config((5, {"webhookUrl": receiver.url("/component")}), job=0, retry=4))
    assert client.sync_config()

    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    client._router.handle = broken  # type: ignore[union-attr, method-assign]
    reply = call_inbound(client.host_port, "/job/stop/v1", "[]")
    assert reply.status == 0  # the inbound server answers the failure
    wait_for(lambda: client.stats()["alarms_sent"] == 1, timeout=10)
    text = receiver.json()["text"]
    assert "CLIENT_COMPONENT_ERROR" in text and "'/job/stop/v1': RuntimeError" in text


def test_a_map_report_the_server_refuses_raises_job_client_error(make_client, receiver):
    import snailjob as sj
    from snailjob.transport import Reply

    root = sj.MapExecutor("mapJob")
    root.map()(lambda args: sj.mr_do_map([1, 2], "NEXT"))

    from .conftest import dispatch, dispatch_body

    client, transport = make_client([root])
    transport.responder = _serve(config((5, {"webhookUrl": receiver.url("/map")})),
                                 **{"/batch/report/job/map/task/v1": Reply(0, "Job config not existed", False)})
    assert client.sync_config()
    dispatch(client.host_port, dispatch_body("mapJob", task_type=4, taskName="ROOT_MAP"))
    wait_for(lambda: client.stats()["alarms_sent"] == 1, timeout=10)
    text = receiver.json()["text"]
    assert "JOB_CLIENT_ERROR" in text and "refused 2 sub-task(s) of 'NEXT'" in text and "Job config not existed" in text


def test_alarm_counters_are_metrics(make_client, receiver):
    pytest.importorskip("prometheus_client")
    from snailjob.ops.metrics import Metrics

    client, transport = make_client()
    transport.responder = _serve(config((5, {"webhookUrl": receiver.url()})))
    assert client.sync_config()
    client.raise_alarm(JOB_ERR, "x")
    wait_for(lambda: client.stats()["alarms_sent"] == 1)
    text = Metrics(client).render()[0].decode()
    assert "snailjob_alarms_sent_total 1.0" in text and "snailjob_alarms_dropped_total 0.0" in text


def test_the_emulator_pushes_its_config(snailjob_emulator, run_client):
    emu = snailjob_emulator
    client = run_client([])
    emu.wait_for_clients(1)
    emu.config = config((5, {"webhookUrl": "http://h/a"}), version=11, scenes=[("pay", 2500)])
    status, _, _ = emu.push_config()
    assert status == 1 and client.config.version == 11 and client.scene_ddl("pay") == 2500
