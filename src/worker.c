/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The background worker: the one place where refreshes happen.
 *
 * Loop: drain newly posted requests from shared memory into a local queue;
 * sweep for due connections every oauth.sweep_interval (feeding the same
 * table, so sweeps and callers share single flight); start as many queued
 * jobs as the global and per-provider limits allow; wait on curl's sockets
 * and the latch in one WaitEventSet; write finished jobs' results.
 *
 * A job has three steps, and no transaction is open between them:
 *	1. prepare (short transaction): re-read the row; skip the job if its
 *	   version moved since the request (someone else refreshed), or if it is
 *	   revoked, dead or its provider paused; decrypt the refresh token and
 *	   client secret; build the request; hand it to curl.
 *	2. HTTP, in the multi handle, with nothing locked.
 *	3. finish (own transaction): classify the answer; write it with a
 *	   version check so a stale result never overwrites a newer one; record
 *	   the event; commit; then publish the outcome and wake the waiters.
 * Steps 1 and 3 run batches of jobs in one transaction, each job in its own
 * subtransaction, so one bad row cannot fail the others.
 *
 * The window between a provider's answer and the commit in step 3 is as
 * short as one UPDATE and a commit; a crash inside it loses a rotated
 * refresh token, and no client of a token endpoint can close it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "compat.h"
#include "crypto.h"
#include "http.h"
#include "oauth_tokens.h"
#include "provider.h"
#include "shmem.h"
#include "store.h"

typedef struct Job
{
	dlist_node	node;
	pg_uuid_t	id;
	char	   *idstr;
	uint64		gen;
	int64		seen_version;
	uint32		flags;
	int64		rank;			/* sweep jobs: place in the fair order (order_queue) */
	MemoryContext cxt;
	char	   *provider;		/* known after the first prepare */
	int			provider_limit; /* 0: none */
	char	   *workspace_id;
	bool		client_credentials; /* renewed with the client's credentials */
	ProviderConf conf;
	HttpCall   *call;
	TimestampTz started;
	bool		write_pending;	/* answer kept: its row was locked (retry_writes) */
	bool		notified;		/* its outcome was already given to waiters */
	TimestampTz answered_at;	/* when the provider's answer arrived */
	TimestampTz next_attempt;	/* after a transient failure, as stored */
	/* outcome */
	bool		finished;
	TokenAnswer ans;
	RefreshOutcome outcome;
	char	   *message;
} Job;

static dlist_head queue = DLIST_STATIC_INIT(queue); /* waiting to start */
static dlist_head running = DLIST_STATIC_INIT(running);	/* in curl */
static dlist_head pending_writes = DLIST_STATIC_INIT(pending_writes);	/* answers to store */
static TimestampTz next_write_retry = 0;
static int	n_queued = 0;
static int	n_running = 0;
static MemoryContext jobs_cxt = NULL;
static TimestampTz next_sweep = 0;
static TimestampTz next_prune = 0;
static bool sweep_again = false;

/* the last sweep's fair order: connection id -> its rank in its workspace */
typedef struct SweepRank
{
	pg_uuid_t	id;
	int64		rank;
} SweepRank;
static HTAB *sweep_ranks = NULL;

void
oauth_register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	strcpy(worker.bgw_library_name, "oauth_tokens");
	strcpy(worker.bgw_function_name, "oauth_worker_main");
	strcpy(worker.bgw_name, "oauth_tokens refresh worker");
	strcpy(worker.bgw_type, "oauth_tokens worker");
	RegisterBackgroundWorker(&worker);
}

/*
 * On exit, fail every request we own so that no waiter hangs, and clear the
 * worker fields only if they are ours.
 */
static void
worker_cleanup(int code, Datum arg)
{
	HASH_SEQ_STATUS st;
	RefreshEntry *e;

	/* an error raised while holding our lock must not deadlock us here */
	LWLockReleaseAll();
	http_abort_all();
	if (!oauth_shmem_available())
		return;
	pg_atomic_write_u64(&oauth_shared->stats[ST_INFLIGHT], 0);
	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	if (oauth_shared->worker_pid == MyProcPid)
	{
		oauth_shared->worker_pid = 0;
		oauth_shared->worker_latch = NULL;
		oauth_shared->worker_ready = false;
		hash_seq_init(&st, oauth_requests);
		while ((e = hash_seq_search(&st)) != NULL)
		{
			if (e->state == RS_DONE)
				continue;
			e->state = RS_DONE;
			e->done_gen = e->gen;
			e->outcome = RO_UNAVAILABLE;
			strlcpy(e->message, "the oauth_tokens worker stopped; retry", OUTCOME_MSG_LEN);
			if (e->nwaiters <= 0)
				hash_search(oauth_requests, &e->id, HASH_REMOVE, NULL);
		}
		oauth_shared->ring_head = oauth_shared->ring_tail;
	}
	LWLockRelease(oauth_shared->lock);
	for (int i = 0; i < OAUTH_NUM_CVS; i++)
		ConditionVariableBroadcast(&oauth_shared->cvs[i]);
	ConditionVariableBroadcast(&oauth_shared->space_cv);
}

/* Does this database have the extension?  Runs its own transaction. */
static bool
extension_present(void)
{
	bool		ok;
	Oid			nsp;

	StartTransactionCommand();
	nsp = get_namespace_oid("oauth", true);
	ok = OidIsValid(nsp) && OidIsValid(get_relname_relid("connections", nsp));
	CommitTransactionCommand();
	return ok;
}

/* Give a job's outcome to its entry and wake the entry's waiters. */
static void
notify(Job *job)
{
	RefreshEntry *e;
	ConditionVariable *cv;

	if (job->notified)
		return;
	job->notified = true;

	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	e = hash_search(oauth_requests, &job->id, HASH_FIND, NULL);
	if (e && e->gen == job->gen)
	{
		e->state = RS_DONE;
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

/* Publish a job's outcome, count it, forget the job (wiping its secrets). */
static void
publish(Job *job)
{
	notify(job);

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
	if (job->call)
		http_free(job->call);
	provider_conf_wipe(&job->conf);
	if (job->ans.access_token)
		explicit_bzero(job->ans.access_token, strlen(job->ans.access_token));
	if (job->ans.refresh_token)
		explicit_bzero(job->ans.refresh_token, strlen(job->ans.refresh_token));
	MemoryContextDelete(job->cxt);
}

/* Move newly pending requests from the shared ring into the local queue. */
static void
drain_ring(void)
{
	List	   *reject = NIL;
	ListCell   *lc;

	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	while (oauth_shared->ring_head != oauth_shared->ring_tail)
	{
		pg_uuid_t	id = oauth_shared->ring[oauth_shared->ring_head % oauth_shared->ring_size];
		RefreshEntry *e;
		Job		   *job;
		MemoryContext cxt;

		oauth_shared->ring_head++;
		e = hash_search(oauth_requests, &id, HASH_FIND, NULL);
		if (e == NULL || e->state != RS_PENDING)
			continue;
		cxt = AllocSetContextCreate(jobs_cxt, "oauth job", ALLOCSET_SMALL_SIZES);
		job = MemoryContextAllocZero(cxt, sizeof(Job));
		job->cxt = cxt;
		job->id = id;
		job->gen = e->gen;
		job->seen_version = e->seen_version;
		job->flags = e->flags;
		e->state = RS_RUNNING;	/* ours now; later posters join it */
		if (e->dboid != MyDatabaseId)
		{
			job->outcome = RO_UNAVAILABLE;
			job->message = MemoryContextStrdup(cxt, "the oauth_tokens worker serves another database");
			reject = lappend(reject, job);
			continue;
		}
		/* callers first, sweeps after */
		if (job->flags & REQ_SWEEP)
			dlist_push_tail(&queue, &job->node);
		else
			dlist_push_head(&queue, &job->node);
		n_queued++;
	}
	LWLockRelease(oauth_shared->lock);
	foreach(lc, reject)
		publish(lfirst(lc));
	list_free(reject);
}

/* ---- SQL helpers (run inside the worker's transactions) ---------------- */

static SPIPlanPtr plan_read = NULL;
static SPIPlanPtr plan_success = NULL;
static SPIPlanPtr plan_transient = NULL;
static SPIPlanPtr plan_reauth = NULL;
static SPIPlanPtr plan_pause = NULL;
static SPIPlanPtr plan_hold_off = NULL;
static SPIPlanPtr plan_rejected = NULL;
static SPIPlanPtr plan_event = NULL;
static SPIPlanPtr plan_due = NULL;

static SPIPlanPtr
prepare_saved(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	p = SPI_prepare(sql, nargs, types);

	if (p == NULL)
		elog(ERROR, "oauth_tokens worker: could not prepare statement: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(p);
	return p;
}

/*
 * SPI_execute_plan returns in SPI's procedure context, which SPI_finish
 * frees at the end of the batch; come back to the caller's context, so that
 * what a job keeps (names, decrypted secrets, messages) lives in job->cxt
 * until publish().
 */
static int
exec_plan(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only,
		  long count)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			rc = SPI_execute_plan(plan, values, nulls, read_only, count);

	MemoryContextSwitchTo(cxt);
	return rc;
}

static void
prepare_plans(void)
{
	if (plan_read)
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
		" WHERE id = $1 AND version = $2",
		2, (Oid[]) {UUIDOID, INT8OID});
	plan_event = prepare_saved(
		"INSERT INTO oauth.events (workspace_id, connection_id, provider, event, detail) "
		"VALUES ($1, $2, $3, $4, $5)",
		5, (Oid[]) {TEXTOID, UUIDOID, TEXTOID, TEXTOID, JSONBOID});
	plan_due = prepare_saved(
		"SELECT id, version, row_number() OVER (PARTITION BY workspace_id ORDER BY n) "
		"  FROM oauth._due_connections($1) WITH ORDINALITY AS d(id, version, workspace_id, provider, n) "
		" ORDER BY n",
		1, (Oid[]) {INT4OID});
}

/*
 * Open a transaction with SPI and a snapshot for a batch of the worker's
 * work, and say what it does in pg_stat_activity (never a token).
 */
static void
begin_work(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	/* never wait long on a row lock: the whole loop would wait with us */
	SPI_execute("SET LOCAL lock_timeout = '200ms'", false, 0);
	prepare_plans();
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Commit what begin_work opened. */
static void
end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

static void
add_event(const char *workspace, const pg_uuid_t *id, const char *provider,
		  const char *event, const char *detail_json)
{
	Datum		v[5];
	char		n[5] = {' ', ' ', ' ', ' ', ' '};

	v[0] = workspace ? CStringGetTextDatum(workspace) : (Datum) 0;
	if (!workspace)
		n[0] = 'n';
	v[1] = UUIDPGetDatum((pg_uuid_t *) id);
	v[2] = provider ? CStringGetTextDatum(provider) : (Datum) 0;
	if (!provider)
		n[2] = 'n';
	v[3] = CStringGetTextDatum(event);
	v[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum(detail_json));
	if (exec_plan(plan_event, v, n, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record event");
}

static char *
json_str(const char *s)
{
	StringInfoData b;

	initStringInfo(&b);
	escape_json(&b, s ? s : "");
	return b.data;
}

/* Run fn(job) for each job in its own subtransaction; errors become messages. */
typedef void (*JobFn) (Job *job);

static void
run_isolated(Job *job, JobFn fn, bool *failed, char **errmsg_out, int *sqlstate)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	*failed = false;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		fn(job);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		*failed = true;
		*errmsg_out = MemoryContextStrdup(job->cxt, edata->message);
		if (sqlstate)
			*sqlstate = edata->sqlerrcode;
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

static void finish_jobs(List *done);
static bool write_pending_for(const pg_uuid_t *id);

/* ---- step 1: prepare ------------------------------------------------------ */

static int
provider_running(const char *provider)
{
	dlist_iter	it;
	int			n = 0;

	dlist_foreach(it, &running)
	{
		Job		   *j = dlist_container(Job, node, it.cur);

		if (j->provider && strcmp(j->provider, provider) == 0)
			n++;
	}
	return n;
}

static char *
getstr(HeapTuple t, TupleDesc d, int col)
{
	return SPI_getvalue(t, d, col);
}

/*
 * Read the row and build the request.  On return either job->call is set
 * (started) or job->finished with an outcome, or neither (deferred: the
 * provider is at its limit).  Runs in a subtransaction, in job->cxt.
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

	if (exec_plan(plan_read, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read connection");
	if (SPI_processed == 0)
	{
		job->finished = true;
		job->outcome = RO_NOT_FOUND;
		MemoryContextSwitchTo(old);
		return;
	}
	t = SPI_tuptable->vals[0];
	d = SPI_tuptable->tupdesc;
	job->workspace_id = getstr(t, d, 1);
	job->provider = getstr(t, d, 2);
	{
		Datum		lim = SPI_getbinval(t, d, 21, &isnull);

		job->provider_limit = isnull ? 0 : DatumGetInt32(lim);
	}
	if (DatumGetBool(SPI_getbinval(t, d, 8, &isnull)))
	{
		job->finished = true;
		job->outcome = RO_REVOKED;
		MemoryContextSwitchTo(old);
		return;
	}
	if (DatumGetBool(SPI_getbinval(t, d, 9, &isnull)))
	{
		job->finished = true;
		job->outcome = RO_REAUTH;
		job->message = getstr(t, d, 10);
		MemoryContextSwitchTo(old);
		return;
	}
	if (DatumGetBool(SPI_getbinval(t, d, 22, &isnull)))
	{
		job->finished = true;
		job->outcome = RO_PROVIDER;
		job->message = psprintf("provider paused: %s", getstr(t, d, 23));
		if (exec_plan(plan_hold_off, &arg, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not hold off a paused provider's connection");
		MemoryContextSwitchTo(old);
		return;
	}
	if (DatumGetInt64(SPI_getbinval(t, d, 3, &isnull)) != job->seen_version)
	{
		job->finished = true;
		job->outcome = RO_NOT_NEEDED;
		MemoryContextSwitchTo(old);
		return;
	}
	if (job->provider_limit > 0 && provider_running(job->provider) >= job->provider_limit)
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

		if (isnull)
		{
			job->finished = true;
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

	if (job->flags & REQ_REJECTED)
	{
		Datum		rv[2];

		/*
		 * The provider refused this token: it is not served again, even if
		 * the refresh fails (callers then get OA003, not a dead token).
		 */
		rv[0] = arg;
		rv[1] = Int64GetDatum(job->seen_version);
		if (exec_plan(plan_rejected, rv, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not mark a rejected token");
		add_event(job->workspace_id, &job->id, job->provider, "token_rejected", "{}");
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

/* Start queued jobs while the limits allow; one transaction for the batch. */
static void
start_jobs(void)
{
	dlist_mutable_iter it;
	List	   *done = NIL;
	List	   *to_finish = NIL;
	ListCell   *lc;
	bool		in_xact = false;
	MemoryContext caller = CurrentMemoryContext;

	if (dlist_is_empty(&queue) || n_running >= oauth_max_concurrent_refreshes)
		return;

	dlist_foreach_modify(it, &queue)
	{
		Job		   *job = dlist_container(Job, node, it.cur);
		bool		failed;
		char	   *err = NULL;

		if (n_running >= oauth_max_concurrent_refreshes)
			break;
		/*
		 * A new token for this connection waits for its row lock: no second
		 * refresh may start, and the caller (who may hold that lock) hears
		 * so at once rather than waiting on itself.
		 */
		if (write_pending_for(&job->id))
		{
			dlist_delete(&job->node);
			n_queued--;
			job->finished = true;
			job->outcome = RO_TRANSIENT;
			job->message = MemoryContextStrdup(job->cxt,
											   "the connection's row is locked by another transaction; "
											   "its new token is stored once it is released");
			{
				/* the list must outlive end_work(), which frees SPI's context */
				MemoryContext oldcxt = MemoryContextSwitchTo(caller);

				done = lappend(done, job);
				MemoryContextSwitchTo(oldcxt);
			}
			continue;
		}
		/* known provider at its limit: skip without reading the row */
		if (job->provider && job->provider_limit > 0 &&
			provider_running(job->provider) >= job->provider_limit)
			continue;
		if (!in_xact)
		{
			begin_work("oauth_tokens: preparing refreshes");
			in_xact = true;
		}
		job->idstr = MemoryContextStrdup(job->cxt, oauth_uuid_str(&job->id));
		run_isolated(job, prepare_job, &failed, &err, NULL);
		if (failed)
		{
			/* the row or its provider could not be used: a failure to record */
			job->finished = true;
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
		if (job->call)
		{
			dlist_delete(&job->node);
			n_queued--;
			dlist_push_tail(&running, &job->node);
			n_running++;
			oauth_stat_add(ST_INFLIGHT, 1);
		}
		else if (job->finished)
		{
			/* the list must outlive end_work(), which frees SPI's context */
			MemoryContext old = MemoryContextSwitchTo(caller);

			dlist_delete(&job->node);
			n_queued--;
			done = lappend(done, job);
			MemoryContextSwitchTo(old);
		}
	}
	if (in_xact)
	{
		end_work();
	}
	foreach(lc, done)
	{
		Job		   *job = lfirst(lc);

		/* an answer to record (a failure before any HTTP call) goes through finish */
		if (job->ans.klass != RO_NONE)
			to_finish = lappend(to_finish, job);
		else
			publish(job);
	}
	list_free(done);
	finish_jobs(to_finish);
	list_free(to_finish);
}

/* ---- step 3: finish ------------------------------------------------------- */

static void
finish_job(Job *job)
{
	MemoryContext old = MemoryContextSwitchTo(job->cxt);
	TokenAnswer *a = &job->ans;
	int64		ms = job->started ? (GetCurrentTimestamp() - job->started) / 1000 : 0;
	char	   *detail;

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

/* Write every finished job: one transaction, a subtransaction each. */
/*
 * Write every finished job: one transaction, a subtransaction each.  Row
 * locks are waited for briefly (lock_timeout): the worker must not stall,
 * nor deadlock with a session that holds a connection's row lock and waits
 * for a refresh.  A new token that meets a locked row is not lost: its
 * waiters hear "transient", and the answer is kept and written again until
 * the lock is released; meanwhile no new refresh of that connection starts.
 */
static void
finish_jobs(List *done)
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
				job->outcome = RO_TRANSIENT;
				job->message = pstrdup("the connection's row is locked by another transaction; "
									   "the new token is stored once it is released");
				notify(job);
				job->write_pending = true;
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
			publish(job);
	}
}

/* Try again to store answers whose row was locked. */
static void
retry_writes(void)
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
	finish_jobs(again);
	list_free(again);
}

/* Is an answer for this connection waiting to be stored? */
static bool
write_pending_for(const pg_uuid_t *id)
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
static void
collect_finished(void)
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
		dlist_delete(&job->node);
		n_running--;
		oauth_stat_add(ST_INFLIGHT, -1);
		done = lappend(done, job);
	}
	finish_jobs(done);
	list_free(done);
}

/* ---- sweeps ----------------------------------------------------------------- */

/*
 * Queue due connections through the shared table, so a caller asking for
 * the same connection joins the sweep's refresh.  Fair order comes from
 * oauth._due_connections.
 */
static void
sweep(void)
{
	int			room;
	int			n;
	pg_uuid_t  *ids;
	int64	   *versions;
	int64	   *ranks;
	MemoryContext caller = CurrentMemoryContext;
	HASHCTL		ctl;

	room = Min(oauth_sweep_batch, oauth_max_requests / 2 - n_queued - n_running);
	if (room <= 0)
		return;
	begin_work("oauth_tokens: sweeping for due connections");
	{
		Datum		arg = Int32GetDatum(room);

		if (SPI_execute_plan(plan_due, &arg, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not list due connections");
	}
	n = SPI_processed;
	/* outlive SPI_finish: the ids are posted after the transaction */
	ids = MemoryContextAlloc(caller, sizeof(pg_uuid_t) * Max(n, 1));
	versions = MemoryContextAlloc(caller, sizeof(int64) * Max(n, 1));
	ranks = MemoryContextAlloc(caller, sizeof(int64) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = *DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		versions[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		ranks[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
	}
	end_work();

	/*
	 * Remember every listed connection's rank, queued ones included (they
	 * are still due): order_queue() sorts the sweep's jobs by it.
	 */
	if (sweep_ranks)
		hash_destroy(sweep_ranks);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(pg_uuid_t);
	ctl.entrysize = sizeof(SweepRank);
	ctl.hcxt = jobs_cxt;
	sweep_ranks = hash_create("oauth_tokens sweep ranks", Max(n, 16), &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (int i = 0; i < n; i++)
	{
		SweepRank  *r = hash_search(sweep_ranks, &ids[i], HASH_ENTER, NULL);

		r->rank = ranks[i];
	}

	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		RefreshEntry *e = hash_search(oauth_requests, &ids[i], HASH_FIND, NULL);
		bool		full;

		if (e && e->state != RS_DONE)
			continue;			/* already queued or running */
		if (oauth_post_request_locked(&ids[i], MyDatabaseId, versions[i], REQ_SWEEP, &full) == NULL)
			break;
	}
	LWLockRelease(oauth_shared->lock);
	pfree(ids);
	pfree(versions);
	pfree(ranks);
	sweep_again = (n == room);
}

typedef struct QueuedJob
{
	Job		   *job;
	int			pos;
} QueuedJob;

static int
queued_job_cmp(const void *a, const void *b)
{
	const QueuedJob *x = a;
	const QueuedJob *y = b;
	bool		xs = (x->job->flags & REQ_SWEEP) != 0;
	bool		ys = (y->job->flags & REQ_SWEEP) != 0;

	if (xs != ys)
		return xs ? 1 : -1;		/* callers first */
	if (xs && x->job->rank != y->job->rank)
		return x->job->rank < y->job->rank ? -1 : 1;
	return x->pos - y->pos;		/* stable */
}

/*
 * Put the queue in fair order after a sweep: callers' jobs first, as they
 * came; then the sweep's jobs by their rank within their workspace (the
 * oldest due of every workspace first, then the second of each, ...), so
 * that a backlog queued by earlier sweeps never holds up a connection of
 * another workspace that became due later.
 */
static void
order_queue(void)
{
	QueuedJob  *arr;
	dlist_iter	cit;
	dlist_mutable_iter it;
	int			len = 0;
	int			n = 0;

	dlist_foreach(cit, &queue)
		len++;
	if (len < 2)
		return;
	arr = palloc(sizeof(QueuedJob) * len);
	dlist_foreach_modify(it, &queue)
	{
		Job		   *job = dlist_container(Job, node, it.cur);

		if ((job->flags & REQ_SWEEP) && sweep_ranks)
		{
			SweepRank  *r = hash_search(sweep_ranks, &job->id, HASH_FIND, NULL);

			if (r)
				job->rank = r->rank;
		}
		arr[n].job = job;
		arr[n].pos = n;
		n++;
		dlist_delete(&job->node);
	}
	qsort(arr, n, sizeof(QueuedJob), queued_job_cmp);
	for (int i = 0; i < n; i++)
		dlist_push_tail(&queue, &arr[i].job->node);
	pfree(arr);
}

/* Drop events older than oauth.event_retention. */
static void
prune_events(void)
{
	begin_work("oauth_tokens: pruning events");
	SPI_execute(psprintf("DELETE FROM oauth.events WHERE at < now() - interval '%d seconds'",
						 oauth_event_retention_s), false, 0);
	end_work();
}

/* ---- main loop -------------------------------------------------------------- */

void
oauth_worker_main(Datum arg)
{
	MemoryContext loop_cxt;
	bool		announced_missing = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(oauth_database, NULL, 0);

	jobs_cxt = AllocSetContextCreate(TopMemoryContext, "oauth_tokens jobs", ALLOCSET_DEFAULT_SIZES);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "oauth_tokens loop", ALLOCSET_DEFAULT_SIZES);
	http_init();

	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	oauth_shared->worker_pid = MyProcPid;
	oauth_shared->worker_latch = MyLatch;
	oauth_shared->worker_dboid = MyDatabaseId;
	oauth_shared->worker_ready = false;
	LWLockRelease(oauth_shared->lock);
	before_shmem_exit(worker_cleanup, (Datum) 0);
	ereport(LOG, (errmsg("oauth_tokens worker started for database \"%s\"", oauth_database)));

	while (!ShutdownRequestPending)
	{
		uint32		ev = 0;
		long		timeout;
		TimestampTz now;

		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (!oauth_shared->worker_ready)
		{
			if (!extension_present())
			{
				if (!announced_missing)
					ereport(LOG,
							(errmsg("oauth_tokens worker: extension not installed in database \"%s\"; waiting",
									oauth_database),
							 errhint("Run CREATE EXTENSION oauth_tokens CASCADE there.")));
				announced_missing = true;
				drain_ring();	/* nothing can be served yet: fail fast */
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 5000L, oauth_wait_event(OAUTH_WAIT_WORKER_EXTENSION));
				ResetLatch(MyLatch);
				/* requests posted meanwhile are served once the extension exists */
				continue;
			}
			LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
			oauth_shared->worker_ready = true;
			LWLockRelease(oauth_shared->lock);
		}

		drain_ring();
		now = GetCurrentTimestamp();
		if (oauth_sweep_interval_ms > 0 &&
			(now >= next_sweep || (sweep_again && n_queued < oauth_max_concurrent_refreshes)))
		{
			next_sweep = TimestampTzPlusMilliseconds(now, oauth_sweep_interval_ms);
			sweep();
			drain_ring();
			order_queue();
		}
		if (now >= next_prune)
		{
			next_prune = TimestampTzPlusMilliseconds(now, 600 * 1000);
			prune_events();
		}
		retry_writes();
		start_jobs();
		/* jobs that finished without HTTP were published by start_jobs */

		timeout = 10000;
		if (oauth_sweep_interval_ms > 0)
		{
			long		to_sweep = (long) ((next_sweep - GetCurrentTimestamp()) / 1000);

			timeout = Max(0, Min(timeout, to_sweep));
		}
		if (!dlist_is_empty(&pending_writes))
			timeout = Min(timeout, 200);
		pgstat_report_activity(STATE_IDLE, NULL);
		http_wait(timeout, &ev);
		if (ev & WL_LATCH_SET)
			ResetLatch(MyLatch);
		collect_finished();
	}

	/*
	 * Exit code 1, not 0: a worker stopped by pg_terminate_backend() is
	 * started again by the postmaster (at shutdown nothing is restarted).
	 */
	proc_exit(1);
}
