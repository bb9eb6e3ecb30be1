/*
 * identity.h — may this server talk to providers? (src/identity.c)
 */
#ifndef OAUTH_IDENTITY_H
#define OAUTH_IDENTITY_H

#include "postgres.h"

/* oauth.provider_traffic: off stops every request to every provider */
extern bool oauth_provider_traffic;

extern void oauth_identity_define_gucs(void);

/*
 * True when a request may be sent to a provider from this database now;
 * otherwise false, with *reason (never NULL then) saying why in one
 * sentence.  Needs a transaction.  Reads oauth.refresh_home and probes two
 * indexes each time (no cache a restore could leave stale).
 */
extern bool oauth_traffic_allowed(const char **reason);

/* ereport(ERROR) with OA006 and the hint that fits, unless allowed. */
extern void oauth_require_traffic(void);

#endif
