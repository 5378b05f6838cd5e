"""Scenario d: malformed messages into every queue while runs flow."""

from __future__ import annotations

import asyncio
import random
import uuid

from shared.topology import DEAD_LETTERS, LOG_RECORDS, LOGS_EXCHANGE, all_queues
from tests.chaos.chaos_driver import Driver, Knobs, drained
from tests.support.chaosrig import SHARDS, ChaosRig
from tests.support.faults import QueueStats, poison_bodies
from tests.support.history import History
from tests.support.infra import DELIVERY_LIMIT


async def poison(
    _rig: ChaosRig, driver: Driver, history: History, knobs: Knobs
) -> set[str]:
    """d: `poison` malformed messages into every queue while runs flow.

    Half name no run; half are base messages of real runs whose full schema fails.
    Expected: all dead-lettered (log records: dropped, the dead-letter queue: read and
    dropped), deliveries within the delivery limit, every consumer alive, every queue
    drained, and a run hit while its named task was open failed invalid_message.
    """
    await driver.submit_many(knobs.runs // 3, knobs.rate)
    submitter = asyncio.create_task(driver.submit_many(driver.remaining, knobs.rate))
    before = await driver.broker.queues()
    targets = [(s.run_id, 1) for s in history.accepted if s.run_id]
    tasks = {
        "preflight.discover_next_phase": "discover_next_phase",
        "preflight.cancel.discover_next_phase": "discover_next_phase",
        "preflight.codex_preflight": "codex_preflight",
        "preflight.cancel.codex_preflight": "codex_preflight",
        "preflight.probe_codex_volume": "codex_preflight",
        "publisher.apply_and_publish": "apply_and_publish",
        "publisher.cancel.apply_and_publish": "apply_and_publish",
        "api.finalize_run": "finalize_run",
        "api.codex_volume_checked": "codex_preflight",
        LOG_RECORDS.name: "discover_next_phase",
        DEAD_LETTERS.name: "discover_next_phase",
    }
    sent: dict[str, int] = {}
    async with driver.broker.channel() as channel:
        for queue in [*all_queues(SHARDS), DEAD_LETTERS]:
            task = tasks.get(queue.name, _task_of(queue.name))
            for body, content_type in poison_bodies(
                knobs.poison, task, random.choice(targets) if targets else None
            ):
                if queue.name == DEAD_LETTERS.name:
                    await driver.broker.publish_raw(
                        channel, body, queue=queue.name, content_type=content_type
                    )
                elif queue.name == LOG_RECORDS.name:
                    await driver.broker.publish_raw(
                        channel,
                        body,
                        exchange=LOGS_EXCHANGE.name,
                        routing_key="log.chaos.info",
                        content_type=content_type,
                    )
                else:
                    await driver.broker.publish_raw(
                        channel,
                        body,
                        routing_key=queue.routing(),
                        message_id=str(uuid.uuid4()),
                        content_type=content_type,
                    )
                sent[queue.name] = sent.get(queue.name, 0) + 1
    history.note(f"{sum(sent.values())} malformed messages into {len(sent)} queues")
    await submitter
    await driver.wait_settled(knobs.deadline)
    poisoned = [q for q in sent if q != LOG_RECORDS.name]
    if not await drained(driver, poisoned, 180):
        history.note("poisoned queues not empty 180 s after the runs ended")
    after = await driver.broker.queues()
    _judge_poison(history, before, after, sent)
    return {"invalid_message", "handler_crashed"}


def _task_of(queue: str) -> str:
    for suffix in ("started", "heartbeat", "succeeded", "failed", "cancelled"):
        if queue == f"api.task_{suffix}":
            return random.choice(
                ["discover_next_phase", "codex_preflight", "submit_codex_job"]
            )
    return "submit_codex_job"  # codex-<n>, codex-<n>.cancel


def _judge_poison(
    history: History,
    before: dict[str, QueueStats],
    after: dict[str, QueueStats],
    sent: dict[str, int],
) -> None:
    def delta(name: str, field: str) -> int:
        was = getattr(before[name], field) if name in before else 0
        return int(getattr(after[name], field)) - int(was)

    # Dead-lettered messages are not counted as published into the dead-letter
    # queue; its consumer acks each one exactly once (it never rejects).
    dlq = DEAD_LETTERS.name
    arrived = delta(dlq, "acked") + after[dlq].messages
    expected = sum(n for q, n in sent.items() if q != LOG_RECORDS.name)
    history.note(
        f"arrived in {dlq}: {arrived} (expected {expected}: every malformed message "
        f"but those to {LOG_RECORDS.name}, {sent.get(dlq, 0)} of them sent there)"
    )
    if arrived < expected:
        history.flag(f"{expected - arrived} malformed messages not dead-lettered")
    for name, n in sent.items():
        if name not in after:
            history.flag(f"queue {name} gone")
            continue
        inflow = arrived if name == dlq else delta(name, "published")
        delivered = delta(name, "delivered")
        if delivered > inflow * (DELIVERY_LIMIT + 1):
            history.flag(
                f"{name}: {delivered} deliveries for {inflow} messages (hot loop)"
            )
        if delta(name, "redelivered") > n * DELIVERY_LIMIT:
            history.flag(
                f"{name}: {delta(name, 'redelivered')} redeliveries for {n} poison "
                "messages"
            )
        if after[name].messages and name != LOG_RECORDS.name:
            history.flag(f"{name}: {after[name].messages} messages left (not drained)")
        if after[name].consumers == 0:
            history.flag(f"{name}: no consumer after the poison")
