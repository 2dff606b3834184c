"""A SnailJob client that lives and dies with an ASGI app (FastAPI, Starlette).

::

    from fastapi import FastAPI
    from snailjob.contrib.asgi import lifespan

    app = FastAPI(lifespan=lifespan(lambda: sj.Client(sj.Settings.load(), executors=[refresh_cache])))

On startup the client starts (and, by default, its ``async def`` executors
run on the app's own event loop, so they can use what the app keeps in
``app.state``: connection pools, HTTP clients); on shutdown the client
drains: new dispatches are refused, running jobs get
``SNAIL_SHUTDOWN_GRACE`` seconds, results and logs are delivered.  Inside a
job, ``current_app()`` is the app.

Limits: run one worker process per node (``uvicorn --workers 1``, or one
client per worker with distinct ``SNAIL_HOST_PORT``s); a coroutine job that
blocks (a sync call, CPU work) blocks the app's requests too, so keep such
work in plain functions, which run on the client's threads.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Callable, Dict, Optional, Union

from snailjob.client import Client
from snailjob.context import current_task

_apps: Dict[str, Any] = {}  # host id of a client -> the app whose lifespan runs it

ClientSource = Union[Client, Callable[[], Client]]


def lifespan(client: ClientSource, *, use_app_loop: bool = True,
             then: Optional[Callable[[Any], Any]] = None) -> Callable[[Any], Any]:
    """A lifespan for ``FastAPI(lifespan=...)`` / ``Starlette(lifespan=...)``.

    ``client``: a ``Client`` or a function that makes one (called at startup,
    so settings are read then).  ``then``: the app's own lifespan, entered
    inside this one (its state is yielded).  ``app.state.snailjob`` is the
    client while the app runs.
    """

    @contextlib.asynccontextmanager
    async def manage(app: Any) -> AsyncIterator[Any]:
        node = client if isinstance(client, Client) else client()
        if use_app_loop:
            node.use_event_loop(asyncio.get_running_loop())
        _apps[node.host_id] = app
        state = getattr(app, "state", None)
        if state is not None:
            state.snailjob = node
        try:
            await asyncio.to_thread(node.start)
        except BaseException:
            _apps.pop(node.host_id, None)
            raise
        try:
            if then is None:
                yield None
            else:
                async with then(app) as inner:
                    yield inner
        finally:
            await asyncio.to_thread(node.stop)
            _apps.pop(node.host_id, None)

    return manage


def current_app() -> Any:
    """The ASGI app whose lifespan runs the client of the current job."""
    try:
        return _apps[current_task().services.host_id]
    except KeyError:
        raise LookupError("this job's client was not started by snailjob.contrib.asgi.lifespan") from None
