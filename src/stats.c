/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Operator counters by provider: oauth.provider_stats(), oauth.stats_reset().
 *
 * Every call to a provider's endpoints (the worker's refreshes, and the
 * code exchanges, client-credentials grants and revocations that sessions
 * make) is counted under its provider: attempts, successes, transient and
 * permanent failures, and the provider's latency in a histogram whose
 * buckets grow by a factor of sqrt(2), from which p50 and p99 are read (the
 * bucket's upper bound: an estimate within that factor, never below the
 * true value).  Since the server started or the last oauth.stats_reset().
 *
 * Locking: one LWLock guards the slot directory (which slot belongs to which
 * provider, and the reset time); counters are atomics, added to under the
 * shared lock, so a reset (exclusive) never interleaves with an addition.
 * Slots are never reused for another provider until a reset; when all are
 * taken, further providers are counted under "(other)".
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "errors.h"
#include "stats.h"

PG_FUNCTION_INFO_V1(oauth_provider_counters);
PG_FUNCTION_INFO_V1(oauth_stats_reset);

#define STATS_SLOTS 128
#define LAT_BUCKETS 48			/* sqrt(2) steps from 1 ms: beyond 16 h */
#define OTHER_NAME "(other)"

typedef struct ProviderSlot
{
	char		name[NAMEDATALEN];
	pg_atomic_uint64 attempts;
	pg_atomic_uint64 successes;
	pg_atomic_uint64 transient;
	pg_atomic_uint64 permanent;
	pg_atomic_uint64 latency[LAT_BUCKETS];
} ProviderSlot;

typedef struct StatsShared
{
	LWLock	   *lock;
	int			nslots;			/* slots in use */
	TimestampTz since;			/* start or last reset */
	ProviderSlot slots[STATS_SLOTS];
} StatsShared;

static StatsShared *stats = NULL;
static shmem_request_hook_type prev_request_hook = NULL;
static shmem_startup_hook_type prev_startup_hook = NULL;

static void
stats_request(void)
{
	if (prev_request_hook)
		prev_request_hook();
	RequestAddinShmemSpace(sizeof(StatsShared));
	RequestNamedLWLockTranche("oauth_tokens_stats", 1);
}

static void
clear_slot(ProviderSlot *s)
{
	pg_atomic_write_u64(&s->attempts, 0);
	pg_atomic_write_u64(&s->successes, 0);
	pg_atomic_write_u64(&s->transient, 0);
	pg_atomic_write_u64(&s->permanent, 0);
	for (int b = 0; b < LAT_BUCKETS; b++)
		pg_atomic_write_u64(&s->latency[b], 0);
}

static void
stats_startup(void)
{
	bool		found;

	if (prev_startup_hook)
		prev_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats = ShmemInitStruct("oauth_tokens stats", sizeof(StatsShared), &found);
	if (!found)
	{
		stats->lock = &(GetNamedLWLockTranche("oauth_tokens_stats"))->lock;
		stats->nslots = 0;
		stats->since = GetCurrentTimestamp();
		for (int i = 0; i < STATS_SLOTS; i++)
		{
			ProviderSlot *s = &stats->slots[i];

			s->name[0] = '\0';
			pg_atomic_init_u64(&s->attempts, 0);
			pg_atomic_init_u64(&s->successes, 0);
			pg_atomic_init_u64(&s->transient, 0);
			pg_atomic_init_u64(&s->permanent, 0);
			for (int b = 0; b < LAT_BUCKETS; b++)
				pg_atomic_init_u64(&s->latency[b], 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

void
oauth_stats_shmem_init(void)
{
	prev_request_hook = shmem_request_hook;
	shmem_request_hook = stats_request;
	prev_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_startup;
}

/* The bucket of a latency: floor(2 * log2(1 + ms)), capped. */
static int
latency_bucket(int64 us)
{
	double		ms = us > 0 ? (double) us / 1000.0 : 0.0;
	int			b = (int) floor(2.0 * log2(1.0 + ms));

	return Min(Max(b, 0), LAT_BUCKETS - 1);
}

/* The upper bound of bucket b, in milliseconds. */
static double
bucket_bound_ms(int b)
{
	return pow(2.0, (b + 1) / 2.0) - 1.0;
}

/* Find provider's slot, taking a free one if it has none; under the shared lock. */
static ProviderSlot *
find_slot(const char *provider)
{
	int			n;

	for (;;)
	{
		n = stats->nslots;
		for (int i = 0; i < n; i++)
			if (strcmp(stats->slots[i].name, provider) == 0)
				return &stats->slots[i];

		/* not there: take one under the exclusive lock, then look again */
		LWLockRelease(stats->lock);
		LWLockAcquire(stats->lock, LW_EXCLUSIVE);
		if (stats->nslots == n)
		{
			const char *name = n < STATS_SLOTS - 1 ? provider : OTHER_NAME;
			bool		have = false;

			for (int i = 0; i < n; i++)
				if (strcmp(stats->slots[i].name, name) == 0)
					have = true;
			if (!have)
			{
				clear_slot(&stats->slots[n]);
				strlcpy(stats->slots[n].name, name, NAMEDATALEN);
				stats->nslots = n + 1;
			}
			if (n >= STATS_SLOTS - 1)
				provider = OTHER_NAME;
		}
		LWLockRelease(stats->lock);
		LWLockAcquire(stats->lock, LW_SHARED);
	}
}

void
oauth_stats_call(const char *provider, RefreshOutcome klass,
				 TimestampTz started, TimestampTz answered)
{
	ProviderSlot *s;

	if (stats == NULL || provider == NULL)
		return;
	LWLockAcquire(stats->lock, LW_SHARED);
	s = find_slot(provider);
	pg_atomic_fetch_add_u64(&s->attempts, 1);
	switch (klass)
	{
		case RO_REFRESHED:
		case RO_NOT_NEEDED:	/* answered with tokens, superseded meanwhile */
			pg_atomic_fetch_add_u64(&s->successes, 1);
			break;
		case RO_TRANSIENT:
			pg_atomic_fetch_add_u64(&s->transient, 1);
			break;
		case RO_REAUTH:
		case RO_PROVIDER:
			pg_atomic_fetch_add_u64(&s->permanent, 1);
			break;
		default:
			break;
	}
	if (started != 0 && answered >= started)
		pg_atomic_fetch_add_u64(&s->latency[latency_bucket(answered - started)], 1);
	LWLockRelease(stats->lock);
}

static void
require_stats(void)
{
	if (stats == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OAUTH_UNAVAILABLE),
				 errmsg("oauth_tokens must be loaded via shared_preload_libraries")));
}

/* The latency below which a fraction q of the counted calls fall (ms). */
static Datum
percentile(const uint64 *hist, uint64 total, double q, bool *isnull)
{
	uint64		want;
	uint64		seen = 0;

	*isnull = total == 0;
	if (total == 0)
		return (Datum) 0;
	want = (uint64) ceil(q * (double) total);
	for (int b = 0; b < LAT_BUCKETS; b++)
	{
		seen += hist[b];
		if (seen >= want)
			return Float8GetDatum(bucket_bound_ms(b));
	}
	return Float8GetDatum(bucket_bound_ms(LAT_BUCKETS - 1));
}

/*
 * oauth._provider_counters(): one row per provider counted since the start
 * or the last reset.  Internal; oauth.provider_stats() adds the connections.
 */
Datum
oauth_provider_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz since;

	require_stats();
	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(stats->lock, LW_SHARED);
	since = stats->since;
	for (int i = 0; i < stats->nslots; i++)
	{
		ProviderSlot *s = &stats->slots[i];
		uint64		hist[LAT_BUCKETS];
		uint64		total = 0;
		Datum		values[8];
		bool		nulls[8] = {0};

		for (int b = 0; b < LAT_BUCKETS; b++)
		{
			hist[b] = pg_atomic_read_u64(&s->latency[b]);
			total += hist[b];
		}
		values[0] = CStringGetTextDatum(s->name);
		values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&s->attempts));
		values[2] = Int64GetDatum((int64) pg_atomic_read_u64(&s->successes));
		values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&s->transient));
		values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&s->permanent));
		values[5] = percentile(hist, total, 0.50, &nulls[5]);
		values[6] = percentile(hist, total, 0.99, &nulls[6]);
		values[7] = TimestampTzGetDatum(since);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(stats->lock);
	return (Datum) 0;
}

/*
 * oauth.stats_reset(): zero the counters of oauth.provider_stats() and of
 * oauth.stats() (except in_flight, which is a gauge).
 */
Datum
oauth_stats_reset(PG_FUNCTION_ARGS)
{
	require_stats();
	LWLockAcquire(stats->lock, LW_EXCLUSIVE);
	for (int i = 0; i < stats->nslots; i++)
	{
		clear_slot(&stats->slots[i]);
		stats->slots[i].name[0] = '\0';
	}
	stats->nslots = 0;
	stats->since = GetCurrentTimestamp();
	LWLockRelease(stats->lock);
	if (oauth_shmem_available())
		for (int i = 0; i < ST_NUM; i++)
			if (i != ST_INFLIGHT)
				pg_atomic_write_u64(&oauth_shared->stats[i], 0);
	PG_RETURN_VOID();
}
