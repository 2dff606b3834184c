"""A FastAPI app that is also a SnailJob node: ``python fastapi_app.py``.

The client starts with the app and drains when it stops
(``snailjob.contrib.asgi.lifespan``); the ``async def`` job runs on the app's
own event loop and updates what the app serves at ``/stats``.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict

from fastapi import FastAPI

import snailjob as sj
from snailjob.contrib.asgi import current_app, lifespan


@sj.job("fastapiRefreshStats")
async def refresh_stats(args: sj.JobArgs) -> Dict[str, Any]:
    """Uses the app's state: a lock and a counter created on the app's loop."""
    app = current_app()
    async with app.state.lock:  # an asyncio.Lock of the app's loop: usable because the job runs there
        app.state.refreshes += 1
        await asyncio.sleep(0.01)
    same_loop = asyncio.get_running_loop() is app.state.loop
    sj.SnailLog.REMOTE.info("stats refreshed %d times", app.state.refreshes)
    return {"refreshes": app.state.refreshes, "on_app_loop": same_loop}


@asynccontextmanager
async def app_resources(app: FastAPI) -> AsyncIterator[None]:
    app.state.loop = asyncio.get_running_loop()
    app.state.lock = asyncio.Lock()
    app.state.refreshes = 0
    yield


app = FastAPI(lifespan=lifespan(lambda: sj.Client(sj.Settings.load(), executors=[refresh_stats]),
                                then=app_resources))


@app.get("/stats")
async def stats() -> Dict[str, Any]:
    return {"refreshes": app.state.refreshes, "node": app.state.snailjob.host_id}


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("EXAMPLE_HTTP_PORT", "8000")), log_level="warning")
