/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The single-flight request table shared by backends and the worker.
 *
 * A backend that needs a connection refreshed posts a request keyed by the
 * connection's id.  If an entry for that id exists, the backend joins it:
 * one provider call serves every caller.  The worker drains ids from a ring,
 * refreshes, commits the result in its own transaction, records the outcome
 * in the entry and broadcasts the entry's condition variable.  The last
 * waiter to read a finished entry removes it; an entry nobody waits for is
 * removed by the worker when it finishes.
 *
 * The state of a refresh job (RefreshJobState, shmem.h) is one value in the
 * entry, following the worker's Job (worker.h has the job's moves).  This
 * file is the only one that touches the table, the ring or the lock; every
 * change is made under oauth_shared->lock held exclusively:
 *
 *	from		to			by		function
 *	(none)/told	QUEUED		poster	oauth_requests_post, oauth_request_background,
 *								oauth_post_sweep: new generation, id in the ring
 *	QUEUED		QUEUED		poster	joining: flags ORed in, a caller clears
 *								REQ_SWEEP (promotion), seen_version raised;
 *								id pushed again so the worker sees it
 *	started		(same)		poster	joining a started job: only REQ_REJECTED
 *								and rejected_version change (the worker
 *								marks the refused token at once)
 *	any			the job's	worker	oauth_entry_follow, while the entry has the
 *								job's generation; the first told state
 *								(RELEASED, KEPT, DONE) gives the outcome and
 *								wakes the waiters; once told, only the state
 *								shown moves on (to DONE)
 *	any			DONE		worker	oauth_worker_detach at exit: "unavailable"
 *	told		(removed)	last waiter (oauth_requests_release), or the
 *								worker when it tells and none waits
 *
 * ("told" is RELEASED, KEPT or DONE: RJ_TOLD.)
 * A caller reads the state it joins: a QUEUED job still takes its flags (a
 * rejected token, a forced refresh, a newer version seen); a started one
 * answers with what it sent.
 *
 * Locking rules:
 *	- oauth_shared->lock (one LWLock) guards the hash table, the ring and the
 *	  worker_* fields.  It is held only for bookkeeping, never across I/O,
 *	  a transaction or a sleep.
 *	- The stats counters are atomics and need no lock.
 *	- Waiters sleep on cvs[hash(id) % OAUTH_NUM_CVS]; they re-check their
 *	  entry under the lock after each wake-up, so a shared CV only costs a
 *	  spurious wake-up now and then.
 *	- An entry is re-armed (told -> QUEUED, new gen) only once told; a
 *	  waiter that joined generation g is finished when done_gen >= g.
 *	  Generations come from one shared counter, so an entry removed and
 *	  created again never reuses a generation a worker job still holds.
 *
 * An id is in the ring at most once at a time (in_ring), so a ring as large
 * as the table never overflows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"

#include "compat.h"
#include "shmem.h"

OAuthShared *oauth_shared = NULL;
static HTAB *oauth_requests = NULL;
int			oauth_max_requests = 16384;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
shared_size(void)
{
	return add_size(offsetof(OAuthShared, ring),
					mul_size(oauth_max_requests, sizeof(pg_uuid_t)));
}

static void
oauth_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(shared_size(),
									hash_estimate_size(oauth_max_requests,
													   sizeof(RefreshEntry))));
	RequestNamedLWLockTranche("oauth_tokens", 1);
}

static void
oauth_shmem_startup_hook(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	oauth_shared = ShmemInitStruct("oauth_tokens", shared_size(), &found);
	if (!found)
	{
		memset(oauth_shared, 0, offsetof(OAuthShared, ring));
		oauth_shared->lock = &(GetNamedLWLockTranche("oauth_tokens"))->lock;
		oauth_shared->ring_size = oauth_max_requests;
		ConditionVariableInit(&oauth_shared->space_cv);
		for (int i = 0; i < OAUTH_NUM_CVS; i++)
			ConditionVariableInit(&oauth_shared->cvs[i]);
		for (int i = 0; i < ST_NUM; i++)
			pg_atomic_init_u64(&oauth_shared->stats[i], 0);
	}
	info.keysize = sizeof(pg_uuid_t);
	info.entrysize = sizeof(RefreshEntry);
	oauth_requests = ShmemInitHash("oauth_tokens requests",
								   oauth_max_requests, oauth_max_requests,
								   &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init when preloaded. */
void
oauth_shmem_request(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = oauth_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = oauth_shmem_startup_hook;
}

bool
oauth_shmem_available(void)
{
	return oauth_shared != NULL && oauth_requests != NULL;
}

static ConditionVariable *
entry_cv(const pg_uuid_t *id)
{
	uint32		h = 0;

	for (int i = 0; i < UUID_LEN; i++)
		h = h * 31 + id->data[i];
	return &oauth_shared->cvs[h % OAUTH_NUM_CVS];
}

const char *const refresh_job_state_names[] = {
	[RJ_QUEUED] = "queued",
	[RJ_SENDING] = "sending",
	[RJ_RELEASED] = "released",
	[RJ_ANSWERED] = "answered",
	[RJ_KEPT] = "kept",
	[RJ_DONE] = "done",
};

/* Move e to state; caller holds the lock exclusively. */
static void
set_state_locked(RefreshEntry *e, RefreshJobState state)
{
	e->state = state;
	e->state_since = GetCurrentTimestamp();
}

/* Put e's id in the ring for the worker, unless it is there already. */
static void
ring_push_locked(RefreshEntry *e)
{
	if (e->in_ring)
		return;
	e->in_ring = true;
	oauth_shared->ring[oauth_shared->ring_tail % oauth_shared->ring_size] = e->id;
	oauth_shared->ring_tail++;
}

/*
 * Post (or join) a refresh request for id.  Caller holds the lock
 * exclusively.  Returns the entry, or NULL with *full set when the table has
 * no room.  A told entry is re-armed (QUEUED); a QUEUED one takes the
 * joiner's flags and version, and a caller promotes a sweep's job; a started
 * one is joined as it is, except that a rejected token is recorded.
 */
static RefreshEntry *
post_locked(const pg_uuid_t *id, Oid dboid, int64 seen_version,
						  uint32 flags, bool *full)
{
	RefreshEntry *e;
	bool		found;

	*full = false;
	e = hash_search(oauth_requests, id, HASH_ENTER_NULL, &found);
	if (e == NULL)
	{
		*full = true;
		return NULL;
	}
	if (!found)
	{
		e->nwaiters = 0;
		e->gen = 0;
		e->done_gen = 0;
		e->outcome = RO_NONE;
		e->message[0] = '\0';
		e->next_attempt = 0;
		e->in_ring = false;
		e->state = RJ_DONE;
	}
	if (!RJ_TOLD(e->state))
	{
		uint32		before = e->flags;

		if (flags & REQ_REJECTED)
		{
			e->flags |= REQ_REJECTED;
			e->rejected_version = Max(e->rejected_version, seen_version);
		}
		if (e->state == RJ_QUEUED)
		{
			/* nothing sent yet: the request becomes what every joiner needs */
			if (!(flags & REQ_SWEEP))
				e->flags &= ~REQ_SWEEP;
			e->flags |= (flags & ~REQ_SWEEP);
			if (seen_version > e->seen_version)
				e->seen_version = seen_version;
		}
		if (e->flags != before)
			ring_push_locked(e);
		pg_atomic_fetch_add_u64(&oauth_shared->stats[ST_JOINED], 1);
		return e;
	}

	/* new, or told: (re-)arm */
	set_state_locked(e, RJ_QUEUED);
	e->dboid = dboid;
	e->flags = flags;
	e->seen_version = seen_version;
	e->rejected_version = (flags & REQ_REJECTED) ? seen_version : 0;
	e->gen = ++oauth_shared->next_gen;
	ring_push_locked(e);
	return e;
}

/* Set the worker's latch, if it runs.  Takes the lock shared. */
void
oauth_wake_worker(void)
{
	Latch	   *latch;

	LWLockAcquire(oauth_shared->lock, LW_SHARED);
	latch = oauth_shared->worker_pid != 0 ? oauth_shared->worker_latch : NULL;
	LWLockRelease(oauth_shared->lock);
	if (latch)
		SetLatch(latch);
}

void
oauth_stat_add(OAuthStat s, int64 n)
{
	if (oauth_shared == NULL)
		return;
	if (n >= 0)
		pg_atomic_fetch_add_u64(&oauth_shared->stats[s], (uint64) n);
	else
		pg_atomic_fetch_sub_u64(&oauth_shared->stats[s], (uint64) -n);
}

/* ---- callers ------------------------------------------------------------- */

/* The worker's pid (0: none runs) and the database it serves. */
void
oauth_worker_status(pid_t *pid, Oid *dboid)
{
	LWLockAcquire(oauth_shared->lock, LW_SHARED);
	*pid = oauth_shared->worker_pid;
	*dboid = oauth_shared->worker_dboid;
	LWLockRelease(oauth_shared->lock);
}

/*
 * Post (or join) requests for ids[0..n-1] in this database, holding each
 * entry posted (nwaiters counted, held[i] set, gens[i] its generation) so
 * that it outlives its outcome until oauth_requests_release.  Stops at the
 * first id that finds no room (*full).  Returns how many were posted.
 */
int
oauth_requests_post(const pg_uuid_t *ids, const int64 *versions, int n,
					uint32 flags, uint64 *gens, bool *held, bool *full)
{
	int			i;

	*full = false;
	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < n; i++)
	{
		RefreshEntry *e = post_locked(&ids[i], MyDatabaseId, versions[i], flags, full);

		if (e == NULL)
			break;
		e->nwaiters++;
		gens[i] = e->gen;
		held[i] = true;
	}
	LWLockRelease(oauth_shared->lock);
	return i;
}

/*
 * Wait until entry id, which the caller holds from generation gen, has
 * told its outcome, or the worker is gone.  Sleeps on the entry's condition
 * variable, re-checking every second in case the worker vanished.
 */
void
oauth_requests_wait(const pg_uuid_t *id, uint64 gen, RefreshResult *result)
{
	ConditionVariable *cv = entry_cv(id);

	ConditionVariablePrepareToSleep(cv);
	for (;;)
	{
		RefreshEntry *e;
		bool		done = false;
		bool		dead;

		LWLockAcquire(oauth_shared->lock, LW_SHARED);
		e = hash_search(oauth_requests, id, HASH_FIND, NULL);
		dead = oauth_shared->worker_pid == 0;
		if (e && e->done_gen >= gen)
		{
			result->outcome = e->outcome;
			result->next_attempt = e->next_attempt;
			strlcpy(result->message, e->message, OUTCOME_MSG_LEN);
			done = true;
		}
		LWLockRelease(oauth_shared->lock);
		if (!done && (dead || e == NULL))
		{
			result->outcome = RO_UNAVAILABLE;
			strlcpy(result->message, "the oauth_tokens worker stopped", OUTCOME_MSG_LEN);
			done = true;
		}
		if (done)
			break;
		ConditionVariableTimedSleep(cv, 1000, oauth_wait_event(OAUTH_WAIT_REFRESH));
	}
	ConditionVariableCancelSleep();
}

/*
 * Give up the caller's hold on each entry with held[i] set (clearing it);
 * the last holder of a told entry removes it.
 */
void
oauth_requests_release(const pg_uuid_t *ids, bool *held, int n)
{
	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		RefreshEntry *e;

		if (!held[i])
			continue;
		held[i] = false;
		e = hash_search(oauth_requests, &ids[i], HASH_FIND, NULL);
		if (e == NULL)
			continue;
		e->nwaiters--;
		if (e->nwaiters <= 0 && RJ_TOLD(e->state))
			hash_search(oauth_requests, &ids[i], HASH_REMOVE, NULL);
	}
	LWLockRelease(oauth_shared->lock);
	ConditionVariableBroadcast(&oauth_shared->space_cv);
}

/* The table was full: sleep until entries are freed (at most a second). */
void
oauth_wait_for_room(void)
{
	ConditionVariablePrepareToSleep(&oauth_shared->space_cv);
	ConditionVariableTimedSleep(&oauth_shared->space_cv, 1000,
								oauth_wait_event(OAUTH_WAIT_REQUEST_SLOT));
	ConditionVariableCancelSleep();
}

/*
 * Post a request nobody waits for (stale-while-revalidate), if the worker
 * serves this database.  Best effort.  Every caller inside the refresh
 * window lands here until the refresh is done: a shared-lock look first,
 * so that they do not queue on the exclusive lock for a request in flight.
 */
void
oauth_request_background(const pg_uuid_t *id, int64 version)
{
	bool		full;
	bool		ready;

	LWLockAcquire(oauth_shared->lock, LW_SHARED);
	{
		RefreshEntry *e = hash_search(oauth_requests, id, HASH_FIND, NULL);

		ready = (e == NULL || RJ_TOLD(e->state));
	}
	LWLockRelease(oauth_shared->lock);
	if (!ready)
		return;

	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	ready = oauth_shared->worker_pid != 0 && oauth_shared->worker_dboid == MyDatabaseId;
	if (ready)
		(void) post_locked(id, MyDatabaseId, version, 0, &full);
	LWLockRelease(oauth_shared->lock);
	if (ready)
		oauth_wake_worker();
}

/* A copy of every entry (palloc'd), *n of them: for oauth.refresh_jobs(). */
RefreshEntry *
oauth_requests_copy(int *n)
{
	HASH_SEQ_STATUS st;
	RefreshEntry *e;
	RefreshEntry *copy;
	int			cap;

	*n = 0;
	LWLockAcquire(oauth_shared->lock, LW_SHARED);
	cap = Max(1, (int) hash_get_num_entries(oauth_requests));
	copy = palloc(sizeof(RefreshEntry) * cap);
	hash_seq_init(&st, oauth_requests);
	while ((e = hash_seq_search(&st)) != NULL)
	{
		if (*n < cap)
			copy[(*n)++] = *e;
	}
	LWLockRelease(oauth_shared->lock);
	return copy;
}

/*
 * True the first time this server sees an authorization code (its SHA-256),
 * false after: a small ring of the codes sent lately.
 */
bool
oauth_claim_code_hash(const uint8 *sha256)
{
	bool		fresh = true;

	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < OAUTH_CLAIMED_CODES; i++)
		if (memcmp(oauth_shared->claimed[i], sha256, 32) == 0)
		{
			fresh = false;
			break;
		}
	if (fresh)
	{
		memcpy(oauth_shared->claimed[oauth_shared->claimed_next % OAUTH_CLAIMED_CODES],
			   sha256, 32);
		oauth_shared->claimed_next++;
	}
	LWLockRelease(oauth_shared->lock);
	return fresh;
}

/* ---- the worker ---------------------------------------------------------- */

/* The worker starts: it is the one now (not ready until its database is). */
void
oauth_worker_attach(void)
{
	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	oauth_shared->worker_pid = MyProcPid;
	oauth_shared->worker_latch = MyLatch;
	oauth_shared->worker_dboid = MyDatabaseId;
	oauth_shared->worker_ready = false;
	LWLockRelease(oauth_shared->lock);
}

/* The worker's database has the extension: it serves requests. */
void
oauth_worker_set_ready(void)
{
	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	oauth_shared->worker_ready = true;
	LWLockRelease(oauth_shared->lock);
}

/* Is the worker serving?  Read by the worker itself (its own field). */
bool
oauth_worker_is_ready(void)
{
	return oauth_shared->worker_ready;
}

/*
 * The worker exits: if it is still the one (pid compared), fail every
 * request not yet told ("unavailable") so that no waiter hangs, empty the
 * ring and clear the worker fields; wake every waiter.
 */
void
oauth_worker_detach(void)
{
	HASH_SEQ_STATUS st;
	RefreshEntry *e;

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
			e->in_ring = false;
			if (RJ_TOLD(e->state))
				continue;
			set_state_locked(e, RJ_DONE);
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

/*
 * Take every id from the ring: a copy (palloc'd, *n of them) of each entry
 * that is not told yet, as it is now.  A poster that joins after this
 * pushes its id again.
 */
RefreshEntry *
oauth_ring_take(int *n)
{
	RefreshEntry *out;
	int			cap;

	*n = 0;
	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	cap = Max(1, (int) (oauth_shared->ring_tail - oauth_shared->ring_head));
	out = palloc(sizeof(RefreshEntry) * cap);
	while (oauth_shared->ring_head != oauth_shared->ring_tail)
	{
		pg_uuid_t	id = oauth_shared->ring[oauth_shared->ring_head % oauth_shared->ring_size];
		RefreshEntry *e;

		oauth_shared->ring_head++;
		e = hash_search(oauth_requests, &id, HASH_FIND, NULL);
		if (e == NULL)
			continue;
		e->in_ring = false;
		if (RJ_TOLD(e->state))
			continue;
		out[(*n)++] = *e;
	}
	LWLockRelease(oauth_shared->lock);
	return out;
}

/*
 * The sweep's due connections: post a request (REQ_SWEEP, this database)
 * for each that has none in progress, until the table is full.
 */
void
oauth_post_sweep(const pg_uuid_t *ids, const int64 *versions, int n)
{
	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		RefreshEntry *e = hash_search(oauth_requests, &ids[i], HASH_FIND, NULL);
		bool		full;

		if (e && !RJ_TOLD(e->state))
			continue;			/* already queued or started */
		if (post_locked(&ids[i], MyDatabaseId, versions[i], REQ_SWEEP, &full) == NULL)
			break;
	}
	LWLockRelease(oauth_shared->lock);
}

/*
 * A job of generation gen moved to state: its entry follows while it has
 * that generation.  The first told state (RELEASED, KEPT, DONE) gives the
 * entry result and wakes its waiters (and space waiters: an entry nobody
 * holds is removed); an entry already told only shows the new state, and
 * only a later told one (it never goes back to "not told").
 */
void
oauth_entry_follow(const pg_uuid_t *id, uint64 gen, RefreshJobState state,
				   const RefreshResult *result)
{
	RefreshEntry *e;
	bool		told = false;

	LWLockAcquire(oauth_shared->lock, LW_EXCLUSIVE);
	e = hash_search(oauth_requests, id, HASH_FIND, NULL);
	if (e && e->gen == gen)
	{
		if (!RJ_TOLD(e->state))
		{
			set_state_locked(e, state);
			if (RJ_TOLD(state))
			{
				Assert(result != NULL);
				e->done_gen = gen;
				e->outcome = result->outcome;
				e->next_attempt = result->outcome == RO_TRANSIENT ? result->next_attempt : 0;
				strlcpy(e->message, result->message, OUTCOME_MSG_LEN);
				told = true;
				if (e->nwaiters <= 0)
					hash_search(oauth_requests, id, HASH_REMOVE, NULL);
			}
		}
		else if (RJ_TOLD(state))
			set_state_locked(e, state);
	}
	LWLockRelease(oauth_shared->lock);
	if (told)
	{
		ConditionVariableBroadcast(entry_cv(id));
		ConditionVariableBroadcast(&oauth_shared->space_cv);
	}
}
