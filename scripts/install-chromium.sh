#!/usr/bin/env bash
# The browser test (tests/test_web_browser.py) drives Debian's chromium through Playwright;
# `make test` runs this first. Installed with apt when missing and root: never with
# `playwright install`, which downloads a browser of its own.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "warning: chromium is missing and this is not root: install it (apt-get install chromium)" \
         "or the browser test fails" >&2
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=900 \
    --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium
