/*-------------------------------------------------------------------------
 *
 * lifecycle.c
 *	  Calls to a provider made in the caller's session: the authorization-
 *	  code exchange, the client-credentials grant and RFC 7009 revocation.
 *
 * These are one-off administrative calls, so they run in the session that
 * asks (through the same http.c rules, auth methods and answer classes as
 * the worker's refreshes) and their results are written by the SQL
 * functions in the caller's transaction, through oauth._store_answers: the
 * one writer of what a grant stores, which the worker's refreshes use too
 * (src/finish.c).  Refreshes never come here.
 *
 * Authorization codes are single use: oauth._claim_code() records the
 * code's SHA-256 in shared memory before the code is sent, so a call retried
 * after a timeout or a rollback is refused instead of redeeming the code a
 * second time; oauth.code_redemptions keeps the committed ones across
 * restarts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "storage/lwlock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "compat.h"
#include "crypto.h"
#include "errors.h"
#include "http.h"
#include "identity.h"
#include "provider.h"
#include "shmem.h"
#include "stats.h"

PG_FUNCTION_INFO_V1(oauth_provider_call);
PG_FUNCTION_INFO_V1(oauth_claim_code);
PG_FUNCTION_INFO_V1(oauth_urlencode);

/*
 * Read a provider's configuration into cxt (it must outlive SPI_finish);
 * the caller runs as the extension owner.
 */
static void
load_provider_conf(const char *name, ProviderConf *conf, MemoryContext cxt)
{
	Datum		arg = CStringGetTextDatum(name);
	Oid			argt = TEXTOID;

	memset(conf, 0, sizeof(*conf));
	if (SPI_execute_with_args(
			"SELECT " PROVIDER_CONF_COLUMNS " FROM oauth.providers p WHERE p.name = $1",
			1, &argt, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read provider");
	/* SPI_execute leaves us in SPI's context, which SPI_finish frees */
	MemoryContextSwitchTo(cxt);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OAUTH_PROVIDER_CONFIG),
				 errmsg("unknown provider \"%s\"", name),
				 errhint("Register it first with oauth.register_provider().")));
	provider_conf_read(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, conf);
	provider_conf_open_secret(conf);
	if (conf->paused)
		ereport(ERROR,
				(errcode(ERRCODE_OAUTH_PROVIDER_CONFIG),
				 errmsg("provider \"%s\" is paused after a client authentication failure", name),
				 errdetail("%s", conf->pause_reason ? conf->pause_reason : ""),
				 errhint("Fix its client credentials with oauth.register_provider(); that resumes it.")));
}

static const char *
klass_name(RefreshOutcome k)
{
	switch (k)
	{
		case RO_REFRESHED:
			return "success";
		case RO_REAUTH:
			return "reauth";
		case RO_PROVIDER:
			return "provider";
		default:
			return "transient";
	}
}

/*
 * oauth._provider_call(provider, kind, fields jsonb, metadata jsonb)
 *	 kind 'token': POST fields (plus the client's authentication) to the
 *	 token endpoint; 'revoke': POST them to the revocation endpoint.
 * Returns (klass, access_token, refresh_token, expires_in, rt_expires_in,
 * scope, metadata, error, http_status).  Internal; owner only.
 */
Datum
oauth_provider_call(PG_FUNCTION_ARGS)
{
	char	   *provider;
	char	   *kind;
	Jsonb	   *fields_j;
	Jsonb	   *metadata;
	ProviderConf conf;
	FormField  *fields;
	int			nfields = 0;
	TokenRequest req;
	HttpCall   *call;
	TokenAnswer ans;
	TupleDesc	desc;
	Datum		values[9];
	bool		nulls[9] = {0};
	bool		revoke;
	TimestampTz started;
	MemoryContext caller = CurrentMemoryContext;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("provider, kind and fields must not be NULL")));
	provider = text_to_cstring(PG_GETARG_TEXT_PP(0));
	kind = text_to_cstring(PG_GETARG_TEXT_PP(1));
	fields_j = PG_GETARG_JSONB_P(2);
	metadata = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	revoke = strcmp(kind, "revoke") == 0;
	oauth_require_traffic();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	SPI_connect();
	load_provider_conf(provider, &conf, caller);
	SPI_finish();
	if (revoke)
	{
		if (conf.revoke_url == NULL)
			elog(ERROR, "provider has no revocation endpoint");
		conf.token_url = conf.revoke_url;
	}

	/* fields: every scalar member of the object, in key order */
	{
		List	   *l = jsonb_object_fields(fields_j);
		ListCell   *lc;

		fields = palloc(sizeof(FormField) * (list_length(l) + 1));
		foreach(lc, l)
			fields[nfields++] = *(FormField *) lfirst(lc);
	}

	build_token_request(&conf, metadata, fields, nfields, false, &req);
	for (int i = 0; i < nfields; i++)
		explicit_bzero((char *) fields[i].value, strlen(fields[i].value));
	started = GetCurrentTimestamp();
	call = http_call_sync("POST", req.url, req.headers, req.nheaders, req.body.data, req.body.len);
	wipe_token_request(&req);

	if (revoke)
	{
		/* RFC 7009: 200 means revoked (or already invalid) */
		TokenAnswer body;

		memset(&ans, 0, sizeof(ans));
		ans.http_status = call->status;
		classify_answer(&conf, call, &body);
		/* 2xx, unless the body says otherwise (Slack answers 200 {"ok":false}) */
		if (call->result == CURLE_OK && call->status >= 200 && call->status < 300 &&
			!body.has_error)
		{
			ans.klass = RO_REFRESHED;
			ans.message = pstrdup("revoked");
		}
		else
		{
			ans.klass = RO_TRANSIENT;
			ans.message = body.message;
		}
	}
	else
		classify_answer(&conf, call, &ans);
	oauth_stats_call(provider, ans.klass, started, GetCurrentTimestamp());
	provider_conf_wipe(&conf);	/* after classify_answer, which redacts it */
	http_free(call);

	values[0] = CStringGetTextDatum(klass_name(ans.klass));
	nulls[1] = ans.access_token == NULL;
	if (ans.access_token)
		values[1] = CStringGetTextDatum(ans.access_token);
	nulls[2] = ans.refresh_token == NULL;
	if (ans.refresh_token)
		values[2] = CStringGetTextDatum(ans.refresh_token);
	nulls[3] = !ans.has_expires_in;
	values[3] = Int64GetDatum(ans.expires_in);
	nulls[4] = !ans.has_rt_expires_in;
	values[4] = Int64GetDatum(ans.rt_expires_in);
	nulls[5] = ans.scope == NULL;
	if (ans.scope)
		values[5] = CStringGetTextDatum(ans.scope);
	values[6] = DirectFunctionCall1(jsonb_in, CStringGetDatum(ans.metadata_json ? ans.metadata_json : "{}"));
	nulls[7] = ans.message == NULL;
	if (ans.message)
		values[7] = CStringGetTextDatum(ans.error_code && ans.klass == RO_REAUTH ? ans.message : ans.message);
	values[8] = Int32GetDatum((int32) ans.http_status);
	if (ans.access_token)
		explicit_bzero(ans.access_token, strlen(ans.access_token));
	if (ans.refresh_token)
		explicit_bzero(ans.refresh_token, strlen(ans.refresh_token));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * oauth._claim_code(sha256 bytea) returns boolean: true the first time this
 * server sees the code, false after.  Lives in a small ring in shared
 * memory; without preloading, always true (the table still guards).
 */
Datum
oauth_claim_code(PG_FUNCTION_ARGS)
{
	bytea	   *h = PG_GETARG_BYTEA_PP(0);
	bool		fresh = true;

	if (VARSIZE_ANY_EXHDR(h) != 32)
		elog(ERROR, "code hash must be 32 bytes");
	oauth_require_traffic();	/* a code is never claimed where it cannot be sent */
	if (!oauth_shmem_available())
		PG_RETURN_BOOL(true);
	fresh = oauth_claim_code_hash((const uint8 *) VARDATA_ANY(h));
	PG_RETURN_BOOL(fresh);
}

/* oauth._urlencode(text): RFC 3986 percent-encoding of every reserved byte. */
Datum
oauth_urlencode(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	char	   *enc = curl_easy_escape(NULL, VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in));
	text	   *out;

	if (enc == NULL)
		elog(ERROR, "could not URL-encode");
	out = cstring_to_text(enc);
	curl_free(enc);
	PG_RETURN_TEXT_P(out);
}
