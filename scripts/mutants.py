"""Replays hand-made mutants of the package: each one small realistic slip,
and the tests that must fail when it is made.

A mutant names an exact snippet of the package's source, not a file: the
snippet is looked for in every ``.py`` file under ``snailjob/`` and must occur
exactly once there, so code can move between modules without touching this
list (only a changed snippet needs an update; ``tests/test_mutants.py`` says
which).  Each mutant is applied to a fresh copy of the checkout in a
temporary directory (the working tree is never changed) and its tests are run
there, one by one, with ``PYTHONPATH`` pointing at the copy.

    python scripts/mutants.py            # every mutant
    python scripts/mutants.py NAME...    # only these
    python scripts/mutants.py --list     # names, what each changes, their tests
    python scripts/mutants.py --check    # only: every snippet found exactly once
    python scripts/mutants.py --baseline # first run the named tests unmutated (they must pass)

Exit status 0 when every mutant was killed (each of its tests failed),
1 otherwise (a survivor, a snippet not found, a test that errs unmutated).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "snailjob"
_IGNORED = (".git", ".venv", "venv", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
            "build", "dist", "*.egg-info", "site")


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    original: str
    replacement: str
    tests: Tuple[str, ...]


_EMU = "tests/test_with_emulator.py::"
MUTANTS: List[Mutant] = [
    Mutant("token-compare-inverted", "inbound token check: compare_digest(a, b) written as a != b",
           'hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))',
           'token.encode("utf-8", "replace") != expected.encode("utf-8", "replace")',
           ("tests/test_inbound.py::test_only_the_exact_token_is_accepted",)),
    Mutant("sentinel-repeats-failures", "a map sentinel's failure repeated like its success",
           "repeat=sentinel and success,", "repeat=sentinel,",
           (_EMU + "test_a_failed_sentinel_is_reported_once",)),
    Mutant("sentinel-manual-first-run", "a manual retry's first run of a sentinel repeated",
           "return ctx.sentinel and ctx.map_items_sent == 0 and not manual_first_run",
           "return ctx.sentinel and ctx.map_items_sent == 0",
           ("tests/test_mapreduce.py::test_the_first_run_of_a_manual_retry_of_a_sentinel_is_reported_once",)),
    Mutant("sentinel-with-children", "a sentinel that created sub-tasks of its own repeated",
           "return ctx.sentinel and ctx.map_items_sent == 0 and not manual_first_run",
           "return ctx.sentinel and not manual_first_run",
           (_EMU + "test_a_sentinel_with_sub_tasks_of_its_own_is_reported_once",)),
    Mutant("throwable-title-whole-text", "a remote log's throwable titled with the whole message",
           'return f"{exception_type(exc)}: {text.splitlines()[0]}" if text else exception_type(exc)',
           'return f"{exception_type(exc)}: {text}" if text else exception_type(exc)',
           ("tests/test_log.py::test_a_multi_line_message_titles_the_throwable_with_its_first_line",)),
    Mutant("remote-log-emit-raises", "RemoteLogHandler.emit raising before its guard",
           "    def emit(self, record: logging.LogRecord) -> None:\n        try:\n"
           "            if getattr(record, _SHIPPED, False):",
           "    def emit(self, record: logging.LogRecord) -> None:\n        raise RuntimeError('mutant')\n"
           "        try:\n            if getattr(record, _SHIPPED, False):",
           ("tests/test_log.py::test_remote_logger_outside_a_job_never_raises",)),
    Mutant("remote-log-emit-drops-all", "RemoteLogHandler.emit failing inside its guard (every record lost)",
           "        try:\n            if getattr(record, _SHIPPED, False):",
           "        try:\n            raise RuntimeError('mutant')\n            if getattr(record, _SHIPPED, False):",
           ("tests/test_log.py::test_remote_logger_outside_a_job_never_raises",)),
    Mutant("max-running-negative", "SNAIL_MAX_RUNNING accepting a negative cap",
           "snail_max_running: int = Field(512, ge=0)", "snail_max_running: int = Field(512)",
           ("tests/test_settings.py::test_a_negative_max_running_is_refused",)),
    Mutant("address-interfaces-first", "interface addresses preferred to the default route's source",
           "    found: List[str] = []\n    for probe in (_PROBE_V4, _PROBE_V6):",
           "    found: List[str] = _interface_addresses()\n    for probe in (_PROBE_V4, _PROBE_V6):",
           ("tests/test_address.py::test_without_a_route_to_the_server_the_default_routes_source_comes_first",)),
    Mutant("address-loopback-route-accepted", "a loopback route source accepted for a non-loopback server",
           "        if is_loopback(source) and not is_loopback(host):\n            continue",
           "",
           ("tests/test_address.py::test_a_server_name_resolving_to_this_host_is_not_answered_with_loopback",)),
    Mutant("pool-idle-worker-unchecked", "the process pool handing out an idle worker without checking it lives",
           "                worker = self._idle.pop()\n                if worker.alive():\n"
           "                    return worker\n",
           "                return self._idle.pop()\n",
           ("tests/test_processes.py::test_an_idle_worker_killed_is_replaced_for_the_next_task",)),
    Mutant("map-parent-id", "a map report naming the batch instead of the task as the parent",
           "parentId=req.taskId,", "parentId=req.taskBatchId,",
           ("tests/test_mapreduce.py::test_a_map_report_names_the_task_that_made_it_as_parent",)),
    Mutant("stop-leaves-task-events-unset", "a stop that does not set the stop event of each task of the batch",
           "                task.stop_event.set()\n", "",
           ("tests/test_async_typed.py::test_async_cooperative_stop",
            "tests/test_processes.py::test_a_cooperative_job_sees_the_stop_in_its_worker")),
    Mutant("retry-outcome-not-handed-back", "a replay's outcome not handed back to the retry endpoint",
           "self._dispatcher.submit(work, self.on_outcome)",
           "self._dispatcher.submit(work, lambda work, outcome: None)",
           ("tests/test_retry.py::test_server_replay_runs_once_and_reports_each_outcome",)),
    Mutant("reduce-stage-keeps-repeats", "the reduce stage's arrival not ending the sentinel's repeats",
           "            self._reports.batch_past_its_maps(request.taskBatchId)\n", "            pass\n",
           ("tests/test_builtin.py::test_the_reduce_stage_ends_the_sentinels_repeats",)),
    Mutant("builtin-on-when-off", "a built-in executor run although SNAIL_BUILTIN_EXECUTORS leaves it off",
           "        if kind not in self._settings.builtin_kinds:", "        if False:",
           ("tests/test_builtin.py::test_a_builtin_that_is_off_is_refused_naming_the_setting",)),
    Mutant("requires-new-joins", "a REQUIRES_NEW retryable nested in another's call joins it",
           "        return not (stage == CALL and owner is not self and self.propagation is Propagation.REQUIRES_NEW)",
           "        return True",
           ("tests/test_retry_nesting.py::test_a_nested_retryable_joins_or_opens_its_own_retry",)),
    Mutant("replay-reports-unforced", "a manual report inside a server replay sent without force_report",
           "        if in_replay() and not self.force_report:", "        if False:",
           ("tests/test_retry_nesting.py::test_a_manual_report_inside_a_replay_is_sent_only_when_forced",)),
    Mutant("alarm-rate-limit-off-by-one", "one alarm more a minute than SNAIL_ALARM_RATE_LIMIT allows",
           "        if len(sent) >= self._rate_limit:", "        if len(sent) > self._rate_limit:",
           ("tests/test_alarms.py::test_rate_limit_per_scene_and_recipient_then_the_held_back_are_counted",)),
    Mutant("alarm-token-not-scrubbed", "the group token left in an alarm's text",
           '                text = text.replace(secret, "***")\n                title = ', "                title = ",
           ("tests/test_alarms.py::test_webhook_posts_title_and_text_with_its_secret_header",)),
    Mutant("config-push-ignored", "the server's pushed group config answered but not taken",
           'return self._sync_config(body) if self._sync_config is not None else Reply(1, "", None)',
           'return Reply(1, "", None)',
           ("tests/test_alarms.py::test_the_server_push_is_taken_and_a_bad_one_ignored",)),
    Mutant("config-never-pulled", "the group config never pulled from the server",
           'reply = transport.call(enums.URI_SYNC_VERSION, "[]", self._rpc_timeout)', 'reply = Reply(1, "", None)',
           ("tests/test_alarms.py::test_the_node_pulls_after_connecting",)),
    Mutant("held-results-no-alarm", "no alarm when an outage starts holding results",
           'self.on_problem(f"could not deliver {len(held)}', '(lambda problem: None)(f"could not deliver {len(held)}',
           ("tests/test_alarms.py::test_a_result_the_node_cannot_deliver_raises_an_alarm",)),
    Mutant("retry-flow-ignored", "a request that came with the snail-job header not put in the retry flow",
           "return site is not None and site.retry_flow", "return False",
           ("tests/test_propagation.py::test_a_request_in_the_retry_flow_runs_a_retryable_once_and_a_reported_retry_answers_519",)),
    Mutant("status-519-overwritten", "a downstream's 519 overwritten by a later status",
           "if site.status != NO_RETRY:", "if True:",
           ("tests/test_propagation.py::test_a_519_answer_is_kept_over_later_statuses_and_goes_up_to_the_request",)),
    Mutant("replay-519-not-stopped", "a replay whose downstream answered 519 reported as a plain failure",
           "if self.site is not None and self.site.refused and not isinstance(exc, StopRetry):", "if False:",
           ("tests/test_propagation.py::test_a_replay_whose_downstream_answered_519_stops_the_retry",)),
    Mutant("worker-always-waits", "a worker with queued work next also delivering its result itself",
           "task.may_wait = not self._ring and (batch is None or not batch.queue)", "task.may_wait = True",
           ("tests/test_dispatcher.py::test_a_worker_with_nothing_queued_next_may_wait_to_deliver",)),
    Mutant("lone-result-not-waited", "a lone thread task's result always started in the background",
           "wait=task.may_wait)", "wait=False)",
           (_EMU + "test_a_lone_result_is_delivered_by_its_worker_and_a_busy_node_uses_the_loop",)),
    Mutant("outbox-waits-in-company", "a result offered with wait delivered by its thread with others in flight",
           "wait and self._in_flight == 1 and len(starts) == 1", "wait and len(starts) == 1",
           ("tests/test_delivery.py::test_a_result_offered_with_wait_while_another_is_in_flight_does_not_wait",)),
    Mutant("native-lone-result-blocks", "the native transport's lone result by a blocking call again",
           "    lone_call_blocking = False\n", "    lone_call_blocking = True\n",
           ("tests/test_native_transport.py::test_a_lone_result_is_sent_without_blocking_its_thread",)),
    Mutant("worker-never-woken", "a parked worker runs the next batch only when its wait times out",
           "            slot.wake.release()\n", "            pass\n",
           ("tests/test_dispatcher.py::test_a_parked_worker_is_woken_at_once_for_the_next_batch",)),
    Mutant("native-send-now-off", "a call off the loop waits for the loop again",
           "        if loop is None and self._start_now(call):\n", "        if False:\n",
           ("tests/test_native_send_now.py::test_a_call_off_the_loop_reaches_the_server_while_the_loop_is_busy",)),
    Mutant("native-send-now-unswept", "a call started off the loop never sees its deadline pass",
           "            if call.deadline <= now:\n                self._expire(link, call)\n",
           "            if False:\n                self._expire(link, call)\n",
           ("tests/test_native_send_now.py::test_a_call_off_the_loop_keeps_its_deadline",)),
    Mutant("native-backlog-stranded", "the rest of a request the socket took in part waits for another write",
           "            self._loop.call_soon_threadsafe(self._write_backlog)\n", "",
           ("tests/test_native_send_now.py::test_a_request_the_socket_takes_only_in_part_is_finished_by_the_loop_in_order",)),
    Mutant("native-dead-peer-kept", "a connection silent through a deadline is never probed",
           "            if not conn.closed and conn.last_received < call.made:  # not a byte since the call was made\n"
           "                self._probe(conn)\n", "",
           ("tests/test_native_dead_peer.py::test_a_connection_silent_through_a_deadline_and_a_ping_is_replaced",)),
    Mutant("native-ping-answer-ignored", "a connection is given up even when the PING is answered",
           "            if not conn.closed and conn.last_received < asked:\n",
           "            if not conn.closed:\n",
           ("tests/test_native_dead_peer.py::test_a_connection_that_answers_the_ping_is_kept",)),
    Mutant("native-rapid-reset", "a client may reset streams without limit",
           "            if not self.is_client:\n                self._resets.count()\n", "",
           ("tests/test_native_inbound.py::test_rapid_reset_ends_the_connection_and_others_are_served",)),
    Mutant("native-streams-unlimited", "the native server takes streams beyond the advertised limit",
           "if len(self.streams) >= self.limits.max_streams or self.draining_since is not None:",
           "if self.draining_since is not None:",
           ("tests/test_native_inbound.py::test_streams_beyond_the_advertised_limit_are_refused",)),
    Mutant("native-no-byte-budget", "messages still coming in may buffer without a cap",
           "while self._buffered > self.limits.buffered_bytes and self._waiting:", "while False:",
           ("tests/test_native_inbound.py::test_bytes_of_messages_still_coming_are_capped_oldest_call_ends_first",)),
    Mutant("native-stalled-peer-kept", "a peer that does not take replies is never dropped",
           "        if now - since > limits.receive_timeout:\n            self.fail(",
           "        if False:\n            self.fail(",
           ("tests/test_native_inbound.py::test_a_peer_that_keeps_its_window_shut_is_closed",
            "tests/test_native_inbound.py::test_a_slow_reader_is_closed_without_waiting_for_it")),
    Mutant("native-header-list-uncapped", "a header block may decode to any size",
           "            if listed > self.max_list:", "            if False:",
           ("tests/test_http2_headers.py::test_the_header_list_is_capped",)),
    Mutant("inbound-streams-100", "the inbound port back at 100 concurrent calls per connection",
           "    max_streams: int = 1000\n", "    max_streams: int = 100\n",
           ("tests/test_reliability.py::test_a_burst_the_server_can_send_is_never_refused_while_the_loop_is_busy",)),
    Mutant("acceptors-never-started", "the extra requests for new calls registered but never made",
           "        for _ in range(self.count):\n", "        for _ in range(0):\n",
           ("tests/test_inbound_accept.py::test_calls_taken_in_by_the_extra_requests_are_served_like_any_other",)),
    Mutant("acceptors-skip-dry-run", "the signature check at start skipped",
           "        problem = _dry_run(cygrpc, core, resolver, loop, self._name)\n", "        problem = None\n",
           ("tests/test_inbound_accept.py::test_a_grpcio_without_the_parts_or_with_changed_ones_keeps_its_own_request"
            "[a-signature-changed]",)),
]


class SnippetError(Exception):
    """A mutant's snippet is not found exactly once in the package."""


def package_files(root: Path) -> List[Path]:
    return sorted(p for p in (root / PACKAGE).rglob("*.py") if "__pycache__" not in p.parts)


def locate(mutant: Mutant, root: Path = ROOT) -> Path:
    """The one file of the package holding ``mutant.original`` exactly once."""
    hits: Dict[Path, int] = {}
    for path in package_files(root):
        count = path.read_text(encoding="utf-8").count(mutant.original)
        if count:
            hits[path] = count
    total = sum(hits.values())
    if total == 1:
        return next(iter(hits))
    if total == 0:
        raise SnippetError(f"mutant {mutant.name}: snippet not found under {PACKAGE}/: {mutant.original!r}")
    where = ", ".join(f"{p.relative_to(root)} ({n}x)" for p, n in hits.items())
    raise SnippetError(f"mutant {mutant.name}: snippet found {total} times ({where}), "
                       f"it must be unique: {mutant.original!r}")


def self_check(root: Path = ROOT) -> List[str]:
    """Problems of the mutant list itself (empty when fine): cheap, runs no test."""
    problems: List[str] = []
    names = [m.name for m in MUTANTS]
    problems += [f"mutant name {n} used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    for mutant in MUTANTS:
        try:
            locate(mutant, root)
        except SnippetError as exc:
            problems.append(str(exc))
        if mutant.replacement == mutant.original:
            problems.append(f"mutant {mutant.name}: the replacement is the original")
        if not mutant.tests:
            problems.append(f"mutant {mutant.name}: no test named")
        for node in mutant.tests:
            path, _, function = node.partition("::")
            test_file = root / path
            if not test_file.is_file() or f"def {function.split('[', 1)[0]}(" not in test_file.read_text("utf-8"):
                problems.append(f"mutant {mutant.name}: no test {node}")
    return problems


def copy_checkout(dest: Path) -> Path:
    target = dest / "checkout"
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(*_IGNORED), symlinks=True)
    return target


def _env(copy: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_import(copy: Path, python: str) -> None:
    """Fail unless the copy's package is the one the tests will import."""
    done = subprocess.run([python, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"], cwd=copy,
                          env=_env(copy), capture_output=True, text=True, timeout=60)
    imported = Path(done.stdout.strip()).resolve() if done.returncode == 0 else None
    if imported is None or copy.resolve() not in imported.parents:
        raise SystemExit(f"the copy is not what gets imported: {imported or done.stderr.strip()} "
                         f"(expected under {copy}); is another checkout installed non-editable?")


def run_test(copy: Path, node: str, python: str) -> Tuple[int, str]:
    """pytest's exit status for one test node in the copy, and its last lines."""
    done = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", node],
                          cwd=copy, env=_env(copy), capture_output=True, text=True, timeout=600)
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    return done.returncode, tail


def replay(mutant: Mutant, python: str, baseline: bool) -> Tuple[str, List[str]]:
    """``killed``, ``SURVIVED``, ``snippet not found`` or ``ERROR``, with details."""
    try:
        relative = locate(mutant).relative_to(ROOT)
    except SnippetError as exc:
        return "snippet not found", [str(exc)]
    notes: List[str] = []
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        copy = copy_checkout(Path(tmp))
        check_import(copy, python)
        if baseline:
            for node in mutant.tests:
                code, tail = run_test(copy, node, python)
                if code != 0:
                    return "ERROR", [f"{node} does not pass unmutated (exit {code}):", tail]
        path = copy / relative
        path.write_text(path.read_text(encoding="utf-8").replace(mutant.original, mutant.replacement),
                        encoding="utf-8")
        survivors = []
        for node in mutant.tests:
            code, tail = run_test(copy, node, python)
            if code == 0:
                survivors.append(node)
            elif code not in (1, 2):  # 1: tests failed, 2: collection failed (the mutant broke an import)
                return "ERROR", [f"{node}: pytest exit status {code} (a wrong test id?)", tail]
            else:
                notes += [f"{node}: failed", *("      " + line for line in tail.splitlines())]
    if survivors:
        return "SURVIVED", [f"{node}: passed" for node in survivors] + notes
    return "killed", notes


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--check", action="store_true", help="only check that every snippet is found once")
    parser.add_argument("--baseline", action="store_true", help="run each mutant's tests unmutated first")
    parser.add_argument("-v", "--verbose", action="store_true", help="show how each killing test failed")
    parser.add_argument("--python", default=sys.executable, help="interpreter with pytest (default: this one)")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:34} {m.what}\n{'':34} tests: {', '.join(m.tests)}")
        return 0
    problems = self_check()
    if args.check:
        print("\n".join(problems) if problems else f"{len(MUTANTS)} mutants, every snippet found once")
        return 1 if problems else 0
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"no mutant named {', '.join(unknown)} (see --list)")
    chosen = [known[n] for n in args.names] if args.names else MUTANTS
    results: List[Tuple[str, str]] = []
    for mutant in chosen:
        started = time.monotonic()
        verdict, details = replay(mutant, args.python, args.baseline)
        results.append((mutant.name, verdict))
        print(f"{mutant.name:34} {verdict} ({time.monotonic() - started:.0f}s)", flush=True)
        for line in details if verdict != "killed" or args.verbose else []:
            print(f"    {line}")
    bad = [name for name, verdict in results if verdict != "killed"]
    print(f"\n{len(results) - len(bad)} of {len(results)} mutants killed"
          + (f"; not killed: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
