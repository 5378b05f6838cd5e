"""AMQP URL parsing, the policy body, and setup_broker against a fake management API."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from services.cli.broker import (
    POLICY_NAME,
    POLICY_PATTERN,
    AmqpTarget,
    amqp_target,
    policy_apply_to,
    policy_body,
    setup_broker,
)
from shared.topology import DEAD_LETTERS, all_queues


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://u:p@h:5672/spec_workflow", AmqpTarget("u", "p", "spec_workflow")),
        ("amqp://u%40x:p%2Fw@h/v", AmqpTarget("u@x", "p/w", "v")),
        ("amqp://u:p@h:5672/", AmqpTarget("u", "p", "/")),
        ("amqp://u:p@h/%2F", AmqpTarget("u", "p", "/")),
        ("amqps://h/a%2Fb", AmqpTarget("guest", "guest", "a/b")),
    ],
)
def test_amqp_target_reads_user_password_and_vhost(
    url: str, expected: AmqpTarget
) -> None:
    assert amqp_target(url) == expected


@pytest.mark.parametrize(
    ("version", "apply_to"),
    [
        ("3.10.8", "queues"),
        ("3.11.28", "queues"),
        ("3.12.0", "quorum_queues"),
        ("4.1.2", "quorum_queues"),
    ],
)
def test_policy_applies_to_quorum_queues_where_supported(
    version: str, apply_to: str
) -> None:
    assert policy_apply_to(version) == apply_to


def test_policy_body_sets_delivery_limit() -> None:
    assert policy_body(7, "quorum_queues") == {
        "pattern": POLICY_PATTERN,
        "apply-to": "quorum_queues",
        "priority": 0,
        "definition": {"delivery-limit": 7},
    }


def test_policy_pattern_covers_every_queue_of_the_topology() -> None:
    names = [q.name for q in (*all_queues(shards=3), DEAD_LETTERS)]

    assert [n for n in names if not re.match(POLICY_PATTERN, n)] == []
    for other in ("spec_workflow", "amq.gen-1", "apiary", "codex_auth_0"):
        assert not re.match(POLICY_PATTERN, other)


class FakeManagement:
    """The few management API endpoints setup_broker uses, in memory."""

    def __init__(self, version: str, vhosts: set[str]) -> None:
        self.version = version
        self.vhosts = vhosts
        self.puts: dict[str, object] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode().removeprefix("/api")
        if path == "/overview":
            return httpx.Response(200, json={"rabbitmq_version": self.version})
        if request.method == "GET" and path.startswith("/vhosts/"):
            known = path.removeprefix("/vhosts/") in self.vhosts
            return httpx.Response(200 if known else 404, json={})
        if request.method == "PUT":
            self.puts[path] = json.loads(request.content) if request.content else None
            return httpx.Response(201)
        return httpx.Response(405)


async def setup_with(fake: FakeManagement, target: AmqpTarget) -> None:
    transport = httpx.MockTransport(fake.handle)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://m/api"
    ) as client:
        done = await setup_broker(client, target, delivery_limit=5)
    assert done.rabbitmq_version == fake.version


async def test_setup_broker_creates_missing_vhost_and_grants_user() -> None:
    fake = FakeManagement("3.10.8", vhosts={"%2F"})

    await setup_with(fake, AmqpTarget("bob", "pw", "a/b"))

    assert fake.puts == {
        "/vhosts/a%2Fb": None,
        "/permissions/a%2Fb/bob": {"configure": ".*", "write": ".*", "read": ".*"},
        f"/policies/a%2Fb/{POLICY_NAME}": policy_body(5, "queues"),
    }


async def test_setup_broker_keeps_existing_vhost() -> None:
    fake = FakeManagement("4.1.2", vhosts={"%2F"})

    await setup_with(fake, AmqpTarget("guest", "guest", "/"))

    assert "/vhosts/%2F" not in fake.puts
    assert fake.puts[f"/policies/%2F/{POLICY_NAME}"] == policy_body(5, "quorum_queues")
