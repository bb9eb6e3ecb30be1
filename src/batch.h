/*
 * batch.h — the worker's transactions, events and arrays (src/batch.c).
 */
#ifndef OAUTH_BATCH_H
#define OAUTH_BATCH_H

#include "postgres.h"

#include "executor/spi.h"
#include "utils/uuid.h"

extern void begin_work(const char *activity);
extern void end_work(void);
extern SPIPlanPtr prepare_saved(const char *sql, int nargs, Oid *types);
extern int	exec_plan(SPIPlanPtr plan, Datum *values, const char *nulls,
					  bool read_only, long count);
extern bool try_isolated(void (*fn) (void *arg), void *arg, MemoryContext errcxt,
						 char **errmsg_out, int *sqlstate);
extern void add_events(int n, char **workspaces, pg_uuid_t *ids, char **providers,
					   const char *event, char **details);
extern void add_event(const char *workspace, const pg_uuid_t *id,
					  const char *provider, const char *event,
					  const char *detail_json);
extern char *json_str(const char *s);
extern Datum datum_array(Datum *values, bool *nulls, int n, Oid elemtype);

#endif
