/*
 * urls.h — the one filler of provider URL templates (src/urls.c).
 */
#ifndef OAUTH_URLS_H
#define OAUTH_URLS_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* Longest placeholder value (a DNS name's limit). */
#define OAUTH_PLACEHOLDER_MAX 253

extern char *substitute_placeholders(const char *provider, const char *url,
									 Jsonb *metadata, List *allowed_hosts);
extern bool url_host_templated(const char *url);
extern void check_url_template(const char *what, const char *url,
							   List *allowed_hosts);

#endif
