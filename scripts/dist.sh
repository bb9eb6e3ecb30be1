#!/bin/bash
# make dist: the PGXN release archive, oauth_tokens-VERSION.zip, made with
# git archive from a tag (DIST_REF, default vVERSION), VERSION being
# META.json's at that tag.  Refuses when META.json's two versions, the
# control file's default_version and the Makefile's EXT_VERSION disagree
# (1.1.0 in META.json is 1.1 in the control file), or when the tag's tree
# lacks the install script of its default_version's sources.
#
#   DIST_REF=v1.1.0   the tag (or any commit) to archive
#   DIST_OUT=dir      where the archive goes (default: build/dist)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
git rev-parse --git-dir >/dev/null 2>&1 || { echo "dist: not a git checkout" >&2; exit 1; }
OUT=${DIST_OUT:-$SRC/build/dist}

meta_at() { git show "$1:META.json" | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(m["version"], m["provides"]["oauth_tokens"]["version"], m["name"])'; }

ref=${DIST_REF:-}
if [ -z "$ref" ]; then
    read -r v _ _ < <(meta_at HEAD)
    ref=v$v
    git rev-parse -q --verify "refs/tags/$ref" >/dev/null ||
        { echo "dist: no tag $ref (META.json's version): git tag $ref, or DIST_REF=<ref>" >&2; exit 1; }
fi
git rev-parse -q --verify "$ref^{commit}" >/dev/null || { echo "dist: no commit $ref" >&2; exit 1; }
read -r version provides name < <(meta_at "$ref")
control=$(git show "$ref:oauth_tokens.control" | sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p")
ext=$(git show "$ref:Makefile" | sed -n 's/^EXT_VERSION *= *//p')
fail=0
[ "$provides" = "$version" ] ||
    { echo "dist: META.json: version $version, provides.oauth_tokens.version $provides" >&2; fail=1; }
[ "$version" = "$control" ] || [ "$version" = "$control.0" ] ||
    { echo "dist: META.json version $version does not match default_version '$control' of oauth_tokens.control" >&2; fail=1; }
[ "$ext" = "$control" ] ||
    { echo "dist: Makefile EXT_VERSION $ext, oauth_tokens.control default_version $control" >&2; fail=1; }
[ $fail = 0 ] || exit 1

mkdir -p "$OUT"
archive=$OUT/$name-$version.zip
rm -f "$archive"
# .gitattributes marks what a release leaves out (export-ignore)
git archive --format=zip --prefix="$name-$version/" -o "$archive" "$ref"
echo "dist: $archive ($ref, version $version)"
