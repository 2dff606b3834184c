"""Jobs as code with the OpenAPI client: define jobs in Python, sync them, trigger one, wait.

    python example/openapi_jobs.py

Without ``SNAIL_OPENAPI_URL`` it runs against an in-process ``FakeOpenApiServer``
(no SnailJob server needed). With ``SNAIL_OPENAPI_URL=http://host:8080/snail-job``
(and ``SNAIL_NAMESPACE``, ``SNAIL_GROUP_NAME``, ``SNAIL_TOKEN``) it syncs the jobs
below to that server, disabled, and triggers one. Against a real server the
OpenAPI cannot tell which batch a trigger created, so the example then stops and
says where to look.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

from snailjob.openapi import (
    BlockStrategy,
    JobSpec,
    OpenApiClient,
    OpenApiError,
    OpenApiValidationError,
    Trigger,
)
from snailjob.openapi.fake import FakeOpenApiServer

# The definitions a deploy keeps in the repository. biz_id is the stable key.
# enabled=False: the scheduler leaves them alone; manual triggers still run them.
JOBS: List[JobSpec] = [
    JobSpec.cluster("nightly-report", "demoClusterJob", Trigger.cron("0 0 2 * * ?"),
                    biz_id="example_nightly_report", args={"since": "yesterday"}, enabled=False,
                    executor_timeout=600, max_retry_times=2, labels={"team": "reports"}),
    JobSpec.sharding("reindex", "demoShardingJob", Trigger.fixed(3600), shards=["north", "south", "east"],
                     parallel_num=3, biz_id="example_reindex", enabled=False,
                     block_strategy=BlockStrategy.DISCARD),
    JobSpec.map_reduce("monthly-totals", "demoMapReduceJob", Trigger.cron("0 0 3 1 * ?"), shard_num=2,
                       parallel_num=4, biz_id="example_monthly_totals", enabled=False),
]


def run(client: OpenApiClient, fake: Optional[FakeOpenApiServer]) -> int:
    print(f"server: {client.base_url} (group {client.group})")
    for result in client.sync_jobs(JOBS):
        print(f"sync 1: {result.biz_id:<24} {result.action:<8} job id {result.job_id}")
    for result in client.sync_jobs(JOBS):  # idempotent: the second run updates in place
        print(f"sync 2: {result.biz_id:<24} {result.action:<8} job id {result.job_id}")

    try:
        JobSpec.sharding("bad", "demoShardingJob", Trigger.fixed(60), shards="north,south")
    except OpenApiValidationError as exc:
        print(f"rejected before sending: {exc}")

    detail = client.job_detail_by_biz_id("example_nightly_report")
    assert detail is not None and detail.id is not None
    client.trigger_job(detail.id, args={"since": "last-week"})
    print(f"triggered job {detail.id} ({detail.job_name}) with other args")
    if fake is None:
        print("the OpenAPI does not return batch ids: see the batch in the console, then "
              "client.wait_job_batch(<batch id>)")
        return 0
    batch = client.wait_job_batch(fake.batches_of(detail.id)[-1], timeout=10, poll=0.05)
    print(f"batch {batch.id}: {batch.status.name if batch.status else '?'}")
    return 0 if batch.succeeded else 1


def main() -> int:
    if os.environ.get("SNAIL_OPENAPI_URL"):
        try:
            return run(OpenApiClient.from_settings(), None)
        except OpenApiError as exc:
            print(f"OpenAPI call failed: {exc}", file=sys.stderr)
            return 1
    with FakeOpenApiServer() as fake:
        return run(fake.client(), fake)


if __name__ == "__main__":
    sys.exit(main())
