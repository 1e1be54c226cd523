#!/usr/bin/env bash
# Installs Postfix (Debian package, "No configuration": no system instance is set up) and
# Dovecot's core (its SASL auth server: Postfix's AUTH goes through it) for the side-by-side
# benchmark. `make bench` runs it; `make test` never needs either. Nothing is started here:
# the bench runs its own throwaway instances. Without root or apt it says so, and the bench
# prints the rows it can (the relay's numbers at least).
set -u
missing=()
if ! command -v postfix >/dev/null 2>&1 && [ ! -x /usr/sbin/postfix ]; then
    missing+=(postfix)
fi
if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then
    missing+=(dovecot-core)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench: ${missing[*]} not installed and cannot install here (needs root and apt-get)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "bench: installing ${missing[*]} (apt-get)" >&2
if ! apt-get update -qq; then
    echo "bench: apt-get update failed; trying to install from the current lists" >&2
fi
for package in "${missing[@]}"; do
    if ! apt-get install -y -qq --no-install-recommends "$package" >/dev/null; then
        echo "bench: installing $package failed; the bench runs without it" >&2
    fi
done
# The packages' own system services are not used; policy-rc.d may have kept them from
# starting, and where it did not, the bench's instances use their own ports and dirs.
exit 0
