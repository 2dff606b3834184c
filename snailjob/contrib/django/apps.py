"""The Django app of the integration: ``"snailjob.contrib.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class SnailJobConfig(AppConfig):
    name = "snailjob.contrib.django"
    label = "snailjob"
    verbose_name = "SnailJob"

    def ready(self) -> None:
        """With ``SNAILJOB["IN_PROCESS"]``, start a client in this process
        (development: ``runserver``).  Under the autoreloader only the
        child that serves requests starts one, never the watcher."""
        from django.conf import settings

        if (getattr(settings, "SNAILJOB", None) or {}).get("IN_PROCESS"):
            from snailjob.contrib.django.runtime import start_in_process

            start_in_process()
