/*-------------------------------------------------------------------------
 *
 * oauth_tokens.c
 *	  Module entry: settings, shared memory hooks and the background worker.
 *
 * How the module thinks, in one paragraph: application SQL calls
 * oauth.valid_token(), which reads the connection row directly through its
 * primary-key index with the latest snapshot (no row lock, no write) and
 * returns the decrypted token when it is fresh.  When a refresh is needed,
 * the backend posts a request to the single-flight table in shared memory
 * (shmem.c) and, if the token is too close to expiry, sleeps on a condition
 * variable.  One background worker (worker.c) does every refresh: it reads
 * and decrypts in a short transaction, talks to the provider through libcurl
 * (http.c, provider.c) with no transaction open, then writes the result in
 * its own transaction with a version check (store.c) and wakes the waiters.
 * The worker's own sweep and oauth.refresh_due() feed the same table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "compat.h"
#include "crypto.h"
#include "identity.h"
#include "oauth_tokens.h"
#include "shmem.h"
#include "stats.h"
#include "tenant.h"

OAUTH_MODULE_MAGIC;

#ifdef OAUTH_SANITIZER_OPTIONS
/*
 * The sanitizer build (scripts/sanitize.sh) only: the runtime's options,
 * compiled in.  A library loaded by a backend (not preloaded) starts ASan
 * after the backend has overwritten its environment with its process
 * title, so ASAN_OPTIONS and UBSAN_OPTIONS would not be seen there.
 */
const char *__asan_default_options(void);
const char *__ubsan_default_options(void);

const char *
__asan_default_options(void)
{
	return OAUTH_SANITIZER_OPTIONS;
}

const char *
__ubsan_default_options(void)
{
	return OAUTH_SANITIZER_OPTIONS ":print_stacktrace=1:halt_on_error=1";
}
#endif

char	   *oauth_database = NULL;
int			oauth_sweep_interval_ms = 30000;
int			oauth_max_concurrent_refreshes = 16;
int			oauth_http_timeout_ms = 10000;
int			oauth_answer_timeout_ms = 60000;
int			oauth_min_validity_s = 60;
char	   *oauth_ca_file = NULL;
bool		oauth_allow_http = false;
bool		oauth_allow_private_addresses = false;
char	   *oauth_http_proxy = NULL;
int			oauth_event_retention_s = 30 * 86400;
int			oauth_sweep_batch = 1000;

void		_PG_init(void);

/*
 * Bind parameters are how the README tells applications to pass tokens
 * (token_rejected, create_connection, reauthorize).  When the server logs
 * statements (log_statement = all, or log_min_duration_statement >= 0) it
 * logs their parameters too, unless log_parameter_max_length is 0.  Say so
 * once at server start: nothing in the extension can keep such a log clean.
 */
static void
warn_if_parameters_logged(void)
{
	const char *stmt = GetConfigOption("log_statement", true, false);
	const char *dur = GetConfigOption("log_min_duration_statement", true, false);
	const char *len = GetConfigOption("log_parameter_max_length", true, false);
	bool		logs_statements;

	logs_statements = (stmt && strcmp(stmt, "all") == 0) ||
		(dur && strcmp(dur, "-1") != 0);
	if (logs_statements && len && strcmp(len, "0") != 0)
		ereport(WARNING,
				(errmsg("oauth_tokens: statements are logged with their bind parameters, which may hold tokens"),
				 errdetail("log_statement is \"%s\", log_min_duration_statement is \"%s\" and log_parameter_max_length is \"%s\".",
						   stmt ? stmt : "", dur ? dur : "", len),
				 errhint("Set log_parameter_max_length = 0 so that logged statements do not carry the tokens passed to oauth_tokens' functions.")));
}

void
_PG_init(void)
{
	DefineCustomStringVariable("oauth.key_file",
							   "Key ring file: one key_id:base64 key a line, the first is active.",
							   "A relative path is taken from the data directory.",
							   &oauth_key_file, "oauth_tokens.keys",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("oauth.sweep_interval",
							"How often the worker sweeps for due connections; 0 turns its sweep off.",
							NULL, &oauth_sweep_interval_ms, 30000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("oauth.max_concurrent_refreshes",
							"HTTP refreshes in flight at once, across the cluster.",
							NULL, &oauth_max_concurrent_refreshes, 16, 1, 1024,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("oauth.http_timeout",
							"Whole-request time limit for one call to a provider.",
							NULL, &oauth_http_timeout_ms, 10000, 100, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("oauth.answer_timeout",
							"How long the worker keeps a sent refresh request open for its answer.",
							"Callers stop waiting after oauth.http_timeout; the provider may have rotated the refresh token already, so the worker waits longer (never less than oauth.http_timeout).",
							&oauth_answer_timeout_ms, 60000, 100, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("oauth.min_validity",
							"Default minimum remaining validity of a token returned by valid_token.",
							NULL, &oauth_min_validity_s, 60, 0, 86400,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("oauth.ca_file",
							   "CA bundle for verifying providers' TLS certificates; empty: the system store.",
							   NULL, &oauth_ca_file, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("oauth.allow_http",
							 "Allow http:// provider URLs (loopback test providers).",
							 NULL, &oauth_allow_http, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("oauth.allow_private_addresses",
							 "Allow provider URLs that name IP addresses or reach loopback, private, link-local or multicast addresses.",
							 "For test providers on loopback and private identity providers; checked at registration and on every address connected to (src/addresses.c).",
							 &oauth_allow_private_addresses, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("oauth.http_proxy",
							   "Proxy for every request to a provider (libcurl syntax, e.g. http://proxy:3128); empty: none.",
							   "Proxy variables in the server's environment are never used.",
							   &oauth_http_proxy, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomIntVariable("oauth.event_retention",
							"Events older than this are pruned by the worker.",
							NULL, &oauth_event_retention_s, 30 * 86400, 60, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("oauth.sweep_batch",
							"Most connections one sweep round queues.",
							NULL, &oauth_sweep_batch, 1000, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("oauth.decrypt_cache_size",
							"Decrypted tokens each session keeps, by row, to skip repeated decryption; 0 turns it off.",
							"A cached token is served only while the stored ciphertext is byte for byte the one it came from.",
							&oauth_decrypt_cache_size, 4096, 0, 1048576,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("oauth.require_workspace",
							 "Sessions must bind a workspace (oauth.bind_workspace) before they read or report tokens.",
							 "Set it per role, as a superuser: ALTER ROLE app SET oauth.require_workspace = on.",
							 &oauth_require_workspace, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	/* a postmaster setting can only be defined while preloading */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("oauth.database",
								   "Database the oauth_tokens background worker connects to.",
								   NULL, &oauth_database, "postgres",
								   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	oauth_identity_define_gucs();
	MarkGUCPrefixReserved("oauth");

	if (!process_shared_preload_libraries_in_progress)
		return;

	warn_if_parameters_logged();
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(ERROR, (errmsg("could not initialize libcurl")));
	oauth_shmem_request();
	oauth_stats_shmem_init();
	/* pg_upgrade's servers (-b) must not have a worker holding a database */
	if (!IsBinaryUpgrade)
		oauth_register_worker();
}
