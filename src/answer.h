/*
 * answer.h — reading providers' answers and the hostile-answer rules
 * (src/answer.c).
 */
#ifndef OAUTH_ANSWER_H
#define OAUTH_ANSWER_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "provider.h"

#define JSON_MAX_DEPTH 32
#define OAUTH_MAX_TOKEN 65536
#define OAUTH_MAX_SCOPE 8192
#define OAUTH_MAX_KEPT 1024
#define OAUTH_MAX_EXPIRES_IN 315360000.0	/* 10 years */

/* A field of an answer (or of a request body). */
typedef struct Field
{
	char	   *name;
	char	   *value;
	int			len;			/* bytes of value; a NUL before it is refused */
	bool		is_string;
} Field;

extern bool json_too_deep(const char *body, int len);
extern bool valid_db_text(const char *s, int len);
extern bool valid_token_text(const Field *f);
extern bool valid_kept_text(const Field *f, int max);
extern bool parse_json_fields(const char *body, int len, List **fields);
extern bool parse_form_fields(const char *body, int len, List **fields);
extern Field *find_field(List *fields, const char *name);
extern bool parse_int_field(Field *f, int64 *out);
extern char *clip(const char *s, int max);
extern List *sent_secrets(ProviderConf *conf, HttpCall *call);
extern char *redact(char *s, List *secrets);

#endif
