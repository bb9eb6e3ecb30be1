/*
 * shmem.h — the single-flight request table in shared memory (src/shmem.c).
 */
#ifndef OAUTH_SHMEM_H
#define OAUTH_SHMEM_H

#include "postgres.h"

#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* What a request asks for (flags); posters joining an entry OR theirs in. */
#define REQ_FORCE		0x01	/* refresh even if the row is fresh */
#define REQ_REJECTED	0x02	/* the application saw a 401 for this token */
#define REQ_SWEEP		0x04	/* posted by a sweep only; cleared when a caller joins */
#define REQ_DUE			0x08	/* posted by oauth.refresh_due() (a caller's lane) */

/*
 * A refresh job's state: one value, shared by the request table's entry and
 * the worker's Job (worker.h).  The worker moves a job between states (the
 * table of moves is in worker.h, JOB_MOVES); the entry follows its job
 * (oauth_entry_follow).  Three states have told the callers (a waiter has
 * an outcome, and a new post re-arms the entry): RJ_RELEASED, RJ_KEPT and
 * RJ_DONE.  Shown by oauth.refresh_jobs() and the worker's activity.
 */
typedef enum RefreshJobState
{
	RJ_QUEUED,					/* posted, nothing sent: joiners' flags still
								 * shape the request */
	RJ_SENDING,					/* the row was read and the request handed to
								 * curl: what it sends is fixed */
	RJ_RELEASED,				/* callers told (after oauth.http_timeout),
								 * the call still open for its answer */
	RJ_ANSWERED,				/* the call is over (answered or not); the
								 * result is being stored */
	RJ_KEPT,					/* the answer is kept for a locked (or
								 * failing) row; callers told "transient" */
	RJ_DONE,					/* outcome stored and given */
	RJ_NUM_STATES
} RefreshJobState;

/* Has a job in state s given its callers an outcome? */
#define RJ_TOLD(s) ((s) == RJ_RELEASED || (s) == RJ_KEPT || (s) == RJ_DONE)

extern const char *const refresh_job_state_names[];

/* Outcomes, as the worker reports them. */
typedef enum RefreshOutcome
{
	RO_NONE = 0,
	RO_REFRESHED,				/* new token stored */
	RO_NOT_NEEDED,				/* someone else refreshed the row first */
	RO_REAUTH,					/* grant is dead: reauth_required */
	RO_TRANSIENT,				/* try later; next_attempt set */
	RO_PROVIDER,				/* provider misconfigured (invalid_client) */
	RO_NOT_FOUND,
	RO_REVOKED,
	RO_UNAVAILABLE				/* worker cannot serve this request */
} RefreshOutcome;

#define OUTCOME_MSG_LEN 200
#define OAUTH_NUM_CVS 64
#define OAUTH_CLAIMED_CODES 1024

typedef struct RefreshEntry
{
	pg_uuid_t	id;				/* hash key: the connection */
	RefreshJobState state;
	TimestampTz state_since;	/* when state last changed */
	Oid			dboid;
	uint32		flags;
	int64		seen_version;	/* refresh only if the row still has it */
	int64		rejected_version;	/* REQ_REJECTED: the version whose token
									 * the provider refused */
	bool		in_ring;		/* its id is in the ring, not yet drained */
	uint64		gen;			/* bumped each time the entry is re-armed */
	uint64		done_gen;		/* gen of the last completed run */
	int			nwaiters;		/* callers sleeping on this entry */
	RefreshOutcome outcome;
	TimestampTz next_attempt;	/* for RO_TRANSIENT */
	char		message[OUTCOME_MSG_LEN];	/* never a secret */
} RefreshEntry;

typedef enum OAuthStat
{
	ST_ATTEMPTED,
	ST_SUCCEEDED,
	ST_TRANSIENT,
	ST_PERMANENT,
	ST_WAITS,
	ST_JOINED,
	ST_INFLIGHT,
	ST_NUM
} OAuthStat;

/* What a caller gets when its request is over. */
typedef struct RefreshResult
{
	RefreshOutcome outcome;
	TimestampTz next_attempt;	/* for RO_TRANSIENT */
	char		message[OUTCOME_MSG_LEN];	/* never a secret */
} RefreshResult;

typedef struct OAuthShared
{
	LWLock	   *lock;			/* guards the hash, the ring and worker_* */
	pid_t		worker_pid;		/* 0 when no worker runs */
	Latch	   *worker_latch;
	Oid			worker_dboid;	/* database the worker serves */
	bool		worker_ready;	/* connected and the extension exists */
	uint32		ring_head;		/* next slot to read (worker) */
	uint32		ring_tail;		/* next slot to write (posters) */
	uint32		ring_size;
	ConditionVariable space_cv; /* signalled when entries are freed */
	ConditionVariable cvs[OAUTH_NUM_CVS];	/* waiters sleep on cvs[hash(id)] */
	pg_atomic_uint64 stats[ST_NUM];
	uint8		claimed[OAUTH_CLAIMED_CODES][32];	/* SHA-256 of codes sent */
	uint32		claimed_next;
	uint64		next_gen;		/* generations are unique across entries' lives */
	pg_uuid_t	ring[FLEXIBLE_ARRAY_MEMBER];	/* ids the worker must look at */
} OAuthShared;

extern OAuthShared *oauth_shared;
extern int	oauth_max_requests;

extern void oauth_shmem_request(void);
extern void oauth_shmem_startup(void);
extern bool oauth_shmem_available(void);
extern void oauth_stat_add(OAuthStat s, int64 n);

/* callers (functions.c, lifecycle.c) */
extern void oauth_worker_status(pid_t *pid, Oid *dboid);
extern int	oauth_requests_post(const pg_uuid_t *ids, const int64 *versions, int n,
								uint32 flags, uint64 *gens, bool *held, bool *full);
extern void oauth_requests_wait(const pg_uuid_t *id, uint64 gen, RefreshResult *result);
extern void oauth_requests_release(const pg_uuid_t *ids, bool *held, int n);
extern void oauth_wait_for_room(void);
extern void oauth_request_background(const pg_uuid_t *id, int64 version);
extern RefreshEntry *oauth_requests_copy(int *n);
extern bool oauth_claim_code_hash(const uint8 *sha256);
extern void oauth_wake_worker(void);

/* the worker (worker.c, queue.c, job.c) */
extern void oauth_worker_attach(void);
extern void oauth_worker_set_ready(void);
extern bool oauth_worker_is_ready(void);
extern void oauth_worker_detach(void);
extern RefreshEntry *oauth_ring_take(int *n);
extern void oauth_post_sweep(const pg_uuid_t *ids, const int64 *versions, int n);
extern void oauth_entry_follow(const pg_uuid_t *id, uint64 gen, RefreshJobState state,
							   const RefreshResult *result);

#endif
