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
 * entry, mirrored in the worker's Job.  Every transition is made under
 * oauth_shared->lock held exclusively:
 *
 *	from		to			by		when
 *	(none)/DONE	QUEUED		poster	a backend, refresh_due() or the sweep posts;
 *								new generation, id pushed to the ring
 *	QUEUED		QUEUED		poster	joining: flags ORed in, a caller clears
 *								REQ_SWEEP (promotion), seen_version raised;
 *								id pushed again so the worker sees it
 *	SENDING,	(same)		poster	joining a started job: only REQ_REJECTED
 *	ANSWERED							and rejected_version change (the worker
 *								marks the refused token at once)
 *	QUEUED		SENDING		worker	the request is handed to curl
 *	QUEUED		DONE		worker	nothing to send: not found, revoked, dead,
 *								provider paused, no longer needed
 *	SENDING		ANSWERED	worker	curl finished the call
 *	ANSWERED	DONE		worker	the result is committed (or kept for a
 *								locked row: waiters hear "transient")
 *	any			DONE		worker	at exit (worker_cleanup): "unavailable"
 *	DONE		(removed)	last waiter, or the worker when none waits
 *
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
 *	- An entry is re-armed (DONE -> QUEUED, new gen) only when DONE; a
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

#include "shmem.h"

OAuthShared *oauth_shared = NULL;
HTAB	   *oauth_requests = NULL;
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

ConditionVariable *
oauth_entry_cv(const pg_uuid_t *id)
{
	uint32		h = 0;

	for (int i = 0; i < UUID_LEN; i++)
		h = h * 31 + id->data[i];
	return &oauth_shared->cvs[h % OAUTH_NUM_CVS];
}

const char *const refresh_job_state_names[] = {
	[RJ_QUEUED] = "queued",
	[RJ_SENDING] = "sending",
	[RJ_ANSWERED] = "answered",
	[RJ_DONE] = "done",
};

/* Move e to state; caller holds the lock exclusively. */
void
oauth_set_state_locked(RefreshEntry *e, RefreshJobState state)
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
 * no room.  A DONE entry is re-armed (QUEUED); a QUEUED one takes the
 * joiner's flags and version, and a caller promotes a sweep's job; a started
 * one is joined as it is, except that a rejected token is recorded.
 */
RefreshEntry *
oauth_post_request_locked(const pg_uuid_t *id, Oid dboid, int64 seen_version,
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
	if (e->state != RJ_DONE)
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

	/* new, or DONE: (re-)arm */
	oauth_set_state_locked(e, RJ_QUEUED);
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
