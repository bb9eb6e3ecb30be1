/*-------------------------------------------------------------------------
 *
 * job.c
 *	  A refresh job's life and state, and its first step and its SQL.
 *
 * A job has three steps, and no transaction is open between them; its
 * state (RefreshJobState; the moves are in worker.h) says where it is:
 *	1. prepare (job_prepare, inside a batch of queue_start_jobs): re-read the
 *	   row; say the job needs no call (an outcome) if its version moved
 *	   since the request (someone else refreshed), or if it is revoked, dead
 *	   or its provider paused; decrypt the refresh token and client secret;
 *	   build the request.  The queue then checks the provider's limit and
 *	   hands it to curl (job_send).
 *	2. HTTP, in the multi handle, with nothing locked (http.c); the queue
 *	   collects the call and classifies its answer (job_answered).
 *	3. finish (finish.c): store the result with a version check; commit;
 *	   publish the outcome and wake the waiters (job_publish).
 * A token a caller reported refused (token_rejected) is marked expired in
 * its own small batch as soon as the worker sees the report, whatever the
 * job's state (jobs_mark_rejected), and again in steps 1 and 3 if its row
 * was locked then.
 *
 * Rules:
 *	- A job belongs to the worker alone.  Its state changes in job_move()
 *	  only, by the moves of JOB_MOVES (worker.h); its shared entry follows
 *	  (oauth_entry_follow, shmem.c).
 *	- The worker's jobs by connection (job_find) hold a job from its
 *	  creation until it is published or its answer kept.
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
#include "utils/hsearch.h"
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
#include "batch.h"
#include "durable.h"
#include "job.h"

static SPIPlanPtr plan_read = NULL;
static SPIPlanPtr plan_hold_off = NULL;
static SPIPlanPtr plan_rejected = NULL;
static SPIPlanPtr plan_no_rt = NULL;

static const uint32 job_moves[RJ_NUM_STATES] = JOB_MOVES;

MemoryContext jobs_cxt = NULL;

/* connection id -> its current job (not yet published, answer not kept) */
typedef struct JobById
{
	pg_uuid_t	id;
	Job		   *job;
} JobById;
static HTAB *jobs_by_id = NULL;

/*
 * Forget the prepared statements of step 1: the schema changed under the
 * worker (ALTER EXTENSION UPDATE); they are made again on next use.
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
}

/* The jobs' memory, for the worker's life (worker.c, at start-up). */
void
job_memory_init(void)
{
	jobs_cxt = AllocSetContextCreate(TopMemoryContext, "oauth_tokens jobs", ALLOCSET_DEFAULT_SIZES);
}

static JobFn isolated_fn;

static void
call_job_fn(void *arg)
{
	isolated_fn((Job *) arg);
}

/*
 * Run fn(job) in its own subtransaction (try_isolated, batch.c).  An error
 * becomes *failed, its message (in job->cxt) and its SQLSTATE; the batch
 * goes on.
 */
void
run_isolated(Job *job, JobFn fn, bool *failed, char **errmsg_out, int *sqlstate)
{
	JobFn		outer = isolated_fn;

	isolated_fn = fn;
	*failed = !try_isolated(call_job_fn, job, job->cxt, errmsg_out, sqlstate);
	isolated_fn = outer;
}

/* jobs_by_id, created on first use in jobs_cxt. */
static HTAB *
by_id(void)
{
	if (jobs_by_id == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(pg_uuid_t);
		ctl.entrysize = sizeof(JobById);
		ctl.hcxt = jobs_cxt;
		jobs_by_id = hash_create("oauth_tokens jobs by id", 1024, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	return jobs_by_id;
}

/* The current job of connection id, or NULL. */
Job *
job_find(const pg_uuid_t *id)
{
	JobById    *j = hash_search(by_id(), id, HASH_FIND, NULL);

	return j ? j->job : NULL;
}

/* Forget job as its connection's current job (published, or kept). */
void
job_forget(Job *job)
{
	JobById    *j = hash_search(by_id(), &job->id, HASH_FIND, NULL);

	if (j && j->job == job)
		hash_search(by_id(), &job->id, HASH_REMOVE, NULL);
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
		worker_schema >= SCHEMA_1_1 ?
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
 * A new job for the request in entry e (a copy), in its own memory
 * context, born in state (QUEUED, or KEPT for a replayed answer).  A
 * QUEUED job becomes its connection's current job (job_find).
 */
Job *
job_create(const pg_uuid_t *id, const RefreshEntry *e, RefreshJobState state)
{
	MemoryContext cxt;
	Job		   *job;

	cxt = AllocSetContextCreate(jobs_cxt, "oauth job", ALLOCSET_SMALL_SIZES);
	job = MemoryContextAllocZero(cxt, sizeof(Job));
	job->cxt = cxt;
	job->id = *id;
	job->gen = e->gen;
	job->state = state;
	job->seen_version = e->seen_version;
	job->flags = e->flags;
	job->rejected_version = e->rejected_version;
	job->lane = (e->flags & REQ_SWEEP) ? LANE_SWEEPS : LANE_CALLERS;
	if (state == RJ_QUEUED)
	{
		JobById    *j = hash_search(by_id(), id, HASH_ENTER, NULL);

		j->job = job;
	}
	return job;
}

/*
 * Move a job to state "to", if JOB_MOVES (worker.h) allows it; its entry
 * follows.  Moving to a told state (RELEASED, KEPT, DONE) gives the entry
 * the job's outcome, so set job->outcome, ->message and ->next_attempt
 * first.  A move outside the table is a bug: the worker stops (and its
 * callers hear "unavailable") rather than go on in a state nobody planned.
 */
void
job_move(Job *job, RefreshJobState to)
{
	RefreshResult r;

	if (!(job_moves[job->state] & (1 << to)))
		elog(ERROR, "oauth_tokens worker: a refresh job cannot move from %s to %s",
			 refresh_job_state_names[job->state], refresh_job_state_names[to]);
	job->state = to;
	if (RJ_TOLD(to))
	{
		r.outcome = job->outcome;
		r.next_attempt = job->next_attempt;
		strlcpy(r.message, job->message ? job->message : "", OUTCOME_MSG_LEN);
	}
	oauth_entry_follow(&job->id, job->gen, to, RJ_TOLD(to) ? &r : NULL);
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
	job_move(job, RJ_DONE);
	job_forget(job);
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
		char	   *ws = spi_column_text(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, "workspace_id");
		char	   *prov = spi_column_text(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, "provider");

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

/* The job needs no call: its outcome (and message) is known. */
static void
conclude(Job *job, RefreshOutcome outcome, char *message)
{
	job->outcome = outcome;
	job->message = message;
}

/*
 * What the row says before anything is sent: NULL, or the outcome is set
 * (job->outcome) and nothing is sent.  Reads the flags of the row, in the
 * order of their weight; a paused provider's connection is held off.
 */
static bool
row_forbids_call(Job *job, HeapTuple t, TupleDesc d, Datum *arg)
{
	bool		isnull;

	if (DatumGetBool(spi_column(t, d, "revoked", &isnull)))
		conclude(job, RO_REVOKED, NULL);
	else if (DatumGetBool(spi_column(t, d, "reauth_required", &isnull)))
		conclude(job, RO_REAUTH, spi_column_text(t, d, "last_refresh_error"));
	else if (job->conf.paused)
	{
		conclude(job, RO_PROVIDER, psprintf("provider paused: %s", job->conf.pause_reason));
		/* callers inside its refresh window would post on every call */
		if (exec_plan(plan_hold_off, arg, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not hold off a paused provider's connection");
	}
	else if (DatumGetInt64(spi_column(t, d, "version", &isnull)) != job->seen_version)
		conclude(job, RO_NOT_NEEDED, NULL);
	return job->outcome != RO_NONE;
}

/* Remember what the row tells about the job (provider, lost answers, URL). */
static void
read_job_facts(Job *job, HeapTuple t, TupleDesc d)
{
	bool		isnull;
	Datum		g = spi_column(t, d, "rotation_grace_ms", &isnull);
	char	   *last_error = spi_column_text(t, d, "last_refresh_error");

	job->workspace_id = spi_column_text(t, d, "workspace_id");
	job->provider = spi_column_text(t, d, "provider");
	provider_conf_read(t, d, &job->conf);
	job->provider_limit = job->conf.max_concurrency;
	job->rotation_grace_ms = isnull ? -1 : DatumGetInt64(g);
	/* the previous attempt may have spent the refresh token */
	if (job->lost == LOST_NONE && last_error &&
		strncmp(last_error, ANSWER_LOST_PREFIX, strlen(ANSWER_LOST_PREFIX)) == 0)
		job->lost = LOST_BEFORE;
	job->templated_url = job->conf.token_url && strchr(job->conf.token_url, '{') != NULL;
}

/* The row's scope, joined with the provider's separator; NULL if empty. */
static char *
joined_scope(Job *job, ArrayType *scope_arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	StringInfoData joined;

	if (ArrayGetNItems(ARR_NDIM(scope_arr), ARR_DIMS(scope_arr)) == 0)
		return NULL;
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
	return joined.data;
}

/*
 * Build the job's request from the row (job->req).  A refresh grant
 * without a refresh token concludes instead: "not needed" while its access
 * token lives (rescheduled to its expiry), else a dead grant to store.
 */
static void
build_request(Job *job, HeapTuple t, TupleDesc d, Datum *arg)
{
	bool		isnull;
	FormField	fields[3];
	int			nf = 0;
	char	   *refresh = NULL;
	char	   *grant_type = spi_column_text(t, d, "grant_type");
	char	   *scope;

	job->client_credentials = strcmp(grant_type, "client_credentials") == 0;
	provider_conf_open_secret(&job->conf);
	if (job->client_credentials)
		fields[nf++] = (FormField) {"grant_type", "client_credentials"};
	else
	{
		Datum		rt = spi_column(t, d, "refresh_token_ciphertext", &isnull);

		if (isnull && oauth_access_still_valid(&job->id))
		{
			if (exec_plan(plan_no_rt, arg, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not reschedule a connection without a refresh token");
			conclude(job, RO_NOT_NEEDED,
					 pstrdup("no refresh token; the access token is used until it expires"));
			return;
		}
		if (isnull)
		{
			/* a dead grant: a result to store */
			job->ans.klass = RO_REAUTH;
			job->ans.error_code = pstrdup("no_refresh_token");
			job->ans.message = pstrdup("no refresh token stored");
			return;
		}
		refresh = oauth_open(DatumGetByteaPP(rt), oauth_conn_context(job->idstr, "refresh"));
		fields[nf++] = (FormField) {"grant_type", "refresh_token"};
		fields[nf++] = (FormField) {"refresh_token", refresh};
	}
	scope = joined_scope(job, DatumGetArrayTypePCopy(spi_column(t, d, "scope", &isnull)));
	if (scope && (job->conf.scope_on_refresh || job->client_credentials))
		fields[nf++] = (FormField) {"scope", scope};
	build_token_request(&job->conf, DatumGetJsonbPCopy(spi_column(t, d, "metadata", &isnull)),
						fields, nf, true, &job->req);
	if (refresh)
		explicit_bzero(refresh, strlen(refresh));
}

/*
 * Read the row and build the request; see job_prepare for what it leaves.
 * Runs in a subtransaction, in job->cxt.
 */
static void
prepare_job(Job *job)
{
	MemoryContext old = MemoryContextSwitchTo(job->cxt);
	HeapTuple	t;
	TupleDesc	d;
	Datum		arg = UUIDPGetDatum(&job->id);
	const char *blocked;

	/* a copy, a standby, a subscriber or switched off: send nothing (identity.c) */
	if (!oauth_traffic_allowed(&blocked))
		conclude(job, RO_UNAVAILABLE, pstrdup(blocked));
	else
	{
		prepare_plans();
		if (exec_plan(plan_read, &arg, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read connection");
		if (SPI_processed == 0)
			conclude(job, RO_NOT_FOUND, NULL);
		else
		{
			t = SPI_tuptable->vals[0];
			d = SPI_tuptable->tupdesc;
			job_mark_rejected(job);	/* runs its own statement: t stays valid */
			read_job_facts(job, t, d);
			if (!row_forbids_call(job, t, d, &arg))
				build_request(job, t, d, &arg);
		}
	}
	MemoryContextSwitchTo(old);
}

/*
 * Step 1 for one job, inside a batch (begin_work).  Says what to do next:
 * PREPARED_CALL (job->req is built: job_send, or job_unprepare to defer it),
 * PREPARED_RESULT (job->ans holds a failure to store: move it to ANSWERED)
 * or PREPARED_OUTCOME (job->outcome is known, nothing to store: publish it).
 * A failure here is a transient failure to store, not an error.
 */
JobPrepared
job_prepare(Job *job)
{
	bool		failed;
	char	   *err = NULL;

	if (job->idstr == NULL)
		job->idstr = MemoryContextStrdup(job->cxt, oauth_uuid_str(&job->id));
	job->outcome = RO_NONE;
	job->message = NULL;
	run_isolated(job, prepare_job, &failed, &err, NULL);
	if (failed)
	{
		/* the row or its provider could not be used: a failure to record */
		job_unprepare(job);
		job->outcome = RO_NONE;
		memset(&job->ans, 0, sizeof(job->ans));
		job->ans.klass = RO_TRANSIENT;
		job->ans.message = err;
	}
	if (job->req.url != NULL)
		return PREPARED_CALL;
	if (job->ans.klass != RO_NONE)
	{
		job->outcome = job->ans.klass;
		job->message = job->ans.message;
		return PREPARED_RESULT;
	}
	Assert(job->outcome != RO_NONE);
	return PREPARED_OUTCOME;
}

/* Drop a built request unsent (its provider is at its limit), wiping it. */
void
job_unprepare(Job *job)
{
	if (job->req.url != NULL)
		wipe_token_request(&job->req);
	memset(&job->req, 0, sizeof(job->req));
}

/* Hand the built request to curl: the job is SENDING. */
void
job_send(Job *job)
{
	MemoryContext old = MemoryContextSwitchTo(job->cxt);

	job->call = http_start("POST", job->req.url, job->req.headers, job->req.nheaders,
						   job->req.body.data, job->req.body.len, job);
	job_unprepare(job);
	job->started = GetCurrentTimestamp();
	if (job->first_sent == 0)
		job->first_sent = job->started;
	oauth_stat_add(ST_ATTEMPTED, 1);
	MemoryContextSwitchTo(old);
	job_move(job, RJ_SENDING);
}

/*
 * The job's call is over: classify the provider's answer (job->ans).
 * Parsing a hostile body can raise an error (e.g. stack depth in the JSON
 * parser); it fails this job, not the worker.  libcurl's own re-send of the
 * request (a reused connection gave nothing back) is a re-send after no
 * answer.
 */
void
job_answered(Job *job)
{
	HttpCall   *call = job->call;
	MemoryContext old = MemoryContextSwitchTo(job->cxt);

	job->answered_at = GetCurrentTimestamp();
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
	if (call->sends > 1)
		job->lost = LOST_RESENT;
}

/*
 * The last request that may have been processed got no answer: send it
 * again at once if the provider's rotation grace still covers the token it
 * carried, whoever sent that request (libcurl re-sends by itself on a fresh
 * connection when a reused one gave nothing back, and that answer can be
 * lost too).  The grace counts from the job's first send (the provider
 * rotated after it); the worker re-sends at most LOST_RESENDS_MAX times.
 * Returns true when the job is to be queued again (it was reset for that);
 * the caller moves it.
 */
bool
job_resend_lost(Job *job)
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
	http_free(job->call);
	job->call = NULL;
	memset(&job->ans, 0, sizeof(job->ans));
	job->lost = LOST_RESENT;
	job->lost_resends++;
	job->flags &= ~REQ_REJECTED;	/* marked once already */
	job->lane = LANE_CALLERS;	/* it goes first */
	return true;
}
