#!/usr/bin/env bash
# Install the pinned Codex CLI once per machine into a versioned cache outside the repo, and print
# the path of its static native binary (nothing on stdout but that path).
#
#   CODEX_BIN=$(bash .ci/install-codex.sh)
#
# CODEX_VERSION   the pin (default below); moving it means re-running the integration suite
# CODEX_CACHE_DIR default ${XDG_CACHE_HOME:-$HOME/.cache}/moonmind/codex; one folder per version
#
# Cold: 4-7 s and ~424 MB from npm; cached: a `--version` check. A `.partial` prefix keeps an
# interrupted download from looking installed. See ../shared/notes/codex-cli.md §2-§3.
set -euo pipefail

CODEX_VERSION=${CODEX_VERSION:-0.171.0}
CACHE=${CODEX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moonmind/codex}
PREFIX=$CACHE/$CODEX_VERSION

find_bin() {
    local bin
    for bin in "$PREFIX"/node_modules/@openai/codex-linux-*/vendor/*/bin/codex; do
        [ -x "$bin" ] && { printf '%s\n' "$bin"; return 0; }
    done
    return 1
}

BIN=$(find_bin || true)
if [ -z "$BIN" ] || [ "$("$BIN" --version 2>/dev/null)" != "codex-cli $CODEX_VERSION" ]; then
    command -v npm >/dev/null || { echo "install-codex: npm is required" >&2; exit 1; }
    echo "install-codex: installing @openai/codex@$CODEX_VERSION into $PREFIX" >&2
    rm -rf "$PREFIX.partial"
    mkdir -p "$CACHE"
    npm install --prefix "$PREFIX.partial" --save-exact --no-audit --no-fund --loglevel=error \
        "@openai/codex@$CODEX_VERSION" >&2
    rm -rf "$PREFIX"
    mv "$PREFIX.partial" "$PREFIX"
    BIN=$(find_bin) || { echo "install-codex: no native codex binary under $PREFIX" >&2; exit 1; }
    version=$("$BIN" --version)
    [ "$version" = "codex-cli $CODEX_VERSION" ] ||
        { echo "install-codex: $BIN reports '$version', expected codex-cli $CODEX_VERSION" >&2; exit 1; }
fi
printf '%s\n' "$BIN"
