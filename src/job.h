/*-------------------------------------------------------------------------
 *
 * job.h
 *	  A refresh job: the worker's record of one refresh (src/job.c), its
 *	  states and the moves between them.
 *
 *	  A Job lives in the worker process only; it is never seen by another
 *	  process.  Its shared counterpart is the RefreshEntry of shmem.h, which
 *	  follows the job's state (oauth_entry_follow).
 *
 *	  A job's state (RefreshJobState, shmem.h) changes in one function,
 *	  job_move() (job.c), and only by a move of this table (JOB_MOVES):
 *
 *	  from      to        when, and where it is decided
 *	  QUEUED    SENDING   its request is in curl (queue_start_jobs)
 *	  QUEUED    ANSWERED  the row or its provider could not be used: a
 *	                      failure to store (queue_start_jobs)
 *	  QUEUED    DONE      nothing to send (not found, revoked, dead, paused,
 *	                      not needed, another database, an answer of its
 *	                      connection still kept or awaited): published
 *	  SENDING   RELEASED  oauth.http_timeout passed without an answer: its
 *	                      callers are told "transient", the call stays open
 *	                      up to oauth.answer_timeout (queue_release_waiters)
 *	  SENDING   ANSWERED  the call is over (queue_collect_finished)
 *	  SENDING   QUEUED    the last request that may have been processed got
 *	                      no answer, inside the rotation grace: sent again
 *	                      at once (queue_collect_finished, job_resend_lost)
 *	  RELEASED  ANSWERED  the call is over at last
 *	  RELEASED  QUEUED    as SENDING -> QUEUED
 *	  ANSWERED  DONE      its result is committed (or there was nothing to
 *	                      store): published, callers woken (jobs_finish)
 *	  ANSWERED  KEPT      its answer could not be applied (a locked row, a
 *	                      failed write): kept, stored again later; callers
 *	                      told "transient" (jobs_finish)
 *	  KEPT      ANSWERED  its time to be stored again has come
 *	                      (jobs_retry_writes)
 *
 *	  A job is born QUEUED (a request taken from the ring) or KEPT (an
 *	  answer replayed from oauth.pending_answers at start-up).  The first
 *	  of RELEASED, KEPT or DONE gives the entry the job's outcome and wakes
 *	  its waiters; a new request for the connection may then re-arm the
 *	  entry, and it waits (deferred, "transient") while the older job is not
 *	  DONE.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OAUTH_JOB_H
#define OAUTH_JOB_H

#include "postgres.h"

#include "lib/ilist.h"
#include "nodes/pg_list.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "http.h"
#include "provider.h"
#include "shmem.h"

/* The worker's own at-once re-sends of a request that got no answer. */
#define LOST_RESENDS_MAX 3

/* The moves a job may make, as bit sets by state (the table above). */
#define JOB_MOVES { \
	[RJ_QUEUED] = (1 << RJ_SENDING) | (1 << RJ_ANSWERED) | (1 << RJ_DONE), \
	[RJ_SENDING] = (1 << RJ_RELEASED) | (1 << RJ_ANSWERED) | (1 << RJ_QUEUED), \
	[RJ_RELEASED] = (1 << RJ_ANSWERED) | (1 << RJ_QUEUED), \
	[RJ_ANSWERED] = (1 << RJ_DONE) | (1 << RJ_KEPT), \
	[RJ_KEPT] = (1 << RJ_ANSWERED), \
	[RJ_DONE] = 0, \
}

/* Which of the worker's lanes a job counts against (queue.c). */
typedef enum JobLane
{
	LANE_CALLERS,				/* a caller waits, or a forced refresh */
	LANE_SWEEPS					/* posted by a sweep only */
} JobLane;

/* Was an answer lost on the way to this job's result? */
typedef enum LostAnswer
{
	LOST_NONE,
	LOST_BEFORE,				/* the previous attempt (in the row) was sent
								 * and never answered */
	LOST_RESENT					/* this job sent its request again after no
								 * answer came (libcurl or the worker) */
} LostAnswer;

/*
 * One refresh of one connection, from the moment the worker takes its
 * request off the ring until its outcome is published.  Everything a job
 * allocates lives in job->cxt, deleted by job_publish().
 */
typedef struct Job
{
	dlist_node	node;			/* in a queue, running, or the kept answers */
	pg_uuid_t	id;
	char	   *idstr;
	uint64		gen;
	RefreshJobState state;		/* changed by job_move() only */
	int64		seen_version;
	uint32		flags;
	int64		rejected_version;	/* REQ_REJECTED: the refused token's version */
	int64		rejected_marked;	/* the version already marked refused */
	JobLane		lane;			/* the queue it is in, the slots it holds */
	int64		rank;			/* sweep jobs: place in the fair order (queue_order) */
	MemoryContext cxt;
	char	   *provider;		/* known after the first prepare */
	int			provider_limit; /* 0: none */
	char	   *workspace_id;
	bool		client_credentials; /* renewed with the client's credentials */
	ProviderConf conf;
	HttpCall   *call;
	TimestampTz started;
	TokenRequest req;			/* built by job_prepare, sent by job_send */
	TimestampTz answered_at;	/* when the provider's answer arrived */
	TimestampTz next_attempt;	/* after a transient failure, as stored */
	/* answers never thrown away, lost answers (durable.c) */
	int64		pending_id;		/* its row in oauth.pending_answers; 0: none */
	int64		durable_us;		/* answer received -> recorded and committed */
	int			store_failures; /* failed attempts to apply the answer */
	TimestampTz next_store;		/* when to try applying it again */
	int64		rotation_grace_ms;	/* provider's window; -1: unknown */
	LostAnswer	lost;
	int			lost_resends;	/* the worker's own at-once re-sends */
	TimestampTz first_sent;		/* when this job first sent its refresh token */
	int			failures_recorded;	/* transient failures already in the row */
	bool		templated_url;	/* token URL filled from the connection's metadata */
	/* result: ans in ANSWERED (to store), outcome once stored or DONE */
	TokenAnswer ans;
	RefreshOutcome outcome;
	char	   *message;
} Job;

/*
 * last_refresh_error of an attempt that was sent and never answered (the
 * message classify_answer gives it): the next dead-grant answer for that
 * connection is reported as a lost answer.
 */
#define ANSWER_LOST_PREFIX "sent, no answer"

/* What job_prepare found the job needs. */
typedef enum JobPrepared
{
	PREPARED_CALL,				/* its request is built (job->req) */
	PREPARED_RESULT,			/* a failure to store (job->ans) */
	PREPARED_OUTCOME			/* its outcome is known; nothing to store */
} JobPrepared;

/* The memory of every job (a job's own context is its child). */
extern MemoryContext jobs_cxt;

typedef void (*JobFn) (Job *job);

extern Job *job_create(const pg_uuid_t *id, const RefreshEntry *e, RefreshJobState state);
extern Job *job_find(const pg_uuid_t *id);
extern void job_forget(Job *job);
extern bool job_in_list(dlist_head *list, const pg_uuid_t *id);
extern void job_move(Job *job, RefreshJobState to);
extern JobPrepared job_prepare(Job *job);
extern void job_unprepare(Job *job);
extern void job_send(Job *job);
extern void job_answered(Job *job);
extern bool job_resend_lost(Job *job);
extern void job_mark_rejected(Job *job);
extern void jobs_mark_rejected(List *jobs);
extern void job_publish(Job *job);
extern void job_plans_reset(void);
extern void job_memory_init(void);
extern void run_isolated(Job *job, JobFn fn, bool *failed, char **errmsg_out,
						 int *sqlstate);

#endif
