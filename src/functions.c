/*-------------------------------------------------------------------------
 *
 * functions.c
 *	  The SQL-callable C layer: valid_token, token_rejected, refresh,
 *	  refresh_due, stats, and the internal seal/open helpers.
 *
 * A backend never talks to a provider and never writes a refresh result:
 * it posts a request to the single-flight table (shmem.c) and, when it must
 * have the new token, waits for the worker's outcome on a condition
 * variable.  Whatever the caller's transaction does afterwards, the refresh
 * is already committed by the worker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "compat.h"
#include "crypto.h"
#include "errors.h"
#include "identity.h"
#include "privileges.h"
#include "oauth_tokens.h"
#include "shmem.h"
#include "store.h"
#include "tenant.h"

PG_FUNCTION_INFO_V1(oauth_valid_token);
PG_FUNCTION_INFO_V1(oauth_token_rejected);
PG_FUNCTION_INFO_V1(oauth_refresh);
PG_FUNCTION_INFO_V1(oauth_refresh_due);
PG_FUNCTION_INFO_V1(oauth_stats);
PG_FUNCTION_INFO_V1(oauth_refresh_jobs);
PG_FUNCTION_INFO_V1(oauth_seal_sql);
PG_FUNCTION_INFO_V1(oauth_open_sql);
PG_FUNCTION_INFO_V1(oauth_key_id_sql);
PG_FUNCTION_INFO_V1(oauth_active_key_id_sql);
PG_FUNCTION_INFO_V1(oauth_reload_keys_sql);

typedef RefreshResult WaitResult;

#define REQUIRE_ARG(n, name) \
	do { \
		if (PG_ARGISNULL(n)) \
			ereport(ERROR, \
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), \
					 errmsg("%s must not be NULL", name))); \
	} while (0)

/* Raise OA006 unless the refresh service can take requests for this database. */
static void
require_service(void)
{
	pid_t		pid;
	Oid			dboid;

	oauth_require_traffic();	/* standby, copy, subscriber, switched off */
	if (!oauth_shmem_available())
		ereport(ERROR,
				(errcode(ERRCODE_OAUTH_UNAVAILABLE),
				 errmsg("refresh service unavailable: oauth_tokens is not loaded through shared_preload_libraries"),
				 errhint("Add oauth_tokens to shared_preload_libraries and restart the server.")));
	oauth_worker_status(&pid, &dboid);
	if (pid == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OAUTH_UNAVAILABLE),
				 errmsg("refresh service unavailable: the oauth_tokens worker is not running"),
				 errhint("Check the server log; the worker restarts by itself after a crash.")));
	if (dboid != MyDatabaseId)
		ereport(ERROR,
				(errcode(ERRCODE_OAUTH_UNAVAILABLE),
				 errmsg("refresh service unavailable: the oauth_tokens worker serves another database"),
				 errhint("Set oauth.database to this database's name and restart the server.")));
}

/* The entries a waiting session holds (nwaiters counted), for cleanup. */
typedef struct WaitHold
{
	const pg_uuid_t *ids;
	bool	   *held;
	int			n;
} WaitHold;

/*
 * Give up our hold on every entry we hold: on success, on error, and at
 * process exit (a FATAL such as pg_terminate_backend does not unwind through
 * PG_TRY, so this runs as an ensure-cleanup callback too).  The last holder
 * of a finished entry removes it.
 */
static void
release_holds(int code, Datum arg)
{
	WaitHold   *h = (WaitHold *) DatumGetPointer(arg);

	ConditionVariableCancelSleep();
	oauth_requests_release(h->ids, h->held, h->n);
}

/*
 * Post refresh requests for ids[n] (joining any in flight) and wait until
 * each has an outcome.  Honours cancel and statement_timeout.  When the
 * table is full, waits for what it already posted before posting more, so
 * that sessions holding entries can never wait on each other for room.
 */
static void
post_and_wait(const pg_uuid_t *ids, const int64 *versions, int n, uint32 flags,
			  WaitResult *results)
{
	uint64	   *gens = palloc0(sizeof(uint64) * n);
	WaitHold	hold;
	int			next = 0;

	require_service();
	hold.ids = ids;
	hold.held = palloc0(sizeof(bool) * n);
	hold.n = n;
	oauth_stat_add(ST_WAITS, n);

	PG_ENSURE_ERROR_CLEANUP(release_holds, PointerGetDatum(&hold));
	{
		while (next < n)
		{
			int			first = next;
			bool		full = false;

			next += oauth_requests_post(&ids[first], &versions[first], n - first, flags,
										&gens[first], &hold.held[first], &full);

			if (next > first)
			{
				oauth_wake_worker();
				for (int i = first; i < next; i++)
					oauth_requests_wait(&ids[i], gens[i], &results[i]);
				release_holds(0, PointerGetDatum(&hold));
			}
			else if (full)
			{
				/* we hold nothing: wait for the worker to free entries */
				oauth_wait_for_room();
			}
		}
	}
	PG_END_ENSURE_ERROR_CLEANUP(release_holds, PointerGetDatum(&hold));
	pfree(gens);
	pfree(hold.held);
}

/* Post a request nobody waits for (stale-while-revalidate).  Best effort. */
static void
post_background(const pg_uuid_t *id, int64 version)
{
	if (oauth_shmem_available())
		oauth_request_background(id, version);
}

static void
report_not_found(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OAUTH_NOT_FOUND),
			 errmsg("connection not found")));
}

static void
report_reauth(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_OAUTH_REAUTH_REQUIRED),
			 errmsg("connection requires re-authorization"),
			 detail ? errdetail("The provider answered: %s.", detail) : 0,
			 errhint("Send the customer through the authorization flow again (oauth.authorize_url, oauth.exchange_code) or store new tokens with oauth.reauthorize().")));
}

static void
report_revoked(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OAUTH_REVOKED),
			 errmsg("connection has been revoked")));
}

/*
 * Read the row and apply tenant scoping: another workspace, given or bound
 * (tenant.c), is "not found".  A workspace other than the bound one is
 * refused before the row is read.
 */
static void
read_scoped(const char *workspace, const pg_uuid_t *id, ConnSnapshot *snap)
{
	if (!oauth_workspace_admitted(workspace, strlen(workspace)))
		report_not_found();
	oauth_read_connection(id, snap);
	if (!snap->found || strcmp(snap->workspace_id, workspace) != 0)
		report_not_found();
}

static void
raise_outcome(const WaitResult *r, const char *provider)
{
	switch (r->outcome)
	{
		case RO_REAUTH:
			report_reauth(r->message[0] ? r->message : NULL);
			break;
		case RO_PROVIDER:
			ereport(ERROR,
					(errcode(ERRCODE_OAUTH_PROVIDER_CONFIG),
					 errmsg("provider \"%s\" is misconfigured", provider),
					 errdetail("%s", r->message),
					 errhint("Fix the client id, secret or auth_method with oauth.register_provider(); that also resumes the provider's refreshes.")));
			break;
		case RO_NOT_FOUND:
			report_not_found();
			break;
		case RO_REVOKED:
			report_revoked();
			break;
		case RO_UNAVAILABLE:
			ereport(ERROR,
					(errcode(ERRCODE_OAUTH_UNAVAILABLE),
					 errmsg("refresh service unavailable"),
					 errdetail("%s", r->message)));
			break;
		default:
			break;
	}
}

static void
raise_no_valid_token(const char *reason, bool has_next, TimestampTz next)
{
	ereport(ERROR,
			(errcode(ERRCODE_OAUTH_NO_VALID_TOKEN),
			 errmsg("no valid token: the token has expired and the refresh failed"),
			 has_next ? errdetail("%s; next attempt at %s.", reason ? reason : "refresh failed",
								  timestamptz_to_str(next))
			 : errdetail("%s.", reason ? reason : "refresh failed")));
}

static text *
decrypt_access(const ConnSnapshot *snap, const pg_uuid_t *id)
{
	char	   *idstr = oauth_uuid_str(id);
	char	   *plain = oauth_open(snap->access_ct, oauth_conn_context(idstr, "access"));
	text	   *t = cstring_to_text(plain);

	explicit_bzero(plain, strlen(plain));
	return t;
}

/*
 * The validity a caller may ask of this token: min_validity, capped at half
 * the lifetime the provider grants (expires_at - refreshed_at of the last
 * answer, default_lifetime included).  Asking for more than the provider
 * gives would make every call a refresh: the newest token is served.
 */
static int64
validity_wanted(const ConnSnapshot *snap, int64 min_validity)
{
	if (snap->has_expires && snap->has_refreshed_at &&
		snap->expires_at > snap->refreshed_at)
	{
		int64		half = (snap->expires_at - snap->refreshed_at) / 2;

		return Min(min_validity, half);
	}
	return min_validity;
}

/*
 * oauth.valid_token(workspace_id, connection_id, min_validity): see SPEC 5.
 * Fast path: one index probe, one decrypt.
 *
 * No refresh storm: a token is served without a refresh when it is valid
 * for the validity wanted (validity_wanted), or when it is valid and was
 * obtained after this call began (by our own wait or anyone's refresh).
 */
Datum
oauth_valid_token(PG_FUNCTION_ARGS)
{
	char	   *workspace;
	pg_uuid_t  *id;
	int64		min_validity;
	ConnSnapshot snap;
	WaitResult	res;
	bool		refreshed = false;
	TimestampTz call_start = 0;	/* the first attempt's clock reading */

	REQUIRE_ARG(0, "workspace_id");
	REQUIRE_ARG(1, "connection_id");
	workspace = text_to_cstring(PG_GETARG_TEXT_PP(0));
	id = PG_GETARG_UUID_P(1);
	if (PG_ARGISNULL(2))
		min_validity = (int64) oauth_min_validity_s * USECS_PER_SEC;
	else
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(2);
		int64		days_us;
		int64		months_us;

		if (iv->time < 0 || iv->day < 0 || iv->month < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("min_validity must not be negative")));
		/* a validity beyond what int64 microseconds hold means "always refresh" */
		if (pg_mul_s64_overflow((int64) iv->day, USECS_PER_DAY, &days_us) ||
			pg_mul_s64_overflow((int64) iv->month, (int64) DAYS_PER_MONTH * USECS_PER_DAY, &months_us) ||
			pg_add_s64_overflow(iv->time, days_us, &min_validity) ||
			pg_add_s64_overflow(min_validity, months_us, &min_validity))
			min_validity = PG_INT64_MAX;
	}

	for (int attempt = 0;; attempt++)
	{
		TimestampTz now;

		read_scoped(workspace, id, &snap);
		if (snap.revoked)
			report_revoked();
		if (snap.reauth_required)
			report_reauth(snap.last_error);

		now = GetCurrentTimestamp();
		if (attempt == 0)
			call_start = now;
		if (!snap.has_expires ||
			snap.expires_at - now >= validity_wanted(&snap, min_validity) ||
			(snap.expires_at > now &&
			 (refreshed || (snap.has_refreshed_at && snap.refreshed_at >= call_start))))
		{
			/* fresh enough; inside the refresh window, revalidate in background */
			if (snap.has_refresh_after && now >= snap.refresh_after && !refreshed)
				post_background(id, snap.version);
			PG_RETURN_TEXT_P(decrypt_access(&snap, id));
		}

		/* needs a refresh before it can be used */
		if (attempt >= 2)
			raise_no_valid_token("the provider keeps issuing tokens that expire too soon", false, 0);
		if (snap.has_next_attempt && snap.next_attempt_at > now)
		{
			/* backing off: serve what is still valid, never call the provider */
			if (snap.has_expires && snap.expires_at > now)
				PG_RETURN_TEXT_P(decrypt_access(&snap, id));
			raise_no_valid_token(snap.last_error, true, snap.next_attempt_at);
		}

		memset(&res, 0, sizeof(res));
		post_and_wait(id, &snap.version, 1, 0, &res);
		raise_outcome(&res, snap.provider);
		if (res.outcome == RO_TRANSIENT)
		{
			read_scoped(workspace, id, &snap);
			if (snap.access_ct && snap.has_expires && snap.expires_at > GetCurrentTimestamp())
				PG_RETURN_TEXT_P(decrypt_access(&snap, id));
			/* the worker committed next_attempt_at before waking us */
			raise_no_valid_token(res.message, snap.has_next_attempt, snap.next_attempt_at);
		}
		refreshed = true;
	}
}

static const char *
outcome_text(const WaitResult *r)
{
	switch (r->outcome)
	{
		case RO_REFRESHED:
			return "refreshed";
		case RO_NOT_NEEDED:
			return "not_needed";
		case RO_REAUTH:
			return "reauth_required";
		case RO_TRANSIENT:
			if (r->next_attempt != 0)
				return psprintf("transient_failure: %s; next attempt at %s", r->message,
								timestamptz_to_str(r->next_attempt));
			return psprintf("transient_failure: %s", r->message);
		case RO_PROVIDER:
			return psprintf("provider_error: %s", r->message);
		case RO_NOT_FOUND:
			return "not_found";
		case RO_REVOKED:
			return "revoked";
		case RO_UNAVAILABLE:
			return psprintf("unavailable: %s", r->message);
		default:
			return "unknown";
	}
}

/* oauth.refresh(workspace_id, connection_id): force a refresh now. */
Datum
oauth_refresh(PG_FUNCTION_ARGS)
{
	char	   *workspace;
	pg_uuid_t  *id;
	ConnSnapshot snap;
	WaitResult	res;

	REQUIRE_ARG(0, "workspace_id");
	REQUIRE_ARG(1, "connection_id");
	workspace = text_to_cstring(PG_GETARG_TEXT_PP(0));
	id = PG_GETARG_UUID_P(1);
	read_scoped(workspace, id, &snap);
	if (snap.revoked)
		report_revoked();
	memset(&res, 0, sizeof(res));
	post_and_wait(id, &snap.version, 1, REQ_FORCE, &res);
	if (res.outcome == RO_NOT_FOUND)
		report_not_found();
	/*
	 * Another refresh won between our read and the worker's (no message):
	 * the connection was refreshed.  A superseded answer (the row was
	 * re-authorized, revoked or deleted meanwhile) stays "not_needed".
	 */
	if (res.outcome == RO_NOT_NEEDED && res.message[0] == '\0')
		res.outcome = RO_REFRESHED;
	PG_RETURN_TEXT_P(cstring_to_text(outcome_text(&res)));
}

/*
 * oauth.token_rejected(workspace_id, connection_id, access_token): if the
 * rejected token is still the stored one, refresh it now (the worker records
 * the event); if it was already replaced, do nothing.
 */
Datum
oauth_token_rejected(PG_FUNCTION_ARGS)
{
	char	   *workspace;
	pg_uuid_t  *id;
	text	   *given;
	ConnSnapshot snap;
	WaitResult	res;
	text	   *stored;
	int			len;
	uint8		diff;

	REQUIRE_ARG(0, "workspace_id");
	REQUIRE_ARG(1, "connection_id");
	REQUIRE_ARG(2, "access_token");
	workspace = text_to_cstring(PG_GETARG_TEXT_PP(0));
	id = PG_GETARG_UUID_P(1);
	given = PG_GETARG_TEXT_PP(2);
	read_scoped(workspace, id, &snap);
	if (snap.revoked)
		report_revoked();
	if (snap.reauth_required)
		PG_RETURN_VOID();
	stored = decrypt_access(&snap, id);
	len = VARSIZE_ANY_EXHDR(stored);
	diff = (len != VARSIZE_ANY_EXHDR(given));
	for (int i = 0; i < len && i < VARSIZE_ANY_EXHDR(given); i++)
		diff |= VARDATA_ANY(stored)[i] ^ VARDATA_ANY(given)[i];
	explicit_bzero(VARDATA_ANY(stored), len);
	if (diff != 0)
		PG_RETURN_VOID();		/* already replaced */

	memset(&res, 0, sizeof(res));
	post_and_wait(id, &snap.version, 1, REQ_FORCE | REQ_REJECTED, &res);
	PG_RETURN_VOID();
}

/*
 * oauth.refresh_due(max_connections): refresh every due connection through
 * the worker and return one row per attempt.
 */
Datum
oauth_refresh_due(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			max_conn;
	int			n = 0;
	pg_uuid_t  *ids = NULL;
	int64	   *versions = NULL;
	char	  **workspaces = NULL;
	char	  **providers = NULL;
	WaitResult *results;
	MemoryContext caller = CurrentMemoryContext;
	OwnerSwitch owner;

	REQUIRE_ARG(0, "max_connections");
	max_conn = PG_GETARG_INT32(0);
	if (max_conn < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_connections must be at least 1")));
	InitMaterializedSRF(fcinfo, 0);
	require_service();

	oauth_become_owner(fcinfo, &owner);	/* the tables are the owner's */
	SPI_connect();
	{
		Datum		arg = Int32GetDatum(max_conn);
		Oid			argt = INT4OID;

		if (SPI_execute_with_args("SELECT id, version, workspace_id, provider FROM oauth._due_connections($1)",
								  1, &argt, &arg, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not list due connections");
		n = SPI_processed;
		if (n > 0)
		{
			MemoryContext spi = MemoryContextSwitchTo(caller);

			ids = palloc(sizeof(pg_uuid_t) * n);
			versions = palloc(sizeof(int64) * n);
			workspaces = palloc(sizeof(char *) * n);
			providers = palloc(sizeof(char *) * n);
			for (int i = 0; i < n; i++)
			{
				HeapTuple	t = SPI_tuptable->vals[i];
				TupleDesc	d = SPI_tuptable->tupdesc;
				bool		isnull;

				ids[i] = *DatumGetUUIDP(SPI_getbinval(t, d, 1, &isnull));
				versions[i] = DatumGetInt64(SPI_getbinval(t, d, 2, &isnull));
				workspaces[i] = SPI_getvalue(t, d, 3);
				providers[i] = SPI_getvalue(t, d, 4);
			}
			MemoryContextSwitchTo(spi);
		}
	}
	SPI_finish();
	oauth_restore_user(&owner);

	if (n == 0)
		return (Datum) 0;
	results = palloc0(sizeof(WaitResult) * n);
	post_and_wait(ids, versions, n, REQ_DUE, results);
	for (int i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = UUIDPGetDatum(&ids[i]);
		values[1] = CStringGetTextDatum(workspaces[i]);
		values[2] = CStringGetTextDatum(providers[i]);
		values[3] = CStringGetTextDatum(outcome_text(&results[i]));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* oauth.stats(): counters since the server started. */
Datum
oauth_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[ST_NUM];
	bool		nulls[ST_NUM] = {0};

	if (!oauth_shmem_available())
		ereport(ERROR,
				(errcode(ERRCODE_OAUTH_UNAVAILABLE),
				 errmsg("oauth_tokens must be loaded via shared_preload_libraries")));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	for (int i = 0; i < ST_NUM; i++)
		values[i] = Int64GetDatum((int64) pg_atomic_read_u64(&oauth_shared->stats[i]));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * oauth.refresh_jobs(): the refresh jobs in the shared request table, one
 * row each, with their state (shmem.h).  Ids and states only, no secret.
 */
Datum
oauth_refresh_jobs(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RefreshEntry *copy;
	RefreshEntry *e;
	int			n;

	if (!oauth_shmem_available())
		ereport(ERROR,
				(errcode(ERRCODE_OAUTH_UNAVAILABLE),
				 errmsg("oauth_tokens must be loaded via shared_preload_libraries")));
	InitMaterializedSRF(fcinfo, 0);

	/* copied under the lock, tuples built after */
	copy = oauth_requests_copy(&n);

	for (int i = 0; i < n; i++)
	{
		Datum		values[7];
		bool		nulls[7] = {0};

		e = &copy[i];
		values[0] = UUIDPGetDatum(&e->id);
		values[1] = CStringGetTextDatum(refresh_job_state_names[e->state]);
		values[2] = CStringGetTextDatum((e->flags & REQ_SWEEP) ? "sweep" : "caller");
		values[3] = BoolGetDatum((e->flags & REQ_FORCE) != 0);
		values[4] = BoolGetDatum((e->flags & REQ_REJECTED) != 0);
		values[5] = Int32GetDatum(e->nwaiters);
		values[6] = TimestampTzGetDatum(e->state_since);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* oauth._seal(plaintext, context): internal, owner only. */
Datum
oauth_seal_sql(PG_FUNCTION_ARGS)
{
	text	   *plain;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	REQUIRE_ARG(1, "context");
	plain = PG_GETARG_TEXT_PP(0);
	PG_RETURN_BYTEA_P(oauth_seal(VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain),
								 text_to_cstring(PG_GETARG_TEXT_PP(1))));
}

/* oauth._open(ciphertext, context): internal, owner only. */
Datum
oauth_open_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	REQUIRE_ARG(1, "context");
	PG_RETURN_TEXT_P(cstring_to_text(oauth_open(PG_GETARG_BYTEA_PP(0),
												text_to_cstring(PG_GETARG_TEXT_PP(1)))));
}

Datum
oauth_key_id_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(oauth_ciphertext_key_id(PG_GETARG_BYTEA_PP(0))));
}

Datum
oauth_active_key_id_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(oauth_active_key_id()));
}

/* oauth._reload_keys(): this session looks at the key file on next use. */
Datum
oauth_reload_keys_sql(PG_FUNCTION_ARGS)
{
	oauth_keyring_stale();
	PG_RETURN_VOID();
}
