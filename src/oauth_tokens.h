/*
 * oauth_tokens.h — settings and entry points shared across modules.
 */
#ifndef OAUTH_TOKENS_H
#define OAUTH_TOKENS_H

#include "postgres.h"

#include "compat.h"			/* every module gets the version layer */

/* GUCs (src/oauth_tokens.c) */
extern char *oauth_database;
extern int	oauth_sweep_interval_ms;
extern int	oauth_max_concurrent_refreshes;
extern int	oauth_http_timeout_ms;
extern int	oauth_answer_timeout_ms;
extern int	oauth_min_validity_s;
extern char *oauth_ca_file;
extern bool oauth_allow_http;
extern bool oauth_allow_private_addresses;
extern char *oauth_http_proxy;
extern int	oauth_event_retention_s;
extern int	oauth_sweep_batch;

/* worker.c */
extern void oauth_register_worker(void);
PGDLLEXPORT void oauth_worker_main(Datum arg);

#endif
