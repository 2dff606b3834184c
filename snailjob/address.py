"""Which address this node advertises to the server, and where it listens.

The SnailJob server calls a client back at the ``host-ip`` and ``host-port``
the client sends in every heartbeat, and tells nodes apart by them.  A node
must therefore advertise an address the server can reach: the source address
of its own route towards the server is exactly that, whatever the host's
interfaces, containers or VPNs look like.

``SNAIL_HOST_IP`` (and ``SNAIL_BIND_HOST``) override the choice.  Nothing
here sends a packet: connecting a UDP socket only asks the kernel for a route.
Resolving the server's name happens once, in ``Client.start()``; a resolver
that hangs delays the start by its own timeout.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

# Documentation addresses (RFC 5737, RFC 3849): routed like any public address,
# never answered; used to ask for the default route's source address.
_PROBE_V4 = "192.0.2.1"
_PROBE_V6 = "2001:db8::1"
_SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address


@dataclass(frozen=True)
class AddressChoice:
    """The advertised address and how it was found (for the start-up log)."""

    host: str
    how: str
    warning: Optional[str] = None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for names and
    anything else (a name is not resolved here)."""
    host = host.strip("[]")
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_target(target: str) -> Tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) as ``(host, port)``."""
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def route_source(host: str, port: int) -> Optional[str]:
    """The local address the kernel would use to reach ``host:port`` (every
    address the name resolves to is tried in order), or None."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect(sockaddr)
                source = str(probe.getsockname()[0])
        except OSError:
            continue
        return source.split("%", 1)[0]  # drop an IPv6 zone
    return None


def _interface_addresses() -> List[str]:
    """Addresses of the host's interfaces in interface order: the primary IPv4
    address of each (Linux ioctl), then the IPv6 ones (/proc/net/if_inet6).
    Empty where neither is available."""
    found: List[str] = []
    try:
        import fcntl
        import struct

        for _, name in socket.if_nameindex():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    packed = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
                except OSError:
                    continue  # no IPv4 address on this interface
            found.append(socket.inet_ntoa(packed[20:24]))
    except (ImportError, OSError, AttributeError):
        pass
    try:
        with open("/proc/net/if_inet6") as table:
            found += [str(ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))) for line in table if line.strip()]
    except (OSError, ValueError):
        pass
    return found


def _host_addresses() -> List[str]:
    """Addresses of this host that are not loopback or link-local: the
    default routes' sources, then the interfaces' addresses, then what the
    host name resolves to."""
    found: List[str] = []
    for probe in (_PROBE_V4, _PROBE_V6):
        source = route_source(probe, 9)
        if source:
            found.append(source)
    found += _interface_addresses()
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        infos = []
    found += [str(info[4][0]).split("%", 1)[0] for info in infos]
    usable = []
    for host in found:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified) and host not in usable:
            usable.append(host)
    return usable


def choose_advertised(configured: Optional[str], targets: Iterable[str]) -> AddressChoice:
    """The address to send as ``host-ip``.

    ``configured`` (``SNAIL_HOST_IP``) wins.  Otherwise: the source address of
    the route to the first server that resolves; else the first non-loopback
    address of this host (the default route's source, else the first
    interface's); else loopback.  A loopback address advertised to a
    server that is not on loopback comes with a warning.
    """
    servers = [split_target(t) for t in targets]
    remote = [host for host, _ in servers if not is_loopback(host)]
    if configured:
        choice = AddressChoice(configured, "SNAIL_HOST_IP")
    else:
        choice = _detect(servers)
    if is_loopback(choice.host) and remote:
        warning = (f"advertising loopback address {choice.host} to server {remote[0]}, which cannot "
                   f"call this node back there; set SNAIL_HOST_IP to an address of this host that "
                   f"the server can reach")
        return AddressChoice(choice.host, choice.how, warning)
    return choice


def _detect(servers: List[Tuple[str, int]]) -> AddressChoice:
    for host, port in servers:
        source = route_source(host, port)
        if source is None:
            continue
        if is_loopback(source) and not is_loopback(host):
            continue  # a name that resolves to this host through a non-loopback entry
        return AddressChoice(source, f"route to {host}")
    others = _host_addresses()
    if others and not all(is_loopback(host) for host, _ in servers):
        return AddressChoice(others[0], "first non-loopback address (no server resolved)")
    six = bool(servers) and all(":" in host for host, _ in servers)
    return AddressChoice("::1" if six else "127.0.0.1", "loopback (the server is on this host)")


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 literal."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@dataclass(frozen=True)
class BindChoice:
    """Where the inbound server listens, and why (for the start-up log)."""

    host: str
    why: str
    warning: Optional[str] = None


def is_local_address(host: str) -> bool:
    """True when a socket can be bound to ``host`` here: an address of one
    of this host's interfaces (binding sends nothing)."""
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return False
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
        return True
    except OSError:
        return False


def choose_bind(configured: Optional[str], advertised: AddressChoice) -> BindChoice:
    """Where the inbound server listens.

    ``SNAIL_BIND_HOST`` wins.  Otherwise the advertised address itself, so
    that the port is reachable only on the interface the server calls (only
    on loopback when the server is on this host).  When the advertised
    address is not one of this host's (NAT, a mapped port, a proxy), every
    interface of its family, with a note that says why.
    """
    if configured:
        return BindChoice(configured, "SNAIL_BIND_HOST")
    host = advertised.host
    if is_local_address(host):
        return BindChoice(host, "loopback, as advertised" if is_loopback(host) else "as advertised")
    everywhere = bind_host_for(None, host)
    return BindChoice(everywhere, "all interfaces",
                      f"advertised address {host} is not an address of this host (NAT or a mapped port?), "
                      f"so the inbound port listens on every interface ({everywhere}); set SNAIL_BIND_HOST "
                      "to the interface the server reaches")


def bind_host_for(configured: Optional[str], advertised: str) -> str:
    """Every interface of the advertised address' family (``::`` also
    accepts IPv4 where the host allows dual-stack sockets), unless
    ``SNAIL_BIND_HOST`` says otherwise.  ``choose_bind`` is the default; this
    is its fallback for an advertised address that is not local."""
    if configured:
        return configured
    return "::" if ":" in advertised else "0.0.0.0"
