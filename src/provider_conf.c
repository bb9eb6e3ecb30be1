/*-------------------------------------------------------------------------
 *
 * provider_conf.c
 *	  The one way a provider's configuration is read.
 *
 * Whoever needs a provider's configuration (the worker's prepare step, the
 * session's code exchange, client-credentials grant and revocation) selects
 * PROVIDER_CONF_COLUMNS (provider.h) from oauth.providers p and hands the
 * result row to provider_conf_read(), which takes every column by name.
 * The client secret stays sealed until provider_conf_open_secret(); the
 * caller wipes it with provider_conf_wipe().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "client_auth.h"
#include "crypto.h"
#include "provider.h"

/* A column of an SPI result row, by name; a missing column is a bug. */
Datum
spi_column(HeapTuple t, TupleDesc d, const char *name, bool *isnull)
{
	int			col = SPI_fnumber(d, name);

	if (col <= 0)
		elog(ERROR, "oauth_tokens: result has no column \"%s\"", name);
	return SPI_getbinval(t, d, col, isnull);
}

/* A text column of an SPI result row, by name, as a C string (NULL if null). */
char *
spi_column_text(HeapTuple t, TupleDesc d, const char *name)
{
	int			col = SPI_fnumber(d, name);

	if (col <= 0)
		elog(ERROR, "oauth_tokens: result has no column \"%s\"", name);
	return SPI_getvalue(t, d, col);
}

/*
 * Fill conf from a result row that selected PROVIDER_CONF_COLUMNS.  Copies
 * everything into the current memory context; the client secret stays
 * sealed until provider_conf_open_secret().
 */
void
provider_conf_read(HeapTuple t, TupleDesc d, ProviderConf *conf)
{
	bool		isnull;
	Datum		v;

	memset(conf, 0, sizeof(*conf));
	conf->name = spi_column_text(t, d, "p_name");
	conf->token_url = spi_column_text(t, d, "p_token_url");
	conf->revoke_url = spi_column_text(t, d, "p_revoke_url");
	conf->client_id = spi_column_text(t, d, "p_client_id");
	v = spi_column(t, d, "p_client_secret", &isnull);
	if (!isnull)
		conf->client_secret_ct = DatumGetByteaPCopy(v);
	conf->auth_method = spi_column_text(t, d, "p_auth_method");
	conf->body_format = spi_column_text(t, d, "p_body_format");
	conf->extra_params = DatumGetJsonbPCopy(spi_column(t, d, "p_extra_params", &isnull));
	conf->extra_headers = DatumGetJsonbPCopy(spi_column(t, d, "p_extra_headers", &isnull));
	v = spi_column(t, d, "p_reauth_errors", &isnull);
	if (!isnull)
		conf->reauth_errors = text_array_to_list(v);
	conf->scope_separator = spi_column_text(t, d, "p_scope_separator");
	conf->scope_on_refresh = DatumGetBool(spi_column(t, d, "p_scope_on_refresh", &isnull));
	v = spi_column(t, d, "p_allowed_hosts", &isnull);
	conf->allowed_hosts = isnull ? NIL : text_array_to_list(v);
	v = spi_column(t, d, "p_max_concurrency", &isnull);
	conf->max_concurrency = isnull ? 0 : DatumGetInt32(v);
	conf->paused = DatumGetBool(spi_column(t, d, "p_paused", &isnull));
	conf->pause_reason = spi_column_text(t, d, "p_pause_reason");
}

/*
 * Decrypt the client secret read by provider_conf_read, and read the key or
 * certificate its auth_method needs (all wiped by provider_conf_wipe).  SPI
 * must be connected.
 */
void
provider_conf_open_secret(ProviderConf *conf)
{
	if (conf->client_secret_ct && conf->client_secret == NULL)
		conf->client_secret = oauth_open(conf->client_secret_ct,
										 oauth_provider_context(conf->name));
	client_auth_open(conf);		/* keys and certificates, if its method has them */
}
