#!/bin/sh
# Installs Debian's PostgreSQL server binaries for genlab tune's shared-study test
# (tests/test_tune_storage.py starts its own throwaway server with initdb/pg_ctl in a temporary
# folder, on 127.0.0.1, as a non-root user; nothing here starts or enables a service).
# Idempotent: nothing runs apt when the package is installed. Run as root (CI containers) or
# as a user with sudo.
#   sh scripts/install-postgres.sh
set -eu

if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    echo "postgresql already installed: $(ls -d /usr/lib/postgresql/*/bin | head -n 1)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-postgres.sh: needs root (or sudo) to run apt-get" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-postgres.sh: apt-get not found; install the PostgreSQL server (initdb, pg_ctl)" \
         "with your system's package manager" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends postgresql

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    echo "install-postgres.sh: pg_ctl is still missing after installing postgresql" >&2
    exit 1
fi
echo "ok: $(ls /usr/lib/postgresql/*/bin/postgres | head -n 1)"
