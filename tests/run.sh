#!/usr/bin/env bash
# The whole test suite, on a fresh machine: unit tests, integration tests on the
# simulator, the benchmark's smoke run, and end-to-end tests against the real
# Claude Code CLI (installed here from npm; it runs offline against a fake API).
set -euo pipefail
cd "$(dirname "$0")/.."

CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.197}"
claude_exe=".ci/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
if [ -z "${CMS_E2E_CLAUDE:-}" ] && [ ! -x "$claude_exe" ]; then
  echo "==> installing @anthropic-ai/claude-code@${CLAUDE_CODE_VERSION} into .ci/ (for the end-to-end tests)"
  mkdir -p .ci
  [ -f .ci/package.json ] || echo '{"name":"cms-e2e","private":true}' > .ci/package.json
  npm install --prefix .ci --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"
  if [ ! -x "$claude_exe" ] && [ -f .ci/node_modules/@anthropic-ai/claude-code/install.cjs ]; then
    (cd .ci/node_modules/@anthropic-ai/claude-code && node install.cjs)
  fi
fi
export CMS_E2E_CLAUDE="${CMS_E2E_CLAUDE:-$PWD/$claude_exe}"
# The OS layer of the safety net (protected paths read-only for guarded Bash
# commands) runs on bubblewrap; the end-to-end tests require it.
if ! command -v bwrap >/dev/null 2>&1; then
  echo "==> installing bubblewrap (the OS sandbox of guarded sessions)"
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y bubblewrap >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y bubblewrap >/dev/null; }
  else
    sudo apt-get install -y bubblewrap >/dev/null
  fi
fi
"$CMS_E2E_CLAUDE" --version
export CMS_E2E_REQUIRED=1

echo "==> cargo test (unit, simulator integration, benchmark smoke, end-to-end)"
cargo test --all-targets
