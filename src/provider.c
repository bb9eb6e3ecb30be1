/*-------------------------------------------------------------------------
 *
 * provider.c
 *	  Building token requests and classifying providers' answers.
 *
 * Requests follow the provider's pinned configuration: client credentials
 * in the body (client_secret_post) or an HTTP Basic header
 * (client_secret_basic), never probed; form or JSON body; extra fields and
 * headers; Accept: application/json always.  URLs may hold {name}
 * placeholders filled from the connection's metadata.
 *
 * Answers are parsed with PostgreSQL's JSON parser (common/jsonapi.h, in its
 * non-throwing form) or as form-encoded (GitHub's default), then classified
 * into the failure classes of the contract:
 *	  success    200 with access_token and no error
 *	  reauth     invalid_grant or one of the provider's reauth_errors, in any
 *	             status, including an error in a 200 body (Slack, GitHub)
 *	  provider   invalid_client, unauthorized_client (a 401 without a code)
 *	  transient  everything else: 5xx, 429, timeouts, TLS and connection
 *	             errors, bodies that are not JSON or lack access_token
 * Messages keep only the provider's error and error_description; no token
 * ever reaches a message.
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

#include "compat.h"
#include "oauth_tokens.h"
#include "provider.h"

/* ---- parsing ---------------------------------------------------------- */

typedef struct Field
{
	char	   *name;
	char	   *value;
	bool		is_string;
} Field;

typedef struct CollectState
{
	int			depth;
	char	   *parent;			/* field name of the depth-1 object we are in */
	char	   *fname;
	List	   *fields;			/* of Field * */
	bool		top_is_object;
} CollectState;

static OAuthJsonCbResult
cs_object_start(void *state)
{
	CollectState *cs = state;

	if (cs->depth == 0)
		cs->top_is_object = true;
	else if (cs->depth == 1)
		cs->parent = cs->fname ? pstrdup(cs->fname) : NULL;
	cs->depth++;
	return OAUTH_JSON_OK;
}

static OAuthJsonCbResult
cs_object_end(void *state)
{
	CollectState *cs = state;

	cs->depth--;
	if (cs->depth == 1)
		cs->parent = NULL;
	return OAUTH_JSON_OK;
}

static OAuthJsonCbResult
cs_field_start(void *state, char *fname, bool isnull)
{
	CollectState *cs = state;

	cs->fname = fname;
	return OAUTH_JSON_OK;
}

static OAuthJsonCbResult
cs_scalar(void *state, char *token, JsonTokenType tokentype)
{
	CollectState *cs = state;
	Field	   *f;

	if (cs->fname == NULL || tokentype == JSON_TOKEN_NULL)
		return OAUTH_JSON_OK;
	if (cs->depth == 1)
	{
		f = palloc(sizeof(Field));
		f->name = pstrdup(cs->fname);
	}
	else if (cs->depth == 2 && cs->parent)
	{
		f = palloc(sizeof(Field));
		f->name = psprintf("%s.%s", cs->parent, cs->fname);
	}
	else
		return OAUTH_JSON_OK;
	f->value = pstrdup(token);
	f->is_string = (tokentype == JSON_TOKEN_STRING);
	cs->fields = lappend(cs->fields, f);
	return OAUTH_JSON_OK;
}

/* Top-level (and one nested level of) scalar fields of a JSON object. */
static bool
parse_json_fields(const char *body, int len, List **fields)
{
	JsonLexContext *lex;
	JsonSemAction sem = {0};
	CollectState cs = {0};
	bool		ok;

	lex = oauth_json_lexer(body, len);
	sem.semstate = &cs;
	sem.object_start = cs_object_start;
	sem.object_end = cs_object_end;
	sem.object_field_start = cs_field_start;
	sem.scalar = cs_scalar;
	ok = (pg_parse_json(lex, &sem) == JSON_SUCCESS && cs.top_is_object);
	oauth_json_lexer_free(lex);
	if (!ok)
		return false;
	*fields = cs.fields;
	return true;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static char *
url_decode(const char *s, int len)
{
	char	   *out = palloc(len + 1);
	int			o = 0;

	for (int i = 0; i < len; i++)
	{
		if (s[i] == '+')
			out[o++] = ' ';
		else if (s[i] == '%' && i + 2 < len &&
				 hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0)
		{
			out[o++] = (char) (hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		}
		else
			out[o++] = s[i];
	}
	out[o] = '\0';
	return out;
}

/* a=b&c=d, as GitHub answers without Accept: application/json */
static bool
parse_form_fields(const char *body, int len, List **fields)
{
	int			start = 0;

	*fields = NIL;
	for (int i = 0; i <= len; i++)
	{
		if (i == len || body[i] == '&')
		{
			const char *eq = memchr(body + start, '=', i - start);

			if (eq)
			{
				Field	   *f = palloc(sizeof(Field));

				f->name = url_decode(body + start, eq - (body + start));
				f->value = url_decode(eq + 1, body + i - (eq + 1));
				f->is_string = true;
				*fields = lappend(*fields, f);
			}
			else if (i > start)
				return false;
			start = i + 1;
		}
	}
	return *fields != NIL;
}

static Field *
find_field(List *fields, const char *name)
{
	ListCell   *lc;

	foreach(lc, fields)
	{
		Field	   *f = lfirst(lc);

		if (strcmp(f->name, name) == 0)
			return f;
	}
	return NULL;
}

static bool
parse_int_field(Field *f, int64 *out)
{
	char	   *end;
	double		d;

	if (f == NULL)
		return false;
	errno = 0;
	d = strtod(f->value, &end);
	while (*end == ' ')
		end++;
	if (errno != 0 || end == f->value || *end != '\0' || d < 0 || d > 1e10)
		return false;
	*out = (int64) d;
	return true;
}

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

static char *
clip(const char *s, int max)
{
	int			len = strlen(s);
	char	   *out;

	if (len <= max)
		return pstrdup(s);
	out = palloc(max + 4);
	memcpy(out, s, max);
	strcpy(out + max, "...");
	return out;
}

/*
 * Classify a finished call.  Everything in ans is palloc'd in the current
 * context; tokens are only in access_token and refresh_token.
 */
void
classify_answer(ProviderConf *conf, HttpCall *call, TokenAnswer *ans)
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
				what = call->too_large ? "response body over 1 MiB" : "write error";
				break;
			default:
				what = "HTTP error";
				break;
		}
		ans->message = psprintf("%s: %s", what,
								call->errbuf[0] ? call->errbuf : curl_easy_strerror(call->result));
		ans->message = clip(ans->message, 180);
		return;
	}

	/* parse: JSON, or form-encoded as GitHub sends by default */
	parsed = parse_json_fields(call->response.data, call->response.len, &fields);
	if (!parsed && (strstr(call->content_type, "x-www-form-urlencoded") != NULL ||
					(call->response.len > 0 && call->response.data[0] != '<' &&
					 call->response.data[0] != '{')))
		parsed = parse_form_fields(call->response.data, call->response.len, &fields);

	f_error = find_field(fields, "error");
	if (f_error == NULL)
		f_error = find_field(fields, "status");	/* HubSpot: status: BAD_REFRESH_TOKEN */
	if (f_error && !f_error->is_string)
		f_error = NULL;
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
		ans->error_code = clip(code, 60);
		ans->message = f_desc ? psprintf("%s: %s", ans->error_code, clip(f_desc->value, 120))
			: pstrdup(ans->error_code);
		return;
	}
	if (code && (strcmp(code, "invalid_client") == 0 || strcmp(code, "unauthorized_client") == 0))
	{
		ans->klass = RO_PROVIDER;
		ans->error_code = pstrdup(code);
		ans->message = f_desc ? psprintf("%s: %s", code, clip(f_desc->value, 120)) : pstrdup(code);
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
		ans->message = psprintf("HTTP %ld with a body that is neither JSON nor a form", call->status);
		return;
	}
	f_at = find_field(fields, "access_token");
	if (f_at == NULL && (f_at = find_field(fields, "authed_user.access_token")) != NULL)
		pre = "authed_user.";	/* Slack: a user token only, nested */
	if (call->status < 200 || call->status >= 300 || f_at == NULL ||
		!f_at->is_string || f_at->value[0] == '\0')
	{
		if (code)
			ans->message = psprintf("HTTP %ld: %s%s%s", call->status, clip(code, 60),
									f_desc ? ": " : "", f_desc ? clip(f_desc->value, 100) : "");
		else
			ans->message = psprintf("HTTP %ld without access_token", call->status);
		return;
	}

	/* success */
	{
		Field	   *f;
		StringInfoData meta;
		bool		first = true;

		ans->klass = RO_REFRESHED;
		ans->access_token = pstrdup(f_at->value);
		f = find_field(fields, psprintf("%srefresh_token", pre));
		if (f && f->is_string && f->value[0] != '\0')
			ans->refresh_token = pstrdup(f->value);
		ans->has_expires_in = parse_int_field(find_field(fields, psprintf("%sexpires_in", pre)),
											  &ans->expires_in);
		ans->has_rt_expires_in =
			parse_int_field(find_field(fields, "refresh_token_expires_in"), &ans->rt_expires_in) ||
			parse_int_field(find_field(fields, "x_refresh_token_expires_in"), &ans->rt_expires_in);
		f = find_field(fields, psprintf("%sscope", pre));
		if (f && f->is_string)
			ans->scope = pstrdup(f->value);

		initStringInfo(&meta);
		appendStringInfoChar(&meta, '{');
		for (int i = 0; kept_fields[i]; i++)
		{
			f = find_field(fields, kept_fields[i]);
			if (f == NULL)
				continue;
			if (!first)
				appendStringInfoChar(&meta, ',');
			first = false;
			escape_json(&meta, kept_fields[i]);
			appendStringInfoChar(&meta, ':');
			escape_json(&meta, f->value);
		}
		appendStringInfoChar(&meta, '}');
		ans->metadata_json = meta.data;
		ans->message = pstrdup("refreshed");
	}
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

/* Where the authority (host[:port]) of a URL ends, or -1 without "://". */
static int
authority_end(const char *url)
{
	const char *start = strstr(url, "://");
	const char *slash;

	if (start == NULL)
		return -1;
	start += 3;
	slash = strchr(start, '/');
	return slash ? (int) (slash - url) : (int) strlen(url);
}

/* Does a URL template take its host from the connection's metadata? */
bool
url_host_templated(const char *url)
{
	int			end = authority_end(url);
	const char *brace = strchr(url, '{');

	return brace != NULL && end >= 0 && (brace - url) < end;
}

/*
 * A host that came from metadata must be one the provider allows
 * (allowed_hosts: "*.example.com" or an exact host): otherwise a tenant
 * could send the shared client secret to a host of its choosing.  No list
 * means no restriction; loopback hosts pass when oauth.allow_http is on.
 */
static void
check_templated_host(const char *provider, const char *url, List *allowed_hosts)
{
	const char *h = strstr(url, "://") + 3;
	int			len = strcspn(h, ":/?#");
	char	   *host = pnstrdup(h, len);
	ListCell   *lc;

	if (allowed_hosts == NIL)
		return;
	if (oauth_allow_http && (strcmp(host, "127.0.0.1") == 0 || strcmp(host, "localhost") == 0))
		return;
	foreach(lc, allowed_hosts)
	{
		const char *pat = lfirst(lc);
		int			plen = strlen(pat);

		if (plen > 2 && pat[0] == '*' && pat[1] == '.')
		{
			if (len > plen - 1 && pg_strcasecmp(host + len - (plen - 1), pat + 1) == 0)
				return;
		}
		else if (pg_strcasecmp(host, pat) == 0)
			return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("host \"%s\" from the connection's metadata is not allowed for provider \"%s\"",
					host, provider),
			 errhint("The provider's allowed_hosts lists the hosts its templated URLs may name.")));
}

/*
 * Fill {name} placeholders from metadata.  Values must look like host or
 * path parts; anything else is refused rather than spliced into a URL, and
 * a host taken from metadata must be in the provider's allowed_hosts.
 */
char *
substitute_placeholders(const char *provider, const char *url, Jsonb *metadata,
						List *allowed_hosts)
{
	StringInfoData out;
	const char *p = url;

	initStringInfo(&out);
	while (*p)
	{
		const char *close;

		if (*p == '{' && (close = strchr(p, '}')) != NULL)
		{
			char	   *key = pnstrdup(p + 1, close - p - 1);
			JsonbValue	k;
			JsonbValue *v = NULL;

			k.type = jbvString;
			k.val.string.val = key;
			k.val.string.len = strlen(key);
			if (metadata)
				v = findJsonbValueFromContainer(&metadata->root, JB_FOBJECT, &k);
			if (v == NULL || v->type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("URL placeholder {%s} has no value in the connection's metadata", key)));
			{
				char	   *val = pnstrdup(v->val.string.val, v->val.string.len);

				if (val[0] == '\0' ||
					strspn(val, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:") != strlen(val))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("metadata value for URL placeholder {%s} is not a valid host or path part", key)));
				appendStringInfoString(&out, val);
			}
			p = close + 1;
		}
		else
			appendStringInfoChar(&out, *p++);
	}
	if (url_host_templated(url))
		check_templated_host(provider, out.data, allowed_hosts);
	return out.data;
}

/*
 * Build the token request: fields, then extra_params (when asked), then the
 * client's authentication, per the pinned auth_method.
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
		char	   *u = curl_easy_escape(NULL, conf->client_id, 0);
		char	   *s = curl_easy_escape(NULL, conf->client_secret ? conf->client_secret : "", 0);
		char	   *pair = psprintf("%s:%s", u, s);
		int			plen = strlen(pair);
		int			elen = pg_b64_enc_len(plen);
		char	   *enc = palloc(elen + 1);
		int			n = oauth_b64_encode(pair, plen, enc, elen);

		enc[n] = '\0';
		hdrs = lappend(hdrs, psprintf("Authorization: Basic %s", enc));
		explicit_bzero(pair, plen);
		explicit_bzero(enc, n);
		explicit_bzero(s, strlen(s));
		curl_free(u);
		curl_free(s);
	}
	if (conf->extra_headers)
	{
		List	   *extra = jsonb_object_fields(conf->extra_headers);

		foreach(lc, extra)
		{
			FormField  *f = lfirst(lc);

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
