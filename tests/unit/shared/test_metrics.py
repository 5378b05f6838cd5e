"""StatsD wire format and delivery, against real local UDP sockets (loopback only)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from shared.messages import TaskName
from shared.metrics import (
    TASK_DURATION,
    TASK_START,
    NullMetrics,
    StatsdMetrics,
    configure_metrics,
    get_metrics,
    tag_value,
)
from shared.settings import ServiceSettings
from tests.support.fakes import RecordingMetrics

PREFIX = "moonmind.spec_workflow"
METRICS_ENV = (
    "SPEC_WORKFLOW_METRICS_HOST",
    "SPEC_WORKFLOW_METRICS_PORT",
    "STATSD_HOST",
    "STATSD_PORT",
    "SPEC_WORKFLOW_METRICS_PREFIX",
)


def udp_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    return sock


def udp_listener_on(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(2)
    return sock


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def collector() -> Iterator[socket.socket]:
    sock = udp_listener()
    yield sock
    sock.close()


@pytest.fixture
def statsd(collector: socket.socket) -> Iterator[StatsdMetrics]:
    client = StatsdMetrics("127.0.0.1", port_of(collector), PREFIX)
    yield client
    client.close()


@pytest.fixture
def metrics_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings come from env vars only; the process-wide client is reset afterwards."""
    monkeypatch.setenv("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    for name in METRICS_ENV:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    for name in METRICS_ENV:  # still patched here: clear them so the reset has no host
        monkeypatch.delenv(name, raising=False)
    configure_metrics(ServiceSettings(_env_file=None))  # no host: closes any socket


def test_counter_line_wire_format(
    statsd: StatsdMetrics, collector: socket.socket
) -> None:
    statsd.incr(
        TASK_START,
        task=TaskName.DISCOVER_NEXT_PHASE,
        attempt=1,
        status="running",
        retry=False,
    )

    assert collector.recv(1024) == (
        b"moonmind.spec_workflow.task_start:1|c|#task:discover_next_phase,attempt:1,status:running,retry:false"
    )


def test_timer_line_wire_format(
    statsd: StatsdMetrics, collector: socket.socket
) -> None:
    statsd.timing(
        TASK_DURATION, 1234.56789, task="apply_and_publish", attempt=2, status="success"
    )

    assert collector.recv(1024) == (
        b"moonmind.spec_workflow.task_duration:1234.568|ms|#task:apply_and_publish,attempt:2,status:success"
    )


def test_untagged_line_has_no_tag_section(
    statsd: StatsdMetrics, collector: socket.socket
) -> None:
    statsd.incr("relay_published", 3)

    assert collector.recv(1024) == b"moonmind.spec_workflow.relay_published:3|c"


def test_timed_tags_the_outcome(
    statsd: StatsdMetrics, collector: socket.socket
) -> None:
    with statsd.timed(TASK_DURATION, task="finalize_run", attempt=1):
        pass
    with (
        pytest.raises(ValueError, match="boom"),
        statsd.timed(TASK_DURATION, task="finalize_run", attempt=1),
    ):
        raise ValueError("boom")

    assert collector.recv(1024).endswith(
        b"|ms|#task:finalize_run,attempt:1,status:success"
    )
    assert collector.recv(1024).endswith(
        b"|ms|#task:finalize_run,attempt:1,status:failure"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (TaskName.SUBMIT_CODEX_JOB, "submit_codex_job"),
        ("A b,c|d", "a_b_c_d"),
    ],
)
def test_tag_values_are_lower_case_strings(
    value: str | int | bool, expected: str
) -> None:
    assert tag_value(value) == expected


def test_dead_collector_never_raises_and_counts_errors() -> None:
    closed = udp_listener()
    port = port_of(closed)
    closed.close()
    client = StatsdMetrics("127.0.0.1", port, PREFIX)
    try:
        for _ in range(200):
            client.incr(TASK_START, task="discover_next_phase", attempt=1)

        assert client.send_errors > 0
    finally:
        client.close()


def test_sending_resumes_when_the_collector_comes_back() -> None:
    listener = udp_listener()
    port = port_of(listener)
    listener.close()
    client = StatsdMetrics("127.0.0.1", port, PREFIX)
    try:
        for _ in range(10):
            client.incr("lost")
        assert client.send_errors > 0
        listener = udp_listener_on(port)
        # A refusal still pending from the last lost datagram may eat one more send.
        for _ in range(3):
            client.incr("back")

        assert listener.recv(1024) == b"moonmind.spec_workflow.back:1|c"
    finally:
        client.close()
        listener.close()


def test_unresolvable_host_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*_: object, **__: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    client = StatsdMetrics("statsd.invalid", 8125, PREFIX)

    client.incr(TASK_START, task="discover_next_phase", attempt=1)
    client.timing(TASK_DURATION, 1.0, task="discover_next_phase", attempt=1)

    assert client.send_errors >= 2


@pytest.mark.usefixtures("metrics_env")
def test_configure_without_host_is_a_no_op() -> None:
    metrics = configure_metrics(ServiceSettings(_env_file=None))

    assert isinstance(metrics, NullMetrics)
    assert get_metrics() is metrics
    metrics.incr(
        TASK_START, task="x", attempt=1
    )  # nothing to assert: it must simply not fail


def test_spec_workflow_metrics_host_wins_over_statsd_host(
    metrics_env: pytest.MonkeyPatch, collector: socket.socket
) -> None:
    decoy = udp_listener()
    decoy.setblocking(False)
    metrics_env.setenv("SPEC_WORKFLOW_METRICS_HOST", "127.0.0.1")
    metrics_env.setenv("SPEC_WORKFLOW_METRICS_PORT", str(port_of(collector)))
    metrics_env.setenv("STATSD_HOST", "localhost")
    metrics_env.setenv("STATSD_PORT", str(port_of(decoy)))
    try:
        configure_metrics(ServiceSettings(_env_file=None))
        get_metrics().incr(
            TASK_START, task="codex_preflight", attempt=1, status="running", retry=True
        )

        assert collector.recv(1024) == (
            b"moonmind.spec_workflow.task_start:1|c|#task:codex_preflight,attempt:1,status:running,retry:true"
        )
        with pytest.raises(BlockingIOError):
            decoy.recv(1024)
    finally:
        decoy.close()


def test_statsd_host_is_the_fallback(
    metrics_env: pytest.MonkeyPatch, collector: socket.socket
) -> None:
    metrics_env.setenv("STATSD_HOST", "127.0.0.1")
    metrics_env.setenv("STATSD_PORT", str(port_of(collector)))
    metrics_env.setenv("SPEC_WORKFLOW_METRICS_PREFIX", "custom.prefix")

    configure_metrics(ServiceSettings(_env_file=None)).incr(
        "task_success", task="x", attempt=1
    )

    assert collector.recv(1024) == b"custom.prefix.task_success:1|c|#task:x,attempt:1"


def test_recording_metrics_records_wire_tag_values() -> None:
    metrics = RecordingMetrics()

    metrics.incr(TASK_START, task=TaskName.CODEX_PREFLIGHT, attempt=2, retry=True)
    with metrics.timed(TASK_DURATION, task="codex_preflight", attempt=2):
        pass

    assert metrics.names() == [TASK_START, TASK_DURATION]
    assert metrics.tags_of(TASK_START) == [
        {"task": "codex_preflight", "attempt": "2", "retry": "true"}
    ]
    assert metrics.count(TASK_START, attempt=2, retry=True) == 1
    assert metrics.find(TASK_DURATION, status="success")
