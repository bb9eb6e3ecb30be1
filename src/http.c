/*-------------------------------------------------------------------------
 *
 * http.c
 *	  libcurl multi driver: every provider call of the worker runs here.
 *
 * curl's sockets and the process latch share one WaitEventSet, with curl's
 * timer as the wait's timeout, so the worker answers SIGTERM, SIGHUP and new
 * requests at once whatever is in flight.  PostgreSQL 15 cannot remove a
 * socket from a WaitEventSet, so the set is built afresh for each wait from
 * the sockets curl asked for through CURLMOPT_SOCKETFUNCTION.
 *
 * Safety rules for every call: https only (http too with oauth.allow_http),
 * the peer's certificate and host name verified (oauth.ca_file for private
 * CAs), no redirects, response bodies capped at 1 MiB.  Every address curl
 * is about to connect to, once the name is resolved, must be a public one
 * (src/addresses.c) unless oauth.allow_private_addresses: open_socket_cb
 * refuses the others, and prereq_cb checks the connection a request is
 * about to use once more (a kept-alive one may predate the setting); the
 * call fails unsent with the refused address in HttpCall.refused_address.  Proxies: only the one oauth.http_proxy
 * names (the proxy then resolves and connects, and the address rule
 * applies to nothing curl connects to itself); the server's environment
 * (https_proxy, all_proxy, no_proxy) is never used.  curl allocates with
 * malloc; nothing here hands it palloc, and no callback can raise an error
 * or palloc: the body is gathered in malloc'd memory and copied into
 * palloc'd memory only after curl has finished with the call.
 *
 * Time limits: connecting (DNS, TCP, TLS) may take oauth.http_timeout.  A
 * worker's request, once sent, is kept open up to oauth.answer_timeout (at
 * least oauth.http_timeout): the provider may already have rotated the
 * refresh token, and a slow answer is cheaper than a lost grant.  Callers
 * stop waiting after oauth.http_timeout (the worker tells them, see
 * http_elapsed_ms); a session's own calls (http_call_sync) end at
 * oauth.http_timeout.  Every finished call says whether it was answered,
 * never sent, or sent without an answer (HttpFate).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "portability/instr_time.h"
#include "utils/timestamp.h"

#include "addresses.h"
#include "compat.h"
#include "http.h"
#include "oauth_tokens.h"

#define MAX_SOCKETS 1024

typedef struct SockWant
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_* */
} SockWant;

static CURLM *multi = NULL;
static SockWant socks[MAX_SOCKETS];
static int	nsocks = 0;
static int64 curl_deadline = 0;	/* curl's timer, monotonic microseconds; 0: none */

/* A monotonic clock: curl's timeouts must not move with the wall clock. */
static int64
mono_now_us(void)
{
	instr_time	t;

	INSTR_TIME_SET_CURRENT(t);
	return (int64) INSTR_TIME_GET_MICROSEC(t);
}
static int	running = 0;
static MemoryContext http_cxt = NULL;

static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nsocks; i++)
		if (socks[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsocks)
			socks[i] = socks[--nsocks];
		return 0;
	}
	if (i == nsocks)
	{
		if (nsocks == MAX_SOCKETS)
			return -1;
		nsocks++;
	}
	socks[i].fd = fd;
	socks[i].what = what;
	return 0;
}

/*
 * curl's timer, kept as an absolute deadline: a wait that ends early (the
 * latch, another socket) must not start curl's countdown again.
 */
static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	curl_deadline = timeout_ms < 0 ? 0 : mono_now_us() + (int64) timeout_ms * 1000 + 1;
	return 0;
}

/*
 * Body bytes from curl.  Runs inside libcurl: no palloc, no ereport (an
 * out-of-memory ERROR would longjmp through curl's frames), so the body is
 * gathered in malloc'd memory, grown by copy-and-wipe (it holds tokens),
 * and moved into palloc'd memory by http_next_done once curl is done.
 */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpCall   *call = (HttpCall *) userdata;
	size_t		n = size * nmemb;

	if (call->rlen + n > OAUTH_MAX_BODY)
	{
		call->too_large = true;
		return 0;				/* makes curl fail the transfer */
	}
	if (call->rlen + n > call->rcap)
	{
		size_t		cap = Max(call->rcap * 2, 16384);
		char	   *bigger;

		while (cap < call->rlen + n)
			cap *= 2;
		cap = Min(cap, (size_t) OAUTH_MAX_BODY);
		bigger = malloc(cap);
		if (bigger == NULL)
			return 0;			/* curl fails the transfer: a write error */
		if (call->rbuf)
		{
			memcpy(bigger, call->rbuf, call->rlen);
			explicit_bzero(call->rbuf, call->rlen);
			free(call->rbuf);
		}
		call->rbuf = bigger;
		call->rcap = cap;
	}
	memcpy(call->rbuf + call->rlen, ptr, n);
	call->rlen += n;
	return n;
}

/*
 * Count the times the request goes out: libcurl calls this just before it
 * sends the request on a connection.  libcurl re-sends a request by itself
 * when a reused connection closed without a byte of answer; for a refresh
 * that is a second use of the same refresh token after an answer that may
 * have been lost, which the worker must know.
 */
static int
prereq_cb(void *clientp, char *conn_primary_ip, char *conn_local_ip,
		  int conn_primary_port, int conn_local_port)
{
	HttpCall   *call = (HttpCall *) clientp;

	/*
	 * The address rule once more, on the connection the request is about
	 * to use: a connection kept alive from before oauth.allow_private_
	 * addresses was turned off was never seen by open_socket_cb.
	 */
	if (!call->via_proxy && !oauth_allow_private_addresses && conn_primary_ip)
	{
		struct sockaddr_storage ss;
		socklen_t	len = 0;
		const char *why;

		memset(&ss, 0, sizeof(ss));
		if (inet_pton(AF_INET, conn_primary_ip, &((struct sockaddr_in *) &ss)->sin_addr) == 1)
		{
			ss.ss_family = AF_INET;
			len = sizeof(struct sockaddr_in);
		}
		else if (inet_pton(AF_INET6, conn_primary_ip, &((struct sockaddr_in6 *) &ss)->sin6_addr) == 1)
		{
			ss.ss_family = AF_INET6;
			len = sizeof(struct sockaddr_in6);
		}
		if ((why = address_refusal((struct sockaddr *) &ss, len)) != NULL)
		{
			char		text[OAUTH_ADDRESS_TEXT];

			address_text((struct sockaddr *) &ss, len, text, sizeof(text));
			snprintf(call->refused_address, sizeof(call->refused_address), "%s (%s)", text, why);
			return CURL_PREREQFUNC_ABORT;
		}
	}
	call->sends++;
	return CURL_PREREQFUNC_OK;
}

/*
 * Open the socket for a connection curl is about to make, after name
 * resolution, once for every address it tries (every family, every
 * address of a name): a non-public address is refused, unless
 * oauth.allow_private_addresses, and curl tries the next or fails the
 * call with CURLE_COULDNT_CONNECT before a byte is sent.  Through a proxy
 * the only connection is to the proxy a superuser named.  Runs inside
 * libcurl: no palloc, no ereport.
 */
static curl_socket_t
open_socket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	HttpCall   *call = (HttpCall *) clientp;
	const char *why;

	if (!call->via_proxy && !oauth_allow_private_addresses &&
		(why = address_refusal(&address->addr, (socklen_t) address->addrlen)) != NULL)
	{
		char		text[OAUTH_ADDRESS_TEXT];

		address_text(&address->addr, (socklen_t) address->addrlen, text, sizeof(text));
		snprintf(call->refused_address, sizeof(call->refused_address), "%s (%s)", text, why);
		return CURL_SOCKET_BAD;
	}
	return socket(address->family, address->socktype, address->protocol);
}

/* Drop the malloc'd body, wiping it. */
static void
drop_rbuf(HttpCall *call)
{
	if (call->rbuf)
	{
		explicit_bzero(call->rbuf, call->rlen);
		free(call->rbuf);
	}
	call->rbuf = NULL;
	call->rlen = call->rcap = 0;
}

static size_t
header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	HttpCall   *call = (HttpCall *) userdata;
	size_t		n = size * nitems;

	if (n > 12 && pg_strncasecmp(buf, "retry-after:", 12) == 0)
	{
		size_t		len = Min(n - 12, sizeof(call->retry_after) - 1);

		memcpy(call->retry_after, buf + 12, len);
		call->retry_after[len] = '\0';
	}
	else if (n > 13 && pg_strncasecmp(buf, "content-type:", 13) == 0)
	{
		size_t		len = Min(n - 13, sizeof(call->content_type) - 1);

		memcpy(call->content_type, buf + 13, len);
		call->content_type[len] = '\0';
	}
	return n;
}

void
http_init(void)
{
	if (multi)
		return;
	http_cxt = AllocSetContextCreate(TopMemoryContext, "oauth_tokens http",
									 ALLOCSET_DEFAULT_SIZES);
	multi = curl_multi_init();
	if (multi == NULL)
		elog(ERROR, "could not initialize libcurl multi handle");
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
}

/*
 * Start one request.  headers are "Name: value" strings.  The body is
 * copied; the caller may wipe its own copy at once.
 */
HttpCall *
http_start(const char *method, const char *url, char **headers, int nheaders,
		   const char *body, size_t body_len, void *owner)
{
	HttpCall   *call;
	MemoryContext old = MemoryContextSwitchTo(http_cxt);

	call = palloc0(sizeof(HttpCall));
	initStringInfo(&call->response);
	MemoryContextSwitchTo(old);
	call->owner = owner;
	call->started_us = mono_now_us();
	call->easy = curl_easy_init();
	if (call->easy == NULL)
		elog(ERROR, "could not create a libcurl handle");
	for (int i = 0; i < nheaders; i++)
		call->headers = curl_slist_append(call->headers, headers[i]);
	call->headers = curl_slist_append(call->headers, "User-Agent: oauth_tokens/" OAUTH_TOKENS_VERSION);
	call->headers = curl_slist_append(call->headers, "Expect:");

	curl_easy_setopt(call->easy, CURLOPT_URL, url);
	curl_easy_setopt(call->easy, CURLOPT_PRIVATE, call);
	curl_easy_setopt(call->easy, CURLOPT_HTTPHEADER, call->headers);
	curl_easy_setopt(call->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(call->easy, CURLOPT_WRITEDATA, call);
	curl_easy_setopt(call->easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(call->easy, CURLOPT_HEADERDATA, call);
	curl_easy_setopt(call->easy, CURLOPT_ERRORBUFFER, call->errbuf);
	curl_easy_setopt(call->easy, CURLOPT_PREREQFUNCTION, prereq_cb);
	curl_easy_setopt(call->easy, CURLOPT_PREREQDATA, call);
	curl_easy_setopt(call->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(call->easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(call->easy, CURLOPT_TIMEOUT_MS,
					 (long) Max(oauth_http_timeout_ms, oauth_answer_timeout_ms));
	curl_easy_setopt(call->easy, CURLOPT_CONNECTTIMEOUT_MS, (long) oauth_http_timeout_ms);
	curl_easy_setopt(call->easy, CURLOPT_PROTOCOLS_STR, oauth_allow_http ? "http,https" : "https");
	curl_easy_setopt(call->easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(call->easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(call->easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) OAUTH_MAX_BODY);
	if (oauth_ca_file && oauth_ca_file[0] != '\0')
		curl_easy_setopt(call->easy, CURLOPT_CAINFO, oauth_ca_file);
	curl_easy_setopt(call->easy, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
	curl_easy_setopt(call->easy, CURLOPT_OPENSOCKETDATA, call);
	/* "" turns off the proxies of the environment; NOPROXY "": no exceptions */
	call->via_proxy = oauth_http_proxy != NULL && oauth_http_proxy[0] != '\0';
	curl_easy_setopt(call->easy, CURLOPT_PROXY, call->via_proxy ? oauth_http_proxy : "");
	curl_easy_setopt(call->easy, CURLOPT_NOPROXY, "");
	if (strcmp(method, "POST") == 0)
	{
		call->body = malloc(body_len + 1);
		if (call->body == NULL)
			elog(ERROR, "out of memory");
		memcpy(call->body, body, body_len);
		call->body[body_len] = '\0';
		call->body_len = body_len;
		curl_easy_setopt(call->easy, CURLOPT_POST, 1L);
		curl_easy_setopt(call->easy, CURLOPT_POSTFIELDS, call->body);
		curl_easy_setopt(call->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_len);
	}
	else if (strcmp(method, "GET") != 0)
		curl_easy_setopt(call->easy, CURLOPT_CUSTOMREQUEST, method);

	curl_multi_add_handle(multi, call->easy);
	/* let curl start: it registers its timer, which kicks the transfer */
	return call;
}

/*
 * Wait for socket activity, curl's timer, the latch or max_timeout_ms,
 * whichever comes first, and let curl do its work.  Sets *latch_events to
 * the latch events seen (WL_LATCH_SET).  Exits on postmaster death.
 */
void
http_wait(long max_timeout_ms, uint32 *latch_events)
{
	WaitEventSet *set;
	WaitEvent	events[MAX_SOCKETS + 2];
	long		timeout = max_timeout_ms;
	int			n;

	*latch_events = 0;
	if (curl_deadline != 0)
	{
		int64		left = curl_deadline - mono_now_us();
		long		to_curl = left <= 0 ? 0 : (long) ((left + 999) / 1000);

		if (timeout < 0 || to_curl < timeout)
			timeout = to_curl;
	}

	set = oauth_wait_event_set(nsocks + 2);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nsocks; i++)
	{
		uint32		ev = 0;

		if (socks[i].what & CURL_POLL_IN)
			ev |= WL_SOCKET_READABLE;
		if (socks[i].what & CURL_POLL_OUT)
			ev |= WL_SOCKET_WRITEABLE;
		if (ev)
			AddWaitEventToSet(set, ev, socks[i].fd, NULL, NULL);
	}
	n = WaitEventSetWait(set, timeout, events, lengthof(events),
						 oauth_wait_event(OAUTH_WAIT_WORKER));
	FreeWaitEventSet(set);

	for (int i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			*latch_events |= WL_LATCH_SET;
			continue;
		}
		if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			int			flags = 0;

			if (events[i].events & WL_SOCKET_READABLE)
				flags |= CURL_CSELECT_IN;
			if (events[i].events & WL_SOCKET_WRITEABLE)
				flags |= CURL_CSELECT_OUT;
			curl_multi_socket_action(multi, events[i].fd, flags, &running);
		}
	}
	/* curl's deadline passed, whatever woke us: timeouts, retries, starts */
	if (curl_deadline != 0 && mono_now_us() >= curl_deadline)
	{
		curl_deadline = 0;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
}

/*
 * Could the provider have received the whole request?  Failures of name
 * resolution, connection and TLS handshake never send it; otherwise curl
 * says how much of the request (headers, then body) it wrote.
 */
static HttpFate
call_fate(HttpCall *call)
{
	long		req_size = 0;
	curl_off_t	uploaded = 0;

	if (call->result == CURLE_OK)
		return HTTP_ANSWERED;
	if (call->refused_address[0] != '\0' &&
		(call->result == CURLE_COULDNT_CONNECT || call->result == CURLE_ABORTED_BY_CALLBACK))
		return HTTP_NOT_SENT;	/* open_socket_cb or prereq_cb refused it */
	switch (call->result)
	{
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
		case CURLE_COULDNT_RESOLVE_PROXY:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_CONNECT:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_SSL_ENGINE_NOTFOUND:
		case CURLE_SSL_ENGINE_SETFAILED:
		case CURLE_SSL_CRL_BADFILE:
		case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		case CURLE_SSL_INVALIDCERTSTATUS:
			return HTTP_NOT_SENT;
		case CURLE_WRITE_ERROR:
		case CURLE_FILESIZE_EXCEEDED:
			/* an answer came, too large to keep: the provider did answer */
			if (call->too_large)
				return HTTP_ANSWERED;
			break;
		default:
			break;
	}
	curl_easy_getinfo(call->easy, CURLINFO_REQUEST_SIZE, &req_size);
	curl_easy_getinfo(call->easy, CURLINFO_SIZE_UPLOAD_T, &uploaded);
	if (req_size <= 0 || (curl_off_t) call->body_len > uploaded)
		return HTTP_NOT_SENT;
	return HTTP_NO_ANSWER;
}

/* Milliseconds since the call started (monotonic). */
int64
http_elapsed_ms(const HttpCall *call)
{
	return (mono_now_us() - call->started_us) / 1000;
}

const char *
http_fate_name(HttpFate fate)
{
	switch (fate)
	{
		case HTTP_RUNNING:
			return "running";
		case HTTP_ANSWERED:
			return "answered";
		case HTTP_NOT_SENT:
			return "not_sent";
		case HTTP_NO_ANSWER:
			return "no_answer";
	}
	return "unknown";
}

/* The next finished call, or NULL. */
HttpCall *
http_next_done(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		HttpCall   *call;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &call);
		call->result = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &call->status);
		call->fate = call_fate(call);
		curl_multi_remove_handle(multi, msg->easy_handle);
		/* curl is done with this call: its body moves to palloc'd memory */
		{
			MemoryContext old = MemoryContextSwitchTo(http_cxt);

			resetStringInfo(&call->response);
			if (call->rlen > 0)
				appendBinaryStringInfo(&call->response, call->rbuf, (int) call->rlen);
			MemoryContextSwitchTo(old);
			drop_rbuf(call);
		}
		return call;
	}
	return NULL;
}

/* Release a call; wipes the request body, which holds secrets. */
void
http_free(HttpCall *call)
{
	if (call->easy)
	{
		curl_multi_remove_handle(multi, call->easy);
		curl_easy_cleanup(call->easy);
	}
	for (struct curl_slist *h = call->headers; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));	/* Authorization: Basic */
	curl_slist_free_all(call->headers);
	if (call->body)
	{
		explicit_bzero(call->body, call->body_len);
		free(call->body);
	}
	drop_rbuf(call);
	if (call->response.data)
	{
		explicit_bzero(call->response.data, call->response.len);
		pfree(call->response.data);
	}
	pfree(call);
}

/* Called when the worker exits: stop every transfer. */
void
http_abort_all(void)
{
	if (multi)
	{
		curl_multi_cleanup(multi);
		multi = NULL;
	}
}

/*
 * Perform one call from a backend and wait for it: the same rules as the
 * worker's calls, answering cancel and statement_timeout while it waits.
 * Used by exchange_code, client_credentials and revoke, which run in the
 * caller's session.  The caller frees the call with http_free.
 */
HttpCall *
http_call_sync(const char *method, const char *url, char **headers, int nheaders,
			   const char *body, size_t body_len)
{
	HttpCall   *call;
	HttpCall   *done = NULL;

	http_init();
	call = http_start(method, url, headers, nheaders, body, body_len, NULL);
	/* the caller waits for this one itself: oauth.http_timeout, no longer */
	curl_easy_setopt(call->easy, CURLOPT_TIMEOUT_MS, (long) oauth_http_timeout_ms);
	PG_TRY();
	{
		while (done == NULL)
		{
			uint32		ev;

			http_wait(1000, &ev);
			if (ev & WL_LATCH_SET)
				ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			done = http_next_done();
		}
	}
	PG_CATCH();
	{
		http_free(call);
		PG_RE_THROW();
	}
	PG_END_TRY();
	Assert(done == call);
	return done;
}
