"""The liveness file behind the workers' and the relay's container health checks."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faststream import TestApp
from faststream.rabbit import RabbitBroker, RabbitRouter, TestRabbitBroker
from loguru import logger

from shared.liveness import LivenessFile, is_fresh, main
from shared.redaction import forget_secrets
from shared.settings import ServiceSettings
from shared.worker import build_worker

AMQP = "amqp://guest:guest@127.0.0.1:5672/"


class Answers:
    """A check that answers True or False on demand (or raises), counting calls."""

    def __init__(self, alive: bool = True, *, fail: bool = False) -> None:
        self.alive, self.fail, self.calls = alive, fail, 0

    async def __call__(self) -> bool:
        self.calls += 1
        if self.fail:
            raise ConnectionError("broker gone")
        return self.alive


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_fresh_only_within_max_age(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    assert not is_fresh(path, 60)
    path.touch()
    assert is_fresh(path, 60)
    age(path, 120)
    assert not is_fresh(path, 60)
    assert is_fresh(path, 60, now=time.time() - 90)


async def test_beat_touches_the_file_only_while_the_check_passes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run" / "alive"
    check = Answers(alive=False)
    liveness = LivenessFile(path, check)

    assert await liveness.beat() is False
    assert not path.exists()

    check.alive = True
    assert await liveness.beat() is True
    assert is_fresh(path, 1)

    age(path, 120)
    check.alive = False
    await liveness.beat()
    assert not is_fresh(path, 60)  # a lost broker stops the touching


async def test_a_check_that_raises_counts_as_not_alive(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    liveness = LivenessFile(path, Answers(fail=True))
    assert await liveness.beat() is False
    assert not path.exists()


async def test_start_beats_repeatedly_and_stop_removes_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alive"
    check = Answers()
    liveness = LivenessFile(path, check, interval=0.01)
    await liveness.start()
    await liveness.start()  # idempotent: still one loop
    for _ in range(200):
        if check.calls >= 3:
            break
        await asyncio.sleep(0.01)
    assert check.calls >= 3
    assert is_fresh(path, 5)

    await liveness.stop()
    calls = check.calls
    await asyncio.sleep(0.05)
    assert check.calls == calls
    assert not path.exists()


async def test_without_a_path_nothing_runs(tmp_path: Path) -> None:
    check = Answers()
    liveness = LivenessFile(None, check, interval=0.01)
    await liveness.start()
    await asyncio.sleep(0.03)
    await liveness.stop()
    assert check.calls == 0
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - a test's own tmp dir


def test_main_exit_codes(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    assert main([str(path), "45"]) == 1
    path.touch()
    assert main([str(path), "45"]) == 0
    age(path, 60)
    assert main([str(path), "45"]) == 1
    assert main([str(path)]) == 2
    assert main([str(path), "soon"]) == 2


def test_health_check_command_runs_as_compose_calls_it(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    command = [sys.executable, "-m", "shared.liveness", str(path), "45"]
    missing = subprocess.run(command, capture_output=True, text=True, check=False)
    assert missing.returncode == 1
    assert "missing or older than 45 s" in missing.stderr
    path.touch()
    assert subprocess.run(command, check=False).returncode == 0


def test_liveness_file_setting_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.delenv("LIVENESS_FILE", raising=False)
    assert ServiceSettings(RABBITMQ_URL=AMQP).liveness_file is None
    monkeypatch.setenv("LIVENESS_FILE", "/tmp/spec-workflow.alive")
    assert ServiceSettings(RABBITMQ_URL=AMQP).liveness_file == Path(
        "/tmp/spec-workflow.alive"
    )


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """build_worker configures loguru and the stdlib root logger for the process."""
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    yield
    logger.remove()
    logger.configure(extra={}, patcher=lambda _record: None)
    logger.add(sys.stderr)
    logging.root.handlers = root_handlers
    logging.root.setLevel(root_level)
    forget_secrets()


@pytest.mark.usefixtures("restore_logging")
async def test_a_worker_keeps_its_liveness_file_while_it_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "alive"
    settings = ServiceSettings(
        RABBITMQ_URL=AMQP + "unit", LIVENESS_FILE=str(path), LOG_JSON="false"
    )
    app = build_worker("unit", settings, RabbitRouter(), prefetch=1)
    assert isinstance(app.broker, RabbitBroker)
    async with TestRabbitBroker(app.broker), TestApp(app):
        for _ in range(100):
            if path.exists():
                break
            await asyncio.sleep(0.01)
        assert is_fresh(path, 5)
    assert not path.exists()  # removed on shutdown
