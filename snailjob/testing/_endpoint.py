"""The server emulator's gRPC endpoint and protocol checks.

The inbound handler (every call recorded as an ``Exchange``), the blank-uri
hold, routing by path, the token check, and the node-facing URIs:
``/beat``, ``/register/job/executors`` and ``/sync/version``.  The job,
retry and log URIs are handled by their own mixins.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from typing import Any, Dict, List, NoReturn, Optional, Tuple

import grpc

from snailjob.testing._transport import _TransportMixin
from snailjob.testing.records import ClientNode, Exchange, RecordedBeat
from snailjob.testing.support import (
    _INT_RE,
    _arg0,
    _Failure,
    _fmt,
    _header,
    _parse_args,
    _path_of,
    logger,
)
from snailjob.wire import snailjob_pb2 as pb2
from snailjob.wire.codec import dumps

_BLANK_URI_HOLD_MAX = 30.0
_MSG_BEAT_OK = ""
_MSG_REGISTER_OK = "Batch Register Job Executors Processed Successfully"
_MSG_REGISTER_NULL = "Beat register job executors arg is null"


class _EndpointMixin(_TransportMixin):
    """Inbound gRPC: handling, routing, token check, beats and registration."""

    # ------------------------------------------------------------------
    # inbound gRPC
    # ------------------------------------------------------------------

    def _handle(self, request: pb2.GrpcSnailJobRequest, context: grpc.ServicerContext) -> pb2.GrpcResult:
        uri = request.metadata.uri
        headers = dict(request.metadata.headers)
        exchange = Exchange(uri=uri, headers=headers, body=request.body, req_id=request.reqId, at=time.time())
        with self._cond:
            self._exchanges.append(exchange)
        if not uri.strip():
            self._hold_forever(context)
        self._tls.req_id = request.reqId  # some retry-module messages name it
        status, message, data = self._process(uri, headers, request.body)
        text = dumps(data)
        with self._cond:
            exchange.status, exchange.message, exchange.data = status, message, text
            self._cond.notify_all()
        return pb2.GrpcResult(reqId=request.reqId, status=status, message=message, data=text)

    def _hold_forever(self, context: grpc.ServicerContext) -> NoReturn:
        """The server logs "uri can not be null" and never answers: hold the
        call until the caller gives up (bounded)."""
        finished = threading.Event()
        context.add_callback(finished.set)
        remaining = context.time_remaining()
        limit = _BLANK_URI_HOLD_MAX if remaining is None else min(_BLANK_URI_HOLD_MAX, max(0.0, remaining))
        deadline = time.monotonic() + limit
        while not finished.is_set() and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            finished.wait(min(left, 0.1))
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                      "SnailJob server never answers a blank uri (emulator gave up)")
        raise AssertionError("unreachable")  # pragma: no cover

    def _process(self, uri: str, headers: Dict[str, str], body: str) -> Tuple[int, str, Any]:
        try:
            args = _parse_args(body)
            self._check_token(headers)
            path = _path_of(uri)
            handler = self._handlers.get(path)
            if handler is None:
                raise _Failure(f"No matching handler found. Path:[{path}] method:[{{}}]")
            status, message, data = handler(args, headers)
            return status, message or "", data
        except _Failure as failure:
            return 0, failure.message, failure.data
        except Exception as exc:  # a bug here must not hang the caller
            logger.exception("emulator handler failed for %s", uri)
            return 0, f"{type(exc).__name__}: {exc}", None

    def _check_token(self, headers: Dict[str, str]) -> None:
        group = headers.get("group-name")
        namespace = headers.get("namespace")
        token = headers.get("token")
        if token is None or not token.strip():
            raise _Failure(f"Token authentication failed. [namespace:{_fmt(namespace)} "
                           f"groupName:{_fmt(group)} token:{_fmt(token)}]")
        if group is None:
            raise _Failure("")  # NullPointerException in CacheToken.get: empty message
        if self._expected_token(group, namespace) != token:
            raise _Failure(f"Token authentication failed. [namespace:{_fmt(namespace)} "
                           f"groupName:{_fmt(group)} token:{_fmt(token)}]")

    # -- /beat -----------------------------------------------------------

    def _on_beat(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        raw_port = _header(headers, "host-port")
        if raw_port is None:
            raise _Failure("Cannot parse null string: null")
        if not _INT_RE.fullmatch(raw_port):
            raise _Failure(f'For input string: "{raw_port}"')
        port = int(raw_port)
        host_id = _header(headers, "host-id")
        host_ip = _header(headers, "host-ip")
        group = headers.get("group-name", "")
        namespace = headers.get("namespace", "")
        now, mono = time.time(), time.monotonic()
        with self._cond:
            self._beats.append(RecordedBeat(host_id, host_ip, port, dict(headers), args, now))
            if not host_id or not host_ip:
                self._problem(f"/beat without host-id or host-ip (host-id={host_id!r}, host-ip={host_ip!r})")
            elif "@" in host_id:
                self._problem(f"host-id {host_id!r} contains '@'")
            key = (namespace, group, host_id or "")
            node = self._nodes.get(key)
            if node is not None and self._expired(node):
                del self._nodes[key]
                node = None
            if node is None:
                node = ClientNode(host_id=host_id or "", host_ip=host_ip or "", host_port=port,
                                  namespace=namespace, group=group,
                                  labels=self._parse_labels(_header(headers, "label"), host_id),
                                  headers=dict(headers), first_beat=now, last_beat=now,
                                  registered=self.register_delay <= 0, last_beat_monotonic=mono)
                self._nodes[key] = node
                if not node.registered and self._scheduler is not None:
                    self._scheduler.schedule(self.register_delay, functools.partial(self._register, node))
            else:
                node.last_beat, node.last_beat_monotonic = now, mono
                node.beat_count += 1
                node.headers = dict(headers)
                node.alive = True
                if node.address != f"{host_ip}:{port}":
                    self._problem(f"node {host_id} beat from {host_ip}:{port} but is registered at "
                                  f"{node.address}; the server keeps the first address")
            self._cond.notify_all()
        return 1, _MSG_BEAT_OK, "PONG"

    def _register(self, node: ClientNode) -> None:
        with self._cond:
            node.registered = True
            self._cond.notify_all()

    def _parse_labels(self, raw: Optional[str], host_id: Optional[str]) -> Dict[str, str]:
        if raw is None or not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self._problem(f"node {host_id}: label header {raw!r} is not a JSON object of strings "
                          "(the server's node refresh would fail)")
            return {}
        return dict(value)

    # -- /register/job/executors ---------------------------------------------

    def _on_register_executors(self, args: Optional[List[Any]],
                               headers: Dict[str, str]) -> Tuple[int, str, Any]:
        first = _arg0(args)
        if first is None:
            return 0, _MSG_REGISTER_NULL, False
        if not isinstance(first, list):
            raise _Failure("Cannot deserialize value of type `java.util.ArrayList` from "
                           f"{type(first).__name__}")
        names: List[str] = []
        for item in first:
            if not isinstance(item, dict):
                raise _Failure("Cannot deserialize value of type `JobExecutorRequest` from "
                               f"{type(item).__name__}")
            name = item.get("executorInfo")
            if isinstance(name, str) and name:
                names.append(name)
        with self._cond:
            self._executors.update(names)
            self._cond.notify_all()
        return 1, _MSG_REGISTER_OK, True

    # -- /sync/version -------------------------------------------------------

    def _on_sync_version(self, args: Optional[List[Any]], headers: Dict[str, str]) -> Tuple[int, str, Any]:
        return 1, "", self.config
