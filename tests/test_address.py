"""The advertised address (host-ip) and the inbound bind address."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from snailjob import address
from snailjob.address import bind_host_for, choose_advertised, is_loopback, join_host_port, route_source
from snailjob.errors import ConfigurationError
from snailjob.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.connect(("::1", 9))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host,expected", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("10.0.0.5", False), ("fd00::2", False), ("snailjob.example.com", False), ("0.0.0.0", False),
])
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_route_source_of_loopback_and_of_a_name_that_does_not_resolve() -> None:
    assert route_source("127.0.0.1", 17888) == "127.0.0.1"
    assert route_source("nothing.invalid", 17888) is None


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_route_source_ipv6_loopback() -> None:
    assert route_source("::1", 17888) == "::1"
    assert choose_advertised(None, ["[::1]:17888"]).host == "::1"


def test_the_configured_address_wins() -> None:
    choice = choose_advertised("10.9.8.7", ["127.0.0.1:17888"])
    assert (choice.host, choice.how, choice.warning) == ("10.9.8.7", "SNAIL_HOST_IP", None)


def test_a_server_on_loopback_gets_loopback_without_a_warning() -> None:
    choice = choose_advertised(None, ["127.0.0.1:17888"])
    assert (choice.host, choice.warning) == ("127.0.0.1", None)
    assert choice.how == "route to 127.0.0.1"


def test_the_route_to_the_first_server_that_resolves_is_used(monkeypatch: Any) -> None:
    routes = {"nothing.invalid": None, "10.0.0.1": "10.0.0.99", "10.0.0.2": "10.0.0.98"}
    monkeypatch.setattr(address, "route_source", lambda host, port: routes[host])
    choice = choose_advertised(None, ["nothing.invalid:17888", "10.0.0.1:17888", "10.0.0.2:17888"])
    assert (choice.host, choice.how, choice.warning) == ("10.0.0.99", "route to 10.0.0.1", None)


def test_no_server_resolves_then_the_first_non_loopback_address(monkeypatch: Any) -> None:
    monkeypatch.setattr(address, "route_source", lambda host, port: None)
    monkeypatch.setattr(address, "_host_addresses", lambda: ["192.168.7.7", "fd00::7"])
    choice = choose_advertised(None, ["snailjob.internal:17888"])
    assert choice.host == "192.168.7.7" and "no server resolved" in choice.how and choice.warning is None


def test_nothing_found_falls_back_to_loopback_with_a_warning(monkeypatch: Any) -> None:
    monkeypatch.setattr(address, "route_source", lambda host, port: None)
    monkeypatch.setattr(address, "_host_addresses", lambda: [])
    choice = choose_advertised(None, ["snailjob.internal:17888"])
    assert choice.host == "127.0.0.1"
    assert choice.warning and "snailjob.internal" in choice.warning and "SNAIL_HOST_IP" in choice.warning


def test_a_loopback_address_advertised_to_a_remote_server_is_a_warning_naming_the_fix() -> None:
    choice = choose_advertised("127.0.0.1", ["10.1.1.1:17888"])
    assert choice.host == "127.0.0.1"
    assert choice.warning is not None
    assert "10.1.1.1" in choice.warning and "set SNAIL_HOST_IP" in choice.warning


def _probes(monkeypatch: Any, server_routes: Any, default_v4: Any, interfaces: Any, resolved: Any = ()) -> None:
    """The low-level probes of this host, made up: the route to each server
    name, the default route's source (IPv4; none for IPv6), the interfaces'
    addresses and what the host name resolves to."""
    def route(host: str, port: int) -> Any:
        if host in server_routes:
            return server_routes[host]
        return None if ":" in host else default_v4  # the probes of the default routes

    monkeypatch.setattr(address, "route_source", route)
    monkeypatch.setattr(address, "_interface_addresses", lambda: list(interfaces))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kw: [
        (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM, 17, "", (ip, 0)) for ip in resolved])


def test_host_addresses_are_never_loopback_link_local_or_repeated(monkeypatch: Any) -> None:
    _probes(monkeypatch, {}, "10.0.0.50",
            ["127.0.0.1", "172.17.0.1", "169.254.3.3", "10.0.0.50", "0.0.0.0", "::1", "fe80::fc:ff:fe00:1",
             "fd00::2", "not-an-address"],
            resolved=["127.0.1.1", "192.168.1.9", "fd00::2"])
    # the default route's source, then the interfaces' in order, then the host name's
    assert address._host_addresses() == ["10.0.0.50", "172.17.0.1", "fd00::2", "192.168.1.9"]


def test_this_hosts_own_addresses_are_usable() -> None:
    import ipaddress

    usable = [a for a in address._interface_addresses()
              if not (ipaddress.ip_address(a).is_loopback or ipaddress.ip_address(a).is_link_local)]
    if not usable:
        pytest.skip("this machine has no interface address other than loopback and link-local")
    found = address._host_addresses()
    assert found, f"interfaces have {usable}, but no usable address was found"
    for host in found:
        ip = ipaddress.ip_address(host)
        assert not (ip.is_loopback or ip.is_link_local or ip.is_unspecified), host


def test_without_a_route_to_the_server_the_default_routes_source_comes_first(monkeypatch: Any) -> None:
    """The default route's source is what other hosts reach; an interface
    listed earlier (a container bridge, a VPN) may not be."""
    _probes(monkeypatch, {"snailjob.internal": None}, "10.0.0.50", ["127.0.0.1", "172.17.0.1", "10.0.0.50"])
    choice = choose_advertised(None, ["snailjob.internal:17888"])
    assert (choice.host, choice.warning) == ("10.0.0.50", None)
    assert "no server resolved" in choice.how


def test_a_server_name_resolving_to_this_host_is_not_answered_with_loopback(monkeypatch: Any) -> None:
    """A server name that resolves to this host through a non-loopback entry
    (Debian's 127.0.1.1 for the host name) routes over loopback, which the
    server cannot call back on: the host's own address is advertised instead."""
    _probes(monkeypatch, {"snailjob.internal": "127.0.1.1"}, "10.0.0.50", ["127.0.0.1", "10.0.0.50"])
    choice = choose_advertised(None, ["snailjob.internal:17888"])
    assert (choice.host, choice.warning) == ("10.0.0.50", None)


def test_bind_host_follows_the_advertised_family_unless_configured() -> None:
    assert bind_host_for(None, "10.0.0.5") == "0.0.0.0"
    assert bind_host_for(None, "fd00::5") == "::"
    assert bind_host_for("127.0.0.1", "fd00::5") == "127.0.0.1"
    assert join_host_port("fd00::5", 80) == "[fd00::5]:80"
    assert join_host_port("10.0.0.5", 80) == "10.0.0.5:80"


# --- settings ------------------------------------------------------------------------------


def test_unset_or_blank_means_choose() -> None:
    assert Settings.load(env_file=None).snail_host_ip is None
    assert Settings.load(env_file=None, snail_host_ip="  ", snail_bind_host="").snail_bind_host is None


def test_bracketed_ipv6_is_accepted() -> None:
    s = Settings.load(env_file=None, snail_host_ip="[fd00::2]", snail_server_host="fd00::1")
    assert s.snail_host_ip == "fd00::2"
    assert s.server_targets == ["[fd00::1]:17888"]


@pytest.mark.parametrize("value", ["10.0.0.1:17889", "a b", "10.0.0.0/8"])
def test_an_address_with_a_port_or_garbage_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="SNAIL_HOST_IP"):
        Settings.load(env_file=None, snail_host_ip=value)


# --- the client ----------------------------------------------------------------------------


def test_the_client_advertises_the_chosen_address_and_logs_how(make_client: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="snailjob")
    client, transport = make_client(snail_host_ip=None, snail_bind_host=None)
    assert client.host_ip == "127.0.0.1"
    assert transport.headers()["host-ip"] == "127.0.0.1"
    started = [r.getMessage() for r in caplog.records if "advertised as" in r.getMessage()]
    assert started and f"advertised as 127.0.0.1:{client.host_port} (route to 127.0.0.1)" in started[0]
    # the server is on loopback: so is the inbound port, and nothing else can reach it
    assert f"listening on 127.0.0.1:{client.host_port} (loopback, as advertised)" in started[0]
    assert client.bind_host == "127.0.0.1"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            listening += [row.split()[1] for row in rows
                          if row.split()[1].endswith(f":{client.host_port:04X}") and row.split()[3] == "0A"]
    # 127.0.0.1 only (gRPC may listen on an IPv6 socket bound to its IPv4-mapped form)
    assert len(listening) == 1 and listening[0].split(":")[0] in (
        "0100007F", "0000000000000000FFFF00000100007F"), listening


def test_the_client_warns_at_start_when_the_server_cannot_call_back(make_client: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="snailjob")
    make_client(snail_server_host="10.255.255.1", snail_host_ip="127.0.0.1")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot call this node back" in w and "SNAIL_HOST_IP" in w for w in warnings), warnings


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_an_ipv6_node_listens_on_ipv6(make_client: Any) -> None:
    client, transport = make_client(snail_server_host="::1", snail_host_ip=None, snail_bind_host=None)
    assert transport.target == "[::1]:1"
    assert transport.headers()["host-ip"] == "::1"
    with grpc.insecure_channel(f"[::1]:{client.host_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=5)


# --- on a separate host (a network namespace) ----------------------------------------------

def test_in_a_network_namespace_the_route_gives_the_hosts_own_addresses() -> None:
    """A real second "host": the only way to the server is a veth link; nothing is configured."""
    from tests.e2e import netns

    why = netns.unavailable()
    if why:
        pytest.skip(why)
    code = ("import sys; from snailjob.address import choose_advertised as c; "
            "print(c(None, [sys.argv[1]]).host, c(None, [sys.argv[2]]).host, c(None, ['none.invalid:1']).host)")
    with netns.Host(ipv6=True) as host:
        # no DNS server is reachable from the namespace: fail a lookup fast
        env = {**os.environ, "PYTHONPATH": str(REPO), "RES_OPTIONS": "timeout:1 attempts:1"}
        argv = [sys.executable, "-c", code, f"{host.gateway}:17888", f"[{host.gateway6}]:17888"]
        out = subprocess.run(host.command(argv), capture_output=True, text=True, env=env, timeout=30)
        # no default route either: only the interface list can tell
        subprocess.run(host.command(["ip", "route", "del", "default"]), check=True, timeout=10)
        bare = subprocess.run(host.command(argv), capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [host.address, host.address6, host.address]
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.split() == [host.address, host.address6, host.address]


def test_interface_addresses_are_addresses() -> None:
    import ipaddress

    found = address._interface_addresses()
    for host in found:
        ipaddress.ip_address(host)
    if sys.platform == "linux":
        assert "127.0.0.1" in found
