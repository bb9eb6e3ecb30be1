#!/bin/bash
# Install what building and testing oauth_tokens needs on Debian 12, as root.
# Installs only what is missing, so a prepared machine pays nothing.
set -euo pipefail

PKGS=(build-essential postgresql-15 postgresql-server-dev-15 postgresql-contrib
      libcurl4-openssl-dev postgresql-15-cron libipc-run-perl perl python3 openssl curl
      rsync ca-certificates)
# extra packages a caller needs on top (scripts/matrix.sh: mmdebstrap)
PKGS+=("$@")

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
