/*-------------------------------------------------------------------------
 *
 * identity.c
 *	  Which server may talk to providers: copies, standbys, subscribers and
 *	  the oauth.provider_traffic switch.
 *
 * Every refresh rotates the refresh token out from under anyone else who
 * holds it, so exactly one database may use a set of grants.  A request may
 * go to a provider only when all of these hold:
 *
 *	- oauth.provider_traffic is on (the operator's switch, sighup);
 *	- the server is not in recovery (a hot standby: call on the primary);
 *	- this database is home (below; otherwise it is a restored copy or a
 *	  clone: oauth.adopt_copy() makes it home);
 *	- no logical replication subscription feeds oauth.connections here (the
 *	  publisher refreshes).
 *
 * Home.  oauth.refresh_home records the cluster (system identifier), the
 * database (oid) and a random home mark (nonce, a uuid) of the database
 * that refreshes; CREATE EXTENSION and oauth.adopt_copy() write it.  Every
 * oauth.providers and oauth.connections row carries a mark too (home_nonce,
 * by default the home row's when the row is written, so a dump carries the
 * source's marks to wherever it is restored).  This database is home only
 * when
 *
 *	- oauth.refresh_home holds exactly one row,
 *	- that row names this cluster's system identifier and this database's
 *	  oid, and
 *	- no provider and no connection carries another mark than that row's.
 *
 * Anything else (no row, two rows, a row naming another place, a row
 * marked by another home) is a copy.  Nothing here depends on a trigger
 * having fired or on the order rows arrived in, which is what makes every
 * restore path safe:
 *
 *	- pg_restore (any format, -j or not) or pg_dump | psql of a whole
 *	  database: CREATE EXTENSION writes a row naming here with a fresh mark;
 *	  the source's row then replaces it (trigger) or joins it (no
 *	  triggers), and the restored providers and connections carry the
 *	  source's mark: never home, at any moment of the restore;
 *	- a data-only restore into a database that has the extension, with or
 *	  without --disable-triggers, in any table order: the same;
 *	- a restore that leaves oauth.refresh_home's rows out (pg_restore -L,
 *	  --exclude-table-data): CREATE EXTENSION's row names here, but the
 *	  restored rows carry the source's mark, which no row of this database's
 *	  can equal (a gen_random_uuid() made at CREATE EXTENSION here);
 *	- CREATE DATABASE ... TEMPLATE, a file-level clone, pg_upgrade: the row
 *	  names another database oid or system identifier.
 *
 * A database restored over itself (the same cluster and oid) with its
 * triggers running is home again, as it should be.  What is not caught: a
 * 1.0 dump (1.0 had neither the row nor the marks) restored into 1.1, and
 * an owner who writes marks by hand.  oauth.adopt_copy() writes a new row
 * with a new mark and re-marks every provider and connection.
 *
 * The home is read afresh at every check, not cached: a restore may write
 * the tables without firing a trigger or sending an invalidation.  The
 * check is cheap: oauth.refresh_home's one page and two index probes (a
 * mark below and above the home's) on each of providers_home_nonce_idx and
 * connections_home_nonce_idx.  A connection restored between a check and
 * the worker's read of it is the one window left (a restore into a running
 * home database, with oauth.providers and oauth.refresh_home left out).
 *
 * oauth_traffic_allowed() is the one check; the worker calls it before it
 * sends anything (job prepare, sweeps) and the SQL-callable layer before it
 * posts a request or calls a provider itself, so a caller gets the reason
 * and its hint instead of a generic failure.  Still-valid tokens are served
 * everywhere: valid_token's fast path never comes here.
 *
 * The subscription state is cached per process and forgotten on a
 * syscache invalidation of pg_subscription_rel or a relcache invalidation.
 * A database without oauth.refresh_home (the 1.0 schema, before ALTER
 * EXTENSION UPDATE) keeps the behaviour of 1.0: traffic allowed.
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
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "compat.h"
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
	TB_TWO_HOMES,				/* oauth.refresh_home holds several rows */
	TB_FOREIGN_ROWS,			/* a provider or connection has another mark */
	TB_NO_HOME,					/* oauth.refresh_home is empty */
	TB_SUBSCRIBER				/* a subscription feeds oauth.connections */
} TrafficBlock;

/* What the last check read of oauth.refresh_home, for the messages. */
static int	home_rows = 0;
static int64 home_sysid = 0;
static char home_dbname[NAMEDATALEN];

static bool callbacks_registered = false;
static bool subscribed_known = false;
static bool subscribed = false;

/*
 * The answer of the last full check, kept for the rest of its top-level
 * transaction: the worker prepares a batch of jobs in one transaction and
 * asks before each, and the check reads three tables.  A relcache
 * invalidation (adopt_copy's statement trigger on oauth.refresh_home, DDL)
 * drops it, so a copy adopted in this transaction is seen at once.
 */
static LocalTransactionId memo_lxid = InvalidLocalTransactionId;
static TrafficBlock memo_block;

static void
forget_subscriptions_rel(Datum arg, Oid relid)
{
	/* oauth.connections may have been created or dropped: look again */
	subscribed_known = false;
	memo_lxid = InvalidLocalTransactionId;
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
	CacheRegisterRelcacheCallback(forget_subscriptions_rel, (Datum) 0);
	CacheRegisterSyscacheCallback(SUBSCRIPTIONRELMAP, forget_subscriptions, (Datum) 0);
	callbacks_registered = true;
}

/*
 * Does table relname of schema nsp hold a row whose home_nonce is not mark?
 * Two probes of its index idxname (below mark, above mark), so the cost
 * does not grow with the table.  False when the table, its column or its
 * index is missing (a 1.0 schema).
 */
static bool
has_foreign_mark(Oid nsp, const char *relname, const char *idxname,
				 pg_uuid_t *mark, Snapshot snapshot)
{
	Oid			relid = get_relname_relid(relname, nsp);
	Oid			idxid = get_relname_relid(idxname, nsp);
	AttrNumber	attno;
	Relation	rel;
	bool		found = false;
	static const struct
	{
		StrategyNumber strategy;
		RegProcedure proc;
	}			probes[] = {
		{BTLessStrategyNumber, F_UUID_LT},
		{BTGreaterStrategyNumber, F_UUID_GT},
	};

	if (!OidIsValid(relid) || !OidIsValid(idxid))
		return false;
	attno = get_attnum(relid, "home_nonce");
	if (attno == InvalidAttrNumber)
		return false;
	rel = table_open(relid, AccessShareLock);
	for (int i = 0; i < lengthof(probes) && !found; i++)
	{
		ScanKeyData key;
		SysScanDesc scan;

		ScanKeyInit(&key, attno, probes[i].strategy, probes[i].proc,
					UUIDPGetDatum(mark));
		scan = systable_beginscan(rel, idxid, true, snapshot, 1, &key);
		found = HeapTupleIsValid(systable_getnext(scan));
		systable_endscan(scan);
	}
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * Is this database home (file header)?  Reads oauth.refresh_home and probes
 * the marks with the latest snapshot (traffic_block keeps the answer for
 * the rest of the transaction).  Needs a transaction.
 * TB_NONE also when the table is missing (the 1.0 schema).
 */
static TrafficBlock
home_block(void)
{
	Oid			nsp = get_namespace_oid("oauth", true);
	Oid			relid;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	Snapshot	snapshot;
	TupleDesc	desc;
	AttrNumber	a_sysid;
	AttrNumber	a_dboid;
	AttrNumber	a_dbname;
	AttrNumber	a_nonce;
	bool		names_here = false;
	bool		have_mark = false;
	pg_uuid_t	mark;
	TrafficBlock b;

	relid = OidIsValid(nsp) ? get_relname_relid("refresh_home", nsp) : InvalidOid;
	if (!OidIsValid(relid))
		return TB_NONE;
	a_sysid = get_attnum(relid, "system_identifier");
	a_dboid = get_attnum(relid, "database_oid");
	a_dbname = get_attnum(relid, "database_name");
	a_nonce = get_attnum(relid, "nonce");

	home_rows = 0;
	home_sysid = 0;
	home_dbname[0] = '\0';
	rel = table_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan(rel, InvalidOid, false, snapshot, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		v;
		int64		sysid;
		Oid			dboid;
		bool		here;

		home_rows++;
		v = heap_getattr(tup, a_sysid, desc, &isnull);
		sysid = isnull ? 0 : DatumGetInt64(v);
		v = heap_getattr(tup, a_dboid, desc, &isnull);
		dboid = isnull ? InvalidOid : DatumGetObjectId(v);
		here = sysid == (int64) GetSystemIdentifier() && dboid == MyDatabaseId;
		/* the messages name the other place, when a row names one */
		if (!here || home_rows == 1)
		{
			home_sysid = sysid;
			v = heap_getattr(tup, a_dbname, desc, &isnull);
			strlcpy(home_dbname, isnull ? "" : TextDatumGetCString(v), sizeof(home_dbname));
		}
		names_here = (home_rows == 1) && here;
		if (a_nonce != InvalidAttrNumber)
		{
			v = heap_getattr(tup, a_nonce, desc, &isnull);
			have_mark = !isnull;
			if (have_mark)
				memcpy(&mark, DatumGetUUIDP(v), sizeof(mark));
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	if (home_rows == 0)
		b = TB_NO_HOME;
	else if (home_rows > 1)
		b = TB_TWO_HOMES;
	else if (!names_here)
		b = TB_COPY;
	else if (!have_mark)
		b = TB_NONE;			/* no marks in this schema */
	else if (has_foreign_mark(nsp, "providers", "providers_home_nonce_idx", &mark, snapshot) ||
			 has_foreign_mark(nsp, "connections", "connections_home_nonce_idx", &mark, snapshot))
		b = TB_FOREIGN_ROWS;
	else
		b = TB_NONE;
	UnregisterSnapshot(snapshot);
	return b;
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
	if (memo_lxid != InvalidLocalTransactionId && memo_lxid == OAUTH_MY_LXID)
		return memo_block;
	/* a subscriber holds the publisher's rows: say why it is one first */
	memo_block = connections_subscribed() ? TB_SUBSCRIBER : home_block();
	memo_lxid = OAUTH_MY_LXID;
	return memo_block;
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
		case TB_TWO_HOMES:
			return psprintf("this database is a copy: oauth.refresh_home holds %d rows (a restore without triggers?)",
							home_rows);
		case TB_FOREIGN_ROWS:
			return "this database is a copy: it holds providers or connections that came from another database";
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
		case TB_TWO_HOMES:
			ereport(ERROR,
					(errcode(ERRCODE_OAUTH_UNAVAILABLE),
					 errmsg("this database is a copy: oauth.refresh_home holds %d rows", home_rows),
					 errdetail("A restore wrote the row of the database it came from (\"%s\" of system %lld) next to this one's; nothing is sent to providers from a copy, since a refresh here would rotate refresh tokens out from under the original; still-valid tokens are served.",
							   home_dbname, (long long) home_sysid),
					 errhint("If this copy is now the one that refreshes and the original no longer does, run SELECT oauth.adopt_copy();")));
			break;
		case TB_FOREIGN_ROWS:
			ereport(ERROR,
					(errcode(ERRCODE_OAUTH_UNAVAILABLE),
					 errmsg("this database is a copy: it holds providers or connections that came from another database"),
					 errdetail("Their home mark is not this database's (oauth.refresh_home); nothing is sent to providers from a copy, since a refresh here would rotate refresh tokens out from under the original; still-valid tokens are served."),
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
 * oauth._refresh_home_changed(): created by the 1.0--1.1 upgrade script's
 * operations block and dropped again at its end (homes are no longer
 * cached); CREATE FUNCTION needs the symbol.  Sends a relcache
 * invalidation of oauth.refresh_home, which nothing depends on.
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
