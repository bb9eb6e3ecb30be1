/*
 * store.h — reading and writing connection rows and events (src/store.c).
 */
#ifndef OAUTH_STORE_H
#define OAUTH_STORE_H

#include "postgres.h"

#include "utils/timestamp.h"
#include "utils/uuid.h"

/* What valid_token needs of a connection row (fast path). */
typedef struct ConnSnapshot
{
	bool		found;
	char	   *workspace_id;
	char	   *provider;
	bytea	   *access_ct;		/* NULL once revoked */
	bool		has_expires;
	TimestampTz expires_at;
	bool		has_refresh_after;
	TimestampTz refresh_after;
	bool		reauth_required;
	bool		revoked;
	bool		has_refreshed_at;
	TimestampTz refreshed_at;	/* when the current token was obtained */
	bool		has_next_attempt;
	TimestampTz next_attempt_at;
	char	   *last_error;
	int64		version;
} ConnSnapshot;

extern void oauth_read_connection(const pg_uuid_t *id, ConnSnapshot *snap);
extern char *oauth_uuid_str(const pg_uuid_t *id);
extern bool oauth_access_still_valid(const pg_uuid_t *id);

#endif
