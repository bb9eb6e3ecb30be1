/*-------------------------------------------------------------------------
 *
 * provider.c
 *	  Building token requests and classifying providers' answers.
 *
 * Requests follow the provider's pinned configuration: client credentials
 * in the body (client_secret_post) or an HTTP Basic header
 * (client_secret_basic), never probed; form or JSON body; extra fields and
 * headers; Accept: application/json always.  URLs may hold {name}
 * placeholders, filled from the connection's metadata by src/urls.c.
 *
 * Answers are read by src/answer.c (PostgreSQL's JSON parser in its
 * non-throwing form, or form-encoded as GitHub answers by default, under
 * the hostile-answer rules stated there), then classified
 * into the failure classes of the contract:
 *	  success    200 with access_token and no error
 *	  reauth     invalid_grant or one of the provider's reauth_errors, in any
 *	             status, including an error in a 200 body (Slack, GitHub)
 *	  provider   invalid_client, unauthorized_client (a 401 without a code)
 *	  transient  everything else: 5xx, 429, timeouts, TLS and connection
 *	             errors, bodies that are not JSON or lack access_token
 * Messages keep only the provider's error and error_description; no token
 * ever reaches a message, and secrets the call sent are redacted from
 * whatever the provider echoes.  A "status" field (HubSpot) is an error code
 * only in a non-2xx answer or when listed in reauth_errors.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/base64.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "answer.h"
#include "compat.h"
#include "oauth_tokens.h"
#include "provider.h"
#include "urls.h"


static bool
in_list(List *l, const char *s)
{
	ListCell   *lc;

	foreach(lc, l)
		if (strcmp((char *) lfirst(lc), s) == 0)
			return true;
	return false;
}

/* Retry-After: delay-seconds or an HTTP-date (RFC 9110 10.2.3); 0 if absent. */
static int
parse_retry_after(const char *v)
{
	time_t		t;

	while (*v == ' ' || *v == '\t')
		v++;
	if (*v == '\0')
		return 0;
	if (*v >= '0' && *v <= '9')
		return Min(atoi(v), 86400);
	t = curl_getdate(v, NULL);
	if (t <= 0)
		return 0;
	t -= time(NULL);
	return t > 0 ? (int) Min(t, 86400) : 0;
}

/* Non-secret fields a provider returns that are worth keeping. */
static const char *const kept_fields[] = {
	"instance_url", "realmId", "realm_id", "api_domain", "team.id", "team.name",
	"bot_user_id", "bot_id", "app_id", "workspace_id", "workspace_name", "hub_id",
	"cloud_id", "id", "issued_at", NULL
};


static void classify_answer_inner(ProviderConf *conf, HttpCall *call, TokenAnswer *ans,
								  Redactor *r);
static Redactor *sent_secrets(ProviderConf *conf, HttpCall *call);


/*
 * Classify a finished call.  Everything in ans is palloc'd in the current
 * context; tokens are only in access_token and refresh_token, and no form
 * of any secret the call sent survives in any other field: each provider
 * string is redacted whole before it is clipped or put into a message
 * (provider_text), with the secrets listed once for the call.
 */
void
classify_answer(ProviderConf *conf, HttpCall *call, TokenAnswer *ans)
{
	Redactor   *r = sent_secrets(conf, call);

	classify_answer_inner(conf, call, ans, r);
	/* nothing is left to find here; a second look costs little */
	ans->message = redact(ans->message, r);
	ans->error_code = redact(ans->error_code, r);
	redactor_wipe(r);
}

static void
classify_answer_inner(ProviderConf *conf, HttpCall *call, TokenAnswer *ans, Redactor *r)
{
	List	   *fields = NIL;
	bool		parsed;
	Field	   *f_error;
	Field	   *f_desc;
	Field	   *f_at;
	char	   *code = NULL;
	const char *pre = "";

	memset(ans, 0, sizeof(*ans));
	ans->http_status = call->status;
	ans->klass = RO_TRANSIENT;

	if (call->refused_address[0] != '\0' &&
		(call->result == CURLE_COULDNT_CONNECT || call->result == CURLE_ABORTED_BY_CALLBACK))
	{
		/*
		 * A host that resolves to a non-public address (src/addresses.c):
		 * the provider's configuration, unless the host was filled from
		 * the connection's metadata (that connection's failure only).
		 */
		if (conf->token_url == NULL || !url_host_templated(conf->token_url))
			ans->klass = RO_PROVIDER;
		ans->message = psprintf("not sent: the provider's host resolves to %s, not a public address "
								"(oauth.allow_private_addresses is off)", call->refused_address);
		return;
	}
	if (call->result != CURLE_OK)
	{
		const char *what;

		switch (call->result)
		{
			case CURLE_OPERATION_TIMEDOUT:
				what = "timeout";
				break;
			case CURLE_PEER_FAILED_VERIFICATION:
			case CURLE_SSL_CONNECT_ERROR:
			case CURLE_SSL_CERTPROBLEM:
			case CURLE_SSL_CIPHER:
			case CURLE_SSL_CACERT_BADFILE:
			case CURLE_SSL_ISSUER_ERROR:
				what = "TLS error";
				break;
			case CURLE_COULDNT_CONNECT:
			case CURLE_COULDNT_RESOLVE_HOST:
				what = "connection error";
				break;
			case CURLE_UNSUPPORTED_PROTOCOL:
				what = "refused URL scheme (https required unless oauth.allow_http)";
				break;
			case CURLE_WRITE_ERROR:
			case CURLE_FILESIZE_EXCEEDED:
				what = (call->too_large || call->result == CURLE_FILESIZE_EXCEEDED) ?
					"response body over 1 MiB" : "write error";
				break;
			default:
				what = "HTTP error";
				break;
		}
		ans->no_answer = (call->fate == HTTP_NO_ANSWER);
		ans->message = psprintf("%s%s: %s", ans->no_answer ? "sent, no answer: " : "", what,
								provider_text(call->errbuf[0] ? call->errbuf :
											  curl_easy_strerror(call->result),
											  CURL_ERROR_SIZE, r));
		ans->message = clip(ans->message, 180);
		return;
	}

	/*
	 * parse: JSON, or form-encoded as GitHub sends by default; a body that
	 * is not valid UTF-8 (or holds a NUL) or nests too deep is neither
	 */
	if (!pg_verify_mbstr(PG_UTF8, call->response.data, call->response.len, true) ||
		json_too_deep(call->response.data, call->response.len))
		parsed = false;
	else
	{
		parsed = parse_json_fields(call->response.data, call->response.len, &fields);
		if (!parsed && (strstr(call->content_type, "x-www-form-urlencoded") != NULL ||
						(call->response.len > 0 && call->response.data[0] != '<' &&
						 call->response.data[0] != '{')))
			parsed = parse_form_fields(call->response.data, call->response.len, &fields);
		if (!parsed)
			fields = NIL;
	}

	/* the answer's own tokens never reach a message either */
	{
		static const char *const token_fields[] = {
			"access_token", "refresh_token", "id_token",
			"authed_user.access_token", "authed_user.refresh_token", NULL
		};

		for (int i = 0; token_fields[i]; i++)
		{
			Field	   *t = find_field(fields, token_fields[i]);

			if (t && t->is_string && (int) strlen(t->value) == t->len)
				redactor_add_secret(r, t->value);
		}
	}

	f_error = find_field(fields, "error");
	if (f_error && !f_error->is_string)
		f_error = NULL;
	if (f_error == NULL)
	{
		/*
		 * HubSpot's {"status": "BAD_REFRESH_TOKEN"}: a status field is an
		 * error code only in an error answer or when the provider lists it
		 * in reauth_errors; a 2xx body's "status": "SUCCESS" is not one.
		 */
		Field	   *f_status = find_field(fields, "status");

		if (f_status && f_status->is_string &&
			(call->status < 200 || call->status >= 300 ||
			 in_list(conf->reauth_errors, f_status->value)))
			f_error = f_status;
	}
	f_desc = find_field(fields, "error_description");
	if (f_desc == NULL)
		f_desc = find_field(fields, "message");
	if (f_error)
		code = f_error->value;
	ans->has_error = (code != NULL);

	if (call->status == 429)
	{
		ans->message = psprintf("HTTP 429 rate limited");
		ans->retry_after_s = parse_retry_after(call->retry_after);
		return;
	}

	if (code && strcmp(code, "error") != 0 &&
		(strcmp(code, "invalid_grant") == 0 || in_list(conf->reauth_errors, code)))
	{
		ans->klass = RO_REAUTH;
		ans->error_code = provider_text(code, 60, r);
		ans->message = f_desc ? psprintf("%s: %s", ans->error_code,
										 provider_text(f_desc->value, 120, r))
			: pstrdup(ans->error_code);
		return;
	}
	if (code && (strcmp(code, "invalid_client") == 0 || strcmp(code, "unauthorized_client") == 0))
	{
		ans->klass = RO_PROVIDER;
		ans->error_code = pstrdup(code);
		ans->message = f_desc ? psprintf("%s: %s", code, provider_text(f_desc->value, 120, r))
			: pstrdup(code);
		return;
	}
	if (call->status == 401 && code == NULL)
	{
		ans->klass = RO_PROVIDER;
		ans->error_code = pstrdup("invalid_client");
		ans->message = pstrdup("HTTP 401: client authentication failed");
		return;
	}
	if (call->status >= 500)
	{
		ans->message = psprintf("HTTP %ld from provider", call->status);
		ans->retry_after_s = parse_retry_after(call->retry_after);
		return;
	}
	if (!parsed)
	{
		ans->message = psprintf("HTTP %ld with a body that is neither JSON nor a form "
								"(or not valid UTF-8, or nested deeper than %d)",
								call->status, JSON_MAX_DEPTH);
		return;
	}
	f_at = find_field(fields, "access_token");
	if (f_at == NULL && (f_at = find_field(fields, "authed_user.access_token")) != NULL)
		pre = "authed_user.";	/* Slack: a user token only, nested */
	if (call->status < 200 || call->status >= 300 || f_at == NULL ||
		!f_at->is_string || f_at->value[0] == '\0')
	{
		if (code)
			ans->message = psprintf("HTTP %ld: %s%s%s", call->status, provider_text(code, 60, r),
									f_desc ? ": " : "",
									f_desc ? provider_text(f_desc->value, 100, r) : "");
		else
			ans->message = psprintf("HTTP %ld without access_token", call->status);
		return;
	}

	/* success, if the tokens are tokens */
	{
		Field	   *f;
		StringInfoData meta;
		bool		first = true;

		f = find_field(fields, psprintf("%srefresh_token", pre));
		if (f && (!f->is_string || f->value[0] == '\0'))
			f = NULL;
		if (!valid_token_text(f_at) || (f && !valid_token_text(f)))
		{
			ans->message = psprintf("HTTP %ld with a token that is not 1 to %d bytes of printable ASCII",
									call->status, OAUTH_MAX_TOKEN);
			goto wipe;
		}
		ans->klass = RO_REFRESHED;
		ans->access_token = pstrdup(f_at->value);
		if (f)
			ans->refresh_token = pstrdup(f->value);
		ans->has_expires_in = parse_int_field(find_field(fields, psprintf("%sexpires_in", pre)),
											  &ans->expires_in);
		ans->has_rt_expires_in =
			parse_int_field(find_field(fields, "refresh_token_expires_in"), &ans->rt_expires_in) ||
			parse_int_field(find_field(fields, "x_refresh_token_expires_in"), &ans->rt_expires_in);
		f = find_field(fields, psprintf("%sscope", pre));
		if (f && f->is_string && valid_kept_text(f, OAUTH_MAX_SCOPE))
			ans->scope = pstrdup(redact(f->value, r));

		initStringInfo(&meta);
		appendStringInfoChar(&meta, '{');
		for (int i = 0; kept_fields[i]; i++)
		{
			f = find_field(fields, kept_fields[i]);
			if (f == NULL || !valid_kept_text(f, OAUTH_MAX_KEPT))
				continue;
			if (!first)
				appendStringInfoChar(&meta, ',');
			first = false;
			escape_json(&meta, kept_fields[i]);
			appendStringInfoChar(&meta, ':');
			escape_json(&meta, redact(f->value, r));
		}
		appendStringInfoChar(&meta, '}');
		ans->metadata_json = meta.data;
		ans->message = pstrdup("refreshed");
	}
wipe:
	/* wipe every parsed value: tokens were copied where they are needed */
	{
		ListCell   *lc;

		foreach(lc, fields)
		{
			Field	   *f = lfirst(lc);

			explicit_bzero(f->value, strlen(f->value));
		}
	}
}

/* ---- building --------------------------------------------------------- */

/*
 * The scalar members of a JSON object as FormFields (name, value as text),
 * in key order; nulls, arrays and objects are skipped.
 */
List *
jsonb_object_fields(Jsonb *obj)
{
	JsonbIterator *it = JsonbIteratorInit(&obj->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;
	List	   *out = NIL;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		FormField  *f;

		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE || key == NULL)
			continue;
		f = palloc(sizeof(FormField));
		f->name = key;
		if (v.type == jbvString)
			f->value = pnstrdup(v.val.string.val, v.val.string.len);
		else if (v.type == jbvNumeric)
			f->value = DatumGetCString(DirectFunctionCall1(numeric_out,
														   NumericGetDatum(v.val.numeric)));
		else if (v.type == jbvBool)
			f->value = v.val.boolean ? "true" : "false";
		else
		{
			pfree(f);
			continue;
		}
		out = lappend(out, f);
	}
	return out;
}

/* A text[] datum as a List of C strings, NULL elements skipped. */
List *
text_array_to_list(Datum arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *out = NIL;

	deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			out = lappend(out, TextDatumGetCString(elems[i]));
	return out;
}

static void
append_form(StringInfo buf, const char *name, const char *value)
{
	char	   *n = curl_easy_escape(NULL, name, 0);
	char	   *v = curl_easy_escape(NULL, value, 0);

	if (buf->len > 0)
		appendStringInfoChar(buf, '&');
	appendStringInfo(buf, "%s=%s", n, v);
	explicit_bzero(v, strlen(v));
	curl_free(n);
	curl_free(v);
}

/*
 * The Basic credentials: base64 of client_id:client_secret, both parts
 * form-encoded first as RFC 6749 2.3.1 says (form_encoded), or as they are
 * (as many clients send them).  palloc'd; a secret.
 */
static char *
basic_credentials(ProviderConf *conf, bool form_encoded)
{
	const char *secret = conf->client_secret ? conf->client_secret : "";
	char	   *u = form_encoded ? curl_easy_escape(NULL, conf->client_id, 0) : NULL;
	char	   *s = form_encoded ? curl_easy_escape(NULL, secret, 0) : NULL;
	char	   *pair = psprintf("%s:%s", u ? u : conf->client_id, s ? s : secret);
	int			plen = strlen(pair);
	int			elen = pg_b64_enc_len(plen);
	char	   *enc = palloc(elen + 1);
	int			n = oauth_b64_encode(pair, plen, enc, elen);

	enc[Max(n, 0)] = '\0';
	explicit_bzero(pair, plen);
	if (s)
		explicit_bzero(s, strlen(s));
	curl_free(u);
	curl_free(s);
	return enc;
}

/* Request fields whose values are secrets. */
static const char *const secret_fields[] = {
	"refresh_token", "code", "code_verifier", "client_secret", "token",
	"client_assertion", "password", NULL
};

/*
 * Every secret a call sent, as build_token_request sent them: the client
 * secret; in a Basic header, its value (of the form-encoded pair as sent,
 * and of the raw pair), also in base64url; the values of the body's secret
 * fields (refresh token, code, code_verifier, a revoked token, ...), read
 * back from the body the call carried.  Each with all its forms
 * (redactor_add_secret), built once for the call.
 */
static Redactor *
sent_secrets(ProviderConf *conf, HttpCall *call)
{
	Redactor   *r = redactor_new();
	List	   *fields = NIL;
	ListCell   *lc;

	redactor_add_secret(r, conf->client_secret);
	if (conf->auth_method && strcmp(conf->auth_method, "client_secret_basic") == 0 &&
		conf->client_id)
	{
		for (int enc = 0; enc <= 1; enc++)
		{
			char	   *b = basic_credentials(conf, enc);
			char	   *u = pstrdup(b);

			redactor_add_secret(r, b);
			for (char *p = u; *p; p++)
				*p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
			redactor_add_secret(r, u);
		}
	}
	if (call->body == NULL || call->body_len == 0 || call->body_len > OAUTH_MAX_BODY)
		return r;
	if (!(call->body[0] == '{' && !json_too_deep(call->body, (int) call->body_len) &&
		  parse_json_fields(call->body, (int) call->body_len, &fields)) &&
		!parse_form_fields(call->body, (int) call->body_len, &fields))
		fields = NIL;
	foreach(lc, fields)
	{
		Field	   *f = lfirst(lc);

		for (int i = 0; secret_fields[i]; i++)
			if (strcmp(f->name, secret_fields[i]) == 0 && (int) strlen(f->value) == f->len)
				redactor_add_secret(r, f->value);
		explicit_bzero(f->value, f->len);
	}
	return r;
}

/*
 * Build the token request: fields, then extra_params (when asked), then the
 * client's authentication, per the pinned auth_method.  sent_secrets()
 * above must know every secret this sends.
 */
void
build_token_request(ProviderConf *conf, Jsonb *metadata, FormField *fields, int nfields,
					bool with_extra_params, TokenRequest *req)
{
	bool		json = strcmp(conf->body_format, "json") == 0;
	bool		basic = strcmp(conf->auth_method, "client_secret_basic") == 0;
	bool		post = strcmp(conf->auth_method, "client_secret_post") == 0;
	List	   *hdrs = NIL;
	ListCell   *lc;
	int			i;

	memset(req, 0, sizeof(*req));
	req->url = substitute_placeholders(conf->name, conf->token_url, metadata,
									   conf->allowed_hosts);
	initStringInfo(&req->body);
	if (json)
		appendStringInfoChar(&req->body, '{');

#define ADD_FIELD(n, v) \
	do { \
		if (json) \
		{ \
			if (req->body.len > 1) \
				appendStringInfoChar(&req->body, ','); \
			escape_json(&req->body, (n)); \
			appendStringInfoChar(&req->body, ':'); \
			escape_json(&req->body, (v)); \
		} \
		else \
			append_form(&req->body, (n), (v)); \
	} while (0)

	for (i = 0; i < nfields; i++)
		if (fields[i].value)
			ADD_FIELD(fields[i].name, fields[i].value);
	if (with_extra_params && conf->extra_params)
	{
		List	   *extra = jsonb_object_fields(conf->extra_params);

		foreach(lc, extra)
		{
			FormField  *f = lfirst(lc);

			ADD_FIELD(f->name, f->value);
		}
	}
	if (post || strcmp(conf->auth_method, "none") == 0)
		ADD_FIELD("client_id", conf->client_id);
	if (post && conf->client_secret)
		ADD_FIELD("client_secret", conf->client_secret);
	if (json)
		appendStringInfoChar(&req->body, '}');
#undef ADD_FIELD

	hdrs = lappend(hdrs, "Accept: application/json");
	hdrs = lappend(hdrs, json ? "Content-Type: application/json"
				   : "Content-Type: application/x-www-form-urlencoded");
	if (basic)
	{
		/* RFC 6749 2.3.1: both parts form-encoded, then Base64 */
		char	   *enc = basic_credentials(conf, true);

		hdrs = lappend(hdrs, psprintf("Authorization: Basic %s", enc));
		explicit_bzero(enc, strlen(enc));
	}
	if (conf->extra_headers)
	{
		List	   *extra = jsonb_object_fields(conf->extra_headers);

		foreach(lc, extra)
		{
			FormField  *f = lfirst(lc);

			/* a stored CR or LF would start a header of its own */
			if (strpbrk(f->name, "\r\n:") != NULL || strpbrk(f->value, "\r\n") != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("extra_headers of provider \"%s\" hold a line break", conf->name),
						 errhint("Register the provider again with oauth.register_provider().")));
			hdrs = lappend(hdrs, psprintf("%s: %s", f->name, f->value));
		}
	}
	req->nheaders = list_length(hdrs);
	req->headers = palloc(sizeof(char *) * req->nheaders);
	i = 0;
	foreach(lc, hdrs)
		req->headers[i++] = lfirst(lc);
}

void
wipe_token_request(TokenRequest *req)
{
	if (req->body.data)
		explicit_bzero(req->body.data, req->body.len);
	for (int i = 0; i < req->nheaders; i++)
		if (strncmp(req->headers[i], "Authorization:", 14) == 0)
			explicit_bzero(req->headers[i], strlen(req->headers[i]));
}

void
provider_conf_wipe(ProviderConf *conf)
{
	if (conf->client_secret)
		explicit_bzero(conf->client_secret, strlen(conf->client_secret));
}
