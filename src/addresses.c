/*-------------------------------------------------------------------------
 *
 * addresses.c
 *	  Which addresses provider requests may go to.
 *
 * An oauth_admin registers provider URLs, and the server then calls them
 * with its own network position: without a rule, a URL naming
 * 169.254.169.254, 127.0.0.1 or a host on the private network would turn
 * the extension into a way in to what only the server can reach.  So,
 * unless a superuser sets oauth.allow_private_addresses (test providers on
 * loopback, a private identity provider):
 *
 *	  at registration (url_ip_literal, oauth._check_url_address)
 *	    a provider URL must name its host by DNS name: an IP literal in any
 *	    spelling libcurl accepts (dotted, decimal 2130706433, hex
 *	    0x7f000001, octal 0177.0.0.1, short 127.1, IPv6 in brackets) is
 *	    refused with a clear error.  The host is read by libcurl's own URL
 *	    parser, the one that will send the request.
 *
 *	  at connect time (address_refusal, from http.c's
 *	  CURLOPT_OPENSOCKETFUNCTION)
 *	    every address libcurl is about to connect to, after resolving the
 *	    name and for every address family, must be a public unicast
 *	    address: not loopback, unspecified, private (RFC 1918, unique local
 *	    fc00::/7, site-local), shared (100.64.0.0/10), link-local,
 *	    multicast, broadcast, documentation, benchmarking or reserved;
 *	    IPv6 forms that carry an IPv4 address (v4-mapped, NAT64 64:ff9b::/96,
 *	    6to4) are judged by that address.  The check is on the address
 *	    connected to, so a name that resolves differently later (DNS
 *	    rebinding) gains nothing.
 *
 * The connect-time functions run inside libcurl's callbacks: they never
 * palloc or ereport.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <curl/curl.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "addresses.h"
#include "oauth_tokens.h"

PG_FUNCTION_INFO_V1(oauth_check_url_address_sql);

/* IPv4 ranges that are not public unicast, most specific first. */
static const struct
{
	uint32		base;
	int			bits;
	const char *what;
}			v4_ranges[] =
{
	{0xFFFFFFFF, 32, "broadcast"},
	{0x00000000, 8, "unspecified"},	/* 0.0.0.0/8, "this network" */
	{0x0A000000, 8, "private"},		/* 10/8 */
	{0x64400000, 10, "shared (carrier-grade NAT)"},	/* 100.64/10 */
	{0x7F000000, 8, "loopback"},	/* 127/8 */
	{0xA9FE0000, 16, "link-local"},	/* 169.254/16, cloud metadata */
	{0xAC100000, 12, "private"},	/* 172.16/12 */
	{0xC0000000, 24, "reserved"},	/* 192.0.0/24, IETF protocol assignments */
	{0xC0000200, 24, "documentation"},	/* 192.0.2/24 */
	{0xC0A80000, 16, "private"},	/* 192.168/16 */
	{0xC6120000, 15, "benchmarking"},	/* 198.18/15 */
	{0xC6336400, 24, "documentation"},	/* 198.51.100/24 */
	{0xCB007100, 24, "documentation"},	/* 203.0.113/24 */
	{0xE0000000, 4, "multicast"},	/* 224/4 */
	{0xF0000000, 4, "reserved"},	/* 240/4 */
};

/* The range an IPv4 address (host byte order) falls in, or NULL: public. */
static const char *
v4_refusal(uint32 a)
{
	for (int i = 0; i < lengthof(v4_ranges); i++)
	{
		uint32		mask = v4_ranges[i].bits == 0 ? 0 :
			(uint32) (0xFFFFFFFFu << (32 - v4_ranges[i].bits));

		if ((a & mask) == v4_ranges[i].base)
			return v4_ranges[i].what;
	}
	return NULL;
}

/* Four bytes of an address, network order, as a host-order number. */
static uint32
v4_at(const unsigned char *b)
{
	return ((uint32) b[0] << 24) | ((uint32) b[1] << 16) | ((uint32) b[2] << 8) | b[3];
}

/* The range an IPv6 address falls in, or NULL: public. */
static const char *
v6_refusal(const unsigned char *b)
{
	static const unsigned char zero[16] = {0};
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
	static const unsigned char nat64[12] = {0x00, 0x64, 0xFF, 0x9B};

	if (memcmp(b, zero, 15) == 0 && b[15] <= 1)
		return b[15] == 0 ? "unspecified" : "loopback";
	if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
		return v4_refusal(v4_at(b + 12));	/* ::ffff:a.b.c.d, 64:ff9b::a.b.c.d */
	if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B &&
		b[4] == 0x00 && b[5] == 0x01)
		return "private (local-use NAT64)";	/* 64:ff9b:1::/48 */
	if (memcmp(b, zero, 12) == 0)
		return "reserved (IPv4-compatible)";	/* ::a.b.c.d, deprecated */
	if (b[0] == 0x01 && b[1] == 0x00 && memcmp(b + 2, zero, 6) == 0)
		return "reserved (discard)";	/* 100::/64 */
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0D && b[3] == 0xB8)
		return "documentation"; /* 2001:db8::/32 */
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00)
		return "reserved (Teredo)"; /* 2001::/32 */
	if (b[0] == 0x20 && b[1] == 0x02)
		return v4_refusal(v4_at(b + 2));	/* 6to4 2002:a.b.c.d::/48 */
	if ((b[0] & 0xFE) == 0xFC)
		return "private (unique local)";	/* fc00::/7 */
	if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80)
		return "link-local";	/* fe80::/10 */
	if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0)
		return "private (site-local)";	/* fec0::/10 */
	if (b[0] == 0xFF)
		return "multicast";		/* ff00::/8 */
	return NULL;
}

/*
 * Why the server may not connect to this address, or NULL when it may (a
 * public unicast address).  An address of another family than IPv4 or IPv6
 * is never allowed.  Safe inside libcurl's callbacks.
 */
const char *
address_refusal(const struct sockaddr *sa, socklen_t len)
{
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in))
		return v4_refusal(ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr));
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))
		return v6_refusal(((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr);
	return "not an internet address";
}

/* The address as text ("127.0.0.1", "[::1]").  Safe inside callbacks. */
void
address_text(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
	char		a[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in) &&
		inet_ntop(AF_INET, &((const struct sockaddr_in *) sa)->sin_addr, a, sizeof(a)))
		snprintf(buf, buflen, "%s", a);
	else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6) &&
			 inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) sa)->sin6_addr, a, sizeof(a)))
		snprintf(buf, buflen, "[%s]", a);
	else
		snprintf(buf, buflen, "an address of family %d", (int) sa->sa_family);
}

/*
 * Is the last label of a host numeric (digits, or 0x and hex digits)?  The
 * URL standard, and libcurl, read such a host as an IPv4 address in one of
 * its spellings (2130706433, 0x7f000001, 0177.0.0.1, 127.1).
 */
static bool
last_label_numeric(const char *host, size_t len)
{
	size_t		start;
	size_t		i;
	bool		hex;

	if (len > 0 && host[len - 1] == '.')
		len--;					/* a fully qualified "127.0.0.1." */
	start = len;
	while (start > 0 && host[start - 1] != '.')
		start--;
	if (start == len)
		return false;
	hex = len - start >= 2 && host[start] == '0' && (host[start + 1] == 'x' || host[start + 1] == 'X');
	for (i = start + (hex ? 2 : 0); i < len; i++)
		if (!(hex ? isxdigit((unsigned char) host[i]) : isdigit((unsigned char) host[i])))
			return false;
	return true;
}

/*
 * Does a provider URL name its host by IP address?  Returns what it is ("an
 * IPv4 address", "an IPv6 address", with the range when it is not a public
 * one) and sets *host, or NULL for a DNS name or a URL libcurl cannot parse
 * (which the request would refuse anyway).  {placeholders} are read as a
 * letter: a filled host is checked by src/urls.c and at connect time.
 */
const char *
url_ip_literal(const char *url, char **host)
{
	StringInfoData u;
	CURLU	   *h;
	char	   *got = NULL;
	char		buf[512];
	size_t		len;
	bool		in_brace = false;
	unsigned char b6[16];
	struct in_addr b4;
	const char *range;

	*host = NULL;
	initStringInfo(&u);
	for (const char *p = url; *p; p++)
	{
		if (*p == '{')
		{
			in_brace = true;
			appendStringInfoChar(&u, 'x');
		}
		else if (*p == '}' && in_brace)
			in_brace = false;
		else if (!in_brace)
			appendStringInfoChar(&u, *p);
	}
	h = curl_url();
	if (h == NULL)
		elog(ERROR, "out of memory");
	if (curl_url_set(h, CURLUPART_URL, u.data, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
		curl_url_get(h, CURLUPART_HOST, &got, 0) != CURLUE_OK || got == NULL)
	{
		curl_url_cleanup(h);
		return NULL;
	}
	len = strlcpy(buf, got, sizeof(buf));
	curl_free(got);
	curl_url_cleanup(h);
	if (len >= sizeof(buf))
		return NULL;			/* longer than any address */
	*host = pstrdup(buf);

	if (buf[0] == '[')
	{
		char	   *end = strpbrk(buf, "%]");	/* a zone id: "%25eth0" */

		if (end)
			*end = '\0';
		if (inet_pton(AF_INET6, buf + 1, b6) == 1 && (range = v6_refusal(b6)) != NULL)
			return psprintf("an IPv6 address (%s)", range);
		return "an IPv6 address";
	}
	if (inet_pton(AF_INET, buf, &b4) == 1)
	{
		range = v4_refusal(ntohl(b4.s_addr));
		return range ? psprintf("an IPv4 address (%s)", range) : "an IPv4 address";
	}
	if (last_label_numeric(buf, strlen(buf)))
		return "an IPv4 address in a numeric spelling";
	return NULL;
}

/*
 * oauth._check_url_address(what text, url text): register_provider's check
 * that a URL names its host by DNS name, unless
 * oauth.allow_private_addresses.  Internal; owner only.
 */
Datum
oauth_check_url_address_sql(PG_FUNCTION_ARGS)
{
	char	   *what;
	char	   *url;
	char	   *host;
	const char *literal;

	if (PG_ARGISNULL(1) || oauth_allow_private_addresses)
		PG_RETURN_VOID();
	what = PG_ARGISNULL(0) ? "URL" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	url = text_to_cstring(PG_GETARG_TEXT_PP(1));
	literal = url_ip_literal(url, &host);
	if (literal)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must name its host by DNS name, not by IP address", what),
				 errdetail("Host \"%s\" is %s.", host, literal),
				 errhint("Provider hosts must be public DNS names; a superuser may set oauth.allow_private_addresses = on for test or private providers.")));
	PG_RETURN_VOID();
}
