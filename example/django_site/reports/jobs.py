"""SnailJob executors of the ``reports`` app, found by ``manage.py snailjob_worker``."""

from django.db import connection

import snailjob as sj
from reports.models import Report


@sj.job("djangoBuildReport")
def build_report(args: sj.JobArgs) -> dict:
    """Writes a row through the ORM, like a view would."""
    fresh = connection.connection is None  # the integration closed the last job's connection
    report = Report.objects.create(name=args.job_params or "daily", rows=Report.objects.count() + 1)
    sj.SnailLog.REMOTE.info("report %s stored with id %s", report.name, report.id)
    return {"id": report.id, "name": report.name, "reports": Report.objects.count(), "fresh_connection": fresh}
