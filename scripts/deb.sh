#!/bin/bash
# make deb: the Debian packages, postgresql-NN-oauth-tokens for each major in
# debian/pgversions that this machine's PostgreSQL packaging supports (on
# Debian 12: 15), built with pg_buildext from a copy of the tree, then checked
# with lintian.  Installs the build dependencies when missing (as root).
#
#   DEB_OUT=dir       where the .deb files go (default: build/deb in the tree)
#   DEB_BUILD_OPTIONS=nocheck   skip the build-time pg_regress run
#
# Exits non-zero when the build fails or lintian reports a warning or error.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
OUT=${DEB_OUT:-$SRC/build/deb}

# build dependencies (debian/control.in) and lintian
bash scripts/setup.sh debhelper postgresql-all libcurl4-openssl-dev libssl-dev lintian dpkg-dev fakeroot

version=$(dpkg-parsechangelog -l debian/changelog -S Version)
upstream=${version%-*}
meta=$(python3 -c 'import json; print(json.load(open("META.json"))["version"])')
[ "$upstream" = "$meta" ] ||
    { echo "deb: debian/changelog says $upstream, META.json $meta" >&2; exit 1; }

WORK=$(mktemp -d /tmp/oauth_tokens_deb.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TREE=$WORK/oauth-tokens-$upstream
mkdir -p "$TREE"
# the tree as it is, less .git and what .gitignore names (build products)
rsync -a --exclude .git --exclude /build --filter=':- .gitignore' "$SRC"/ "$TREE"/
make -s -C "$TREE" clean >/dev/null 2>&1 || true
if [ "$(id -u)" -eq 0 ]; then
    # the build-time test starts a server, which root cannot run
    chown -R postgres: "$WORK"
    BUILD=(runuser -u postgres --)
else
    BUILD=()
fi
echo "== dpkg-buildpackage $version =="
(cd "$TREE" && "${BUILD[@]}" env DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-}" \
    dpkg-buildpackage -b -us -uc)
changes=$(ls "$WORK"/oauth-tokens_"$version"_*.changes)
echo "== lintian =="
# initial-upload-closes-no-bugs: the first Debian upload of a package closes
# its ITP bug; these packages are built from the upstream tree, not uploaded
# to Debian, so there is no bug to close
lintian --fail-on warning,error --info --suppress-tags initial-upload-closes-no-bugs "$changes"
mkdir -p "$OUT"
cp "$WORK"/*.deb "$OUT"/
ls -l "$OUT"/*.deb
