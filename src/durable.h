/*
 * durable.h — the answer store: oauth.pending_answers; the schema version (src/durable.c).
 */
#ifndef OAUTH_DURABLE_H
#define OAUTH_DURABLE_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "provider.h"

/* The schema of the worker's database (durable.c). */
typedef enum SchemaVersion
{
	SCHEMA_UNKNOWN,				/* no extension (yet) */
	SCHEMA_1_0,					/* before ALTER EXTENSION UPDATE */
	SCHEMA_1_1					/* this version's: oauth.pending_answers */
} SchemaVersion;

/*
 * An answer to record in oauth.pending_answers: the caller's (finish.c)
 * description of it; pending_id is set when it is recorded.
 */
typedef struct AnswerRecord
{
	pg_uuid_t	connection_id;
	const char *idstr;			/* the connection id as text */
	uint64		generation;
	int64		seen_version;
	const TokenAnswer *answer;	/* with tokens */
	TimestampTz received_at;
	int64		pending_id;		/* out: its row; 0: not recorded */
} AnswerRecord;

/* An answer read back from oauth.pending_answers (durable.c). */
typedef struct RecordedAnswer
{
	int64		pending_id;
	pg_uuid_t	connection_id;
	uint64		generation;
	int64		seen_version;
	bytea	   *ciphertext;
	TimestampTz received_at;
	char	   *workspace_id;	/* NULL: the connection is gone */
	char	   *provider;
	bool		client_credentials;
} RecordedAnswer;

extern SchemaVersion worker_schema;
extern bool schema_check(void);
extern void answers_record(AnswerRecord *recs, int n);
extern void answers_forget(int64 pending_id);
extern void answers_forget_set(const int64 *pending_ids, int n);
extern List *answers_recorded(void);
extern void answers_open(const RecordedAnswer *r, const char *idstr, TokenAnswer *a);

#endif
