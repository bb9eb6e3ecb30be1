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

/*
 * Redaction: no run of REDACT_WINDOW bytes of any form of any secret a call
 * sent survives in provider text.  8 bytes: shorter runs of a random secret
 * say little about it (a 40-character secret keeps 32 unknown characters),
 * while shorter windows would start cutting ordinary words out of messages.
 * Forms shorter than REDACT_MIN_FORM bytes are not secrets worth the noise.
 */
#define REDACT_WINDOW 8
#define REDACT_MIN_FORM 4

typedef struct Redactor
{
	List	   *forms;			/* of char *: every form of every secret */
	uint64	   *windows;		/* hash set of their REDACT_WINDOW-byte windows */
	uint32		mask;			/* its size - 1 */
	int			nwindows;		/* -1: forms changed, build them again */
} Redactor;

extern Redactor *redactor_new(void);
extern void redactor_add_secret(Redactor *r, const char *secret);
extern char *redact(char *s, Redactor *r);
extern char *provider_text(const char *s, int max, Redactor *r);
extern void redactor_wipe(Redactor *r);

#endif
