# One image for every service (API, relay, preflight, Codex runner, publisher, the
# `spec-workflow` CLI); docker-compose.yml picks the command. The Codex CLI image the runner
# starts containers from is images/codex/Dockerfile.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# git: discovery (preflight), the clones and patches of the Codex runner and the publisher's
# apply/commit/push all shell out to it; ca-certificates: git and the GitHub API over HTTPS;
# tini: PID 1 that forwards SIGTERM and reaps what git leaves behind.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git tini \
    && rm -rf /var/lib/apt/lists/*

# uid/gid 1000, the user the Codex containers run as (APP_UID in
# services/codex_runner/executors/container.py): the runner clones into the shared
# workspace dir as this user, so the sibling Codex container can write there and the runner
# can read the result and remove it, with no chown and no root. The data dir on the host
# must belong to 1000 (the compose `storage-init` step sees to it). Preflight and the runner
# reach the Docker socket through its group (compose `group_add: DOCKER_GID`), not as root.
RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid 1000 --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app

WORKDIR /app
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
RUN pip install . \
    && mkdir -p /app/var \
    && chown app:app /app/var

USER app
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "services.api"]
