/*
 * http.h — libcurl multi driver for the worker (src/http.c).
 */
#ifndef OAUTH_HTTP_H
#define OAUTH_HTTP_H

#include "postgres.h"

#include <curl/curl.h>

#include "lib/stringinfo.h"

#define OAUTH_MAX_BODY (1024 * 1024)

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
	char		errbuf[CURL_ERROR_SIZE];
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
extern HttpCall *http_call_sync(const char *method, const char *url, char **headers,
								int nheaders, const char *body, size_t body_len);

#endif
