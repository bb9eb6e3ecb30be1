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

/*
 * A refresh job's state: one value, shared by the request table's entry and
 * the worker's Job (worker.h).  The transitions, who makes them and under
 * which lock, are in shmem.c's header.  Shown by oauth.refresh_jobs().
 */
typedef enum RefreshJobState
{
	RJ_QUEUED,					/* posted, nothing sent: joiners' flags still
								 * shape the request */
	RJ_SENDING,					/* the row was read and the request handed to
								 * curl: what it sends is fixed */
	RJ_ANSWERED,				/* the provider answered (or the call failed);
								 * the result is being stored */
	RJ_DONE						/* outcome set; kept while waiters read it */
} RefreshJobState;

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
extern struct HTAB *oauth_requests;
extern int	oauth_max_requests;

extern void oauth_shmem_request(void);
extern void oauth_shmem_startup(void);
extern bool oauth_shmem_available(void);

extern ConditionVariable *oauth_entry_cv(const pg_uuid_t *id);
extern RefreshEntry *oauth_post_request_locked(const pg_uuid_t *id, Oid dboid,
											   int64 seen_version, uint32 flags,
											   bool *full);
extern void oauth_set_state_locked(RefreshEntry *e, RefreshJobState state);
extern void oauth_wake_worker(void);
extern void oauth_stat_add(OAuthStat s, int64 n);

#endif
