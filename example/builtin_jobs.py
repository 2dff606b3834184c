"""The console's built-in executors on a Python node: an HTTP job and a shell job.

    python example/builtin_jobs.py --sync    # create the two jobs through the OpenAPI client
    python example/builtin_jobs.py           # a node that runs them (SNAIL_BUILTIN_EXECUTORS=http,shell)

``--sync`` sends the definitions below to ``SNAIL_OPENAPI_URL`` (disabled:
trigger them from the console), or, without it, to an in-process
``FakeOpenApiServer``, and prints what the server stored: the executor's name,
executor type Java (what the console gives a built-in job) and the console's
form as the arguments.  Without ``--sync`` it is the node: no executor of its
own, only the built-in ones it enables.  ``EXAMPLE_HTTP_TARGET`` is the URL
the HTTP job calls.  ``example/run_examples.py`` runs both against the server
emulator.
"""

from __future__ import annotations

import json
import os
import sys
from typing import List

from snailjob import client_main
from snailjob.builtin import HTTP_EXECUTOR, SHELL_EXECUTOR, http_form, script_form
from snailjob.openapi import ExecutorType, JobSpec, OpenApiClient, Trigger
from snailjob.openapi.fake import FakeOpenApiServer

TARGET = os.environ.get("EXAMPLE_HTTP_TARGET", "http://127.0.0.1:8000/health")

JOBS: List[JobSpec] = [
    # what the console's "HTTP" form stores: a GET with a 10 s timeout
    JobSpec.cluster("ping-health", HTTP_EXECUTOR, Trigger.fixed(300), args=http_form(TARGET, "GET", timeout=10),
                    executor_type=ExecutorType.JAVA, biz_id="example_ping_health", enabled=False),
    # what the console's "Shell" form stores: the script's code
    JobSpec.cluster("disk-report", SHELL_EXECUTOR, Trigger.cron("0 0 * * * ?"),
                    args=script_form("echo \"workspace: $(pwd)\"\ndf -k . | tail -n 1\necho 'report done' >&2"),
                    executor_type=ExecutorType.JAVA, biz_id="example_disk_report", enabled=False),
]


def sync(client: OpenApiClient) -> None:
    for result in client.sync_jobs(JOBS):
        detail = client.job_detail_by_biz_id(result.biz_id)
        assert detail is not None
        print(f"{result.action:<8} {result.biz_id:<20} executor {detail.executor_info} "
              f"(type {int(detail.executor_type or 0)}), form {json.loads(detail.args_str or '{}')}")


def main() -> int:
    if "--sync" in sys.argv[1:]:
        if os.environ.get("SNAIL_OPENAPI_URL"):
            sync(OpenApiClient.from_settings())
        else:
            with FakeOpenApiServer() as fake:
                sync(fake.client())
        return 0
    os.environ.setdefault("SNAIL_BUILTIN_EXECUTORS", "http,shell")
    client_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
