/*-------------------------------------------------------------------------
 *
 * answer.c
 *	  Reading providers' answers: JSON and form fields, and the rules that
 *	  make a hostile answer harmless.
 *
 * Before any provider string reaches text, jsonb, an event, an error or a
 * NOTIFY payload:
 *	  - the body must be valid UTF-8 without NUL bytes (RFC 8259), and JSON
 *	    nested at most JSON_MAX_DEPTH deep (checked by a scan before the
 *	    parser runs, so its recursion never reaches the stack-depth ERROR);
 *	    otherwise it is treated as a body that is neither JSON nor a form;
 *	  - tokens are 1..OAUTH_MAX_TOKEN bytes of printable ASCII (RFC 6749
 *	    appendix A: VSCHAR); otherwise the answer is a transient failure;
 *	  - other strings (error, error_description, scope, kept fields) must be
 *	    NUL-free and valid in the database encoding (ASCII where that is
 *	    neither UTF-8 nor SQL_ASCII) and within their bound; error texts
 *	    are then clipped on a character boundary with control characters
 *	    replaced, scope and kept fields that fail are ignored;
 *	  - expires_in and refresh_token_expires_in count only as a number (or
 *	    numeric string) of seconds from 0 to OAUTH_MAX_EXPIRES_IN, fractions
 *	    rounded down; anything else (negative, 1e300, NaN, text) is ignored
 *	    as if absent, so default_lifetime applies;
 *	  - a secret the call sent (client secret, refresh token, code, ...) that
 *	    the provider echoes back is replaced by "[redacted]" (redact).
 *
 * provider.c classifies answers with these; nothing here decides a class.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "answer.h"
#include "compat.h"

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
	f->len = strlen(token);
	f->is_string = (tokentype == JSON_TOKEN_STRING);
	cs->fields = lappend(cs->fields, f);
	return OAUTH_JSON_OK;
}


/* Is a JSON text nested deeper than JSON_MAX_DEPTH?  Strings are skipped. */
bool
json_too_deep(const char *body, int len)
{
	int			depth = 0;
	bool		in_string = false;

	for (int i = 0; i < len; i++)
	{
		char		c = body[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
		{
			if (++depth > JSON_MAX_DEPTH)
				return true;
		}
		else if (c == '}' || c == ']')
			depth--;
	}
	return false;
}

/*
 * Valid text for this database: NUL-free, and valid in its encoding.  Text
 * from a provider is UTF-8 (the body was checked), which UTF8 and SQL_ASCII
 * databases store as it is; other encodings get ASCII only, since a
 * conversion could fail with an ERROR.
 */
bool
valid_db_text(const char *s, int len)
{
	if ((int) strlen(s) != len)
		return false;
	if (GetDatabaseEncoding() == PG_UTF8 || GetDatabaseEncoding() == PG_SQL_ASCII)
		return pg_verify_mbstr(PG_UTF8, s, len, true);
	for (int i = 0; i < len; i++)
		if (IS_HIGHBIT_SET(s[i]))
			return false;
	return true;
}

/* A token: 1..OAUTH_MAX_TOKEN bytes of printable ASCII. */
bool
valid_token_text(const Field *f)
{
	if (f->len < 1 || f->len > OAUTH_MAX_TOKEN || (int) strlen(f->value) != f->len)
		return false;
	for (int i = 0; i < f->len; i++)
		if (f->value[i] < 0x20 || f->value[i] > 0x7e)
			return false;
	return true;
}

/* A string field that may be kept as it is (no control characters). */
bool
valid_kept_text(const Field *f, int max)
{
	if (f->len > max || !valid_db_text(f->value, f->len))
		return false;
	for (int i = 0; i < f->len; i++)
		if ((unsigned char) f->value[i] < 0x20 || f->value[i] == 0x7f)
			return false;
	return true;
}

/* Top-level (and one nested level of) scalar fields of a JSON object. */
bool
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
url_decode(const char *s, int len, int *outlen)
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
	*outlen = o;
	return out;
}

/* a=b&c=d, as GitHub answers without Accept: application/json */
bool
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
				int			nlen;

				f->name = url_decode(body + start, eq - (body + start), &nlen);
				f->value = url_decode(eq + 1, body + i - (eq + 1), &f->len);
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

Field *
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

/* A number of seconds by the rule in the header above; false: ignore it. */
bool
parse_int_field(Field *f, int64 *out)
{
	char	   *end;
	double		d;

	if (f == NULL || f->len > 32)
		return false;
	errno = 0;
	d = strtod(f->value, &end);
	while (*end == ' ')
		end++;
	if (errno != 0 || end == f->value || *end != '\0' ||
		!(d >= 0 && d <= OAUTH_MAX_EXPIRES_IN))	/* NaN fails too */
		return false;
	*out = (int64) floor(d);
	return true;
}

/*
 * A provider string made fit for a message: replaced when it is not valid
 * text, control characters turned into spaces, clipped to max bytes on a
 * character boundary.
 */
char *
clip(const char *s, int max)
{
	int			len = strlen(s);
	int			cut;
	char	   *out;

	if (!valid_db_text(s, len))
		return pstrdup("(not valid text)");
	cut = len <= max ? len : pg_mbcliplen(s, len, max);
	out = palloc(cut + 4);
	memcpy(out, s, cut);
	for (int i = 0; i < cut; i++)
		if ((unsigned char) out[i] < 0x20 || out[i] == 0x7f)
			out[i] = ' ';
	strcpy(out + cut, cut < len ? "..." : "");
	return out;
}

/* Request fields whose values are secrets. */
static const char *const secret_fields[] = {
	"refresh_token", "code", "code_verifier", "client_secret", "token",
	"client_assertion", "password", NULL
};

/*
 * The secrets a call sent (the client secret, and the values of the
 * request's secret fields, decoded and as sent), so that a provider that
 * echoes its request into an error or a kept field cannot put them into
 * our messages, events or logs.
 */
List *
sent_secrets(ProviderConf *conf, HttpCall *call)
{
	List	   *out = NIL;
	List	   *fields = NIL;
	ListCell   *lc;

	if (conf->client_secret && strlen(conf->client_secret) >= 4)
		out = lappend(out, pstrdup(conf->client_secret));
	if (call->body == NULL || call->body_len == 0 || call->body_len > OAUTH_MAX_BODY)
		return out;
	if (!(call->body[0] == '{' && !json_too_deep(call->body, (int) call->body_len) &&
		  parse_json_fields(call->body, (int) call->body_len, &fields)) &&
		!parse_form_fields(call->body, (int) call->body_len, &fields))
		fields = NIL;
	foreach(lc, fields)
	{
		Field	   *f = lfirst(lc);

		for (int i = 0; secret_fields[i]; i++)
			if (strcmp(f->name, secret_fields[i]) == 0 && f->len >= 4)
			{
				char	   *enc = curl_easy_escape(NULL, f->value, f->len);

				out = lappend(out, pstrdup(f->value));
				if (enc)
				{
					out = lappend(out, pstrdup(enc));
					explicit_bzero(enc, strlen(enc));
					curl_free(enc);
				}
			}
		explicit_bzero(f->value, f->len);
	}
	return out;
}

/* s with every occurrence of a secret replaced by "[redacted]". */
char *
redact(char *s, List *secrets)
{
	ListCell   *lc;

	if (s == NULL)
		return NULL;
	foreach(lc, secrets)
	{
		const char *sec = lfirst(lc);
		size_t		slen = strlen(sec);
		char	   *hit;

		while (slen > 0 && (hit = strstr(s, sec)) != NULL)
		{
			StringInfoData out;

			initStringInfo(&out);
			appendBinaryStringInfo(&out, s, hit - s);
			appendStringInfoString(&out, "[redacted]");
			appendStringInfoString(&out, hit + slen);
			explicit_bzero(s, strlen(s));
			s = out.data;
		}
	}
	return s;
}