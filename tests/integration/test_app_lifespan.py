"""The API app's lifespan (`main.serve`): its broker is part of the startup."""

from __future__ import annotations

import httpx
import pytest

from services.api.main import create_app
from services.api.settings import Settings
from tests.support.canary import CanaryAudit, attach_capture
from tests.support.lifespan import lifespan


@pytest.mark.usefixtures("api")  # the session app first: it migrated the database
async def test_an_unreachable_broker_fails_the_startup(
    settings: Settings, canary: CanaryAudit
) -> None:
    """No API without its consumers: a broker that cannot be reached fails the
    startup (uvicorn then exits non-zero) instead of serving HTTP with no one
    applying task events; what the startup opened is closed again."""
    nowhere = settings.model_copy(
        update={"rabbitmq_url": "amqp://guest:guest@127.0.0.1:9/"}
    )
    app = create_app(nowhere)
    attach_capture(canary)  # create_app reconfigured logging

    with pytest.raises(RuntimeError, match="startup failed"):
        async with lifespan(app):
            pass

    # The startup's own transaction left a pooled connection; disposed with the pool.
    assert app.state.database.engine.pool.checkedin() == 0


async def test_a_started_app_reports_its_broker_ready(api: httpx.AsyncClient) -> None:
    """The session app went through the same lifespan: connected and consuming."""
    response = await api.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": True, "broker": True}
