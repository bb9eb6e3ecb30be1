/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The background worker's loop: the one process where refreshes happen.
 *
 * Loop: drain newly posted requests from shared memory into the local
 * queue; sweep for due connections every oauth.sweep_interval (feeding the
 * same table, so sweeps and callers share single flight); start as many
 * queued jobs as the limits allow (queue.c); wait on curl's sockets and the
 * latch in one WaitEventSet (http.c); collect finished calls and store
 * their answers (queue.c, finish.c).
 *
 * The worker's files, each calling only the ones below it:
 *	worker.c	this loop
 *	queue.c		what runs next: the queues, limits, starting, collecting
 *	finish.c	storing results; answers kept for their row
 *	job.c		a job's life: its states, reading its row, its request
 *	http.c, provider.c, tenant_answers.c	the calls and their answers
 *	durable.c	the answer store (oauth.pending_answers), the schema version
 *	batch.c, shmem.c, crypto.c, store.c	transactions, the shared table,
 *				keys, rows
 *
 * Rules:
 *	- Signals: SIGTERM and SIGHUP set flags (the standard handlers) that the
 *	  loop reads at the top of each round; the wait wakes on the latch, so
 *	  neither waits for calls in flight.
 *	- No transaction is open while the loop waits; each round's memory is
 *	  in loop_cxt, reset every round; jobs live in jobs_cxt.
 *	- The worker_* fields of the shared table are set at start-up and
 *	  cleared at exit by this process only (pid compared, shmem.c):
 *	  worker_cleanup() fails every request not yet told, so no waiter hangs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "http.h"
#include "oauth_tokens.h"
#include "shmem.h"
#include "batch.h"
#include "durable.h"
#include "finish.h"
#include "job.h"
#include "queue.h"
#include "worker.h"

static TimestampTz next_sweep = 0;
static TimestampTz next_prune = 0;
static TimestampTz next_schema_check = 0;

/* Register the worker; called from _PG_init while preloading. */
void
oauth_register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	strcpy(worker.bgw_library_name, "oauth_tokens");
	strcpy(worker.bgw_function_name, "oauth_worker_main");
	strcpy(worker.bgw_name, "oauth_tokens refresh worker");
	strcpy(worker.bgw_type, "oauth_tokens worker");
	RegisterBackgroundWorker(&worker);
}

/*
 * On exit, fail every request we own so that no waiter hangs, and clear the
 * worker fields only if they are ours.
 */
static void
worker_cleanup(int code, Datum arg)
{
	/* an error raised while holding our lock must not deadlock us here */
	LWLockReleaseAll();
	http_abort_all();
	if (oauth_shmem_available())
		oauth_worker_detach();
}

/* Does this database have the extension?  Runs its own transaction. */
static bool
extension_present(void)
{
	bool		ok;
	Oid			nsp;

	StartTransactionCommand();
	nsp = get_namespace_oid("oauth", true);
	ok = OidIsValid(nsp) && OidIsValid(get_relname_relid("connections", nsp));
	CommitTransactionCommand();
	return ok;
}

/*
 * Drop events older than oauth.event_retention, PRUNE_BATCH rows a
 * transaction, so that pruning a large backlog never holds a long
 * transaction (nor delays the loop for long: one batch a round).  Returns
 * true while there is more to prune.
 */
#define PRUNE_BATCH 5000

static bool
prune_events(void)
{
	static SPIPlanPtr plan = NULL;
	Datum		arg = Int32GetDatum(oauth_event_retention_s);
	uint64		n;

	begin_work("oauth_tokens: pruning events");
	if (plan == NULL)
		plan = prepare_saved(
			"DELETE FROM oauth.events WHERE id OPERATOR(pg_catalog.=) ANY (ARRAY("
			"  SELECT e.id FROM oauth.events e "
			"   WHERE e.at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) "
			"         pg_catalog.make_interval(secs => $1::pg_catalog.float8)) "
			"   ORDER BY e.at LIMIT " CppAsString2(PRUNE_BATCH) "))",
			1, (Oid[]) {INT4OID});
	if (SPI_execute_plan(plan, &arg, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not prune events");
	n = SPI_processed;
	end_work();
	return n == PRUNE_BATCH;
}

/*
 * Set the worker up: signals, its database, the settings its SQL relies on,
 * its memory, curl; it becomes the worker of the shared table.
 */
static void
worker_start(void)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(oauth_database, NULL, 0);
	SetConfigOption("application_name", "oauth_tokens worker", PGC_USERSET, PGC_S_SESSION);

	/*
	 * The worker runs as a superuser: whatever a search_path finds first
	 * would run with that power, so its SQL resolves in pg_catalog only,
	 * whatever the database's or a role's settings say.  Its transactions
	 * are READ COMMITTED (a version-checked UPDATE must see the latest row,
	 * not fail on a serialization conflict) and never read-only.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_deferrable", "off", PGC_SUSET, PGC_S_OVERRIDE);

	job_memory_init();
	http_init();
	oauth_worker_attach();
	before_shmem_exit(worker_cleanup, (Datum) 0);
	ereport(LOG, (errmsg("oauth_tokens worker started for database \"%s\"", oauth_database)));
}

/*
 * Until the extension exists in the worker's database: fail requests fast
 * and look again every 5 s.  Once it does: apply the answers a previous
 * run received but did not apply, then serve.  Returns true when ready.
 */
static bool
worker_ready(void)
{
	static bool announced_missing = false;

	if (oauth_worker_is_ready())
		return true;
	if (!extension_present())
	{
		if (!announced_missing)
			ereport(LOG,
					(errmsg("oauth_tokens worker: extension not installed in database \"%s\"; waiting",
							oauth_database),
					 errhint("Run CREATE EXTENSION oauth_tokens CASCADE there.")));
		announced_missing = true;
		queue_drain_ring();		/* nothing can be served yet: fail fast */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 5000L, oauth_wait_event(OAUTH_WAIT_WORKER_EXTENSION));
		ResetLatch(MyLatch);
		/* requests posted meanwhile are served once the extension exists */
		return false;
	}
	(void) schema_check();
	jobs_replay();
	oauth_worker_set_ready();
	return true;
}

/* The periodic work of a round: sweep, prune, notice a schema update. */
static void
periodic_work(TimestampTz now)
{
	if (oauth_sweep_interval_ms > 0 &&
		(now >= next_sweep || (sweep_again && n_queued < oauth_max_concurrent_refreshes)))
	{
		next_sweep = TimestampTzPlusMilliseconds(now, oauth_sweep_interval_ms);
		queue_sweep();
		queue_drain_ring();
		queue_order();
	}
	if (now >= next_prune)
	{
		/* more to prune: the next batch in the next round */
		next_prune = prune_events() ? now :
			TimestampTzPlusMilliseconds(now, 600 * 1000);
	}
	if (worker_schema < SCHEMA_1_1 && now >= next_schema_check)
	{
		/* a 1.0 schema: notice ALTER EXTENSION UPDATE within a second */
		next_schema_check = TimestampTzPlusMilliseconds(now, 1000);
		if (schema_check())
		{
			job_plans_reset();
			finish_plans_reset();
			jobs_replay();
		}
	}
}

/*
 * How long the loop may wait: until the next sweep, kept answer, prune,
 * release of callers (release_in) or statistics report; at most 10 s.
 */
static long
wait_timeout(TimestampTz now, long release_in)
{
	long		timeout = 10000;
	long		kept = jobs_next_store_ms();
	long		stats;

	if (oauth_sweep_interval_ms > 0)
		timeout = Max(0, Min(timeout, (long) ((next_sweep - GetCurrentTimestamp()) / 1000)));
	if (kept >= 0)
		timeout = Min(timeout, kept);
	if (next_prune <= now)
		timeout = 0;
	/* callers of a call in flight are told at oauth.http_timeout */
	if (release_in >= 0)
		timeout = Min(timeout, release_in);
	/* the worker's table statistics reach pg_stat_user_tables */
	stats = pgstat_report_stat(false);
	if (stats > 0)
		timeout = Min(timeout, stats);
	return timeout;
}

/*
 * The worker's entry point.  Serves oauth.database until SIGTERM.
 */
void
oauth_worker_main(Datum arg)
{
	MemoryContext loop_cxt;

	worker_start();
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "oauth_tokens loop", ALLOCSET_DEFAULT_SIZES);
	while (!ShutdownRequestPending)
	{
		uint32		ev = 0;
		long		release_in;
		TimestampTz now;

		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!worker_ready())
			continue;

		queue_drain_ring();
		now = GetCurrentTimestamp();
		periodic_work(now);
		jobs_retry_writes();
		release_in = queue_release_waiters();
		queue_start_jobs();
		/* jobs that finished without HTTP were published by queue_start_jobs */

		pgstat_report_activity(STATE_IDLE, queue_activity());
		http_wait(wait_timeout(now, release_in), &ev);
		if (ev & WL_LATCH_SET)
			ResetLatch(MyLatch);
		queue_collect_finished();
	}

	/*
	 * Exit code 1, not 0: a worker stopped by pg_terminate_backend() is
	 * started again by the postmaster (at shutdown nothing is restarted).
	 */
	proc_exit(1);
}
