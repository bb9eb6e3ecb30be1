/*
 * finish.h — storing a job's result; answers kept for their row (src/finish.c).
 */
#ifndef OAUTH_FINISH_H
#define OAUTH_FINISH_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/uuid.h"

#include "job.h"

extern void jobs_finish(List *done);
extern void jobs_conclude(List *done);
extern void job_record_transient(Job *job, const char *message);
extern void finish_plans_reset(void);
extern void jobs_replay(void);
extern void jobs_retry_writes(void);
extern long jobs_next_store_ms(void);
extern bool jobs_kept_for(const pg_uuid_t *id);
extern int	jobs_kept(void);

#endif
