/*-------------------------------------------------------------------------
 *
 * tenant.c
 *	  The tenant boundary: the workspace a transaction is bound to
 *	  (oauth.bind_workspace) and oauth.require_workspace.
 *
 * An application binds each transaction to one workspace before it reads a
 * token; from then on valid_token, token_rejected, refresh, the SQL
 * functions that look a connection up, connection_event and the
 * connection_status view see that workspace only.  Whatever SQL runs later
 * in the transaction (injected or not) cannot widen that:
 *
 *	- the binding lives in this backend's memory, never in a setting, so
 *	  SET, set_config(), RESET ALL and DISCARD do not reach it;
 *	- it is tagged with the local id of the top-level transaction it was
 *	  made in (subtransactions share that id), so ROLLBACK TO SAVEPOINT
 *	  leaves it in place, and it is honoured in no other transaction; a
 *	  transaction callback also clears it at commit, abort and prepare;
 *	- a second bind to another workspace in the same transaction is refused
 *	  (42501); binding the same workspace again changes nothing.
 *
 * oauth.require_workspace (superuser-only, set per role by an admin) makes
 * the binding mandatory: unbound, the functions refuse (42501) and the view
 * shows nothing.  Without it and without a binding, everything is visible,
 * as for an admin.
 *
 * Memory: the binding is a fixed buffer (OAUTH_WORKSPACE_MAX + 1 bytes);
 * reading it costs valid_token a comparison, no catalog access.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"

#include "compat.h"
#include "tenant.h"

PG_FUNCTION_INFO_V1(oauth_bind_workspace);
PG_FUNCTION_INFO_V1(oauth_bound_workspace_sql);
PG_FUNCTION_INFO_V1(oauth_workspace_admitted_sql);

bool		oauth_require_workspace = false;

static char bound_workspace[OAUTH_WORKSPACE_MAX + 1];
static size_t bound_len = 0;
static LocalTransactionId bound_lxid = InvalidLocalTransactionId;
static bool callback_registered = false;

/* Forget the binding when its top-level transaction ends, however it ends. */
static void
tenant_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			bound_lxid = InvalidLocalTransactionId;
			bound_len = 0;
			bound_workspace[0] = '\0';
			break;
		default:
			break;
	}
}

/* Is the binding made in the transaction running now? */
static inline bool
binding_current(void)
{
	return bound_lxid != InvalidLocalTransactionId && bound_lxid == OAUTH_MY_LXID;
}

static void
report_unbound(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("this role must bind a workspace before it reads or reports tokens"),
			 errdetail("oauth.require_workspace is on for this role."),
			 errhint("Call oauth.bind_workspace(workspace_id) first, in the same transaction.")));
}

/*
 * May the current transaction see workspace (len bytes)?  Bound: only the
 * bound workspace.  Unbound: everything, unless oauth.require_workspace is
 * on, which raises 42501.
 */
bool
oauth_workspace_admitted(const char *workspace, size_t len)
{
	if (binding_current())
		return len == bound_len && memcmp(workspace, bound_workspace, len) == 0;
	if (oauth_require_workspace)
		report_unbound();
	return true;
}

/*
 * oauth.bind_workspace(workspace_id): bind the current transaction to one
 * workspace, for the rest of the transaction.
 */
Datum
oauth_bind_workspace(PG_FUNCTION_ARGS)
{
	text	   *ws;
	size_t		len;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workspace_id must not be NULL")));
	ws = PG_GETARG_TEXT_PP(0);
	len = VARSIZE_ANY_EXHDR(ws);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workspace_id must not be empty")));
	if (len > OAUTH_WORKSPACE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("workspace_id is too long"),
				 errdetail("It has %zu bytes; at most %d are accepted.", len, OAUTH_WORKSPACE_MAX)));

	if (binding_current())
	{
		if (len == bound_len && memcmp(VARDATA_ANY(ws), bound_workspace, len) == 0)
			PG_RETURN_VOID();
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("this transaction is already bound to another workspace"),
				 errdetail("A transaction is bound to one workspace, once; the binding ends with the transaction."),
				 errhint("Start a new transaction to work on another workspace.")));
	}
	if (OAUTH_MY_LXID == InvalidLocalTransactionId)
		elog(ERROR, "oauth.bind_workspace called outside a transaction");
	if (!callback_registered)
	{
		RegisterXactCallback(tenant_xact_callback, NULL);
		callback_registered = true;
	}
	memcpy(bound_workspace, VARDATA_ANY(ws), len);
	bound_workspace[len] = '\0';
	bound_len = len;
	bound_lxid = OAUTH_MY_LXID;
	PG_RETURN_VOID();
}

/*
 * oauth._bound_workspace(): for the connection_status view.  The bound
 * workspace; NULL when unbound and not required (see everything); '' when
 * unbound and required (a workspace_id is never empty: see nothing).
 */
Datum
oauth_bound_workspace_sql(PG_FUNCTION_ARGS)
{
	if (binding_current())
		PG_RETURN_TEXT_P(cstring_to_text_with_len(bound_workspace, bound_len));
	if (oauth_require_workspace)
		PG_RETURN_TEXT_P(cstring_to_text(""));
	PG_RETURN_NULL();
}

/*
 * oauth._workspace_admitted(workspace_id): for the SQL functions, as
 * oauth_workspace_admitted; NULL is admitted only where everything is.
 */
Datum
oauth_workspace_admitted_sql(PG_FUNCTION_ARGS)
{
	text	   *ws;

	if (PG_ARGISNULL(0))
	{
		if (binding_current())
			PG_RETURN_BOOL(false);
		if (oauth_require_workspace)
			report_unbound();
		PG_RETURN_BOOL(true);
	}
	ws = PG_GETARG_TEXT_PP(0);
	PG_RETURN_BOOL(oauth_workspace_admitted(VARDATA_ANY(ws), VARSIZE_ANY_EXHDR(ws)));
}
