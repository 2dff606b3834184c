# mypy: allow-untyped-defs
"""A tiny stand-in SnailJob node, used only to check the harness itself.

It is NOT the product client: it has no executors, no logging and no map/reduce.
It beats, registers executor names, accepts every dispatch, sends one log line
per task, and reports each task
with whatever ``behave(dispatch) -> (task_status, result, seconds_to_sleep)``
returns, its report passed through ``shape_report(report) -> report`` (to send
what the product client never would). A stop request (``/job/stop/v1``) cancels
the pending report of that batch; every other call the server makes is recorded
in ``calls`` and answered ``true``. Needs grpcio (a test dependency); messages
are encoded by hand so that this file does not depend on the package under test.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent import futures

import grpc

METHOD = "/UnaryRequest/unaryRequest"


# -- minimal protobuf -----------------------------------------------------------

def _varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(no, value):
    if isinstance(value, int):
        return _varint(no << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(no << 3 | 2) + _varint(len(data)) + data


def _parse(buf):
    fields: dict = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        no, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _read_varint(buf, i)
        elif wt == 2:
            ln, i = _read_varint(buf, i)
            val, i = buf[i:i + ln], i + ln
        else:
            raise ValueError(f"wire type {wt}")
        fields.setdefault(no, []).append(val)
    return fields


def _read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def encode_request(req_id, uri, headers, body):
    meta = _field(3, uri) + b"".join(_field(7, _field(1, k) + _field(2, v)) for k, v in headers.items())
    return _field(1, req_id) + _field(2, meta) + _field(3, body)


def decode_request(raw):
    f = _parse(raw)
    meta = _parse(f.get(2, [b""])[0])
    headers = {}
    for entry in meta.get(7, []):
        e = _parse(entry)
        headers[e.get(1, [b""])[0].decode()] = e.get(2, [b""])[0].decode()
    return {"reqId": f.get(1, [0])[0], "uri": meta.get(3, [b""])[0].decode(), "headers": headers,
            "body": f.get(3, [b""])[0].decode()}


def encode_result(req_id, status, message, data):
    return _field(1, req_id) + _field(2, status) + _field(3, message) + _field(4, data)


def decode_result(raw):
    f = _parse(raw)
    return {"reqId": f.get(1, [0])[0], "status": f.get(2, [0])[0],
            "message": f.get(3, [b""])[0].decode(), "data": f.get(4, [b""])[0].decode()}


# -- the node -----------------------------------------------------------------------

class ProbeClient:
    def __init__(self, server_port, namespace, group, token, host_port, executors=("probeExecutor",),
                 behave=None, beat_every=3.0, shape_report=None):
        self.server_port, self.namespace, self.group, self.token = server_port, namespace, group, token
        self.host_port = host_port
        self.executors = list(executors)
        self.behave = behave or (lambda d: (3, {"echo": d.get("argsStr")}, 0))
        self.beat_every = beat_every
        self.shape_report = shape_report or (lambda report: report)
        self.calls = []  # (uri, args) of the server's other calls (retry dispatches, callbacks, ...)
        self.host_id = f"probe-{host_port}"
        self.dispatches, self.stops, self.replies, self.log_replies = [], [], [], []
        self._stopped_batches = set()
        self._halt = threading.Event()
        self._req = int(time.time() * 1000)
        self._lock = threading.Lock()

    def headers(self):
        return {"token": self.token, "group-name": self.group, "namespace": self.namespace,
                "host-id": self.host_id, "host-ip": "127.0.0.1", "host-port": str(self.host_port),
                "executor-type": "2", "system-version": "probe", "label": json.dumps({"state": "up"})}

    def call(self, uri, args):
        with self._lock:
            self._req += 1
            req_id = self._req
        raw = self._stub(encode_request(req_id, uri, self.headers(), json.dumps(args)), timeout=5)
        res = decode_result(raw)
        self.replies.append((uri, res))
        return res

    def _handle(self, raw, context):
        req = decode_request(raw)
        try:
            args = json.loads(req["body"] or "[]")
        except ValueError:
            args = []
        if req["uri"] == "/job/dispatch/v1":
            d = args[0]
            self.dispatches.append(d)
            threading.Thread(target=self._run, args=(d,), daemon=True).start()
        elif req["uri"] == "/job/stop/v1":
            self.stops.append(args[0] if args else {})
            if args and isinstance(args[0], dict):
                self._stopped_batches.add(args[0].get("taskBatchId"))
        else:
            self.calls.append((req["uri"], args))
        return encode_result(req["reqId"], 1, "", "true")

    def _run(self, d):
        status, result, pause = self.behave(d)
        end = time.monotonic() + pause
        while time.monotonic() < end and d.get("taskBatchId") not in self._stopped_batches:
            time.sleep(0.1)
        if d.get("taskBatchId") in self._stopped_batches:
            return
        now = str(int(time.time() * 1000))
        fields = {"time_stamp": now, "level": "INFO", "thread": "probe",
                  "message": f"probe ran task {d['taskId']}", "location": "probe_client._run",
                  "host": "127.0.0.1", "port": str(self.host_port)}
        if status != 3:
            fields["throwable"] = "RuntimeError: probe failure\n\tat probe"
        self.log_replies.append(self.call("/batch/server/report/log", [[{
            "logType": "JOB", "namespaceId": self.namespace, "groupName": self.group, "jobId": d["jobId"],
            "taskBatchId": d["taskBatchId"], "taskId": d["taskId"], "realTime": int(now),
            "fieldList": [{"name": k, "value": v} for k, v in fields.items()]}]]))
        self.call("/report/dispatch/result", [self.shape_report({
            "jobId": d["jobId"], "taskBatchId": d["taskBatchId"], "taskId": d["taskId"],
            "workflowTaskBatchId": d.get("workflowTaskBatchId"), "workflowNodeId": d.get("workflowNodeId"),
            "taskType": d["taskType"], "groupName": d["groupName"], "taskStatus": status,
            "executeResult": {"status": 1 if status == 3 else 0, "result": result, "message": ""},
            "retryScene": d.get("retryScene"), "retry": bool(d.get("retry")),
            "retryStatus": bool(d.get("retryStatus")), "wfContext": None})])

    def start(self):
        self._server = grpc.server(futures.ThreadPoolExecutor(8))
        handler = grpc.unary_unary_rpc_method_handler(self._handle)
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "UnaryRequest", {"unaryRequest": handler})])
        self._server.add_insecure_port(f"127.0.0.1:{self.host_port}")
        self._server.start()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{self.server_port}")
        self._stub = self._channel.unary_unary(METHOD)
        self.first_beat = self.call("/beat", ["PING"])
        self.call("/register/job/executors", [[{"executorInfo": e} for e in self.executors]])
        threading.Thread(target=self._beat_loop, daemon=True).start()
        return self

    def _beat_loop(self):
        while not self._halt.wait(self.beat_every):
            try:
                self.call("/beat", ["PING"])
            except grpc.RpcError:
                pass

    def stop(self):
        self._halt.set()
        self._server.stop(0)
        self._channel.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
