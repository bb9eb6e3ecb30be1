#!/bin/bash
# Install what building and testing oauth_tokens needs on Debian 12, as root.
# Installs only what is missing, so a prepared machine pays nothing.
set -euo pipefail

PKGS=(build-essential postgresql-15 postgresql-server-dev-15 postgresql-contrib
      libcurl4-openssl-dev postgresql-15-cron libipc-run-perl perl python3 openssl curl
      rsync ca-certificates prometheus-postgres-exporter)
# extra packages a caller needs on top (scripts/matrix.sh: mmdebstrap)
PKGS+=("$@")

find_missing() {
    missing=()
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
}
find_missing
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    # The matrix runs several majors at once and each may come here: one
    # installer at a time, and apt waits for a lock held by anyone else.
    exec 9>/var/lock/oauth_tokens_setup.lock
    flock 9
    find_missing
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
