"""A Flask app that is also a SnailJob node: ``python flask_app.py``.

``SnailJob(app)`` starts the client with the app; every job runs inside the
app's context, so it can use ``current_app`` (and app-context extensions).
"""

from __future__ import annotations

import os

from flask import Flask, current_app, g

import snailjob as sj
from snailjob.contrib.flask import SnailJob


@sj.job("flaskGreeting")
def greeting(args: sj.JobArgs) -> str:
    g.audience = args.job_params or "world"  # g lives as long as the job's app context
    sj.SnailLog.REMOTE.info("greeting %s", g.audience)
    return f"{current_app.config['GREETING']}, {g.audience} (from {current_app.name})"


app = Flask("flask_app")
app.config["GREETING"] = "Hello"
app.config["SNAILJOB"] = {"LABELS": "app:flask-example"}  # SNAIL_* names without the prefix
app.config["TORN_DOWN"] = 0
snailjob = SnailJob(app, executors=[greeting])


@app.teardown_appcontext
def count_teardowns(exc: BaseException | None) -> None:
    current_app.config["TORN_DOWN"] += 1


@app.get("/health")
def health() -> dict:
    return {"node": snailjob.client.host_id if snailjob.client else None, "torn_down": app.config["TORN_DOWN"]}


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app.run(host="127.0.0.1", port=int(os.environ.get("EXAMPLE_HTTP_PORT", "5000")), use_reloader=False)
