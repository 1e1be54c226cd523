#!/usr/bin/env bash
# Installs Postfix (Debian package, "No configuration": no system instance is set up or
# started) for the side-by-side benchmark. `make bench` runs it; `make test` never needs it.
# Without root or apt it says so and the bench prints the relay's numbers only.
set -u
if command -v postfix >/dev/null 2>&1 || [ -x /usr/sbin/postfix ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench: Postfix not installed and cannot install it here (needs root and apt-get)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
if ! { apt-get update -qq && apt-get install -y -qq postfix >/dev/null; }; then
    echo "bench: installing Postfix failed; the bench runs without it" >&2
fi
exit 0
