"""`python -m tests.chaos`: the chaos scenarios; one table, also in docs/chaos.md.

    make chaos                               # every scenario, 100 runs each
    make chaos CHAOS_ARGS="--only a,d --runs 20"

Needs what the e2e tests need: local RabbitMQ and PostgreSQL (`make services`), and
Podman's Docker API with CODEX_BIN (`bash .ci/podman-env.sh run ...`, which the make
target wraps it in). Exit status 0 only when no scenario failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.chaos.chaos_driver import Knobs
from tests.chaos.chaos_scenarios import SCENARIOS, run_all
from tests.support.chaosrig import SHARDS, overrides_summary
from tests.support.history import Verdict, details, table

DOC = Path("docs/chaos.md")
FOUND = """\
## What the scenarios found

Fixed in the services (each with a regression test):

- (c) Stages failed runs with `internal_api_unreachable` while the API restarted for a
  few seconds: `shared/internal_api.py` asked for a run's keys once. It now retries
  transport errors and 5xx (503 during a Postgres outage too) with capped backoff for
  up to 60 s (`tests/unit/shared/test_internal_api.py`).
- (f) A busy stage sent SIGTERM did not stop (killed 20 s later): FastStream runs the
  shutdown hooks before it stops consuming, the log shipper's final flush ran as long
  as handlers kept logging, and on Python 3.11 `wait_for` swallowed the cancel meant
  to end it. `shared/logship.py` flushes what was buffered when the stop began and
  bounds its own tasks (`tests/unit/shared/test_logship.py`).
- (c, d) Two copies of one discovery or publish command at once (a redelivery, or an
  outbox row sent by both the API's fast path and the relay) shared
  `discover-<attempt>` / `publish-<attempt>` and emptied it under each other: runs
  failed with `git_unavailable` or `feature_not_found`; of two pushes of the same
  commit the loser failed with `push_unavailable`. Folders are per execution now,
  and a push that fails while the branch already holds this commit counts as pushed
  (`tests/integration/test_preflight.py`, `tests/integration/test_publisher.py`).
- (c) With the stage workers on uvloop, httpx (anyio) raised `AttributeError:
  'NoneType' object has no attribute 'getpeername'` instead of a connection error
  while the API was down, so the internal API client did not retry and 3 runs failed
  `handler_crashed`. The workers and the relay run on asyncio again; only the API
  keeps uvloop (scenario c itself is the regression test).

Observed, not changed:

- With 100 runs at once on 2 CPUs the API works through its event queues tens of
  seconds behind (`api.task_succeeded` held ~60 messages). With a 6 s Codex lease the
  reaper then re-sent about 40% of the Codex jobs of a fault-free run (harmless: the
  copies are ignored; wasteful). The configuration above uses 20 s.
- Heartbeats handled before their `TaskStarted` (another queue) are dropped as
  `task_not_running`, so a late `TaskStarted` leaves only its own, older lease.
"""
NOT_COVERED = """\
## What this does not cover

- RabbitMQ clustering, partitions and quorum-queue leader changes: one local node.
- Network faults between clients and the broker (latency, resets; R13): loopback only,
  no proxy in between. The broker restart in (b) drops every connection instead.
- Long stages against RabbitMQ's `consumer_timeout` (R9) and the soak (R14): minutes
  and hours, not this target's budget.
- Containers: Codex runs as a host process (`EXECUTOR=process`), the probe finds no
  auth volume and passes in API-key mode; the container executor is covered by the
  integration and e2e tests.
- Scenario (b) restarts the machine's shared RabbitMQ and PostgreSQL: it is skipped
  while other pytest processes run (`--force-shared` runs it anyway).
"""


def log(line: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    sys.stderr.write(f"[chaos {stamp}] {line}\n")
    sys.stderr.flush()


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    mem = next(
        (
            int(line.split()[1]) / 2**20
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0.0,
    )
    versions = []
    for argv in (["rabbitmqctl", "version"], ["psql", "--version"]):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        versions.append(done.stdout.strip().splitlines()[-1] if done.stdout else "?")
    return (
        f"{platform.node()}: {os.cpu_count()} x {cpu}, {mem:.0f} GiB RAM, "
        f"{platform.platform()}; RabbitMQ {versions[0]}, {versions[1]}; "
        f"Python {platform.python_version()}"
    )


def document(verdicts: list[Verdict], command: str, knobs: Knobs) -> str:
    failed = [v.scenario for v in verdicts if v.result == "FAIL"]
    summary = (
        "Every scenario met its target (lost = duplicated = unexpected = 0)."
        if not failed
        else f"Failing: {', '.join(failed)}."
    )
    return "\n".join(
        [
            "# Chaos runs",
            "",
            "Jepsen-style accounting over runs under injected faults "
            "(`../shared/notes/messaging-reliability.md` §7-§8; the harness is "
            "`tests/chaos/`). Generated by `make chaos`; rerun it to refresh.",
            "",
            f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {machine()}",
            f"- command: `{command}`",
            f"- runs per scenario: {knobs.runs}; Codex shards: {SHARDS}; "
            f"worker faults every ~{knobs.fault_every:g} s; Postgres outage "
            f"{knobs.pg_outage:g} s; {knobs.poison} malformed messages per queue",
            f"- stage configuration: {overrides_summary()}",
            "",
            "Counts: *runs* = accepted (202) plus recovered (no answer, yet stored); "
            "*lost* = not terminal by the deadline, or accepted and not stored; "
            "*duplicated* = more than one pull request, or more than one distinct "
            "commit pushed, for one run; *unexpected* = API 5xx other than 503, a "
            "failure without a code or with a code the scenario does not allow, a run "
            "or pull request nobody submitted, a cancel nobody asked for, and the "
            "scenario's own checks. *duration* runs from the first submission until "
            "every run is terminal (stack start-up excluded).",
            "",
            table(verdicts),
            "",
            summary,
            "",
            "## Findings and notes per scenario",
            "",
            details(verdicts),
            FOUND,
            NOT_COVERED,
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="e.g. a,c,d")
    parser.add_argument("--runs", type=int, default=Knobs.runs)
    parser.add_argument("--rate", type=float, default=Knobs.rate)
    parser.add_argument("--fault-every", type=float, default=Knobs.fault_every)
    parser.add_argument("--pg-outage", type=float, default=Knobs.pg_outage)
    parser.add_argument("--poison", type=int, default=Knobs.poison)
    parser.add_argument("--deadline", type=float, default=Knobs.deadline)
    parser.add_argument("--force-shared", action="store_true")
    parser.add_argument("--doc", type=Path, default=DOC, help="'-' writes none")
    parser.add_argument("--home", default="var/chaos", help="replaced on every run")
    args = parser.parse_args()
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    knobs = Knobs(
        runs=args.runs,
        rate=args.rate,
        fault_every=args.fault_every,
        pg_outage=args.pg_outage,
        poison=args.poison,
        deadline=args.deadline,
        force_shared=args.force_shared,
    )
    began = time.monotonic()
    # Kept until the next run: every process's log is in <home>/<scenario>/var/log.
    home = Path(args.home).resolve()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    verdicts = asyncio.run(run_all(keys, knobs, home, log))
    log(f"logs of every process: {home}/<scenario>/var/log")
    sys.stdout.write(f"{table(verdicts)}\n\n{details(verdicts)}\n")
    log(f"all scenarios in {time.monotonic() - began:.0f} s")
    if str(args.doc) != "-":
        command = "make chaos" + (
            f' CHAOS_ARGS="{shlex.join(sys.argv[1:])}"' if sys.argv[1:] else ""
        )
        args.doc.write_text(document(verdicts, command, knobs))
        log(f"wrote {args.doc}")
    return 1 if any(v.result == "FAIL" for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
