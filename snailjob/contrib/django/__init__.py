"""SnailJob inside a Django project.

Add ``"snailjob.contrib.django"`` to ``INSTALLED_APPS``, put executors in a
``jobs.py`` module of your apps, and run ``python manage.py snailjob_worker``.

Settings: a ``SNAILJOB`` dict in the Django settings, whose keys are the
``SNAIL_*`` names without the prefix (``{"SERVER_HOST": "10.0.0.5",
"GROUP_NAME": "reports", "TOKEN": env("SNAILJOB_TOKEN")}``); they win over
the environment and ``.env``, which fill in the rest.  Two keys are the
integration's own: ``JOBS_MODULE`` (default ``"jobs"``: the module looked
for in every installed app) and ``IN_PROCESS`` (default ``False``: start a
client inside the process that serves requests, for development: runserver's
child, ``runserver --noreload`` or a WSGI/ASGI server; never the
autoreloader's watcher or other management commands).

Around each job the integration does what Django's request cycle does:
``close_old_connections()`` before and after, so a job never starts on a
broken or expired connection and, with the default ``CONN_MAX_AGE = 0``,
closes its thread's connection when it ends.

Limits: ``async def`` jobs run on the client's event loop thread and must
use Django's async ORM API or ``sync_to_async``; ``isolation="process"``
jobs need ``django.setup()`` in their worker, which this integration does
not do.
"""

from snailjob.contrib.django.runtime import DjangoConnections, build_client, discover_executors, snailjob_settings

__all__ = ["DjangoConnections", "build_client", "discover_executors", "snailjob_settings"]
