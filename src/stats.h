/*
 * stats.h — operator counters by provider (src/stats.c).
 */
#ifndef OAUTH_STATS_H
#define OAUTH_STATS_H

#include "postgres.h"

#include "shmem.h"
#include "utils/timestamp.h"

/* _PG_init, while preloading: ask for the counters' shared memory. */
extern void oauth_stats_shmem_init(void);

/*
 * Count one call to provider's token or revocation endpoint: its outcome
 * class (RO_REFRESHED: success; RO_TRANSIENT; RO_REAUTH or RO_PROVIDER:
 * permanent; anything else: an attempt only) and how long the provider took.
 * Any process; a no-op without preloading.
 */
extern void oauth_stats_call(const char *provider, RefreshOutcome klass,
							 TimestampTz started, TimestampTz answered);

#endif
