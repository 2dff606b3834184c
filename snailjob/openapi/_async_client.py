"""``AsyncOpenApiClient``: the calls of ``OpenApiClient``, as coroutines.

A thin shell over the blocking client (``_client.py``): each coroutine runs
the ``OpenApiClient`` method of the same name in a worker thread
(``asyncio.to_thread``), so requests, checks and errors are that client's.
Only the waits are its own, polling with ``asyncio.sleep`` (``_waiting.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

from snailjob.openapi._client import OpenApiClient
from snailjob.openapi._codec import JobLike, StatusLike
from snailjob.openapi._jobs_as_code import SyncResult
from snailjob.openapi._waiting import wait_async
from snailjob.openapi.enums import RetryStatus
from snailjob.openapi.models import JobBatch, JobDetail, JobExists, RetryTask, WorkflowBatch, WorkflowExists
from snailjob.openapi.paths import P, _id
from snailjob.openapi.spec import JobSpec
from snailjob.settings import Settings


class AsyncOpenApiClient:
    """The same calls as ``OpenApiClient``, as coroutines.

    Honest note: this is not a native asyncio HTTP client. Each call runs the
    blocking ``OpenApiClient`` method in a worker thread (``asyncio.to_thread``), so
    the event loop is never blocked, but every call in flight occupies a thread of
    the loop's default executor. That is fine for management calls (a few at a
    time); it avoids a dependency on an async HTTP library. ``wait_job_batch`` and
    ``wait_workflow_batch`` sleep with ``asyncio.sleep`` between polls.
    Constructor arguments are those of ``OpenApiClient``; ``.sync`` is the wrapped
    blocking client.
    """

    def __init__(self, base_url: Optional[str] = None, *, client: Optional[OpenApiClient] = None,
                 **options: Any) -> None:
        self.sync = client if client is not None else OpenApiClient(base_url, **options)

    @classmethod
    def from_settings(cls, settings: Optional[Settings] = None, **overrides: Any) -> AsyncOpenApiClient:
        return cls(client=OpenApiClient.from_settings(settings, **overrides))

    def __repr__(self) -> str:
        return f"AsyncOpenApiClient({self.sync!r})"

    async def add_job(self, job: JobLike) -> int:
        return await asyncio.to_thread(self.sync.add_job, job)

    async def update_job(self, job_id: int, job: JobLike) -> bool:
        return await asyncio.to_thread(self.sync.update_job, job_id, job)

    async def job_detail(self, job_id: int) -> Optional[JobDetail]:
        return await asyncio.to_thread(self.sync.job_detail, job_id)

    async def job_exists(self, job_id: int) -> Optional[JobExists]:
        return await asyncio.to_thread(self.sync.job_exists, job_id)

    async def trigger_job(self, job_id: int, args: Union[str, Mapping[str, Any], None] = None) -> bool:
        return await asyncio.to_thread(self.sync.trigger_job, job_id, args)

    async def update_job_status(self, job_id: int, status: StatusLike) -> bool:
        return await asyncio.to_thread(self.sync.update_job_status, job_id, status)

    async def delete_jobs(self, job_ids: Iterable[int]) -> bool:
        return await asyncio.to_thread(self.sync.delete_jobs, list(job_ids))

    async def add_job_by_biz_id(self, job: JobLike) -> int:
        return await asyncio.to_thread(self.sync.add_job_by_biz_id, job)

    async def update_job_by_biz_id(self, job: JobLike) -> bool:
        return await asyncio.to_thread(self.sync.update_job_by_biz_id, job)

    async def job_detail_by_biz_id(self, biz_id: str) -> Optional[JobDetail]:
        return await asyncio.to_thread(self.sync.job_detail_by_biz_id, biz_id)

    async def job_exists_by_biz_id(self, biz_id: str) -> Optional[JobExists]:
        return await asyncio.to_thread(self.sync.job_exists_by_biz_id, biz_id)

    async def trigger_job_by_biz_id(self, biz_id: str, args: Union[str, Mapping[str, Any], None] = None) -> bool:
        return await asyncio.to_thread(self.sync.trigger_job_by_biz_id, biz_id, args)

    async def update_job_status_by_biz_id(self, biz_id: str, status: StatusLike) -> bool:
        return await asyncio.to_thread(self.sync.update_job_status_by_biz_id, biz_id, status)

    async def delete_jobs_by_biz_id(self, biz_ids: Iterable[str]) -> bool:
        return await asyncio.to_thread(self.sync.delete_jobs_by_biz_id, list(biz_ids))

    async def trigger_workflow(self, workflow_id: int, context: Union[str, Mapping[str, Any], None] = None) -> bool:
        return await asyncio.to_thread(self.sync.trigger_workflow, workflow_id, context)

    async def update_workflow_status(self, workflow_id: int, status: StatusLike) -> bool:
        return await asyncio.to_thread(self.sync.update_workflow_status, workflow_id, status)

    async def delete_workflows(self, workflow_ids: Iterable[int]) -> bool:
        return await asyncio.to_thread(self.sync.delete_workflows, list(workflow_ids))

    async def workflow_exists(self, workflow_id: int) -> Optional[WorkflowExists]:
        return await asyncio.to_thread(self.sync.workflow_exists, workflow_id)

    async def trigger_workflow_by_biz_id(self, biz_id: str, context: Union[str, Mapping[str, Any], None] = None, *,
                                         workflow_id: Optional[int] = None) -> bool:
        return await asyncio.to_thread(self.sync.trigger_workflow_by_biz_id, biz_id, context,
                                       workflow_id=workflow_id)

    async def update_workflow_status_by_biz_id(self, biz_id: str, status: StatusLike) -> bool:
        return await asyncio.to_thread(self.sync.update_workflow_status_by_biz_id, biz_id, status)

    async def delete_workflows_by_biz_id(self, biz_ids: Iterable[str]) -> bool:
        return await asyncio.to_thread(self.sync.delete_workflows_by_biz_id, list(biz_ids))

    async def workflow_exists_by_biz_id(self, biz_id: str) -> Optional[WorkflowExists]:
        return await asyncio.to_thread(self.sync.workflow_exists_by_biz_id, biz_id)

    async def job_batch_detail(self, batch_id: int) -> Optional[JobBatch]:
        return await asyncio.to_thread(self.sync.job_batch_detail, batch_id)

    async def workflow_batch_detail(self, workflow_batch_id: int) -> Optional[WorkflowBatch]:
        return await asyncio.to_thread(self.sync.workflow_batch_detail, workflow_batch_id)

    async def retry_detail(self, retry_id: int) -> RetryTask:
        return await asyncio.to_thread(self.sync.retry_detail, retry_id)

    async def trigger_retry(self, retry_id: int) -> bool:
        return await asyncio.to_thread(self.sync.trigger_retry, retry_id)

    async def update_retry_status(self, retry_id: int, status: Union[RetryStatus, int]) -> bool:
        return await asyncio.to_thread(self.sync.update_retry_status, retry_id, status)

    async def sync_jobs(self, jobs: Sequence[JobSpec], *, dry_run: bool = False,
                        raise_on_error: bool = True) -> List[SyncResult]:
        return await asyncio.to_thread(self.sync.sync_jobs, jobs, dry_run=dry_run, raise_on_error=raise_on_error)

    async def wait_job_batch(self, batch_id: int, timeout: float = 300.0, poll: float = 1.0) -> JobBatch:
        """As ``OpenApiClient.wait_job_batch``; sleeps with ``asyncio.sleep``."""
        batch_id = _id(batch_id)
        result: JobBatch = await wait_async(lambda: self.job_batch_detail(batch_id), f"job batch {batch_id}",
                                            f"{P.JOB_BATCH_DETAIL}{batch_id}", timeout, poll)
        return result

    async def wait_workflow_batch(self, workflow_batch_id: int, timeout: float = 600.0,
                                  poll: float = 1.0) -> WorkflowBatch:
        """As ``OpenApiClient.wait_workflow_batch``; sleeps with ``asyncio.sleep``."""
        workflow_batch_id = _id(workflow_batch_id)
        result: WorkflowBatch = await wait_async(lambda: self.workflow_batch_detail(workflow_batch_id),
                                                 f"workflow batch {workflow_batch_id}", P.WORKFLOW_BATCH_DETAIL,
                                                 timeout, poll)
        return result
