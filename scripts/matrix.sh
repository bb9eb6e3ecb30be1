#!/bin/bash
# The PostgreSQL version matrix: `make test PG=NN` and `make test-all`.
#
#   scripts/matrix.sh 17          the whole suite against PostgreSQL 17
#   scripts/matrix.sh 15 17 18    several, at once (MATRIX_JOBS=1: one after
#                                 another); `all` means 15 17 18
#
# 15 is this machine's own PostgreSQL (Debian 12): it runs natively, exactly as
# `make test` does (and honours PG_CONFIG).  Every other major runs in a Debian
# root filesystem that ships it (17: trixie, 18: sid), made with mmdebstrap
# from the Debian archive this machine's apt sources already name (no package
# host is written here) and cached outside the tree in
# $OAUTH_ROOTFS_CACHE (default /var/cache/oauth_tokens)/rootfs-NN.  A cached
# root filesystem is rebuilt when its recipe (suite, archive, package list)
# changes, or when OAUTH_ROOTFS_REBUILD=1.
#
# Each run mounts a throw-away overlay on the cached root filesystem (a copy
# when overlayfs is unavailable), bind-mounts /proc, /dev and /dev/shm, copies
# the tree in without build products, and runs
#   make test PG_CONFIG=/usr/lib/postgresql/NN/bin/pg_config
# inside, as root; scripts/test.sh then runs the tests as the root
# filesystem's postgres user.  PROVE_TESTS and REGRESS narrow the run as they
# do for `make test`.  Everything mounted is unmounted on every exit path
# (and what a run killed with SIGKILL left is cleaned up by the next run).
#
# Needs root.  Exits non-zero when any major fails; every requested major is
# run even after a failure, and a summary line says how each one went.
set -euo pipefail
shopt -s inherit_errexit
# sourced by scripts/ci.d/40-deb.sh for its root filesystem functions: then
# main does not run (see the last line)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SRC=$(pwd)
CACHE=${OAUTH_ROOTFS_CACHE:-/var/cache/oauth_tokens}
NATIVE_MAJOR=15
# every major must build without a warning (see WERROR in the Makefile)
export WERROR=1

# Debian suite that ships each PostgreSQL major (16 is in none of them)
suite_for() {
    case "$1" in
        17) echo trixie ;;
        18) echo sid ;;
        *) return 1 ;;
    esac
}

# What the suite needs beyond the essential set: keep in step with setup.sh
packages_for() {
    echo "postgresql-$1 postgresql-server-dev-$1 postgresql-$1-cron postgresql-common" \
         "libcurl4-openssl-dev build-essential libipc-run-perl perl python3 openssl" \
         "curl rsync ca-certificates"
}

# The Debian archive this machine installs from: the first enabled apt source
# (deb822 .sources or one-line .list) that carries this release's own suite.
debian_mirror() {
    local codename f m=
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || { echo "matrix: cannot tell this machine's Debian release" >&2; return 1; }
    # deb822 files: paragraphs of fields; one-line files: "deb [opts] URI suite ..."
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        m=$(awk -v want="$codename" '
            function flush() {
                if (!found && uris != "" && enabled && types ~ /(^|[ \t])deb([ \t]|$)/) {
                    n = split(suites, s, /[ \t]+/)
                    for (i = 1; i <= n; i++)
                        if (s[i] == want) { split(uris, u, /[ \t]+/); print u[1]; found = 1 }
                }
                uris = ""; suites = ""; types = ""; enabled = 1
            }
            BEGIN { enabled = 1 }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            tolower($1) == "uris:"    { $1 = ""; uris = $0; sub(/^[ \t]+/, "", uris) }
            tolower($1) == "suites:"  { $1 = ""; suites = $0; sub(/^[ \t]+/, "", suites) }
            tolower($1) == "types:"   { $1 = ""; types = $0 }
            tolower($1) == "enabled:" { enabled = (tolower($2) != "no") }
            END { flush() }
        ' "$f")
        [ -n "$m" ] && break
    done
    if [ -z "$m" ]; then
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            m=$(awk -v want="$codename" '
                $1 == "deb" && !found {
                    i = 2
                    if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == want) { print $i; found = 1 }
                }
            ' "$f")
            [ -n "$m" ] && break
        done
    fi
    [ -n "$m" ] || { echo "matrix: no apt source for '$codename' in /etc/apt" >&2; return 1; }
    echo "${m%/}"
}

# Make (or reuse) the cached root filesystem for major $1; prints its path.
# Called with the major's lock held exclusively.  ROOTFS_NAME, ROOTFS_SUITE
# and ROOTFS_PACKAGES make another one (40-deb.sh: a Debian 12 root with
# PostgreSQL but no compiler), ROOTFS_MIRRORS its mmdebstrap MIRROR arguments
# (words: URIs or sources files; default: debian_mirror).
ensure_rootfs() {
    local major=$1 suite mirror pkgs recipe root=$CACHE/${ROOTFS_NAME:-rootfs-$1}
    suite=${ROOTFS_SUITE:-$(suite_for "$major")}
    mirror=${ROOTFS_MIRRORS:-$(debian_mirror)}
    pkgs=${ROOTFS_PACKAGES:-$(packages_for "$major")}
    # sid's Release file may be older than its Valid-Until on a frozen mirror
    local aptopt='Acquire::Check-Valid-Until "false"'
    recipe="recipe=1 suite=$suite mirror=$mirror variant=apt aptopt=$aptopt packages=$pkgs"
    if [ "${OAUTH_ROOTFS_REBUILD:-0}" != 1 ] && [ -f "$root/.oauth_tokens_rootfs" ] &&
       [ "$(cat "$root/.oauth_tokens_rootfs")" = "$recipe" ]; then
        echo "$root"
        return
    fi
    command -v mmdebstrap >/dev/null || bash scripts/setup.sh mmdebstrap >&2
    echo "== making the PostgreSQL $major root filesystem ($suite) in $root ==" >&2
    rm -rf "$root.new"
    # no cluster of its own: the tests make theirs
    mmdebstrap --quiet --variant=apt --aptopt="$aptopt" \
        --include="$(echo $pkgs | tr ' ' ',')" \
        --essential-hook='mkdir -p "$1/etc/postgresql-common/createcluster.d" &&
            echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/oauth_tokens.conf"' \
        "$suite" "$root.new" $mirror >&2
    [ -x "$root.new/usr/lib/postgresql/$major/bin/postgres" ] ||
        { echo "matrix: $suite gave no PostgreSQL $major" >&2; return 1; }
    echo "$recipe" > "$root.new/.oauth_tokens_rootfs"
    rm -rf "$root"
    mv "$root.new" "$root"
    echo "$root"
}

# The run in progress (a directory under $CACHE), for cleanup
RUN_DIR=

# End what still runs inside run directory $1's root, unmount everything
# mounted below it (deepest first), then delete it.
cleanup_dir() {
    local dir=$1 r=$1/root p m
    local pids=()
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$r" ] && pids+=("${p#/proc/}")
    done
    if [ ${#pids[@]} -gt 0 ]; then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "${pids[@]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    for m in $(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" || true
    done
    # never delete through a mount that is still there
    if awk -v d="$dir/" 'index($5, d) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        echo "matrix: $dir is still mounted; left in place" >&2
    else
        rm -rf --one-file-system "$dir"
    fi
}

cleanup_run() {
    [ -n "$RUN_DIR" ] && cleanup_dir "$RUN_DIR"
    RUN_DIR=
}
trap cleanup_run EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run the suite against major $1 in its root filesystem.
run_rootfs() {
    local major=$1 lock root r
    mkdir -p "$CACHE"
    exec {lock}>"$CACHE/rootfs-$major.lock"
    flock -x "$lock"
    # what a run killed outright left behind: nobody holds its owner lock
    local old
    for old in "$CACHE"/run-"$major".*; do
        [ -d "$old" ] || continue
        flock -n "$old/owner" true && cleanup_dir "$old"
    done
    root=$(ensure_rootfs "$major")
    flock -s "$lock"            # runs share the cached root; a rebuild waits

    RUN_DIR=$(mktemp -d "$CACHE/run-$major.XXXXXX")
    local own
    exec {own}>"$RUN_DIR/owner"
    flock -x "$own"
    r=$RUN_DIR/root
    mkdir -p "$RUN_DIR/upper" "$RUN_DIR/work" "$r"
    if ! mount -t overlay overlay \
        -o "lowerdir=$root,upperdir=$RUN_DIR/upper,workdir=$RUN_DIR/work" "$r" 2>/dev/null; then
        cp -a "$root/." "$r/"
    fi
    local d
    for d in /proc /dev /dev/shm; do
        mkdir -p "$r$d"
        mount --bind "$d" "$r$d"
    done

    # the tree as it is, less .git and what .gitignore names (build products)
    mkdir -p "$r/build/oauth_tokens"
    rsync -a --exclude .git --filter=':- .gitignore' "$SRC"/ "$r/build/oauth_tokens"/

    local args=("PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config")
    [ -n "${PROVE_TESTS:-}" ] && args+=("PROVE_TESTS=$PROVE_TESTS")
    [ -n "${REGRESS:-}" ] && args+=("REGRESS=$REGRESS")
    local status=0 child
    # in the background, so that a signal is handled at once (see the traps);
    # without the locks, which what a killed run leaves must not hold
    chroot "$r" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 CI="${CI:-}" WERROR=1 \
        make -C /build/oauth_tokens test "${args[@]}" {lock}>&- {own}>&- &
    child=$!
    wait "$child" || status=$?
    if [ $status -ne 0 ]; then
        # the root goes with the run: keep the failed run's logs on the host
        local keep w
        keep=$(mktemp -d "/tmp/oauth_tokens_pg$major.failed.XXXXXX")
        for w in "$r"/tmp/oauth_tokens_test.*; do
            [ -d "$w" ] && rsync -a --prune-empty-dirs --include='*/' --include='*.log' \
                --include='regress_log_*' --include='regression.*' --exclude='*' "$w"/ "$keep"/
        done
        echo "matrix: PostgreSQL $major failed; its logs are in $keep"
    fi
    cleanup_run
    exec {lock}>&- {own}>&-
    return $status
}

# Run the suite against one major, in the foreground.
run_major() {
    local major=$1
    if [ "$major" = $NATIVE_MAJOR ]; then
        bash scripts/test.sh
    elif suite_for "$major" >/dev/null; then
        # its own process, so that errexit and the exit trap work inside
        bash "$SRC/scripts/matrix.sh" __rootfs "$major"
    else
        echo "matrix: PostgreSQL $major is not in any Debian suite this script knows" >&2
        return 2
    fi
}

# Signal process $1 and everything below it, children first.
kill_tree() {
    kill_below "$1"
    kill -TERM "$1" 2>/dev/null || true
}

# Signal everything below process $1, which then sees its children end.
kill_below() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        kill_tree "$c"
    done
}

main() {
    # one major in its root filesystem, in a process of its own
    if [ "${1:-}" = __rootfs ]; then
        run_rootfs "$2"
        return
    fi

    [ $# -gt 0 ] || { echo "usage: $0 MAJOR... | all" >&2; exit 2; }
    [ "$*" = all ] && set -- $NATIVE_MAJOR 17 18
    [ "$(id -u)" -eq 0 ] || [ "$*" = $NATIVE_MAJOR ] ||
        { echo "matrix: root filesystems need root" >&2; exit 1; }

    # Several majors run at once, each into a log shown when all have ended:
    # their tests mostly wait (on timers, on clusters starting), so on two
    # cores three at once take little longer than one.  MATRIX_JOBS=1 runs
    # them one after another, with their output as it comes.
    local parallel=1 logs major
    if [ $# -eq 1 ] || [ "${MATRIX_JOBS:-}" = 1 ]; then
        parallel=0
    fi
    logs=$(mktemp -d /tmp/oauth_tokens_matrix.XXXXXX)
    PIDS=()
    declare -gA MAJOR_OF=()
    # a signal to the matrix goes on to every major being run; a root
    # filesystem's run cleans up after itself before its wrapper ends
    trap 'for p in "${PIDS[@]}"; do kill_below "$p"; done; wait; rm -rf "$logs"; exit 130' INT
    trap 'for p in "${PIDS[@]}"; do kill_below "$p"; done; wait; rm -rf "$logs"; exit 143' TERM
    for major in "$@"; do
        # in the background even one at a time, so that a signal is seen at once
        if [ $parallel = 1 ]; then
            echo "==== PostgreSQL $major: started ===="
            exec {out}>"$logs/pg$major.log"
        else
            echo "==== PostgreSQL $major ===="
            exec {out}>&1
        fi
        (
            t0=$(date +%s)
            run_major "$major" >&$out 2>&1 && rc=0 || rc=$?
            echo "$rc $(($(date +%s) - t0))" > "$logs/pg$major.end"
        ) &
        PIDS+=($!)
        MAJOR_OF[$!]=$major
        exec {out}>&-
        [ $parallel = 1 ] || wait $! || true
    done
    # say when each ends, as it ends
    local left=("${PIDS[@]}") done_pid st p
    while [ $parallel = 1 ] && [ ${#left[@]} -gt 0 ]; do
        done_pid=
        wait -n -p done_pid "${left[@]}" || true
        [ -n "$done_pid" ] || break
        for p in "${!left[@]}"; do
            [ "${left[p]}" = "$done_pid" ] && unset 'left[p]'
        done
        left=("${left[@]}")
        read -r st _ < "$logs/pg${MAJOR_OF[$done_pid]}.end" 2>/dev/null || st=1
        echo "==== PostgreSQL ${MAJOR_OF[$done_pid]}: $([ "$st" = 0 ] && echo passed || echo FAILED) ===="
    done
    wait || true

    local summary=() failed=0 rc secs what
    for major in "$@"; do
        read -r rc secs < "$logs/pg$major.end" || { rc=1; secs=?; }
        if [ $parallel = 1 ]; then
            echo "==== PostgreSQL $major: its output ===="
            cat "$logs/pg$major.log"
        fi
        [ "$rc" -eq 0 ] && what=passed || { what="FAILED ($rc)"; failed=1; }
        summary+=("PostgreSQL $major: $what in $secs s")
    done
    rm -rf "$logs"
    echo "==== matrix ===="
    printf '%s\n' "${summary[@]}"
    return $failed
}

# parsed whole before it runs, so that editing this file mid-run is harmless;
# sourced, it only defines its functions
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; exit; fi
