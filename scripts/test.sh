#!/usr/bin/env bash
# The README's test command: makes sure the real components exist and run, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://deskhub:deskhub@127.0.0.1:5432/postgres}
export CHROMIUM_PATH=${CHROMIUM_PATH:-/usr/bin/chromium}
exec node_modules/.bin/tap "$@"
