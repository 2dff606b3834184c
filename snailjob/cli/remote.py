"""``snailjob trigger`` and ``snailjob status``: the server's OpenAPI from the shell.

Both use ``OpenApiClient.from_settings()`` (``SNAIL_OPENAPI_URL``, else
``http://<first SNAIL_SERVER_HOST>:8080/snail-job``, with the group's
namespace and token) and print JSON on stdout.

- ``trigger JOB_ID [--params TEXT]``: ``POST /api/job/trigger``; prints
  ``{"jobId": ..., "triggered": true}``.  The server does not say which batch
  it created, so neither can this command.
- ``status JOB_ID``: the job's definition and status (``job_detail``);
  ``status --batch BATCH_ID``: one batch's status and reason
  (``job_batch_detail``, plus ``statusName`` and ``operationReasonName``;
  the OpenAPI has no task results).

Exit codes: 0 done, 1 the OpenAPI call failed (the message is printed, never
the token) or there is no such job or batch, 2 bad settings or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from snailjob.cli.options import settings_overrides
from snailjob.errors import ConfigurationError
from snailjob.openapi import OpenApiClient, OpenApiError, OpenApiValidationError
from snailjob.settings import Settings


def _error(command: str, message: str) -> None:
    print(f"snailjob {command}: {message}", file=sys.stderr)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True, default=str))


def remote_command(ns: argparse.Namespace) -> int:
    command = ns.command
    try:
        settings = Settings.load(**settings_overrides(ns))
        client = OpenApiClient.from_settings(settings)
    except ConfigurationError as exc:
        _error(command, str(exc))
        return 2
    except OpenApiValidationError as exc:
        _error(command, str(exc))
        return 2
    try:
        if command == "trigger":
            triggered = client.trigger_job(ns.job_id, args=ns.params)
            _print({"jobId": ns.job_id, "triggered": triggered})
            return 0 if triggered else 1
        if ns.batch:
            batch = client.job_batch_detail(ns.job_id)
            if batch is None:
                _error(command, f"no job batch {ns.job_id}")
                return 1
            shown = batch.wire()
            if batch.status is not None:  # readable names beside the server's codes
                shown["statusName"] = batch.status.name
            if batch.reason is not None:
                shown["operationReasonName"] = batch.reason.name
            _print(shown)
            return 0
        detail = client.job_detail(ns.job_id)
        if detail is None:
            _error(command, f"no job {ns.job_id} in group {client.group}")
            return 1
        _print(detail.wire())
        return 0
    except OpenApiValidationError as exc:
        _error(command, str(exc))
        return 2
    except OpenApiError as exc:  # messages of the OpenAPI client never contain the token
        _error(command, f"{type(exc).__name__}: {exc}")
        return 1
