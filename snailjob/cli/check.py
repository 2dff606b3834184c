"""``snailjob check``: can this node run?  One line per check, then a summary.

Checks, in order: the settings are valid (nothing else is checked when they
are not); every server's gRPC port accepts a TCP connection and answers the
HTTP/2 connection preface gRPC starts with (a web port's HTTP/1.x answer is
a failure with its own fix); the advertised
address (``SNAIL_HOST_IP`` or the one chosen for the route to the server) is
one the server can call back; the inbound port can be bound; and the server
accepts a real heartbeat with the token, group and namespace.

Limits: the server's side is not checked (whether it can reach the
advertised address and port through firewalls or NAT; no call lets a client
ask).  The heartbeat registers a short-lived node in the group, with the
label ``state:check`` so that no job is routed to it; consoles list it for a
minute or so.  A server answers a wrong token and an unknown group or
namespace with the same message, so the fix names both.  The token is never
printed.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from typing import Any, Callable, List, Optional, Tuple

from snailjob.address import choose_advertised, choose_bind, join_host_port
from snailjob.advice import (
    FIX_ADDRESS,
    FIX_OTHER,
    FIX_PORT,
    FIX_SERVER,
    FIX_SETTINGS,
    FIX_UNREACHABLE,
    FIX_WEB_PORT,
    fix_for,
)
from snailjob.cli.options import settings_overrides
from snailjob.client import Client
from snailjob.errors import ConfigurationError
from snailjob.settings import Settings
from snailjob.wire.codec import clean


class Report:
    """Prints check lines, never the token."""

    def __init__(self, secret: Optional[str] = None) -> None:
        self.secret = secret
        self.results: List[bool] = []

    def _clean(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text

    def _detail(self, detail: str) -> str:
        # a detail can hold the server's refusal message: quoted when not printable
        return clean(self._clean(detail), 500)

    def ok(self, check: str, detail: str) -> None:
        self.results.append(True)
        print(f"ok   {self._clean(check)}: {self._detail(detail)}")

    def fail(self, check: str, detail: str, fix: str) -> None:
        self.results.append(False)
        print(f"FAIL {self._clean(check)}: {self._detail(detail)}")
        print(self._clean(f"     fix: {fix}"))

    def summary(self) -> int:
        failed = self.results.count(False)
        total = len(self.results)
        print(f"{total} check(s): all ok" if not failed else f"{total} check(s): {failed} failed")
        sys.stdout.flush()
        return 1 if failed else 0


def check_command(ns: argparse.Namespace) -> int:
    """Exit code 0 when every check passed, 1 otherwise (2 for bad options)."""
    if ns.timeout <= 0:
        print("snailjob check: --timeout must be > 0", file=sys.stderr)
        return 2
    report = Report()
    try:
        settings = Settings.load(**settings_overrides(ns))
    except ConfigurationError as exc:
        report.fail("settings", str(exc), FIX_SETTINGS)
        return report.summary()
    report.secret = settings.snail_token
    report.ok("settings", f"group {settings.snail_group_name}, namespace {settings.snail_namespace}, "
                          f"server {settings.server_target}")
    reachable = _check_servers(report, settings, ns.timeout)
    _check_address(report, settings)
    client, fallback = _check_inbound(report, settings)
    if client is None and fallback is not None:
        client = fallback
    if client is not None:
        try:
            _check_heartbeat(report, client, settings, ns.timeout, reachable,
                             f" (from the check's node on port {client.host_port})")
        finally:
            client.stop(grace=0)
        if client.heartbeat_age() is not None:
            print(f"note: the console lists this check's node {client.host_id} (label state:check, no job is "
                  "routed to it) for about a minute: SnailJob has no call to remove a node sooner")
    else:
        report.fail("token and group", "not checked: no client could start", FIX_PORT)
    return report.summary()


def _split(target: str) -> Tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


# what a gRPC client sends first (RFC 9113 3.4): the preface and an empty SETTINGS frame
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 0x4  # HTTP/2 frame type


def _exchange(address: Tuple[str, int], request: bytes, timeout: float, enough: Callable[[bytes], bool]) -> bytes:
    """Connect, send ``request``, read until ``enough(answer)``, the end, or ``timeout``."""
    data = b""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        try:
            while not enough(data):
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
        except OSError:  # a timeout or a reset: judge what came before it
            pass
    return data


def _status_line(data: bytes) -> Optional[str]:
    if not data.startswith(b"HTTP/"):
        return None
    return clean(data.split(b"\n", 1)[0].strip().decode("latin-1"), 60)


def probe_protocol(address: Tuple[str, int], timeout: float) -> Tuple[str, str]:
    """What listens on ``address``: ``("grpc", "")`` when it answers the HTTP/2
    preface with a SETTINGS frame (an HTTP/2 server, as gRPC is);
    ``("http", status line)`` when it answers HTTP/1.x (a web port; asked with
    ``GET /`` when the preface got no HTTP/1.x answer); else ``("unknown", what
    happened)``.  Raises ``OSError`` when it cannot connect."""
    answer = _exchange(address, H2_PREFACE, timeout,
                       lambda data: len(data) >= 9 or (data.startswith(b"HTTP/") and b"\n" in data))
    if len(answer) >= 9 and answer[3] == _SETTINGS and not answer.startswith(b"HTTP/"):
        return "grpc", ""
    line = _status_line(answer)
    if line is None:  # some web servers answer the preface without a status line, or not at all
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        request = f"GET / HTTP/1.1\r\nHost: {host}:{address[1]}\r\nConnection: close\r\n\r\n".encode()
        line = _status_line(_exchange(address, request, timeout, lambda data: b"\n" in data))
    if line is not None:
        return "http", line
    if not answer:
        return "unknown", f"no answer to the HTTP/2 preface within {timeout:g}s"
    return "unknown", f"an answer that is not HTTP/2 ({answer[:16]!r})"


def _check_servers(report: Report, settings: Settings, timeout: float) -> bool:
    """One line per server; True when one of them is a reachable gRPC port (or
    something that is at least not a web port)."""
    reachable = False
    for target in settings.server_targets:
        host, port = _split(target)
        started = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=min(timeout, 5.0)):
                connected = time.monotonic()
            kind, detail = probe_protocol((host, port), min(timeout, 3.0))
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            report.fail(f"server {target}", f"cannot connect: {reason}", FIX_SERVER)
            continue
        took = f"{(connected - started) * 1000:.0f} ms"
        if kind == "http":
            report.fail(f"server {target}", f"not a gRPC port: it answers HTTP/1.x, not HTTP/2 ('{detail}', {took})",
                        FIX_WEB_PORT)
            continue
        reachable = True
        if kind == "grpc":
            report.ok(f"server {target}", f"gRPC port reachable, answers HTTP/2 ({took})")
        else:
            report.ok(f"server {target}", f"port reachable ({took}), but not confirmed as gRPC: {detail}")
    return reachable


def _check_address(report: Report, settings: Settings) -> None:
    choice = choose_advertised(settings.snail_host_ip, settings.server_targets)
    if choice.warning:
        report.fail("advertised address", f"{choice.host} ({choice.how}): {choice.warning}", FIX_ADDRESS)
    else:
        report.ok("advertised address", f"{choice.host} ({choice.how})")


def _check_settings(settings: Settings, **update: Any) -> Settings:
    """The check node's settings: jobs never routed to it (``state:check``),
    its own host id, no outbox (a running node's file is left alone)."""
    labels = [item for item in settings.snail_labels.split(",")
              if item.strip() and item.split(":", 1)[0].strip() != "state"]
    values = {"snail_labels": ",".join(labels + ["state:check"]), "snail_host_id": None,
              "snail_outbox_path": None, **update}
    return settings.model_copy(update=values)


def _check_inbound(report: Report, settings: Settings) -> Tuple[Optional[Client], Optional[Client]]:
    """Whether ``SNAIL_HOST_PORT`` can be bound where the node would listen;
    then the check's own node, started on a free port: (it, None) when the
    port is free, (None, it) when not, (None, None) when it cannot start.

    The check's node never uses ``SNAIL_HOST_PORT`` itself: the server keeps
    listing a node for about a minute after its last heartbeat, and a node
    started right after the check on the same address would be hidden
    behind the check's entry (``state:check``, no job routed to it) until
    that entry expired."""
    port = settings.snail_host_port
    choice = choose_advertised(settings.snail_host_ip, settings.server_targets)
    bind = choose_bind(settings.snail_bind_host, choice)
    problem = _bind_problem(bind.host, port) if port else None
    if problem:
        report.fail("inbound port", f"{join_host_port(bind.host, port)}: {problem}", FIX_PORT)
    else:
        report.ok("inbound port", f"{join_host_port(bind.host, port)} can be bound ({bind.why}), "
                                  f"advertised as {join_host_port(choice.host, port)}")
    client = Client(_check_settings(settings, snail_host_port=0))
    try:
        client.start()
    except Exception as exc:  # anything start() refuses
        if not problem:
            report.fail("inbound port", f"the check's node could not start: {exc}", FIX_PORT)
        return None, None
    return (None, client) if problem else (client, None)


def _bind_problem(host: str, port: int) -> Optional[str]:
    """Why a TCP socket cannot listen on ``host:port``, or None (nothing is sent)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host.strip("[]"), port))
            probe.listen(1)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _check_heartbeat(report: Report, client: Client, settings: Settings, timeout: float, reachable: bool,
                     note: str = "") -> None:
    name = "token and group"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not client.server_up and client.last_problem is None:
        time.sleep(0.05)
    if client.server_up:
        report.ok(name, f"heartbeat accepted by {client.server_in_use} (group {settings.snail_group_name}, "
                        f"namespace {settings.snail_namespace}){note}")
        return
    problem = client.last_problem
    if problem is None:
        report.fail(name, f"no answer to the heartbeat within {timeout:g}s",
                    FIX_UNREACHABLE if not reachable else FIX_OTHER)
        return
    report.fail(name, problem, fix_for(problem, reachable))
