#!/usr/bin/env bash
# System packages the test suite uses: Debian's docker-compose (validates docker-compose.yml) and Chromium
# (browser tests of the web page). Installed only when missing, only where apt-get and root are available;
# the tests that need them skip with a reason otherwise.
set -euo pipefail
want=()
command -v docker-compose >/dev/null 2>&1 || want+=(docker-compose)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: cannot install ${want[*]} (need root and apt-get); dependent tests will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null || \
  echo "system-deps: apt-get install ${want[*]} failed; dependent tests will skip" >&2
