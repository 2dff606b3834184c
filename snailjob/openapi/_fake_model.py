"""The fake OpenAPI server's model: its jobs, batches, workflows and retry tasks, and what each call does to them.

Apart from the HTTP side (``fake.py``: recording, canned replies, the token
check) and the routing (``_fake_routes.py``: which call runs which handler,
with which fields taken from the request): a ``FakeModel`` holds the state and
answers like SnailJob 1.10 / 2.0, raising ``Fail`` with the server's message
where the server refuses. It has no lock and no thread; the server serializes
every call into it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

FMT = "%Y-%m-%d %H:%M:%S"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
BatchStep = Union[int, Tuple[int, int]]  # a status, or (status, operationReason)


class Fail(Exception):
    """The server refuses: answered as ``{"status": status, "message": message}``."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def now() -> str:
    return datetime.now().strftime(FMT)


def need(body: Dict[str, Any], name: str) -> Any:
    """``body[name]``, which the server requires (not null, not blank)."""
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise Fail(f"{name} cannot be null")
    return value


@dataclass
class Batch:
    data: Dict[str, Any]
    script: List[BatchStep]
    step: int = 0

    def read(self, status_key: str) -> Dict[str, Any]:
        entry = self.script[min(self.step, len(self.script) - 1)]
        self.step += 1
        status, reason = entry if isinstance(entry, tuple) else (entry, 0)
        self.data[status_key] = status
        self.data["operationReason"] = reason
        self.data["updateDt"] = now()
        return dict(self.data)


@dataclass
class Workflow:
    id: int
    biz_id: str
    name: str
    group: str
    job_ids: List[int]
    status: int = 0
    wf_context: str = "{}"
    node_ids: List[int] = field(default_factory=list)


class FakeModel:
    """The state behind ``FakeOpenApiServer`` (which exposes ``namespace``, ``group``,
    ``batch_script``, ``group_enabled``, ``jobs``, ``workflows`` and ``retries`` as its own)."""

    def __init__(self, *, namespace: str, group: str, batch_script: Sequence[BatchStep]) -> None:
        self.namespace = namespace
        self.group = group
        self.batch_script: List[BatchStep] = list(batch_script)
        self.group_enabled = True
        self.jobs: Dict[int, Dict[str, Any]] = {}
        self.workflows: Dict[int, Workflow] = {}
        self.retries: Dict[int, Dict[str, Any]] = {}
        self.batches: Dict[int, Batch] = {}
        self.wf_batches: Dict[int, Batch] = {}
        self.job_scripts: Dict[int, List[BatchStep]] = {}
        self._ids = iter(range(1001, 10**9))

    # what a test sets up (FakeOpenApiServer's methods of the same names)

    def set_batch_script(self, job_id: int, statuses: Sequence[BatchStep]) -> None:
        self.job_scripts[job_id] = list(statuses)

    def add_workflow(self, job_ids: Sequence[int], biz_id: Optional[str], name: str, status: int,
                     wf_context: str) -> int:
        wf_id = next(self._ids)
        self.workflows[wf_id] = Workflow(wf_id, biz_id or f"wf{wf_id}", name, self.group, list(job_ids),
                                         status, wf_context, [next(self._ids) for _ in job_ids])
        return wf_id

    def add_retry(self, scene: str, biz_no: str, args_str: str, executor_name: str, retry_status: int) -> int:
        retry_id = next(self._ids)
        self.retries[retry_id] = {
            "id": retry_id, "namespaceId": self.namespace, "groupName": self.group, "sceneName": scene,
            "idempotentId": f"idem{retry_id}", "bizNo": biz_no, "argsStr": args_str, "extAttrs": "",
            "executorName": executor_name, "serializerName": "jackson", "nextTriggerAt": now(),
            "retryCount": 0, "retryStatus": retry_status, "taskType": 1, "parentId": 0, "bucketIndex": 0,
            "deleted": 0, "createDt": now(), "updateDt": now()}
        return retry_id

    def batches_of(self, job_id: int) -> List[int]:
        return [bid for bid, b in self.batches.items() if b.data["jobId"] == job_id]

    def workflow_batches_of(self, workflow_id: int) -> List[int]:
        return [bid for bid, b in self.wf_batches.items() if b.data["workflowId"] == workflow_id]

    # the calls' handlers (_fake_routes.py maps the requests to them)
    # jobs
    def job(self, job_id: Any) -> Dict[str, Any]:
        job = self.jobs.get(job_id) if isinstance(job_id, int) else None
        if job is None:
            raise Fail("job can not be null.")
        return job

    def job_by_biz(self, biz_id: str) -> Optional[Dict[str, Any]]:
        return next((j for j in self.jobs.values() if j["bizId"] == biz_id), None)

    def job_by_biz_or_fail(self, biz_id: str, message: str) -> Dict[str, Any]:
        job = self.job_by_biz(biz_id)
        if job is None:
            raise Fail(message)
        return job

    def _check_job_body(self, body: Dict[str, Any]) -> None:
        group = need(body, "groupName")
        if not isinstance(group, str) or not _NAME.match(group):
            raise Fail("groupName: Only supports 1~64 characters, including numbers, letters, underscores, "
                       "and hyphens")
        if body.get("triggerType") == 5:
            times = sorted(datetime.strptime(t, FMT) for t in json.loads(body.get("triggerInterval") or "[]"))
            if not times or times[0] < datetime.now():
                raise Fail("The submission time is less than the current time.")
            if any((b - a).total_seconds() < 10 for a, b in zip(times, times[1:])):
                raise Fail("There are combinations with intervals less than 10(s)")

    def add_job(self, body: Dict[str, Any], by_biz_id: bool) -> int:
        if by_biz_id:
            biz_id = need(body, "bizId")
            if self.job_by_biz(biz_id) is not None:
                raise Fail("bizId already exists")
        self._check_job_body(body)
        job_id = next(self._ids)
        job = {k: v for k, v in body.items() if k != "id"}
        job.update(id=job_id, bizId=body.get("bizId") or str(1_900_000_000_000_000_000 + job_id),
                   createDt=now(), updateDt=now())
        self.jobs[job_id] = job
        return job_id

    def update_job(self, body: Dict[str, Any], by_biz_id: bool) -> bool:
        if by_biz_id:
            job = self.job_by_biz_or_fail(need(body, "bizId"), "Job is null, update failed")
        else:
            job_id = body.get("id")
            if job_id is None:
                raise Fail("ID cannot be empty")
            job = self.jobs.get(job_id) or {}
            if not job:
                raise Fail("Job is null, update failed")
        self._check_job_body(body)
        job.update({k: v for k, v in body.items() if v is not None and k not in ("id", "groupName", "bizId")})
        job["updateDt"] = now()
        return True

    @staticmethod
    def job_response(job: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        if job is None:
            return None
        out = {k: v for k, v in job.items() if v is not None}
        out["argsType"] = str(job.get("argsType", 1))  # a String in the server's JobResponse
        out.update(bucketIndex=0, deleted=0, nextTriggerAt=now())
        return out

    @staticmethod
    def exists(job: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        if job is None:
            return None
        return {"groupName": job["groupName"], "id": job["id"], "bizId": job["bizId"],
                "jobStatus": job.get("jobStatus")}

    def trigger(self, job: Dict[str, Any]) -> bool:
        if not self.group_enabled:
            raise Fail(f"Group [{job['groupName']}] is closed, manual execution is not supported.")
        batch_id = next(self._ids)
        self.batches[batch_id] = Batch({
            "id": batch_id, "jobId": job["id"], "jobName": job.get("jobName"), "groupName": job["groupName"],
            "taskType": str(job.get("taskType")), "executorType": job.get("executorType"),
            "executorInfo": job.get("executorInfo"), "createDt": now(), "executionAt": now()},
            list(self.job_scripts.get(job["id"], self.batch_script)))
        return True

    def job_status(self, key_status: Tuple[Any, int]) -> bool:
        key, status = key_status
        if status not in (0, 1):
            raise Fail("Status cannot be empty")
        job = self.jobs.get(key) if isinstance(key, int) else self.job_by_biz(key)
        if job is None:
            raise Fail("update job status failed")
        job["jobStatus"] = status
        return True

    def delete_jobs(self, ids: List[int]) -> bool:
        if any(self.jobs.get(i, {}).get("jobStatus", 1) != 0 for i in ids):
            raise Fail("Failed to delete the scheduled task. Ensure the task is closed, and confirm whether "
                       "the job exists.")
        for i in ids:
            del self.jobs[i]
        return True

    def read_batch(self, batches: Dict[int, Batch], batch_id: int, key: str) -> Optional[Dict[str, Any]]:
        batch = batches.get(batch_id)
        return None if batch is None else batch.read(key)

    # workflows
    def workflow_by_biz(self, biz_id: str) -> Optional[Workflow]:
        return next((w for w in self.workflows.values() if w.biz_id == biz_id), None)

    def workflow_by_biz_or_fail(self, biz_id: str) -> Workflow:
        wf = self.workflow_by_biz(biz_id)
        if wf is None:
            raise Fail("Failed to delete workflow task, please check if the task status is closed")
        return wf

    @staticmethod
    def wf_exists(wf: Optional[Workflow]) -> Optional[Dict[str, Any]]:
        if wf is None:
            return None
        return {"groupName": wf.group, "id": wf.id, "bizId": wf.biz_id, "workflowStatus": wf.status, "version": 1}

    def trigger_workflow(self, body: Dict[str, Any], by_biz_id: bool) -> bool:
        # both request classes require workflowId (WorkflowTriggerBizIdRequest inherits it);
        # the id-based one also the deprecated jobId
        if by_biz_id:
            need(body, "workflowId")
            wf = self.workflow_by_biz(need(body, "bizId"))
        else:
            need(body, "jobId")
            wf = self.workflows.get(need(body, "workflowId"))
        if wf is None:
            raise Fail("workflow can not be null.")
        if not self.group_enabled:
            raise Fail(f"Group [{wf.group}] is closed, manual execution is not supported.")
        context = json.loads(wf.wf_context or "{}")
        tmp = body.get("tmpWfContext")
        if tmp:
            merged = json.loads(tmp)
            merged.update(context)  # the workflow's own context wins, as on the server
            context = merged
        wf_batch_id = next(self._ids)
        script = list(self.batch_script)
        final = script[-1] if isinstance(script[-1], int) else script[-1][0]
        job_batches = []
        for job_id, node_id in zip(wf.job_ids, wf.node_ids):
            batch_id = next(self._ids)
            job = self.jobs.get(job_id, {"id": job_id, "groupName": wf.group})
            self.batches[batch_id] = Batch({
                "id": batch_id, "jobId": job_id, "jobName": job.get("jobName"), "groupName": wf.group,
                "taskType": str(job.get("taskType")), "workflowTaskBatchId": wf_batch_id,
                "workflowNodeId": node_id, "createDt": now()}, [final])
            job_batches.append(batch_id)
        self.wf_batches[wf_batch_id] = Batch({"workflowId": wf.id, "jobBatches": job_batches,
                                               "wfContext": json.dumps(context)}, script)
        return True

    def workflow_status(self, key_status: Tuple[Any, int]) -> bool:
        key, status = key_status
        if status not in (0, 1):
            raise Fail("Status cannot be empty")
        wf = self.workflows.get(key) if isinstance(key, int) else self.workflow_by_biz(key)
        if wf is None:
            raise Fail("workflow does not exist")
        wf.status = status
        return True

    def delete_workflows(self, ids: List[int]) -> bool:
        if any(i not in self.workflows or self.workflows[i].status != 0 for i in ids):
            raise Fail("Failed to delete workflow task, please check if the task status is closed")
        for i in ids:
            del self.workflows[i]
        return True

    def workflow_batch(self, wf_batch_id: int) -> Optional[Dict[str, Any]]:
        batch = self.wf_batches.get(wf_batch_id)
        if batch is None:
            return None
        state = batch.read("workflowBatchStatus")
        wf = self.workflows.get(state["workflowId"])
        if wf is None:
            return None
        level: Optional[Dict[str, Any]] = None
        for job_id, node_id, batch_id in reversed(list(zip(wf.job_ids, wf.node_ids, state["jobBatches"]))):
            job_batch = self.batches[batch_id].read("taskBatchStatus")
            node = {"id": node_id, "nodeType": 1, "nodeName": f"node{node_id}", "priorityLevel": 1,
                    "workflowNodeStatus": 1, "failStrategy": 1, "taskBatchStatus": job_batch["taskBatchStatus"],
                    "jobTask": {"jobId": job_id}, "jobBatchList": [job_batch]}
            level = {"nodeType": 1, "conditionNodes": [node], **({"childNode": level} if level else {})}
        out = {"id": wf.id, "bizId": wf.biz_id, "workflowName": wf.name, "groupName": wf.group, "triggerType": 2,
               "blockStrategy": 1, "triggerInterval": "86400", "executorTimeout": 60, "workflowStatus": wf.status,
               "description": "", "workflowBatchStatus": state["workflowBatchStatus"],
               "wfContext": state["wfContext"], "notifyIds": []}
        if level is not None:
            out["nodeConfig"] = level
        return out

    # retries
    def retry(self, retry_id: int) -> Dict[str, Any]:
        if retry_id not in self.retries:
            raise Fail(f"Retry task not found:[{retry_id}].")
        return dict(self.retries[retry_id])

    def retry_trigger(self, retry_id: Any) -> bool:
        retry = self.retry(retry_id)
        if not self.group_enabled:
            raise Fail(f"Group [{retry['groupName']}] is closed, manual execution is not supported.")
        retry["retryCount"] += 1
        self.retries[retry_id] = retry
        return True

    def retry_status(self, key_status: Tuple[Any, int]) -> bool:
        key, status = key_status
        if status not in (0, 1, 2, 3):
            raise Fail(f"Retry status error. [{status}]")
        if key not in self.retries:
            raise Fail("Retry task not found")
        self.retries[key]["retryStatus"] = status
        return True
