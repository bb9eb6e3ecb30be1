/*-------------------------------------------------------------------------
 *
 * job.c
 *	  A refresh job's life and state, and its first step and its SQL.
 *
 * A job has three steps, and no transaction is open between them; its
 * state (RefreshJobState) says which it is in:
 *	1. prepare (job_prepare, inside a batch), QUEUED -> SENDING: re-read the
 *	   row; skip the job (-> DONE) if its version moved since the request
 *	   (someone else refreshed), or if it is revoked, dead or its provider
 *	   paused; decrypt the refresh token and client secret; build the
 *	   request; hand it to curl.  A failure here is a result to record
 *	   (-> ANSWERED); a provider at its limit leaves the job QUEUED.
 *	2. HTTP, in the multi handle, with nothing locked (http.c); SENDING ->
 *	   ANSWERED when curl is done (jobs_collect_finished).
 *	3. finish (jobs_finish, finish.c), ANSWERED -> DONE: classify the
 *	   answer; store it with a version check so a stale result never
 *	   overwrites a newer one; record the event; commit; then publish the
 *	   outcome and wake the waiters (job_publish).
 * A token a caller reported refused (token_rejected) is marked expired in
 * its own small batch as soon as the worker sees the report, whatever the
 * job's state (jobs_mark_rejected), and again in steps 1 and 3 if its row
 * was locked then.
 * Steps 1 and 3 run batches of jobs in one transaction, each job in its own
 * subtransaction (batch.c), so one bad row cannot fail the others.
 * This file has steps 1 and 2's start, the job's life and its state;
 * finish.c has step 3.
 *
 * Rules:
 *	- A job belongs to the worker alone.  Its shared entry (shmem.h) is
 *	  written from here only by job_set_state() and job_notify(), under
 *	  oauth_shared->lock, and only while the entry still has the job's
 *	  generation.
 *	- A job's memory is its own context (job->cxt), deleted by job_publish()
 *	  after wiping the secrets it held.
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

static SPIPlanPtr plan_read = NULL;
static SPIPlanPtr plan_hold_off = NULL;
static SPIPlanPtr plan_rejected = NULL;
static SPIPlanPtr plan_no_rt = NULL;

/*
 * Forget the prepared statements of steps 1 and 3: the schema changed under
 * the worker (ALTER EXTENSION UPDATE); they are made again on next use.
 */
void
job_plans_reset(void)
{
	SPIPlanPtr *plans[] = {&plan_read, &plan_hold_off, &plan_rejected, &plan_no_rt};

	for (int i = 0; i < lengthof(plans); i++)
	{
		if (*plans[i])
			SPI_freeplan(*plans[i]);
		*plans[i] = NULL;
	}
	finish_plans_reset();
}

/* Prepare the statements of step 1, once for the worker's life. */
static void
prepare_plans(void)
{
	if (plan_rejected)
		return;
	plan_read = prepare_saved(psprintf(
		"SELECT c.workspace_id, c.provider, c.version, c.grant_type, "
		"       c.refresh_token_ciphertext, c.scope, c.metadata, "
		"       c.revoked_at IS NOT NULL AS revoked, "
		"       c.reauth_required_at IS NOT NULL AS reauth_required, c.last_refresh_error, "
		PROVIDER_CONF_COLUMNS ", %s AS rotation_grace_ms "
		"  FROM oauth.connections c JOIN oauth.providers p ON p.name OPERATOR(pg_catalog.=) c.provider "
		" WHERE c.id OPERATOR(pg_catalog.=) $1",
		/* a 1.0 schema (before ALTER EXTENSION UPDATE) has no rotation_grace */
		answers_durable_schema ?
		"CAST(EXTRACT(epoch FROM p.rotation_grace) * 1000 AS pg_catalog.int8)" :
		"NULL::pg_catalog.int8"),
		1, (Oid[]) {UUIDOID});
	/* callers inside the refresh window of a paused provider's connection
	 * would otherwise post a request on every call */
	plan_hold_off = prepare_saved(
		"UPDATE oauth.connections SET refresh_after = greatest(refresh_after, now() + interval '1 minute') "
		" WHERE id = (SELECT id FROM oauth.connections WHERE id = $1 FOR UPDATE SKIP LOCKED)",
		1, (Oid[]) {UUIDOID});
	/* a connection without a refresh token is next due when its token expires */
	plan_no_rt = prepare_saved(
		"UPDATE oauth.connections SET refresh_after = expires_at "
		" WHERE id = (SELECT id FROM oauth.connections WHERE id = $1 FOR UPDATE SKIP LOCKED) "
		"   AND refresh_token_ciphertext IS NULL AND expires_at IS NOT NULL",
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

/* Is a job for connection id in list (one of the worker's own lists)? */
bool
job_in_list(dlist_head *list, const pg_uuid_t *id)
{
	dlist_iter	it;

	dlist_foreach(it, list)
	{
		Job		   *j = dlist_container(Job, node, it.cur);

		if (memcmp(&j->id, id, sizeof(pg_uuid_t)) == 0)
			return true;
	}
	return false;
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

/*
 * Mark the token a caller reported refused (token_rejected) as expired, so
 * that it is never served again, whatever becomes of the refresh: queued
 * behind others, in flight, failed, or its provider paused.  Once per
 * refused version; a no-op when the row moved on.  Inside a batch.
 */
void
job_mark_rejected(Job *job)
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

/* job_mark_rejected in the job's memory context, for run_isolated. */
static void
mark_rejected_in_cxt(Job *job)
{
	MemoryContext old = MemoryContextSwitchTo(job->cxt);

	job_mark_rejected(job);
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
	job_mark_rejected(job);	/* runs its own statement: t stays valid */
	job->workspace_id = spi_column_text(t, d, "workspace_id");
	job->provider = spi_column_text(t, d, "provider");
	provider_conf_read(t, d, &job->conf);
	job->provider_limit = job->conf.max_concurrency;
	{
		Datum		g = spi_column(t, d, "rotation_grace_ms", &isnull);
		char	   *last_error = spi_column_text(t, d, "last_refresh_error");

		job->rotation_grace_ms = isnull ? -1 : DatumGetInt64(g);
		/* the previous attempt may have spent the refresh token (durable.c) */
		job->after_no_answer = last_error &&
			strncmp(last_error, ANSWER_LOST_PREFIX, strlen(ANSWER_LOST_PREFIX)) == 0;
		job->templated_url = job->conf.token_url && strchr(job->conf.token_url, '{') != NULL;
	}
	if (DatumGetBool(spi_column(t, d, "revoked", &isnull)))
	{
		job->state = RJ_DONE;
		job->outcome = RO_REVOKED;
		MemoryContextSwitchTo(old);
		return;
	}
	if (DatumGetBool(spi_column(t, d, "reauth_required", &isnull)))
	{
		job->state = RJ_DONE;
		job->outcome = RO_REAUTH;
		job->message = spi_column_text(t, d, "last_refresh_error");
		MemoryContextSwitchTo(old);
		return;
	}
	if (job->conf.paused)
	{
		job->state = RJ_DONE;
		job->outcome = RO_PROVIDER;
		job->message = psprintf("provider paused: %s", job->conf.pause_reason);
		if (exec_plan(plan_hold_off, &arg, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not hold off a paused provider's connection");
		MemoryContextSwitchTo(old);
		return;
	}
	if (DatumGetInt64(spi_column(t, d, "version", &isnull)) != job->seen_version)
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

	grant_type = spi_column_text(t, d, "grant_type");
	job->client_credentials = strcmp(grant_type, "client_credentials") == 0;
	provider_conf_open_secret(&job->conf);
	metadata = DatumGetJsonbPCopy(spi_column(t, d, "metadata", &isnull));
	scope_arr = DatumGetArrayTypePCopy(spi_column(t, d, "scope", &isnull));

	if (strcmp(grant_type, "client_credentials") == 0)
	{
		fields[nf++] = (FormField) {"grant_type", "client_credentials"};
	}
	else
	{
		Datum		rt = spi_column(t, d, "refresh_token_ciphertext", &isnull);

		if (isnull && oauth_access_still_valid(&job->id))
		{
			/* nothing to refresh with, but the token is not dead yet */
			if (exec_plan(plan_no_rt, &arg, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not reschedule a connection without a refresh token");
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
	if (job->first_sent == 0)
		job->first_sent = job->started;
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
