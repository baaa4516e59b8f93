#!/usr/bin/env bash
# Installs the system packages the functional tests need (and, given the
# argument "bench", the benchmark's wrk): Debian's rabbitmq-server (which pulls in Erlang),
# postgresql, haproxy, iputils-arping, keepalived, and chromium with chromium-driver
# for the console's browser test. The tests start their own private
# node from it (tests/functional/rabbitmq.py), so the packaged system service
# is stopped and disabled: it would only hold port 5672, the default node name
# and memory.
#
# Idempotent and quick when everything is already there, so CI can call it
# on every run. Needs root (or sudo) only when something has to be installed.
set -euo pipefail

RABBITMQ_SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "install-system-deps: need root to run: $*" >&2
        exit 1
    fi
}

stop_system_rabbitmq() {
    # There is no systemd in our containers, so the SysV script is what
    # postinst may have used; with systemd, disabling the unit is what counts.
    as_root service rabbitmq-server stop >/dev/null 2>&1 || true
    as_root update-rc.d rabbitmq-server disable >/dev/null 2>&1 || true
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
    fi
    # The init script can fail to stop a node it did not start itself (no pid
    # file), so as a last resort end the packaged node by its owner: only the
    # system service runs as the 'rabbitmq' user, our test nodes run as us.
    if id rabbitmq >/dev/null 2>&1 && pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1; then
        as_root pkill -TERM -u rabbitmq -x beam.smp || true
        for _ in $(seq 1 30); do
            pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1 || break
            sleep 0.5
        done
        as_root pkill -KILL -u rabbitmq -x beam.smp || true
    fi
}

# What is missing, installed with one `apt-get update` and one install: on a
# fresh machine each update costs seconds.
missing=()
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
    # The haproxy driver's tests run real HAProxy processes of their own.
    missing+=(haproxy)
fi
if ! command -v arping >/dev/null 2>&1 && [ ! -x /usr/sbin/arping ]; then
    # The haproxy driver announces a VIP that moves to its host with
    # gratuitous ARP; the VIP failover test checks a neighbour heard it.
    missing+=(iputils-arping)
fi
if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    # The functional suite runs a second time on a private PostgreSQL
    # cluster of its own (tests/functional/postgresql.py).
    missing+=(postgresql)
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    # The console's browser test drives headless chromium through chromium-driver
    # (tests/functional/browser.py); Selenium is given both paths and downloads nothing.
    missing+=(chromium chromium-driver)
fi
if ! command -v keepalived >/dev/null 2>&1 && [ ! -x /usr/sbin/keepalived ]; then
    # The haproxy driver's ACTIVE_STANDBY topology moves the VIP by VRRP with
    # keepalived; its failover test runs keepalived processes of its own.
    missing+=(keepalived)
fi
if [ "${1:-}" = bench ] && ! command -v wrk >/dev/null 2>&1; then
    # The benchmark's load generator: C, so the CPU stays with tether.
    missing+=(wrk)
fi
if [ ! -x "$RABBITMQ_SERVER" ]; then
    missing+=(rabbitmq-server)
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "install-system-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    # apt writes progress to stdout even with -qq; keep CI logs readable
    # but let errors through on stderr.
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The packaged HAProxy service is not ours: the tests run their own.
    as_root service haproxy stop >/dev/null 2>&1 || true
    as_root service keepalived stop >/dev/null 2>&1 || true
    as_root update-rc.d keepalived disable >/dev/null 2>&1 || true
    if [ ! -x "$RABBITMQ_SERVER" ]; then
        echo "install-system-deps: $RABBITMQ_SERVER still missing after install" >&2
        exit 1
    fi
fi

# The packaged cluster is not ours: it would only hold port 5432 and memory.
if command -v pg_lsclusters >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | grep -q ' online'; then
    as_root service postgresql stop >/dev/null 2>&1 || true
    as_root update-rc.d postgresql disable >/dev/null 2>&1 || true
fi

# Checked on every run, not just after an install: the package may have been
# installed by hand or by an older script, leaving the service enabled (it
# would start on the next boot) or running.
if compgen -G '/etc/rc[2-5].d/S*rabbitmq-server' >/dev/null \
    || { id rabbitmq >/dev/null 2>&1 && pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1; }; then
    stop_system_rabbitmq
fi
