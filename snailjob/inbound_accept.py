"""More than one new call taken in at a time by the inbound ``grpc.aio`` server.

``grpc.aio``'s server asks gRPC's core for the next incoming call of a
method one request at a time, from its event loop: a new call is matched
with that request, its completion goes back to the loop, and only then is
the next request made.  Under load, new dispatches therefore wait in the
core for one turn of the loop each, behind everything else the loop runs,
and the loop pays a turn per call.  ``Acceptors`` keeps ``count`` more
requests pending for the node's one method, so that a burst of new calls is
taken in within one turn (issue 29: at 64 dispatches in flight this halved
the dispatch reply's p99 and cut the node's CPU per task by about a tenth).

Limits, stated plainly:

* This drives grpcio's private parts (``AioServer._request_registered_call``,
  ``cygrpc._handle_rpc``, ``cygrpc._schedule_rpc_coro``,
  ``cygrpc._MethodResolver``), as grpcio's own accept loop calls them.
  ``register()`` checks that they exist and ``start()`` that they take the
  arguments this module passes, without taking in a call; when they do not
  (grpcio before 1.84, or changed since), the server keeps grpcio's own
  single request and says why at DEBUG.  Checked: 1.84.0 and 1.85.3 take
  the extra requests; 1.59.2 to 1.83 fall back.  grpcio's own accept loop
  always runs as well.
* A call taken in here runs the same handler, with the same defences
  (``InboundServer._receive``), as one grpcio's loop takes in; only the
  method registered here is served this way, and any other path still goes
  to grpcio's generic handlers (``UNIMPLEMENTED``).
* ``SNAIL_INBOUND_ACCEPTORS=0`` turns this off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional, Set

logger = logging.getLogger(__name__)


def _cygrpc() -> Any:
    from grpc._cython import cygrpc  # private: see the module's docstring

    return cygrpc


class Acceptors:
    """``count`` extra pending requests for new calls of one method of one
    ``grpc.aio`` server; registered before the server starts, run on its loop."""

    def __init__(self, server: Any, service: str, method: str, handler: Any, count: int) -> None:
        self._server = server
        self._service, self._method = service, method
        self._name = f"/{service}/{method}"
        self._handler = handler
        self.count = count
        self.accepted = 0
        """Calls taken in by these requests (not by grpcio's own)."""
        self._tasks: Set[asyncio.Task[Any]] = set()
        self._running = False

    def register(self) -> Optional[str]:
        """Register the method with the core (before the server starts), or
        say why not; nothing is changed when it says why not."""
        if self.count <= 0:
            return "off (SNAIL_INBOUND_ACCEPTORS=0)"
        add = getattr(self._server, "add_registered_method_handlers", None)
        if add is None:
            return "this grpcio has no registered methods on grpc.aio"
        problem = _missing_parts(self._server)
        if problem is not None:
            return problem
        add(self._service, {self._method: self._handler})
        return None

    def start(self, loop: asyncio.AbstractEventLoop) -> Optional[str]:
        """Start the requests (on ``loop``, after the server started), or say why not."""
        cygrpc = _cygrpc()
        core = self._server._server
        resolver = cygrpc._MethodResolver([], {self._name: self._handler})
        problem = _dry_run(cygrpc, core, resolver, loop, self._name)
        if problem is not None:
            return problem
        self._running = True
        for _ in range(self.count):
            self._keep(loop.create_task(self._accept(cygrpc, core, resolver, loop)))
        return None

    async def close(self) -> None:
        """End what is still pending (on the loop, once the server stopped)."""
        self._running = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, cygrpc: Any, core: Any, resolver: Any, loop: asyncio.AbstractEventLoop) -> None:
        method = self._name.encode()
        while self._running:
            try:
                rpc_state = await core._request_registered_call(method)
            except Exception as exc:  # the server is shutting down (a cancel is not an Exception)
                logger.debug("inbound acceptor ends: %r", exc)
                return
            self.accepted += 1
            coro = cygrpc._handle_rpc(self._name, resolver, (), rpc_state, loop, False)
            self._keep(loop.create_task(cygrpc._schedule_rpc_coro(coro, rpc_state, loop, self._name)))


def _missing_parts(server: Any) -> Optional[str]:
    try:
        cygrpc = _cygrpc()
    except ImportError as exc:
        return f"grpc._cython is not importable ({exc})"
    for name in ("_handle_rpc", "_schedule_rpc_coro", "_MethodResolver", "RPCState"):
        if not hasattr(cygrpc, name):
            return f"this grpcio has no cygrpc.{name}"
    core = getattr(server, "_server", None)
    if core is None or not hasattr(core, "_request_registered_call"):
        return "this grpcio's aio server has no _request_registered_call"
    return None


def _dry_run(cygrpc: Any, core: Any, resolver: Any, loop: asyncio.AbstractEventLoop, name: str) -> Optional[str]:
    """Build (and discard, unstarted) the coroutines a taken-in call would
    run, on an empty call state: a changed signature shows here, not on a
    caller's call."""
    try:
        state = cygrpc.RPCState(core)
        handle = cygrpc._handle_rpc(name, resolver, (), state, loop, False)
        try:
            cygrpc._schedule_rpc_coro(handle, state, loop, name).close()
        finally:
            handle.close()
    except Exception as exc:
        return f"grpcio's call handling has changed ({type(exc).__name__}: {exc})"
    return None
