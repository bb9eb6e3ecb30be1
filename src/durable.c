/*-------------------------------------------------------------------------
 *
 * durable.c
 *	  No answer thrown away: a provider's answer with tokens is made durable
 *	  before it is applied; answers that never came; one tenant's rejection.
 *
 * Rules:
 *	- Record first.  An answer with tokens is inserted into
 *	  oauth.pending_answers (the whole answer sealed with the connection's
 *	  binding, context connection/<id>/pending) in a short transaction of its
 *	  own that takes no lock on the connection: nothing a session holds can
 *	  delay it.  Then finish_job() applies it and deletes the row in the same
 *	  subtransaction, so the answer is either applied or still recorded.
 *	  Whatever stops the apply (a locked row, a serialization failure, the
 *	  key file, a constraint or trigger, an ERROR that ends the worker,
 *	  SIGTERM, a crash) leaves the row; the worker applies it again later,
 *	  and at start-up it replays every row left (answers_replay).  While an
 *	  answer of a connection is kept, no new refresh of it starts.
 *	  The window that remains is answer received -> record committed (the
 *	  "durable_us" of the refreshed event; README, "The commit window").
 *	- Answers that never came.  A request that was sent and not answered
 *	  (HTTP_NO_ANSWER) may have spent the refresh token.  The worker keeps a
 *	  sent request open up to oauth.answer_timeout; its callers are told
 *	  after oauth.http_timeout (answers_release_waiters) and get a transient
 *	  outcome, while the call goes on and no second request for that
 *	  connection starts.  When no answer comes, the request is sent again at
 *	  once with the same refresh token if the provider's rotation_grace
 *	  still covers it (answers_retry_lost); a dead-grant answer to that
 *	  retry, or to the next attempt after an unanswered one, is reported as
 *	  "answer_lost: <code>", not as a revoked grant (finish_job).
 *	- Tenants.  invalid_client, unauthorized_client or a 401 from a token URL
 *	  filled from the connection's metadata (any placeholder, host or path)
 *	  fails that connection only ("tenant_rejected: <code>",
 *	  reauth_required).  Such answers never count toward pausing the
 *	  provider, however many workspaces get them: the metadata, and so the
 *	  endpoint that answers, is the tenant's to choose, and no tenant may
 *	  stop the provider for the others.  Only an untemplated URL pauses it.
 *
 * Everything here runs in the worker, between its batches or inside them
 * as the comments say.  On a 1.0 schema (the new library before ALTER
 * EXTENSION UPDATE) answers are kept in memory only, as 1.0 kept them; the
 * worker notices the update within a second (answers_check_schema).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "crypto.h"
#include "http.h"
#include "oauth_tokens.h"
#include "provider.h"
#include "store.h"
#include "worker.h"

#define LOST_RESENDS_MAX 3		/* the worker's own at-once re-sends per job */

static SPIPlanPtr plan_record = NULL;
static SPIPlanPtr plan_forget = NULL;

/*
 * Does the database have this version's schema (oauth.pending_answers)?  A
 * 1.0 schema, between the restart with the new library and ALTER EXTENSION
 * UPDATE, is served as 1.0 served it: answers are kept in memory only.
 */
bool		answers_durable_schema = false;

/*
 * Look at the schema again; true when it has just become this version's.
 * Its own transaction; outside any batch.
 */
bool
answers_check_schema(void)
{
	Oid			nsp;
	bool		was = answers_durable_schema;

	StartTransactionCommand();
	nsp = get_namespace_oid("oauth", true);
	answers_durable_schema = OidIsValid(nsp) &&
		OidIsValid(get_relname_relid("pending_answers", nsp));
	CommitTransactionCommand();
	return answers_durable_schema && !was;
}

static void
prepare_answer_plans(void)
{
	if (plan_forget)
		return;
	plan_record = prepare_saved(
		"INSERT INTO oauth.pending_answers "
		"  (connection_id, generation, seen_version, answer_ciphertext, received_at) "
		"VALUES ($1::pg_catalog.uuid, $2::pg_catalog.int8, $3::pg_catalog.int8, "
		"        $4::pg_catalog.bytea, $5::pg_catalog.timestamptz) "
		"RETURNING id",
		5, (Oid[]) {UUIDOID, INT8OID, INT8OID, BYTEAOID, TIMESTAMPTZOID});
	plan_forget = prepare_saved(
		"DELETE FROM oauth.pending_answers WHERE id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
		1, (Oid[]) {INT8OID});
}

/* ---- the answer as one sealed value ---------------------------------------- */

static void
add_str(StringInfo b, const char *key, const char *val)
{
	appendStringInfo(b, "%s\"%s\": ", b->len > 1 ? ", " : "", key);
	if (val)
		escape_json(b, val);
	else
		appendStringInfoString(b, "null");
}

/* The answer's fields as JSON text (palloc'd; holds tokens: wipe it). */
static char *
answer_to_json(const TokenAnswer *a)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfoChar(&b, '{');
	add_str(&b, "access_token", a->access_token);
	add_str(&b, "refresh_token", a->refresh_token);
	add_str(&b, "scope", a->scope);
	appendStringInfo(&b, ", \"expires_in\": %s",
					 a->has_expires_in ? psprintf(INT64_FORMAT, a->expires_in) : "null");
	appendStringInfo(&b, ", \"rt_expires_in\": %s",
					 a->has_rt_expires_in ? psprintf(INT64_FORMAT, a->rt_expires_in) : "null");
	appendStringInfo(&b, ", \"http_status\": %ld, \"metadata\": %s}",
					 a->http_status, a->metadata_json ? a->metadata_json : "{}");
	return b.data;
}

static JsonbValue *
field(Jsonb *j, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&j->root, JB_FOBJECT, &k);
}

static char *
field_str(Jsonb *j, const char *key)
{
	JsonbValue *v = field(j, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static bool
field_int(Jsonb *j, const char *key, int64 *out)
{
	JsonbValue *v = field(j, key);

	if (v == NULL || v->type != jbvNumeric)
		return false;
	*out = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
	return true;
}

/* Fill a from the JSON text of answer_to_json. */
static void
answer_from_json(char *json, TokenAnswer *a)
{
	Jsonb	   *j = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
	JsonbValue *m;
	int64		status = 200;

	memset(a, 0, sizeof(*a));
	a->klass = RO_REFRESHED;
	a->access_token = field_str(j, "access_token");
	a->refresh_token = field_str(j, "refresh_token");
	a->scope = field_str(j, "scope");
	a->has_expires_in = field_int(j, "expires_in", &a->expires_in);
	a->has_rt_expires_in = field_int(j, "rt_expires_in", &a->rt_expires_in);
	(void) field_int(j, "http_status", &status);
	a->http_status = (long) status;
	m = field(j, "metadata");
	if (m && m->type == jbvBinary)
		a->metadata_json = JsonbToCString(NULL, m->val.binary.data, m->val.binary.len);
	if (a->access_token == NULL)
		elog(ERROR, "a recorded answer has no access token");
	explicit_bzero(VARDATA(j), VARSIZE(j) - VARHDRSZ);
}

/* ---- record first ---------------------------------------------------------- */

/* Insert one job's answer; inside a subtransaction of the record batch. */
static void
record_one(Job *job)
{
	TokenAnswer *a = &job->ans;
	MemoryContext old = MemoryContextSwitchTo(job->cxt);
	char	   *json;
	Datum		v[5];
	bool		isnull;

	if (job->client_credentials && a->refresh_token)
	{
		/* never stored for this grant: renewal uses the client's credentials */
		explicit_bzero(a->refresh_token, strlen(a->refresh_token));
		a->refresh_token = NULL;
	}
	json = answer_to_json(a);
	v[0] = UUIDPGetDatum(&job->id);
	v[1] = Int64GetDatum((int64) job->gen);
	v[2] = Int64GetDatum(job->seen_version);
	v[3] = PointerGetDatum(oauth_seal(json, strlen(json),
									  oauth_conn_context(job->idstr, "pending")));
	explicit_bzero(json, strlen(json));
	v[4] = TimestampTzGetDatum(job->answered_at ? job->answered_at : GetCurrentTimestamp());
	if (exec_plan(plan_record, v, NULL, false, 0) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not record an answer");
	job->pending_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
	MemoryContextSwitchTo(old);
}

/*
 * Make the answers with tokens among jobs durable: one short transaction,
 * no lock on any connection.  An answer that cannot be recorded (the key
 * file unreadable, say) stays in memory and is recorded on the next try.
 * Outside any batch.
 */
void
answers_record(List *jobs)
{
	ListCell   *lc;
	bool		any = false;

	foreach(lc, jobs)
	{
		Job		   *job = lfirst(lc);

		if (job->ans.klass == RO_REFRESHED && job->pending_id == 0)
			any = true;
	}
	if (!any || !answers_durable_schema)
		return;
	begin_work("oauth_tokens: recording answers");
	prepare_answer_plans();
	foreach(lc, jobs)
	{
		Job		   *job = lfirst(lc);
		bool		failed;
		char	   *err;

		if (job->ans.klass != RO_REFRESHED || job->pending_id != 0)
			continue;
		run_isolated(job, record_one, &failed, &err, NULL);
		if (failed)
		{
			job->pending_id = 0;
			ereport(WARNING,
					(errmsg("oauth_tokens: could not record an answer, keeping it in memory: %s", err)));
		}
	}
	end_work();
	foreach(lc, jobs)
	{
		Job		   *job = lfirst(lc);

		if (job->pending_id != 0 && job->durable_us == 0 && job->answered_at != 0)
			job->durable_us = Max(1, GetCurrentTimestamp() - job->answered_at);
	}
}

/*
 * The answer was applied (or superseded): delete its record.  Inside the
 * subtransaction that applied it, so both happen or neither.
 */
void
answers_forget(Job *job)
{
	Datum		v;

	if (job->pending_id == 0)
		return;
	prepare_answer_plans();
	v = Int64GetDatum(job->pending_id);
	if (exec_plan(plan_forget, &v, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete a recorded answer");
}

static bytea *replay_ct;

/* Decrypt a recorded answer into job->ans; in a subtransaction. */
static void
open_recorded(Job *job)
{
	char	   *json = oauth_open(replay_ct, oauth_conn_context(job->idstr, "pending"));

	answer_from_json(json, &job->ans);
	explicit_bzero(json, strlen(json));
}

/*
 * At start-up: every answer left in oauth.pending_answers becomes a kept
 * job, applied by jobs_retry_writes() before any new refresh of its
 * connection starts.  Its own transaction.
 */
void
answers_replay(void)
{
	int			n = 0;
	int			bad = 0;
	MemoryContext caller = CurrentMemoryContext;

	if (!answers_durable_schema)
		return;
	begin_work("oauth_tokens: replaying recorded answers");
	prepare_answer_plans();
	if (SPI_execute("SELECT pa.id, pa.connection_id, pa.generation, pa.seen_version, "
					"       pa.answer_ciphertext, pa.received_at, c.workspace_id, c.provider, "
					"       c.grant_type OPERATOR(pg_catalog.=) 'client_credentials'::pg_catalog.text "
					"  FROM oauth.pending_answers pa "
					"  LEFT JOIN oauth.connections c ON c.id OPERATOR(pg_catalog.=) pa.connection_id "
					" ORDER BY pa.id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read recorded answers");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		RefreshEntry e;
		Job		   *job;
		pg_uuid_t	id = *DatumGetUUIDP(SPI_getbinval(t, d, 2, &isnull));
		MemoryContext old;
		bool		failed;
		char	   *err;

		memset(&e, 0, sizeof(e));
		e.gen = (uint64) DatumGetInt64(SPI_getbinval(t, d, 3, &isnull));
		e.seen_version = DatumGetInt64(SPI_getbinval(t, d, 4, &isnull));
		MemoryContextSwitchTo(caller);
		job = job_create(&id, &e);
		old = MemoryContextSwitchTo(job->cxt);
		job->idstr = pstrdup(oauth_uuid_str(&id));
		job->pending_id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
		job->answered_at = DatumGetTimestampTz(SPI_getbinval(t, d, 6, &isnull));
		job->workspace_id = SPI_getvalue(t, d, 7);
		job->provider = SPI_getvalue(t, d, 8);
		job->client_credentials = DatumGetBool(SPI_getbinval(t, d, 9, &isnull)) && !isnull;
		replay_ct = DatumGetByteaPCopy(SPI_getbinval(t, d, 5, &isnull));
		run_isolated(job, open_recorded, &failed, &err, NULL);
		if (failed)
		{
			/* a key missing from the ring, say: left in the table for later */
			ereport(WARNING,
					(errmsg("oauth_tokens worker: a recorded answer cannot be read now: %s", err)));
			MemoryContextSwitchTo(old);
			MemoryContextDelete(job->cxt);
			bad++;
			continue;
		}
		MemoryContextSwitchTo(old);
		jobs_keep(job);
		n++;
	}
	end_work();
	if (n > 0 || bad > 0)
		ereport(LOG,
				(errmsg("oauth_tokens worker: %d recorded answers to apply, %d unreadable for now", n, bad)));
}

/* ---- answers kept until stored -------------------------------------------- */

/* answers to store again: their row was locked, or their write failed */
static dlist_head pending_writes = DLIST_STATIC_INIT(pending_writes);

/*
 * jobs_finish() could not apply job's answer: keep it (it is recorded in
 * oauth.pending_answers too) and apply it again later.  Its waiters hear at
 * once; the job stays ANSWERED.  Inside the batch that failed.
 */
void
answers_keep(Job *job, bool locked, const char *err)
{
	if (!locked && job->store_failures == 0)
		ereport(WARNING,
				(errmsg("oauth_tokens: could not store a new token yet, keeping it: %s", err)));
	job->store_failures++;
	if (!job->write_pending)
	{
		job->outcome = RO_TRANSIENT;
		job->message = locked ?
			MemoryContextStrdup(job->cxt, "the connection's row is locked by another transaction; "
								"the new token is stored once it is released") :
			MemoryContextStrdup(job->cxt, psprintf("the new token could not be stored yet (%s); "
												   "it is kept and stored later", err));
		job->write_pending = true;
		job_notify(job);
		queue_forget(job);
	}
	/* a lock goes soon; other errors are tried again less often */
	job->next_store = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), locked ? 200 :
												  Min(60000, 200 << Min(job->store_failures, 9)));
	dlist_push_tail(&pending_writes, &job->node);
}

/*
 * Keep a job whose answer must still be applied (replayed from
 * oauth.pending_answers at start-up): it is stored by jobs_retry_writes.
 */
void
jobs_keep(Job *job)
{
	job->write_pending = true;
	job->state = RJ_ANSWERED;	/* no entry: nobody waits for a replayed answer */
	job->notified = true;
	job->next_store = 0;
	dlist_push_tail(&pending_writes, &job->node);
}

/* Try again to store kept answers whose time has come. */
void
jobs_retry_writes(void)
{
	List	   *again = NIL;
	dlist_mutable_iter it;
	TimestampTz now = GetCurrentTimestamp();

	dlist_foreach_modify(it, &pending_writes)
	{
		Job		   *job = dlist_container(Job, node, it.cur);

		if (job->next_store > now)
			continue;
		dlist_delete(&job->node);
		again = lappend(again, job);
	}
	jobs_finish(again);
	list_free(again);
}

/* Milliseconds until the next kept answer is due to be stored; -1: none. */
long
answers_next_wait_ms(void)
{
	dlist_iter	it;
	TimestampTz now = GetCurrentTimestamp();
	long		best = -1;

	dlist_foreach(it, &pending_writes)
	{
		Job		   *j = dlist_container(Job, node, it.cur);
		long		ms = j->next_store <= now ? 0 : (long) ((j->next_store - now) / 1000) + 1;

		if (best < 0 || ms < best)
			best = ms;
	}
	return best;
}

/*
 * Must a new refresh of this connection wait?  Yes while an answer for it
 * is kept (not stored yet), and while a call for it still awaits the
 * provider's answer (its callers were told after oauth.http_timeout): a
 * second request would send the same refresh token again.
 */
bool
jobs_write_pending_for(const pg_uuid_t *id)
{
	return job_in_list(&pending_writes, id) || queue_is_running(id);
}

/* Is any answer kept, waiting for its row? */
bool
jobs_writes_pending(void)
{
	return !dlist_is_empty(&pending_writes);
}

/* How many answers are kept, waiting for their rows. */
int
jobs_kept(void)
{
	dlist_iter	it;
	int			n = 0;

	dlist_foreach(it, &pending_writes)
		n++;
	return n;
}
/* ---- answers that never came ---------------------------------------------- */

/*
 * A call is over.  If its last request may have been processed and got no
 * answer, and the provider's rotation grace still covers the token it
 * carried, send it again at once (the job goes back to the head of the
 * queue) and return true.  Who sent that last request does not matter:
 * libcurl re-sends by itself on a fresh connection when a reused one gave
 * nothing back, and the answer to that re-send can be lost as well.  The
 * grace is counted from the job's first send (the provider rotated after
 * it), and the worker re-sends at most LOST_RESENDS_MAX times.
 */
bool
answers_retry_lost(Job *job)
{
	int64		elapsed_ms;

	if (!job->ans.no_answer || job->rotation_grace_ms <= 0 ||
		job->lost_resends >= LOST_RESENDS_MAX)
		return false;
	elapsed_ms = (GetCurrentTimestamp() - job->first_sent) / 1000;
	if (elapsed_ms >= job->rotation_grace_ms)
		return false;
	ereport(LOG,
			(errmsg("oauth_tokens: no answer from provider \"%s\" for a refresh that was sent; "
					"retrying at once inside its rotation grace window", job->provider)));
	if (job->call)
	{
		http_free(job->call);
		job->call = NULL;
	}
	memset(&job->ans, 0, sizeof(job->ans));
	job->lost_retry = true;
	job->lost_resends++;
	job->flags &= ~REQ_REJECTED;	/* marked once already */
	queue_requeue(job);
	return true;
}

/*
 * Callers stop waiting after oauth.http_timeout: for each call in flight
 * that long whose waiters were not told, record a transient failure and
 * give it to them; the call goes on up to oauth.answer_timeout.  Outside
 * any batch.  Returns the milliseconds until the next call in flight
 * reaches oauth.http_timeout (the loop's wait ends then), or -1 if none.
 */
long
answers_release_waiters(void)
{
	List	   *running;
	List	   *late = NIL;
	ListCell   *lc;
	long		next = -1;

	if (oauth_answer_timeout_ms <= oauth_http_timeout_ms)
		return -1;				/* the call itself ends at http_timeout */
	running = queue_running_jobs();
	foreach(lc, running)
	{
		Job		   *job = lfirst(lc);
		long		elapsed;

		if (job->notified || job->released || job->call == NULL)
			continue;
		elapsed = http_elapsed_ms(job->call);
		if (elapsed >= oauth_http_timeout_ms)
			late = lappend(late, job);
		else if (next < 0 || oauth_http_timeout_ms - elapsed < next)
			next = oauth_http_timeout_ms - elapsed;
	}
	list_free(running);
	if (late == NIL)
		return next;
	begin_work("oauth_tokens: telling callers a refresh still waits for its answer");
	foreach(lc, late)
	{
		Job		   *job = lfirst(lc);

		job_record_transient(job, psprintf("no answer from the provider after %d ms; "
										   "the request stays open up to oauth.answer_timeout",
										   oauth_http_timeout_ms));
	}
	end_work();
	foreach(lc, late)
	{
		Job		   *job = lfirst(lc);

		job->released = true;
		job_notify(job);
		job->state = RJ_SENDING;	/* its entry is DONE; the call goes on */
	}
	list_free(late);
	return next;
}

/* ---- tenants ----------------------------------------------------------------- */

/*
 * A provider-class answer (invalid_client, unauthorized_client, a bare 401)
 * from a token URL filled by this connection's metadata concerns this
 * connection only: turns job->ans into this connection's failure and returns
 * true.  From an untemplated URL it leaves it (pause the provider) and
 * returns false.  No count across workspaces: the tenant chooses what its
 * URL reaches, so any number of its workspaces is still one party.
 */
bool
answers_tenant_failure(Job *job)
{
	TokenAnswer *a = &job->ans;

	if (!job->templated_url)
		return false;
	a->klass = RO_REAUTH;
	a->tenant_failure = true;
	if (a->error_code == NULL)
		a->error_code = psprintf("http_%ld", a->http_status);
	a->message = psprintf("%s (for this connection's tenant only)", a->message);
	return true;
}
