#!/usr/bin/env bash
# Makes sure the server packages the test suites start (throwaway PostgreSQL and Redis instances
# on free ports) are installed. As root it installs what is missing with apt; otherwise it names
# the packages to install and fails.
set -euo pipefail

# The debug build of every test binary takes about 2 GB under target/; fail early and clearly rather
# than with a linker's "No space left on device" half-way through.
need_kb=$((3 * 1024 * 1024))
target_dir="${CARGO_TARGET_DIR:-target}"
probe="$target_dir"; [ -d "$probe" ] || probe=.
free_kb=$(df -Pk "$probe" | awk 'NR == 2 { print $4 }')
if [ -n "$free_kb" ] && [ "$free_kb" -lt "$need_kb" ]; then
  echo "make test needs about 3 GB free for its build under $target_dir; $((free_kb / 1024)) MB are free" >&2
  echo "free some space (for example: cargo clean) and run it again" >&2
  exit 1
fi

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
