/*
 * provider.h — token requests and the classification of answers
 * (src/provider.c).
 */
#ifndef OAUTH_PROVIDER_H
#define OAUTH_PROVIDER_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "nodes/pg_list.h"
#include "http.h"
#include "shmem.h"
#include "urls.h"
#include "utils/jsonb.h"

/* A provider's configuration as the worker read it (secrets decrypted). */
typedef struct ProviderConf
{
	char	   *name;
	char	   *token_url;
	char	   *revoke_url;
	char	   *client_id;
	char	   *client_secret;	/* plaintext; wiped by provider_conf_wipe */
	char	   *auth_method;
	char	   *body_format;
	Jsonb	   *extra_params;
	Jsonb	   *extra_headers;
	List	   *reauth_errors;	/* of char * */
	char	   *scope_separator;
	bool		scope_on_refresh;
	List	   *allowed_hosts;	/* of char *: hosts templated URLs may name */
	/* state, as read with the configuration */
	int			max_concurrency;	/* 0: no limit of its own */
	bool		paused;			/* after invalid_client and the like */
	char	   *pause_reason;
	bytea	   *client_secret_ct;	/* ciphertext, opened by provider_conf_open_secret */
	struct ClientAuth *client_auth; /* key, certificate: src/client_auth.c */
} ProviderConf;

/*
 * The one way a provider's configuration is read: a query puts
 * PROVIDER_CONF_COLUMNS (table alias p) in its select list, and
 * provider_conf_read() takes them from a result row by name.
 */
#define PROVIDER_CONF_COLUMNS \
	"p.name AS p_name, p.token_url AS p_token_url, p.revoke_url AS p_revoke_url, " \
	"p.client_id AS p_client_id, p.client_secret_ciphertext AS p_client_secret, " \
	"p.auth_method AS p_auth_method, p.body_format AS p_body_format, " \
	"p.extra_params AS p_extra_params, p.extra_headers AS p_extra_headers, " \
	"p.reauth_errors AS p_reauth_errors, p.scope_separator AS p_scope_separator, " \
	"p.scope_on_refresh AS p_scope_on_refresh, p.allowed_hosts AS p_allowed_hosts, " \
	"p.max_concurrency AS p_max_concurrency, p.paused_at IS NOT NULL AS p_paused, " \
	"p.pause_reason AS p_pause_reason"

/* A form field for the token request. */
typedef struct FormField
{
	const char *name;
	const char *value;
} FormField;

/* A prepared request: everything http_start needs. */
typedef struct TokenRequest
{
	char	   *url;
	char	  **headers;
	int			nheaders;
	StringInfoData body;
	const char *tls_cert;		/* tls_client_auth: the client certificate */
	char	   *tls_key;		/* and its key (plaintext; wiped) */
} TokenRequest;

/* A provider's answer, classified. */
typedef struct TokenAnswer
{
	RefreshOutcome klass;		/* RO_REFRESHED, RO_REAUTH, RO_TRANSIENT, RO_PROVIDER */
	char	   *access_token;
	char	   *refresh_token;
	bool		has_expires_in;
	int64		expires_in;
	bool		has_rt_expires_in;
	int64		rt_expires_in;
	char	   *scope;
	char	   *metadata_json;	/* non-secret fields to merge into metadata */
	char	   *error_code;		/* the provider's error code, if any */
	char	   *message;		/* short, secret-free description */
	int			retry_after_s;
	long		http_status;
	bool		has_error;		/* the body carried an error code */
	bool		no_answer;		/* sent, but no answer came: the refresh
								 * token may have been spent (HTTP_NO_ANSWER) */
	bool		tenant_failure; /* a provider-class answer from a URL filled
								 * by this connection's metadata (durable.c) */
} TokenAnswer;

extern void build_token_request(ProviderConf *conf, Jsonb *metadata,
								FormField *fields, int nfields,
								bool with_extra_params, TokenRequest *req);
extern void wipe_token_request(TokenRequest *req);
extern void classify_answer(ProviderConf *conf, HttpCall *call, TokenAnswer *ans);
extern void provider_conf_wipe(ProviderConf *conf);
extern void provider_conf_read(HeapTuple t, TupleDesc d, ProviderConf *conf);
extern void provider_conf_open_secret(ProviderConf *conf);
extern Datum spi_column(HeapTuple t, TupleDesc d, const char *name, bool *isnull);
extern char *spi_column_text(HeapTuple t, TupleDesc d, const char *name);
extern List *jsonb_object_fields(Jsonb *obj);
extern List *text_array_to_list(Datum arr);

#endif
