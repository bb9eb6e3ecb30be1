/*-------------------------------------------------------------------------
 *
 * finish.c
 *	  Step 3 of a refresh job: storing its result; the answers kept until
 *	  their row can take them.
 *
 * jobs_finish() stores the results that arrived together (ANSWERED jobs)
 * in one transaction and publishes their outcomes (ANSWERED -> DONE) right
 * after its commit, or keeps the answers it could not apply (ANSWERED ->
 * KEPT).
 *
 * Rules:
 *	- Sets, not loops.  The new tokens of the batch are recorded in
 *	  oauth.pending_answers with one statement and one commit (durable.c),
 *	  then applied with one statement, oauth._store_answers
 *	  (src/sql/20_lifecycle.sql: the one writer of what a grant stores, used
 *	  with one row by exchange_code and client_credentials too), their
 *	  records deleted with one and their events inserted with one, in one
 *	  subtransaction (store_set).  Every write is version-checked: a stale
 *	  result never overwrites a newer one.
 *	- A locked or failing row never holds back the others: the set
 *	  statement skips rows locked by another transaction; those, the rows
 *	  that moved on, and every row of a set whose statement failed are
 *	  stored one at a time (finish_job), each in its own subtransaction,
 *	  waiting briefly for its row lock (lock_timeout, batch.c).  Failures,
 *	  dead grants and pauses are stored one at a time too.
 *	- Whatever stops the apply of new tokens (a locked row, any error)
 *	  keeps them (KEPT): recorded, their waiters told "transient" at once,
 *	  stored again later (jobs_retry_writes); no new refresh of that
 *	  connection starts meanwhile (jobs_kept_for).  Applying an answer
 *	  deletes its record in the same transaction.
 *	- A call whose callers were told after oauth.http_timeout records that
 *	  transient failure (job_record_transient) and counts it once.
 *
 * The window that remains lies between a provider's answer and the commit
 * of its record: one INSERT and a commit (durable.c); a crash inside it
 * loses a rotated refresh token, and no client of a token endpoint can
 * close it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "crypto.h"
#include "http.h"
#include "oauth_tokens.h"
#include "provider.h"
#include "shmem.h"
#include "store.h"
#include "tenant_answers.h"
#include "batch.h"
#include "durable.h"
#include "finish.h"
#include "job.h"


/*
 * 1.0's store of a refresh answer, for a 1.0 schema only (see
 * prepare_plans); oauth._store_answers replaces it from 1.1 on.  Returns
 * whether the row was updated.
 */
#define STORE_ANSWER_1_0 \
	"WITH u AS (UPDATE oauth.connections c SET " \
	"  access_token_ciphertext = $2, " \
	"  refresh_token_ciphertext = coalesce($3, c.refresh_token_ciphertext), " \
	"  expires_at = CASE WHEN $4 IS NOT NULL THEN $9 + pg_catalog.make_interval(secs => $4::pg_catalog.float8) " \
	"                    ELSE $9 + p.default_lifetime END, " \
	"  refresh_token_expires_at = CASE WHEN $5 IS NOT NULL THEN $9 + pg_catalog.make_interval(secs => $5::pg_catalog.float8) " \
	"                    ELSE c.refresh_token_expires_at END, " \
	"  scope = CASE WHEN $6 IS NULL OR $6 = '' THEN c.scope " \
	"               ELSE regexp_split_to_array(trim($6), '[ ,]+') END, " \
	"  metadata = c.metadata || $7, " \
	"  refreshed_at = $9, failure_count = 0, next_attempt_at = NULL, " \
	"  last_refresh_error = NULL, version = c.version + 1, updated_at = now(), " \
	"  refresh_after = oauth._refresh_after(" \
	"      CASE WHEN $4 IS NOT NULL THEN $9 + pg_catalog.make_interval(secs => $4::pg_catalog.float8) " \
	"           ELSE $9 + p.default_lifetime END, " \
	"      p.refresh_buffer, p.refresh_token_idle_ttl, " \
	"      CASE WHEN $5 IS NOT NULL THEN $9 + pg_catalog.make_interval(secs => $5::pg_catalog.float8) " \
	"           ELSE c.refresh_token_expires_at END, " \
	"      $9, coalesce($3, c.refresh_token_ciphertext) IS NOT NULL, true) " \
	"  FROM oauth.providers p " \
	" WHERE p.name = c.provider AND c.id = $1 AND c.version = $8 " \
	"   AND c.revoked_at IS NULL AND c.reauth_required_at IS NULL " \
	"RETURNING 1) SELECT EXISTS (SELECT 1 FROM u) AS stored"

static SPIPlanPtr plan_success = NULL;
static SPIPlanPtr plan_transient = NULL;
static SPIPlanPtr plan_reauth = NULL;
static SPIPlanPtr plan_pause = NULL;
static SPIPlanPtr plan_lock_row = NULL;
static SPIPlanPtr plan_store_set = NULL;

/* the element types of oauth._store_answers' arrays, in order */
static const Oid store_types[9] = {UUIDOID, INT8OID, TIMESTAMPTZOID, BYTEAOID, BYTEAOID,
INT8OID, INT8OID, TEXTOID, JSONBOID};

/* answers to store again: their row was locked, or their write failed */
static dlist_head kept = DLIST_STATIC_INIT(kept);

static void keep_answer(Job *job, bool locked, const char *err);
static bool open_recorded(Job *job, RecordedAnswer *r);

/* Prepare the statements of step 3, once for the worker's life. */
static void
prepare_plans(void)
{
	if (plan_pause)
		return;
	/*
	 * What a grant stores is written by one function, for every path.  A
	 * 1.0 schema (the new library before ALTER EXTENSION UPDATE) has no
	 * such function: there the answer is stored as 1.0 stored it, until
	 * the worker notices the update (job_plans_reset).
	 */
	if (worker_schema >= SCHEMA_1_1)
	{
		/* a set of answers, and one alone: the same statement */
		plan_store_set = prepare_saved(
			"SELECT s.id FROM oauth._store_answers($1, $2, $3, $4, $5, $6, $7, $8, $9, false) AS s(id)",
			9, (Oid[]) {UUIDARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, BYTEAARRAYOID,
			BYTEAARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID});
		plan_success = prepare_saved(
			"SELECT EXISTS (SELECT FROM oauth._store_answers($1, $2, $3, $4, $5, $6, $7, $8, $9, false)) AS stored",
			9, (Oid[]) {UUIDARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, BYTEAARRAYOID,
			BYTEAARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID});
		plan_lock_row = prepare_saved(
			"SELECT FROM oauth.connections WHERE id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
			1, (Oid[]) {UUIDOID});
	}
	else
		plan_success = prepare_saved(STORE_ANSWER_1_0, 9,
									 (Oid[]) {UUIDOID, BYTEAOID, BYTEAOID, INT8OID, INT8OID,
									 TEXTOID, JSONBOID, INT8OID, TIMESTAMPTZOID});
	/*
	 * exponential back-off with jitter: 5 s, 10 s, ... capped at 1 hour.
	 * One draw sets both columns: the sweep looks only at refresh_after, so
	 * it must not be earlier than next_attempt_at.
	 */
	plan_transient = prepare_saved(
		"UPDATE oauth.connections c SET "
		"  failure_count = c.failure_count + $5::pg_catalog.int4, last_refresh_error = $2, "
		"  (next_attempt_at, refresh_after) = (SELECT b.t, b.t FROM (SELECT now() + "
		"      pg_catalog.make_interval(secs => greatest($3::pg_catalog.float8, "
		"          least(3600::pg_catalog.float8, 5::pg_catalog.float8 OPERATOR(pg_catalog.*) "
		"                pg_catalog.power(2::pg_catalog.float8, least(c.failure_count, 12)::pg_catalog.float8)) "
		"          OPERATOR(pg_catalog.*) (0.5::pg_catalog.float8 OPERATOR(pg_catalog.+) "
		"                                 (pg_catalog.random() OPERATOR(pg_catalog./) 2::pg_catalog.float8)))) AS t) b), "
		"  updated_at = now() "
		" WHERE c.id = $1 AND c.version = $4 AND c.revoked_at IS NULL AND c.reauth_required_at IS NULL "
		"RETURNING c.next_attempt_at, c.failure_count",
		5, (Oid[]) {UUIDOID, TEXTOID, FLOAT8OID, INT8OID, INT4OID});
	plan_reauth = prepare_saved(
		"UPDATE oauth.connections c SET reauth_required_at = now(), last_refresh_error = $2, "
		"  refresh_after = NULL, next_attempt_at = NULL, version = c.version + 1, updated_at = now() "
		" WHERE c.id = $1 AND c.version = $3 AND c.revoked_at IS NULL AND c.reauth_required_at IS NULL "
		"RETURNING c.workspace_id, c.provider",
		3, (Oid[]) {UUIDOID, TEXTOID, INT8OID});
	plan_pause = prepare_saved(
		"UPDATE oauth.providers SET paused_at = now(), pause_reason = $2 WHERE name = $1",
		2, (Oid[]) {TEXTOID, TEXTOID});
}

/* A client-credentials grant never stores a refresh token: drop it. */
static void
drop_client_refresh_token(Job *job)
{
	TokenAnswer *a = &job->ans;

	if (job->client_credentials && a->refresh_token)
	{
		explicit_bzero(a->refresh_token, strlen(a->refresh_token));
		a->refresh_token = NULL;
	}
}

/* The refreshed event's detail (never a secret). */
static char *
refreshed_detail(Job *job)
{
	TokenAnswer *a = &job->ans;
	int64		ms = job->started ? (GetCurrentTimestamp() - job->started) / 1000 : 0;

	return psprintf("{\"http_status\": %ld, \"duration_ms\": " INT64_FORMAT
					", \"rotated\": %s, \"expires_in\": %s, \"trigger\": %s"
					", \"durable_us\": " INT64_FORMAT ", \"store_attempts\": %d%s}",
					a->http_status, ms, a->refresh_token ? "true" : "false",
					a->has_expires_in ? psprintf(INT64_FORMAT, a->expires_in) : "null",
					(job->flags & REQ_SWEEP) ? "\"sweep\"" :
					(job->flags & REQ_FORCE) ? "\"forced\"" :
					(job->flags & REQ_DUE) ? "\"refresh_due\"" : "\"caller\"",
					job->durable_us, job->store_failures + 1,
					job->lost == LOST_RESENT ? ", \"recovered\": \"answer_lost\"" : "");
}

/*
 * The columns oauth._store_answers takes for job's answer (v[9], nulls
 * n[9]): connection, version, answered_at, sealed access and refresh
 * tokens, expires_in, rt_expires_in, scope, metadata.  A client-credentials
 * grant never stores a refresh token.  The answer's tokens stay in job->ans
 * until job_publish(): a write that meets a locked row is retried with them.
 */
static void
answer_values(Job *job, Datum *v, bool *n)
{
	TokenAnswer *a = &job->ans;

	drop_client_refresh_token(job);
	memset(n, 0, sizeof(bool) * 9);
	v[0] = UUIDPGetDatum(&job->id);
	v[1] = Int64GetDatum(job->seen_version);
	/* expiry counts from the answer, not from a retried write */
	v[2] = TimestampTzGetDatum(job->answered_at ? job->answered_at : GetCurrentTimestamp());
	v[3] = PointerGetDatum(oauth_seal(a->access_token, strlen(a->access_token),
									  oauth_conn_context(job->idstr, "access")));
	n[4] = a->refresh_token == NULL;
	v[4] = n[4] ? (Datum) 0 :
		PointerGetDatum(oauth_seal(a->refresh_token, strlen(a->refresh_token),
								   oauth_conn_context(job->idstr, "refresh")));
	n[5] = !a->has_expires_in;
	v[5] = Int64GetDatum(a->expires_in);
	n[6] = !a->has_rt_expires_in;
	v[6] = Int64GetDatum(a->rt_expires_in);
	n[7] = a->scope == NULL;
	v[7] = n[7] ? (Datum) 0 : CStringGetTextDatum(a->scope);
	v[8] = DirectFunctionCall1(jsonb_in, CStringGetDatum(a->metadata_json ? a->metadata_json : "{}"));
}

/* Step 3 for one new token, alone (the batch could not store it). */
static void
finish_refreshed(Job *job)
{
	Datum		v[9];
	bool		n[9];
	char		nulls[9];
	Datum		one[9];
	bool		stored;
	bool		isnull;

	answer_values(job, v, n);
	if (worker_schema >= SCHEMA_1_1)
	{
		/* wait for its row lock here (lock_timeout): a locked row keeps it */
		if (exec_plan(plan_lock_row, v, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not lock the connection");
		for (int i = 0; i < 9; i++)
		{
			one[i] = datum_array(&v[i], &n[i], 1, store_types[i]);
			nulls[i] = ' ';
		}
	}
	else
	{
		/* 1.0's statement: $1 id, $2..$7 the answer, $8 version, $9 answered_at */
		int			map[9] = {0, 3, 4, 5, 6, 7, 8, 1, 2};

		for (int i = 0; i < 9; i++)
		{
			one[i] = v[map[i]];
			nulls[i] = n[map[i]] ? 'n' : ' ';
		}
	}
	if (exec_plan(plan_success, one, nulls, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not store refreshed token");
	stored = DatumGetBool(spi_column(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, "stored", &isnull)) &&
		!isnull;
	/* applied (or superseded): the recorded answer goes, atomically */
	answers_forget(job->pending_id);
	if (!stored)
	{
		/* the row moved on (re-authorized, revoked, deleted): discard */
		job->outcome = RO_NOT_NEEDED;
		job->message = pstrdup("superseded by a newer change to the connection");
		return;
	}
	add_event(job->workspace_id, &job->id, job->provider, "refreshed", refreshed_detail(job));
}

/* Step 3 for a dead grant: reauth_required, its reason, its event. */
static void
finish_reauth(Job *job)
{
	TokenAnswer *a = &job->ans;
	Datum		v[3];
	const char *code = a->error_code ? a->error_code : "invalid_grant";
	const char *reason = NULL;

	/*
	 * After a request that was sent and never answered, a dead grant most
	 * likely means the provider rotated the token in the answer we lost:
	 * say so, it is not the customer revoking access.
	 */
	if (job->lost != LOST_NONE)
		reason = "answer_lost";
	else if (a->tenant_failure)
		reason = "tenant_rejected";
	if (reason)
		code = psprintf("%s: %s", reason, code);
	v[0] = UUIDPGetDatum(&job->id);
	v[1] = CStringGetTextDatum(code);
	v[2] = Int64GetDatum(job->seen_version);
	if (exec_plan(plan_reauth, v, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not mark connection");
	if (SPI_processed > 0)
		add_event(job->workspace_id, &job->id, job->provider, "reauth_required",
				  psprintf("{\"error\": %s, \"http_status\": %ld, \"message\": %s%s%s%s}",
						   json_str(a->error_code), a->http_status, json_str(a->message),
						   reason ? ", \"reason\": \"" : "", reason ? reason : "",
						   reason ? "\"" : ""));
	job->message = (char *) code;
}

/* Step 3 for a provider misconfigured: pause it, say so. */
static void
finish_provider(Job *job)
{
	TokenAnswer *a = &job->ans;
	Datum		v[2];

	v[0] = CStringGetTextDatum(job->provider);
	v[1] = CStringGetTextDatum(a->message);
	if (exec_plan(plan_pause, v, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not pause provider");
	add_event(job->workspace_id, &job->id, job->provider, "refresh_failed",
			  psprintf("{\"class\": \"provider\", \"error\": %s, \"http_status\": %ld}",
					   json_str(a->message), a->http_status));
	ereport(LOG,
			(errmsg("oauth_tokens: provider \"%s\" paused: %s", job->provider, a->message),
			 errhint("Fix its client credentials with oauth.register_provider().")));
}

/* Step 3 for a transient failure: its back-off (counted once), its event. */
static void
finish_transient(Job *job)
{
	TokenAnswer *a = &job->ans;
	Datum		v[5];
	bool		isnull;

	v[0] = UUIDPGetDatum(&job->id);
	v[1] = CStringGetTextDatum(a->message ? a->message : "refresh failed");
	v[2] = Float8GetDatum((double) a->retry_after_s);
	v[3] = Int64GetDatum(job->seen_version);
	v[4] = Int32GetDatum(job->failures_recorded > 0 ? 0 : 1);
	if (exec_plan(plan_transient, v, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not record failure");
	job->outcome = RO_TRANSIENT;
	if (SPI_processed == 0)
		return;
	job->next_attempt = DatumGetTimestampTz(spi_column(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
													   "next_attempt_at", &isnull));
	add_event(job->workspace_id, &job->id, job->provider, "refresh_failed",
			  psprintf("{\"class\": \"transient\", \"error\": %s, \"http_status\": %ld, "
					   "\"next_attempt_at\": %s, \"retry_after\": %d}",
					   json_str(a->message), a->http_status,
					   json_str(timestamptz_to_str(job->next_attempt)), a->retry_after_s));
}

/*
 * Step 3 for one job, alone: apply the provider's answer (job->ans) to the
 * connection, with a version check, and record the event.  Runs in a
 * subtransaction of a batch, in job->cxt.
 */
static void
finish_job(Job *job)
{
	MemoryContext old = MemoryContextSwitchTo(job->cxt);
	TokenAnswer *a = &job->ans;

	prepare_plans();
	if (a->klass != RO_REFRESHED)
		job_mark_rejected(job);	/* not yet done if its row was locked */
	if (a->klass == RO_PROVIDER)
		(void) tenant_failure(a, job->templated_url);	/* may make it this connection's failure */
	job->outcome = a->klass;
	job->message = a->message;
	if (a->klass == RO_REFRESHED)
		finish_refreshed(job);
	else if (a->klass == RO_REAUTH)
		finish_reauth(job);
	else if (a->klass == RO_PROVIDER)
		finish_provider(job);
	else
		finish_transient(job);
	MemoryContextSwitchTo(old);
}

/* New tokens stored together (store_set); stored[i]: jobs[i]'s row took it. */
typedef struct StoreSet
{
	Job		  **jobs;
	bool	   *stored;
	int			n;
} StoreSet;

/*
 * Store every new token of the set in one statement (oauth._store_answers:
 * version-checked, locked rows skipped), delete their records in one
 * statement and record their events in one.  Inside a subtransaction
 * (try_isolated): if anything fails, none of it stays and each job is
 * stored alone.
 */
static void
store_set(void *arg)
{
	StoreSet   *s = (StoreSet *) arg;
	Datum	   *cols[9];
	bool	   *nulls[9];
	Datum		v[9];
	int64	   *pending = palloc(sizeof(int64) * s->n);
	char	  **ws = palloc(sizeof(char *) * s->n);
	char	  **prov = palloc(sizeof(char *) * s->n);
	char	  **detail = palloc(sizeof(char *) * s->n);
	pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * s->n);
	int			k = 0;

	prepare_plans();
	for (int c = 0; c < 9; c++)
	{
		cols[c] = palloc(sizeof(Datum) * s->n);
		nulls[c] = palloc(sizeof(bool) * s->n);
	}
	for (int i = 0; i < s->n; i++)
	{
		Datum		row[9];
		bool		rn[9];

		answer_values(s->jobs[i], row, rn);
		for (int c = 0; c < 9; c++)
		{
			cols[c][i] = row[c];
			nulls[c][i] = rn[c];
		}
	}
	for (int c = 0; c < 9; c++)
		v[c] = datum_array(cols[c], nulls[c], s->n, store_types[c]);
	if (exec_plan(plan_store_set, v, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not store refreshed tokens");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		pg_uuid_t  *id = DatumGetUUIDP(spi_column(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
												  "id", &isnull));

		for (int i = 0; i < s->n; i++)
			if (!s->stored[i] && memcmp(&s->jobs[i]->id, id, sizeof(pg_uuid_t)) == 0)
			{
				s->stored[i] = true;
				break;
			}
	}
	for (int i = 0; i < s->n; i++)
	{
		Job		   *job = s->jobs[i];

		if (!s->stored[i])
			continue;
		pending[k] = job->pending_id;
		ws[k] = job->workspace_id;
		prov[k] = job->provider;
		ids[k] = job->id;
		detail[k] = refreshed_detail(job);
		k++;
	}
	answers_forget_set(pending, k);
	add_events(k, ws, ids, prov, "refreshed", detail);
}

/*
 * The new tokens among done (ANSWERED, RO_REFRESHED), stored together:
 * returns the jobs still to store one at a time (rows locked, moved on or
 * failing, or all of them if the set statement failed).  Inside a batch.
 */
static List *
store_refreshed(List *done)
{
	StoreSet	s;
	List	   *alone = NIL;
	ListCell   *lc;
	char	   *err;

	s.jobs = palloc(sizeof(Job *) * list_length(done));
	s.n = 0;
	foreach(lc, done)
	{
		Job		   *job = lfirst(lc);

		if (job->ans.klass == RO_REFRESHED && worker_schema >= SCHEMA_1_1)
			s.jobs[s.n++] = job;
		else
			alone = lappend(alone, job);
	}
	s.stored = palloc0(sizeof(bool) * Max(s.n, 1));
	if (s.n > 0 && !try_isolated(store_set, &s, CurrentMemoryContext, &err, NULL))
	{
		ereport(LOG,
				(errmsg("oauth_tokens: storing %d new tokens together failed, storing each alone: %s",
						s.n, err)));
		memset(s.stored, 0, sizeof(bool) * s.n);
	}
	for (int i = 0; i < s.n; i++)
	{
		Job		   *job = s.jobs[i];

		if (!s.stored[i])
			alone = lappend(alone, job);
		else
		{
			job->outcome = RO_REFRESHED;
			job->message = job->ans.message;
		}
	}
	return alone;
}

/*
 * Record the new tokens among done not recorded yet (durable.c), before
 * they are applied: one statement, one commit.  A client-credentials grant
 * never stores a refresh token: it is dropped first.  An answer that could
 * not be recorded stays in memory (pending_id 0) and is recorded next time.
 */
static void
record_answers(List *done)
{
	AnswerRecord *recs = palloc0(sizeof(AnswerRecord) * Max(list_length(done), 1));
	Job		  **of = palloc(sizeof(Job *) * Max(list_length(done), 1));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, done)
	{
		Job		   *job = lfirst(lc);

		if (job->ans.klass != RO_REFRESHED || job->pending_id != 0)
			continue;
		drop_client_refresh_token(job);
		recs[n].connection_id = job->id;
		recs[n].idstr = job->idstr;
		recs[n].generation = job->gen;
		recs[n].seen_version = job->seen_version;
		recs[n].answer = &job->ans;
		recs[n].received_at = job->answered_at ? job->answered_at : GetCurrentTimestamp();
		of[n++] = job;
	}
	answers_record(recs, n);
	for (int i = 0; i < n; i++)
	{
		Job		   *job = of[i];

		job->pending_id = recs[i].pending_id;
		if (job->pending_id != 0 && job->durable_us == 0 && job->answered_at != 0)
			job->durable_us = Max(1, GetCurrentTimestamp() - job->answered_at);
	}
}

/*
 * Write every finished job (ANSWERED): one transaction, a subtransaction
 * each.  Row locks are waited for briefly (lock_timeout): the worker must
 * not stall, nor deadlock with a session that holds a connection's row
 * lock and waits for a refresh.  A new token that meets a locked row is
 * not lost: it is kept (KEPT, its waiters hear "transient") and written
 * again until the lock is released.  The others are published (DONE).
 */
void
jobs_finish(List *done)
{
	ListCell   *lc;

	if (done == NIL)
		return;
	/* answers with tokens are made durable first, in their own transaction */
	record_answers(done);
	begin_work("oauth_tokens: storing refresh results");
	foreach(lc, store_refreshed(done))
	{
		Job		   *job = lfirst(lc);
		bool		failed;
		char	   *err;
		int			sqlstate = 0;

		run_isolated(job, finish_job, &failed, &err, &sqlstate);
		if (failed && job->ans.klass == RO_REFRESHED)
		{
			/*
			 * Whatever went wrong (a locked row, a serialization failure,
			 * the key file, a constraint or trigger), the answer is kept:
			 * in oauth.pending_answers and here, and applied again later.
			 */
			keep_answer(job, sqlstate == ERRCODE_LOCK_NOT_AVAILABLE, err);
			continue;
		}
		if (failed)
		{
			job->outcome = RO_TRANSIENT;
			job->message = err;
			ereport(WARNING,
					(errmsg("oauth_tokens: could not store the result of a refresh: %s", err)));
		}
	}
	end_work();
	foreach(lc, done)
	{
		Job		   *job = lfirst(lc);

		if (job->state == RJ_KEPT)
			dlist_push_tail(&kept, &job->node);
		else
			job_publish(job);
	}
}

/*
 * Jobs that ended before any HTTP call: ANSWERED ones have a result to
 * store (a failure in step 1) and go through step 3; the others (QUEUED,
 * with their outcome) are published as they are.  Outside any batch.
 */
void
jobs_conclude(List *done)
{
	List	   *to_finish = NIL;
	ListCell   *lc;

	foreach(lc, done)
	{
		Job		   *job = lfirst(lc);

		if (job->state == RJ_ANSWERED)
			to_finish = lappend(to_finish, job);
		else
			job_publish(job);
	}
	jobs_finish(to_finish);
	list_free(to_finish);
}

/* ---- answers kept until stored -------------------------------------------- */

/*
 * jobs_finish() could not apply job's answer (it is recorded in
 * oauth.pending_answers too): ANSWERED -> KEPT the first time, its waiters
 * told "transient"; it is applied again later.  Inside the batch that
 * failed.
 */
static void
keep_answer(Job *job, bool locked, const char *err)
{
	if (!locked && job->store_failures == 0)
		ereport(WARNING,
				(errmsg("oauth_tokens: could not store a new token yet, keeping it: %s", err)));
	job->store_failures++;
	job->outcome = RO_TRANSIENT;
	job->message = locked ?
		MemoryContextStrdup(job->cxt, "the connection's row is locked by another transaction; "
							"the new token is stored once it is released") :
		MemoryContextStrdup(job->cxt, psprintf("the new token could not be stored yet (%s); "
											   "it is kept and stored later", err));
	job_move(job, RJ_KEPT);
	job_forget(job);
	/* a lock goes soon; other errors are tried again less often */
	job->next_store = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), locked ? 200 :
												  Min(60000, 200 << Min(job->store_failures, 9)));
}

/*
 * At start-up: every answer left in oauth.pending_answers becomes a KEPT
 * job (no entry: nobody waits for it), applied by jobs_retry_writes()
 * before any new refresh of its connection starts.  An answer that cannot
 * be read now (a key missing from the ring, say) stays in the table.
 */
void
jobs_replay(void)
{
	List	   *recorded = answers_recorded();
	ListCell   *lc;
	int			n = 0;
	int			bad = 0;

	if (recorded == NIL)
		return;
	begin_work("oauth_tokens: opening recorded answers");
	foreach(lc, recorded)
	{
		RecordedAnswer *r = lfirst(lc);
		RefreshEntry e;
		Job		   *job;

		/* generation 0: no entry has it (its run's entry is gone) */
		memset(&e, 0, sizeof(e));
		e.seen_version = r->seen_version;
		job = job_create(&r->connection_id, &e, RJ_KEPT);
		job->idstr = MemoryContextStrdup(job->cxt, oauth_uuid_str(&r->connection_id));
		job->pending_id = r->pending_id;
		job->answered_at = r->received_at;
		job->workspace_id = r->workspace_id ? MemoryContextStrdup(job->cxt, r->workspace_id) : NULL;
		job->provider = r->provider ? MemoryContextStrdup(job->cxt, r->provider) : NULL;
		job->client_credentials = r->client_credentials;
		if (!open_recorded(job, r))
		{
			MemoryContextDelete(job->cxt);
			bad++;
			continue;
		}
		job->next_store = 0;
		dlist_push_tail(&kept, &job->node);
		n++;
	}
	end_work();
	if (n > 0 || bad > 0)
		ereport(LOG,
				(errmsg("oauth_tokens worker: %d recorded answers to apply, %d unreadable for now", n, bad)));
}

static RecordedAnswer *opening;

/* Decrypt the answer being opened into job->ans; in a subtransaction. */
static void
open_one(Job *job)
{
	MemoryContext old = MemoryContextSwitchTo(job->cxt);

	answers_open(opening, job->idstr, &job->ans);
	MemoryContextSwitchTo(old);
}

/*
 * Decrypt r into job->ans, inside the replay's batch; false (and a
 * warning) if it cannot be read now (a key missing from the ring, say: it
 * stays in the table for later).
 */
static bool
open_recorded(Job *job, RecordedAnswer *r)
{
	bool		failed;
	char	   *err;

	opening = r;
	run_isolated(job, open_one, &failed, &err, NULL);
	opening = NULL;
	if (failed)
		ereport(WARNING,
				(errmsg("oauth_tokens worker: a recorded answer cannot be read now: %s", err)));
	return !failed;
}

/* Try again to store kept answers whose time has come (KEPT -> ANSWERED). */
void
jobs_retry_writes(void)
{
	List	   *again = NIL;
	dlist_mutable_iter it;
	TimestampTz now = GetCurrentTimestamp();

	dlist_foreach_modify(it, &kept)
	{
		Job		   *job = dlist_container(Job, node, it.cur);

		if (job->next_store > now)
			continue;
		dlist_delete(&job->node);
		job_move(job, RJ_ANSWERED);
		again = lappend(again, job);
	}
	jobs_finish(again);
	list_free(again);
}

/* Milliseconds until the next kept answer is due to be stored; -1: none. */
long
jobs_next_store_ms(void)
{
	dlist_iter	it;
	TimestampTz now = GetCurrentTimestamp();
	long		best = -1;

	dlist_foreach(it, &kept)
	{
		Job		   *j = dlist_container(Job, node, it.cur);
		long		ms = j->next_store <= now ? 0 : (long) ((j->next_store - now) / 1000) + 1;

		if (best < 0 || ms < best)
			best = ms;
	}
	return best;
}

/* Is an answer of this connection kept (not stored yet)? */
bool
jobs_kept_for(const pg_uuid_t *id)
{
	return job_in_list(&kept, id);
}

/* How many answers are kept, waiting for their rows. */
int
jobs_kept(void)
{
	dlist_iter	it;
	int			n = 0;

	dlist_foreach(it, &kept)
		n++;
	return n;
}

/*
 * Record a transient failure for a job whose call is still running (its
 * callers stop waiting, durable.c), inside a batch.  Counts as the job's
 * failure: the final outcome of the call does not count again.
 */
static char *transient_message;

static void
record_transient(Job *job)
{
	Datum		v[5];
	bool		isnull;

	prepare_plans();
	v[0] = UUIDPGetDatum(&job->id);
	v[1] = CStringGetTextDatum(transient_message);
	v[2] = Float8GetDatum(0.0);
	v[3] = Int64GetDatum(job->seen_version);
	v[4] = Int32GetDatum(1);
	if (exec_plan(plan_transient, v, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not record failure");
	if (SPI_processed == 0)
		return;
	job->next_attempt = DatumGetTimestampTz(spi_column(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
															   "next_attempt_at", &isnull));
	add_event(job->workspace_id, &job->id, job->provider, "refresh_failed",
			  psprintf("{\"class\": \"transient\", \"error\": %s, \"next_attempt_at\": %s, "
					   "\"still_waiting\": true}",
					   json_str(transient_message),
					   json_str(timestamptz_to_str(job->next_attempt))));
}

void
job_record_transient(Job *job, const char *message)
{
	bool		failed;
	char	   *err;
	MemoryContext old = MemoryContextSwitchTo(job->cxt);

	transient_message = pstrdup(message);
	run_isolated(job, record_transient, &failed, &err, NULL);
	job->failures_recorded++;
	job->outcome = RO_TRANSIENT;
	job->message = transient_message;
	MemoryContextSwitchTo(old);
}

/* Forget step 3's prepared statements: the schema changed (worker.c). */
void
finish_plans_reset(void)
{
	SPIPlanPtr *plans[] = {&plan_success, &plan_transient, &plan_reauth, &plan_pause,
	&plan_lock_row, &plan_store_set};

	for (int i = 0; i < lengthof(plans); i++)
	{
		if (*plans[i])
			SPI_freeplan(*plans[i]);
		*plans[i] = NULL;
	}
}
