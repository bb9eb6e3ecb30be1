/*
 * http.h — libcurl multi driver for the worker (src/http.c).
 */
#ifndef OAUTH_HTTP_H
#define OAUTH_HTTP_H

#include "postgres.h"

#include <curl/curl.h>

#include "lib/stringinfo.h"

#include "addresses.h"

#define OAUTH_MAX_BODY (1024 * 1024)

/*
 * What became of a request, as far as the provider is concerned.  Only a
 * request that may have reached the provider can have spent a refresh
 * token: one that was never sent is retried freely, one sent without an
 * answer may have been processed (and rotated) by the provider.
 */
typedef enum HttpFate
{
	HTTP_RUNNING = 0,			/* still in curl */
	HTTP_ANSWERED,				/* an HTTP answer came back (any status) */
	HTTP_NOT_SENT,				/* DNS, refused, TLS handshake, bad URL */
	HTTP_NO_ANSWER				/* sent; timeout, empty reply, dropped mid-answer */
} HttpFate;

typedef struct HttpCall
{
	CURL	   *easy;
	struct curl_slist *headers;
	char	   *body;			/* request body (malloc'd; wiped on free) */
	size_t		body_len;
	StringInfoData response;	/* the body, palloc'd once curl is done */
	char	   *rbuf;			/* the body while curl runs: malloc'd, capped
								 * at OAUTH_MAX_BODY, wiped when dropped */
	size_t		rlen;
	size_t		rcap;
	bool		too_large;
	long		status;
	char		retry_after[32];
	char		content_type[128];
	CURLcode	result;
	HttpFate	fate;			/* set when the call is done */
	int			sends;			/* times the request went out: libcurl sends
								 * it again, once, when a reused connection
								 * gave nothing back (sent, no answer) */
	int64		started_us;		/* monotonic clock, http_start */
	char		errbuf[CURL_ERROR_SIZE];
	bool		via_proxy;		/* oauth.http_proxy: curl connects to it only */
	char		refused_address[OAUTH_ADDRESS_TEXT];	/* the last address
														 * open_socket_cb refused,
														 * with its range; "" */
	void	   *owner;			/* caller's job */
} HttpCall;

extern void http_init(void);
extern HttpCall *http_start(const char *method, const char *url, char **headers,
							int nheaders, const char *body, size_t body_len,
							void *owner);
extern void http_wait(long max_timeout_ms, uint32 *latch_events);
extern HttpCall *http_next_done(void);
extern void http_free(HttpCall *call);
extern void http_abort_all(void);
extern int64 http_elapsed_ms(const HttpCall *call);
extern const char *http_fate_name(HttpFate fate);
extern HttpCall *http_call_sync(const char *method, const char *url, char **headers,
								int nheaders, const char *body, size_t body_len);

#endif
