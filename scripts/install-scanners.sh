#!/usr/bin/env bash
# Installs the content scanners the tests run as real servers: ClamAV's clamd
# (clamav-daemon) and rspamd, from Debian. `make test` runs it. Nothing is started and no
# signature database is downloaded (freshclam is never run): the tests start their own
# clamd and rspamd on loopback with signatures and rules they write themselves.
# Without root or apt it says what is missing and leaves it to the operator.
set -u
missing=()
if ! command -v clamd >/dev/null 2>&1 && [ ! -x /usr/sbin/clamd ]; then
    missing+=(clamav-daemon)
fi
if ! command -v rspamd >/dev/null 2>&1 && [ ! -x /usr/bin/rspamd ]; then
    missing+=(rspamd)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-scanners: ${missing[*]} not installed and cannot install here (needs root and apt-get);" \
         "install them, or the content scanning tests fail" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-scanners: installing ${missing[*]} (apt-get)" >&2
if ! apt-get update -qq -o DPkg::Lock::Timeout=900; then
    echo "install-scanners: apt-get update failed; trying the current package lists" >&2
fi
apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=900 "${missing[@]}" >/dev/null \
    || { echo "install-scanners: installing ${missing[*]} failed" >&2; exit 1; }
exit 0
