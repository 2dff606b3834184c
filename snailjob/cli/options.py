"""The options every ``snailjob`` command shares, and the settings they override.

Kept apart from ``cli/__init__`` (the parser and the command table) so that
the commands' modules import these without importing the package that
imports them.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict

# option dest -> Settings field
_SETTINGS_OPTIONS = {
    "server": "snail_server_host",
    "group": "snail_group_name",
    "namespace": "snail_namespace",
    "host_port": "snail_host_port",
    "host_ip": "snail_host_ip",
    "health_port": "snail_health_port",
    "log_level": "snail_log_level",
    "openapi_url": "snail_openapi_url",
}


def settings_overrides(ns: argparse.Namespace) -> Dict[str, Any]:
    """The ``Settings.load(**overrides)`` keywords given on the command line."""
    return {field: getattr(ns, dest) for dest, field in _SETTINGS_OPTIONS.items()
            if getattr(ns, dest, None) is not None}


def server_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    group = parent.add_argument_group("settings (override SNAIL_* variables and .env)")
    group.add_argument("--server", metavar="HOST[:PORT]",
                       help="SnailJob server(s), comma-separated (SNAIL_SERVER_HOST)")
    group.add_argument("--group", metavar="NAME", help="group name (SNAIL_GROUP_NAME)")
    group.add_argument("--namespace", metavar="ID", help="namespace id (SNAIL_NAMESPACE)")
    return parent


def node_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    group = parent.add_argument_group("node settings")
    group.add_argument("--host-port", type=int, metavar="PORT", help="inbound port, 0: any free one (SNAIL_HOST_PORT)")
    group.add_argument("--host-ip", metavar="ADDRESS", help="address advertised to the server (SNAIL_HOST_IP)")
    group.add_argument("--health-port", type=int, metavar="PORT",
                       help="serve /livez /readyz /stats /metrics here (SNAIL_HEALTH_PORT)")
    group.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING, ERROR (SNAIL_LOG_LEVEL)")
    return parent
