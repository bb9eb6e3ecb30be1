/*
 * fuzz_urls.c — libFuzzer target for the URL template rules and the URL
 * filler (src/urls.c): check_url_template as register_provider calls it,
 * then, for a template it accepts, substitute_placeholders with metadata.
 *
 * Input: the URL template on the first line, then "name=value" lines, the
 * connection's metadata.  Each value is stored in a buffer of exactly its
 * length with no NUL after it, as a jsonb string is, so a read past a value
 * is an AddressSanitizer report.  findJsonbValueFromContainer below stands
 * in for the jsonb lookup: the object is this list of strings.
 */
#include "postgres.h"

#include "utils/jsonb.h"

#include "fuzz.h"
#include "urls.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_KEYS 16

static int	nkeys;
static char *keys[MAX_KEYS];
static char *values[MAX_KEYS];	/* not NUL-terminated */
static int	value_lens[MAX_KEYS];

JsonbValue *
findJsonbValueFromContainer(JsonbContainer *container, uint32 flags, JsonbValue *key)
{
	for (int i = 0; i < nkeys; i++)
		if ((int) strlen(keys[i]) == key->val.string.len &&
			memcmp(keys[i], key->val.string.val, key->val.string.len) == 0)
		{
			JsonbValue *v = palloc(sizeof(JsonbValue));

			v->type = jbvString;
			v->val.string.val = values[i];
			v->val.string.len = value_lens[i];
			return v;
		}
	return NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sigjmp_buf	jmp;
	char	   *text;
	char	   *line;
	char	   *save = NULL;
	char	   *url;
	List	   *allowed = NIL;
	struct
	{
		int32		vl_len_;
		JsonbContainer root;
	}			metadata;

	if (size > 16384)
		return 0;
	text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	url = strtok_r(text, "\n", &save);
	nkeys = 0;
	while ((line = strtok_r(NULL, "\n", &save)) != NULL && nkeys < MAX_KEYS)
	{
		char	   *eq = strchr(line, '=');

		if (eq == NULL)
			continue;
		keys[nkeys] = strndup(line, eq - line);
		value_lens[nkeys] = (int) strlen(eq + 1);
		values[nkeys] = malloc(value_lens[nkeys] ? value_lens[nkeys] : 1);
		memcpy(values[nkeys], eq + 1, value_lens[nkeys]);
		nkeys++;
	}
	metadata.vl_len_ = 0;
	metadata.root.header = JB_FOBJECT | nkeys;

	fuzz_error_jmp = &jmp;
	if (url != NULL && sigsetjmp(jmp, 0) == 0)
	{
		allowed = lappend(allowed, pstrdup("*.example.com"));
		allowed = lappend(allowed, pstrdup("login.example.org"));
		(void) url_host_templated(url);
		check_url_template("token_url", url, allowed);
		(void) substitute_placeholders("p", url, (Jsonb *) &metadata, allowed);
	}
	fuzz_error_jmp = NULL;
	fuzz_reset();
	for (int i = 0; i < nkeys; i++)
	{
		free(keys[i]);
		free(values[i]);
	}
	free(text);
	return 0;
}
