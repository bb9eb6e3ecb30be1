/*-------------------------------------------------------------------------
 *
 * identity.c
 *	  Which server may talk to providers: copies, standbys, subscribers and
 *	  the oauth.provider_traffic switch.
 *
 * Every refresh rotates the refresh token out from under anyone else who
 * holds it, so exactly one database may use a set of grants.  That database
 * is recorded in oauth.refresh_home (one row: the cluster's system
 * identifier and the database's oid, written by CREATE EXTENSION and
 * oauth.adopt_copy(); a restored dump brings the source's row).  A request
 * may go to a provider only when all of these hold:
 *
 *	- oauth.provider_traffic is on (the operator's switch, sighup);
 *	- the server is not in recovery (a hot standby: call on the primary);
 *	- oauth.refresh_home names this cluster and this database (otherwise it
 *	  is a restored copy or a clone: oauth.adopt_copy() makes it home);
 *	- no logical replication subscription feeds oauth.connections here (the
 *	  publisher refreshes).
 *
 * oauth_traffic_allowed() is the one check; the worker calls it before it
 * sends anything (job prepare, sweeps) and the SQL-callable layer before it
 * posts a request or calls a provider itself, so a caller gets the reason
 * and its hint instead of a generic failure.  Still-valid tokens are served
 * everywhere: valid_token's fast path never comes here.
 *
 * The row and the subscription state are cached per process and forgotten
 * on a relcache invalidation of oauth.refresh_home (its statement trigger
 * sends one through oauth._refresh_home_changed(); DROP/CREATE EXTENSION
 * send their own) or a syscache invalidation of pg_subscription_rel.  A
 * database without the table (the 1.0 schema, before ALTER EXTENSION
 * UPDATE) keeps the behaviour of 1.0: traffic allowed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_subscription_rel.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "errors.h"
#include "identity.h"

PG_FUNCTION_INFO_V1(oauth_refresh_home_changed);
PG_FUNCTION_INFO_V1(oauth_provider_traffic_status);

bool		oauth_provider_traffic = true;

/* Why traffic is not allowed. */
typedef enum TrafficBlock
{
	TB_NONE,
	TB_SWITCHED_OFF,			/* oauth.provider_traffic = off */
	TB_STANDBY,					/* RecoveryInProgress() */
	TB_COPY,					/* oauth.refresh_home names another place */
	TB_NO_HOME,					/* oauth.refresh_home is empty */
	TB_SUBSCRIBER				/* a subscription feeds oauth.connections */
} TrafficBlock;

/* The cached home: valid while home_known. */
static bool callbacks_registered = false;
static bool home_known = false;
static Oid	home_relid = InvalidOid;
static bool home_present = false;	/* the table has its row */
static int64 home_sysid = 0;
static Oid	home_dboid = InvalidOid;
static char home_dbname[NAMEDATALEN];
static bool subscribed_known = false;
static bool subscribed = false;

static void
forget_home(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == home_relid)
		home_known = false;
	/* oauth.connections may have been created or dropped: look again */
	subscribed_known = false;
}

static void
forget_subscriptions(Datum arg, int cacheid, uint32 hashvalue)
{
	subscribed_known = false;
}

void
oauth_identity_define_gucs(void)
{
	DefineCustomBoolVariable("oauth.provider_traffic",
							 "Send requests to providers (refresh, revoke, code exchange, client credentials).",
							 "off stops all provider traffic at once; still-valid tokens are served.",
							 &oauth_provider_traffic, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
}

static void
register_callbacks(void)
{
	if (callbacks_registered)
		return;
	CacheRegisterRelcacheCallback(forget_home, (Datum) 0);
	CacheRegisterSyscacheCallback(SUBSCRIPTIONRELMAP, forget_subscriptions, (Datum) 0);
	callbacks_registered = true;
}

/* Fill the cache from oauth.refresh_home.  Needs a transaction. */
static void
read_home(void)
{
	Oid			nsp = get_namespace_oid("oauth", true);
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	Snapshot	snapshot;

	home_relid = OidIsValid(nsp) ? get_relname_relid("refresh_home", nsp) : InvalidOid;
	home_present = false;
	if (!OidIsValid(home_relid))
		return;					/* not cached: the table may come */

	rel = table_open(home_relid, AccessShareLock);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan(rel, InvalidOid, false, snapshot, 0, NULL);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		bool		isnull;
		Datum		v;

		v = heap_getattr(tup, get_attnum(home_relid, "system_identifier"), desc, &isnull);
		home_sysid = isnull ? 0 : DatumGetInt64(v);
		v = heap_getattr(tup, get_attnum(home_relid, "database_oid"), desc, &isnull);
		home_dboid = isnull ? InvalidOid : DatumGetObjectId(v);
		v = heap_getattr(tup, get_attnum(home_relid, "database_name"), desc, &isnull);
		strlcpy(home_dbname, isnull ? "" : TextDatumGetCString(v), sizeof(home_dbname));
		home_present = true;
	}
	systable_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
	home_known = true;
}

/* Does a logical replication subscription feed oauth.connections here? */
static bool
connections_subscribed(void)
{
	Oid			nsp;
	Oid			conn;
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;

	if (subscribed_known)
		return subscribed;
	nsp = get_namespace_oid("oauth", true);
	conn = OidIsValid(nsp) ? get_relname_relid("connections", nsp) : InvalidOid;
	subscribed = false;
	if (OidIsValid(conn))
	{
		rel = table_open(SubscriptionRelRelationId, AccessShareLock);
		ScanKeyInit(&key, Anum_pg_subscription_rel_srrelid, BTEqualStrategyNumber,
					F_OIDEQ, ObjectIdGetDatum(conn));
		scan = systable_beginscan(rel, SubscriptionRelSrrelidSrsubidIndexId, true,
								  NULL, 1, &key);
		subscribed = HeapTupleIsValid(systable_getnext(scan));
		systable_endscan(scan);
		table_close(rel, AccessShareLock);
	}
	subscribed_known = true;
	return subscribed;
}

static TrafficBlock
traffic_block(void)
{
	if (!oauth_provider_traffic)
		return TB_SWITCHED_OFF;
	if (RecoveryInProgress())
		return TB_STANDBY;
	register_callbacks();
	AcceptInvalidationMessages();
	if (!home_known)
		read_home();
	if (OidIsValid(home_relid))
	{
		if (!home_present)
			return TB_NO_HOME;
		if (home_sysid != (int64) GetSystemIdentifier() || home_dboid != MyDatabaseId)
			return TB_COPY;
	}
	if (connections_subscribed())
		return TB_SUBSCRIBER;
	return TB_NONE;
}

static const char *
block_reason(TrafficBlock b)
{
	switch (b)
	{
		case TB_NONE:
			return NULL;
		case TB_SWITCHED_OFF:
			return "provider traffic is turned off (oauth.provider_traffic = off)";
		case TB_STANDBY:
			return "this server is a hot standby; refreshes happen on the primary";
		case TB_COPY:
			return psprintf("this database is a copy of database \"%s\" of system %lld, which refreshes these grants",
							home_dbname, (long long) home_sysid);
		case TB_NO_HOME:
			return "oauth.refresh_home records no database that refreshes these grants";
		case TB_SUBSCRIBER:
			return "this database is a logical replication subscriber of oauth.connections";
	}
	return NULL;
}

bool
oauth_traffic_allowed(const char **reason)
{
	static TrafficBlock logged = TB_NONE;
	TrafficBlock b = traffic_block();

	/* the worker says once in the log when it stops or resumes sending */
	if (MyBackendType == B_BG_WORKER && b != logged)
	{
		if (b == TB_NONE)
			ereport(LOG, (errmsg("oauth_tokens: requests to providers resumed")));
		else
			ereport(LOG, (errmsg("oauth_tokens: no requests are sent to providers: %s",
								 block_reason(b))));
		logged = b;
	}
	if (b == TB_NONE)
		return true;
	if (reason)
		*reason = block_reason(b);
	return false;
}

void
oauth_require_traffic(void)
{
	TrafficBlock b = traffic_block();

	switch (b)
	{
		case TB_NONE:
			return;
		case TB_SWITCHED_OFF:
			ereport(ERROR,
					(errcode(ERRCODE_OAUTH_UNAVAILABLE),
					 errmsg("provider traffic is turned off on this server"),
					 errdetail("oauth.provider_traffic is off: nothing is sent to any provider; still-valid tokens are served."),
					 errhint("Set oauth.provider_traffic = on and reload the configuration.")));
			break;
		case TB_STANDBY:
			ereport(ERROR,
					(errcode(ERRCODE_OAUTH_UNAVAILABLE),
					 errmsg("this server is a hot standby: tokens cannot be refreshed here"),
					 errdetail("A standby serves tokens that are still valid; refreshes, revocations and code exchanges happen on the primary."),
					 errhint("Call this on the primary server.")));
			break;
		case TB_COPY:
			ereport(ERROR,
					(errcode(ERRCODE_OAUTH_UNAVAILABLE),
					 errmsg("this database is a copy: its grants are refreshed by database \"%s\" of system %lld",
							home_dbname, (long long) home_sysid),
					 errdetail("Nothing is sent to providers from a restored or cloned copy, since a refresh here would rotate refresh tokens out from under the original; still-valid tokens are served."),
					 errhint("If this copy is now the one that refreshes and the original no longer does, run SELECT oauth.adopt_copy();")));
			break;
		case TB_NO_HOME:
			ereport(ERROR,
					(errcode(ERRCODE_OAUTH_UNAVAILABLE),
					 errmsg("no database is recorded as refreshing these grants"),
					 errdetail("oauth.refresh_home is empty."),
					 errhint("If this database is the one that refreshes, run SELECT oauth.adopt_copy();")));
			break;
		case TB_SUBSCRIBER:
			ereport(ERROR,
					(errcode(ERRCODE_OAUTH_UNAVAILABLE),
					 errmsg("this database is a logical replication subscriber of oauth.connections"),
					 errdetail("The publisher refreshes these grants; still-valid tokens are served."),
					 errhint("To refresh here instead, drop the subscription, then run SELECT oauth.adopt_copy();")));
			break;
	}
}

/*
 * oauth._refresh_home_changed(): internal, called by the statement trigger
 * of oauth.refresh_home; every process forgets its cached row at its next
 * transaction after ours commits.
 */
Datum
oauth_refresh_home_changed(PG_FUNCTION_ARGS)
{
	Oid			nsp = get_namespace_oid("oauth", false);
	Oid			relid = get_relname_relid("refresh_home", nsp);

	if (OidIsValid(relid))
		CacheInvalidateRelcacheByRelid(relid);
	PG_RETURN_VOID();
}

/*
 * oauth.provider_traffic_status(): 'on', or why nothing is sent to
 * providers from this database.
 */
Datum
oauth_provider_traffic_status(PG_FUNCTION_ARGS)
{
	const char *reason = NULL;

	if (oauth_traffic_allowed(&reason))
		PG_RETURN_TEXT_P(cstring_to_text("on"));
	PG_RETURN_TEXT_P(cstring_to_text(reason));
}
