#!/usr/bin/python3
"""oauth_tokens from a Python application (psycopg 3; Debian: python3-psycopg).

The three calls an application makes, each in a transaction bound to the
customer's workspace (oauth.bind_workspace):

  oauth.valid_token(workspace, connection)      a token that is valid now
  oauth.token_rejected(workspace, connection, token)
                                                the API answered 401 to it
  LISTEN oauth_connection_state + oauth.connection_event(id)
                                                a connection needs the customer
                                                to re-authorize

    python3 app.py call      get a token, call the API (one retry after a 401)
    python3 app.py listen    wait for state changes of the workspace's connections

Connection settings come from libpq's environment (PGHOST, PGPORT, PGUSER,
PGDATABASE, ...); the rest from OAUTH_WORKSPACE, OAUTH_CONNECTION (a
connection id) and API_URL (the URL to GET with the token).  LISTEN_SECONDS
(default 60) bounds `listen`.  The role needs only the application grants of
the README ("Grants").  Tokens are never printed.
"""
import os
import select
import sys
import time
import urllib.error
import urllib.request

import psycopg

WORKSPACE = os.environ["OAUTH_WORKSPACE"]
CONNECTION = os.environ.get("OAUTH_CONNECTION", "")


def valid_token(db):
    """A token valid now: usually an index probe; a refresh when it is due."""
    with db.transaction():
        db.execute("SELECT oauth.bind_workspace(%s)", (WORKSPACE,))
        return db.execute("SELECT oauth.valid_token(%s, %s)",
                          (WORKSPACE, CONNECTION)).fetchone()[0]


def token_rejected(db, token):
    """The API said 401: that token is never served again, and the
    connection is refreshed now."""
    with db.transaction():
        db.execute("SELECT oauth.bind_workspace(%s)", (WORKSPACE,))
        db.execute("SELECT oauth.token_rejected(%s, %s, %s)", (WORKSPACE, CONNECTION, token))


def get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def call(db, url):
    token = valid_token(db)
    status, body = get(url, token)
    if status == 401:
        # revoked at the provider, or expired early: report it, retry once
        print(f"GET {url} -> 401: reported with token_rejected, retrying once")
        token_rejected(db, token)
        status, body = get(url, valid_token(db))
        print(f"GET {url} -> {status} after the retry: {body}")
    else:
        print(f"GET {url} -> {status}: {body}")
    return 0 if status == 200 else 1


def listen(db, seconds):
    """LISTEN needs no privilege; the payload is a bare event id, which
    oauth.connection_event resolves only for the workspace we bind."""
    db.autocommit = True
    db.execute("LISTEN oauth_connection_state")
    ids = []
    db.add_notify_handler(lambda n: ids.append(int(n.payload)))
    print("listening on oauth_connection_state", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not select.select([db.fileno()], [], [], deadline - time.monotonic())[0]:
            break
        db.execute("SELECT 1")      # reads what arrived; the handler collects it
        while ids:
            event_id = ids.pop(0)
            with db.transaction():
                db.execute("SELECT oauth.bind_workspace(%s)", (WORKSPACE,))
                row = db.execute("SELECT connection_id, state, error"
                                 "  FROM oauth.connection_event(%s)", (event_id,)).fetchone()
            if row is None:
                continue            # another workspace's, or not a state change
            connection_id, state, error = row
            if state == "reauth_required":
                print(f"connection {connection_id} needs re-authorization ({error}): "
                      "send the customer through the consent screen again", flush=True)
                return 0
            print(f"connection {connection_id} is {state} now", flush=True)
    print("no connection needed re-authorization", flush=True)
    return 1


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "call"
    with psycopg.connect("", application_name="oauth_tokens example (python)") as db:
        if what == "call":
            return call(db, os.environ["API_URL"])
        if what == "listen":
            return listen(db, float(os.environ.get("LISTEN_SECONDS", "60")))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
