#!/usr/bin/env bash
# Install the real peers the interop tests talk to (Debian packages), only when missing.
# See /work/shared/PEERS.md: policy-rc.d keeps postinst scripts from starting daemons.
set -euo pipefail

packages=(prosody lua-unbound lua-sec lua-event ejabberd slapd ldap-utils dnsmasq-base
          openssl haproxy go-sendxmpp profanity tmux)
# One command per binary-shipping package; the Lua libraries have no binary.
commands=(prosody ejabberdctl slapd ldapsearch dnsmasq openssl haproxy go-sendxmpp
          profanity tmux)
libraries=(lua-unbound lua-sec lua-event)

missing=()
for cmd in "${commands[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
for lib in "${libraries[@]}"; do
    dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$lib")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "system packages missing: ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
    echo "not root: skipping apt-get; interop tests that need them will be skipped" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get: install the equivalents of: ${packages[*]}" >&2
    exit 0
fi

policy=/usr/sbin/policy-rc.d
had_policy=0
if [ -e "$policy" ]; then
    had_policy=1
    cp -p "$policy" "$policy.imedge-saved"
fi
restore_policy() {
    if [ "$had_policy" -eq 1 ]; then
        mv -f "$policy.imedge-saved" "$policy"
    else
        rm -f "$policy"
    fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' > "$policy"
chmod +x "$policy"

apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
