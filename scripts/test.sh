#!/usr/bin/env bash
# The README's test command: makes sure the real components exist and run (PostgreSQL, Docker,
# Chromium, redis-server, nginx, wrk), then runs every test with tap and ends with one line
# "N passed, N failed[, N skipped]".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh || exit 1
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://deskhub:deskhub@127.0.0.1:5432/postgres}
export CHROMIUM_PATH=${CHROMIUM_PATH:-/usr/bin/chromium}
mkdir -p test-artifacts
log=test-artifacts/tap-summary.log
node_modules/.bin/tap "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# tap's last summary line looks like: # { total: 30, pass: 28, fail: 1, skip: 1 }
node -e '
  const text = require("fs").readFileSync(process.argv[1], "utf8");
  const m = [...text.matchAll(/^# \{ (total: \d+[^}]*) \}$/gm)].pop();
  if (!m) { console.log("0 passed, 0 failed"); process.exit(0); }
  const n = (k) => Number((m[1].match(new RegExp(k + ": (\\d+)")) || [0, 0])[1]);
  const skipped = n("skip") + n("todo");
  console.log(`${n("pass")} passed, ${n("fail")} failed` + (skipped ? `, ${skipped} skipped` : ""));
' "$log"
exit "$status"
