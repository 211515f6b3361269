#!/usr/bin/env bash
# The whole test suite, on a fresh machine: unit tests, integration tests on the
# simulator, the benchmark's smoke run, end-to-end tests against the real Claude
# Code CLI (installed here from npm; it runs offline against a fake API), and the
# MCP conformance suite against the host's HTTP face.
#
# The end-to-end tests run twice: on the Claude Code people install today
# (CLAUDE_CODE_VERSION, npm `latest` when this was written) and on the oldest
# version cms supports (CLAUDE_CODE_OLDEST). The two count cost differently
# (per process before 2.1.332, per conversation since). CMS_E2E_CLAUDE=/path/to/claude
# runs them once, on that binary, instead.
set -euo pipefail
cd "$(dirname "$0")/.."

CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"
CLAUDE_CODE_OLDEST="${CLAUDE_CODE_OLDEST:-2.1.197}"

# install_claude VERSION PREFIX: the native CLI of that version under PREFIX; prints its path.
install_claude() {
  local version="$1" prefix="$2"
  local exe="$prefix/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
  if [ -x "$exe" ] && "$exe" --version 2>/dev/null | grep -q "^$version "; then
    echo "$exe"; return
  fi
  echo "==> installing @anthropic-ai/claude-code@$version into $prefix/ (for the end-to-end tests)" >&2
  mkdir -p "$prefix"
  [ -f "$prefix/package.json" ] || echo '{"name":"cms-e2e","private":true}' > "$prefix/package.json"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$version" >&2
  # Newer npm may skip the package's postinstall, which puts the native binary in place.
  if ! "$exe" --version >/dev/null 2>&1 && [ -f "$prefix/node_modules/@anthropic-ai/claude-code/install.cjs" ]; then
    (cd "$prefix/node_modules/@anthropic-ai/claude-code" && node install.cjs) >&2
  fi
  echo "$exe"
}

export CMS_E2E_REQUIRED=1
if [ -n "${CMS_E2E_CLAUDE:-}" ]; then
  versions=("$CMS_E2E_CLAUDE")
else
  versions=("$PWD/$(install_claude "$CLAUDE_CODE_VERSION" .ci)")
  if [ "$CLAUDE_CODE_OLDEST" != "$CLAUDE_CODE_VERSION" ]; then
    versions+=("$PWD/$(install_claude "$CLAUDE_CODE_OLDEST" .ci/oldest)")
  fi
fi
# apt_install PROGRAM PACKAGE WHY: install a Debian package when its program is missing.
apt_install() {
  command -v "$1" >/dev/null 2>&1 && return
  echo "==> installing $2 ($3)"
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }
  else
    sudo apt-get install -y "$2" >/dev/null
  fi
}
# The OS layer of the safety net (protected paths read-only for guarded Bash
# commands) runs on bubblewrap; the end-to-end tests require it.
apt_install bwrap bubblewrap "the OS sandbox of guarded sessions"
# The shell-completion test types into a real bash through tmux; with
# CMS_E2E_REQUIRED=1 it fails without it.
apt_install tmux tmux "the bash completion test drives a real shell"
# The ssh runner's tests (tests/it/runners.rs) start two OpenSSH servers on 127.0.0.1.
apt_install /usr/sbin/sshd openssh-server "the ssh runner's tests run sessions over real sshd"
# The dashboard's tests (tests/it/web_browser.rs) drive the page in headless Chromium
# through chromedriver; with CMS_E2E_REQUIRED=1 they fail without them.
apt_install chromium chromium "the dashboard's tests run in headless Chromium"
apt_install chromedriver chromium-driver "the dashboard's tests drive Chromium through chromedriver"

# --all-targets runs each benchmark binary (benches/*.rs, harness = false) without
# `--bench`: its smoke run, small counts in a debug build, figures informational.
# benches/host.rs runs as with `--quick` (under 30 s): the host's send latency, the
# real CLI's follow-ups through the host against `claude -p --resume` (on the CLI
# below), the host's RSS, and the max_live queue.
echo "==> cargo test (unit, simulator integration, benchmark smoke runs, end-to-end on $("${versions[0]}" --version))"
CMS_E2E_CLAUDE="${versions[0]}" cargo test --all-targets

# The official MCP conformance suite against `cms serve --http`, for both revisions
# (2025-11-25 and 2026-07-28); installed from npm into .ci/conformance/ once.
# tests/conformance/expected-failures.txt lists what it may find missing, and why.
echo "==> MCP conformance suite over HTTP (tests/conformance/run.sh)"
CMS_BIN="$PWD/target/debug/cms" bash tests/conformance/run.sh

# The suite runs with the session host (the default). The frontends' tests run once
# more in the old in-process mode (--no-host), where a session ends with its command.
echo "==> the CLI, script and MCP tests again without the session host (CMS_NO_HOST=1)"
CMS_TEST_NO_HOST=1 CMS_E2E_CLAUDE="${versions[0]}" cargo test --test it -- cli:: lua:: mcp:: --skip host_cli::

for exe in "${versions[@]:1}"; do
  echo "==> end-to-end again on the oldest supported Claude Code: $("$exe" --version)"
  CMS_E2E_CLAUDE="$exe" cargo test --test it -- e2e_claude:: e2e_safety:: e2e_host:: e2e_http::
done
