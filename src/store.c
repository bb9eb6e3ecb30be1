/*-------------------------------------------------------------------------
 *
 * store.c
 *	  Reading connection rows on the hot path.
 *
 * valid_token reads oauth.connections through its primary-key index with
 * systable_beginscan: no executor, no SPI, no row lock, and no dependence on
 * the caller's search_path or privileges.  It uses the latest snapshot, not
 * the transaction's, so a caller in REPEATABLE READ or SERIALIZABLE sees a
 * token the worker committed after its transaction began.
 *
 * The relation and index OIDs are cached per backend and forgotten on any
 * relcache invalidation of them (DROP/CREATE EXTENSION).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "errors.h"
#include "store.h"

static Oid	conn_relid = InvalidOid;
static Oid	conn_pkey = InvalidOid;
static bool callback_registered = false;

/* attribute numbers, found by name when the cache is filled */
static AttrNumber a_workspace, a_provider, a_access, a_expires, a_refresh_after,
			a_reauth, a_revoked, a_next_attempt, a_last_error, a_version, a_refreshed_at;

static void
forget_relids(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == conn_relid || relid == conn_pkey)
	{
		conn_relid = InvalidOid;
		conn_pkey = InvalidOid;
	}
}

static AttrNumber
attnum_of(const char *name)
{
	AttrNumber	n = get_attnum(conn_relid, name);

	if (n == InvalidAttrNumber)
		elog(ERROR, "column oauth.connections.%s is missing", name);
	return n;
}

static void
ensure_relids(void)
{
	Oid			nsp;

	if (OidIsValid(conn_relid))
		return;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(forget_relids, (Datum) 0);
		callback_registered = true;
	}
	nsp = get_namespace_oid("oauth", true);
	conn_relid = OidIsValid(nsp) ? get_relname_relid("connections", nsp) : InvalidOid;
	conn_pkey = OidIsValid(nsp) ? get_relname_relid("connections_pkey", nsp) : InvalidOid;
	if (!OidIsValid(conn_relid) || !OidIsValid(conn_pkey))
	{
		conn_relid = InvalidOid;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension oauth_tokens is not installed in this database")));
	}
	a_workspace = attnum_of("workspace_id");
	a_provider = attnum_of("provider");
	a_access = attnum_of("access_token_ciphertext");
	a_expires = attnum_of("expires_at");
	a_refresh_after = attnum_of("refresh_after");
	a_reauth = attnum_of("reauth_required_at");
	a_revoked = attnum_of("revoked_at");
	a_next_attempt = attnum_of("next_attempt_at");
	a_last_error = attnum_of("last_refresh_error");
	a_version = attnum_of("version");
	a_refreshed_at = attnum_of("refreshed_at");
}

char *
oauth_uuid_str(const pg_uuid_t *id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum((pg_uuid_t *) id)));
}

/*
 * Read what valid_token needs of connection id into snap, copying every
 * value into the current memory context.
 */
void
oauth_read_connection(const pg_uuid_t *id, ConnSnapshot *snap)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	Snapshot	snapshot;

	memset(snap, 0, sizeof(*snap));
	ensure_relids();

	rel = table_open(conn_relid, AccessShareLock);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ,
				UUIDPGetDatum((pg_uuid_t *) id));
	scan = systable_beginscan(rel, conn_pkey, true, snapshot, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		Datum	   *values = palloc(desc->natts * sizeof(Datum));
		bool	   *nulls = palloc(desc->natts * sizeof(bool));

		heap_deform_tuple(tup, desc, values, nulls);
		snap->found = true;
		snap->workspace_id = TextDatumGetCString(values[a_workspace - 1]);
		snap->provider = TextDatumGetCString(values[a_provider - 1]);
		if (!nulls[a_access - 1])
			snap->access_ct = DatumGetByteaPCopy(values[a_access - 1]);
		if (!nulls[a_expires - 1])
		{
			snap->has_expires = true;
			snap->expires_at = DatumGetTimestampTz(values[a_expires - 1]);
		}
		if (!nulls[a_refresh_after - 1])
		{
			snap->has_refresh_after = true;
			snap->refresh_after = DatumGetTimestampTz(values[a_refresh_after - 1]);
		}
		snap->reauth_required = !nulls[a_reauth - 1];
		snap->revoked = !nulls[a_revoked - 1];
		if (!nulls[a_next_attempt - 1])
		{
			snap->has_next_attempt = true;
			snap->next_attempt_at = DatumGetTimestampTz(values[a_next_attempt - 1]);
		}
		if (!nulls[a_refreshed_at - 1])
		{
			snap->has_refreshed_at = true;
			snap->refreshed_at = DatumGetTimestampTz(values[a_refreshed_at - 1]);
		}
		if (!nulls[a_last_error - 1])
			snap->last_error = TextDatumGetCString(values[a_last_error - 1]);
		snap->version = DatumGetInt64(values[a_version - 1]);
		pfree(values);
		pfree(nulls);
	}
	systable_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
}

/*
 * Is the connection's access token still valid (no expiry, or an expiry in
 * the future)?  For the worker: a connection without a refresh token cannot
 * be refreshed, but it is not dead while its token is still valid.
 */
bool
oauth_access_still_valid(const pg_uuid_t *id)
{
	ConnSnapshot snap;

	oauth_read_connection(id, &snap);
	return snap.found && snap.access_ct != NULL &&
		(!snap.has_expires || snap.expires_at > GetCurrentTimestamp());
}
