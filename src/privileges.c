/*-------------------------------------------------------------------------
 *
 * privileges.c
 *	  Running internal SQL as the extension's owner, as SECURITY DEFINER does.
 *
 * The C functions granted to application and admin roles (refresh_due)
 * run internal SQL through SPI.  That SQL reads tables no such role may
 * read, so it runs as the owner of the called function (the role that ran
 * CREATE EXTENSION) with search_path = pg_catalog, pg_temp, exactly as a
 * SECURITY DEFINER function with a fixed search_path would: the caller's
 * privileges and search_path never matter.  An error unwinds both (the
 * user id through transaction or subtransaction abort, the GUC through its
 * nest level).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "privileges.h"

/* Become the owner of the function being called; fixed search_path. */
void
oauth_become_owner(FunctionCallInfo fcinfo, OwnerSwitch *sw)
{
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);

	GetUserIdAndSecContext(&sw->saved_user, &sw->saved_sec);
	SetUserIdAndSecContext(owner, sw->saved_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	sw->saved_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

/* Back to the caller's identity and search_path. */
void
oauth_restore_user(OwnerSwitch *sw)
{
	AtEOXact_GUC(false, sw->saved_nestlevel);
	SetUserIdAndSecContext(sw->saved_user, sw->saved_sec);
}
