"""Retries across services: one retry task for a chain of two services.

A "shop" service places an order by calling a "stock" service over HTTP;
both have a ``@retryable`` function, and the stock database is busy for the
first calls.  With the propagation installed (one line for the HTTP client,
one for the app), the shop's attempts reach the stock service marked with
the ``snail-job`` header, so the stock service runs its retryable once per
request and reports nothing: the shop owns the retry, the server holds one
retry task and replays the shop's call until the stock service answers.
Without those two lines each side would retry and report on its own.

For the example both services run in this one program (the stock service
on ``RETRY_CHAIN_PORT``, default 8931); in real life they are two processes,
and either may be a Java service using SnailJob's Java client.  Run it
against a server (create the scenes ``exampleShop`` and ``exampleStock``
first) and trigger the job ``retryChainCheckout``, or let
``python example/run_examples.py`` run it against the emulator.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
from flask import Flask
from werkzeug.serving import make_server

import snailjob as sj
from snailjob.contrib import propagation

STATE = Path(os.environ.get("RETRY_CHAIN_STATE", "/tmp/snailjob-retry-chain"))
FAILURES = int(os.environ.get("RETRY_CHAIN_FAILURES", "3"))
PORT = int(os.environ.get("RETRY_CHAIN_PORT", "8931"))

# --- the stock service ---------------------------------------------------------

stock = Flask("stock")
stock.wsgi_app = propagation.RetryHeadersWSGI(stock.wsgi_app)  # type: ignore[method-assign]


@sj.retryable("exampleStock", executor_name="exampleReserveStock", local_times=2, local_interval=0.2)
def reserve_stock(sku: str) -> str:
    STATE.mkdir(parents=True, exist_ok=True)
    counter = STATE / f"{sku}.calls"
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if calls <= FAILURES:
        raise ConnectionError(f"stock database busy (call {calls})")
    return f"{sku} reserved at call {calls}"


@stock.get("/reserve/<sku>")
def reserve(sku: str) -> str:
    return reserve_stock(sku)  # an exception: a 500 answer


# --- the shop service ----------------------------------------------------------

http = propagation.install(httpx.Client(timeout=10))


@sj.retryable("exampleShop", executor_name="examplePlaceOrder", local_times=1, local_interval=0.2)
def place_order(sku: str) -> str:
    answer = http.get(f"http://127.0.0.1:{PORT}/reserve/{sku}")
    answer.raise_for_status()
    return answer.text


@sj.job("retryChainCheckout")
def checkout(args: sj.JobArgs) -> str:
    sku = str(args.job_params or "sku-1")
    try:
        return place_order(sku)
    except httpx.HTTPStatusError as exc:
        return f"order handed to the server (stock answered {exc.response.status_code})"


if __name__ == "__main__":
    server = make_server("127.0.0.1", PORT, stock, threaded=True)
    threading.Thread(target=server.serve_forever, name="stock-http", daemon=True).start()
    for executor in (checkout, place_order, reserve_stock):
        sj.ExecutorManager.register(executor)
    sj.client_main()
