// oauth_tokens from a Node.js application (node-postgres, `npm install` here).
//
// The three calls an application makes, each in a transaction bound to the
// customer's workspace (oauth.bind_workspace):
//
//   oauth.valid_token(workspace, connection)      a token that is valid now
//   oauth.token_rejected(workspace, connection, token)
//                                                 the API answered 401 to it
//   LISTEN oauth_connection_state + oauth.connection_event(id)
//                                                 a connection needs the
//                                                 customer to re-authorize
//
//   node app.js call      get a token, call the API (one retry after a 401)
//   node app.js listen    wait for state changes of the workspace's connections
//
// Connection settings come from libpq's environment (PGHOST, PGPORT, PGUSER,
// PGDATABASE); the rest from OAUTH_WORKSPACE, OAUTH_CONNECTION (a connection
// id) and API_URL (the URL to GET with the token).  LISTEN_SECONDS (default
// 60) bounds `listen`.  The role needs only the application grants of the
// README ("Grants").  Tokens are never printed.
'use strict';
const { Client } = require('pg');

const WORKSPACE = process.env.OAUTH_WORKSPACE;
const CONNECTION = process.env.OAUTH_CONNECTION;

// Run fn(db) in a transaction bound to the workspace.
async function bound(db, fn) {
  await db.query('BEGIN');
  try {
    await db.query('SELECT oauth.bind_workspace($1)', [WORKSPACE]);
    const result = await fn();
    await db.query('COMMIT');
    return result;
  } catch (e) {
    await db.query('ROLLBACK');
    throw e;
  }
}

// A token valid now: usually an index probe; a refresh when it is due.
function validToken(db) {
  return bound(db, async () =>
    (await db.query('SELECT oauth.valid_token($1, $2) AS t', [WORKSPACE, CONNECTION])).rows[0].t);
}

// The API said 401: that token is never served again, and the connection is
// refreshed now.
function tokenRejected(db, token) {
  return bound(db, () =>
    db.query('SELECT oauth.token_rejected($1, $2, $3)', [WORKSPACE, CONNECTION, token]));
}

async function get(url, token) {
  const r = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
  return [r.status, await r.text()];
}

async function call(db, url) {
  const token = await validToken(db);
  let [status, body] = await get(url, token);
  if (status === 401) {
    // revoked at the provider, or expired early: report it, retry once
    console.log(`GET ${url} -> 401: reported with token_rejected, retrying once`);
    await tokenRejected(db, token);
    [status, body] = await get(url, await validToken(db));
    console.log(`GET ${url} -> ${status} after the retry: ${body}`);
  } else {
    console.log(`GET ${url} -> ${status}: ${body}`);
  }
  return status === 200 ? 0 : 1;
}

// LISTEN needs no privilege; the payload is a bare event id, which
// oauth.connection_event resolves only for the workspace we bind.
async function listen(db, seconds) {
  const ids = [];
  let wake = null;
  db.on('notification', (n) => {
    ids.push(Number(n.payload));
    if (wake) wake();
  });
  await db.query('LISTEN oauth_connection_state');
  console.log('listening on oauth_connection_state');
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (ids.length === 0) {
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, deadline - Date.now());
      });
      wake = null;
    }
    while (ids.length > 0) {
      const eventId = ids.shift();
      const row = await bound(db, async () => (await db.query(
        'SELECT connection_id, state, error FROM oauth.connection_event($1)', [eventId])).rows[0]);
      if (!row) continue;   // another workspace's, or not a state change
      if (row.state === 'reauth_required') {
        console.log(`connection ${row.connection_id} needs re-authorization (${row.error}): ` +
                    'send the customer through the consent screen again');
        return 0;
      }
      console.log(`connection ${row.connection_id} is ${row.state} now`);
    }
  }
  console.log('no connection needed re-authorization');
  return 1;
}

async function main() {
  const what = process.argv[2] || 'call';
  const db = new Client({ application_name: 'oauth_tokens example (node)' });
  await db.connect();
  try {
    if (what === 'call') return await call(db, process.env.API_URL);
    if (what === 'listen') return await listen(db, Number(process.env.LISTEN_SECONDS || 60));
    console.error('usage: node app.js call | listen');
    return 2;
  } finally {
    await db.end();
  }
}

main().then((code) => process.exit(code), (e) => { console.error(e.message); process.exit(1); });
