/*-------------------------------------------------------------------------
 *
 * rotate.c
 *	  oauth.rotate_key(): re-encryption in short batches, by a background
 *	  worker of its own.
 *
 * A function cannot commit, and a transaction keeps every row lock it took
 * until it ends: re-encrypting every connection inside the caller's
 * transaction would stop every refresh until the last row is done.  So the
 * caller (oauth._rotate_connections, under rotate_key) starts a dynamic
 * background worker and waits for it; the worker does the work in batches,
 * each its own transaction:
 *
 *	1. batches of at most `batch` rows that use another key, in id order,
 *	   taken with FOR UPDATE SKIP LOCKED: a refresh waits at most for one
 *	   batch's commit, and the rotation never waits for a row another
 *	   session holds;
 *	2. then the rows skipped because they were locked, one row per
 *	   transaction, waiting for that row only (at most ROW_LOCK_WAIT: a
 *	   row the caller itself holds would otherwise wait forever);
 *	3. then oauth.pending_answers (answers not yet applied; few rows).
 *
 * rotate_key() then re-encrypts, in its own transaction, whatever still uses
 * another key: rows the worker could not see or lock (written or locked by
 * the caller's own transaction, or still locked by another).  Normally none.
 *
 * The worker's SQL resolves in pg_catalog only (search_path pinned) and runs
 * READ COMMITTED whatever the server's default.  It reports its count or its
 * error through a DSM segment; a caller that is cancelled stops the worker
 * (what it committed stays committed, and a second rotate_key finishes it).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

#include "crypto.h"
#include "oauth_tokens.h"

#define ROTATE_ERR_LEN 256
#define ROW_LOCK_WAIT "1s"

/* Shared between rotate_key's caller and its worker (one DSM segment). */
typedef struct RotateShared
{
	Oid			dboid;
	Oid			roleid;
	int			batch;
	/* written by the worker */
	int64		rotated;		/* values re-encrypted */
	int64		batches;		/* transactions committed */
	int64		retried;		/* rows that were locked at first */
	bool		finished;
	int			sqlerrcode;
	char		error[ROTATE_ERR_LEN];
} RotateShared;

PG_FUNCTION_INFO_V1(oauth_rotate_connections);
PGDLLEXPORT void oauth_rotate_main(Datum arg);

/* The rows that use another key, after $1 (NULL: from the start). */
#define ROTATE_BATCH_SQL \
	"SELECT c.id, c.access_token_ciphertext, c.refresh_token_ciphertext " \
	"  FROM oauth.connections c " \
	" WHERE ($1::pg_catalog.uuid IS NULL OR c.id OPERATOR(pg_catalog.>) $1::pg_catalog.uuid) " \
	"   AND (oauth._key_id(c.access_token_ciphertext) OPERATOR(pg_catalog.<>) $2::pg_catalog.text " \
	"        OR oauth._key_id(c.refresh_token_ciphertext) OPERATOR(pg_catalog.<>) $2::pg_catalog.text) " \
	" ORDER BY c.id LIMIT $3::pg_catalog.int4 FOR UPDATE SKIP LOCKED"
#define ROTATE_LEFT_SQL \
	"SELECT c.id FROM oauth.connections c " \
	" WHERE oauth._key_id(c.access_token_ciphertext) OPERATOR(pg_catalog.<>) $1::pg_catalog.text " \
	"    OR oauth._key_id(c.refresh_token_ciphertext) OPERATOR(pg_catalog.<>) $1::pg_catalog.text"
#define ROTATE_ONE_SQL \
	"SELECT c.id, c.access_token_ciphertext, c.refresh_token_ciphertext " \
	"  FROM oauth.connections c WHERE c.id OPERATOR(pg_catalog.=) $1::pg_catalog.uuid " \
	"   AND (oauth._key_id(c.access_token_ciphertext) OPERATOR(pg_catalog.<>) $2::pg_catalog.text " \
	"        OR oauth._key_id(c.refresh_token_ciphertext) OPERATOR(pg_catalog.<>) $2::pg_catalog.text) " \
	"   FOR UPDATE"
#define ROTATE_WRITE_SQL \
	"UPDATE oauth.connections SET access_token_ciphertext = $2::pg_catalog.bytea, " \
	"       refresh_token_ciphertext = $3::pg_catalog.bytea " \
	" WHERE id OPERATOR(pg_catalog.=) $1::pg_catalog.uuid"
#define ROTATE_PENDING_SQL \
	"SELECT p.id, p.connection_id, p.answer_ciphertext FROM oauth.pending_answers p " \
	" WHERE oauth._key_id(p.answer_ciphertext) OPERATOR(pg_catalog.<>) $1::pg_catalog.text " \
	"   FOR UPDATE"
#define ROTATE_PENDING_WRITE_SQL \
	"UPDATE oauth.pending_answers SET answer_ciphertext = $2::pg_catalog.bytea " \
	" WHERE id OPERATOR(pg_catalog.=) $1::pg_catalog.int8"

/* ---- the caller ------------------------------------------------------------ */

/*
 * oauth._rotate_connections(batch int) -> bigint: run the rotation worker
 * and wait for it.  Called by oauth.rotate_key(), SECURITY DEFINER: the
 * worker connects as the current (owner) role.
 */
Datum
oauth_rotate_connections(PG_FUNCTION_ARGS)
{
	int			batch = PG_ARGISNULL(0) ? 1000 : PG_GETARG_INT32(0);
	dsm_segment *seg;
	RotateShared *rs;
	BackgroundWorker w;
	BackgroundWorkerHandle *handle;
	pid_t		pid;
	int64		rotated;

	if (batch < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch must be at least 1")));

	/* the key ring must be usable before anything starts */
	(void) oauth_active_key_id();

	seg = dsm_create(sizeof(RotateShared), 0);
	rs = dsm_segment_address(seg);
	memset(rs, 0, sizeof(*rs));
	rs->dboid = MyDatabaseId;
	rs->roleid = GetUserId();
	rs->batch = batch;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = BGW_NEVER_RESTART;
	strcpy(w.bgw_library_name, "oauth_tokens");
	strcpy(w.bgw_function_name, "oauth_rotate_main");
	strcpy(w.bgw_name, "oauth_tokens key rotation");
	strcpy(w.bgw_type, "oauth_tokens key rotation");
	w.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	w.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&w, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start the key rotation worker"),
				 errhint("Raise max_worker_processes, or retry when a background worker slot is free.")));

	PG_TRY();
	{
		if (WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("the key rotation worker did not start")));
		/* interruptible: cancel and statement_timeout reach us here */
		(void) WaitForBackgroundWorkerShutdown(handle);
	}
	PG_CATCH();
	{
		TerminateBackgroundWorker(handle);
		PG_RE_THROW();
	}
	PG_END_TRY();

	pg_read_barrier();
	if (!rs->finished)
		ereport(ERROR,
				(errcode(rs->sqlerrcode ? rs->sqlerrcode : ERRCODE_INTERNAL_ERROR),
				 rs->error[0] ? errmsg("%s", rs->error) :
				 errmsg("key rotation stopped: the worker exited"),
				 errdetail("Values re-encrypted and committed before it stopped: " INT64_FORMAT ".",
						   rs->rotated),
				 errhint("Run oauth.rotate_key() again; it continues with what is left.")));
	rotated = rs->rotated;
	ereport(DEBUG1,
			(errmsg("oauth_tokens key rotation: " INT64_FORMAT " values in " INT64_FORMAT
					" transactions, " INT64_FORMAT " rows were locked at first",
					rs->rotated, rs->batches, rs->retried)));
	dsm_detach(seg);
	PG_RETURN_INT64(rotated);
}

/* ---- the worker ------------------------------------------------------------ */

static void
begin_batch(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
end_batch(RotateShared *rs)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	rs->batches++;
}

/* Re-seal one ciphertext under the active key if it uses another. */
static bytea *
reseal(bytea *ct, const char *active, const char *context, int64 *n)
{
	char	   *plain;
	bytea	   *out;

	if (ct == NULL || strcmp(oauth_ciphertext_key_id(ct), active) == 0)
		return ct;
	plain = oauth_open(ct, context);
	out = oauth_seal(plain, strlen(plain), context);
	explicit_bzero(plain, strlen(plain));
	(*n)++;
	return out;
}

/*
 * Re-encrypt the rows of the current SPI result (id, access, refresh) and
 * write them.  Returns the last id seen.
 */
static pg_uuid_t
rewrite_rows(SPIPlanPtr write, const char *active, RotateShared *rs)
{
	SPITupleTable *tt = SPI_tuptable;
	uint64		n = SPI_processed;
	pg_uuid_t	last;

	memset(&last, 0, sizeof(last));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		Datum		a = SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull);
		bytea	   *at = isnull ? NULL : DatumGetByteaPP(a);
		Datum		r = SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull);
		bytea	   *rt = isnull ? NULL : DatumGetByteaPP(r);
		char	   *idstr = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)));
		Datum		v[3];
		char		nulls[3] = {' ', ' ', ' '};

		at = reseal(at, active, oauth_conn_context(idstr, "access"), &rs->rotated);
		rt = reseal(rt, active, oauth_conn_context(idstr, "refresh"), &rs->rotated);
		v[0] = UUIDPGetDatum(id);
		v[1] = at ? PointerGetDatum(at) : (Datum) 0;
		if (!at)
			nulls[1] = 'n';
		v[2] = rt ? PointerGetDatum(rt) : (Datum) 0;
		if (!rt)
			nulls[2] = 'n';
		if (SPI_execute_plan(write, v, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not write a re-encrypted connection");
		last = *id;
	}
	return last;
}

static SPIPlanPtr
plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	p = SPI_prepare(sql, nargs, types);

	if (p == NULL)
		elog(ERROR, "could not prepare statement: %s", SPI_result_code_string(SPI_result));
	return p;
}

static void
rotate_all(RotateShared *rs)
{
	const char *active;
	char	   *active_copy;
	pg_uuid_t	last;
	bool		have_last = false;
	pg_uuid_t  *left = NULL;
	uint64		nleft = 0;

	/* 1. batches, skipping locked rows */
	for (;;)
	{
		Datum		v[3];
		char		nulls[3] = {' ', ' ', ' '};
		uint64		got;
		SPIPlanPtr	sel;
		SPIPlanPtr	write;

		CHECK_FOR_INTERRUPTS();
		begin_batch("oauth_tokens: re-encrypting a batch of connections");
		active = oauth_active_key_id();
		sel = plan(ROTATE_BATCH_SQL, 3, (Oid[]) {UUIDOID, TEXTOID, INT4OID});
		write = plan(ROTATE_WRITE_SQL, 3, (Oid[]) {UUIDOID, BYTEAOID, BYTEAOID});
		v[0] = have_last ? UUIDPGetDatum(&last) : (Datum) 0;
		if (!have_last)
			nulls[0] = 'n';
		v[1] = CStringGetTextDatum(active);
		v[2] = Int32GetDatum(rs->batch);
		if (SPI_execute_plan(sel, v, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read a batch of connections");
		got = SPI_processed;
		if (got > 0)
		{
			last = rewrite_rows(write, active, rs);
			have_last = true;
		}
		end_batch(rs);
		if (got < (uint64) rs->batch)
			break;
	}

	/* 2. what was locked: one row per transaction, waiting for it */
	begin_batch("oauth_tokens: listing connections left to re-encrypt");
	active = oauth_active_key_id();
	{
		Datum		v = CStringGetTextDatum(active);
		SPIPlanPtr	p = plan(ROTATE_LEFT_SQL, 1, (Oid[]) {TEXTOID});
		MemoryContext outer = TopMemoryContext;

		if (SPI_execute_plan(p, &v, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not list connections left to re-encrypt");
		nleft = SPI_processed;
		if (nleft > 0)
			left = MemoryContextAlloc(outer, sizeof(pg_uuid_t) * nleft);
		for (uint64 i = 0; i < nleft; i++)
		{
			bool		isnull;

			left[i] = *DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i],
												   SPI_tuptable->tupdesc, 1, &isnull));
		}
	}
	end_batch(rs);
	rs->retried = nleft;
	for (uint64 i = 0; i < nleft; i++)
	{
		Datum		v[2];
		MemoryContext cxt = CurrentMemoryContext;
		int64		before = rs->rotated;

		CHECK_FOR_INTERRUPTS();
		begin_batch("oauth_tokens: re-encrypting a connection that was locked");
		PG_TRY();
		{
			SPI_execute("SET LOCAL lock_timeout = '" ROW_LOCK_WAIT "'", false, 0);
			active = oauth_active_key_id();
			v[0] = UUIDPGetDatum(&left[i]);
			v[1] = CStringGetTextDatum(active);
			if (SPI_execute_plan(plan(ROTATE_ONE_SQL, 2, (Oid[]) {UUIDOID, TEXTOID}),
								 v, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not read a connection");
			if (SPI_processed > 0)
				(void) rewrite_rows(plan(ROTATE_WRITE_SQL, 3, (Oid[]) {UUIDOID, BYTEAOID, BYTEAOID}),
									active, rs);
			end_batch(rs);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
				PG_RE_THROW();
			/* still locked: left to rotate_key's own transaction */
			FlushErrorState();
			AbortCurrentTransaction();	/* also ends SPI and the snapshot */
			rs->rotated = before;
		}
		PG_END_TRY();
	}
	if (left)
		pfree(left);

	/* 3. answers not yet applied */
	begin_batch("oauth_tokens: re-encrypting pending answers");
	active = oauth_active_key_id();
	active_copy = pstrdup(active);
	{
		Datum		v = CStringGetTextDatum(active_copy);
		SPIPlanPtr	write = plan(ROTATE_PENDING_WRITE_SQL, 2, (Oid[]) {INT8OID, BYTEAOID});
		SPITupleTable *tt;
		uint64		n;

		if (SPI_execute_plan(plan(ROTATE_PENDING_SQL, 1, (Oid[]) {TEXTOID}),
							 &v, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read pending answers");
		tt = SPI_tuptable;
		n = SPI_processed;
		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;
			Datum		id = SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull);
			pg_uuid_t  *conn = DatumGetUUIDP(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
			bytea	   *ct = DatumGetByteaPP(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
			char	   *idstr = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(conn)));
			Datum		w[2];

			w[0] = id;
			w[1] = PointerGetDatum(reseal(ct, active_copy,
										  oauth_conn_context(idstr, "pending"), &rs->rotated));
			if (SPI_execute_plan(write, w, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not write a pending answer");
		}
	}
	end_batch(rs);
}

void
oauth_rotate_main(Datum arg)
{
	dsm_segment *seg;
	RotateShared *rs;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	seg = dsm_attach(DatumGetUInt32(arg));
	if (seg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key rotation worker: the caller has gone")));
	rs = dsm_segment_address(seg);
	BackgroundWorkerInitializeConnectionByOid(rs->dboid, rs->roleid, 0);

	/* nothing a role or database setting says may change what runs here */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);

	PG_TRY();
	{
		rotate_all(rs);
		pg_write_barrier();
		rs->finished = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		rs->sqlerrcode = edata->sqlerrcode;
		strlcpy(rs->error, edata->message, ROTATE_ERR_LEN);
		pg_write_barrier();
		PG_RE_THROW();
	}
	PG_END_TRY();
	dsm_detach(seg);
	proc_exit(0);
}
