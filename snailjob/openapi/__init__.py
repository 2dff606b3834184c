"""Manage jobs from Python: a client of the SnailJob server's OpenAPI.

::

    from snailjob.openapi import JobSpec, OpenApiClient, Trigger

    client = OpenApiClient.from_settings()          # SNAIL_* settings, as the job client
    job_id = client.add_job(JobSpec.cluster("nightly", "reportJob", Trigger.cron("0 0 2 * * ?")))
    client.trigger_job(job_id)

What it covers: every OpenAPI endpoint of server 1.10 and 2.0 (jobs by id and by
bizId, workflows, job and workflow batch details, retry tasks), typed request
and response models (``models``), enums of the server's codes (``enums``),
job definitions validated before sending (``JobSpec``, ``Trigger``), waiting for
a batch (``wait_job_batch``) and "jobs as code" (``sync_jobs``). The OpenAPI is
served over HTTP on the server's web port (8080, context path ``/snail-job``),
never over the gRPC port the job client uses; it exists from server 1.9 (the
bizId and exists endpoints from 1.10).

Why the standard library: the calls are few, small JSON requests, so
``http.client`` is enough and the job client gains no dependency (no requests,
no httpx, no aiohttp). The price: no connection reuse (one connection per call)
and no HTTP proxy support. ``AsyncOpenApiClient`` runs the same blocking calls
in worker threads (``asyncio.to_thread``) rather than being natively async.

``FakeOpenApiServer`` (``snailjob.openapi.fake``) is an in-process stand-in for
the server's OpenAPI, for your tests.
"""

from snailjob.openapi.client import AsyncOpenApiClient, OpenApiClient, SyncJobsError, SyncResult, default_base_url
from snailjob.openapi.enums import (
    ArgsType,
    BatchStatus,
    BlockStrategy,
    ExecutorType,
    JobStatus,
    OperationReason,
    RetryStatus,
    RouteStrategy,
    TaskType,
    TriggerType,
)
from snailjob.openapi.errors import (
    BatchWaitTimeout,
    OpenApiAuthError,
    OpenApiError,
    OpenApiHTTPError,
    OpenApiNotFoundError,
    OpenApiResponseError,
    OpenApiServerError,
    OpenApiTimeout,
    OpenApiTransportError,
    OpenApiValidationError,
)
from snailjob.openapi.models import (
    JobBatch,
    JobDetail,
    JobExists,
    JobRequest,
    RetryTask,
    WorkflowBatch,
    WorkflowExists,
)
from snailjob.openapi.spec import JobSpec, Trigger, map_reduce_args, sharding_args

__all__ = [
    "ArgsType",
    "AsyncOpenApiClient",
    "BatchStatus",
    "BatchWaitTimeout",
    "BlockStrategy",
    "ExecutorType",
    "JobBatch",
    "JobDetail",
    "JobExists",
    "JobRequest",
    "JobSpec",
    "JobStatus",
    "OpenApiAuthError",
    "OpenApiClient",
    "OpenApiError",
    "OpenApiHTTPError",
    "OpenApiNotFoundError",
    "OpenApiResponseError",
    "OpenApiServerError",
    "OpenApiTimeout",
    "OpenApiTransportError",
    "OpenApiValidationError",
    "OperationReason",
    "RetryStatus",
    "RetryTask",
    "RouteStrategy",
    "SyncJobsError",
    "SyncResult",
    "TaskType",
    "Trigger",
    "TriggerType",
    "WorkflowBatch",
    "WorkflowExists",
    "default_base_url",
    "map_reduce_args",
    "sharding_args",
]
