/*
 * queue.h — what runs next: the worker's queues and limits (src/queue.c).
 */
#ifndef OAUTH_QUEUE_H
#define OAUTH_QUEUE_H

#include "postgres.h"

#include "utils/uuid.h"

extern int	n_queued;
extern int	n_running;
extern bool sweep_again;
extern void queue_drain_ring(void);
extern char *queue_activity(void);
extern void queue_sweep(void);
extern void queue_order(void);
extern void queue_start_jobs(void);
extern void queue_collect_finished(void);
extern long queue_release_waiters(void);
extern int	queue_provider_running(const char *provider);
extern bool queue_is_running(const pg_uuid_t *id);

#endif
