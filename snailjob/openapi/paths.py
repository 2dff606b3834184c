"""The OpenAPI's paths and the checks of the arguments the client sends.

Split from ``client.py``; the client's modules (``_client.py``, ``_codec.py``,
``_transport.py`` ...) use them, and ``snailjob.openapi`` re-exports ``default_base_url``.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, List, Mapping, Optional, Union

from snailjob.openapi.errors import OpenApiValidationError
from snailjob.settings import Settings

DEFAULT_PORT = 8080
DEFAULT_PREFIX = "snail-job"
MAX_DELETE = 100  # the server's @Size(max = 100)


class P:
    """The API paths (``SystemConstants.HTTP_PATH`` of the server)."""

    JOB_ADD = "/api/job/add"
    JOB_UPDATE = "/api/job/update"
    JOB_DETAIL = "/api/job/detail/id"
    JOB_EXISTS = "/api/job/exists"
    JOB_TRIGGER = "/api/job/trigger"
    JOB_UPDATE_STATUS = "/api/job/update/status"
    JOB_DELETE = "/api/job/delete"
    JOB_BIZ_ADD = "/api/job/bizId/add"
    JOB_BIZ_UPDATE = "/api/job/bizId/update"
    JOB_BIZ_DETAIL = "/api/job/bizId/detail"
    JOB_BIZ_EXISTS = "/api/job/bizId/exists"
    JOB_BIZ_TRIGGER = "/api/job/bizId/trigger"
    JOB_BIZ_UPDATE_STATUS = "/api/job/bizId/updateStatus"
    JOB_BIZ_DELETE = "/api/job/bizId/delete"
    # the server maps "/api/job-batch/detail/{id}" but reads the id from the query;
    # the client puts the id in both places
    JOB_BATCH_DETAIL = "/api/job-batch/detail/"
    WORKFLOW_BATCH_DETAIL = "/api/workflow-batch/detail/id"
    WORKFLOW_TRIGGER = "/api/workflow/trigger"
    WORKFLOW_UPDATE_STATUS = "/api/workflow/update/status"
    WORKFLOW_DELETE = "/api/workflow/delete"
    WORKFLOW_EXISTS = "/api/workflow/exists"
    WORKFLOW_BIZ_TRIGGER = "/api/workflow/bizId/trigger"
    WORKFLOW_BIZ_UPDATE_STATUS = "/api/workflow/bizId/updateStatus"
    WORKFLOW_BIZ_DELETE = "/api/workflow/bizId/delete"
    WORKFLOW_BIZ_EXISTS = "/api/workflow/bizId/exists"
    RETRY_QUERY = "/api/retry/query"
    RETRY_TRIGGER = "/api/retry/trigger"
    RETRY_UPDATE_STATUS = "/api/retry/update/status"


def default_base_url(settings: Settings) -> str:
    """``SNAIL_OPENAPI_URL``, or ``http://<first host of SNAIL_SERVER_HOST>:8080/snail-job``."""
    configured = settings.snail_openapi_url
    if configured:
        return str(configured)
    host = settings.server_targets[0].rsplit(":", 1)[0]
    return f"http://{host}:{DEFAULT_PORT}/{DEFAULT_PREFIX}"


# ------------------------------------------------------------------------ input checks


def _id(value: Any, field: str = "id") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise OpenApiValidationError(field, f"must be a positive integer, got {value!r}")
    return int(value)


def _biz_id(value: Any, field: str = "bizId") -> str:
    if not isinstance(value, str) or not value.strip():
        raise OpenApiValidationError(field, f"must be a non-blank string, got {value!r}")
    return value


def _ids(values: Iterable[Any], field: str, check: Any) -> List[Any]:
    if isinstance(values, (str, bytes)):
        raise OpenApiValidationError(field, "must be a collection, not a single string")
    unique: List[Any] = []
    for value in values:
        value = check(value, field)
        if value not in unique:
            unique.append(value)
    if not unique:
        raise OpenApiValidationError(field, "must not be empty")
    if len(unique) > MAX_DELETE:
        raise OpenApiValidationError(field, f"the server deletes at most {MAX_DELETE} at once, got {len(unique)}")
    return unique


def _status(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return int(value)
    raise OpenApiValidationError("status", f"must be True/False or JobStatus.ENABLED/DISABLED, got {value!r}")


def _json_text(value: Union[str, Mapping[str, Any], None], field: str, must_be_object: bool) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, Mapping):
        try:
            return json.dumps(dict(value), ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise OpenApiValidationError(field, f"is not JSON-serialisable: {exc}") from None
    if not isinstance(value, str):
        raise OpenApiValidationError(field, f"must be a string or a mapping, got {type(value).__name__}")
    if must_be_object:
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise OpenApiValidationError(field, "must be a JSON object (the server merges it into a map)")
    return value
