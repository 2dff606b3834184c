"""``OpenApiClient`` (blocking) and ``AsyncOpenApiClient``: every OpenAPI call of the server.

One method per endpoint of SnailJob server 1.10 / 2.0 (27 in all), plus
``wait_job_batch`` / ``wait_workflow_batch`` and ``sync_jobs``. Each call is one
HTTP request on a new connection to ``{base_url}{path}`` with the headers
``namespace``, ``group-name`` and ``token`` (and ``system-version``,
``executor-type: 2``), and a timeout that covers connecting and each wait for
data. The client keeps no connection open and is safe to share between threads.

This module is the clients' public address (``snailjob.openapi`` re-exports
the same names); the code lives in private modules, one concern each:

- ``_transport.py``: the HTTP plumbing (settings checked, headers, one request,
  the envelope, errors without the token);
- ``_codec.py``: request bodies and the decoding of the answers' ``data``;
- ``_client.py``: ``OpenApiClient``, one method per endpoint;
- ``_async_client.py``: ``AsyncOpenApiClient``, a shell over it;
- ``_waiting.py``: the poll loops of ``wait_job_batch`` / ``wait_workflow_batch``;
- ``_jobs_as_code.py``: ``sync_jobs``, ``SyncResult``, ``SyncJobsError``.
"""

from snailjob.openapi._async_client import AsyncOpenApiClient
from snailjob.openapi._client import OpenApiClient
from snailjob.openapi._codec import JobLike, StatusLike  # noqa: F401  (the argument types, re-exported)
from snailjob.openapi._jobs_as_code import SyncJobsError, SyncResult
from snailjob.openapi.paths import DEFAULT_PORT, DEFAULT_PREFIX, default_base_url  # noqa: F401  (re-exported)

__all__ = ["AsyncOpenApiClient", "OpenApiClient", "SyncJobsError", "SyncResult", "default_base_url"]
