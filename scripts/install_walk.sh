#!/bin/bash
# The README's "Installing into your own PostgreSQL", run as written: from
# "### Step by step on Debian" on, every ```sh block of that section in
# order, in one shell, as root, with the
# ```sql block under "### Grants" run as postgres in the database app (as the
# README says to), then:
#   - the first valid_token (the sh blocks ask for it as app) was at-g1-1;
#   - a pg_cron sweep: a connection made due is refreshed by the scheduled
#     oauth.refresh_due() (event trigger refresh_due);
#   - the runbook's SQL block (Operations), as oauth_admin, for that
#     connection: its query 4 sees the traffic on and one worker;
#   - after the key ring was moved, a new session still decrypts.
# Runs inside scripts/ci.d/40-deb.sh's root filesystem (package installed,
# no compiler), in a directory holding README.md, test/provider.py and the
# .deb; with another cluster already on 5432 (several clusters), made here.
# Debian only; needs root.  Prints the transcript; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")"
[ -f README.md ] || { echo "install_walk: run it next to README.md (and docs/)" >&2; exit 2; }
W=$(mktemp -d /tmp/install_walk.XXXXXX)
chmod 755 "$W"

# another cluster first: the walk's own then is not on 5432
pg_createcluster 15 other --start >/dev/null
echo "== clusters before the walk =="
pg_lsclusters

python3 - "$W/walk.sh" "$W/runbook.sql" <<'PY'
import glob, re, sys
out, runbook = sys.argv[1:3]
# the README, and the docs/ pages it links to (where the sections may live)
pages = {p: open(p).read() for p in ["README.md"] + sorted(glob.glob("docs/*.md"))}
def page_with(heading):
    return next(t for t in pages.values() if re.search("^" + re.escape(heading) + "$", t, re.M))
text = page_with("## Installing into your own PostgreSQL")
# from "### Step by step on Debian" (above it: package or source, alternatives)
sec = re.search(r"^## Installing into your own PostgreSQL\n.*?(^### Step by step on Debian\n.*?)(?=^## |\Z)",
                text, re.S | re.M).group(1)
parts = ["set -euo pipefail\n"]
heading = None
n = 0
for m in re.finditer(r"^(###? [^\n]*)$|^```(\w+)\n(.*?)^```$", sec, re.S | re.M):
    if m.group(1):
        heading = m.group(1)
        continue
    lang, body = m.group(2), m.group(3)
    if lang == "sh":
        n += 1
        parts.append(f"echo '== {heading}: sh block {n} =='\n" + body)
    elif lang == "sql" and heading == "### Grants":
        parts.append("echo '== ### Grants: the SQL block, as postgres in app =='\n"
                     "sudo -u postgres psql --cluster 15/main -d app -v ON_ERROR_STOP=1 <<'WALK_SQL'\n"
                     + body + "WALK_SQL\n")
# what the walk made, for the checks
parts.append('declare -p ID PORT KEYS OLD > "$(dirname "$0")/vars"\n')
open(out, "w").write("\n".join(parts))
rb = re.search(r"^### Runbook.*?^```sql\n(.*?)^```", page_with("## Operations"), re.S | re.M).group(1)
open(runbook, "w").write(rb)
print(f"walk: {n} sh blocks and the Grants block")
PY

echo "== the walk =="
# apt-get install of what is installed already (the package, pg_cron) needs
# no network; a fresh cluster needs none either
bash -x "$W/walk.sh" 2>&1 | tee "$W/walk.log"
source "$W/vars"
fail=0
grep -qx 'at-g1-1' "$W/walk.log" ||
    { echo "FAIL: the first valid_token was not at-g1-1"; fail=1; }
[ "$PORT" != 5432 ] || { echo "FAIL: the walk's cluster is on 5432"; fail=1; }

admin() { PGPASSWORD=change-me-too psql -h localhost -p "$PORT" -U oauth_admin -d app -X -At -v ON_ERROR_STOP=1 "$@"; }
super() { sudo -u postgres psql --cluster 15/main -d app -X -At -v ON_ERROR_STOP=1 "$@"; }

echo "== a pg_cron sweep =="
DUE=$(admin -c "SELECT oauth.create_connection('acme', 'acme', 'customer-2', 'at-due', 'g2.0',
                                               now() + interval '1 minute')")
ok=0
for _ in $(seq 100); do
    n=$(super -c "SELECT count(*) FROM oauth.events WHERE event = 'refreshed'
                   AND connection_id = '$DUE' AND detail->>'trigger' = 'refresh_due'")
    [ "$n" = 1 ] && { ok=1; break; }
    sleep 1
done
super -c "SELECT jobid, status, return_message FROM cron.job_run_details ORDER BY runid DESC LIMIT 3"
[ $ok = 1 ] && echo "ok: pg_cron's refresh_due() refreshed the due connection" ||
    { echo "FAIL: no refresh_due refresh of the due connection in 100 s"; fail=1; }

echo "== the runbook, as oauth_admin =="
sed "s/4f1c\.\.\./$ID/g" "$W/runbook.sql" > "$W/runbook.run.sql"
admin -f "$W/runbook.run.sql" | tee "$W/runbook.out"
[ "$(tail -1 "$W/runbook.out")" = "on|f|1" ] ||
    { echo "FAIL: runbook query 4 as oauth_admin: want on|f|1 (traffic on, primary, one worker)"; fail=1; }
grep -q "^active|" "$W/runbook.out" || { echo "FAIL: runbook query 1 shows no active connection"; fail=1; }

echo "== the moved key ring =="
[ ! -e "$OLD" ] && [ -f "$KEYS" ] || { echo "FAIL: the ring was not moved"; fail=1; }
t=$(PGPASSWORD=change-me psql -h localhost -p "$PORT" -U app -d app -X -At -v ON_ERROR_STOP=1 \
    -c "BEGIN" -c "SELECT oauth.bind_workspace('acme')" \
    -c "SELECT oauth.valid_token('acme', '$DUE')" -c "COMMIT" 2>&1 | grep '^at-' || true)
[ "$t" = at-g2-1 ] && echo "ok: a new session decrypts with the moved ring ($t)" ||
    { echo "FAIL: after the move, valid_token gave '$t'"; fail=1; }

# (the test provider the README started ends with the root filesystem's run)
pg_ctlcluster 15 main stop || true
pg_ctlcluster 15 other stop || true
[ $fail = 0 ] && echo "install walk: passed" || echo "install walk: FAILED"
exit $fail
