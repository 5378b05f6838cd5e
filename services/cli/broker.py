"""RabbitMQ set-up over the management HTTP API: our vhost, its grant, the policy.

Queue arguments can't be changed by redeclaring a queue, so the values we expect to
tune (`delivery-limit`) live in a policy that can be re-applied at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

POLICY_NAME = "spec-workflow-queues"
POLICY_PATTERN = r"^(api|preflight|publisher|codex)[.-]"
FULL_PERMISSIONS = {"configure": ".*", "write": ".*", "read": ".*"}


@dataclass(frozen=True)
class AmqpTarget:
    """Who connects where, as an AMQP URL says it."""

    user: str
    password: str
    vhost: str


def amqp_target(rabbitmq_url: str) -> AmqpTarget:
    """User, password and vhost of an AMQP URL; no path is vhost `/`, as in aio-pika."""
    parts = urlsplit(rabbitmq_url)
    path = parts.path.removeprefix("/")
    return AmqpTarget(
        user=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        vhost=unquote(path) if path else "/",
    )


def policy_apply_to(rabbitmq_version: str) -> str:
    """`quorum_queues` from 3.12 on; older brokers know only `queues`.

    Classic queues ignore `delivery-limit`, so `queues` has the same effect there.
    """
    major, minor = (int(part) for part in rabbitmq_version.split(".")[:2])
    return "quorum_queues" if (major, minor) >= (3, 12) else "queues"


def policy_body(delivery_limit: int, apply_to: str) -> dict[str, Any]:
    return {
        "pattern": POLICY_PATTERN,
        "apply-to": apply_to,
        "priority": 0,
        "definition": {"delivery-limit": delivery_limit},
    }


def management_client(management_url: str, target: AmqpTarget) -> httpx.AsyncClient:
    """A client for `<management_url>/api`, authenticated as the AMQP URL's user."""
    return httpx.AsyncClient(
        base_url=management_url.rstrip("/") + "/api",
        auth=(target.user, target.password),
        timeout=10.0,
    )


def vhost_path(vhost: str) -> str:
    return quote(vhost, safe="")


@dataclass(frozen=True)
class BrokerSetup:
    """What `setup_broker` did, for the operator."""

    rabbitmq_version: str
    vhost: str
    vhost_created: bool
    policy: dict[str, Any]


async def setup_broker(
    client: httpx.AsyncClient, target: AmqpTarget, delivery_limit: int
) -> BrokerSetup:
    """Create the vhost if missing, grant the user, apply the policy. Idempotent."""
    overview = await client.get("/overview")
    overview.raise_for_status()
    version = str(overview.json()["rabbitmq_version"])
    vhost = vhost_path(target.vhost)
    existing = await client.get(f"/vhosts/{vhost}")
    created = existing.status_code == httpx.codes.NOT_FOUND
    if created:
        (await client.put(f"/vhosts/{vhost}")).raise_for_status()
    else:
        existing.raise_for_status()
    user = quote(target.user, safe="")
    granted = await client.put(f"/permissions/{vhost}/{user}", json=FULL_PERMISSIONS)
    granted.raise_for_status()
    body = policy_body(delivery_limit, policy_apply_to(version))
    (await client.put(f"/policies/{vhost}/{POLICY_NAME}", json=body)).raise_for_status()
    return BrokerSetup(version, target.vhost, vhost_created=created, policy=body)


async def delete_vhost(client: httpx.AsyncClient, vhost: str) -> None:
    """Delete a vhost with everything in it; a missing one is fine."""
    response = await client.delete(f"/vhosts/{vhost_path(vhost)}")
    if response.status_code != httpx.codes.NOT_FOUND:
        response.raise_for_status()
