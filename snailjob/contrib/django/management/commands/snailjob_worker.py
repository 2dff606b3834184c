"""``python manage.py snailjob_worker``: the project's executors as a SnailJob node."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from snailjob.errors import ConfigurationError


class Command(BaseCommand):
    help = ("Run a SnailJob client with the executors of every installed app's jobs module, until SIGINT or "
            "SIGTERM (running jobs get SNAIL_SHUTDOWN_GRACE seconds).")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--list", action="store_true", help="list the executors found and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        from snailjob.cli.discover import describe
        from snailjob.contrib.django.runtime import build_client, discover_executors, snailjob_settings
        from snailjob.log import configure_local_logging
        from snailjob.ops.health import start_operations

        if options["list"]:
            for item in discover_executors():
                info = describe(item)
                self.stdout.write(f"{info['name']}  {info['kind']}")
            return
        try:
            settings = snailjob_settings()
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from None
        configure_local_logging(settings.snail_log_level, settings.snail_log_format,
                                settings.snail_log_local_filename, settings.snail_log_local_backup_count)
        client = build_client(settings)
        if not client.registry.names():
            raise CommandError("no executors found: put them in a jobs.py module of an installed app "
                               "(or set SNAILJOB['JOBS_MODULE'])")
        operations = start_operations(client)
        try:
            client.run()
        finally:
            if operations is not None:
                operations.close()
