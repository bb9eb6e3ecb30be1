/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The worker's local queues of refresh jobs, and the limits that say
 *	  which job starts next.
 *
 * Requests reach the worker through the shared ring (shmem.c).  For each id
 * taken, queue_drain_ring() makes a Job of a newly QUEUED entry, or brings
 * the worker's Job up to date with an entry that posters joined: their
 * flags and version while it is QUEUED, its promotion from sweep work to a
 * caller's, a refused token to mark at once (in any state).  The worker's
 * own sweep posts due connections through the same shared table, so that a
 * caller asking for a connection a sweep has queued joins (and promotes)
 * the sweep's job.
 *
 * Rules:
 *	- Callers first.  Two queues: callers (as they came) and sweeps (in fair
 *	  order, queue_order: the oldest due of every workspace first, then the
 *	  second of each, ...).  Every round starts callers' jobs first.
 *	- Limits: at most oauth.max_concurrent_refreshes jobs run at once, and
 *	  at most a provider's max_concurrency for that provider.  Sweep work
 *	  may hold at most max_concurrent_refreshes - 1 of the slots (all of
 *	  them when the limit is 1), so a caller of another provider never
 *	  waits for a sweep backlog; only its own provider's limit, or the
 *	  global one filled by other callers, can make it wait.  A job over its
 *	  provider's limit stays queued and the jobs behind it may start.
 *	- One refresh of a connection at a time: a job whose connection has an
 *	  answer kept (finish.c) or a call still awaiting its answer (its
 *	  callers told after oauth.http_timeout, queue_release_waiters) ends at
 *	  once with "transient" rather than send the same refresh token again.
 *	- The queues and the running list are the worker's own; no other
 *	  process sees them, so they need no lock.  The shared table is reached
 *	  through shmem.c only.
 *
 * The queue decides which job moves next (JOB_MOVES, worker.h): it starts
 * them (QUEUED -> SENDING), collects their calls (SENDING -> ANSWERED, or
 * QUEUED again for a lost answer), tells callers of a call that outlives
 * oauth.http_timeout (SENDING -> RELEASED) and hands results to finish.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "http.h"
#include "identity.h"
#include "oauth_tokens.h"
#include "shmem.h"
#include "batch.h"
#include "finish.h"
#include "job.h"
#include "queue.h"

static dlist_head callers = DLIST_STATIC_INIT(callers);	/* callers' jobs to start */
static dlist_head sweeps = DLIST_STATIC_INIT(sweeps);	/* sweep jobs to start */
static dlist_head running = DLIST_STATIC_INIT(running);	/* in curl */
int			n_queued = 0;
int			n_running = 0;
static int	n_sweeps_queued = 0;
static int	n_sweeps_running = 0;
bool		sweep_again = false;	/* the last sweep filled its batch */

/* the last sweep's fair order: connection id -> its rank in its workspace */
typedef struct SweepRank
{
	pg_uuid_t	id;
	int64		rank;
} SweepRank;
static HTAB *sweep_ranks = NULL;

static SPIPlanPtr plan_due = NULL;

/* Append job to the queue it belongs to now. */
static void
enqueue(Job *job)
{
	job->lane = (job->flags & REQ_SWEEP) ? LANE_SWEEPS : LANE_CALLERS;
	if (job->lane == LANE_SWEEPS)
	{
		dlist_push_tail(&sweeps, &job->node);
		n_sweeps_queued++;
	}
	else
		dlist_push_tail(&callers, &job->node);
	n_queued++;
}

/* Take a queued job out of its queue. */
static void
dequeue(Job *job)
{
	dlist_delete(&job->node);
	n_queued--;
	if (job->lane == LANE_SWEEPS)
		n_sweeps_queued--;
}

/*
 * Bring job up to date with (a copy of) its entry e, which posters joined.
 * Returns true when a refused token is to be marked.
 */
static bool
sync_job(Job *job, const RefreshEntry *e)
{
	if (job->state == RJ_QUEUED)
	{
		job->flags = e->flags;
		job->seen_version = e->seen_version;
		if (job->lane == LANE_SWEEPS && !(job->flags & REQ_SWEEP))
		{
			/* a caller joined a queued sweep job: it starts with callers */
			dequeue(job);
			enqueue(job);
		}
	}
	else if (e->flags & REQ_REJECTED)
		job->flags |= REQ_REJECTED;
	job->rejected_version = Max(job->rejected_version, e->rejected_version);
	return (job->flags & REQ_REJECTED) && job->rejected_version > job->rejected_marked;
}

/*
 * Look at every id in the shared ring: new requests become jobs, joined
 * ones update their job.  Then mark the tokens callers reported refused.
 */
void
queue_drain_ring(void)
{
	List	   *reject = NIL;
	List	   *refused = NIL;
	ListCell   *lc;
	int			n;
	RefreshEntry *entries = oauth_ring_take(&n);

	for (int i = 0; i < n; i++)
	{
		RefreshEntry *e = &entries[i];
		Job		   *job = job_find(&e->id);

		if (job && job->gen == e->gen)
		{
			if (sync_job(job, e))
				refused = lappend(refused, job);
			continue;
		}
		if (e->state != RJ_QUEUED)
			continue;			/* not ours (a previous worker's); cannot happen */
		job = job_create(&e->id, e, RJ_QUEUED);
		if (e->dboid != MyDatabaseId)
		{
			job->outcome = RO_UNAVAILABLE;
			job->message = MemoryContextStrdup(job->cxt, "the oauth_tokens worker serves another database");
			reject = lappend(reject, job);
			continue;
		}
		enqueue(job);
		if (job->flags & REQ_REJECTED)
			refused = lappend(refused, job);
	}
	pfree(entries);
	foreach(lc, reject)
		job_publish(lfirst(lc));
	list_free(reject);
	jobs_mark_rejected(refused);
	list_free(refused);
}

/* How many jobs of this provider are in curl now. */
int
queue_provider_running(const char *provider)
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

/* Is a call for this connection in curl (its answer still awaited)? */
bool
queue_is_running(const pg_uuid_t *id)
{
	return job_in_list(&running, id);
}

/* A job's HTTP call is over: it leaves the running list. */
static void
left_running(Job *job)
{
	dlist_delete(&job->node);
	n_running--;
	if (job->lane == LANE_SWEEPS)
		n_sweeps_running--;
	oauth_stat_add(ST_INFLIGHT, -1);
}

/* A prepared job goes to curl: SENDING, in the running list. */
static void
run(Job *job)
{
	job_send(job);
	dlist_push_tail(&running, &job->node);
	n_running++;
	if (job->lane == LANE_SWEEPS)
		n_sweeps_running++;
	oauth_stat_add(ST_INFLIGHT, 1);
}

/*
 * Collect the calls curl has finished: each is classified (job_answered);
 * one whose last request got no answer goes back to the head of the queue
 * while the rotation grace covers it (job_resend_lost); the others are
 * ANSWERED and stored together (jobs_finish).
 */
void
queue_collect_finished(void)
{
	HttpCall   *call;
	List	   *done = NIL;

	while ((call = http_next_done()) != NULL)
	{
		Job		   *job = (Job *) call->owner;

		left_running(job);
		job_answered(job);
		if (job_resend_lost(job))
		{
			job_move(job, RJ_QUEUED);
			dlist_push_head(&callers, &job->node);
			n_queued++;
			continue;
		}
		job_move(job, RJ_ANSWERED);
		done = lappend(done, job);
	}
	jobs_finish(done);
	list_free(done);
}

/*
 * Callers stop waiting after oauth.http_timeout: for each call in flight
 * that long whose callers were not told, record a transient failure and
 * tell them (SENDING -> RELEASED); the call goes on up to
 * oauth.answer_timeout.  Outside any batch.  Returns the milliseconds
 * until the next call in flight reaches oauth.http_timeout (the loop's
 * wait ends then), or -1 if none.
 */
long
queue_release_waiters(void)
{
	List	   *late = NIL;
	ListCell   *lc;
	dlist_iter	it;
	long		next = -1;

	if (oauth_answer_timeout_ms <= oauth_http_timeout_ms)
		return -1;				/* the call itself ends at http_timeout */
	dlist_foreach(it, &running)
	{
		Job		   *job = dlist_container(Job, node, it.cur);
		long		elapsed;

		if (job->state != RJ_SENDING)
			continue;
		elapsed = http_elapsed_ms(job->call);
		if (elapsed >= oauth_http_timeout_ms)
			late = lappend(late, job);
		else if (next < 0 || oauth_http_timeout_ms - elapsed < next)
			next = oauth_http_timeout_ms - elapsed;
	}
	if (late == NIL)
		return next;
	begin_work("oauth_tokens: telling callers a refresh still waits for its answer");
	foreach(lc, late)
		job_record_transient(lfirst(lc),
							 psprintf("no answer from the provider after %d ms; "
									  "the request stays open up to oauth.answer_timeout",
									  oauth_http_timeout_ms));
	end_work();
	foreach(lc, late)
		job_move(lfirst(lc), RJ_RELEASED);
	list_free(late);
	return next;
}

/* lappend in cxt: the list must outlive end_work(), which frees SPI's memory */
static List *
lappend_cxt(MemoryContext cxt, List *list, void *datum)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);

	list = lappend(list, datum);
	MemoryContextSwitchTo(old);
	return list;
}

/* Slots sweep work may hold: all but one, so callers always find one. */
static int
sweep_slots(void)
{
	return Max(1, oauth_max_concurrent_refreshes - 1);
}

/*
 * Must a job wait because its connection is still busy?  Yes while an
 * answer for it is kept (not stored yet), and while a call for it still
 * awaits the provider's answer: a second request would send the same
 * refresh token again.  Then the job ends with "transient", and the caller
 * (who may hold the row lock) hears so at once.
 */
static bool
connection_busy(Job *job)
{
	bool		running_call = queue_is_running(&job->id);

	if (!running_call && !jobs_kept_for(&job->id))
		return false;
	job->outcome = RO_TRANSIENT;
	job->message = MemoryContextStrdup(job->cxt, running_call ?
									   "a refresh of this connection is still waiting for the provider's answer" :
									   "the connection's new token is not stored yet (its row is locked, or the write failed); "
									   "it is stored as soon as it can be");
	return true;
}

/* Is job's provider (once known) at its max_concurrency? */
static bool
provider_full(Job *job)
{
	return job->provider && job->provider_limit > 0 &&
		queue_provider_running(job->provider) >= job->provider_limit;
}

/*
 * Try to start the queued jobs of list q, in order, while the limits allow.
 * Inside the caller's batch (opened on first need through *in_xact); jobs
 * that ended without a call are appended to *done (in memory cxt): QUEUED
 * with their outcome, or ANSWERED with a failure to store.
 */
static void
start_from(dlist_head *q, bool sweep_work, bool *in_xact, List **done,
		   MemoryContext cxt)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, q)
	{
		Job		   *job = dlist_container(Job, node, it.cur);
		JobPrepared prepared;

		if (n_running >= oauth_max_concurrent_refreshes)
			break;
		if (sweep_work && n_sweeps_running >= sweep_slots())
			break;
		if (connection_busy(job))
		{
			dequeue(job);
			*done = lappend_cxt(cxt, *done, job);
			continue;
		}
		/* known provider at its limit: skip without reading the row */
		if (provider_full(job))
			continue;
		if (!*in_xact)
		{
			begin_work("oauth_tokens: preparing refreshes");
			*in_xact = true;
		}
		prepared = job_prepare(job);
		if (prepared == PREPARED_CALL && provider_full(job))
		{
			job_unprepare(job); /* deferred: read again when a slot frees */
			continue;
		}
		dequeue(job);
		if (prepared == PREPARED_CALL)
			run(job);
		else
		{
			if (prepared == PREPARED_RESULT)
				job_move(job, RJ_ANSWERED);
			*done = lappend_cxt(cxt, *done, job);
		}
	}
}

/*
 * Start queued jobs while the limits allow, callers' first; one transaction
 * for the batch.  Jobs that end without a call are concluded (job.c).
 */
void
queue_start_jobs(void)
{
	List	   *done = NIL;
	bool		in_xact = false;
	MemoryContext caller = CurrentMemoryContext;

	if (n_queued == 0 || n_running >= oauth_max_concurrent_refreshes)
		return;
	start_from(&callers, false, &in_xact, &done, caller);
	start_from(&sweeps, true, &in_xact, &done, caller);
	if (in_xact)
		end_work();
	jobs_conclude(done);
	list_free(done);
}

/*
 * What the worker is doing, for its pg_stat_activity line: counts only,
 * never a connection, a token or a secret.
 */
char *
queue_activity(void)
{
	return psprintf("oauth_tokens: %d sending (%d sweep), %d queued for callers, "
					"%d queued by sweeps, %d answers kept for locked rows",
					n_running, n_sweeps_running, n_queued - n_sweeps_queued,
					n_sweeps_queued, jobs_kept());
}

/* ---- sweeps ----------------------------------------------------------------- */

/*
 * Queue due connections through the shared table, so a caller asking for
 * the same connection joins the sweep's refresh.  Fair order comes from
 * oauth._due_connections.
 */
void
queue_sweep(void)
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
	if (!oauth_traffic_allowed(NULL))
	{
		end_work();				/* nothing is sent from here (identity.c) */
		return;
	}
	if (plan_due == NULL)
		plan_due = prepare_saved(
			"SELECT id, version, row_number() OVER (PARTITION BY workspace_id ORDER BY n) AS rank "
			"  FROM oauth._due_connections($1) WITH ORDINALITY AS d(id, version, workspace_id, provider, n) "
			" ORDER BY n",
			1, (Oid[]) {INT4OID});
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

		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;

		ids[i] = *DatumGetUUIDP(spi_column(t, d, "id", &isnull));
		versions[i] = DatumGetInt64(spi_column(t, d, "version", &isnull));
		ranks[i] = DatumGetInt64(spi_column(t, d, "rank", &isnull));
	}
	end_work();

	/*
	 * Remember every listed connection's rank, queued ones included (they
	 * are still due): queue_order() sorts the sweep's jobs by it.
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

	oauth_post_sweep(ids, versions, n);
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

	if (x->job->rank != y->job->rank)
		return x->job->rank < y->job->rank ? -1 : 1;
	return x->pos - y->pos;		/* stable */
}

/*
 * Put the sweep queue in fair order after a sweep: by each job's rank
 * within its workspace (the oldest due of every workspace first, then the
 * second of each, ...), so that a backlog queued by earlier sweeps never
 * holds up a connection of another workspace that became due later.
 * Callers' jobs are not in this queue: they start first anyway.
 */
void
queue_order(void)
{
	QueuedJob  *arr;
	dlist_mutable_iter it;
	int			n = 0;

	if (n_sweeps_queued < 2)
		return;
	arr = palloc(sizeof(QueuedJob) * n_sweeps_queued);
	dlist_foreach_modify(it, &sweeps)
	{
		Job		   *job = dlist_container(Job, node, it.cur);

		if (sweep_ranks)
		{
			SweepRank  *r = hash_search(sweep_ranks, &job->id, HASH_FIND, NULL);

			if (r)
				job->rank = r->rank;
		}
		Assert(n < n_sweeps_queued);
		arr[n].job = job;
		arr[n].pos = n;
		n++;
		dlist_delete(&job->node);
	}
	qsort(arr, n, sizeof(QueuedJob), queued_job_cmp);
	for (int i = 0; i < n; i++)
		dlist_push_tail(&sweeps, &arr[i].job->node);
	pfree(arr);
}
