#!/usr/bin/env bash
# Test it: installs what the tests need, makes sure PostgreSQL and Redis answer, then runs
# the linters and every test tier (unit, contract, integration, e2e, faults) in one pytest run.
# Anything it does to the machine (a system package, a server started, a config line) is
# announced on its own "test.sh: ..." line before it happens.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh test 2>&1 | { grep -v "^WARNING: Location" >&2 || true; }
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "test.sh: installing the project failed" >&2; exit 1; }
export PATH="$PWD/.venv/bin:$PATH"

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
wait_up() {  # wait_up NAME CHECK: up to 30 s for a service that is starting
  for _ in $(seq 150); do "$2" && return 0; sleep 0.2; done
  echo "test.sh: $1 did not come up on 127.0.0.1" >&2; return 1
}
say() { echo "test.sh: $*" >&2; }
install_missing() {  # install_missing PACKAGE WHY
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing the system package $1 with apt-get: $2"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    say "please install $1 ($2)"; exit 1
  fi
}

if ! pg_up; then
  command -v pg_ctlcluster >/dev/null || install_missing postgresql \
    "nothing answers on 127.0.0.1:5432 and the integration tests need PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  say "starting the PostgreSQL $version cluster 'main': nothing answers on 127.0.0.1:5432"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  # A fresh cluster uses peer auth; tests connect over TCP as postgres without a password.
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
    say "trusting TCP logins from this host in $hba: the tests connect as postgres without a password"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
  wait_up PostgreSQL pg_up
fi
if ! redis_up; then
  command -v redis-server >/dev/null || install_missing redis-server \
    "nothing answers on 127.0.0.1:6379 and the integration tests need Redis"
  say "starting redis-server on 127.0.0.1:6379 (no persistence): nothing answers there"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_up Redis redis_up
fi

if ! rabbit_up; then  # the contract's other broker, for tests/integration/test_rabbitmq.py
  command -v rabbitmq-server >/dev/null || install_missing rabbitmq-server \
    "nothing answers on 127.0.0.1:5672 and one integration test runs the flow on RabbitMQ"
  say "starting rabbitmq-server in the background: nothing answers on 127.0.0.1:5672"
  rabbitmq-server -detached || true
  wait_up RabbitMQ rabbit_up
fi

# docker-compose.yml is validated with `docker-compose config` (no engine needed).
if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
  install_missing docker-compose "a test validates docker-compose.yml with \`docker-compose config\`"
fi

echo "== lint: ruff, mypy --strict, event schemas"
ruff check .
ruff format --check .
mypy
python scripts/export_schemas.py --check

echo "== tests: unit, contract, integration, e2e, faults"
# Arguments go to pytest (e.g. `scripts/test.sh tests/unit -x`); none means every tier.
# Three test processes: most integration and fault tests wait on workers rather than compute,
# and each leases its own Redis db and PostgreSQL database (tests/redis_db.py, tests/pg.py).
# A file stays in one process, so a module's shared worker is started once.
exec python -m pytest -p no:cacheprovider -n 3 --dist loadfile "${@:-tests}"
