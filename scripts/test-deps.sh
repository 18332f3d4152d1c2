#!/usr/bin/env bash
# Makes sure the server packages the test suites start (throwaway PostgreSQL and Redis instances
# on free ports) are installed. As root it installs what is missing with apt; otherwise it names
# the packages to install and fails.
set -euo pipefail

missing=()
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if ! command -v redis-server >/dev/null 2>&1; then
  missing+=(redis-server redis-tools)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "make test needs these Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} …" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# apt may start the services; the tests start their own instances on free ports.
(service postgresql stop || true; service redis-server stop || true) >/dev/null 2>&1
