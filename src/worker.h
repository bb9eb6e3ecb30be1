/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  What the refresh worker's files share: the Job, and each file's entry
 *	  points.
 *
 *	  worker.c  the loop: signals, latch, WaitEventSet, start-up, cleanup
 *	  queue.c   the local queues (callers', sweeps'): draining the shared
 *	            ring, sweeps, fair order, the global and per-provider
 *	            limits, starting jobs
 *	  job.c     a job's life and state, its first step and its SQL
 *	            (prepare: read the row, build the request), refused tokens,
 *	            publishing outcomes to waiters
 *	  finish.c  a job's last step: the provider's answer, storing it
 *	  durable.c no answer thrown away: answers recorded before they are
 *	            applied, kept until stored, replayed at start-up; requests
 *	            sent and not answered (callers told at http_timeout, the
 *	            at-once retry inside rotation_grace); one tenant's rejection
 *	  batch.c   the worker's transactions: a batch of jobs in one
 *	            transaction, each job in its own subtransaction; events
 *
 *	  Everything here lives in the worker process only; a Job is never
 *	  seen by another process.  Its shared counterpart is the RefreshEntry
 *	  of shmem.h (the transitions of its state are in shmem.c's header),
 *	  which the worker writes only through job_set_state(), job_notify()
 *	  and queue_drain_ring(), under oauth_shared->lock.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OAUTH_WORKER_H
#define OAUTH_WORKER_H

#include "postgres.h"

#include "executor/spi.h"
#include "lib/ilist.h"
#include "nodes/pg_list.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "http.h"
#include "provider.h"
#include "shmem.h"

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
	RefreshJobState state;		/* as in the entry while the entry has gen */
	int64		seen_version;
	uint32		flags;
	int64		rejected_version;	/* REQ_REJECTED: the refused token's version */
	int64		rejected_marked;	/* the version already marked refused */
	bool		swept;			/* queued (and run) as sweep work */
	int64		rank;			/* sweep jobs: place in the fair order (queue_order) */
	MemoryContext cxt;
	char	   *provider;		/* known after the first prepare */
	int			provider_limit; /* 0: none */
	char	   *workspace_id;
	bool		client_credentials; /* renewed with the client's credentials */
	ProviderConf conf;
	HttpCall   *call;
	TimestampTz started;
	bool		write_pending;	/* answer kept: its row was locked (retry_writes) */
	bool		notified;		/* its entry is DONE: waiters have its outcome */
	TimestampTz answered_at;	/* when the provider's answer arrived */
	TimestampTz next_attempt;	/* after a transient failure, as stored */
	/* answers never thrown away, lost answers (durable.c) */
	int64		pending_id;		/* its row in oauth.pending_answers; 0: none */
	int64		durable_us;		/* answer received -> recorded and committed */
	int			store_failures; /* failed attempts to apply the answer */
	TimestampTz next_store;		/* when to try applying it again */
	int64		rotation_grace_ms;	/* provider's window; -1: unknown */
	bool		after_no_answer;	/* the last attempt was sent, unanswered */
	bool		lost_retry;		/* a request of this job was sent again after
								 * no answer came (by libcurl or the worker) */
	int			lost_resends;	/* the worker's own at-once re-sends */
	TimestampTz first_sent;		/* when this job first sent its refresh token */
	bool		released;		/* callers were told after oauth.http_timeout */
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

/* worker.c */
extern MemoryContext jobs_cxt;

/* queue.c */
extern int	n_queued;
extern int	n_running;
extern bool sweep_again;
extern void queue_drain_ring(void);
extern void queue_forget(Job *job);
extern char *queue_activity(void);
extern void queue_sweep(void);
extern void queue_order(void);
extern void queue_start_jobs(void);
extern void queue_left_running(Job *job);
extern int	queue_provider_running(const char *provider);
extern void queue_requeue(Job *job);
extern bool queue_is_running(const pg_uuid_t *id);
extern List *queue_running_jobs(void);

/* job.c */
extern Job *job_create(const pg_uuid_t *id, const RefreshEntry *e);
extern bool job_in_list(dlist_head *list, const pg_uuid_t *id);
extern void job_set_state(Job *job, RefreshJobState state);
extern void job_prepare(Job *job);
extern void job_mark_rejected(Job *job);
extern void jobs_mark_rejected(List *jobs);
extern void job_notify(Job *job);
extern void job_publish(Job *job);
extern void jobs_conclude(List *done);
extern void job_plans_reset(void);

/* finish.c */
extern void jobs_finish(List *done);
extern void jobs_collect_finished(void);
extern void job_record_transient(Job *job, const char *message);
extern void finish_plans_reset(void);

/* durable.c */
extern bool answers_durable_schema;
extern bool answers_check_schema(void);
extern void answers_keep(Job *job, bool locked, const char *err);
extern void jobs_keep(Job *job);
extern void jobs_retry_writes(void);
extern bool jobs_write_pending_for(const pg_uuid_t *id);
extern bool jobs_writes_pending(void);
extern int	jobs_kept(void);
extern void answers_record(List *jobs);
extern void answers_forget(Job *job);
extern void answers_replay(void);
extern bool answers_retry_lost(Job *job);
extern long answers_release_waiters(void);
extern bool answers_tenant_failure(Job *job);
extern long answers_next_wait_ms(void);

/* batch.c */
typedef void (*JobFn) (Job *job);

extern void begin_work(const char *activity);
extern void end_work(void);
extern SPIPlanPtr prepare_saved(const char *sql, int nargs, Oid *types);
extern int	exec_plan(SPIPlanPtr plan, Datum *values, const char *nulls,
					  bool read_only, long count);
extern void run_isolated(Job *job, JobFn fn, bool *failed, char **errmsg_out,
						 int *sqlstate);
extern void add_event(const char *workspace, const pg_uuid_t *id,
					  const char *provider, const char *event,
					  const char *detail_json);
extern char *json_str(const char *s);

#endif
