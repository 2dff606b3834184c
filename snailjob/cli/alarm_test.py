"""``snailjob alarm-test``: send a test alarm to every notify recipient the
server names for this group's client-side scenes, and say, per recipient,
whether it went out.

It starts a short-lived node (label ``state:check``, no job is routed to it,
on a free port, as ``snailjob check`` does), pulls the group config over
``/sync/version`` and sends one message per recipient through its channel
(webhook, DingTalk, Lark, WeCom, email).  Exit code 0 when every recipient
took its message, 1 when one did not, none is configured or the server could
not be reached.  Robot URLs are shown redacted; the token is never printed.
"""

from __future__ import annotations

import argparse
import time

from snailjob.cli.check import _check_settings
from snailjob.cli.options import settings_overrides
from snailjob.client import Client
from snailjob.errors import ConfigurationError
from snailjob.settings import Settings

NO_RECIPIENT = ("no notify recipient for a client scene of group {group}: in the console, add a notify "
                "config of this group for JOB_CLIENT_ERROR (job, scene 2) or CLIENT_REPORT_ERROR / "
                "CLIENT_COMPONENT_ERROR (retry, scenes 3 and 4), enabled, with at least one recipient")


def alarm_test_command(ns: argparse.Namespace) -> int:
    if ns.timeout <= 0:
        print("snailjob alarm-test: --timeout must be > 0")
        return 2
    try:
        settings = Settings.load(**settings_overrides(ns))
    except ConfigurationError as exc:
        print(f"snailjob alarm-test: {exc}")
        return 2
    client = Client(_check_settings(settings, snail_host_port=0))
    try:
        client.start()
    except Exception as exc:  # anything start() refuses
        print(f"FAIL  the test node could not start: {exc}")
        return 1
    try:
        deadline = time.monotonic() + ns.timeout
        while not client.server_up and time.monotonic() < deadline:
            time.sleep(0.05)
        if not client.server_up:
            print(f"FAIL  server {settings.server_target}: {client.last_problem or 'no answer to the heartbeat'}")
            return 1
        results = client.send_test_alarm()
        print(f"group config version {client.config.version} of group {settings.snail_group_name} "
              f"(namespace {settings.snail_namespace})")
        if not results:
            print("FAIL  " + NO_RECIPIENT.format(group=settings.snail_group_name))
            return 1
        for result in results:
            line = f"{result.scene} via {result.channel} to {result.target}"
            print(f"ok    {line}" if result.ok else f"FAIL  {line}: {result.error}")
        return 0 if all(r.ok for r in results) else 1
    finally:
        client.stop(grace=0)
