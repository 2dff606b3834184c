"""Linear workflows in the server emulator: ``trigger_workflow``.

``_Workflows`` checks the nodes, creates one job per node and opens the
first node's batch through the jobs; when a node's batch finishes, the jobs
open the next one (``_Jobs._workflow_step``) and the workflow merges the
context (``EmulatedWorkflow``).  It gets the state and the jobs.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from snailjob.testing._jobs import _Jobs
from snailjob.testing._state import _State
from snailjob.testing._support import _CLUSTER
from snailjob.testing.batches import EmulatedWorkflow, _Job

_WORKFLOW_NODE_KEYS = frozenset({
    "executor", "task_type", "args_str", "parallel_num", "executor_timeout",
    "max_retry_times", "retry_interval", "shard_num", "executor_type", "labels",
})


class _Workflows:
    """``trigger_workflow``."""

    def __init__(self, state: _State, jobs: _Jobs) -> None:
        self._state = state
        self._jobs = jobs

    def trigger_workflow(self, nodes: Sequence[Mapping[str, Any]],
                         wf_context: Optional[Dict[str, Any]] = None) -> EmulatedWorkflow:
        st = self._state
        st.require_running()
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
            jobs.append(self._jobs.new_job(
                spec["executor"], spec.get("task_type", _CLUSTER), spec.get("args_str", ""),
                spec.get("parallel_num", 1), spec.get("executor_timeout", 60),
                spec.get("max_retry_times", 0), spec.get("retry_interval", 0.0),
                spec.get("shard_num", 2), spec.get("executor_type", 2), spec.get("labels")))
        with st.cond:
            workflow = EmulatedWorkflow(st.guard, next(st.ids), specs, [next(st.ids) for _ in specs],
                                        jobs, dict(wf_context or {}))
            st.workflows[workflow.id] = workflow
            self._jobs.start_batch(jobs[0], wf_context=None, workflow=workflow, index=0, target=None)
            return workflow
