"""Jobs as code: ``sync_jobs``, which makes the server's jobs match a list of ``JobSpec``.

Built on three API calls only (look up, add and update a job by bizId), which
``OpenApiClient.sync_jobs`` passes in; so this module knows no client and the
client's methods stay one call per endpoint. ``SyncResult`` and
``SyncJobsError`` are public (re-exported by ``snailjob.openapi``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from snailjob.openapi.errors import OpenApiError, OpenApiServerError, OpenApiValidationError
from snailjob.openapi.models import JobExists
from snailjob.openapi.paths import P
from snailjob.openapi.spec import JobSpec

logger = logging.getLogger("snailjob.openapi")


@dataclass(frozen=True)
class SyncResult:
    """What ``sync_jobs`` did for one job.

    ``action`` is ``"added"``, ``"updated"``, ``"failed"``, or with ``dry_run``
    ``"would_add"`` / ``"would_update"``. ``job_id`` is the server's id (``None`` for
    ``would_add`` and for a failed add); ``error`` is set when ``action == "failed"``."""

    biz_id: str
    name: str
    action: str
    job_id: Optional[int] = None
    error: Optional[OpenApiError] = None

    @property
    def ok(self) -> bool:
        return self.action != "failed"


class SyncJobsError(OpenApiError):
    """``sync_jobs`` could not add or update some jobs; ``results`` has one ``SyncResult``
    per job (the others were applied)."""

    def __init__(self, results: Sequence[SyncResult]) -> None:
        self.results = list(results)
        failed = [r for r in self.results if not r.ok]
        detail = "; ".join(f"{r.biz_id}: {r.error.message if r.error else '?'}" for r in failed[:5])
        super().__init__(f"{len(failed)} of {len(self.results)} jobs failed to sync: {detail}")


def sync_jobs(jobs: Sequence[JobSpec], group: str, *, exists: Callable[[str], Optional[JobExists]],
              add: Callable[[JobSpec], int], update: Callable[[JobSpec], bool], dry_run: bool,
              raise_on_error: bool) -> List[SyncResult]:
    """``OpenApiClient.sync_jobs`` (see there) for the client's ``group``, with its
    ``job_exists_by_biz_id``, ``add_job_by_biz_id`` and ``update_job_by_biz_id``."""
    plan = _plan(jobs, group)
    results: List[SyncResult] = []
    for spec in plan:
        assert spec.biz_id is not None
        target_group = spec.group or group
        try:
            found = exists(spec.biz_id)
            if found is not None and found.group_name not in (None, target_group):
                raise OpenApiValidationError("groupName", f"bizId {spec.biz_id!r} belongs to a job of group "
                                                          f"{found.group_name!r}, not {target_group!r}")
            if dry_run:
                results.append(SyncResult(spec.biz_id, spec.name, "would_update" if found else "would_add",
                                          found.id if found else None))
            elif found is not None:
                if not update(spec):
                    raise OpenApiServerError("the server updated nothing", path=P.JOB_BIZ_UPDATE)
                results.append(SyncResult(spec.biz_id, spec.name, "updated", found.id))
            else:
                results.append(SyncResult(spec.biz_id, spec.name, "added", add(spec)))
        except OpenApiError as exc:
            logger.warning("sync_jobs: %s (%s): %s", spec.biz_id, spec.name, exc)
            results.append(SyncResult(spec.biz_id, spec.name, "failed", None, exc))
    if raise_on_error and any(not r.ok for r in results):
        raise SyncJobsError(results)
    return results


def _plan(jobs: Sequence[JobSpec], group: str) -> List[JobSpec]:
    if isinstance(jobs, JobSpec) or not isinstance(jobs, Sequence):
        raise OpenApiValidationError("jobs", "must be a list of JobSpec")
    seen: Dict[str, str] = {}
    for index, spec in enumerate(jobs):
        if not isinstance(spec, JobSpec):
            raise OpenApiValidationError(f"jobs[{index}]", f"must be a JobSpec, got {type(spec).__name__}")
        if spec.biz_id is None:
            raise OpenApiValidationError("bizId", f"job {spec.name!r} needs a biz_id to be synced")
        if spec.biz_id in seen:
            raise OpenApiValidationError("bizId", f"{spec.biz_id!r} is used by both {seen[spec.biz_id]!r} "
                                                  f"and {spec.name!r}")
        seen[spec.biz_id] = spec.name
        spec.to_request(group)  # checks what can go stale (point-in-time triggers) before sending anything
    return list(jobs)
