/*-------------------------------------------------------------------------
 *
 * urls.c
 *	  The one filler of provider URL templates: token, revocation and
 *	  authorize URLs alike, from C (the worker, code exchange, revoke) and
 *	  from SQL (oauth._fill_url, used by authorize_url and exchange_code).
 *
 * A URL may hold {name} placeholders filled from a connection's metadata,
 * which tenants may influence.  The rules, checked here and nowhere else:
 *
 *	  at registration (check_url_template)
 *	    - placeholders are {name} with name [A-Za-z0-9_]{1,63}, braces
 *	      balanced;
 *	    - no user information ("user@") in the authority, and no
 *	      placeholder in the port;
 *	    - a placeholder in the host part requires allowed_hosts: exact host
 *	      names, or "*.suffix" patterns of at least two labels.
 *
 *	  when filling (substitute_placeholders), before any byte is sent
 *	    - a value is a JSON string of 1..253 characters from
 *	      [A-Za-z0-9._-], not "." or "..": no port (':'), no userinfo ('@'),
 *	      no '/', '?', '#' or '%', so a value cannot leave its place;
 *	    - a filled host must be a DNS name (letters, digits, '-', labels of
 *	      1..63), not an IP literal in any spelling (dotted, decimal, hex,
 *	      octal: a host whose last label is numeric is refused, as the URL
 *	      standard reads such hosts as IPv4), and must match allowed_hosts;
 *	    - a templated host without allowed_hosts (a provider registered
 *	      before this rule) is refused: the rule fails closed.
 *
 * "*.example.com" matches "a.example.com" and "a.b.example.com", never
 * "example.com" itself or "badexample.com".  Comparison ignores case.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "provider.h"
#include "urls.h"

PG_FUNCTION_INFO_V1(oauth_fill_url_sql);
PG_FUNCTION_INFO_V1(oauth_check_url_template_sql);

#define PLACEHOLDER_NAME_MAX 63

static const char value_chars[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";

/*
 * How many of the first len bytes of s are in set: strspn bounded by a
 * length, for values that are not NUL-terminated (jsonb strings).
 */
static int
span_of(const char *s, int len, const char *set)
{
	int			n = 0;

	while (n < len && s[n] != '\0' && strchr(set, s[n]) != NULL)
		n++;
	return n;
}

/*
 * Bounds of a URL's authority (between "://" and the first '/', '?' or
 * '#'), as offsets; false without "://".
 */
static bool
authority_bounds(const char *url, int *start, int *end)
{
	const char *s = strstr(url, "://");

	if (s == NULL)
		return false;
	*start = (int) (s + 3 - url);
	*end = *start + (int) strcspn(url + *start, "/?#");
	return true;
}

/* Does a URL template take (part of) its host from the connection's metadata? */
bool
url_host_templated(const char *url)
{
	int			start;
	int			end;
	const char *brace = strchr(url, '{');

	return brace != NULL && authority_bounds(url, &start, &end) && (brace - url) < end;
}

/* A DNS name: labels of 1..63 letters, digits and '-', 253 at most. */
static bool
is_dns_name(const char *h, int len)
{
	int			label = 0;

	if (len < 1 || len > 253)
		return false;
	for (int i = 0; i < len; i++)
	{
		char		c = h[i];

		if (c == '.')
		{
			if (label == 0)
				return false;
			label = 0;
		}
		else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				 (c >= '0' && c <= '9') || c == '-')
		{
			if (++label > 63)
				return false;
		}
		else
			return false;
	}
	return label > 0;
}

/*
 * Would a URL parser read this host as an IPv4 address?  The URL standard
 * does when the last label is a number: decimal ("2130706433",
 * "127.0.0.1", octal "0177.0.0.1") or hex ("0x7f000001").
 */
static bool
is_numeric_host(const char *h, int len)
{
	int			s = len;

	if (len > 0 && h[len - 1] == '.')
		len--;
	s = len;
	while (s > 0 && h[s - 1] != '.')
		s--;
	if (s == len)
		return false;
	if (len - s > 2 && h[s] == '0' && (h[s + 1] == 'x' || h[s + 1] == 'X'))
	{
		for (int i = s + 2; i < len; i++)
			if (!isxdigit((unsigned char) h[i]))
				return false;
		return true;
	}
	for (int i = s; i < len; i++)
		if (h[i] < '0' || h[i] > '9')
			return false;
	return true;
}

/* Is an allowed_hosts entry well formed? */
static bool
valid_host_pattern(const char *pat)
{
	int			len = strlen(pat);

	if (len > 2 && pat[0] == '*' && pat[1] == '.')
		return is_dns_name(pat + 2, len - 2) && strchr(pat + 2, '.') != NULL &&
			!is_numeric_host(pat + 2, len - 2);
	return is_dns_name(pat, len) && !is_numeric_host(pat, len);
}

static bool
host_allowed(const char *host, int len, List *allowed_hosts)
{
	ListCell   *lc;

	foreach(lc, allowed_hosts)
	{
		const char *pat = lfirst(lc);
		int			plen = strlen(pat);

		if (plen > 2 && pat[0] == '*' && pat[1] == '.')
		{
			/* ".suffix" at the end, with at least one label before it */
			if (len > plen - 1 &&
				pg_strncasecmp(host + len - (plen - 1), pat + 1, plen - 1) == 0)
				return true;
		}
		else if (len == plen && pg_strncasecmp(host, pat, len) == 0)
			return true;
	}
	return false;
}

/*
 * Check a URL template and the allowed_hosts list that goes with it, as
 * register_provider stores them.  what names the field in errors.
 */
void
check_url_template(const char *what, const char *url, List *allowed_hosts)
{
	int			start;
	int			end;
	ListCell   *lc;

	foreach(lc, allowed_hosts)
		if (!valid_host_pattern((const char *) lfirst(lc)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid allowed_hosts entry \"%s\"", (const char *) lfirst(lc)),
					 errhint("allowed_hosts must hold host names or \"*.domain\" patterns of at least two labels, such as \"*.myshopify.com\"; no IP addresses or ports.")));
	if (url == NULL)
		return;

	for (const char *p = url; *p; p++)
	{
		if (*p == '}')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s has a \"}\" without its \"{\"", what)));
		if (*p == '{')
		{
			int			n = strspn(p + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");

			if (n < 1 || n > PLACEHOLDER_NAME_MAX || p[1 + n] != '}')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s has a malformed placeholder", what),
						 errhint("Placeholders are {name}, with a name of letters, digits and \"_\".")));
			p += n + 1;
		}
	}

	if (!authority_bounds(url, &start, &end))
		return;					/* _check_url reports it */
	if (memchr(url + start, '@', end - start) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not carry user information (\"user@host\")", what)));
	if (!url_host_templated(url))
		return;
	{
		const char *colon = memchr(url + start, ':', end - start);
		const char *brace = memchr(url + start, '{', end - start);

		if (colon && memchr(colon, '{', url + end - colon) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not take its port from a placeholder", what)));
		if (brace == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s has a placeholder before its host", what)));
		if (url[start] == '[')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s has a placeholder in an IP address", what)));
	}
	if (allowed_hosts == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s takes its host from a placeholder, so allowed_hosts is required", what),
				 errdetail("Got \"%s\". Placeholders are filled from each connection's metadata, and the request carries the client's credentials.", url),
				 errhint("Pass allowed_hosts => '{*.example.com}' naming the hosts the provider really uses.")));
}

/*
 * A host taken from metadata must be a DNS name, not an IP literal, and in
 * the provider's allowed_hosts: otherwise a tenant could send the shared
 * client secret, or a customer, to a host of its choosing.
 */
static void
check_filled_host(const char *provider, const char *url, List *allowed_hosts)
{
	int			start;
	int			end;
	int			len;
	const char *h;
	char	   *host;

	if (!authority_bounds(url, &start, &end))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("URL of provider \"%s\" is not absolute", provider)));
	h = url + start;
	len = (int) strcspn(h, ":/?#");
	if (len > end - start)
		len = end - start;
	host = pnstrdup(h, Min(len, 255));
	if (allowed_hosts == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("provider \"%s\" takes a URL host from the connection's metadata but has no allowed_hosts", provider),
				 errhint("Register it again with allowed_hosts => '{*.example.com}'.")));
	if (!is_dns_name(h, len) || is_numeric_host(h, len) ||
		!host_allowed(h, len, allowed_hosts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("host \"%s\" from the connection's metadata is not allowed for provider \"%s\"",
						host, provider),
				 errhint("The provider's allowed_hosts lists the hosts its templated URLs may name; IP addresses never qualify.")));
	pfree(host);
}

/*
 * Fill {name} placeholders from metadata, by the rules in the file header.
 * Returns a palloc'd URL; raises 22023 for anything refused.
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
			int			vlen;
			const char *val;

			k.type = jbvString;
			k.val.string.val = key;
			k.val.string.len = strlen(key);
			if (metadata && JB_ROOT_IS_OBJECT(metadata))
				v = findJsonbValueFromContainer(&metadata->root, JB_FOBJECT, &k);
			if (v == NULL || v->type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("URL placeholder {%s} has no value in the connection's metadata", key),
						 errhint("Pass metadata => '{\"%s\": \"...\"}'.", key)));
			/* a jsonb string is not NUL-terminated: read vlen bytes only */
			val = v->val.string.val;
			vlen = v->val.string.len;
			if (vlen < 1 || vlen > OAUTH_PLACEHOLDER_MAX ||
				span_of(val, vlen, value_chars) < vlen ||
				span_of(val, vlen, ".") == vlen)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("metadata value for URL placeholder {%s} is not a valid host or path part", key),
						 errdetail("Values may hold letters, digits, \".\", \"-\" and \"_\" only: no port, user information, \"/\", \"?\", \"#\" or \"%%\".")));
			appendBinaryStringInfo(&out, val, vlen);
			p = close + 1;
		}
		else
			appendStringInfoChar(&out, *p++);
	}
	if (url_host_templated(url))
		check_filled_host(provider, out.data, allowed_hosts);
	return out.data;
}

/*
 * oauth._fill_url(provider text, url text, metadata jsonb, allowed_hosts
 * text[]) returns text: the SQL face of substitute_placeholders, for
 * authorize_url and exchange_code.  Internal; owner only.
 */
Datum
oauth_fill_url_sql(PG_FUNCTION_ARGS)
{
	char	   *provider;
	char	   *url;
	Jsonb	   *metadata = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	List	   *allowed = PG_ARGISNULL(3) ? NIL : text_array_to_list(PG_GETARG_DATUM(3));

	if (PG_ARGISNULL(1))
		PG_RETURN_NULL();
	provider = PG_ARGISNULL(0) ? "?" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	url = text_to_cstring(PG_GETARG_TEXT_PP(1));
	PG_RETURN_TEXT_P(cstring_to_text(substitute_placeholders(provider, url, metadata, allowed)));
}

/*
 * oauth._check_url_template(what text, url text, allowed_hosts text[]):
 * register_provider's check of each URL.  Internal; owner only.
 */
Datum
oauth_check_url_template_sql(PG_FUNCTION_ARGS)
{
	char	   *what = PG_ARGISNULL(0) ? "URL" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *url = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	List	   *allowed = PG_ARGISNULL(2) ? NIL : text_array_to_list(PG_GETARG_DATUM(2));

	check_url_template(what, url, allowed);
	PG_RETURN_VOID();
}
