"""What every floor shares: the settings it reads, the headers it sends,
and the messages it builds. Imports no gRPC library, so that the floor
without grpcio (``floor_h2.py``) stays bare of it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Dict, Set

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import NAMESPACE, load_pb2  # noqa: E402


class FloorBase:
    """Settings, headers and message building shared by the floors."""

    def __init__(self) -> None:
        env = os.environ
        self.pb = load_pb2()
        self.group = env.get("SNAIL_GROUP_NAME", "bench_group")
        self.port = int(env.get("SNAIL_HOST_PORT", "17889"))
        self.bind = f"{env.get('SNAIL_BIND_HOST', '127.0.0.1')}:{self.port}"
        self.target = f"{env.get('SNAIL_SERVER_HOST', '127.0.0.1')}:{env.get('SNAIL_SERVER_PORT', '17888')}"
        self.headers: Dict[str, str] = {
            "host-id": "py-floor", "host-ip": "127.0.0.1", "host-port": str(self.port), "namespace": NAMESPACE,
            "group-name": self.group, "token": env.get("SNAIL_TOKEN", ""), "executor-type": "2",
        }
        self.req_ids = 0
        self.in_flight: Set[Any] = set()  # a dropped future cancels its call
        self.lock = threading.Lock()

    def request(self, uri: str, body: str) -> Any:
        """A ``GrpcSnailJobRequest`` with this node's headers."""
        self.req_ids += 1  # not atomic; the server does not care
        return self.pb.GrpcSnailJobRequest(reqId=self.req_ids, metadata=self.pb.Metadata(uri=uri, headers=self.headers),
                                           body=body)

    def report_for(self, dispatch_body: str) -> Any:
        """The success report of the task in a dispatch body."""
        task = json.loads(dispatch_body)[0]
        report = {
            "jobId": task["jobId"], "taskBatchId": task["taskBatchId"], "taskId": task["taskId"],
            "taskType": task["taskType"], "groupName": task.get("groupName") or self.group, "taskStatus": 3,
            "executeResult": {"status": 1, "result": None, "message": ""}, "retry": False, "retryStatus": False,
        }
        return self.request("/report/dispatch/result", json.dumps([report]))
