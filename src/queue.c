/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The worker's local queue of refresh jobs, and the limits that say
 *	  which job starts next.
 *
 * Requests reach the worker through the shared ring (shmem.c);
 * queue_drain_ring() takes each newly pending entry, moves it to RUNNING
 * (so later posters join it) and makes a Job of it.  The worker's own
 * sweep posts due connections through the same shared table, so that a
 * caller asking for a connection a sweep has queued joins the sweep's job.
 *
 * Rules:
 *	- queue (waiting to start) and running (in curl) are the worker's own
 *	  lists; no other process sees them, so they need no lock.
 *	- Order: callers' jobs first, as they came; then sweep jobs in fair order
 *	  (queue_order): the oldest due of every workspace first, then the
 *	  second of each, and so on.
 *	- Limits: at most oauth.max_concurrent_refreshes jobs run at once, and
 *	  at most a provider's max_concurrency for that provider; a job over its
 *	  provider's limit stays queued and the jobs behind it may start.
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

#include "oauth_tokens.h"
#include "shmem.h"
#include "worker.h"

static dlist_head queue = DLIST_STATIC_INIT(queue); /* waiting to start */
static dlist_head running = DLIST_STATIC_INIT(running);	/* in curl */
int			n_queued = 0;
int			n_running = 0;
bool		sweep_again = false;	/* the last sweep filled its batch */

/* the last sweep's fair order: connection id -> its rank in its workspace */
typedef struct SweepRank
{
	pg_uuid_t	id;
	int64		rank;
} SweepRank;
static HTAB *sweep_ranks = NULL;

static SPIPlanPtr plan_due = NULL;

/* Move newly pending requests from the shared ring into the local queue. */
void
queue_drain_ring(void)
{
	List	   *reject = NIL;
	ListCell   *lc;

	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	while (oauth_shared->ring_head != oauth_shared->ring_tail)
	{
		pg_uuid_t	id = oauth_shared->ring[oauth_shared->ring_head % oauth_shared->ring_size];
		RefreshEntry *e;
		Job		   *job;

		oauth_shared->ring_head++;
		e = hash_search(oauth_requests, &id, HASH_FIND, NULL);
		if (e == NULL || e->state != RS_PENDING)
			continue;
		job = job_create(&id, e);
		e->state = RS_RUNNING;	/* ours now; later posters join it */
		if (e->dboid != MyDatabaseId)
		{
			job->outcome = RO_UNAVAILABLE;
			job->message = MemoryContextStrdup(job->cxt, "the oauth_tokens worker serves another database");
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
		job_publish(lfirst(lc));
	list_free(reject);
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

/* A job's HTTP call is over: it leaves the running list. */
void
queue_left_running(Job *job)
{
	dlist_delete(&job->node);
	n_running--;
	oauth_stat_add(ST_INFLIGHT, -1);
}

/* Start queued jobs while the limits allow; one transaction for the batch. */
void
queue_start_jobs(void)
{
	dlist_mutable_iter it;
	List	   *done = NIL;
	bool		in_xact = false;
	MemoryContext caller = CurrentMemoryContext;

	if (dlist_is_empty(&queue) || n_running >= oauth_max_concurrent_refreshes)
		return;

	dlist_foreach_modify(it, &queue)
	{
		Job		   *job = dlist_container(Job, node, it.cur);

		if (n_running >= oauth_max_concurrent_refreshes)
			break;
		/*
		 * A new token for this connection waits for its row lock: no second
		 * refresh may start, and the caller (who may hold that lock) hears
		 * so at once rather than waiting on itself.
		 */
		if (jobs_write_pending_for(&job->id))
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
			queue_provider_running(job->provider) >= job->provider_limit)
			continue;
		if (!in_xact)
		{
			begin_work("oauth_tokens: preparing refreshes");
			in_xact = true;
		}
		job_prepare(job);
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
	jobs_conclude(done);
	list_free(done);
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
void
queue_order(void)
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
