"""What the OpenAPI client sends and what it makes of the answers.

Between the API methods (``_client.py``) and the HTTP plumbing
(``_transport.py``): a ``JobSpec`` or ``JobRequest`` becomes a job's wire body
(with the client's group filled in), and an envelope's ``data`` becomes the
``bool``, id or model the method returns, or an ``OpenApiResponseError``
naming what did not fit. No I/O here.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type, TypeVar, Union

from pydantic import BaseModel, ValidationError

from snailjob.openapi.enums import JobStatus
from snailjob.openapi.errors import OpenApiResponseError, OpenApiValidationError
from snailjob.openapi.models import JobRequest
from snailjob.openapi.paths import _biz_id
from snailjob.openapi.spec import JobSpec
from snailjob.wire.codec import clean, location

_M = TypeVar("_M", bound=BaseModel)
StatusLike = Union[bool, int, JobStatus]
JobLike = Union[JobSpec, JobRequest]


def job_body(job: JobLike, group: str, *, job_id: Optional[int] = None,
             need_biz_id: bool = False) -> Dict[str, Any]:
    """The wire body of ``job``; ``group`` when it names none, ``job_id`` as its ``id``."""
    if isinstance(job, JobSpec):
        request = job.to_request(group, job_id=job_id)
    elif isinstance(job, JobRequest):
        request = job if job_id is None else job.model_copy(update={"id": job_id})
        if request.group_name is None:
            request = request.model_copy(update={"group_name": group})
    else:
        raise OpenApiValidationError("job", f"must be a JobSpec or a JobRequest, got {type(job).__name__}")
    if need_biz_id:
        _biz_id(request.biz_id)
    return request.wire()


def as_bool(data: Any, path: str) -> bool:
    if not isinstance(data, bool):
        raise OpenApiResponseError(f"expected true/false as data, got {data!r}"[:200], path=path)
    return data


def as_int(data: Any, path: str) -> int:
    if isinstance(data, str) and data.isdigit():
        return int(data)
    if isinstance(data, bool) or not isinstance(data, int):
        raise OpenApiResponseError(f"expected an id as data, got {data!r}"[:200], path=path)
    return data


def as_model(model: Type[_M], data: Any, path: str) -> Optional[_M]:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise OpenApiResponseError(f"expected an object as data, got {data!r}"[:200], path=path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise OpenApiResponseError(f"unexpected {model.__name__}: {clean(first['msg'], 200)} "
                                   f"at {location(first['loc']) or 'data'}", path=path) from None
