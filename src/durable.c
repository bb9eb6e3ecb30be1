/*-------------------------------------------------------------------------
 *
 * durable.c
 *	  The answer store: a provider's answer with tokens is made durable in
 *	  oauth.pending_answers before it is applied, and deleted when applied;
 *	  the schema version the worker serves.
 *
 * Rules:
 *	- Record first.  An answer with tokens is inserted into
 *	  oauth.pending_answers (the whole answer sealed with the connection's
 *	  binding, context connection/<id>/pending) in a short transaction of its
 *	  own that takes no lock on the connection: nothing a session holds can
 *	  delay it.  Then finish.c applies it and deletes the row in the same
 *	  transaction, so the answer is either applied or still recorded.
 *	  Whatever stops the apply (a locked row, a serialization failure, the
 *	  key file, a constraint or trigger, an ERROR that ends the worker,
 *	  SIGTERM, a crash) leaves the row; the worker applies it again later,
 *	  and at start-up it reads every row left (answers_recorded) and applies
 *	  it before any new refresh of that connection starts (finish.c).
 *	  The window that remains is answer received -> record committed (the
 *	  "durable_us" of the refreshed event; README, "The commit window").
 *	- This file calls nothing above it: it reads the jobs it is given and
 *	  hands back what it read.
 *
 * On a 1.0 schema (the new library before ALTER EXTENSION UPDATE) answers
 * are kept in memory only, as 1.0 kept them; the worker notices the update
 * within a second (schema_check).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "crypto.h"
#include "http.h"
#include "oauth_tokens.h"
#include "provider.h"
#include "store.h"
#include "batch.h"
#include "durable.h"

static SPIPlanPtr plan_record = NULL;
static SPIPlanPtr plan_record_set = NULL;
static SPIPlanPtr plan_forget = NULL;
static SPIPlanPtr plan_forget_set = NULL;

/*
 * The schema the worker's database has.  A 1.0 schema, between the restart
 * with the new library and ALTER EXTENSION UPDATE, is served as 1.0 served
 * it: answers are kept in memory only, stored with 1.0's statement.
 */
SchemaVersion worker_schema = SCHEMA_UNKNOWN;

/*
 * Look at the schema again; true when it has just become this version's.
 * Its own transaction; outside any batch.
 */
bool
schema_check(void)
{
	Oid			nsp;
	SchemaVersion was = worker_schema;

	StartTransactionCommand();
	nsp = get_namespace_oid("oauth", true);
	worker_schema = !OidIsValid(nsp) ? SCHEMA_UNKNOWN :
		OidIsValid(get_relname_relid("pending_answers", nsp)) ? SCHEMA_1_1 : SCHEMA_1_0;
	CommitTransactionCommand();
	return worker_schema == SCHEMA_1_1 && was != SCHEMA_1_1;
}

static void
prepare_answer_plans(void)
{
	if (plan_forget)
		return;
	plan_record = prepare_saved(
		"INSERT INTO oauth.pending_answers "
		"  (connection_id, generation, seen_version, answer_ciphertext, received_at) "
		"VALUES ($1::pg_catalog.uuid, $2::pg_catalog.int8, $3::pg_catalog.int8, "
		"        $4::pg_catalog.bytea, $5::pg_catalog.timestamptz) "
		"RETURNING id",
		5, (Oid[]) {UUIDOID, INT8OID, INT8OID, BYTEAOID, TIMESTAMPTZOID});
	plan_forget = prepare_saved(
		"DELETE FROM oauth.pending_answers WHERE id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
		1, (Oid[]) {INT8OID});
	/* a batch of answers in one statement; ids mapped back by connection */
	plan_record_set = prepare_saved(
		"INSERT INTO oauth.pending_answers "
		"  (connection_id, generation, seen_version, answer_ciphertext, received_at) "
		"SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.uuid[]), "
		"                         pg_catalog.unnest($2::pg_catalog.int8[]), "
		"                         pg_catalog.unnest($3::pg_catalog.int8[]), "
		"                         pg_catalog.unnest($4::pg_catalog.bytea[]), "
		"                         pg_catalog.unnest($5::pg_catalog.timestamptz[])) "
		"RETURNING id, connection_id",
		5, (Oid[]) {UUIDARRAYOID, INT8ARRAYOID, INT8ARRAYOID, BYTEAARRAYOID, TIMESTAMPTZARRAYOID});
	plan_forget_set = prepare_saved(
		"DELETE FROM oauth.pending_answers "
		" WHERE id OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.int8[])",
		1, (Oid[]) {INT8ARRAYOID});
}

/* ---- the answer as one sealed value ---------------------------------------- */

static void
add_str(StringInfo b, const char *key, const char *val)
{
	appendStringInfo(b, "%s\"%s\": ", b->len > 1 ? ", " : "", key);
	if (val)
		escape_json(b, val);
	else
		appendStringInfoString(b, "null");
}

/* The answer's fields as JSON text (palloc'd; holds tokens: wipe it). */
static char *
answer_to_json(const TokenAnswer *a)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfoChar(&b, '{');
	add_str(&b, "access_token", a->access_token);
	add_str(&b, "refresh_token", a->refresh_token);
	add_str(&b, "scope", a->scope);
	appendStringInfo(&b, ", \"expires_in\": %s",
					 a->has_expires_in ? psprintf(INT64_FORMAT, a->expires_in) : "null");
	appendStringInfo(&b, ", \"rt_expires_in\": %s",
					 a->has_rt_expires_in ? psprintf(INT64_FORMAT, a->rt_expires_in) : "null");
	appendStringInfo(&b, ", \"http_status\": %ld, \"metadata\": %s}",
					 a->http_status, a->metadata_json ? a->metadata_json : "{}");
	return b.data;
}

static JsonbValue *
field(Jsonb *j, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&j->root, JB_FOBJECT, &k);
}

static char *
field_str(Jsonb *j, const char *key)
{
	JsonbValue *v = field(j, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static bool
field_int(Jsonb *j, const char *key, int64 *out)
{
	JsonbValue *v = field(j, key);

	if (v == NULL || v->type != jbvNumeric)
		return false;
	*out = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
	return true;
}

/* Fill a from the JSON text of answer_to_json. */
static void
answer_from_json(char *json, TokenAnswer *a)
{
	Jsonb	   *j = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
	JsonbValue *m;
	int64		status = 200;

	memset(a, 0, sizeof(*a));
	a->klass = RO_REFRESHED;
	a->access_token = field_str(j, "access_token");
	a->refresh_token = field_str(j, "refresh_token");
	a->scope = field_str(j, "scope");
	a->has_expires_in = field_int(j, "expires_in", &a->expires_in);
	a->has_rt_expires_in = field_int(j, "rt_expires_in", &a->rt_expires_in);
	(void) field_int(j, "http_status", &status);
	a->http_status = (long) status;
	m = field(j, "metadata");
	if (m && m->type == jbvBinary)
		a->metadata_json = JsonbToCString(NULL, m->val.binary.data, m->val.binary.len);
	if (a->access_token == NULL)
		elog(ERROR, "a recorded answer has no access token");
	explicit_bzero(VARDATA(j), VARSIZE(j) - VARHDRSZ);
}

/* ---- record first ---------------------------------------------------------- */

/*
 * The columns of r's row in oauth.pending_answers: connection, generation,
 * version, the sealed answer, when it was received.
 */
static void
record_values(const AnswerRecord *r, Datum *v)
{
	char	   *json = answer_to_json(r->answer);

	v[0] = UUIDPGetDatum(&r->connection_id);
	v[1] = Int64GetDatum((int64) r->generation);
	v[2] = Int64GetDatum(r->seen_version);
	v[3] = PointerGetDatum(oauth_seal(json, strlen(json),
									  oauth_conn_context(r->idstr, "pending")));
	explicit_bzero(json, strlen(json));
	v[4] = TimestampTzGetDatum(r->received_at);
}

/* Insert one answer (arg: its AnswerRecord); in a subtransaction. */
static void
record_one(void *arg)
{
	AnswerRecord *r = (AnswerRecord *) arg;
	Datum		v[5];
	bool		isnull;

	record_values(r, v);
	if (exec_plan(plan_record, v, NULL, false, 0) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not record an answer");
	r->pending_id = DatumGetInt64(spi_column(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											 "id", &isnull));
}

/* The answers to record, all of them in one statement. */
typedef struct RecordSet
{
	AnswerRecord *recs;
	int			n;
} RecordSet;

/*
 * Insert every answer of the set in one statement; in a subtransaction.
 * The new ids come back with their connection.
 */
static void
record_set(void *arg)
{
	RecordSet  *rs = (RecordSet *) arg;
	Datum	   *cols[5];
	Datum		v[5];
	Oid			types[5] = {UUIDOID, INT8OID, INT8OID, BYTEAOID, TIMESTAMPTZOID};

	for (int c = 0; c < 5; c++)
		cols[c] = palloc(sizeof(Datum) * rs->n);
	for (int i = 0; i < rs->n; i++)
	{
		Datum		row[5];

		record_values(&rs->recs[i], row);
		for (int c = 0; c < 5; c++)
			cols[c][i] = row[c];
	}
	for (int c = 0; c < 5; c++)
		v[c] = datum_array(cols[c], NULL, rs->n, types[c]);
	if (exec_plan(plan_record_set, v, NULL, false, 0) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != (uint64) rs->n)
		elog(ERROR, "could not record answers");
	for (uint64 k = 0; k < SPI_processed; k++)
	{
		HeapTuple	t = SPI_tuptable->vals[k];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(spi_column(t, d, "id", &isnull));
		pg_uuid_t  *conn = DatumGetUUIDP(spi_column(t, d, "connection_id", &isnull));

		for (int i = 0; i < rs->n; i++)
			if (rs->recs[i].pending_id == 0 &&
				memcmp(&rs->recs[i].connection_id, conn, sizeof(pg_uuid_t)) == 0)
			{
				rs->recs[i].pending_id = id;
				break;
			}
	}
}

/*
 * Make answers durable: one short transaction, one statement, no lock on
 * any connection.  If the statement fails (the key file unreadable, say),
 * each answer is recorded alone, and one that cannot be keeps pending_id 0
 * (the caller keeps it in memory and records it on the next try).  Outside
 * any batch.  On a 1.0 schema nothing is recorded.
 */
void
answers_record(AnswerRecord *recs, int n)
{
	RecordSet	rs = {recs, n};
	char	   *err;

	if (n == 0 || worker_schema < SCHEMA_1_1)
		return;
	begin_work("oauth_tokens: recording answers");
	prepare_answer_plans();
	if (!try_isolated(record_set, &rs, CurrentMemoryContext, &err, NULL))
	{
		for (int i = 0; i < n; i++)
		{
			recs[i].pending_id = 0;
			if (!try_isolated(record_one, &recs[i], CurrentMemoryContext, &err, NULL))
			{
				recs[i].pending_id = 0;
				ereport(WARNING,
						(errmsg("oauth_tokens: could not record an answer, keeping it in memory: %s", err)));
			}
		}
	}
	end_work();
}

/*
 * Answers were applied: delete their records (pending_ids[0..n-1]; 0: none)
 * in one statement.  Inside the transaction that applied them.
 */
void
answers_forget_set(const int64 *pending_ids, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	int			k = 0;
	Datum		v;

	for (int i = 0; i < n; i++)
		if (pending_ids[i] != 0)
			ids[k++] = Int64GetDatum(pending_ids[i]);
	if (k == 0)
		return;
	prepare_answer_plans();
	v = datum_array(ids, NULL, k, INT8OID);
	if (exec_plan(plan_forget_set, &v, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete recorded answers");
}

/*
 * An answer was applied (or superseded): delete its record (0: none).
 * Inside the subtransaction that applied it, so both happen or neither.
 */
void
answers_forget(int64 pending_id)
{
	Datum		v;

	if (pending_id == 0)
		return;
	prepare_answer_plans();
	v = Int64GetDatum(pending_id);
	if (exec_plan(plan_forget, &v, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete a recorded answer");
}

/*
 * The answers left in oauth.pending_answers (a previous run received them
 * and did not apply them), oldest first, as RecordedAnswer (palloc'd in the
 * caller's context).  Its own transaction; outside any batch.
 */
List *
answers_recorded(void)
{
	List	   *out = NIL;
	MemoryContext caller = CurrentMemoryContext;

	if (worker_schema < SCHEMA_1_1)
		return NIL;
	begin_work("oauth_tokens: reading recorded answers");
	if (SPI_execute("SELECT pa.id, pa.connection_id, pa.generation, pa.seen_version, "
					"       pa.answer_ciphertext, pa.received_at, c.workspace_id, c.provider, "
					"       c.grant_type OPERATOR(pg_catalog.=) 'client_credentials'::pg_catalog.text "
					"         AS client_credentials "
					"  FROM oauth.pending_answers pa "
					"  LEFT JOIN oauth.connections c ON c.id OPERATOR(pg_catalog.=) pa.connection_id "
					" ORDER BY pa.id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read recorded answers");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(caller);
		RecordedAnswer *r = palloc0(sizeof(RecordedAnswer));

		r->pending_id = DatumGetInt64(spi_column(t, d, "id", &isnull));
		r->connection_id = *DatumGetUUIDP(spi_column(t, d, "connection_id", &isnull));
		r->generation = (uint64) DatumGetInt64(spi_column(t, d, "generation", &isnull));
		r->seen_version = DatumGetInt64(spi_column(t, d, "seen_version", &isnull));
		r->ciphertext = DatumGetByteaPCopy(spi_column(t, d, "answer_ciphertext", &isnull));
		r->received_at = DatumGetTimestampTz(spi_column(t, d, "received_at", &isnull));
		r->workspace_id = spi_column_text(t, d, "workspace_id");
		r->provider = spi_column_text(t, d, "provider");
		r->client_credentials = DatumGetBool(spi_column(t, d, "client_credentials", &isnull)) && !isnull;
		out = lappend(out, r);
		MemoryContextSwitchTo(old);
	}
	end_work();
	return out;
}

/* Decrypt a recorded answer of connection idstr into a (palloc'd). */
void
answers_open(const RecordedAnswer *r, const char *idstr, TokenAnswer *a)
{
	char	   *json = oauth_open(r->ciphertext, oauth_conn_context(idstr, "pending"));

	answer_from_json(json, a);
	explicit_bzero(json, strlen(json));
}
