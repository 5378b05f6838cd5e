"""The `## bench` section of docs/benchmarks.md, from a `make bench` report."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from tests.bench.stats import Latency, Spread, ratio, verdict

if TYPE_CHECKING:
    from tests.bench.bench_api import Load
    from tests.bench.bench_orchestration import Burst, Report, Sequential

SECTION = "## bench"
THROUGHPUT_TARGET = 2.0  # ours / Celery runs/s
P99_TARGET = 25.0  # ms, ours, sequential
GET_P99_TARGET = 20.0  # ms, GET /runs/{id} under concurrent load
LIST_P99_TARGET = 50.0  # ms, the list under concurrent load
SYSTEMS = {"ours": "ours", "celery": "Celery chain (NOTIFY)"}
BROKER = "RabbitMQ node (beam.smp, all vhosts)"


def _bursts(report: Report, system: str) -> list[Burst]:
    return [b for b in report.bursts if b.system == system]


def _sequential(report: Report, system: str) -> list[Sequential]:
    return [s for s in report.sequential if s.system == system]


def _load(triple: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in triple)


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.1f}"


def _settings_line(report: Report) -> str:
    s = report.settings
    knobs = {
        "BENCH_RUNS": s.runs,
        "BENCH_IN_FLIGHT": s.in_flight,
        "BENCH_SEQUENTIAL": s.sequential,
        "BENCH_ROUNDS": s.rounds,
        "BENCH_BURST_ROUNDS": s.burst_rounds,
        "BENCH_WARMUP": s.warmup,
        "BENCH_GET_SEQUENTIAL": s.get_sequential,
        "BENCH_GET_RUNS": s.get_runs,
        "BENCH_CELERY_CONCURRENCY": s.celery_concurrency,
        "BENCH_LOG_LEVEL": s.log_level,
        "BENCH_AUTH_MODE": s.auth_mode.value,
        "BENCH_API_RUNS": s.api_runs,
        "BENCH_API_REQUESTS": s.api_requests,
        "BENCH_API_CONCURRENCY": s.api_concurrency,
        "BENCH_API_ROUNDS": s.api_rounds,
        "BENCH_API_WARMUP": s.api_warmup,
    }
    return ", ".join(f"{k}={v}" for k, v in knobs.items())


def _what(report: Report) -> list[str]:
    s = report.settings
    return [
        "- **ours**: the real API process (`python -m services.api`, uvicorn on "
        "loopback: routes, the AMQP event handlers, `finalize_run`, the outbox "
        "fast path), the real relay (`python -m services.api.relay`: the safety "
        "net for rows the fast path did not mark sent) and one process of "
        "**instant stage responders** (`tests/bench/responders.py`: the scripted "
        "`StageHarness` of the integration tests on the real stage queues, "
        "answering every command at once with a valid `TaskSucceeded`, preceded "
        "by `TaskStarted` for Codex jobs only, as the real stages do for work "
        "shorter than STAGE_STARTED_AFTER; persistent and confirmed). A run: "
        "`POST /api/workflows/speckit/runs` -> discover_next_phase -> "
        "codex_preflight -> submit_codex_job -> apply_and_publish -> "
        "finalize_run (served in apply_and_publish's success transaction), every "
        "command through the outbox, every event through the API's inbox and "
        "guarded transitions. Done when `evt.run.succeeded` (put in the outbox by "
        "that transaction, published by the fast path) reaches the driver's "
        "exclusive queue.",
        "- **Celery chain**: the same five stages as "
        "`chain(discover_next_phase | codex_preflight | submit_codex_job | "
        "apply_and_publish | finalize_run)` (`tests/bench/celery_chain.py`) with "
        "`task_acks_late=True`, `task_reject_on_worker_lost=True`, "
        "`worker_prefetch_multiplier=1`, "
        "`broker_transport_options={'confirm_publish': True}` and the SQLAlchemy "
        "result backend `db+postgresql://` (psycopg2); one worker subprocess "
        f"(prefork, concurrency {s.celery_concurrency}) on its own vhost and "
        "database. **State writes**: that database has our schema; the driver "
        "INSERTs the `spec_workflow_runs` row before `apply_async` (as our POST "
        "does), every stage is one committed `UPDATE spec_workflow_runs SET status, "
        "phase, current_task, outputs = outputs || {task: summary}, updated_at` "
        "of that row, and `finalize_run` sets the terminal status and sends "
        "`pg_notify` in the same transaction; the result backend adds its "
        "`celery_taskmeta` row per task. Done when the NOTIFY reaches the "
        "driver's LISTEN connection. **AsyncResult.get()** is measured separately "
        "(default `interval=0.5` s polling of the result table).",
        f"- **Rounds**: latency: {s.sequential} sequential runs per system, split "
        f"over {s.rounds} rounds; throughput: {s.burst_rounds} burst(s) of "
        f"{s.runs:,} runs per system with at most {s.in_flight} in flight (runs / "
        "seconds from the first submit to the last completion). The systems "
        "alternate and so does which goes first. "
        f"{s.warmup} uncounted warm-up runs per system first. Both stacks stay up "
        "throughout; the idle one costs almost nothing (our relay polls once a "
        f"second). Every process logs at {s.log_level} (ours: JSON to a file; "
        "Celery: `--loglevel=WARNING`).",
        f"- **Auth**: the API runs with AUTH_MODE={s.auth_mode.value}"
        + (
            " (as in production): every request of the driver, the POSTs of the "
            "runs and the reads below, carries a bearer token of the default user, "
            "which the API checks against `api_tokens` once per TOKEN_CACHE_SECONDS "
            "(default 30; its token cache, dropped by any change to `api_tokens`, "
            "answers in between). The Celery chain has no API and no such check."
            if s.auth_mode.value == "token"
            else " (BENCH_AUTH_MODE): requests carry no token and are not checked."
        ),
        "- Everything shares the 2 cores: broker, Postgres, the processes under "
        "test and the driver (`tests/bench/rawhttp.py`'s keep-alive HTTP/1.1, "
        "aio-pika, asyncpg, kombu in this process).",
    ]


def _throughput(report: Report) -> list[str]:
    s = report.settings
    lines = [
        f"### Orchestration throughput: bursts of {s.runs:,} runs, "
        f"<= {s.in_flight} in flight",
        "",
        "| system | runs/s per burst | median runs/s | latency within the burst "
        "p50 / p99 (ms, pooled) |",
        "|---|---|--:|---|",
    ]
    rates: dict[str, Spread] = {}
    for system, label in SYSTEMS.items():
        bursts = _bursts(report, system)
        if not bursts:
            continue
        rates[system] = Spread.of([b.rate for b in bursts])
        within = Latency.of([v for b in bursts for v in b.ms])
        listed = ", ".join(f"{b.rate:,.1f}" for b in bursts)
        lines.append(
            f"| {label} | {listed} | **{rates[system].median:,.1f}** | "
            f"{within.p50:,.1f} / {within.p99:,.1f} |"
        )
    if report.get_burst_seconds:
        rate = s.get_runs / report.get_burst_seconds
        lines.append(
            f"| Celery chain, `AsyncResult.get()` in order, <= {s.in_flight} "
            f"unfinished ({s.get_runs:,} runs) | {rate:,.1f} | {rate:,.1f} | - |"
        )
    lines.append("")
    if "ours" in rates and "celery" in rates:
        ours, celery = _bursts(report, "ours"), _bursts(report, "celery")
        pairs = [ratio(a.rate, b.rate) for a, b in zip(ours, celery, strict=True)]
        overall = ratio(rates["ours"].median, rates["celery"].median)
        lines.append(
            f"- **ours / Celery runs/s: {overall:.2f}x** (ratio of the medians; "
            f"per burst pair {', '.join(f'{v:.2f}x' for v in pairs)}). "
            f"Target >= {THROUGHPUT_TARGET:g}x: "
            f"**{verdict(overall >= THROUGHPUT_TARGET)}**."
        )
        if report.get_burst_seconds:
            get_rate = s.get_runs / report.get_burst_seconds
            lines.append(
                f"- ours / Celery with `AsyncResult.get()`: "
                f"{ratio(rates['ours'].median, get_rate):.2f}x."
            )
        lines.append("")
    return lines


def _latency(report: Report) -> list[str]:
    s = report.settings
    lines = [
        f"### Orchestration latency: {s.sequential} sequential runs per system "
        f"over {s.rounds} rounds (ms)",
        "",
        "| system | n | p50 | p90 | p99 | max | p50 per round | p99 per round |",
        "|---|--:|--:|--:|--:|--:|---|---|",
    ]
    pooled: dict[str, Latency] = {}
    for system, label in SYSTEMS.items():
        rounds = _sequential(report, system)
        if not rounds:
            continue
        pooled[system] = lat = Latency.of([v for r in rounds for v in r.ms])
        p50s = ", ".join(f"{Latency.of(r.ms).p50:.1f}" for r in rounds)
        p99s = ", ".join(f"{Latency.of(r.ms).p99:.1f}" for r in rounds)
        lines.append(
            f"| {label} | {lat.n} | **{lat.p50:.1f}** | {lat.p90:.1f} | "
            f"**{lat.p99:.1f}** | {lat.max:.1f} | {p50s} | {p99s} |"
        )
    if report.get_sequential_ms:
        lat = Latency.of(report.get_sequential_ms)
        lines.append(
            f"| Celery chain, `AsyncResult.get()` | {lat.n} | {lat.p50:.1f} "
            f"| {lat.p90:.1f} | {lat.p99:.1f} | {lat.max:.1f} | - | - |"
        )
    lines.append("")
    if "ours" in pooled and "celery" in pooled:
        ours, celery = pooled["ours"], pooled["celery"]
        lines += [
            f"- **ours / Celery latency: p50 {ratio(ours.p50, celery.p50):.2f}x, "
            f"p99 {ratio(ours.p99, celery.p99):.2f}x** (pooled over the rounds).",
            f"- Target p50 no worse than Celery's ({celery.p50:.1f} ms): "
            f"**{verdict(ours.p50 <= celery.p50)}** (ours {ours.p50:.1f} ms).",
            f"- Target p99 <= {P99_TARGET:g} ms: "
            f"**{verdict(ours.p99 <= P99_TARGET)}** (ours {ours.p99:.1f} ms).",
        ]
        if report.get_sequential_ms:
            get = Latency.of(report.get_sequential_ms)
            lines.append(
                f"- ours / Celery with `AsyncResult.get()`: p50 "
                f"{ratio(ours.p50, get.p50):.2f}x, p99 {ratio(ours.p99, get.p99):.2f}x."
            )
        lines.append("")
    return lines


def _database(report: Report) -> list[str]:
    if not report.commits:
        return []
    lines = [
        "### Database and broker work per run",
        "",
        "| phase | system | runs | commits/run | rows inserted/run "
        "| rows updated/run | rows deleted/run | AMQP published/run "
        "| AMQP delivered/run |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for (phase, system), (runs, c) in report.commits.items():
        published, delivered = report.messages.get((phase, system), (0, 0))
        lines.append(
            f"| {phase} | {SYSTEMS[system]} | {runs:,} | **{c.commits / runs:.1f}** "
            f"| {c.inserted / runs:.1f} | {c.updated / runs:.1f} | "
            f"{c.deleted / runs:.1f} | {published / runs:.1f} | "
            f"{delivered / runs:.1f} |"
        )
    lines += [
        "",
        "- pg_stat_database of the system's database and the management API's "
        "`message_stats` of its vhost, before and after the phase. "
        "Every transaction is counted, read-only ones too. Ours includes the "
        "fast path's `mark_sent` (one per 100 ms of confirms), the relay's fallback "
        "poll (about 1 transaction/s) and the reaper (every 15 s) over the phase; "
        "Celery's includes the driver's INSERT of each run and the result "
        "backend's writes.",
        "",
    ]
    return lines


def _cpu(report: Report) -> list[str]:
    """CPU ms per run during the bursts, by process, median over the rounds."""
    per_system: dict[str, dict[str, float]] = {}
    busy: dict[str, float] = {}
    for system in SYSTEMS:
        bursts = _bursts(report, system)
        if not bursts or not bursts[0].cpu:
            continue
        names = list(dict.fromkeys(n for b in bursts for n in b.cpu))
        per_system[system] = {
            name: statistics.median(
                b.cpu.get(name, 0.0) * 1000 / len(b.ms) for b in bursts
            )
            for name in names
        }
        busy[system] = statistics.median(
            sum(b.cpu.values()) / b.seconds for b in bursts
        )
    if not per_system:
        return []
    lines = [
        "### CPU per run during the bursts (ms of CPU per run, median of the bursts)",
        "",
        "| process | " + " | ".join(SYSTEMS[s] for s in per_system) + " |",
        "|---|" + "--:|" * len(per_system),
    ]
    names = list(dict.fromkeys(n for used in per_system.values() for n in used))
    names = [n for n in names if n != BROKER] + [BROKER]

    def own(used: dict[str, float]) -> float:
        return sum(v for n, v in used.items() if n != BROKER)

    for name in names:
        if name == BROKER:
            totals = [f"**{own(used):.1f}**" for used in per_system.values()]
            lines.append(
                "| **total without the broker** | " + " | ".join(totals) + " |"
            )
        cells = [
            f"{used[name]:.1f}" if name in used else "-" for used in per_system.values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cores = [f"{busy[s]:.2f}" for s in per_system]
    lines += [
        "| cores busy on these (CPU s / wall s) | " + " | ".join(cores) + " |",
        "",
        *(
            f"- {SYSTEMS[s]}: {own(used):.0f} ms of CPU per run without the broker; "
            f"with both cores to itself at most about {2000 / own(used):,.0f} "
            "runs/s (fewer once the broker's share is added)."
            for s, used in per_system.items()
            if own(used) > 0
        ),
        *(
            f"- Our API process (one event loop: HTTP, every event handler, "
            f"finalize_run) uses {used['api']:.0f} ms per run: one core caps it at "
            f"about {1000 / used['api']:,.0f} runs/s."
            for s, used in per_system.items()
            if s == "ours" and used.get("api", 0) > 0
        ),
        "- /proc/<pid>/stat utime + stime before and after each burst. The broker "
        "line is the whole RabbitMQ node, other vhosts' traffic included (other "
        "work on this machine), so it stays out of the totals: compare AMQP "
        "messages per run above instead. "
        "PostgreSQL backends: every backend connected to the system's database, "
        "sampled every 0.25 s through the burst (one living less than that is "
        "missed).",
        "",
    ]
    return lines


def _hops(report: Report) -> list[str]:
    found = report.hops
    if found is None or not found.runs:
        return []
    lines = [
        f"### Where our time goes: {found.runs} sequential runs, per hop (ms)",
        "",
        "From the timestamps the system records (outbox `created_at` = start of "
        "the transaction that queued the row, `sent_at` = after the broker's "
        "confirm; task `started_at`/`finished_at` = when the API's handler applied "
        "the event, before its commit) and the driver's wall clock. Hops overlap "
        "by the handler transactions' own time, so they do not add up exactly.",
        "",
        "| hop | p50 | p90 |",
        "|---|--:|--:|",
        *(f"| {hop} | {p50:.1f} | {p90:.1f} |" for hop, p50, p90 in found.rows()),
        "",
    ]
    rows = found.rows()
    relay = [p50 for hop, p50, _ in rows if hop.endswith("outbox row -> published")]
    outcome = [p50 for hop, p50, _ in rows if hop.endswith("outcome recorded")]
    total = next((p50 for hop, p50, _ in rows if hop.startswith("total")), 0.0)
    if relay and total:
        lines += [
            f"- The {len(relay)} publish hops (outbox row -> published: the API's "
            "fast path, the relay only as its safety net) add up to "
            f"{sum(relay):.0f} ms of the {total:.0f} ms p50 "
            f"({100 * sum(relay) / total:.0f}%); broker -> stage -> outcome "
            f"recorded, {len(outcome)} times, to {sum(outcome):.0f} ms "
            f"({100 * sum(outcome) / total:.0f}%).",
            "",
        ]
    return lines


def _memory(report: Report) -> list[str]:
    names = list(dict.fromkeys([*report.idle_kib, *report.load_kib]))
    lines = [
        "### Memory (VmRSS, MiB)",
        "",
        "| process | idle (after warm-up) | peak during its system's bursts |",
        "|---|--:|--:|",
    ]
    for name in names:
        label = name
        if name == "responders":
            label = "responders (stand-in for preflight, codex runners, publisher)"
        elif name.startswith("celery"):
            label = name.replace("celery", "Celery worker", 1)
        lines.append(
            f"| {label} | {mib(report.idle_kib.get(name))} | "
            f"{mib(report.load_kib.get(name))} |"
        )
    for name, kib in report.workers_idle_kib.items():
        lines.append(
            f"| {name} (real service, idle; not in the path) | {mib(kib)} | - |"
        )
    lines.append("")
    if report.workers_missing:
        lines += [f"- Did not come up: {', '.join(report.workers_missing)}.", ""]
    return lines


def _api_cpu(keys: list[tuple[str, int]], loads: list[Load]) -> list[str]:
    """CPU per request by process, and how busy the API process was (its CPU
    seconds per wall second: 1.0 is one core, all its event loop can use)."""
    names = list(dict.fromkeys(name for x in loads for name in x.cpu))
    if not names:
        return []
    lines = [
        "CPU per request during the counted requests (ms, median of the rounds; "
        "/proc/<pid>/stat; the database's backends alive at the start and end of "
        "each round):",
        "",
        "| endpoint | clients | " + " | ".join(names) + " | API process busy |",
        "|---|--:|" + "--:|" * (len(names) + 1),
    ]
    for endpoint, clients in keys:
        group = [x for x in loads if (x.endpoint, x.concurrency) == (endpoint, clients)]
        per = [
            statistics.median(1000 * x.cpu.get(n, 0.0) / len(x.ms) for x in group)
            for n in names
        ]
        busy = statistics.median(x.cpu.get(names[0], 0.0) / x.seconds for x in group)
        lines.append(
            f"| `{endpoint}` | {clients} | "
            + " | ".join(f"{v:.2f}" for v in per)
            + f" | {busy:.2f} |"
        )
    return [*lines, ""]


def _api(report: Report) -> list[str]:
    loaded, loads = report.loaded, report.api
    if loaded is None or not loads:
        return []
    s = report.settings
    lines = [
        f"### API reads: {loaded.runs:,} runs stored (ms)",
        "",
        f"{loaded.inserted:,} runs bulk-inserted with SQL (each: 5 task rows, 2 "
        f"artifacts, 1 credential audit; {loaded.size} with indexes; insert + "
        f"VACUUM ANALYZE of every table + CHECKPOINT {loaded.seconds:.0f} s). "
        "Requests over HTTP to the API process (uvicorn, loopback, keep-alive) "
        "from N clients at once, each sending its next request when answered; "
        "random run ids and list "
        f"cursors. Each endpoint's first round at N clients starts with "
        f"{s.api_warmup:,} uncounted requests from the same clients (the API's "
        "pool and Postgres's buffers warm up, as in service). "
        "`GET /runs/{id}` with its defaults (tasks, artifacts, credential audits); "
        "the list with its default page (20 newest).",
        "",
        "| endpoint | clients | rounds | n | p50 | p90 | p99 | max | req/s | "
        "p99 per round |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    keys = list(dict.fromkeys((load.endpoint, load.concurrency) for load in loads))
    results: dict[tuple[str, int], Latency] = {}
    for endpoint, clients in keys:
        group: list[Load] = [
            x for x in loads if (x.endpoint, x.concurrency) == (endpoint, clients)
        ]
        lat = Latency.of([v for x in group for v in x.ms])
        results[(endpoint, clients)] = lat
        rate = statistics.median(x.rate for x in group)
        per_round = ", ".join(f"{x.latency.p99:.1f}" for x in group)
        lines.append(
            f"| `{endpoint}` | {clients} | {len(group)} | {lat.n:,} | {lat.p50:.1f} | "
            f"{lat.p90:.1f} | **{lat.p99:.1f}** | {lat.max:.1f} | {rate:,.0f} | "
            f"{per_round} |"
        )
    lines.append("")
    lines += _api_cpu(keys, loads)
    c = s.api_concurrency
    for (endpoint, clients), lat in results.items():
        if clients != c:
            continue
        target = GET_P99_TARGET if "{id}" in endpoint else LIST_P99_TARGET
        lines.append(
            f"- `{endpoint}` with {c} clients: p99 {lat.p99:.1f} ms, target <= "
            f"{target:g} ms **{verdict(lat.p99 <= target)}**."
        )
    lines.append("")
    if report.plans:
        lines += [
            "The list's SELECT as `reads.runs_json` sends it, under EXPLAIN ANALYZE "
            "(same data, no load):",
            "",
        ]
        for name, plan in report.plans:
            lines += [f"{name}:", "", "```", plan, "```", ""]
    return lines


def render(report: Report) -> str:
    when = report.started.strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        SECTION,
        "",
        f"Last run: {when}, `make bench`, {_settings_line(report)}. One process "
        "drives everything; private databases and vhosts, dropped at the end.",
        "",
        *_what(report),
        "",
        "### Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in report.machine),
        f"| load average before / after | {_load(report.load_before)} before, "
        f"{_load(report.load_after)} after (1 / 5 / 15 min) |",
        "",
        *_throughput(report),
        *_latency(report),
        *_database(report),
        *_cpu(report),
        *_hops(report),
        *_memory(report),
        *_api(report),
        "### Reading",
        "",
        "- Compare only within this section: both systems ran side by side in one "
        "invocation on a shared machine (see the load average). CPU per run is the "
        "figure least sensitive to other load; rates and latencies move with it.",
        "- A real stage takes seconds (discovery, pre-flight) to an hour (Codex): "
        "these are orchestration costs per run, paid once per stage, not limits on "
        "a real workload, where Codex shards are the bottleneck.",
        "- Targets are reported, never enforced: nothing fails on absolute times.",
        "",
    ]
    return "\n".join(lines)
