#!/usr/bin/env bash
# `make demo` and `make demo-down`: the whole product on this machine, with a local sample repository.
#
#   scripts/demo.sh up     container engine + Codex image, sample remote, model, auth volumes, the
#                          stack (`spec-workflow up`), one run followed live to a pushed branch
#   scripts/demo.sh down   stop the stack and the offline model, delete the demo's volumes, stop
#                          the Podman API service this script started
#
# The container engine: a Docker engine when `docker info` answers (the Codex image is built from
# images/codex/Dockerfile when missing); otherwise Podman's Docker-compatible API, installed and
# started by .ci/podman-env.sh (which also builds a local Codex image from Debian packages and the
# npm release of the Codex CLI -- no registry needed).
# The model: OPENAI_API_KEY, else logged-in codex_auth_<n> volumes, else the bundled offline model
# (`spec-workflow demo prepare` says which, plainly).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
CLI=$BIN/spec-workflow
VAR=$($BIN/python -c 'from services.cli.settings import LauncherSettings as S; print(S().var_dir)')
CODEX_VERSION=$(sed -n 's/^CODEX_VERSION=${CODEX_VERSION:-\([0-9.]*\)}$/\1/p' .ci/install-codex.sh)
STATE=$VAR/demo
PODMAN_ENV=${PODMAN_STATE_DIR:-var/podman}/env.sh
mkdir -p "$STATE"

say() { printf '\n==> %s\n' "$*"; }

engine_up() {
    if command -v docker >/dev/null && [ -z "${DOCKER_HOST:-}" ] && docker info >/dev/null 2>&1; then
        export CODEX_IMAGE=${CODEX_IMAGE:-moonmind/codex:$CODEX_VERSION}
        if ! docker image inspect "$CODEX_IMAGE" >/dev/null 2>&1; then
            say "building $CODEX_IMAGE from images/codex/Dockerfile"
            docker build --build-arg "CODEX_VERSION=$CODEX_VERSION" -t "$CODEX_IMAGE" images/codex
        fi
        echo docker >"$STATE/engine"
        say "container engine: the local Docker engine"
        return
    fi
    say "container engine: no Docker engine answers; Podman's Docker API (.ci/podman-env.sh)"
    # `demo down` stops the Podman service only if this step started it
    local engine=podman-started
    if [ -f "$PODMAN_ENV" ] && (. "$PODMAN_ENV" && podman --remote --url "$DOCKER_HOST" version) \
        >/dev/null 2>&1; then
        engine=podman
    fi
    bash .ci/podman-env.sh up
    # shellcheck disable=SC1091
    . "$PODMAN_ENV"
    echo "$engine" >"$STATE/engine"
}

case "${1:-up}" in
up)
    engine_up
    say "sample repository, model and Codex auth volumes"
    $CLI demo prepare
    set -a
    # shellcheck disable=SC1091
    . "$STATE/env"
    set +a
    say "the stack: API, relay, preflight, ${CODEX_SHARDS:-3} Codex runners, publisher"
    $CLI down >/dev/null   # a stack `make up` started runs without the demo's settings
    $CLI up
    say "a run for the sample feature, followed live"
    $CLI demo run
    ;;
down)
    engine=$(cat "$STATE/engine" 2>/dev/null || true)
    if [ -f "$PODMAN_ENV" ] && [[ $engine == podman* ]]; then
        # shellcheck disable=SC1091
        . "$PODMAN_ENV"
    fi
    [ -f "$STATE/env" ] && { set -a; . "$STATE/env"; set +a; }
    $CLI demo down
    if [ "$engine" = podman-started ]; then
        bash .ci/podman-env.sh down
    fi
    rm -f "$STATE/engine"
    ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
