"""The fake OpenAPI server's routing: which call runs which handler of its model, with which fields.

Between the HTTP side (``fake.py``, which hands over each authenticated request
to ``route``) and the model (``_fake_model.py``): one entry per endpoint of
SnailJob 1.10 / 2.0, and the request checks the server makes before its
handler runs (a JSON object body, required fields, a numeric ``id`` query, a
list of at most 100 ids), refused with the server's messages.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

from snailjob.openapi._fake_model import Fail, FakeModel, need

_JOB_BATCH_DETAIL = re.compile(r"^/api/job-batch/detail/[^/]+$")


def route(model: FakeModel, method: str, api_path: str, query: Dict[str, str], body: Any) -> Any:
    """The envelope's ``data`` for ``method api_path``; raises ``Fail`` as the server refuses."""
    m = model
    route = (method, api_path)
    if method == "GET" and _JOB_BATCH_DETAIL.match(api_path):
        return m.read_batch(m.batches, _query_id(query), "taskBatchStatus")
    handlers = {
        ("POST", "/api/job/add"): lambda: m.add_job(_object(body), by_biz_id=False),
        ("PUT", "/api/job/update"): lambda: m.update_job(_object(body), by_biz_id=False),
        ("GET", "/api/job/detail/id"): lambda: m.job_response(m.jobs.get(_query_id(query))) or {},
        ("GET", "/api/job/exists"): lambda: m.exists(m.jobs.get(_query_id(query))),
        ("POST", "/api/job/trigger"): lambda: m.trigger(m.job(need(_object(body), "jobId"))),
        ("PUT", "/api/job/update/status"): lambda: m.job_status(_status_body(body, "id")),
        ("DELETE", "/api/job/delete"): lambda: m.delete_jobs(_id_list(body, int)),
        ("POST", "/api/job/bizId/add"): lambda: m.add_job(_object(body), by_biz_id=True),
        ("PUT", "/api/job/bizId/update"): lambda: m.update_job(_object(body), by_biz_id=True),
        ("GET", "/api/job/bizId/detail"): lambda: m.job_response(m.job_by_biz(_query(query, "bizId"))),
        ("GET", "/api/job/bizId/exists"): lambda: m.exists(m.job_by_biz(_query(query, "bizId"))),
        ("POST", "/api/job/bizId/trigger"): lambda: m.trigger(m.job_by_biz_or_fail(
            need(_object(body), "bizId"), "job can not be null.")),
        ("PUT", "/api/job/bizId/updateStatus"): lambda: m.job_status(_status_body(body, "bizId")),
        ("DELETE", "/api/job/bizId/delete"): lambda: m.delete_jobs(
            [m.job_by_biz_or_fail(b, "Failed to delete the scheduled task.")["id"]
             for b in _id_list(need(_object(body), "bizIds"), str)]),
        ("POST", "/api/workflow/trigger"): lambda: m.trigger_workflow(_object(body), by_biz_id=False),
        ("PUT", "/api/workflow/update/status"): lambda: m.workflow_status(_status_body(body, "id")),
        ("DELETE", "/api/workflow/delete"): lambda: m.delete_workflows(_id_list(body, int)),
        ("GET", "/api/workflow/exists"): lambda: m.wf_exists(m.workflows.get(_query_id(query))),
        ("POST", "/api/workflow/bizId/trigger"): lambda: m.trigger_workflow(_object(body), by_biz_id=True),
        ("PUT", "/api/workflow/bizId/updateStatus"): lambda: m.workflow_status(
            _status_body(body, "bizId")),
        ("DELETE", "/api/workflow/bizId/delete"): lambda: m.delete_workflows(
            [m.workflow_by_biz_or_fail(b).id for b in _id_list(body, str)]),
        ("GET", "/api/workflow/bizId/exists"): lambda: m.wf_exists(m.workflow_by_biz(
            _query(query, "bizId"))),
        ("GET", "/api/workflow-batch/detail/id"): lambda: m.workflow_batch(_query_id(query)),
        ("GET", "/api/retry/query"): lambda: m.retry(_query_id(query)),
        ("POST", "/api/retry/trigger"): lambda: m.retry_trigger(need(_object(body), "id")),
        ("PUT", "/api/retry/update/status"): lambda: m.retry_status(_status_body(body, "id")),
    }
    if route not in handlers:
        raise Fail("Parameter incorrect")  # what the server answers to a wrong method
    return handlers[route]()

# request helpers


def _object(body: Any) -> Dict[str, Any]:
    if not isinstance(body, dict):
        raise Fail("Parameter incorrect")
    return body


def _query(query: Dict[str, str], name: str) -> str:
    if name not in query:
        raise Fail("Parameter incorrect")
    return query[name]


def _query_id(query: Dict[str, str]) -> int:
    try:
        return int(_query(query, "id"))
    except ValueError:
        raise Fail("Parameter incorrect") from None


def _id_list(body: Any, kind: type) -> List[Any]:
    if not isinstance(body, list) or not body:
        raise Fail("ids cannot be null")
    if len(body) > 100:
        raise Fail("Maximum 100 deletions")
    if not all(isinstance(x, kind) and not isinstance(x, bool) for x in body):
        raise Fail("Parameter incorrect")
    return body


def _status_body(body: Any, key: str) -> Tuple[Any, int]:
    body = _object(body)
    return need(body, key), need(body, "status")
