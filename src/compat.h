/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The differences between the PostgreSQL majors oauth_tokens builds
 *	  against (15 to 18), and the only place that tests PG_VERSION_NUM.
 *
 * The rest of the code calls the names defined here.  Where a newer major
 * offers something better, it is used there: named wait events from 17,
 * the module's name and version in its magic block from 18.
 *
 *	16	the varlena macros moved from postgres.h to varatt.h; JSON semantic
 *		callbacks return JsonParseErrorType
 *	17	makeJsonLexContextCstringLen takes the context to fill (NULL: make
 *		one) and a size_t length, and freeJsonLexContext frees it;
 *		PGPROC's lxid moved into its vxid;
 *		CreateWaitEventSet takes a ResourceOwner instead of a memory context;
 *		WaitEventExtensionNew gives an extension's waits their own names
 *	18	the WaitEventSet API moved to storage/waiteventset.h; pg_b64_encode
 *		and pg_b64_decode take uint8 * for the binary side;
 *		PG_MODULE_MAGIC_EXT records the module's name and version
 *
 *-------------------------------------------------------------------------
 */
#ifndef OAUTH_COMPAT_H
#define OAUTH_COMPAT_H

#include "postgres.h"

#include "common/base64.h"
#include "common/jsonapi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "storage/latch.h"
#include "utils/resowner.h"
#include "utils/wait_event.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif
#if PG_VERSION_NUM >= 180000
#include "storage/waiteventset.h"
#endif

#if PG_VERSION_NUM < 150000
#error "oauth_tokens needs PostgreSQL 15 or later"
#endif

/* the extension's version, from oauth_tokens.control (see the Makefile) */
#ifndef OAUTH_TOKENS_VERSION
#define OAUTH_TOKENS_VERSION "unknown"
#endif

/*
 * The module's magic block: write "OAUTH_MODULE_MAGIC;" once, in place of
 * PG_MODULE_MAGIC.  From 18 it also names the module and its version, which
 * pg_get_loaded_modules() shows.
 */
#if PG_VERSION_NUM >= 180000
#define OAUTH_MODULE_MAGIC \
	PG_MODULE_MAGIC_EXT(.name = "oauth_tokens", .version = OAUTH_TOKENS_VERSION)
#else
#define OAUTH_MODULE_MAGIC PG_MODULE_MAGIC
#endif

/*
 * JSON semantic callbacks: declare them as returning OAuthJsonCbResult and
 * end them with "return OAUTH_JSON_OK;" (an empty return before 16).
 */
#if PG_VERSION_NUM >= 160000
typedef JsonParseErrorType OAuthJsonCbResult;
#define OAUTH_JSON_OK JSON_SUCCESS
#else
typedef void OAuthJsonCbResult;
#define OAUTH_JSON_OK
#endif

/* A lexer over len bytes of UTF-8 JSON, keeping de-escaped strings. */
static inline JsonLexContext *
oauth_json_lexer(const char *json, size_t len)
{
#if PG_VERSION_NUM >= 170000
	return makeJsonLexContextCstringLen(NULL, json, len, PG_UTF8, true);
#else
	return makeJsonLexContextCstringLen(unconstify(char *, json), (int) len,
										PG_UTF8, true);
#endif
}

/* Free a lexer made by oauth_json_lexer (not the tokens it handed out). */
static inline void
oauth_json_lexer_free(JsonLexContext *lex)
{
#if PG_VERSION_NUM >= 170000
	freeJsonLexContext(lex);
#else
	if (lex->strval)
	{
		pfree(lex->strval->data);
		pfree(lex->strval);
	}
	pfree(lex);
#endif
}

/* Base64 of len bytes at src into dst; returns the length, or -1. */
static inline int
oauth_b64_encode(const void *src, int len, char *dst, int dstlen)
{
#if PG_VERSION_NUM >= 180000
	return pg_b64_encode((const uint8 *) src, len, dst, dstlen);
#else
	return pg_b64_encode((const char *) src, len, dst, dstlen);
#endif
}

/* Bytes of the Base64 text at src into dst; returns the length, or -1. */
static inline int
oauth_b64_decode(const char *src, int len, void *dst, int dstlen)
{
#if PG_VERSION_NUM >= 180000
	return pg_b64_decode(src, len, (uint8 *) dst, dstlen);
#else
	return pg_b64_decode(src, len, (char *) dst, dstlen);
#endif
}

/*
 * A WaitEventSet for nevents events, to be freed with FreeWaitEventSet.
 * From 17 it belongs to the current resource owner, so an error between
 * creating and freeing it does not leak its epoll descriptor.
 */
static inline WaitEventSet *
oauth_wait_event_set(int nevents)
{
#if PG_VERSION_NUM >= 170000
	return CreateWaitEventSet(CurrentResourceOwner, nevents);
#else
	return CreateWaitEventSet(CurrentMemoryContext, nevents);
#endif
}

/*
 * What oauth_tokens' processes wait for, as pg_stat_activity shows it: from
 * 17 under its own name (wait_event_type Extension, wait_event the name
 * below); before 17 all of them are wait_event "Extension".
 */
typedef enum OAuthWait
{
	OAUTH_WAIT_WORKER,			/* worker: requests, curl's sockets and timer */
	OAUTH_WAIT_WORKER_EXTENSION,	/* worker: CREATE EXTENSION not run yet */
	OAUTH_WAIT_REFRESH,			/* caller: the refresh it asked for */
	OAUTH_WAIT_REQUEST_SLOT,	/* caller: room in the request table */
	OAUTH_WAIT_COUNT
} OAuthWait;

#define OAUTH_WAIT_NAMES \
	{"OAuthWorkerMain", "OAuthWorkerNoExtension", "OAuthRefresh", "OAuthRequestSlot"}

/*
 * The wait_event_info for a WaitLatch, WaitEventSetWait or
 * ConditionVariableSleep that waits for what w says.  From 17 the name is
 * registered on first use in each process (it takes a lightweight lock, so
 * call it before taking any of ours); the same name always gets the same id.
 */
static inline uint32
oauth_wait_event(OAuthWait w)
{
#if PG_VERSION_NUM >= 170000
	static uint32 ids[OAUTH_WAIT_COUNT];
	static const char *const names[OAUTH_WAIT_COUNT] = OAUTH_WAIT_NAMES;

	if (ids[w] == 0)
		ids[w] = WaitEventExtensionNew(names[w]);
	return ids[w];
#else
	return PG_WAIT_EXTENSION;
#endif
}

/*
 * The local id of this backend's current top-level transaction (invalid
 * outside one); subtransactions share it.
 */
#if PG_VERSION_NUM >= 170000
#define OAUTH_MY_LXID (MyProc->vxid.lxid)
#else
#define OAUTH_MY_LXID (MyProc->lxid)
#endif

#endif							/* OAUTH_COMPAT_H */
