/*-------------------------------------------------------------------------
 *
 * backend_stubs.c
 *	  The few backend functions src/answer.c and src/urls.c need, for the
 *	  libFuzzer targets (fuzz/README in the top README's Testing section).
 *
 * The targets link the extension's own answer.c and urls.c unchanged, with
 * PostgreSQL's frontend libpgcommon (the JSON parser, StringInfo, the
 * encoding tables) and libpgport.  What only a backend has is here, kept
 * small:
 *
 *	- palloc and friends: each chunk its own malloc(), so AddressSanitizer
 *	  sees the exact bounds (a backend's AllocSet would hide an overrun
 *	  inside its block); all freed at the end of each input (fuzz_reset);
 *	- ereport(ERROR): the message is formatted (so a bad %s argument is
 *	  read, as the server would), then siglongjmp to the target's entry,
 *	  as a backend's error would leave the function; anything below ERROR
 *	  returns;
 *	- lappend: a List as pg_list.h lays it out;
 *	- the database encoding is UTF8; pg_verify_mbstr and pg_mbcliplen
 *	  are mbutils.c's, reduced to that encoding;
 *	- SQL-callable wrappers' helpers (text conversions, detoasting) abort:
 *	  the targets never call the SQL entry points.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <setjmp.h>

#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"

#include "fuzz.h"

sigjmp_buf *fuzz_error_jmp = NULL;

/* ---- memory: one malloc per chunk, all freed by fuzz_reset() ---- */

typedef struct Chunk
{
	struct Chunk *next;
	size_t		size;
	max_align_t data[];			/* the caller's bytes */
} Chunk;

static Chunk *chunks = NULL;

static void *
chunk_alloc(size_t size, bool zero)
{
	Chunk	   *c = malloc(sizeof(Chunk) + size);

	if (c == NULL)
		abort();
	c->next = chunks;
	c->size = size;
	chunks = c;
	if (zero)
		memset(c->data, 0, size);
	return c->data;
}

void
fuzz_reset(void)
{
	while (chunks)
	{
		Chunk	   *c = chunks;

		chunks = c->next;
		free(c);
	}
}

void *
palloc(Size size)
{
	return chunk_alloc(size, false);
}

void *
palloc0(Size size)
{
	return chunk_alloc(size, true);
}

void *
palloc_extended(Size size, int flags)
{
	return chunk_alloc(size, (flags & MCXT_ALLOC_ZERO) != 0);
}

void *
repalloc(void *pointer, Size size)
{
	Chunk	   *c = (Chunk *) ((char *) pointer - offsetof(Chunk, data));
	void	   *n = chunk_alloc(size, false);

	memcpy(n, pointer, Min(size, c->size));
	return n;					/* the old chunk goes at fuzz_reset() */
}

void
pfree(void *pointer)
{
	/* kept until fuzz_reset(): the list owns it */
}

char *
pstrdup(const char *in)
{
	size_t		len = strlen(in);
	char	   *out = palloc(len + 1);

	memcpy(out, in, len + 1);
	return out;
}

char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = palloc(len + 1);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

char *
psprintf(const char *fmt,...)
{
	va_list		args;
	int			n;
	char	   *out;

	va_start(args, fmt);
	n = vsnprintf(NULL, 0, fmt, args);
	va_end(args);
	out = palloc(n + 1);
	va_start(args, fmt);
	vsnprintf(out, n + 1, fmt, args);
	va_end(args);
	return out;
}

size_t
pvsnprintf(char *buf, size_t len, const char *fmt, va_list args)
{
	int			n = vsnprintf(buf, len, fmt, args);

	return n < 0 ? 0 : (size_t) n;
}

/* ---- errors ---- */

static int	error_level;

bool
errstart(int elevel, const char *domain)
{
	error_level = elevel;
	return true;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

/* format the text as the server would, then drop it */
static int
format_and_drop(const char *fmt, va_list args)
{
	char		buf[1024];

	vsnprintf(buf, sizeof(buf), fmt, args);
	return 0;
}

#define FORMATTER(name) \
int \
name(const char *fmt,...) \
{ \
	va_list		args; \
	va_start(args, fmt); \
	format_and_drop(fmt, args); \
	va_end(args); \
	return 0; \
}
FORMATTER(errmsg)
FORMATTER(errmsg_internal)
FORMATTER(errdetail)
FORMATTER(errhint)

int
errcode(int sqlerrcode)
{
	return 0;
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	if (error_level >= ERROR)
	{
		if (fuzz_error_jmp == NULL)
			abort();
		siglongjmp(*fuzz_error_jmp, 1);
	}
}

/* ---- lists ---- */

List *
lappend(List *list, void *datum)
{
	if (list == NIL)
	{
		list = palloc(offsetof(List, initial_elements) + 8 * sizeof(ListCell));
		list->type = T_List;
		list->length = 0;
		list->max_length = 8;
		list->elements = list->initial_elements;
	}
	else if (list->length == list->max_length)
	{
		ListCell   *cells = palloc(2 * list->max_length * sizeof(ListCell));

		memcpy(cells, list->elements, list->length * sizeof(ListCell));
		list->elements = cells;
		list->max_length *= 2;
	}
	list->elements[list->length++].ptr_value = datum;
	return list;
}

/* ---- encoding: a UTF8 database ---- */

int
GetDatabaseEncoding(void)
{
	return PG_UTF8;
}

bool
pg_verify_mbstr(int encoding, const char *mbstr, int len, bool noError)
{
	if (pg_encoding_verifymbstr(encoding, mbstr, len) == len)
		return true;
	if (!noError)
		abort();
	return false;
}

/* mbutils.c's pg_encoding_mbcliplen, for a multibyte encoding */
int
pg_mbcliplen(const char *mbstr, int len, int limit)
{
	int			clen = 0;
	int			l;

	while (len > 0 && *mbstr)
	{
		l = pg_encoding_mblen(PG_UTF8, mbstr);
		if ((clen + l) > limit)
			break;
		clen += l;
		if (clen == limit)
			break;
		len -= l;
		mbstr += l;
	}
	return clen;
}

/* ---- never called by the targets (SQL-callable wrappers only) ---- */

char *
text_to_cstring(const text *t)
{
	abort();
}

text *
cstring_to_text(const char *s)
{
	abort();
}

struct varlena *
pg_detoast_datum(struct varlena *datum)
{
	abort();
}

struct varlena *
pg_detoast_datum_packed(struct varlena *datum)
{
	abort();
}

List *
text_array_to_list(Datum arr)
{
	abort();
}
