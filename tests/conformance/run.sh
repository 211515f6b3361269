#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance) against
# `cms serve --http`, once for each revision cms speaks: 2025-11-25 (initialize and
# Mcp-Session-Id) and 2026-07-28 (server/discover, per-request _meta,
# subscriptions/listen). Every scenario of the revision runs (`--suite all`, so the
# suite's pending ones too; its optional extensions, tasks and skills, are not
# revisions and are left out).
#
# tests/conformance/expected-failures.txt is the baseline: the scenarios (or single
# checks, `scenario:check-id`) that fail for want of what the suite's own fixture
# server has and cms has not (tools named test_*, prompts, resources), one a line
# with why. The run fails on a failure not in it, and on an entry that now passes,
# so the baseline stays honest (the suite's own --expected-failures does both).
#
# The suite cannot send headers; tests/conformance/preload.mjs adds the bearer token
# to its requests to the server under test (and runs the suite on Node 20).
#
# Env: CMS_BIN (default target/debug/cms, built here), CMS_CONFORMANCE_REVISIONS
# (default "2025-11-25 2026-07-28"). Results and the suite's output of the last run:
# .ci/conformance/results/.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUITE_VERSION=0.2.0-alpha.12
PREFIX=.ci/conformance
SUITE="$PREFIX/node_modules/@modelcontextprotocol/conformance"
REVISIONS="${CMS_CONFORMANCE_REVISIONS:-2025-11-25 2026-07-28}"
BASELINE=tests/conformance/expected-failures.txt

# The suite, from npm once; later runs work offline.
if ! grep -qs "\"version\": \"$SUITE_VERSION\"" "$SUITE/package.json"; then
  echo "==> installing @modelcontextprotocol/conformance@$SUITE_VERSION into $PREFIX/"
  mkdir -p "$PREFIX"
  [ -f "$PREFIX/package.json" ] || echo '{"name":"cms-conformance","private":true}' > "$PREFIX/package.json"
  npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/conformance@$SUITE_VERSION" >&2
fi
# What is installed and each run's results stay out of git.
[ -f "$PREFIX/.gitignore" ] || echo '*' > "$PREFIX/.gitignore"

if [ -z "${CMS_BIN:-}" ]; then
  cargo build --quiet --bins
  CMS_BIN="$PWD/target/debug/cms"
fi
SIM="$(dirname "$CMS_BIN")/cms-sim"

# A host of its own: a fresh CMS_HOME, a config dir with no plugin of the user's but
# tests/conformance/plugin (three of the suite's fixture tools, as a cms plugin), the
# simulator as claude, HTTP on a free port.
home="$(mktemp -d)"
mkdir -p "$home/config/plugins"
cp -r tests/conformance/plugin "$home/config/plugins/conformance"
export CMS_HOME="$home" CMS_CONFIG_DIR="$home/config" CMS_CLAUDE_BIN="$SIM"
unset CMS_NO_HOST
"$CMS_BIN" serve --http 127.0.0.1:0 2>"$home/serve.log" &
serve_pid=$!
stop_host() {
  "$CMS_BIN" host stop >/dev/null 2>&1 || true
  if kill -0 "$serve_pid" 2>/dev/null; then
    sleep 1
    kill "$serve_pid" 2>/dev/null || true
  fi
  rm -rf "$home"
}
trap stop_host EXIT

addr=""
for _ in $(seq 100); do
  addr="$("$CMS_BIN" host status --json 2>/dev/null | sed -n 's/^ *"http": "\(.*\)",\{0,1\}$/\1/p')" || true
  [ -n "$addr" ] && break
  kill -0 "$serve_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "conformance: the host did not start (its log follows)" >&2
  cat "$home/serve.log" >&2
  exit 1
fi
url="http://$addr/mcp"
export CMS_CONFORMANCE_URL="$url"
CMS_CONFORMANCE_TOKEN="$("$CMS_BIN" serve --print-token)"
export CMS_CONFORMANCE_TOKEN

mkdir -p "$PREFIX/results"
failed=0
for rev in $REVISIONS; do
  # The baseline's entries for this revision, as the suite's YAML.
  entries=()
  while read -r revs entry _; do
    [ -n "${entry:-}" ] || continue
    case ",$revs," in *",$rev,"* | *",both,"*) entries+=("\"$entry\"") ;; esac
  done < <(sed -e 's/#.*//' "$BASELINE")
  yaml="$home/expected-$rev.yaml"
  (IFS=,; echo "server: [${entries[*]}]") > "$yaml"
  out="$PREFIX/results/$rev.txt"
  rm -rf "${PREFIX:?}/results/$rev"
  status=0
  node --import "$PWD/tests/conformance/preload.mjs" "$SUITE/dist/index.js" server \
    --url "$url" --suite all --spec-version "$rev" \
    --expected-failures "$yaml" -o "$PREFIX/results/$rev" >"$out" 2>&1 || status=$?
  # The summary: one line a scenario (✓ or ✗), then the baseline's verdict.
  total=$(sed -n '/=== SUMMARY ===/,/^Total:/p' "$out" | grep -Ec '^(✓|✗) ' || true)
  baselined=$(sed -n '/Expected failures (in baseline)/,/^$/p' "$out" | sed -n 's/^  ~ //p')
  whole=$(grep -v ':' <<<"$baselined" | grep -c . || true)
  partly=$(grep ':' <<<"$baselined" | cut -d: -f1 | sort -u | grep -c . || true)
  echo "   $rev: $total scenarios: $((total - whole - partly)) pass, $partly pass but for baselined checks, $whole fail as expected (baseline)"
  if [ "$status" != 0 ] || [ "$total" = 0 ]; then
    failed=1
    echo "conformance $rev failed (the suite's output: $out; the host's log follows)" >&2
    sed -n '/Stale baseline entries\|Unexpected failures/,$p' "$out" >&2
    [ "$total" != 0 ] || tail -20 "$out" >&2
  fi
done
if [ "$failed" != 0 ]; then
  tail -50 "$home/serve.log" >&2
  exit 1
fi
