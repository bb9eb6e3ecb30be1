/*-------------------------------------------------------------------------
 *
 * answer.c
 *	  Reading providers' answers: JSON and form fields, and the rules that
 *	  make a hostile answer harmless.
 *
 * Before any provider string reaches text, jsonb, an event or an error
 * (NOTIFY payloads carry an event id only):
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
 *	  - every secret the call sent (client secret, refresh token, code,
 *	    code_verifier, the Basic header's value; provider.c lists them) is
 *	    cut out of every provider string, in every form an echo can take
 *	    (raw, URL-encoded, JSON-escaped), whole or in part: no run of
 *	    REDACT_WINDOW bytes of any form survives (redact).  A string is
 *	    redacted whole, and only then clipped (provider_text), so a secret
 *	    that straddles the cut cannot leave its beginning behind.
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

/* ---- redaction --------------------------------------------------------- */

/*
 * Is c kept as it is by a URL encoder that keeps ALPHA, DIGIT and the bytes
 * of keep?
 */
static bool
url_keeps(unsigned char c, const char *keep)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		(c != '\0' && strchr(keep, c) != NULL);
}

/* v percent-encoded: keep as above, hex in upper or lower case, space as '+' or %20. */
static char *
url_form(const char *v, const char *keep, bool lower, bool plus)
{
	const char *hex = lower ? "0123456789abcdef" : "0123456789ABCDEF";
	StringInfoData b;

	initStringInfo(&b);
	for (const unsigned char *p = (const unsigned char *) v; *p; p++)
	{
		if (url_keeps(*p, keep))
			appendStringInfoChar(&b, (char) *p);
		else if (*p == ' ' && plus)
			appendStringInfoChar(&b, '+');
		else
		{
			appendStringInfoChar(&b, '%');
			appendStringInfoChar(&b, hex[*p >> 4]);
			appendStringInfoChar(&b, hex[*p & 15]);
		}
	}
	return b.data;
}

/* Append \uXXXX (a UTF-16 unit) in the given case. */
static void
append_u(StringInfo b, unsigned int u, bool lower)
{
	appendStringInfo(b, lower ? "\\u%04x" : "\\u%04X", u);
}

/*
 * v as the inside of a JSON string, the way some encoder writes it: '/' as
 * "\/" (PHP) or not; characters beyond ASCII as \uXXXX in lower case
 * (Python, PHP), upper case, or as they are (nonascii 0, 1, 2); <, >, &
 * and ' as \u00XX (Go, html-safe) or not.  v must be valid UTF-8 when
 * nonascii is not 0.
 */
static char *
json_form(const char *v, bool slash, int nonascii, bool html)
{
	StringInfoData b;
	const unsigned char *p = (const unsigned char *) v;

	initStringInfo(&b);
	while (*p)
	{
		unsigned char c = *p;

		if (c == '"' || c == '\\')
		{
			appendStringInfoChar(&b, '\\');
			appendStringInfoChar(&b, (char) c);
		}
		else if (c == '/' && slash)
			appendStringInfoString(&b, "\\/");
		else if (c == '\b')
			appendStringInfoString(&b, "\\b");
		else if (c == '\f')
			appendStringInfoString(&b, "\\f");
		else if (c == '\n')
			appendStringInfoString(&b, "\\n");
		else if (c == '\r')
			appendStringInfoString(&b, "\\r");
		else if (c == '\t')
			appendStringInfoString(&b, "\\t");
		else if (c < 0x20 || (html && (c == '<' || c == '>' || c == '&' || c == '\'')))
			append_u(&b, c, nonascii != 2);
		else if (IS_HIGHBIT_SET(c) && nonascii != 0)
		{
			pg_wchar	u = utf8_to_unicode(p);
			int			n = pg_utf_mblen(p);

			if (u > 0xFFFF)
			{
				append_u(&b, 0xD800 + ((u - 0x10000) >> 10), nonascii == 1);
				append_u(&b, 0xDC00 + ((u - 0x10000) & 0x3FF), nonascii == 1);
			}
			else
				append_u(&b, u, nonascii == 1);
			p += n;
			continue;
		}
		else
			appendStringInfoChar(&b, (char) c);
		p++;
	}
	return b.data;
}

/* A new, empty set of secrets. */
Redactor *
redactor_new(void)
{
	return palloc0(sizeof(Redactor));
}

static void
add_form(Redactor *r, char *form)
{
	ListCell   *lc;

	if (strlen(form) < REDACT_MIN_FORM)
		return;
	foreach(lc, r->forms)
		if (strcmp(lfirst(lc), form) == 0)
			return;
	r->forms = lappend(r->forms, form);
	r->nwindows = -1;			/* to be built again */
}

/*
 * Add a secret that was sent: the value itself, and every way an echo can
 * spell it (URL-encoded as the common encoders do, JSON-escaped likewise).
 * A secret shorter than REDACT_MIN_FORM bytes is not redacted: it would
 * cut ordinary words out of every message and says little by itself.
 */
void
redactor_add_secret(Redactor *r, const char *secret)
{
	static const char *const url_keep[] = {"-._~", "*-._", "!'()*-._~", NULL};
	bool		utf8;

	if (secret == NULL || strlen(secret) < REDACT_MIN_FORM)
		return;
	add_form(r, pstrdup(secret));
	/* letters, digits, '-', '.', '_' only (JWTs, most tokens): every form is the same */
	if (strspn(secret, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._") ==
		strlen(secret))
		return;
	{
		/* as clip() and provider_text() show it: control characters as spaces */
		char	   *spaced = pstrdup(secret);

		for (char *p = spaced; *p; p++)
			if ((unsigned char) *p < 0x20 || *p == 0x7f)
				*p = ' ';
		add_form(r, spaced);
	}
	for (int k = 0; url_keep[k]; k++)
		for (int lower = 0; lower <= 1; lower++)
			for (int plus = 0; plus <= 1; plus++)
				add_form(r, url_form(secret, url_keep[k], lower, plus));
	utf8 = pg_verify_mbstr(PG_UTF8, secret, strlen(secret), true);
	for (int slash = 0; slash <= 1; slash++)
		for (int nonascii = 0; nonascii <= (utf8 ? 2 : 0); nonascii++)
			for (int html = 0; html <= 1; html++)
				add_form(r, json_form(secret, slash, nonascii, html));
}

static inline uint32
window_slot(uint64 w, uint32 mask)
{
	return (uint32) ((w * UINT64CONST(0x9E3779B97F4A7C15)) >> 32) & mask;
}

/*
 * Every REDACT_WINDOW-byte window of every form, in an open-addressing hash
 * set (a window never holds a NUL, so 0 marks a free slot), at most half
 * full: building and each lookup are O(1) a window.
 */
static void
build_windows(Redactor *r)
{
	ListCell   *lc;
	int			n = 0;
	uint32		size = 16;

	if (r->windows)
	{
		explicit_bzero(r->windows, sizeof(uint64) * (r->mask + 1));
		pfree(r->windows);
	}
	foreach(lc, r->forms)
		n += Max((int) strlen(lfirst(lc)) - REDACT_WINDOW + 1, 0);
	while (size < (uint32) n * 2)
		size <<= 1;
	r->windows = palloc0(sizeof(uint64) * size);
	r->mask = size - 1;
	foreach(lc, r->forms)
	{
		const char *f = lfirst(lc);
		int			len = strlen(f);

		for (int i = 0; i + REDACT_WINDOW <= len; i++)
		{
			uint64		w;
			uint32		k;

			memcpy(&w, f + i, REDACT_WINDOW);
			for (k = window_slot(w, r->mask); r->windows[k] != 0 && r->windows[k] != w;
				 k = (k + 1) & r->mask)
				;
			r->windows[k] = w;
		}
	}
	r->nwindows = n;
}

/* Is w a window of a form? */
static bool
known_window(const Redactor *r, uint64 w)
{
	for (uint32 k = window_slot(w, r->mask); r->windows[k] != 0; k = (k + 1) & r->mask)
		if (r->windows[k] == w)
			return true;
	return false;
}

/*
 * s with every trace of the secrets replaced by "[redacted]": every
 * occurrence of a form, and every run of REDACT_WINDOW or more bytes that
 * also occurs in a form (a secret echoed in part: cut by the provider,
 * or at the start or end of s).  So no REDACT_WINDOW bytes of any form
 * survive, wherever s is clipped later.  Runs are widened to whole UTF-8
 * characters.  Returns s itself when nothing matched, else a new string;
 * s is left as it is (the caller wipes it).  O(len(s)) lookups plus
 * a search for each form shorter than REDACT_WINDOW.
 */
char *
redact(char *s, Redactor *r)
{
	int			len;
	bool	   *mark;
	bool		any = false;
	ListCell   *lc;
	StringInfoData out;

	if (s == NULL || r == NULL || r->forms == NIL)
		return s;
	if (r->nwindows < 0)
		build_windows(r);
	len = strlen(s);
	mark = palloc0(Max(len, 1));
	for (int i = 0; i + REDACT_WINDOW <= len && r->nwindows > 0; i++)
	{
		uint64		w;

		memcpy(&w, s + i, REDACT_WINDOW);
		if (known_window(r, w))
		{
			memset(mark + i, true, REDACT_WINDOW);
			any = true;
		}
	}
	foreach(lc, r->forms)
	{
		const char *f = lfirst(lc);
		int			flen = strlen(f);
		const char *hit = s;

		if (flen >= REDACT_WINDOW)
			continue;			/* its windows found it */
		while ((hit = strstr(hit, f)) != NULL)
		{
			memset(mark + (hit - s), true, flen);
			any = true;
			hit++;
		}
	}
	if (!any)
	{
		pfree(mark);
		return s;
	}
	initStringInfo(&out);
	for (int i = 0; i < len;)
	{
		int			end;

		if (!mark[i])
		{
			appendStringInfoChar(&out, s[i++]);
			continue;
		}
		/* a run, widened to whole characters at both ends */
		while (out.len > 0 && (s[i] & 0xC0) == 0x80 && i > 0)
		{
			out.len--;
			i--;
		}
		out.data[out.len] = '\0';
		end = i;
		while (end < len && (mark[end] || (s[end] & 0xC0) == 0x80))
			end++;
		appendStringInfoString(&out, "[redacted]");
		i = end;
	}
	pfree(mark);
	return out.data;
}

/*
 * A provider string made fit for a message: not valid text is replaced,
 * control characters become spaces, then every secret is redacted from the
 * whole string, and only then is it clipped to max bytes (clip): a secret
 * that straddles the cut is gone before the cut is made.
 */
char *
provider_text(const char *s, int max, Redactor *r)
{
	int			len = strlen(s);
	char	   *t;
	char	   *red;
	char	   *out;

	if (!valid_db_text(s, len))
		return pstrdup("(not valid text)");
	t = pstrdup(s);
	for (int i = 0; i < len; i++)
		if ((unsigned char) t[i] < 0x20 || t[i] == 0x7f)
			t[i] = ' ';
	red = redact(t, r);
	out = clip(red, max);
	if (red != t)
		explicit_bzero(red, strlen(red));
	explicit_bzero(t, len);
	return out;
}

/* Wipe every form (they are secrets) and the windows. */
void
redactor_wipe(Redactor *r)
{
	ListCell   *lc;

	if (r == NULL)
		return;
	foreach(lc, r->forms)
		explicit_bzero(lfirst(lc), strlen(lfirst(lc)));
	if (r->windows)
		explicit_bzero(r->windows, sizeof(uint64) * (r->mask + 1));
}
