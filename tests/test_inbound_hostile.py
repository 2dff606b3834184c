"""Hostile input at the inbound gRPC server (issue 5, item 5).

Property-based tests (hypothesis) that send random and adversarial requests
to a running client over real gRPC on 127.0.0.1: wrong JSON types, numbers
far outside the Java types (2**200, -2**70, 10**400), deep nesting, invalid
UTF-8 (raw protobuf bytes), 10 MiB bodies, unknown fields (JSON and
protobuf), random and near-miss ``SJ-TOKEN`` headers, and odd URIs.

Properties:

* every call gets a ``GrpcResult`` (never a gRPC error status), except the
  inbound server's INVALID_ARGUMENT for bytes that are not a valid protobuf message,
  and the server keeps answering afterwards;
* every call is answered within 1 s (the client is otherwise idle);
* nothing runs unless the request is a valid dispatch carrying the right
  ``SJ-TOKEN``; valid dispatches with the right token do run, and are
  reported;
* the token never appears in a log record (``snailjob`` and root loggers,
  DEBUG) or in a reply;
* no background thread dies and no handler or worker fails with an error;
* after the barrage a normal dispatch still runs and is reported.

Each property's oracle knows, for every generated request, whether it must
run (``RUN``), must not run (``NO``) or may do either (``EITHER``, for inputs
whose meaning the protocol leaves open, such as ``"12"`` for an integer).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import traceback
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snailjob as sj
from snailjob.wire import snailjob_pb2 as pb

from .conftest import dispatch, dispatch_body, wait_for

# heavy or timing-bound: these modules share one pytest-xdist worker (make test: --dist loadgroup),
# so they never compete with each other for the 2 cores
pytestmark = [pytest.mark.xdist_group("heavy"), pytest.mark.usefixtures("inbound_kind")]  # both inbound servers

# A distinctive token, so that any trace of it in logs or replies is found.
TOKEN = "SJ_h0st1le-T0KEN_5f9d2c7e"
DISPATCH = "/job/dispatch/v1"
REPORT = "/report/dispatch/result"
METHOD = "/UnaryRequest/unaryRequest"
MiB = 1024 * 1024
REPLY_WITHIN = 1.0  # seconds
# What the SnailJob server's channel to a client accepts (protocol.md §1:
# "server→client channel ... max inbound 10 MiB").
SERVER_MAX_INBOUND = 10 * MiB
INT32 = (-2**31, 2**31 - 1)
INT64 = (-2**63, 2**63 - 1)

ECHO, MR, MAPX = "hostile-echo", "hostile-mr", "hostile-map"
REGISTERED = (ECHO, MR, MAPX)

RUN, NO, EITHER = "RUN", "NO", "EITHER"

HYPOTHESIS = dict(deadline=None, database=None, print_blob=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                         HealthCheck.data_too_large, HealthCheck.large_base_example,
                                         HealthCheck.filter_too_much])


# --- the client under test --------------------------------------------------


class Runs:
    """Counts executor calls (the "nothing runs" oracle)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: List[Tuple[str, Any]] = []

    def add(self, name: str, args: Any) -> None:
        with self._lock:
            self.calls.append((name, args.task_id))

    def count(self) -> int:
        with self._lock:
            return len(self.calls)


def hostile_executors(runs: Runs) -> list:
    @sj.job(ECHO)
    def echo(args):
        runs.add(ECHO, args)
        return args.job_params

    mr = sj.MapReduceExecutor(MR)

    @mr.map()
    def root(args):
        runs.add(MR + "/ROOT_MAP", args)
        return "root"

    @mr.map("STEP")
    def step(args):
        runs.add(MR + "/STEP", args)
        return "step"

    @mr.reduce()
    def reduce(args):
        runs.add(MR + "/reduce", args)
        return "reduced"

    @mr.merge()
    def merge(args):
        runs.add(MR + "/merge", args)
        return "merged"

    mp = sj.MapExecutor(MAPX)

    @mp.map()
    def map_root(args):
        runs.add(MAPX + "/ROOT_MAP", args)
        return "mapped"

    return [echo, mr, mp]


class Watch:
    """Captures log records (root and ``snailjob`` at DEBUG) and exceptions
    that end background threads; ``check()`` asserts nothing bad happened."""

    def __init__(self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
        self.caplog = caplog
        caplog.set_level(logging.DEBUG)
        caplog.set_level(logging.DEBUG, logger="snailjob")
        self.thread_errors: List[str] = []

        def hook(args: Any) -> None:
            text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
            self.thread_errors.append(f"thread {getattr(args.thread, 'name', '?')} died:\n{text}")

        monkeypatch.setattr(threading, "excepthook", hook)

    def check(self, replies: Iterable[str] = (), allow_decode_errors: bool = False) -> None:
        problems: List[str] = []
        for rec in self.caplog.records:
            text = rec.getMessage()
            if rec.exc_info:
                text += "\n" + "".join(traceback.format_exception(*rec.exc_info))
            if TOKEN in text:
                problems.append(f"token leaked in a log record of {rec.name}: {text[:300]!r}")
            if rec.levelno >= logging.ERROR:
                if allow_decode_errors and rec.name.startswith("grpc") and "deserializ" in text:
                    continue  # the transport rejecting bytes that are not a protobuf message
                problems.append(f"{rec.levelname} from {rec.name}: {text[:1500]}")
        if TOKEN in self.caplog.text:
            problems.append("token leaked in the captured log text")
        for reply in replies:
            if TOKEN in reply:
                problems.append(f"token leaked in a reply: {reply[:300]!r}")
        problems.extend(self.thread_errors)
        assert not problems, "\n\n".join(problems[:10])


class Caller:
    """A persistent channel to the client's inbound server, configured like
    the SnailJob server's channel (10 MiB inbound limit)."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_receive_message_length", SERVER_MAX_INBOUND),
                     ("grpc.max_send_message_length", 64 * MiB)])
        self.method = self.channel.unary_unary(
            METHOD, request_serializer=pb.GrpcSnailJobRequest.SerializeToString,
            response_deserializer=pb.GrpcResult.FromString)
        self.raw_method = self.channel.unary_unary(
            METHOD, request_serializer=lambda data: data, response_deserializer=pb.GrpcResult.FromString)
        grpc.channel_ready_future(self.channel).result(timeout=5)
        self.replies: List[str] = []

    def call(self, uri: str, headers: Dict[str, str], body: str, req_id: int = 7,
             metadata: Optional[Sequence[Tuple[str, str]]] = None) -> Tuple[Any, float]:
        """(GrpcResult or grpc.RpcError, seconds)."""
        request = pb.GrpcSnailJobRequest(reqId=req_id, metadata=pb.Metadata(uri=uri, headers=headers), body=body)
        return self._timed(self.method, request, metadata)

    def raw(self, data: bytes) -> Tuple[Any, float]:
        return self._timed(self.raw_method, data, None)

    def _timed(self, method: Any, request: Any, metadata: Any) -> Tuple[Any, float]:
        started = time.monotonic()
        try:
            result: Any = method(request, timeout=10, metadata=metadata)
        except grpc.RpcError as exc:
            result = exc
        elapsed = time.monotonic() - started
        if isinstance(result, pb.GrpcResult):
            self.replies.append(result.message + "\n" + result.data)
        return result, elapsed

    def close(self) -> None:
        self.channel.close()


def describe(result: Any) -> str:
    if isinstance(result, grpc.RpcError):
        return f"gRPC error {result.code()}: {str(result.details())[:300]}"
    return f"GrpcResult(status={result.status}, data={result.data!r}, message={result.message[:300]!r})"


def assert_answered(result: Any, elapsed: float, req_id: Optional[int] = 7, what: str = "") -> pb.GrpcResult:
    """The call got a well-formed GrpcResult within REPLY_WITHIN seconds."""
    assert not isinstance(result, grpc.RpcError), f"{what}: no GrpcResult but {describe(result)}"
    assert elapsed < REPLY_WITHIN, f"{what}: answered in {elapsed:.3f}s"
    if req_id is not None:
        assert result.reqId == req_id, f"{what}: reqId {result.reqId} != {req_id}"
    assert result.status in (0, 1), f"{what}: {describe(result)}"
    json.loads(result.data or "null")  # data is JSON text
    return result


def accepted(result: Any) -> bool:
    return isinstance(result, pb.GrpcResult) and result.status == 1 and result.data == "true"


def healthy(caller: Caller) -> None:
    """The server still answers a plain call promptly."""
    result, elapsed = caller.call("/sync/version", {"SJ-TOKEN": TOKEN}, "[]", req_id=99)
    reply = assert_answered(result, elapsed, 99, "health check")
    assert (reply.status, reply.data) == (1, "null"), describe(reply)


def still_works(client: Any, transport: Any, runs: Runs) -> None:
    """A normal dispatch (the conftest helper, a fresh channel) runs and is reported."""
    before = runs.count()
    body = dispatch_body(ECHO, argsStr=json.dumps({"jobParams": "after the barrage"}))
    reply = dispatch(client.host_port, body, token=TOKEN)
    assert (reply.status, reply.data) == (1, "true"), reply
    wait_for(lambda: runs.count() == before + 1)
    reports = wait_for(lambda: [r[0] for r in transport.bodies(REPORT) if r[0]["taskId"] == body["taskId"]])
    assert reports[0]["taskStatus"] == 3, reports[0]
    assert reports[0]["executeResult"]["result"] == "after the barrage"


def settle_and_count(runs: Runs, before: int, expect_run: bool, what: str) -> None:
    if expect_run:
        try:
            wait_for(lambda: runs.count() >= before + 1, timeout=5)
        except AssertionError:
            raise AssertionError(f"{what}: the dispatch was accepted but nothing ran") from None
        time.sleep(0.005)
        assert runs.count() == before + 1, f"{what}: ran {runs.count() - before} times"
    else:
        time.sleep(0.01)
        assert runs.count() == before, f"{what}: something RAN ({runs.calls[before:]}) although it must not"


def wait_reports(transport: Any, expected: int, what: str) -> None:
    try:
        wait_for(lambda: len(transport.bodies(REPORT)) >= expected, timeout=5)
    except AssertionError:
        raise AssertionError(f"{what}: a task ran but its result was never reported "
                             f"({len(transport.bodies(REPORT))} reports, expected {expected})") from None


@pytest.fixture
def hostile(make_client, caplog, monkeypatch):
    """(client, transport, runs, caller, watch): a client with the hostile
    executors and the distinctive token, and a channel to it."""
    watch = Watch(caplog, monkeypatch)
    runs = Runs()
    client, transport = make_client(hostile_executors(runs), snail_token=TOKEN)
    caller = Caller(client.host_port)
    yield client, transport, runs, caller, watch
    caller.close()


# --- JSON building blocks ---------------------------------------------------


class Raw:
    """JSON text inserted verbatim (deep nesting, 1e999, very long literals);
    a short repr keeps hypothesis' reports readable."""

    def __init__(self, label: str, text: str) -> None:
        self.label, self.text = label, text

    def __repr__(self) -> str:
        return f"Raw({self.label})"


def to_json(value: Any, ensure_ascii: bool = False) -> str:
    raws: Dict[str, str] = {}
    nonce = uuid.uuid4().hex

    def sub(v: Any) -> Any:
        if isinstance(v, Raw):
            key = f"@@{nonce}{len(raws)}@@"
            raws[key] = v.text
            return key
        if isinstance(v, dict):
            return {k: sub(x) for k, x in v.items()}
        if isinstance(v, list):
            return [sub(x) for x in v]
        return v

    text = json.dumps(sub(value), ensure_ascii=ensure_ascii)
    for key, raw in raws.items():
        text = text.replace(json.dumps(key), raw)
    return text


DEEP = 100_000
DEEP_ARRAY = Raw("100k-deep array", "[" * DEEP + "]" * DEEP)
DEEP_OBJECT = Raw("100k-deep object", '{"a":' * DEEP + "1" + "}" * DEEP)
OPEN_ARRAYS = Raw("100k unclosed [", "[" * DEEP)

json_leaves = (st.none() | st.booleans() | st.integers() | st.floats()
               | st.text(max_size=30))
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=16)

BIG_INTS = [2**63, -2**63 - 1, 2**64, 2**200, -2**70, 10**400, -(10**400), 10**4000]
LAX_INTS = [True, False, "12", " 7 ", "1_000", "-5", "9" * 5000, 1.0, 3.0, -0.0, 1e20]
BAD_INTS: List[Any] = [[], {}, [1], {"a": 1}, "", "abc", "1e3", "0x10", "\uff11\uff12", 1.5, -0.5,
                       math.nan, math.inf, -math.inf, Raw("1e999", "1e999"), DEEP_ARRAY, OPEN_ARRAYS,
                       Raw("5001-digit literal", "1" + "0" * 5000)]
HOSTILE_STRINGS = [
    "", " ", "\x00", "\u202e\u0000\ufeff", "\U0001f4a5" * 100, "x" * 100_000,
    "[" * DEEP, '{"jobParams":' + "[" * 50_000, '{"jobParams": NaN}', '{"jobParams": -Infinity}',
    '{"jobParams": 1' + "0" * 5000 + "}", '{"jobParams": 1' + "0" * 4000 + "}",
    '{"jobParams": {"a": [1, 2, {"b": null}]}}', '{"maps": ' + "[" * 2000 + "]" * 2000 + "}",
    '{"jobParams": "\\u0000\\ud7ff\\ue000"}', "\ufeff{}", "null", "[]", "{}", "[1,2,3]",
    '{"jobParams": 2e308}', '{"__proto__": {"polluted": true}}',
    ECHO, MR, MAPX, ECHO.upper(), " " + ECHO, ECHO + " ", ECHO + "\x00", "hostile\u2011echo",
    Raw("lone surrogate escape", '"\\ud800"'), Raw("escaped NUL", '"\\u0000"'),
]
BAD_STRS: List[Any] = [0, 1, -1, 2**200, True, False, 1.5, math.nan, [], {}, ["a"], {"a": "b"},
                       DEEP_ARRAY, Raw("1e999", "1e999")]


def int_field_values() -> st.SearchStrategy:
    def text_class(s: str) -> Tuple[Any, str]:
        return s, ("lax" if any(ch.isnumeric() for ch in s) else "bad")

    def float_class(x: float) -> Tuple[Any, str]:
        return x, ("lax" if math.isfinite(x) and x == int(x) else "bad")

    return st.one_of(
        st.integers(*INT32).map(lambda v: (v, "int")),
        st.integers(*INT64).map(lambda v: (v, "int")),
        st.sampled_from(BIG_INTS).map(lambda v: (v, "big")),
        st.sampled_from(LAX_INTS).map(lambda v: (v, "lax")),
        st.sampled_from(BAD_INTS).map(lambda v: (v, "bad")),
        st.just((None, "null")),
        st.text(max_size=10).map(text_class),
        st.floats().map(float_class),
        st.lists(json_values, max_size=3).map(lambda v: (v, "bad")),
    )


def str_field_values() -> st.SearchStrategy:
    return st.one_of(
        st.text(max_size=40).map(lambda v: (v, "str")),
        st.sampled_from(HOSTILE_STRINGS).map(lambda v: (v, "str")),
        st.sampled_from(BAD_STRS).map(lambda v: (v, "bad")),
        st.just((None, "null")),
    )


def bool_field_values() -> st.SearchStrategy:
    return st.one_of(
        st.booleans().map(lambda v: (v, "bool")),
        st.sampled_from(["yes", "1", "true", "on", 0, 1, "false", "no", "0", "off", "True", ""])
        .map(lambda v: (v, "lax")),
        st.just((None, "null")),
        st.sampled_from([2, -1, 1.5, [], {}, "maybe", DEEP_ARRAY]).map(lambda v: (v, "bad")),
    )


# --- the dispatch oracle ----------------------------------------------------

ID_FIELDS = ("jobId", "taskBatchId", "taskId")
LONG_FIELDS = ID_FIELDS + ("workflowTaskBatchId", "workflowNodeId")  # Java Long; the other ints are Integer
INT_FIELDS = ID_FIELDS + ("taskType", "executorType", "parallelNum", "executorTimeout", "mrStage",
                          "shardingTotal", "shardingIndex", "workflowTaskBatchId", "workflowNodeId",
                          "retryCount", "retryScene")
STR_FIELDS = ("namespaceId", "jobBizId", "groupName", "executorInfo", "taskName", "argsStr", "wfContext")
BOOL_FIELDS = ("retry", "retryStatus")
FIELDS = INT_FIELDS + STR_FIELDS + BOOL_FIELDS
REQUIRED = ID_FIELDS + ("taskType", "executorType", "executorInfo")
NOT_NULL = ("parallelNum", "retry", "retryStatus")  # boxed in Java but always sent; null is debatable

BASES: Dict[str, Callable[[], Dict[str, Any]]] = {
    "cluster": lambda: dispatch_body(ECHO, 1),
    "broadcast": lambda: dispatch_body(ECHO, 2, taskName="BROADCAST_TASK"),
    "sharding": lambda: dispatch_body(ECHO, 3, taskName="SHARDING_TASK", shardingIndex=1, shardingTotal=2,
                                      parallelNum=2, argsStr=json.dumps({"jobParams": "b"})),
    "map": lambda: dispatch_body(MAPX, 4, mrStage=1, taskName="ROOT_MAP", argsStr="{}"),
    "mr-root": lambda: dispatch_body(MR, 5, mrStage=1, taskName="ROOT_MAP", argsStr="{}"),
    "mr-step": lambda: dispatch_body(MR, 5, mrStage=1, taskName="STEP", argsStr=json.dumps({"maps": 7})),
    "mr-reduce": lambda: dispatch_body(MR, 5, mrStage=2, taskName="REDUCE_TASK",
                                       argsStr=json.dumps({"maps": ["1", "2"]})),
    "mr-merge": lambda: dispatch_body(MR, 5, mrStage=3, taskName="MERGE_REDUCE_TASK",
                                      argsStr=json.dumps({"reduces": ["3"]})),
    "workflow": lambda: dispatch_body(ECHO, 1, workflowTaskBatchId=9, workflowNodeId=3,
                                      wfContext=json.dumps({"k": "v"})),
}


def combine(verdicts: Iterable[str]) -> str:
    verdicts = list(verdicts)
    if NO in verdicts:
        return NO
    return EITHER if EITHER in verdicts else RUN


def in_range(value: int, bounds: Tuple[int, int]) -> bool:
    return bounds[0] <= value <= bounds[1]


def set_verdict(field: str, value: Any, cls: str, base: Dict[str, Any]) -> str:
    """Must a dispatch with ``field`` set to ``value`` (all else as ``base``) run?"""
    is_map = base["taskType"] in (4, 5)
    if cls == "bad":
        return NO
    if cls == "lax":
        return EITHER
    if cls == "null":
        if field in REQUIRED:
            return NO
        if field in NOT_NULL or (is_map and field in ("mrStage", "taskName")):
            return EITHER
        return RUN
    if field in INT_FIELDS:
        if field == "executorType":
            return RUN if value == 2 else NO
        if field == "taskType":
            if value == base["taskType"]:
                return RUN
            return EITHER if value in (1, 2, 3, 4, 5) else NO
        if not in_range(value, INT64 if field in LONG_FIELDS else INT32):
            # outside the Java type (protocol.md §4.3): refusing is right, running is tolerated
            # here; test_ids_outside_int64_are_refused and the executorTimeout tests are stricter
            return EITHER
        if field == "mrStage" and base["taskType"] == 5:
            return RUN if value == base["mrStage"] else EITHER
        return RUN
    if field in STR_FIELDS:
        if field == "executorInfo":
            if value == base["executorInfo"]:
                return RUN
            return EITHER if value in REGISTERED else NO
        if field == "taskName" and is_map and base["taskType"] == 5 and base["mrStage"] == 1:
            return RUN if value == base["taskName"] else EITHER
        if field == "taskName" and is_map and base["taskType"] == 4:
            return RUN if value == base["taskName"] else EITHER
        return RUN
    return RUN  # booleans


def delete_verdict(field: str, base: Dict[str, Any]) -> str:
    if field in REQUIRED:
        return NO
    if base["taskType"] in (4, 5) and field in ("mrStage", "taskName"):
        return EITHER
    return RUN


UNKNOWN_KEYS = ["", "__proto__", "constructor", "jobid", "JOBID", "job_id", "taskbatchid", "executorinfo",
                "jobId ", "\x00", "\U0001f4a5", "changeWfContext", "SJ-TOKEN", "namespaceId\u200b"]


def field_values(field: str) -> st.SearchStrategy:
    if field in INT_FIELDS:
        return int_field_values()
    if field in STR_FIELDS:
        return str_field_values()
    return bool_field_values()


@st.composite
def mutated_dispatch(draw: Any) -> Tuple[str, str, List[str]]:
    """(body text, verdict if the token and URI are right, what was done)."""
    name = draw(st.sampled_from(sorted(BASES)))
    base = BASES[name]()
    obj = dict(base)
    done = [name]
    per_field: Dict[Any, str] = {}
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["set", "set", "set", "delete", "unknown"]))
        if kind == "unknown":
            key = draw(st.sampled_from(UNKNOWN_KEYS) | st.text(max_size=12).filter(lambda k: k not in FIELDS))
            if draw(st.booleans()):
                value, verdict = draw(json_values), RUN
            else:
                value = draw(st.sampled_from([DEEP_ARRAY, DEEP_OBJECT, Raw("1e999", "1e999"),
                                              Raw("5001-digit literal", "1" + "0" * 5000), 2**200]))
                verdict = EITHER  # JSON parsers limit depth and literal size differently
            obj[key] = value
            per_field[("unknown", key)] = verdict
            done.append(f"unknown {key!r}={value!r:.80}")
        elif kind == "delete":
            field = draw(st.sampled_from(FIELDS))
            obj.pop(field, None)
            per_field[field] = delete_verdict(field, base)
            done.append(f"delete {field}")
        else:
            field = draw(st.sampled_from(FIELDS))
            value, cls = draw(field_values(field))
            obj[field] = value
            per_field[field] = set_verdict(field, value, cls, base)
            done.append(f"{field}={value!r:.80} ({cls})")
    ensure_ascii = draw(st.booleans())
    element = to_json(obj, ensure_ascii)
    wrap = draw(st.sampled_from(["plain"] * 6 + ["ws", "bare", "nested", "second", "extra", "trailing",
                                                 "double", "comma", "bom", "null-first", "dup-key"]))
    verdict = combine(per_field.values())
    text, wrap_verdict = {
        "plain": (f"[{element}]", RUN),
        "ws": (f" \n\t[ {element} ]\r\n ", RUN),
        "bare": (element, NO),
        "nested": (f"[[{element}]]", NO),
        "second": (f"[1,{element}]", NO),
        "extra": (f'[{element},1,"x",null,{{}}]', EITHER),
        "trailing": (f"[{element}]x", NO),
        "double": (f"[{element}][{element}]", NO),
        "comma": (f"[{element},]", NO),
        "bom": (f"\ufeff[{element}]", EITHER),
        "null-first": (f"[null,{element}]", NO),
        # a bad jobId first, then the object's own keys (the last duplicate wins in most parsers)
        "dup-key": ('[{"jobId":[],' + element[1:] + "]" if element.startswith("{") and len(element) > 2
                    else f"[{element}]", EITHER if "jobId" in obj else NO),
    }[wrap]
    done.append(f"wrapped {wrap}")
    return text, combine([verdict, wrap_verdict]), done


# --- headers and URIs -------------------------------------------------------

TOKEN_KEYS = ["SJ-TOKEN", "sj-token", "Sj-Token", "sJ-tOkEn"]
WRONG_KEYS = ["SJ_TOKEN", "SJTOKEN", "SJ-TOKEN ", " SJ-TOKEN", "SJ-TOKEN\x00", "x-sj-token", "token",
              "SJ-TOKENS", "SJ\u2013TOKEN", "sj-token\n", "snail-job"]
NEAR_MISSES = [TOKEN + "x", "x" + TOKEN, TOKEN[:-1], TOKEN.lower(), TOKEN.upper(), " " + TOKEN, TOKEN + " ",
               TOKEN + "\n", TOKEN + "\x00", "", TOKEN * 2, "\u00e9" + TOKEN, TOKEN.replace("0", "\u041e"),
               TOKEN + "\u200b", "SJ_test_token_0123456789", "*" * 1000, TOKEN + "x" * 100_000, "null"]

header_keys = st.text(max_size=20).filter(lambda k: k.lower() != "sj-token")
SERVER_HEADERS = {"host-id": "server-1", "host-ip": "127.0.0.1", "host-port": "17888",
                  "group-name": "DEFAULT_SERVER", "namespace": "764d604ec6fc45f68cd92514c40e9e1a",
                  "token": TOKEN}  # the right value under the server-token key must not authenticate


@st.composite
def auth_headers(draw: Any) -> Tuple[Dict[str, str], Optional[List[Tuple[str, str]]], str]:
    """(proto headers, gRPC call metadata, "right" | "wrong" | "missing" | "mixed")."""
    headers: Dict[str, str] = dict(draw(st.dictionaries(header_keys, st.text(max_size=30), max_size=3)))
    if draw(st.booleans()):
        headers.update(SERVER_HEADERS)
    metadata = None
    kind = draw(st.sampled_from(["right"] * 6 + ["missing", "wrong-value", "wrong-value", "wrong-key",
                                                  "mixed", "grpc-metadata", "huge-value"]))
    if kind == "right":
        headers[draw(st.sampled_from(TOKEN_KEYS))] = TOKEN
        state = "right"
    elif kind == "missing":
        state = "missing"
    elif kind == "wrong-value":
        headers[draw(st.sampled_from(TOKEN_KEYS))] = draw(st.sampled_from(NEAR_MISSES) | st.text(max_size=40))
        state = "wrong"
    elif kind == "wrong-key":
        headers[draw(st.sampled_from(WRONG_KEYS))] = TOKEN
        state = "missing"
    elif kind == "mixed":
        right, wrong = draw(st.lists(st.sampled_from(TOKEN_KEYS), min_size=2, max_size=2, unique=True))
        headers[right] = TOKEN
        headers[wrong] = draw(st.sampled_from(NEAR_MISSES))
        state = "mixed"
    elif kind == "grpc-metadata":
        metadata = [("sj-token", TOKEN)]  # HTTP/2 metadata is not the protocol's header map
        state = "missing"
    else:
        headers[draw(st.sampled_from(TOKEN_KEYS))] = draw(st.sampled_from(
            ["x" * 1_000_000, "\u00fc" * 500_000, TOKEN * 20_000]))
        state = "wrong"
    return headers, metadata, state


def auth_verdict(state: str) -> str:
    return {"right": RUN, "mixed": EITHER}.get(state, NO)


QUERY_URIS = [DISPATCH + "?x", DISPATCH + "?a=b&c=%00", DISPATCH + "?"]
OTHER_URIS = [
    "", "/", DISPATCH.upper(), DISPATCH + "/", " " + DISPATCH, DISPATCH + " ", DISPATCH + "#x",
    DISPATCH + "\x00", DISPATCH + "\n", "/job/dispatch/v2", "job/dispatch/v1", "//job/dispatch/v1",
    "/job//dispatch/v1", "/job/dispatch", "/job/dispatch/v1;x", "/job/%64ispatch/v1", "%2Fjob%2Fdispatch%2Fv1",
    "\\job\\dispatch\\v1", "/j\u00f6b/dispatch/v1", "/job/dispatch/v\u0661", "/\uff4aob/dispatch/v1",
    "/job/stop/v1", "/sync/version", "/retry/dispatch/v1", "/beat", "/report/dispatch/result",
    "/" * 100_000, "/job/dispatch/v1/" + "x" * 100_000, "\U0001f4a5" * 1000,
]


def uri_verdict(uri: str) -> str:
    if uri == DISPATCH:
        return RUN
    if uri.split("?", 1)[0] == DISPATCH:
        return EITHER  # a query string on the dispatch URI: the server never sends one
    return NO


def is_dispatch_path(uri: str) -> bool:
    return uri.split("?", 1)[0] == DISPATCH


# --- properties ---------------------------------------------------------------


def test_random_requests_never_fail_and_never_run(hostile):
    """Random URIs, headers and bodies: always a GrpcResult within 1 s, the
    token is checked first, and nothing runs (no body here is a valid
    dispatch of a registered executor)."""
    client, transport, runs, caller, watch = hostile
    dispatch_like = st.fixed_dictionaries(
        {}, optional={f: json_values for f in FIELDS}).map(
        lambda d: d if d.get("executorInfo") not in REGISTERED else {**d, "executorInfo": "nope"})
    bodies = st.one_of(
        st.text(max_size=300),
        json_values.map(lambda v: json.dumps(v)),
        st.lists(json_values, max_size=4).map(lambda v: json.dumps(v)),
        st.lists(dispatch_like, min_size=1, max_size=2).map(lambda v: json.dumps(v)),
        st.sampled_from(["", " ", "[", "]", "[]", "{}", "null", "[null]", "[[]]", "[{}]", "[1]", "NaN", "[NaN]",
                         "[Infinity]", '[{"jobId":1e999}]', "\ufeff[]", "[" * DEEP, "{" * DEEP,
                         '[{"a":' * 50_000, "[" * DEEP + "]" * DEEP, "\x00" * 1000, "\U0001f4a5" * 10_000,
                         "[" + "1," * 100_000 + "1]", '["' + "\\ud800" + '"]', '[{"executorInfo":"\\ud800"}]',
                         '[{"jobId":1' + "0" * 5000 + "}]"]),
        st.tuples(st.sampled_from(["[", "{", '[{"a":', "[[", '{"":']), st.integers(1, 200_000))
        .map(lambda t: t[0] * t[1]),
    )
    uris = st.sampled_from([DISPATCH] * 4 + QUERY_URIS + OTHER_URIS) | st.text(max_size=60)
    random_headers = st.dictionaries(st.text(max_size=30), st.text(max_size=60), max_size=6)
    headers_strategy = auth_headers() | random_headers.map(lambda h: (h, None, "missing" if not any(
        k.lower() == "sj-token" for k in h) else "wrong"))
    req_ids = st.sampled_from([0, 7, -1, 2**63 - 1, -2**63]) | st.integers(*INT64)
    seen = {"right": 0, "refused": 0}

    @settings(max_examples=200, **HYPOTHESIS)
    @given(uri=uris, auth=headers_strategy, body=bodies, req_id=req_ids)
    def prop(uri: str, auth: Tuple[Dict[str, str], Any, str], body: str, req_id: int) -> None:
        headers, metadata, state = auth
        what = f"uri={uri[:60]!r} token={state} body={body[:100]!r}"
        before = runs.count()
        result, elapsed = caller.call(uri, headers, body, req_id=req_id, metadata=metadata)
        reply = assert_answered(result, elapsed, req_id, what)
        if state in ("wrong", "missing"):
            assert (reply.status, reply.data) == (0, "false"), f"{what}: {describe(reply)}"
            seen["refused"] += 1
        elif state == "right":
            seen["right"] += 1
        settle_and_count(runs, before, False, what)

    prop()
    assert seen["right"] > 20 and seen["refused"] > 20, seen  # both sides of the token check were exercised
    assert runs.count() == 0
    healthy(caller)
    still_works(client, transport, runs)
    watch.check(caller.replies)


def test_mutated_dispatches_run_only_when_valid(hostile):
    """Valid dispatches of every task type, mutated (wrong types, out-of-range
    numbers, deep nesting, unknown fields, deleted fields, odd wrappers), sent
    with right / wrong / missing / case-varied tokens to exact and odd URIs:
    a request runs exactly when it must, is reported, and is answered in 1 s."""
    client, transport, runs, caller, watch = hostile
    uris = st.just(DISPATCH) | st.sampled_from(QUERY_URIS + OTHER_URIS)
    tally = {RUN: 0, NO: 0, EITHER: 0, "ran": 0}

    # derandomized: the same 300 cases every run, so that the coverage check below cannot flake (a random
    # draw gave 24 valid dispatches once); the other properties of this file keep exploring
    @settings(max_examples=300, derandomize=True, **HYPOTHESIS)
    @given(case=mutated_dispatch(), auth=auth_headers(), uri=uris)
    def prop(case: Tuple[str, str, List[str]], auth: Tuple[Dict[str, str], Any, str], uri: str) -> None:
        body, body_verdict, done = case
        headers, metadata, state = auth
        verdict = combine([body_verdict, auth_verdict(state), uri_verdict(uri)])
        what = f"{verdict}: uri={uri[:60]!r} token={state} {' / '.join(done)}"
        before, reports_before = runs.count(), len(transport.bodies(REPORT))
        result, elapsed = caller.call(uri, headers, body, metadata=metadata)
        reply = assert_answered(result, elapsed, 7, what)
        if state in ("wrong", "missing"):
            assert (reply.status, reply.data) == (0, "false"), f"{what}: {describe(reply)}"
        if verdict == RUN:
            assert (reply.status, reply.data) == (1, "true"), f"{what}: valid dispatch refused: {describe(reply)}"
        if verdict == NO and is_dispatch_path(uri):
            assert reply.data != "true", f"{what}: invalid dispatch accepted: {describe(reply)}"
        should_run = accepted(reply) and is_dispatch_path(uri)
        settle_and_count(runs, before, should_run, f"{what} -> {describe(reply)}")
        if should_run:
            wait_reports(transport, reports_before + 1, what)
            tally["ran"] += 1
        tally[verdict] += 1

    prop()
    print(f"\nmutated dispatches: {tally}")
    # the generator reaches all three kinds, and valid dispatches did run
    assert tally[RUN] > 30 and tally[NO] > 30 and tally["ran"] >= tally[RUN], tally
    healthy(caller)
    still_works(client, transport, runs)
    watch.check(caller.replies)


FIELD_BREAKERS: Dict[str, List[Any]] = {
    **{f: [None, "abc", [], {}, 1.5, "1e3", DEEP_ARRAY] for f in ID_FIELDS},
    "taskType": [0, 6, -1, 2**31 - 1, None, "x", []],
    "executorType": [0, 1, 3, -2, 2**200, None, "python", []],
    "executorInfo": [ECHO.upper(), " " + ECHO, ECHO + "\x00", "", "   ", None, 1, [ECHO], {"name": ECHO}],
    "parallelNum": ["x", [], {}, 2.5],
    "executorTimeout": ["x", [], 0.5],
    "mrStage": ["x", [], 1.5],
    "shardingIndex": ["x", []],
    "workflowTaskBatchId": ["x", {}],
    "retryCount": ["many"],
    **{f: [1, 2**200, [], {}, True] for f in STR_FIELDS if f != "executorInfo"},
    **{f: ["maybe", 2, [], {}] for f in BOOL_FIELDS},
}


def test_valid_dispatch_runs_only_with_exact_uri_right_token_and_valid_fields(hostile):
    """A table next to the random search: every task type runs with each
    spelling of the SJ-TOKEN key on the exact URI (and is reported); the same
    valid dispatch does not run on any other URI, with any wrong token or key,
    with the token only in gRPC metadata, or with any one field broken."""
    client, transport, runs, caller, watch = hostile
    expected_runs = 0
    problems: List[str] = []

    def send(what: str, uri: str, headers: Dict[str, str], body: str, must_run: bool,
             metadata: Optional[List[Tuple[str, str]]] = None) -> None:
        result, elapsed = caller.call(uri, headers, body, metadata=metadata)
        reply = assert_answered(result, elapsed, 7, what)
        if must_run and (reply.status, reply.data) != (1, "true"):
            problems.append(f"{what}: valid dispatch refused: {describe(reply)}")
        if not must_run and is_dispatch_path(uri) and reply.data == "true":
            problems.append(f"{what}: accepted: {describe(reply)}")

    for name, make in sorted(BASES.items()):
        for key in TOKEN_KEYS:
            send(f"{name} with {key!r}", DISPATCH, {key: TOKEN, **SERVER_HEADERS}, json.dumps([make()]), True)
            expected_runs += 1
    wait_for(lambda: runs.count() == expected_runs)
    wait_reports(transport, expected_runs, "valid dispatches")
    body = json.dumps([BASES["cluster"]()])
    for uri in OTHER_URIS:
        send(f"uri {uri[:40]!r}", uri, {"SJ-TOKEN": TOKEN}, body, False)
    for key in WRONG_KEYS:
        send(f"token under key {key!r}", DISPATCH, {key: TOKEN, **SERVER_HEADERS}, body, False)
    for bad in NEAR_MISSES:
        send(f"token {bad[:40]!r}", DISPATCH, {"SJ-TOKEN": bad}, body, False)
    send("token only in gRPC metadata", DISPATCH, {}, body, False, metadata=[("sj-token", TOKEN)])
    for name in ("cluster", "map", "mr-reduce"):
        for field, values in FIELD_BREAKERS.items():
            for value in values:
                request = BASES[name]()
                request[field] = value
                send(f"{name} with {field}={value!r:.40}", DISPATCH, {"SJ-TOKEN": TOKEN}, to_json([request]), False)
        for field in REQUIRED:
            request = BASES[name]()
            del request[field]
            send(f"{name} without {field}", DISPATCH, {"SJ-TOKEN": TOKEN}, to_json([request]), False)
    time.sleep(0.3)
    if runs.count() != expected_runs:
        problems.append(f"{runs.count() - expected_runs} task(s) ran that must not: {runs.calls[expected_runs:]}")
    assert not problems, "\n".join(problems)
    still_works(client, transport, runs)
    watch.check(caller.replies)


# --- raw protobuf bytes -----------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _ld(number: int, data: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(data)) + data


def encode_request(req_id: int, uri: bytes, headers: Sequence[Tuple[bytes, bytes]], body: bytes,
                   meta_extra: bytes = b"", entry_extra: Optional[Dict[int, bytes]] = None) -> bytes:
    """GrpcSnailJobRequest wire bytes, built by hand so that string fields can
    hold anything (proto3 requires valid UTF-8; this does not check)."""
    entry_extra = entry_extra or {}
    entries = b"".join(_ld(7, _ld(1, k) + _ld(2, v) + entry_extra.get(i, b"")) for i, (k, v) in enumerate(headers))
    meta = _ld(3, uri) + entries + meta_extra
    return _tag(1, 0) + _varint(req_id) + _ld(2, meta) + _ld(3, body)


def test_encoder_matches_protobuf():
    """The hand-made encoder is right (else the raw-bytes test proves nothing)."""
    data = encode_request(7, DISPATCH.encode(), [(b"SJ-TOKEN", TOKEN.encode()), (b"a", "\u00fc".encode())],
                          b'[{"x":1}]')
    ref = pb.GrpcSnailJobRequest(reqId=7, metadata=pb.Metadata(uri=DISPATCH, headers={"SJ-TOKEN": TOKEN,
                                                                                     "a": "\u00fc"}),
                                 body='[{"x":1}]')
    assert pb.GrpcSnailJobRequest.FromString(data) == ref


BAD_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc0\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
            b"\xf8\x88\x80\x80\x80", b"\xef\xbf", b"\xc1\xbf"]


def _unknown_field(number: int, wire_type: int, payload: bytes) -> bytes:
    if wire_type == 0:
        return _tag(number, 0) + _varint(int.from_bytes(payload[:8].ljust(1, b"\0"), "little"))
    if wire_type == 1:
        return _tag(number, 1) + payload[:8].ljust(8, b"\0")
    if wire_type == 5:
        return _tag(number, 5) + payload[:4].ljust(4, b"\0")
    return _ld(number, payload)


@st.composite
def raw_requests(draw: Any) -> Tuple[bytes, str, str]:
    """(bytes, verdict, description) around a valid, authenticated dispatch."""
    body = json.dumps([dispatch_body(ECHO)]).encode()
    uri = DISPATCH.encode()
    headers = [(b"SJ-TOKEN", TOKEN.encode()), (b"host-id", b"server-1"), (b"namespace", b"ns")]
    valid = encode_request(7, uri, headers, body)
    kind = draw(st.sampled_from(["bad-utf8"] * 4 + ["unknown-fields"] * 2 + ["truncated", "garbage", "bitflip"]))
    if kind == "bad-utf8":
        where = draw(st.sampled_from(["uri", "token-key", "token-value", "other-key", "other-value", "body"]))
        bad = draw(st.sampled_from(BAD_UTF8))

        def spoil(data: bytes) -> bytes:
            at = draw(st.integers(0, len(data)))
            return data[:at] + bad + data[at:]

        hdrs = list(headers)
        if where == "uri":
            uri = spoil(uri)
        elif where == "token-key":
            hdrs[0] = (spoil(hdrs[0][0]), hdrs[0][1])
        elif where == "token-value":
            hdrs[0] = (hdrs[0][0], spoil(hdrs[0][1]))
        elif where == "other-key":
            hdrs[1] = (spoil(hdrs[1][0]), hdrs[1][1])
        elif where == "other-value":
            hdrs[1] = (hdrs[1][0], spoil(hdrs[1][1]))
        else:
            body = spoil(body)
        return encode_request(7, uri, hdrs, body), NO, f"invalid UTF-8 {bad!r} in {where}"
    if kind == "unknown-fields":
        place = draw(st.sampled_from(["top", "metadata", "other-entry", "token-entry"]))
        number = draw(st.integers(4, 2**29 - 1) if place == "top" else st.integers(8, 2**29 - 1))
        wire_type = draw(st.sampled_from([0, 1, 2, 5]))
        extra = _unknown_field(number, wire_type, draw(st.binary(max_size=64)))
        if place == "top":
            data, verdict = valid + extra, RUN
        elif place == "metadata":
            data, verdict = encode_request(7, uri, headers, body, meta_extra=extra), RUN
        elif place == "other-entry":
            data, verdict = encode_request(7, uri, headers, body, entry_extra={1: extra}), RUN
        else:  # protobuf implementations differ on map entries with unknown fields
            data, verdict = encode_request(7, uri, headers, body, entry_extra={0: extra}), EITHER
        return data, verdict, f"unknown field {number} (wire type {wire_type}) in {place}"
    if kind == "truncated":
        cut = draw(st.integers(0, len(valid) - 1))
        return valid[:cut], NO, f"truncated to {cut} of {len(valid)} bytes"
    if kind == "garbage":
        return draw(st.binary(max_size=300)), NO, "random bytes"
    at = draw(st.integers(0, len(valid) * 8 - 1))
    flipped = bytearray(valid)
    flipped[at // 8] ^= 1 << (at % 8)
    return bytes(flipped), EITHER, f"bit {at} flipped"


def test_raw_protobuf_bytes_cannot_break_the_server(hostile):
    """Bytes that are not a valid GrpcSnailJobRequest (invalid UTF-8 in uri,
    header keys and values, body; truncation; garbage; bit flips) are
    rejected by the transport or answered, nothing runs that must not, and
    the server keeps answering.  Unknown protobuf fields are ignored: such a
    dispatch runs."""
    client, transport, runs, caller, watch = hostile
    tally = {"rejected": 0, "answered": 0, "ran": 0}

    @settings(max_examples=200, **HYPOTHESIS)
    @given(case=raw_requests())
    def prop(case: Tuple[bytes, str, str]) -> None:
        data, verdict, what = case
        what = f"{verdict}: {what}"
        before, reports_before = runs.count(), len(transport.bodies(REPORT))
        result, elapsed = caller.raw(data)
        assert elapsed < REPLY_WITHIN, f"{what}: answered in {elapsed:.3f}s"
        if isinstance(result, grpc.RpcError):
            # the only acceptable error: the inbound server's "not a SnailJob request" (bytes
            # that are no GrpcSnailJobRequest, invalid UTF-8 in a string field)
            assert result.code() == grpc.StatusCode.INVALID_ARGUMENT and (
                "not a SnailJob request" in str(result.details()) or "not UTF-8" in str(result.details())), \
                f"{what}: {describe(result)}"
            assert verdict != RUN, f"{what}: a parseable request was rejected: {describe(result)}"
            tally["rejected"] += 1
            should_run = False
        else:
            reply = assert_answered(result, elapsed, None, what)
            if verdict == RUN:
                assert (reply.status, reply.data) == (1, "true"), f"{what}: {describe(reply)}"
            if verdict == NO:
                assert reply.data != "true", f"{what}: {describe(reply)}"
            tally["answered"] += 1
            should_run = accepted(reply)
        settle_and_count(runs, before, should_run, what)
        if should_run:
            wait_reports(transport, reports_before + 1, what)
            tally["ran"] += 1
        healthy(caller)

    prop()
    assert tally["rejected"] > 20 and tally["answered"] > 10 and tally["ran"] > 5, tally
    still_works(client, transport, runs)
    watch.check(caller.replies, allow_decode_errors=True)


# --- big inputs -------------------------------------------------------------


def _big_cases() -> List[Tuple[str, str, Dict[str, str], str, str]]:
    """(label, uri, headers, body, verdict) with bodies up to 10 MiB."""
    right = {"SJ-TOKEN": TOKEN}
    ten = 10 * MiB - 1024  # what fits under the server's 10 MiB message cap with the envelope

    def padded(field: str, fill: str, **extra: Any) -> str:
        shell = json.dumps([dispatch_body(ECHO, **{field: "", **extra})])
        return json.dumps([dispatch_body(ECHO, **{field: fill * ((ten - len(shell)) // len(fill)), **extra})])

    return [
        ("10 MiB of '['", DISPATCH, right, "[" * ten, NO),
        ("100k '['", DISPATCH, right, "[" * DEEP, NO),
        ("100k-deep object", DISPATCH, right, '[{"a":' * DEEP, NO),
        ("10 MiB of non-JSON text", DISPATCH, right, ("\u00e9\x00{[\"" * (ten // 8))[:ten // 2], NO),
        ("10 MiB of nulls", DISPATCH, right, "[" + "null," * (ten // 5 - 1) + "null]", NO),
        ("valid dispatch + 10 MiB unknown field", DISPATCH, right, padded("junk", "y"), RUN),
        ("valid dispatch + 10 MiB argsStr", DISPATCH, right,
         json.dumps([dispatch_body(ECHO, argsStr=json.dumps({"jobParams": "z" * (ten - 1024)}))]), RUN),
        ("valid dispatch + 10 MiB garbage wfContext", DISPATCH, right, padded("wfContext", "{["), RUN),
        ("valid dispatch + 10 MiB of extra arguments", DISPATCH, right,
         "[" + json.dumps(dispatch_body(ECHO)) + ",0" * (ten // 2) + "]", EITHER),
        ("100k-deep unknown field", DISPATCH, right,
         json.dumps([dispatch_body(ECHO)])[:-2] + ',"deep":' + "[" * DEEP + "]" * DEEP + "}]", EITHER),
        ("10 MiB ASCII executorInfo", DISPATCH, right, padded("executorInfo", "x"), NO),
        ("10 MiB wrong token", DISPATCH, {"SJ-TOKEN": "q" * ten}, json.dumps([dispatch_body(ECHO)]), NO),
        ("10 MiB token prefix", DISPATCH, {"SJ-TOKEN": TOKEN + "q" * ten}, json.dumps([dispatch_body(ECHO)]), NO),
        ("10 MiB header value next to the token", DISPATCH, {**right, "host-id": "h" * ten},
         json.dumps([dispatch_body(ECHO)]), RUN),
        ("100k headers", DISPATCH, {**{f"h{i}": "v" for i in range(100_000)}, **right},
         json.dumps([dispatch_body(ECHO)]), RUN),
        ("10 MiB URI", "/job/dispatch/v1/" + "u" * ten, right, json.dumps([dispatch_body(ECHO)]), NO),
        ("10 MiB query string", DISPATCH + "?" + "u" * ten, right, json.dumps([dispatch_body(ECHO)]), EITHER),
        ("10 MiB stop body", "/job/stop/v1", right, json.dumps([{"taskBatchId": 1, "pad": "p" * ten}]), NO),
    ]


def test_big_inputs_are_answered_quickly(hostile):
    """10 MiB bodies, headers and URIs; deep nesting: a GrpcResult within 1 s
    (received with the server's 10 MiB limit), nothing runs that must not,
    valid big dispatches run and are reported."""
    client, transport, runs, caller, watch = hostile
    for label, uri, headers, body, verdict in _big_cases():
        before, reports_before = runs.count(), len(transport.bodies(REPORT))
        result, elapsed = caller.call(uri, headers, body)
        reply = assert_answered(result, elapsed, 7, label)
        if verdict == RUN:
            assert (reply.status, reply.data) == (1, "true"), f"{label}: {describe(reply)}"
        if verdict == NO and is_dispatch_path(uri):
            assert reply.data != "true", f"{label}: {describe(reply)}"
        should_run = accepted(reply) and is_dispatch_path(uri)
        settle_and_count(runs, before, should_run, label)
        if should_run:
            wait_reports(transport, reports_before + 1, label)
    healthy(caller)
    still_works(client, transport, runs)
    watch.check(caller.replies)


def test_message_over_the_limit_is_rejected_by_the_transport(hostile):
    """A message above the inbound limit (10 MiB) is refused by gRPC itself;
    nothing runs and the next call is answered."""
    client, transport, runs, caller, watch = hostile
    body = json.dumps([dispatch_body(ECHO, junk="j" * (10 * MiB))])
    result, elapsed = caller.call(DISPATCH, {"SJ-TOKEN": TOKEN}, body)
    assert isinstance(result, grpc.RpcError), describe(result)
    assert result.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, describe(result)
    assert elapsed < REPLY_WITHIN
    settle_and_count(runs, 0, False, "10 MiB + envelope message")
    healthy(caller)
    still_works(client, transport, runs)
    watch.check(caller.replies)


def test_refusal_of_a_huge_name_fits_in_a_reply(hostile):
    """A dispatch under the 10 MiB cap naming an unknown executor (or map
    task) must get a GrpcResult the server can receive; the refusal must not
    echo the name unbounded (``repr`` of a non-printable character is 4
    bytes, so the answer can be twice the request)."""
    client, transport, runs, caller, watch = hostile
    budget = 10 * MiB - 2048
    cases = [
        # 10 MiB request, ~20 MiB answer: more than the client's own 16 MiB send limit
        ("executorInfo of 5 Mi U+0080", json.dumps([dispatch_body("\x80" * (budget // 2))], ensure_ascii=False)),
        # 6 MiB request, ~12 MiB answer: more than the server's 10 MiB receive limit
        ("executorInfo of 3 Mi U+00AD", json.dumps([dispatch_body("\xad" * (budget * 3 // 10))],
                                                   ensure_ascii=False)),
        ("map taskName of 5 Mi U+0080", json.dumps([dispatch_body(MR, 5, mrStage=1, taskName="\x80" * (budget // 2))],
                                                   ensure_ascii=False)),
        ("@job run as a map task named 5 Mi U+0080",
         json.dumps([dispatch_body(ECHO, 4, mrStage=1, taskName="\x80" * (budget // 2))], ensure_ascii=False)),
    ]
    failures = []
    for label, body in cases:
        assert len(body.encode()) < 10 * MiB
        result, elapsed = caller.call(DISPATCH, {"SJ-TOKEN": TOKEN}, body)
        if isinstance(result, grpc.RpcError) or elapsed >= REPLY_WITHIN:
            failures.append(f"{label} ({len(body.encode())} bytes): {describe(result)} after {elapsed:.2f}s")
            continue
        assert result.data == "false", f"{label}: {describe(result)}"
        assert len(result.SerializeToString()) <= SERVER_MAX_INBOUND
    assert runs.count() == 0
    assert not failures, "\n".join(failures)
    healthy(caller)
    still_works(client, transport, runs)
    watch.check(caller.replies)


# --- token secrecy ------------------------------------------------------------


def test_token_never_leaks_into_logs_or_replies(hostile):
    """Every refusal path, near-miss tokens (which contain the token), the
    token under other keys, a job that logs and one that fails: the token is
    in no log record and no reply, while the refusals are logged."""
    client, transport, runs, caller, watch = hostile
    right = {"SJ-TOKEN": TOKEN, **SERVER_HEADERS}
    calls: List[Tuple[str, Dict[str, str], str]] = []
    for bad in NEAR_MISSES[:14]:
        calls.append((DISPATCH, {"SJ-TOKEN": bad}, json.dumps([dispatch_body(ECHO)])))
    for key in WRONG_KEYS:
        calls.append((DISPATCH, {key: TOKEN}, json.dumps([dispatch_body(ECHO)])))
    for body in ["", "not json", "[]", '["x"]', json.dumps([dispatch_body("nope")]),
                 json.dumps([dispatch_body(ECHO, executorType=1)]), json.dumps([dispatch_body(ECHO, taskType=9)]),
                 json.dumps([dispatch_body(ECHO, 4, taskName="ROOT_MAP")]),
                 json.dumps([dispatch_body(MR, 5, mrStage=1, taskName="NOPE")]),
                 json.dumps([dispatch_body(ECHO, jobId="x")]), "[" * DEEP]:
        calls.append((DISPATCH, right, body))
    calls += [("/job/stop/v1", right, "[{}]"), ("/job/stop/v1", right, "{"), ("/nope", right, "[]"),
              ("/sync/version", right, "[]")]
    for uri, headers, body in calls:
        result, elapsed = caller.call(uri, headers, body)
        assert_answered(result, elapsed, 7, f"{uri} {list(headers)[:1]} {body[:60]!r}")

    @sj.job("hostile-logger")
    def noisy(args):
        sj.SnailLog.REMOTE.info("job running with params %s", args.job_params)
        sj.SnailLog.LOCAL.debug("local debug line")
        raise RuntimeError("job failed on purpose")

    client.register(noisy)
    reply = dispatch(client.host_port, dispatch_body("hostile-logger"), token=TOKEN)
    assert reply.data == "true"
    report = wait_for(lambda: [r[0] for r in transport.bodies(REPORT) if r[0]["taskStatus"] == 4])[0]
    assert "job failed on purpose" in json.dumps(report)
    assert runs.count() == 0
    text = watch.caplog.text
    assert "refused" in text and "job failed on purpose" in text  # the paths did log
    assert TOKEN not in text
    # the failing job's "executor raised" ERROR record is expected; every other check still applies
    watch.caplog.records[:] = [r for r in watch.caplog.records
                               if not (r.name.startswith("snailjob.remote") and "executor raised" in r.getMessage())]
    watch.check(caller.replies)


# --- numbers outside the Java types -------------------------------------------


def _dispatch_text(executor: str, **raw_fields: str) -> Tuple[Dict[str, Any], str]:
    """A dispatch whose ``raw_fields`` are written as given JSON literals."""
    body = dispatch_body(executor)
    for name in raw_fields:
        body.pop(name, None)
    text = json.dumps(body)
    for name, literal in raw_fields.items():
        text = text[:-1] + f', "{name}": {literal}}}'
    return body, "[" + text + "]"


def test_ids_outside_int64_are_refused(hostile):
    """``jobId``, ``taskBatchId`` and ``taskId`` are Java ``Long``s
    (protocol.md §4.3): a dispatch carrying one outside int64 cannot come from
    a SnailJob server, and its result could not be reported to one.  It must
    be refused, and nothing may run."""
    client, transport, runs, caller, watch = hostile
    failures = []
    for field in ID_FIELDS:
        for value in (2**63, -2**63 - 1, 2**200, -2**70):
            before = runs.count()
            _, text = _dispatch_text(ECHO, **{field: str(value)})
            result, elapsed = caller.call(DISPATCH, {"SJ-TOKEN": TOKEN}, text)
            reply = assert_answered(result, elapsed, 7, f"{field}={value}")
            time.sleep(0.05)
            if reply.data == "true" or runs.count() != before:
                failures.append(f"{field}={value}: {describe(reply)}, ran {runs.count() - before} time(s)")
    healthy(caller)
    assert not failures, "out-of-range ids were accepted and run:\n" + "\n".join(failures)
    still_works(client, transport, runs)
    watch.check(caller.replies)


def test_executor_timeout_beyond_float_range_gets_a_clean_answer(hostile):
    """``executorTimeout`` = 10**400 (a valid JSON integer): either refused with
    nothing run, or accepted, run and reported; never an internal error, and
    never "refused" while the job runs anyway."""
    client, transport, runs, caller, watch = hostile
    for literal in ("-1" + "0" * 400, "1" + "0" * 400):
        before, reports_before = runs.count(), len(transport.bodies(REPORT))
        _, text = _dispatch_text(ECHO, executorTimeout=literal)
        result, elapsed = caller.call(DISPATCH, {"SJ-TOKEN": TOKEN}, text)
        reply = assert_answered(result, elapsed, 7, f"executorTimeout={literal[:6]}...")
        time.sleep(0.3)
        ran = runs.count() - before
        assert "client error" not in reply.message, \
            f"executorTimeout={literal[:6]}...: the handler raised: {describe(reply)}; the job ran {ran} time(s)"
        if accepted(reply):
            assert ran == 1
            wait_reports(transport, reports_before + 1, f"executorTimeout={literal[:6]}...")
        else:
            assert ran == 0, f"refused ({describe(reply)}) but the job ran"
    healthy(caller)
    still_works(client, transport, runs)
    watch.check(caller.replies)


def test_out_of_range_executor_timeout_does_not_disable_timeouts(make_client, caplog, monkeypatch):
    """A dispatch whose ``executorTimeout`` exceeds what ``threading`` can
    wait for (> ``threading.TIMEOUT_MAX`` ~ 9.2e9 s; Java's int maximum is
    2**31-1) must not kill the timeout thread: later tasks must still be
    stopped by their own ``executorTimeout``."""
    watch = Watch(caplog, monkeypatch)

    @sj.job("hostile-slow")
    def slow(args):
        time.sleep(0.5)  # long enough for the timeout thread to look at this deadline
        return "slow"

    contexts: List[Any] = []

    @sj.job("hostile-wait")
    def wait(args):
        contexts.append(sj.current_task())
        for _ in range(300):  # interrupted (TaskInterrupted) once stopped
            time.sleep(0.01)
        return "waited"

    # no delayed interrupts, so that the timeout thread has nothing else to wait for
    client, transport = make_client([slow, wait], snail_token=TOKEN, snail_interrupt_delay=0)

    def timeouts_work(after: str) -> None:
        contexts.clear()
        reply = dispatch(client.host_port, dispatch_body("hostile-wait", executorTimeout=1), token=TOKEN)
        assert reply.data == "true"
        wait_for(lambda: contexts)
        try:
            wait_for(lambda: contexts[0].is_stopped(), timeout=3)
        except AssertionError:
            raise AssertionError(f"after {after}, a task with executorTimeout=1 was not stopped "
                                 f"within 3 s (thread errors: {watch.thread_errors})") from None

    timeouts_work("start")
    for value in (2**31 - 1, 2**40, 10**300):
        reply = dispatch(client.host_port, dispatch_body("hostile-slow", executorTimeout=value), token=TOKEN)
        assert reply.status in (0, 1)
        time.sleep(0.6)
        timeouts_work(f"a dispatch with executorTimeout={value} (reply {reply.status}/{reply.data})")
    watch.check()
