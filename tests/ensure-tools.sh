#!/usr/bin/env bash
# System tools the test suite drives, from Debian's packages only (never a browser download):
#   chromium         browser tests through playwright (executable_path=/usr/bin/chromium)
#   systemd-analyze  verifies deploy/obscura.service
#   socat            the sealed-network relay test in tests/deploy
# Installed with apt-get when missing and we are root; otherwise those tests skip.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v socat >/dev/null 2>&1 || missing+=(socat)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing ${missing[*]} and not root: the tests that need them will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
