# mypy: allow-untyped-defs
"""Separate "hosts" on one machine: Linux network namespaces joined to the
root namespace by a veth pair each.

The SnailJob server runs in the root namespace; a client process started with
``Host.command(...)`` runs in its own namespace and reaches the server only
through its veth link, at an address of the test's own choosing, exactly as a
client on another machine would.  Nothing is routed beyond the pair: the
traffic never leaves the namespaces the test made, and ``Host.remove()``
(also run at exit) deletes the namespace and its link.

Addresses: host ``i`` gets ``10.213.<i>.2/24`` and ``fd5a:5a:<i>::2/64``; the
root side of its link is ``.1`` / ``::1`` of the same subnets.  ``link_down()``
and ``link_up()`` cut and restore the link (a network partition).

Requires root and the ``ip`` command; ``unavailable()`` says why not.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import threading
from typing import Optional

_lock = threading.Lock()
_next = [0]
_made: list = []
_SUBNET = "10.213"
_SUBNET6 = "fd5a:5a"


def _ip(*args, check=True, ns=None):
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def unavailable() -> Optional[str]:
    """None when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns); this run is not root"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    probe = f"sjprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _taken_subnets():
    out = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    return {int(part.split(".")[2]) for part in out.split() if part.startswith(_SUBNET + ".")}


class Host:
    """A network namespace with one veth link to the root namespace."""

    def __init__(self, ipv6=False):
        with _lock:
            taken = _taken_subnets()
            index = _next[0] + 1
            while index in taken:
                index += 1
            _next[0] = index
        if index > 250:
            raise RuntimeError("no free 10.213.x.0/24 subnet left")
        self.index = index
        tag = f"{os.getpid() % 100000}x{index}"
        self.name = f"sjhost{tag}"
        self.root_if = f"sjr{tag}"[:15]
        self.ns_if = f"sjn{tag}"[:15]
        self.ipv6 = ipv6
        self.address = f"{_SUBNET}.{index}.2"
        self.gateway = f"{_SUBNET}.{index}.1"  # the server's address as seen from this host
        self.address6 = f"{_SUBNET6}:{index:x}::2"
        self.gateway6 = f"{_SUBNET6}:{index:x}::1"
        self.made = False

    def create(self):
        _ip("netns", "add", self.name)
        self.made = True
        _made.append(self)
        _ip("link", "add", self.root_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.root_if)
        _ip("addr", "add", f"{self.address}/24", "dev", self.ns_if, ns=self.name)
        if self.ipv6:
            _ip("-6", "addr", "add", f"{self.gateway6}/64", "dev", self.root_if, "nodad")
            _ip("-6", "addr", "add", f"{self.address6}/64", "dev", self.ns_if, "nodad", ns=self.name)
        _ip("link", "set", self.root_if, "up")
        _ip("link", "set", "lo", "up", ns=self.name)
        _ip("link", "set", self.ns_if, "up", ns=self.name)
        _ip("route", "add", "default", "via", self.gateway, ns=self.name)
        return self

    def command(self, argv):
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def link_down(self):
        """Cut the link: neither side can reach the other until ``link_up()``."""
        _ip("link", "set", self.root_if, "down")

    def link_up(self):
        _ip("link", "set", self.root_if, "up")

    def power_off(self):
        """The host dies: its namespace goes, and with it every socket and byte the kernel
        still held for it (a SIGKILLed process' unsent data is otherwise still delivered
        by the kernel once the link is back). Kill its processes first; ``create()`` brings
        the host back with the same addresses."""
        self.remove()

    def remove(self):
        """Delete the namespace (which deletes its end of the pair, and so the pair)."""
        if not self.made:
            return
        self.made = False
        _ip("netns", "del", self.name, check=False)
        _ip("link", "del", self.root_if, check=False)  # normally gone already

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc):
        self.remove()


@atexit.register
def _cleanup():
    for host in list(_made):
        host.remove()
