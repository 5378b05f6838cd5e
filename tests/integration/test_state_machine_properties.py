"""Property test of the run state machine against the real Postgres.

Random interleavings of stage events (current, stale and future attempts, any task,
held back and delivered out of order, redelivered under the same message id or re-sent
under a new one), dead letters, lease reaping, retries, cancels and new runs. After
every step the run must have moved along legal edges only, and every attempt must end
in exactly one terminal state (see `tests/support/statemodel.py`).
"""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import pytest
from hypothesis import HealthCheck, given

from services.api.db import Database
from services.api.settings import Settings
from tests.support.statemodel import STEPS, LoopThread, Scenario, Step

# The migrated schema, with the API's consumers and the relay running on it.
pytestmark = pytest.mark.usefixtures("database")


class Lab:
    """A database engine living on its own event loop, for sync hypothesis tests."""

    def __init__(self, url: str) -> None:
        self.loop = LoopThread()
        self.database = self.loop.run(self._connect(url))

    @staticmethod
    async def _connect(url: str) -> Database:
        return Database(url, pool_size=2)

    def play(self, steps: list[Step]) -> list[str]:
        return self.loop.run(Scenario(self.database).play(steps))

    def close(self) -> None:
        self.loop.run(self.database.dispose())
        self.loop.close()


@pytest.fixture(scope="module")
def lab(settings: Settings) -> Iterator[Lab]:
    here = Lab(str(settings.database_url))
    yield here
    here.close()


@hypothesis.settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=hypothesis.strategies.lists(STEPS, min_size=10, max_size=100))
def test_any_interleaving_takes_legal_transitions_only(
    lab: Lab, steps: list[Step]
) -> None:
    for ending in lab.play(steps):
        hypothesis.event(ending)
