"""Distributed retry: a payment call that fails is retried in place, then
handed to the SnailJob server, which replays it here until it succeeds and
then runs the completion callback.

Run it against a server (create the retry scene ``examplePayment`` in the
console first, or let the group create scenes on first report), or let
``python example/run_examples.py`` run it against the emulator.  The job
``retryExampleCheckout`` calls ``charge``; trigger it from the console.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import snailjob as sj

# The "payment gateway" is down for the first calls of each order.  The count
# lives in a file so that a replay on another client process sees it too.
STATE = Path(os.environ.get("RETRY_EXAMPLE_STATE", "/tmp/snailjob-retry-example"))
FAILURES = int(os.environ.get("RETRY_EXAMPLE_FAILURES", "3"))


@dataclass
class Order:
    id: str
    amount_cents: int


def _gateway(order: Order) -> dict:
    STATE.mkdir(parents=True, exist_ok=True)
    counter = STATE / f"{order.id}.calls"
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if calls <= FAILURES:
        raise ConnectionError(f"payment gateway unavailable (call {calls})")
    return {"order": order.id, "charged": order.amount_cents, "calls": calls}


def charged(call: sj.RetryCall) -> None:
    """The completion callback: the server is done with this call."""
    outcome = {1: "finally succeeded", 2: "gave up"}.get(call.retry_status or 0, "ended")
    sj.SnailLog.REMOTE.info("charge of order %s %s", call.args[0].id, outcome)
    (STATE / f"{call.args[0].id}.callback").write_text(outcome)


# --8<-- [start:retry]
@sj.retryable("examplePayment", executor_name="exampleCharge", include=(ConnectionError,),
              local_times=1, local_interval=0.5, biz_no=lambda order: order.id,
              on_success=charged, on_max_count=charged)
def charge(order: Order) -> dict:
    sj.SnailLog.REMOTE.info("charging order %s", order.id)
    return _gateway(order)


@sj.job("retryExampleCheckout")
def checkout(args: sj.JobArgs) -> str:
    order = Order(id=str(args.job_params or "order-1"), amount_cents=1999)
    try:
        return f"charged at once: {charge(order)}"
    except ConnectionError as exc:
        # two calls failed here; the server replays the charge later
        return f"payment handed to the server ({exc})"
# --8<-- [end:retry]


if __name__ == "__main__":
    sj.ExecutorManager.register(checkout)
    sj.ExecutorManager.register(charge)
    sj.client_main()
