"""What to do about a problem: the "fix:" texts that ``snailjob check``
prints and that a running client repeats while it cannot register.

Plain text only, so that both the client and the command line can import
it (the client must not import ``snailjob.cli``).
"""

from __future__ import annotations

FIX_SETTINGS = "correct the variable named above (see CONFIGURATION.md), or the matching option"
FIX_SERVER = ("start the server, or fix SNAIL_SERVER_HOST / SNAIL_SERVER_PORT: the server's gRPC port "
              "(snail-job.server-port, 17888 by default), not its web port")
FIX_ADDRESS = "set SNAIL_HOST_IP to an address of this host that the server can reach"
FIX_PORT = "choose another SNAIL_HOST_PORT or stop the process using it"
FIX_TOKEN = ("set SNAIL_TOKEN to the group's token (console: group management); if it is right, "
             "the group is unknown in that namespace: create the group in the console or fix "
             "SNAIL_GROUP_NAME / SNAIL_NAMESPACE (the server answers both the same way)")
FIX_UNREACHABLE = "the server did not answer the heartbeat: see the server check above"
FIX_OTHER = "see the server's log for this refusal"
CHECK_HINT = "run `snailjob check` with the same settings to test them one by one"


def fix_for(problem: str, reachable: bool = True) -> str:
    """The fix line for a refused or failed heartbeat, chosen by the message."""
    lowered = problem.lower()
    if "token authentication failed" in lowered:
        return FIX_TOKEN
    if "unavailable" in lowered or "deadline_exceeded" in lowered or not reachable:
        return FIX_UNREACHABLE if not reachable else FIX_SERVER
    return FIX_OTHER
