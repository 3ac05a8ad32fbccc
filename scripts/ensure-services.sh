#!/usr/bin/env bash
# Installs (Debian packages) and starts what the test suite talks to for real:
# PostgreSQL, Redis (tests start their own redis-server processes), Docker Engine and
# docker-compose, Chromium, Firefox ESR, nginx, HAProxy and wrk (benchmark harness). Idempotent: does nothing that is already done.
# Needs root on Debian 12. The caller (scripts/test.sh) sets TEST_DATABASE_URL; this script makes it valid.
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v dockerd >/dev/null || need+=(docker.io)
[ -x /usr/bin/chromium ] || need+=(chromium)
# The desktop-origin cookie hand-off is checked in Firefox too (puppeteer-core over WebDriver BiDi).
command -v firefox-esr >/dev/null || need+=(firefox-esr)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
# The strongest proxy a user could put in front of desktops: the benchmark's bar (bench/lib/haproxy.ts).
command -v haproxy >/dev/null || need+=(haproxy)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need+=(busybox-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
# docker-compose.yml is brought up for real (deploy/test/compose.test.ts) with Debian's Compose 1.29.
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v ip >/dev/null || need+=(iproute2)
command -v openssl >/dev/null || need+=(openssl)
# The proxy runs on jemalloc as deployed (deploy/allocator.env): the benchmark and a test start it so.
ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1 || need+=(libjemalloc2)

if [ ${#need[@]} -gt 0 ]; then
  echo "ensure-services: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # the packages' own start attempts may have started nginx on :80; tests start their own
  (command -v nginx >/dev/null && nginx -s quit 2>/dev/null) || true
  # and HAProxy's package its service; the benchmark starts its own
  if [[ " ${need[*]} " == *" haproxy "* ]]; then (service haproxy stop >/dev/null 2>&1 || pkill -x haproxy) || true; fi
fi

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 120); do
    if "$@" >/dev/null 2>&1; then echo "ensure-services: $name answers"; return 0; fi
    sleep 0.5
  done
  echo "ensure-services: $name did not answer within 60 s" >&2
  return 1
}

# PostgreSQL: the Debian cluster, with a superuser role the tests log in as over TCP.
PGVER=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h 2>/dev/null | grep -q .; then pg_createcluster "$PGVER" main >/dev/null; fi
pg_ctlcluster "$PGVER" main start 2>/dev/null || true
wait_for postgres su postgres -c "psql -qAtc 'select 1'"
su postgres -c "psql -qAtc \"DO \\\$\\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='deskhub') THEN CREATE ROLE deskhub SUPERUSER LOGIN PASSWORD 'deskhub'; END IF; END \\\$\\\$;\"" >/dev/null

# Docker Engine.
if ! docker info >/dev/null 2>&1; then
  mkdir -p /var/log
  nohup dockerd >/var/log/deskhub-dockerd.log 2>&1 &
  wait_for docker docker info
else
  echo "ensure-services: docker answers"
fi
