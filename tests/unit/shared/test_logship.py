"""The log shipper: never blocks, drops and counts, filters its own records."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger

from shared.logging import configure_logging
from shared.logshape import routing_key
from shared.logship import LogShipper
from shared.redaction import forget_secrets, register_secret

SECRET = "sk-" + "logship-canary-0123456789abcdef"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    configure_logging("unit", level="DEBUG", json=True)
    logger.remove()  # no stdout sink: only the shipper's
    yield
    logger.remove()
    logger.configure(extra={}, patcher=lambda _record: None)
    logger.add(sys.stderr)
    logging.root.handlers = root_handlers
    logging.root.setLevel(root_level)
    forget_secrets()


class Recorder:
    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang
        self.sent: list[tuple[str, list[dict[str, Any]]]] = []

    async def __call__(self, key: str, records: list[dict[str, Any]]) -> None:
        if self.hang:
            await asyncio.Event().wait()
        self.sent.append((key, records))


async def test_a_hanging_broker_never_blocks_logging() -> None:
    publish = Recorder(hang=True)
    shipper = LogShipper("unit", publish, maxsize=10_000, timeout=0.05)
    shipper.attach()
    shipper.start()
    started = time.perf_counter()
    for n in range(50_000):
        logger.info("record {n}", n=n)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.2)  # the shipper gives up on its hung publishes
    await shipper.stop(flush_timeout=0.1)

    assert elapsed < 10
    assert shipper.dropped >= 40_000
    assert shipper.shipped == 0


async def test_records_are_shaped_batched_and_routed_by_level() -> None:
    publish = Recorder()
    shipper = LogShipper("unit", publish)
    shipper.attach()
    register_secret(SECRET)
    with logger.contextualize(run_id="r-1", task="discover_next_phase", attempt=2):
        logger.bind(codex_queue="codex-1").warning("token {t}", t=SECRET)
    try:
        raise ValueError(SECRET)
    except ValueError:
        logger.exception("boom")
    logger.info("plain")
    await shipper.flush()

    keys = [key for key, _ in publish.sent]
    assert sorted(keys) == ["log.unit.error", "log.unit.info", "log.unit.warning"]
    records = {key: items for key, items in publish.sent}
    warning = records["log.unit.warning"][0]
    assert warning["service"] == "unit"
    assert warning["level"] == "WARNING"
    assert (warning["run_id"], warning["task"], warning["attempt"]) == (
        "r-1",
        "discover_next_phase",
        2,
    )
    assert warning["details"]["codex_queue"] == "codex-1"
    assert SECRET not in str(publish.sent)
    error = records["log.unit.error"][0]
    assert "ValueError" in error["exception"]
    assert records["log.unit.info"][0]["run_id"] is None


async def test_own_and_amqp_records_are_not_shipped() -> None:
    publish = Recorder()
    shipper = LogShipper("unit", publish, maxsize=5)
    shipper.attach()
    logging.getLogger("aio_pika.robust_connection").warning("reconnecting")
    logging.getLogger("aiormq.connection").error("closed")
    logging.getLogger("api.broker").info("Received")
    logging.getLogger("api.broker").warning("consumer cancelled")
    logger.bind(no_ship=True).warning("stdout only")
    shipper.dropped = 3
    assert shipper.report() == 3  # its own report line is not shipped either
    assert shipper.report() == 0

    messages = [r["message"] for r in shipper.buffer]
    assert messages == ["consumer cancelled"]


@pytest.mark.timeout(30)  # before the fix it never ended, not even on cancel
async def test_stop_ends_while_handlers_keep_logging() -> None:
    """Found by `make chaos` (f): a stage kept consuming and logging during the
    shutdown hooks, the final flush never emptied the buffer, and SIGTERM never
    stopped the process."""

    async def busy(_key: str, _records: list[dict[str, Any]]) -> None:
        logger.info("a handler still at work")  # every publish brings a new record
        await asyncio.sleep(0)

    shipper = LogShipper("unit", busy, batch_size=1, timeout=0.5)
    shipper.attach()
    for n in range(3):
        logger.info("n={n}", n=n)
    async with asyncio.timeout(5):
        assert await shipper.flush() == 3
    shipper.start()
    await asyncio.sleep(0.2)  # shipping, and every publish logs again
    began = time.perf_counter()
    await shipper.stop(flush_timeout=1)
    assert time.perf_counter() - began < 5


async def test_a_full_buffer_drops_and_counts() -> None:
    shipper = LogShipper("unit", Recorder(), maxsize=3)
    shipper.attach()
    for n in range(10):
        logger.info("n={n}", n=n)

    assert len(shipper.buffer) == 3
    assert shipper.dropped == 7


async def test_a_failing_publish_counts_the_batch_as_dropped() -> None:
    async def broken(key: str, records: list[dict[str, Any]]) -> None:
        raise ConnectionError(f"broker down: {key} {len(records)}")

    shipper = LogShipper("unit", broken)
    shipper.attach()
    logger.info("a")
    logger.info("b")
    assert await shipper.flush() == 0
    assert shipper.dropped == 2


def test_a_text_sink_is_not_needed_for_shipping() -> None:
    stream = io.StringIO()
    shipper = LogShipper("unit", Recorder())
    shipper.attach()
    logger.add(stream)
    logger.info("both")
    assert "both" in stream.getvalue()
    assert len(shipper.buffer) == 1


def test_routing_keys_are_safe() -> None:
    assert routing_key("api", "WARNING") == "log.api.warning"
    assert routing_key("codex.runner#", "INFO") == "log.codex_runner_.info"


async def test_levels_interleaved_keep_their_order() -> None:
    """An ERROR buffered before WARNINGs and another ERROR: grouping by key would
    publish both ERRORs first (the log sink's ids then broke emission order in CI)."""
    publish = Recorder()
    shipper = LogShipper("unit", publish)
    shipper.attach()
    logger.error("e0")
    for n in range(3):
        logger.warning("w{n}", n=n)
    logger.error("e1")
    logger.error("e2")
    assert await shipper.flush() == 6

    assert [(key, [r["message"] for r in items]) for key, items in publish.sent] == [
        ("log.unit.error", ["e0"]),
        ("log.unit.warning", ["w0", "w1", "w2"]),
        ("log.unit.error", ["e1", "e2"]),
    ]
