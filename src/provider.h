/*
 * provider.h — token requests and the classification of answers
 * (src/provider.c).
 */
#ifndef OAUTH_PROVIDER_H
#define OAUTH_PROVIDER_H

#include "postgres.h"

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
} ProviderConf;

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
} TokenAnswer;

extern void build_token_request(ProviderConf *conf, Jsonb *metadata,
								FormField *fields, int nfields,
								bool with_extra_params, TokenRequest *req);
extern void wipe_token_request(TokenRequest *req);
extern void classify_answer(ProviderConf *conf, HttpCall *call, TokenAnswer *ans);
extern void provider_conf_wipe(ProviderConf *conf);
extern List *jsonb_object_fields(Jsonb *obj);
extern List *text_array_to_list(Datum arr);

#endif
