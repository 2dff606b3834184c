"""The ``snailjob`` command: run, check, list and try jobs, trigger them remotely.

::

    snailjob run jobs                 # register every executor of jobs.py and serve until SIGINT/SIGTERM
    snailjob check                    # settings, server, address, port, token: one line each
    snailjob jobs jobs --json         # what jobs.py declares
    snailjob try jobs echoJob --params hi   # run one job against an in-process server emulator
    snailjob alarm-test               # a test alarm to each notify recipient of the group's client scenes
    snailjob trigger 42               # OpenAPI: run job 42 now
    snailjob status 42                # OpenAPI: job 42's definition and status

``python -m snailjob`` is the same command.  Settings come from the
``SNAIL_*`` environment and ``.env`` exactly as ``Settings.load()`` reads
them; the options below override single settings.  docs/cli.md is the
reference.  Importing this package has no side effects; each command's
module is imported only when that command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from snailjob._version import __version__
from snailjob.cli.options import node_options, server_options, settings_overrides

__all__ = ["main", "settings_overrides"]

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snailjob", allow_abbrev=False,
        description="Command line of snail-job-python, the Python client of the SnailJob scheduler.",
        epilog="Exit codes: 0 success, 1 failure, 2 usage or configuration error. See docs/cli.md.")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    server, node = server_options(), node_options()

    run = commands.add_parser("run", parents=[server, node], allow_abbrev=False,
                              help="register a module's executors and serve until SIGINT/SIGTERM",
                              description="Import each MODULE, register every executor it declares "
                                          "(or the object named by MODULE:OBJECT) and run one client.")
    run.add_argument("targets", nargs="+", metavar="MODULE[:OBJECT]",
                     help="module (dotted name, or a .py file); OBJECT: a Client, ExecutorManager, "
                          "an ExecutorRegistry or a list of executors")
    run.add_argument("--reload", action="store_true",
                     help="development only: restart when a .py file of the modules' directories changes")

    check = commands.add_parser("check", parents=[server, node], allow_abbrev=False,
                                help="check settings, server, address, inbound port and token",
                                description="Check that this node can run: prints one line per check.")
    check.add_argument("--timeout", type=float, default=10.0, metavar="S",
                       help="seconds to wait for the server (default 10)")

    jobs = commands.add_parser("jobs", allow_abbrev=False, help="list the executors modules declare")
    jobs.add_argument("targets", nargs="+", metavar="MODULE[:OBJECT]")
    jobs.add_argument("--json", action="store_true", help="print JSON")

    try_ = commands.add_parser("try", allow_abbrev=False,
                               help="run one job against an in-process server emulator",
                               description="Start a server emulator and a client with MODULE's executors, "
                                           "trigger JOB as the server would, print the outcome.")
    try_.add_argument("module", metavar="MODULE")
    try_.add_argument("job", metavar="JOB", help="executor name (or the Python name of the object)")
    try_.add_argument("--params", metavar="TEXT", default="", help="job parameters (the console's text)")
    try_.add_argument("--type", choices=["cluster", "broadcast", "sharding", "map", "mapreduce"],
                      help="task type (default: from the executor: job -> cluster, map, mapreduce)")
    try_.add_argument("--shards", metavar="JSON_ARRAY", help='sharding parameters, e.g. \'["a","b"]\'')
    try_.add_argument("--shard-num", type=int, default=2, metavar="N",
                      help="map-reduce: number of reduce tasks (default 2)")
    try_.add_argument("--timeout", type=float, default=30.0, metavar="S",
                      help="seconds the batch may take (default 30)")
    try_.add_argument("-v", "--verbose", action="store_true", help="show the client's log on stderr")

    alarm = commands.add_parser("alarm-test", parents=[server, node], allow_abbrev=False,
                                help="send a test alarm to every notify recipient of the group's client scenes",
                                description="Pull the group config from the server and send a test alarm to "
                                            "each recipient it names for client-side scenes; one line each.")
    alarm.add_argument("--timeout", type=float, default=10.0, metavar="S",
                       help="seconds to wait for the server (default 10)")

    remote = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    remote.add_argument("--openapi-url", metavar="URL", help="OpenAPI base URL (SNAIL_OPENAPI_URL)")
    trigger = commands.add_parser("trigger", parents=[server, remote], allow_abbrev=False,
                                  help="OpenAPI: run a job now")
    trigger.add_argument("job_id", type=int, metavar="JOB_ID")
    trigger.add_argument("--params", metavar="TEXT", help="parameters for this run (replace the job's)")
    status = commands.add_parser("status", parents=[server, remote], allow_abbrev=False,
                                 help="OpenAPI: a job's definition and status (or a batch's with --batch)")
    status.add_argument("job_id", type=int, metavar="JOB_ID")
    status.add_argument("--batch", action="store_true", help="JOB_ID is a batch id: show that batch")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``snailjob`` command; returns the exit code."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ns = parser.parse_args(args)
    if ns.command is None:
        parser.print_help(sys.stderr)
        return 2
    if ns.command == "run":
        from snailjob.cli.run import run_command

        return run_command(ns, args)
    if ns.command == "check":
        from snailjob.cli.check import check_command

        return check_command(ns)
    if ns.command == "jobs":
        from snailjob.cli.discover import jobs_command

        return jobs_command(ns)
    if ns.command == "alarm-test":
        from snailjob.cli.alarm_test import alarm_test_command

        return alarm_test_command(ns)
    if ns.command == "try":
        from snailjob.cli.try_job import try_command

        return try_command(ns)
    from snailjob.cli.remote import remote_command

    return remote_command(ns)
