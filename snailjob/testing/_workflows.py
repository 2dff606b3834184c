"""Linear workflows in the server emulator: opening the next node and merging the workflow context."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

from snailjob.testing._jobs import _JobsMixin
from snailjob.testing.batches import EmulatedBatch, EmulatedWorkflow, _Job
from snailjob.testing.support import _CLUSTER, _SUCCESS
from snailjob.wire.codec import dumps

_WORKFLOW_NODE_KEYS = frozenset({
    "executor", "task_type", "args_str", "parallel_num", "executor_timeout",
    "max_retry_times", "retry_interval", "shard_num", "executor_type", "labels",
})


class _WorkflowsMixin(_JobsMixin):
    """``trigger_workflow`` and the step from one node's batch to the next."""

    # ------------------------------------------------------------------
    # driving workflows
    # ------------------------------------------------------------------

    def trigger_workflow(self, nodes: Sequence[Mapping[str, Any]],
                         wf_context: Optional[Dict[str, Any]] = None) -> EmulatedWorkflow:
        """Run a linear workflow: each element is a dict of ``trigger()``
        arguments (``executor`` required).  Each node's tasks are dispatched
        with ``workflowTaskBatchId``, ``workflowNodeId`` and the merged
        ``wfContext``."""
        self._require_running()
        if not nodes:
            raise ValueError("a workflow needs at least one node")
        specs: List[Dict[str, Any]] = []
        jobs: List[_Job] = []
        for spec in nodes:
            unknown = set(spec) - _WORKFLOW_NODE_KEYS
            if unknown:
                raise TypeError(f"unknown workflow node key(s): {sorted(unknown)}")
            if "executor" not in spec:
                raise TypeError("every workflow node needs 'executor'")
            specs.append(dict(spec))
            jobs.append(self._new_job(
                spec["executor"], spec.get("task_type", _CLUSTER), spec.get("args_str", ""),
                spec.get("parallel_num", 1), spec.get("executor_timeout", 60),
                spec.get("max_retry_times", 0), spec.get("retry_interval", 0.0),
                spec.get("shard_num", 2), spec.get("executor_type", 2), spec.get("labels")))
        with self._cond:
            workflow = EmulatedWorkflow(self, next(self._ids), specs, [next(self._ids) for _ in specs],
                                        jobs, dict(wf_context or {}))
            self._workflows[workflow.id] = workflow
            self._start_batch(jobs[0], wf_context=None, workflow=workflow, index=0, target=None)
            return workflow

    # -- workflows ------------------------------------------------------------

    def _workflow_step(self, batch: EmulatedBatch) -> None:
        workflow = batch.workflow
        if workflow is None or batch.workflow_index is None:
            return
        if workflow._batches and workflow._batches[-1] is not batch:
            return  # a stale node (for example a manual retry of an earlier node)
        index = batch.workflow_index
        has_next = index + 1 < len(workflow.nodes)
        if has_next:
            for task in batch._tasks:
                self._merge_context(workflow._context, task.wf_context)
        if batch._status == _SUCCESS and has_next:
            self._start_batch(workflow._jobs[index + 1], wf_context=None, workflow=workflow,
                              index=index + 1, target=None)
            return
        workflow._status = batch._status
        workflow._done = True
        self._cond.notify_all()

    @staticmethod
    def _merge_context(context: Dict[str, Any], text: Optional[str]) -> None:
        """``mergeMaps``: the task's keys overwrite; null keys/values skipped;
        a value that is not a JSON object is ignored."""
        if not text:
            return
        try:
            value = json.loads(text)
        except ValueError:
            return
        if not isinstance(value, dict):
            return
        for key, item in value.items():
            if key is None or item is None:
                continue
            context[key] = item

    def _wf_context_text(self, batch: EmulatedBatch) -> Optional[str]:
        if batch.workflow is not None:
            return dumps(batch.workflow._context)
        if batch._wf_context is not None:
            return dumps(batch._wf_context)
        return None
