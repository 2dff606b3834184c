"""The server -> client calls of a job: ``/job/dispatch/v1`` and ``/job/stop/v1``.

``_JobCalls`` builds a task's dispatch request, makes the call with the
server's RPC-level retries and failover (``RequestClientActor``) and sends
stops (``RealStopTaskActor``).  It needs the state and the transport; what
a failed or refused dispatch means for the task is the caller's business,
handed back through the ``_DispatchOutcome`` the caller passes, so this
module knows nothing of results and completion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Protocol

from snailjob.testing._state import _State
from snailjob.testing._support import _FAIL, _MSG_CLIENT_MISSING, _STOP_TIMEOUT
from snailjob.testing._transport import _Transport
from snailjob.testing.batches import EmulatedBatch
from snailjob.testing.records import EmulatedTask
from snailjob.wire import enums
from snailjob.wire.codec import dumps

_STOP_ATTEMPTS = 3
_STOP_RETRY_WAIT = 1.0


@dataclass
class _DispatchCtx:
    retry: bool = False
    retry_scene: Optional[int] = None


class _DispatchOutcome(Protocol):
    """Where a dispatch's failure goes (the jobs' result rules; lock held)."""

    def fail_directly(self, task: EmulatedTask, message: str) -> None: ...

    def callback(self, task: EmulatedTask, task_status: int, execute_result: Dict[str, Any],
                 wf_context: Optional[str], is_retry: bool, retry_scene: Optional[int]) -> None: ...


class _JobCalls:
    """Dispatch and stop calls to the nodes (never under the lock)."""

    def __init__(self, state: _State, transport: _Transport) -> None:
        self._state = state
        self._transport = transport

    @staticmethod
    def dispatch_body(batch: EmulatedBatch, task: EmulatedTask, ctx: _DispatchCtx) -> Dict[str, Any]:
        job = batch._job
        body: Dict[str, Any] = {
            "namespaceId": job.namespace,
            "jobId": job.job_id,
            "jobBizId": job.biz_id or None,
            "taskBatchId": batch.id,
            "taskId": task.task_id,
            "taskType": job.task_type,
            "groupName": job.group,
            "parallelNum": job.parallel_num,
            "executorType": job.executor_type,
            "executorInfo": job.executor,
            "executorTimeout": job.executor_timeout,
            "taskName": task.task_name,
            "mrStage": task.mr_stage,
            "argsStr": task.args_str,
            "shardingTotal": task.sharding_total,
            "shardingIndex": task.sharding_index,
            "workflowTaskBatchId": batch.workflow.id if batch.workflow is not None else None,
            "workflowNodeId": batch.workflow_node_id,
            "wfContext": batch._wf_context_text(),
            "retryCount": task.retry_count,
            "retryScene": ctx.retry_scene,
            "retry": ctx.retry,
            "retryStatus": ctx.retry,
        }
        return {key: value for key, value in body.items() if value is not None}

    def dispatch(self, task: EmulatedTask, ctx: _DispatchCtx, outcome: _DispatchOutcome) -> None:
        """``RequestClientActor``: dispatch one task (runs on a pool thread)."""
        st, transport = self._state, self._transport
        if st.stopping.is_set():
            return
        with st.cond:
            batch = st.batches[task.batch_id]
            job = batch._job
            node = transport.node_by_id(task.node, job) if task.node else None
            if node is None or not transport.is_live(node):
                task.message = _MSG_CLIENT_MISSING
                outcome.fail_directly(task, _MSG_CLIENT_MISSING)
                st.cond.notify_all()
                return
            body = self.dispatch_body(batch, task, ctx)
            task.dispatch_requests.append(body)
            text = dumps([body])
            attempts = job.max_retry_times if job.max_retry_times > 0 and not ctx.retry else 1
        attempt = 0
        while True:
            attempt += 1
            with st.lock:
                headers = transport.server_headers(node)
            reply, error, data_value = transport.call_and_record(node, enums.URI_DISPATCH, text, headers,
                                                                 task.dispatch_replies)
            if error is None:
                break
            if st.stopping.is_set():
                return
            with st.cond:
                node.alive = False  # a failed call marks the node not alive until its next beat
                if attempt >= attempts:
                    outcome.fail_directly(task, error)
                    st.cond.notify_all()
                    return
            if st.stopping.wait(job.retry_interval):
                return
            with st.cond:
                live = transport.live_nodes(job)
                if not live:
                    outcome.fail_directly(task, f"{error} (no live node to fail over to)")
                    st.cond.notify_all()
                    return
                node = live[0]
                task.node, task.client_address = node.host_id, node.address
        assert reply is not None
        with st.cond:
            if attempt > 1:
                task.retry_count = attempt
            if not (reply.status == 1 and data_value is True):
                outcome.callback(task, _FAIL, {"status": 0, "result": None, "message": reply.message},
                                 None, ctx.retry, ctx.retry_scene)
            st.cond.notify_all()

    def send_stop(self, batch: EmulatedBatch, host_id: str) -> None:
        """``RealStopTaskActor``: ``/job/stop/v1`` to a live node, 1 s deadline,
        up to 3 attempts 1 s apart; the reply is ignored."""
        st, transport = self._state, self._transport
        node = transport.node_by_id(host_id, batch._job)
        if node is None or not transport.is_live(node):
            return
        body = dumps([{"jobId": batch.job_id, "taskBatchId": batch.id, "groupName": batch._job.group}])

        def attempt(n: int) -> None:
            with st.lock:
                headers = transport.server_headers(node)
            _, error, _ = transport.invoke(node, enums.URI_STOP, body, headers, _STOP_TIMEOUT)
            if error is not None and n < _STOP_ATTEMPTS:
                st.schedule(_STOP_RETRY_WAIT, lambda: attempt(n + 1))

        transport.submit(lambda: attempt(1))
