/*
 * fuzz_answer.c — libFuzzer target for the reading of providers' answers
 * (src/answer.c), in the order src/provider.c applies it: the body is
 * checked for UTF-8 and depth, read as JSON or as a form, and each field
 * goes through the token, kept-text and number rules, clip(), and the
 * redaction of provider text (src/answer.c's Redactor) with a few fixed
 * secrets and one taken from the input itself (its first 32 bytes), so the
 * secret's forms (URL-encoded, JSON-escaped) meet text that holds them.
 *
 * The input is the response body.  It is copied into a buffer of exactly
 * its length plus the NUL a StringInfo keeps, so a read past the body is
 * an AddressSanitizer report.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "answer.h"
#include "fuzz.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static Redactor *
secrets(const char *body)
{
	Redactor   *r = redactor_new();

	redactor_add_secret(r, "client-secret-0123456789");
	redactor_add_secret(r, "rt.0/+=\"<>\u00e9\x01");
	redactor_add_secret(r, pnstrdup(body, 32));
	return r;
}

static void
read_fields(List *fields, Redactor *r)
{
	ListCell   *lc;
	int64		n;

	foreach(lc, fields)
	{
		Field	   *f = lfirst(lc);

		(void) valid_token_text(f);
		(void) valid_kept_text(f, OAUTH_MAX_KEPT);
		(void) parse_int_field(f, &n);
		if (f->is_string)
		{
			(void) redact(clip(f->value, 120), r);
			(void) provider_text(f->value, 120, r);
		}
	}
	(void) find_field(fields, "access_token");
	(void) find_field(fields, "error");
	(void) find_field(fields, "expires_in");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sigjmp_buf	jmp;
	char	   *body;

	if (size > 1024 * 1024)
		return 0;
	body = malloc(size + 1);
	memcpy(body, data, size);
	body[size] = '\0';
	fuzz_error_jmp = &jmp;
	if (sigsetjmp(jmp, 0) == 0)
	{
		List	   *fields = NIL;
		int			len = (int) size;
		Redactor   *r = secrets(body);

		if (pg_verify_mbstr(PG_UTF8, body, len, true) && !json_too_deep(body, len))
		{
			if (parse_json_fields(body, len, &fields))
				read_fields(fields, r);
			fields = NIL;
			if (parse_form_fields(body, len, &fields))
				read_fields(fields, r);
		}
		/* raw provider text (messages) is redacted too */
		(void) redact(clip(body, 180), r);
		(void) provider_text(body, 180, r);
		redactor_wipe(r);
	}
	fuzz_error_jmp = NULL;
	fuzz_reset();
	free(body);
	return 0;
}
