/*-------------------------------------------------------------------------
 *
 * job.c
 *	  A refresh job's steps and their SQL.
 *
 * A job has three steps, and no transaction is open between them:
 *	1. prepare (job_prepare, inside a batch): re-read the row; skip the job
 *	   if its version moved since the request (someone else refreshed), or
 *	   if it is revoked, dead or its provider paused; decrypt the refresh
 *	   token and client secret; build the request; hand it to curl.
 *	2. HTTP, in the multi handle, with nothing locked (http.c).
 *	3. finish (jobs_finish, its own batch): classify the answer; store it
 *	   with a version check so a stale result never overwrites a newer one;
 *	   record the event; commit; then publish the outcome and wake the
 *	   waiters (job_publish).
 * Steps 1 and 3 run batches of jobs in one transaction, each job in its own
 * subtransaction (batch.c), so one bad row cannot fail the others.
 *
 * Rules:
 *	- A job belongs to the worker alone.  Its shared entry (shmem.h) is
 *	  written from here only by job_notify(), under oauth_shared->lock, and
 *	  only while the entry still has the job's generation.
 *	- An answer with tokens that meets a locked row is kept in the list of
 *	  kept answers (pending_writes) and stored again every 200 ms; its
 *	  waiters hear "transient" at once, and no new refresh of that
 *	  connection starts meanwhile (jobs_write_pending_for).
 *	- finish_job() is the one place where a provider's answer is applied to
 *	  the connection.
 *
 * The window between a provider's answer and the commit in step 3 is as
 * short as one UPDATE and a commit; a crash inside it loses a rotated
 * refresh token, and no client of a token endpoint can close it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "crypto.h"
#include "http.h"
#include "identity.h"
#include "oauth_tokens.h"
#include "provider.h"
#include "shmem.h"
#include "stats.h"
#include "store.h"
#include "worker.h"

/* answers to store again: their row was locked */
static dlist_head pending_writes = DLIST_STATIC_INIT(pending_writes);
static TimestampTz next_write_retry = 0;

static SPIPlanPtr plan_read = NULL;
static SPIPlanPtr plan_success = NULL;
static SPIPlanPtr plan_transient = NULL;
static SPIPlanPtr plan_reauth = NULL;
static SPIPlanPtr plan_pause = NULL;
static SPIPlanPtr plan_hold_off = NULL;
static SPIPlanPtr plan_rejected = NULL;

/* Prepare the statements of a job's steps, once for the worker's life. */
static void
prepare_plans(void)
{
	if (plan_rejected)
		return;
	plan_read = prepare_saved(
		"SELECT c.workspace_id, c.provider, c.version, c.grant_type, "
		"       c.refresh_token_ciphertext, c.scope, c.metadata, "
		"       c.revoked_at IS NOT NULL, c.reauth_required_at IS NOT NULL, c.last_refresh_error, "
		"       p.token_url, p.client_id, p.client_secret_ciphertext, p.auth_method, "
		"       p.body_format, p.extra_params, p.extra_headers, p.reauth_errors, "
		"       p.scope_separator, p.scope_on_refresh, p.max_concurrency, "
		"       p.paused_at IS NOT NULL, p.pause_reason, p.allowed_hosts "
		"  FROM oauth.connections c JOIN oauth.providers p ON p.name = c.provider "
		" WHERE c.id = $1",
		1, (Oid[]) {UUIDOID});
	plan_success = prepare_saved(
		"UPDATE oauth.connections c SET "
		"  access_token_ciphertext = $2, "
		"  refresh_token_ciphertext = coalesce($3, c.refresh_token_ciphertext), "
		"  expires_at = CASE WHEN $4 IS NOT NULL THEN $9 + $4 * interval '1 second' "
		"                    ELSE $9 + p.default_lifetime END, "
		"  refresh_token_expires_at = CASE WHEN $5 IS NOT NULL THEN $9 + $5 * interval '1 second' "
		"                    ELSE c.refresh_token_expires_at END, "
		"  scope = CASE WHEN $6 IS NULL OR $6 = '' THEN c.scope "
		"               ELSE regexp_split_to_array(trim($6), '[ ,]+') END, "
		"  metadata = c.metadata || $7, "
		"  refreshed_at = $9, failure_count = 0, next_attempt_at = NULL, "
		"  last_refresh_error = NULL, version = c.version + 1, updated_at = now(), "
		"  refresh_after = oauth._refresh_after("
		"      CASE WHEN $4 IS NOT NULL THEN $9 + $4 * interval '1 second' "
		"           ELSE $9 + p.default_lifetime END, "
		"      p.refresh_buffer, p.refresh_token_idle_ttl, "
		"      CASE WHEN $5 IS NOT NULL THEN $9 + $5 * interval '1 second' "
		"           ELSE c.refresh_token_expires_at END, "
		"      $9, coalesce($3, c.refresh_token_ciphertext) IS NOT NULL, true) "
		"  FROM oauth.providers p "
		" WHERE p.name = c.provider AND c.id = $1 AND c.version = $8 "
		"   AND c.revoked_at IS NULL AND c.reauth_required_at IS NULL "
		"RETURNING c.expires_at",
		9, (Oid[]) {UUIDOID, BYTEAOID, BYTEAOID, INT8OID, INT8OID, TEXTOID, JSONBOID, INT8OID, TIMESTAMPTZOID});
	/*
	 * exponential back-off with jitter: 5 s, 10 s, ... capped at 1 hour.
	 * One draw sets both columns: the sweep looks only at refresh_after, so
	 * it must not be earlier than next_attempt_at.
	 */
	plan_transient = prepare_saved(
		"UPDATE oauth.connections c SET "
		"  failure_count = c.failure_count + 1, last_refresh_error = $2, "
		"  (next_attempt_at, refresh_after) = (SELECT b.t, b.t FROM (SELECT now() + "
		"      make_interval(secs => greatest($3, least(3600, 5 * power(2, least(c.failure_count, 12))) "
		"                                          * (0.5 + random() / 2))) AS t) b), "
		"  updated_at = now() "
		" WHERE c.id = $1 AND c.version = $4 AND c.revoked_at IS NULL AND c.reauth_required_at IS NULL "
		"RETURNING c.next_attempt_at, c.failure_count",
		4, (Oid[]) {UUIDOID, TEXTOID, FLOAT8OID, INT8OID});
	plan_reauth = prepare_saved(
		"UPDATE oauth.connections c SET reauth_required_at = now(), last_refresh_error = $2, "
		"  refresh_after = NULL, next_attempt_at = NULL, version = c.version + 1, updated_at = now() "
		" WHERE c.id = $1 AND c.version = $3 AND c.revoked_at IS NULL AND c.reauth_required_at IS NULL "
		"RETURNING c.workspace_id, c.provider, "
		"  pg_notify('oauth_connection_state', json_build_object('workspace_id', c.workspace_id, "
		"      'connection_id', c.id, 'provider', c.provider, 'state', 'reauth_required', "
		"      'error', $2)::text)",
		3, (Oid[]) {UUIDOID, TEXTOID, INT8OID});
	plan_pause = prepare_saved(
		"UPDATE oauth.providers SET paused_at = now(), pause_reason = $2 WHERE name = $1",
		2, (Oid[]) {TEXTOID, TEXTOID});
	/* callers inside the refresh window of a paused provider's connection
	 * would otherwise post a request on every call */
	plan_hold_off = prepare_saved(
		"UPDATE oauth.connections SET refresh_after = greatest(refresh_after, now() + interval '1 minute') "
		" WHERE id = (SELECT id FROM oauth.connections WHERE id = $1 FOR UPDATE SKIP LOCKED)",
		1, (Oid[]) {UUIDOID});
	plan_rejected = prepare_saved(
		"UPDATE oauth.connections SET expires_at = LEAST(expires_at, now()), "
		"  refresh_after = LEAST(refresh_after, now()), updated_at = now() "
		" WHERE id = $1 AND version = $2 "
		"   AND (expires_at IS NULL OR expires_at > now() "
		"        OR refresh_after IS NULL OR refresh_after > now()) "
		"RETURNING workspace_id, provider",
		2, (Oid[]) {UUIDOID, INT8OID});
}

/*
 * A new job for the request in entry e (id), in its own memory context.
 * Caller holds oauth_shared->lock and moves the entry to RUNNING.
 */
Job *
job_create(const pg_uuid_t *id, const RefreshEntry *e)
{
	MemoryContext cxt;
	Job		   *job;

	cxt = AllocSetContextCreate(jobs_cxt, "oauth job", ALLOCSET_SMALL_SIZES);
	job = MemoryContextAllocZero(cxt, sizeof(Job));
	job->cxt = cxt;
	job->id = *id;
	job->gen = e->gen;
	job->state = RJ_QUEUED;
	job->seen_version = e->seen_version;
	job->flags = e->flags;
	job->rejected_version = e->rejected_version;
	return job;
}

/*
 * Move a job to state, and its entry with it while the entry still has the
 * job's generation (a kept answer's entry may have moved on).  DONE is set
 * through job_notify(), which also gives the entry its outcome.
 */
void
job_set_state(Job *job, RefreshJobState state)
{
	RefreshEntry *e;

	Assert(state != RJ_DONE);
	job->state = state;
	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	e = hash_search(oauth_requests, &job->id, HASH_FIND, NULL);
	if (e && e->gen == job->gen && e->state != RJ_DONE)
		oauth_set_state_locked(e, state);
	LWLockRelease(oauth_shared->lock);
}

/* Give a job's outcome to its entry and wake the entry's waiters. */
void
job_notify(Job *job)
{
	RefreshEntry *e;
	ConditionVariable *cv;

	if (job->notified)
		return;
	job->notified = true;
	if (!job->write_pending)
		job->state = RJ_DONE;

	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	e = hash_search(oauth_requests, &job->id, HASH_FIND, NULL);
	if (e && e->gen == job->gen)
	{
		oauth_set_state_locked(e, RJ_DONE);
		e->done_gen = job->gen;
		e->outcome = job->outcome;
		e->next_attempt = job->outcome == RO_TRANSIENT ? job->next_attempt : 0;
		strlcpy(e->message, job->message ? job->message : "", OUTCOME_MSG_LEN);
		if (e->nwaiters <= 0)
			hash_search(oauth_requests, &job->id, HASH_REMOVE, NULL);
	}
	LWLockRelease(oauth_shared->lock);
	cv = oauth_entry_cv(&job->id);
	ConditionVariableBroadcast(cv);
	ConditionVariableBroadcast(&oauth_shared->space_cv);
}

/*
 * Count a job's outcome, publish it, forget the job (wiping its secrets).
 * Counted first: a waiter woken by job_notify may read the counters at once.
 */
void
job_publish(Job *job)
{
	if (job->call)
		oauth_stats_call(job->provider, job->outcome, job->started, job->answered_at);
	switch (job->outcome)
	{
		case RO_REFRESHED:
			oauth_stat_add(ST_SUCCEEDED, 1);
			break;
		case RO_TRANSIENT:
			oauth_stat_add(ST_TRANSIENT, 1);
			break;
		case RO_REAUTH:
		case RO_PROVIDER:
			if (job->call)
				oauth_stat_add(ST_PERMANENT, 1);
			break;
		default:
			break;
	}
	job_notify(job);
	job->state = RJ_DONE;
	queue_forget(job);
	if (job->call)
		http_free(job->call);
	provider_conf_wipe(&job->conf);
	if (job->ans.access_token)
		explicit_bzero(job->ans.access_token, strlen(job->ans.access_token));
	if (job->ans.refresh_token)
		explicit_bzero(job->ans.refresh_token, strlen(job->ans.refresh_token));
	MemoryContextDelete(job->cxt);
}

/* ---- step 1: prepare ------------------------------------------------------ */

static char *
getstr(HeapTuple t, TupleDesc d, int col)
{
	return SPI_getvalue(t, d, col);
}

/*
 * Mark the token a caller reported refused (token_rejected) as expired, so
 * that it is never served again, whatever becomes of the refresh: queued
 * behind others, in flight, failed, or its provider paused.  Once per
 * refused version; a no-op when the row moved on.  Inside a batch.
 */
static void
mark_rejected(Job *job)
{
	Datum		rv[2];

	if (!(job->flags & REQ_REJECTED) || job->rejected_version <= job->rejected_marked)
		return;
	prepare_plans();
	rv[0] = UUIDPGetDatum(&job->id);
	rv[1] = Int64GetDatum(job->rejected_version);
	if (exec_plan(plan_rejected, rv, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not mark a rejected token");
	if (SPI_processed > 0)
	{
		char	   *ws = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		char	   *prov = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

		add_event(ws, &job->id, prov, "token_rejected", "{}");
	}
	job->rejected_marked = job->rejected_version;
}

static void
mark_rejected_in_cxt(Job *job)
{
	MemoryContext old = MemoryContextSwitchTo(job->cxt);

	mark_rejected(job);
	MemoryContextSwitchTo(old);
}

/*
 * Jobs that a caller's token_rejected reached (new or joined, in any
 * state): mark their refused tokens now, one batch, before anything else
 * is sent.  A job whose row is locked is marked again when it is prepared
 * or finished.
 */
void
jobs_mark_rejected(List *jobs)
{
	ListCell   *lc;

	if (jobs == NIL)
		return;
	begin_work("oauth_tokens: marking refused tokens");
	foreach(lc, jobs)
	{
		Job		   *job = lfirst(lc);
		bool		failed;
		char	   *err;

		if (job->idstr == NULL)
			job->idstr = MemoryContextStrdup(job->cxt, oauth_uuid_str(&job->id));
		run_isolated(job, mark_rejected_in_cxt, &failed, &err, NULL);
		if (failed)
			ereport(LOG,
					(errmsg("oauth_tokens: could not yet mark a refused token: %s", err)));
	}
	end_work();
}

/*
 * Read the row and build the request.  On return the job is SENDING
 * (job->call is set), ANSWERED (a failure to record: job->ans), DONE (an
 * outcome, nothing to record), or still QUEUED (deferred: its provider is
 * at its limit).  Runs in a subtransaction, in job->cxt.
 */
static void
prepare_job(Job *job)
{
	MemoryContext old = MemoryContextSwitchTo(job->cxt);
	HeapTuple	t;
	TupleDesc	d;
	bool		isnull;
	Datum		arg = UUIDPGetDatum(&job->id);
	FormField	fields[3];
	int			nf = 0;
	char	   *refresh = NULL;
	char	   *grant_type;
	Jsonb	   *metadata;
	TokenRequest req;
	ArrayType  *scope_arr;
	const char *blocked;

	/* a copy, a standby, a subscriber or switched off: send nothing (identity.c) */
	if (!oauth_traffic_allowed(&blocked))
	{
		job->state = RJ_DONE;
		job->outcome = RO_UNAVAILABLE;
		job->message = pstrdup(blocked);
		MemoryContextSwitchTo(old);
		return;
	}

	prepare_plans();
	if (exec_plan(plan_read, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read connection");
	if (SPI_processed == 0)
	{
		job->state = RJ_DONE;
		job->outcome = RO_NOT_FOUND;
		MemoryContextSwitchTo(old);
		return;
	}
	t = SPI_tuptable->vals[0];
	d = SPI_tuptable->tupdesc;
	mark_rejected(job);			/* runs its own statement: t stays valid */
	job->workspace_id = getstr(t, d, 1);
	job->provider = getstr(t, d, 2);
	{
		Datum		lim = SPI_getbinval(t, d, 21, &isnull);

		job->provider_limit = isnull ? 0 : DatumGetInt32(lim);
	}
	if (DatumGetBool(SPI_getbinval(t, d, 8, &isnull)))
	{
		job->state = RJ_DONE;
		job->outcome = RO_REVOKED;
		MemoryContextSwitchTo(old);
		return;
	}
	if (DatumGetBool(SPI_getbinval(t, d, 9, &isnull)))
	{
		job->state = RJ_DONE;
		job->outcome = RO_REAUTH;
		job->message = getstr(t, d, 10);
		MemoryContextSwitchTo(old);
		return;
	}
	if (DatumGetBool(SPI_getbinval(t, d, 22, &isnull)))
	{
		job->state = RJ_DONE;
		job->outcome = RO_PROVIDER;
		job->message = psprintf("provider paused: %s", getstr(t, d, 23));
		if (exec_plan(plan_hold_off, &arg, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not hold off a paused provider's connection");
		MemoryContextSwitchTo(old);
		return;
	}
	if (DatumGetInt64(SPI_getbinval(t, d, 3, &isnull)) != job->seen_version)
	{
		job->state = RJ_DONE;
		job->outcome = RO_NOT_NEEDED;
		MemoryContextSwitchTo(old);
		return;
	}
	if (job->provider_limit > 0 && queue_provider_running(job->provider) >= job->provider_limit)
	{
		MemoryContextSwitchTo(old);
		return;					/* deferred */
	}

	grant_type = getstr(t, d, 4);
	job->client_credentials = strcmp(grant_type, "client_credentials") == 0;
	job->conf.name = job->provider;
	job->conf.token_url = getstr(t, d, 11);
	job->conf.client_id = getstr(t, d, 12);
	{
		Datum		cs = SPI_getbinval(t, d, 13, &isnull);

		if (!isnull)
			job->conf.client_secret = oauth_open(DatumGetByteaPP(cs),
												 oauth_provider_context(job->provider));
	}
	job->conf.auth_method = getstr(t, d, 14);
	job->conf.body_format = getstr(t, d, 15);
	job->conf.extra_params = DatumGetJsonbPCopy(SPI_getbinval(t, d, 16, &isnull));
	job->conf.extra_headers = DatumGetJsonbPCopy(SPI_getbinval(t, d, 17, &isnull));
	{
		Datum		re = SPI_getbinval(t, d, 18, &isnull);

		if (!isnull)
			job->conf.reauth_errors = text_array_to_list(re);
	}
	job->conf.allowed_hosts = text_array_to_list(SPI_getbinval(t, d, 24, &isnull));
	job->conf.scope_separator = getstr(t, d, 19);
	job->conf.scope_on_refresh = DatumGetBool(SPI_getbinval(t, d, 20, &isnull));
	metadata = DatumGetJsonbPCopy(SPI_getbinval(t, d, 7, &isnull));
	scope_arr = DatumGetArrayTypePCopy(SPI_getbinval(t, d, 6, &isnull));

	if (strcmp(grant_type, "client_credentials") == 0)
	{
		fields[nf++] = (FormField) {"grant_type", "client_credentials"};
	}
	else
	{
		Datum		rt = SPI_getbinval(t, d, 5, &isnull);

		if (isnull && oauth_access_still_valid(&job->id))
		{
			/* nothing to refresh with, but the token is not dead yet */
			job->state = RJ_DONE;
			job->outcome = RO_NOT_NEEDED;
			job->message = pstrdup("no refresh token; the access token is used until it expires");
			MemoryContextSwitchTo(old);
			return;
		}
		if (isnull)
		{
			job->state = RJ_ANSWERED;
			job->outcome = RO_REAUTH;
			job->message = pstrdup("no refresh token stored");
			job->ans.klass = RO_REAUTH;
			job->ans.error_code = pstrdup("no_refresh_token");
			job->ans.message = job->message;
			MemoryContextSwitchTo(old);
			return;
		}
		refresh = oauth_open(DatumGetByteaPP(rt), oauth_conn_context(job->idstr, "refresh"));
		fields[nf++] = (FormField) {"grant_type", "refresh_token"};
		fields[nf++] = (FormField) {"refresh_token", refresh};
	}
	if (ArrayGetNItems(ARR_NDIM(scope_arr), ARR_DIMS(scope_arr)) > 0 &&
		(job->conf.scope_on_refresh || strcmp(grant_type, "client_credentials") == 0))
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		StringInfoData joined;

		initStringInfo(&joined);
		deconstruct_array(scope_arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
		{
			if (nulls[i])
				continue;
			if (joined.len > 0)
				appendStringInfoString(&joined, job->conf.scope_separator);
			appendStringInfoString(&joined, TextDatumGetCString(elems[i]));
		}
		fields[nf++] = (FormField) {"scope", joined.data};
	}

	build_token_request(&job->conf, metadata, fields, nf, true, &req);
	job->call = http_start("POST", req.url, req.headers, req.nheaders,
						   req.body.data, req.body.len, job);
	wipe_token_request(&req);
	if (refresh)
		explicit_bzero(refresh, strlen(refresh));
	job->started = GetCurrentTimestamp();
	oauth_stat_add(ST_ATTEMPTED, 1);
	MemoryContextSwitchTo(old);
}

/*
 * Step 1 for one job, inside a batch (begin_work): see prepare_job for the
 * states it leaves the job in.  A failure here is a transient failure to
 * record (job->ans, ANSWERED), not an error.
 */
void
job_prepare(Job *job)
{
	bool		failed;
	char	   *err = NULL;

	if (job->idstr == NULL)
		job->idstr = MemoryContextStrdup(job->cxt, oauth_uuid_str(&job->id));
	run_isolated(job, prepare_job, &failed, &err, NULL);
	if (failed)
	{
		/* the row or its provider could not be used: a failure to record */
		job->state = RJ_ANSWERED;
		job->outcome = RO_TRANSIENT;
		job->ans.klass = RO_TRANSIENT;
		job->ans.message = err;
		job->message = err;
		if (job->call)
		{
			http_free(job->call);
			job->call = NULL;
		}
	}
}

/*
 * Jobs that ended before any HTTP call: ANSWERED ones have a result to
 * record (a failure in step 1) and go through step 3; DONE ones are
 * published as they are.  Outside any batch.
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

/* ---- step 3: finish ------------------------------------------------------- */

/*
 * Step 3 for one job: apply the provider's answer (job->ans) to the
 * connection, with a version check, and record the event.  Runs in a
 * subtransaction of a batch, in job->cxt.
 */
static void
finish_job(Job *job)
{
	MemoryContext old = MemoryContextSwitchTo(job->cxt);
	TokenAnswer *a = &job->ans;
	int64		ms = job->started ? (GetCurrentTimestamp() - job->started) / 1000 : 0;
	char	   *detail;

	prepare_plans();
	if (a->klass != RO_REFRESHED)
		mark_rejected(job);		/* not yet done if its row was locked */
	if (a->klass == RO_PROVIDER && url_host_templated(job->conf.token_url))
	{
		/*
		 * The host came from this connection's metadata: its rejection says
		 * nothing about the provider's other tenants, so do not pause them.
		 */
		a->klass = RO_TRANSIENT;
		a->message = psprintf("%s (from this connection's host)", a->message);
	}
	job->outcome = a->klass;
	job->message = a->message;
	if (a->klass == RO_REFRESHED && job->client_credentials && a->refresh_token)
	{
		/* never stored for this grant: renewal uses the client's credentials */
		explicit_bzero(a->refresh_token, strlen(a->refresh_token));
		a->refresh_token = NULL;
	}
	if (a->klass == RO_REFRESHED)
	{
		Datum		v[9];
		char		n[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
		bytea	   *at = oauth_seal(a->access_token, strlen(a->access_token),
									oauth_conn_context(job->idstr, "access"));

		v[0] = UUIDPGetDatum(&job->id);
		v[1] = PointerGetDatum(at);
		if (a->refresh_token)
			v[2] = PointerGetDatum(oauth_seal(a->refresh_token, strlen(a->refresh_token),
											  oauth_conn_context(job->idstr, "refresh")));
		else
			n[2] = 'n';
		v[3] = Int64GetDatum(a->expires_in);
		if (!a->has_expires_in)
			n[3] = 'n';
		v[4] = Int64GetDatum(a->rt_expires_in);
		if (!a->has_rt_expires_in)
			n[4] = 'n';
		if (a->scope)
			v[5] = CStringGetTextDatum(a->scope);
		else
			n[5] = 'n';
		v[6] = DirectFunctionCall1(jsonb_in, CStringGetDatum(a->metadata_json ? a->metadata_json : "{}"));
		v[7] = Int64GetDatum(job->seen_version);
		/* expiry counts from the answer, not from a retried write */
		v[8] = TimestampTzGetDatum(job->answered_at ? job->answered_at : GetCurrentTimestamp());
		/* the answer's tokens stay in job->ans until publish(): a write that
		 * meets a locked row is retried with them */
		if (exec_plan(plan_success, v, n, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not store refreshed token");
		if (SPI_processed == 0)
		{
			/* the row moved on (re-authorized, revoked, deleted): discard */
			job->outcome = RO_NOT_NEEDED;
			job->message = pstrdup("superseded by a newer change to the connection");
			MemoryContextSwitchTo(old);
			return;
		}
		detail = psprintf("{\"http_status\": %ld, \"duration_ms\": " INT64_FORMAT
						  ", \"rotated\": %s, \"expires_in\": %s, \"trigger\": %s}",
						  a->http_status, ms, a->refresh_token ? "true" : "false",
						  a->has_expires_in ? psprintf(INT64_FORMAT, a->expires_in) : "null",
						  (job->flags & REQ_SWEEP) ? "\"sweep\"" :
						  (job->flags & REQ_FORCE) ? "\"forced\"" : "\"caller\"");
		add_event(job->workspace_id, &job->id, job->provider, "refreshed", detail);
	}
	else if (a->klass == RO_REAUTH)
	{
		Datum		v[3];

		v[0] = UUIDPGetDatum(&job->id);
		v[1] = CStringGetTextDatum(a->error_code ? a->error_code : "invalid_grant");
		v[2] = Int64GetDatum(job->seen_version);
		if (exec_plan(plan_reauth, v, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not mark connection");
		if (SPI_processed > 0)
			add_event(job->workspace_id, &job->id, job->provider, "reauth_required",
					  psprintf("{\"error\": %s, \"http_status\": %ld, \"message\": %s}",
							   json_str(a->error_code), a->http_status, json_str(a->message)));
		job->message = a->error_code;
	}
	else if (a->klass == RO_PROVIDER)
	{
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
	else
	{
		Datum		v[4];
		TimestampTz next = 0;

		v[0] = UUIDPGetDatum(&job->id);
		v[1] = CStringGetTextDatum(a->message ? a->message : "refresh failed");
		v[2] = Float8GetDatum((double) a->retry_after_s);
		v[3] = Int64GetDatum(job->seen_version);
		if (exec_plan(plan_transient, v, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not record failure");
		if (SPI_processed > 0)
		{
			bool		isnull;

			next = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 1, &isnull));
			job->next_attempt = next;
			add_event(job->workspace_id, &job->id, job->provider, "refresh_failed",
					  psprintf("{\"class\": \"transient\", \"error\": %s, \"http_status\": %ld, "
							   "\"next_attempt_at\": %s, \"retry_after\": %d}",
							   json_str(a->message), a->http_status,
							   json_str(timestamptz_to_str(next)), a->retry_after_s));
		}
		job->outcome = RO_TRANSIENT;
	}
	MemoryContextSwitchTo(old);
}

/*
 * Write every finished job: one transaction, a subtransaction each.  Row
 * locks are waited for briefly (lock_timeout): the worker must not stall,
 * nor deadlock with a session that holds a connection's row lock and waits
 * for a refresh.  A new token that meets a locked row is not lost: its
 * waiters hear "transient", and the answer is kept and written again until
 * the lock is released; meanwhile no new refresh of that connection starts.
 */
void
jobs_finish(List *done)
{
	ListCell   *lc;

	if (done == NIL)
		return;
	begin_work("oauth_tokens: storing refresh results");
	foreach(lc, done)
	{
		Job		   *job = lfirst(lc);
		bool		failed;
		char	   *err;
		int			sqlstate = 0;

		run_isolated(job, finish_job, &failed, &err, &sqlstate);
		if (failed && job->ans.klass == RO_REFRESHED &&
			sqlstate == ERRCODE_LOCK_NOT_AVAILABLE)
		{
			if (!job->write_pending)
			{
				/* waiters hear at once; the job stays ANSWERED, kept */
				job->outcome = RO_TRANSIENT;
				job->message = pstrdup("the connection's row is locked by another transaction; "
									   "the new token is stored once it is released");
				job->write_pending = true;
				job_notify(job);
				queue_forget(job);
			}
			if (dlist_is_empty(&pending_writes) && next_write_retry < GetCurrentTimestamp())
				next_write_retry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 200);
			dlist_push_tail(&pending_writes, &job->node);
			continue;
		}
		if (failed)
		{
			job->outcome = RO_TRANSIENT;
			job->message = err;
			ereport(WARNING,
					(errmsg("oauth_tokens: could not store the result of a refresh: %s", err)));
		}
		job->write_pending = false;
	}
	end_work();
	foreach(lc, done)
	{
		Job		   *job = lfirst(lc);

		if (!job->write_pending)
			job_publish(job);
	}
}

/* Try again to store answers whose row was locked. */
void
jobs_retry_writes(void)
{
	List	   *again = NIL;
	dlist_mutable_iter it;

	if (dlist_is_empty(&pending_writes) || GetCurrentTimestamp() < next_write_retry)
		return;
	next_write_retry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 200);
	dlist_foreach_modify(it, &pending_writes)
	{
		Job		   *job = dlist_container(Job, node, it.cur);

		dlist_delete(&job->node);
		again = lappend(again, job);
	}
	jobs_finish(again);
	list_free(again);
}

/* Is an answer for this connection waiting to be stored? */
bool
jobs_write_pending_for(const pg_uuid_t *id)
{
	dlist_iter	it;

	dlist_foreach(it, &pending_writes)
	{
		Job		   *j = dlist_container(Job, node, it.cur);

		if (memcmp(&j->id, id, sizeof(pg_uuid_t)) == 0)
			return true;
	}
	return false;
}

/* Collect finished HTTP calls and jobs that failed before their call. */
void
jobs_collect_finished(void)
{
	HttpCall   *call;
	List	   *done = NIL;

	while ((call = http_next_done()) != NULL)
	{
		Job		   *job = (Job *) call->owner;
		MemoryContext old = MemoryContextSwitchTo(job->cxt);

		job->answered_at = GetCurrentTimestamp();

		/*
		 * Parsing a hostile body can raise an error (e.g. stack depth in
		 * the JSON parser); it must fail this job, not the worker.
		 */
		PG_TRY();
		{
			classify_answer(&job->conf, call, &job->ans);
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(job->cxt);
			FlushErrorState();
			memset(&job->ans, 0, sizeof(job->ans));
			job->ans.klass = RO_TRANSIENT;
			job->ans.http_status = call->status;
			job->ans.message = pstrdup("the provider's answer could not be parsed");
		}
		PG_END_TRY();
		MemoryContextSwitchTo(old);
		queue_left_running(job);
		job_set_state(job, RJ_ANSWERED);
		done = lappend(done, job);
	}
	jobs_finish(done);
	list_free(done);
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
