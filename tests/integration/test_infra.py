"""The `infra` fixture against the real servers: a private database and vhost."""

from __future__ import annotations

from uuid import uuid4

import aio_pika
import asyncpg
from sqlalchemy.engine import make_url

from services.cli.broker import POLICY_NAME
from tests.support.infra import Infra


async def test_infra_database_is_private_to_the_session(infra: Infra) -> None:
    url = make_url(infra.database_url)
    assert url.drivername == "postgresql+asyncpg"
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    try:
        name = await connection.fetchval("SELECT current_database()")
    finally:
        await connection.close()
    assert name == infra.vhost
    assert name.startswith("sw_test_")


async def test_infra_vhost_counts_messages_under_our_policy(infra: Infra) -> None:
    name = f"api.infra_probe_{uuid4().hex}"  # matches the policy pattern
    connection = await aio_pika.connect(infra.rabbitmq_url)
    async with connection:
        channel = await connection.channel()  # publisher confirms on by default
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        for n in range(3):
            message = aio_pika.Message(body=str(n).encode())
            await channel.default_exchange.publish(message, routing_key=name)

        await infra.wait_queue_messages(name, 3)
        (probe,) = [q for q in await infra.list_queues() if q.name == name]
        assert probe.type == "quorum"
        assert probe.policy == POLICY_NAME
        await queue.delete(if_unused=False, if_empty=False)
