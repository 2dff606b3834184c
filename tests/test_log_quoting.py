"""Text from the network never reaches a log line (or a message that is
logged) raw: a newline or an ANSI escape in it cannot forge or colour a log
line.  Fed through the retry endpoint over real gRPC, the OpenAPI client
against a fake server, job-argument conversion and ``snailjob check``."""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List

import pytest
from pydantic import BaseModel, field_validator

import snailjob as sj
from snailjob.args import ParamsError, convert
from snailjob.cli.check import Report
from snailjob.openapi import OpenApiHTTPError, OpenApiServerError
from snailjob.openapi.fake import FakeOpenApiServer

from .conftest import call_inbound

EVIL = "FORGED\n\x1b[31mLINE"
QUOTED = "FORGED\\n\\x1b[31mLINE"  # how repr() shows it


class Item(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def echo(cls, value: str) -> str:
        raise ValueError(f"bad name {value}")  # a user's validator that repeats its input


@sj.retryable("quoting")
def keyed(counts: Dict[str, int]) -> None: ...


@sj.retryable("quoting2")
def modelled(item: Item) -> None: ...


@sj.retryable("quoting3", idempotent_id=lambda name: {}[name])
def failing_id(name: str) -> None: ...


def raw_lines(records: List[logging.LogRecord]) -> List[str]:
    """Formatted messages holding the input's newline or escape raw."""
    bad = []
    for record in records:
        text = record.getMessage()
        if "\x1b" in text or "FORGED\n" in text:
            bad.append(text)
    return bad


def quoted_lines(records: List[logging.LogRecord]) -> List[str]:
    return [r.getMessage() for r in records if QUOTED in r.getMessage()]


def test_retry_endpoint_quotes_network_text(make_client, caplog):
    client, _ = make_client([keyed, modelled, failing_id])
    caplog.set_level(logging.DEBUG, logger="snailjob")
    port = client.host_port

    def retry_body(scene: str, executor: str, args_str: str, **extra: Any) -> Dict[str, Any]:
        body = {"namespaceId": "n", "groupName": "g", "sceneName": scene, "executorName": executor,
                "argsStr": args_str, "retryCount": 1, "retryStatus": 1, "retryTaskId": 5, "retryId": 5,
                "executorTimeout": 5, "serializerName": "jackson"}
        body.update(extra)
        return body

    def console_body(scene: str, executor: str, args_str: str, **extra: Any) -> Dict[str, Any]:
        body = {"group": "g", "scene": scene, "executorName": executor, "argsStr": args_str,
                "serializerName": "jackson", "namespaceId": "n"}
        body.update(extra)
        return body

    keys = json.dumps([{EVIL: "not a number"}])
    item = json.dumps([{"name": EVIL}])
    calls = []
    for uri in ("/retry/dispatch/v1", "/retry/callback/v1"):
        calls += [(uri, retry_body(EVIL, keyed.executor_name, "[]")),            # unknown scene
                  (uri, retry_body("quoting", EVIL, "[]")),                      # unknown executor
                  (uri, retry_body("quoting", keyed.executor_name, "[]", serializerName=EVIL)),
                  (uri, retry_body("quoting", keyed.executor_name, keys)),       # the key in the location
                  (uri, retry_body("quoting2", modelled.executor_name, item))]   # the input in the message
    for uri in ("/retry/deserialize/args/v1", "/retry/generate/idempotent-id/v1"):
        calls += [(uri, console_body(EVIL, keyed.executor_name, "[]")),
                  (uri, console_body("quoting", keyed.executor_name, keys)),
                  (uri, console_body("quoting2", modelled.executor_name, item))]
    calls.append(("/retry/generate/idempotent-id/v1",  # the user's id function fails on the input
                  console_body("quoting3", failing_id.executor_name, json.dumps([EVIL]))))
    calls.append(("/retry/stop/v1", {"namespaceId": "n", "groupName": EVIL, "scene": EVIL,
                                     "retryTaskId": "x\n\x1b[31m", "retryId": 1}))  # bad body
    for uri, body in calls:
        reply = call_inbound(port, uri, json.dumps([body]))
        assert reply.status == 0, (uri, reply.message)
        assert "\x1b" not in reply.message and "\n" not in reply.message, reply.message
    assert raw_lines(caplog.records) == []
    refusals = [r for r in caplog.records if r.getMessage().startswith("retry call refused")]
    assert len(refusals) == len(calls)
    # each repeated the input, quoted, except the bad stop body (not repeated at all) and the
    # failing id function (a KeyError's text is already a repr: quoted twice)
    assert len(quoted_lines(refusals)) == len(calls) - 2, caplog.text
    assert "raised KeyError: \"'FORGED\\\\n\\\\x1b[31mLINE'\"" in refusals[-2].getMessage()
    assert call_inbound(port, "/retry/deserialize/args/v1",
                        json.dumps([console_body("quoting", keyed.executor_name, '[{"a": 1}]')])).status == 1


def test_openapi_errors_quote_the_servers_text(caplog):
    caplog.set_level(logging.DEBUG, logger="snailjob")
    with FakeOpenApiServer(token="SJ_some_token_1234") as fake:
        client = fake.client()
        fake.reply("POST", "/api/job/trigger", status=0, message=EVIL, times=1)
        with pytest.raises(OpenApiServerError) as info:
            client.trigger_job(9)
        assert QUOTED in str(info.value) and "\x1b" not in str(info.value)
        fake.reply("POST", "/api/job/trigger", http_status=502, raw=EVIL.encode(), times=1)
        with pytest.raises(OpenApiHTTPError) as http:
            client.trigger_job(9)
        assert QUOTED in str(http.value) and "\x1b" not in str(http.value)
        fake.reply("POST", "/api/job/trigger", status=0, message="Group [g] is closed", times=1)
        with pytest.raises(OpenApiServerError) as plain:
            client.trigger_job(9)
        assert plain.value.message == "Group [g] is closed"  # printable text stays as the server wrote it
        logging.getLogger("snailjob.test").warning("failed: %s / %s", info.value, http.value)
    assert raw_lines(caplog.records) == []


def test_job_argument_errors_quote_keys_and_input():
    with pytest.raises(ParamsError) as info:
        convert(json.dumps({EVIL: "x"}), Dict[str, int], "job params")
    assert QUOTED in str(info.value) and "\x1b" not in str(info.value)
    with pytest.raises(ParamsError) as model:
        convert({"name": EVIL}, Item, "job params")
    assert QUOTED in str(model.value) and "\x1b" not in str(model.value)


def test_check_report_quotes_a_refusal_message(capsys):
    report = Report(secret="tok")
    report.fail("token and group", f"server refused the heartbeat: {EVIL} tok", "fix it")
    out = capsys.readouterr().out
    assert QUOTED in out and "\x1b" not in out and "tok" not in out.replace("token", "")
