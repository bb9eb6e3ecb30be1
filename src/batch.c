/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  The worker's transactions.
 *
 * Rules:
 *	- The worker does its SQL in batches: begin_work() opens one transaction
 *	  (with SPI and a snapshot), end_work() commits it.  No batch is open
 *	  while the worker waits on the network or the latch.
 *	- Inside a batch, each job's statements run in their own subtransaction
 *	  (run_isolated), so one bad row fails its job, never the others nor the
 *	  worker.
 *	- A row lock is waited for at most lock_timeout (200 ms): the worker
 *	  must not stall, nor deadlock with a session that holds a connection's
 *	  row lock and waits for that connection's refresh.
 *	- Saved plans are kept for the worker's life (SPI_keepplan); results
 *	  are copied out into the caller's memory context (exec_plan).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "batch.h"

static SPIPlanPtr plan_event = NULL;
static SPIPlanPtr plan_events = NULL;

/* Prepare sql and keep the plan for the worker's life. */
SPIPlanPtr
prepare_saved(const char *sql, int nargs, Oid *types)
{
	MemoryContext cxt = CurrentMemoryContext;
	SPIPlanPtr	p = SPI_prepare(sql, nargs, types);

	if (p == NULL)
		elog(ERROR, "oauth_tokens worker: could not prepare statement: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(p);
	/*
	 * SPI_prepare, like SPI_execute_plan, returns in SPI's procedure context:
	 * come back to the caller's, or what the first job of a worker's life
	 * keeps (its provider, workspace, messages) is freed with the batch.
	 */
	MemoryContextSwitchTo(cxt);
	return p;
}

/*
 * SPI_execute_plan returns in SPI's procedure context, which SPI_finish
 * frees at the end of the batch; come back to the caller's context, so that
 * what a job keeps (names, decrypted secrets, messages) lives in job->cxt
 * until job_publish().
 */
int
exec_plan(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only,
		  long count)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			rc = SPI_execute_plan(plan, values, nulls, read_only, count);

	MemoryContextSwitchTo(cxt);
	return rc;
}

/*
 * Open a transaction with SPI and a snapshot for a batch of the worker's
 * work, and say what it does in pg_stat_activity (never a token).
 */
void
begin_work(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	/* never wait long on a row lock: the whole loop would wait with us */
	SPI_execute("SET LOCAL lock_timeout = '200ms'", false, 0);
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Commit what begin_work opened. */
void
end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);	/* the worker's churn reaches autovacuum */
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Record an event (never a secret in detail_json).  Inside a batch. */
void
add_event(const char *workspace, const pg_uuid_t *id, const char *provider,
		  const char *event, const char *detail_json)
{
	Datum		v[5];
	char		n[5] = {' ', ' ', ' ', ' ', ' '};

	if (plan_event == NULL)
		plan_event = prepare_saved(
			"INSERT INTO oauth.events (workspace_id, connection_id, provider, event, detail) "
			"VALUES ($1, $2, $3, $4, $5)",
			5, (Oid[]) {TEXTOID, UUIDOID, TEXTOID, TEXTOID, JSONBOID});
	v[0] = workspace ? CStringGetTextDatum(workspace) : (Datum) 0;
	if (!workspace)
		n[0] = 'n';
	v[1] = UUIDPGetDatum((pg_uuid_t *) id);
	v[2] = provider ? CStringGetTextDatum(provider) : (Datum) 0;
	if (!provider)
		n[2] = 'n';
	v[3] = CStringGetTextDatum(event);
	v[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum(detail_json));
	if (exec_plan(plan_event, v, n, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record event");
}

/* s as a JSON string literal (NULL as ""), for event details. */
char *
json_str(const char *s)
{
	StringInfoData b;

	initStringInfo(&b);
	escape_json(&b, s ? s : "");
	return b.data;
}

/*
 * Record n events of one kind at once (never a secret in a detail).  Inside
 * a batch.
 */
void
add_events(int n, char **workspaces, pg_uuid_t *ids, char **providers,
		   const char *event, char **details)
{
	Datum	   *ws = palloc(sizeof(Datum) * n);
	Datum	   *id = palloc(sizeof(Datum) * n);
	Datum	   *pv = palloc(sizeof(Datum) * n);
	Datum	   *dt = palloc(sizeof(Datum) * n);
	bool	   *wsn = palloc0(sizeof(bool) * n);
	bool	   *pvn = palloc0(sizeof(bool) * n);
	Datum		v[5];

	if (n == 0)
		return;
	if (plan_events == NULL)
		plan_events = prepare_saved(
			"INSERT INTO oauth.events (workspace_id, connection_id, provider, event, detail) "
			"SELECT e.w, e.c, e.p, $4, e.d::pg_catalog.jsonb "
			"  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), "
			"                  pg_catalog.unnest($2::pg_catalog.uuid[]), "
			"                  pg_catalog.unnest($3::pg_catalog.text[]), "
			"                  pg_catalog.unnest($5::pg_catalog.text[])) AS e(w, c, p, d)",
			5, (Oid[]) {TEXTARRAYOID, UUIDARRAYOID, TEXTARRAYOID, TEXTOID, TEXTARRAYOID});
	for (int i = 0; i < n; i++)
	{
		wsn[i] = workspaces[i] == NULL;
		ws[i] = wsn[i] ? (Datum) 0 : CStringGetTextDatum(workspaces[i]);
		id[i] = UUIDPGetDatum(&ids[i]);
		pvn[i] = providers[i] == NULL;
		pv[i] = pvn[i] ? (Datum) 0 : CStringGetTextDatum(providers[i]);
		dt[i] = CStringGetTextDatum(details[i]);
	}
	v[0] = datum_array(ws, wsn, n, TEXTOID);
	v[1] = datum_array(id, NULL, n, UUIDOID);
	v[2] = datum_array(pv, pvn, n, TEXTOID);
	v[3] = CStringGetTextDatum(event);
	v[4] = datum_array(dt, NULL, n, TEXTOID);
	if (exec_plan(plan_events, v, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record events");
}

/*
 * Run fn(arg) in its own subtransaction.  Returns false on an error, whose
 * message (in errcxt) and SQLSTATE it gives back; the batch goes on.
 */
bool
try_isolated(void (*fn) (void *arg), void *arg, MemoryContext errcxt,
			 char **errmsg_out, int *sqlstate)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	bool		ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		ok = false;
		*errmsg_out = MemoryContextStrdup(errcxt, edata->message);
		if (sqlstate)
			*sqlstate = edata->sqlerrcode;
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return ok;
}

/*
 * A one-dimensional array of n values of type elemtype (nulls[i]: NULL),
 * for the set-based statements that take one array per column.
 */
Datum
datum_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}
