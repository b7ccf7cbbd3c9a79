#!/usr/bin/env bash
# Browser tests drive Debian's chromium through playwright. Install it with apt-get when absent;
# never download a browser from anywhere else (`playwright install` is not used).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing and this is not root: browser tests will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
