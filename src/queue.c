/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The worker's local queues of refresh jobs, and the limits that say
 *	  which job starts next.
 *
 * Requests reach the worker through the shared ring (shmem.c).  For each id
 * drained, queue_drain_ring() makes a Job of a newly QUEUED entry, or brings
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
 *	- The queues, the running list and jobs_by_id are the worker's own;
 *	  no other process sees them, so they need no lock.  jobs_by_id maps a
 *	  connection to its job while the job is QUEUED, SENDING or ANSWERED
 *	  (not once its answer is kept for a locked row).
 *	- oauth_shared->lock is taken only for the ring and the entries, never
 *	  across a transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "identity.h"
#include "oauth_tokens.h"
#include "shmem.h"
#include "worker.h"

static dlist_head callers = DLIST_STATIC_INIT(callers);	/* callers' jobs to start */
static dlist_head sweeps = DLIST_STATIC_INIT(sweeps);	/* sweep jobs to start */
static dlist_head running = DLIST_STATIC_INIT(running);	/* in curl */
int			n_queued = 0;
int			n_running = 0;
static int	n_sweeps_queued = 0;
static int	n_sweeps_running = 0;
bool		sweep_again = false;	/* the last sweep filled its batch */

/* connection id -> its job (QUEUED, SENDING or ANSWERED) */
typedef struct JobById
{
	pg_uuid_t	id;
	Job		   *job;
} JobById;
static HTAB *jobs_by_id = NULL;

/* the last sweep's fair order: connection id -> its rank in its workspace */
typedef struct SweepRank
{
	pg_uuid_t	id;
	int64		rank;
} SweepRank;
static HTAB *sweep_ranks = NULL;

static SPIPlanPtr plan_due = NULL;

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

/* Forget job as its connection's current job (published, or kept). */
void
queue_forget(Job *job)
{
	JobById    *j = hash_search(by_id(), &job->id, HASH_FIND, NULL);

	if (j && j->job == job)
		hash_search(by_id(), &job->id, HASH_REMOVE, NULL);
}

/* Append job to the queue it belongs to now. */
static void
enqueue(Job *job)
{
	job->swept = (job->flags & REQ_SWEEP) != 0;
	if (job->swept)
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
	if (job->swept)
		n_sweeps_queued--;
}

/*
 * Bring job up to date with its entry e, which posters joined.  Caller
 * holds oauth_shared->lock.  Returns true when a refused token is to be
 * marked.
 */
static bool
sync_job_locked(Job *job, RefreshEntry *e)
{
	if (job->state == RJ_QUEUED)
	{
		job->flags = e->flags;
		job->seen_version = e->seen_version;
		if (job->swept && !(job->flags & REQ_SWEEP))
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

	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	while (oauth_shared->ring_head != oauth_shared->ring_tail)
	{
		pg_uuid_t	id = oauth_shared->ring[oauth_shared->ring_head % oauth_shared->ring_size];
		RefreshEntry *e;
		JobById    *j;
		Job		   *job;
		bool		found;

		oauth_shared->ring_head++;
		e = hash_search(oauth_requests, &id, HASH_FIND, NULL);
		if (e == NULL)
			continue;
		e->in_ring = false;
		if (e->state == RJ_DONE)
			continue;
		j = hash_search(by_id(), &id, HASH_FIND, NULL);
		if (j && j->job->gen == e->gen)
		{
			if (sync_job_locked(j->job, e))
				refused = lappend(refused, j->job);
			continue;
		}
		if (e->state != RJ_QUEUED)
			continue;			/* not ours (a previous worker's); cannot happen */
		job = job_create(&id, e);
		if (e->dboid != MyDatabaseId)
		{
			job->state = RJ_DONE;
			job->outcome = RO_UNAVAILABLE;
			job->message = MemoryContextStrdup(job->cxt, "the oauth_tokens worker serves another database");
			reject = lappend(reject, job);
			continue;
		}
		j = hash_search(by_id(), &id, HASH_ENTER, &found);
		j->job = job;
		enqueue(job);
		if (job->flags & REQ_REJECTED)
			refused = lappend(refused, job);
	}
	LWLockRelease(oauth_shared->lock);
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

/*
 * Put a job whose call ended back at the head of the queue, to be prepared
 * and sent again at once (the retry of a lost answer, durable.c).
 */
void
queue_requeue(Job *job)
{
	job_set_state(job, RJ_QUEUED);
	job->swept = false;			/* it goes first */
	dlist_push_head(&callers, &job->node);
	n_queued++;
}

/* Is a call for this connection in curl (its answer still awaited)? */
bool
queue_is_running(const pg_uuid_t *id)
{
	return job_in_list(&running, id);
}

/* The jobs in curl now, as a list in the current memory context. */
List *
queue_running_jobs(void)
{
	dlist_iter	it;
	List	   *l = NIL;

	dlist_foreach(it, &running)
		l = lappend(l, dlist_container(Job, node, it.cur));
	return l;
}

/* A job's HTTP call is over: it leaves the running list. */
void
queue_left_running(Job *job)
{
	dlist_delete(&job->node);
	n_running--;
	if (job->swept)
		n_sweeps_running--;
	oauth_stat_add(ST_INFLIGHT, -1);
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
 * Try to start the queued jobs of list q, in order, while the limits allow.
 * Inside the caller's batch (opened on first need through *in_xact); jobs
 * that ended without a call are appended to *done (in memory cxt).
 */
static void
start_from(dlist_head *q, bool sweep_work, bool *in_xact, List **done,
		   MemoryContext cxt)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, q)
	{
		Job		   *job = dlist_container(Job, node, it.cur);

		if (n_running >= oauth_max_concurrent_refreshes)
			break;
		if (sweep_work && n_sweeps_running >= sweep_slots())
			break;

		/*
		 * A new token for this connection waits for its row lock: no second
		 * refresh may start, and the caller (who may hold that lock) hears
		 * so at once rather than waiting on itself.
		 */
		if (jobs_write_pending_for(&job->id))
		{
			dequeue(job);
			job->state = RJ_DONE;
			job->outcome = RO_TRANSIENT;
			job->message = MemoryContextStrdup(job->cxt,
											   queue_is_running(&job->id) ?
											   "a refresh of this connection is still waiting for the provider's answer" :
											   "the connection's new token is not stored yet (its row is locked, or the write failed); "
											   "it is stored as soon as it can be");
			*done = lappend_cxt(cxt, *done, job);
			continue;
		}
		/* known provider at its limit: skip without reading the row */
		if (job->provider && job->provider_limit > 0 &&
			queue_provider_running(job->provider) >= job->provider_limit)
			continue;
		if (!*in_xact)
		{
			begin_work("oauth_tokens: preparing refreshes");
			*in_xact = true;
		}
		job_prepare(job);
		if (job->call == NULL && job->state == RJ_QUEUED)
			continue;			/* deferred: its provider is at its limit */
		dequeue(job);
		if (job->call)
		{
			dlist_push_tail(&running, &job->node);
			n_running++;
			if (job->swept)
				n_sweeps_running++;
			oauth_stat_add(ST_INFLIGHT, 1);
			job_set_state(job, RJ_SENDING);
		}
		else
			*done = lappend_cxt(cxt, *done, job);
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
			"SELECT id, version, row_number() OVER (PARTITION BY workspace_id ORDER BY n) "
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

		ids[i] = *DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		versions[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		ranks[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
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

	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		RefreshEntry *e = hash_search(oauth_requests, &ids[i], HASH_FIND, NULL);
		bool		full;

		if (e && e->state != RJ_DONE)
			continue;			/* already queued or started */
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
