/*-------------------------------------------------------------------------
 *
 * crypto.c
 *	  The key ring and the encryption of secrets at rest.
 *
 * Keys live in one file (oauth.key_file, default oauth_tokens.keys in the
 * data directory), one key a line: "key_id:base64 of 32 random bytes".  The
 * first line is the active key; later lines only decrypt.  The file is read
 * by C code only, so no key ever passes through SQL text, a table or a GUC
 * value.  Each process caches the ring and re-reads it when the file's
 * identity (inode, size, mtime) changes, so editing the file takes effect
 * without a reload.
 *
 * A secret is sealed with AES-256-CBC from pgcrypto (called directly through
 * its C entry point, no SQL) under a key derived from the master key, and
 * authenticated with HMAC-SHA256 (PostgreSQL's common/hmac) over a context
 * string naming the row and field it belongs to, e.g.
 * "connection/<uuid>/refresh".  A ciphertext copied into another row fails
 * its MAC there and is never decrypted.  Layout:
 *
 *	  0x01 | len(key_id) | key_id | iv[16] | aes-cbc ciphertext | mac[32]
 *
 * Derived keys: enc = HMAC(master, "oauth_tokens/enc"),
 * mac = HMAC(master, "oauth_tokens/mac").  No key derivation runs per call,
 * so a seal or open costs microseconds (see bench/).
 *
 * Each process keeps the last access tokens it opened, keyed by context, with
 * the exact ciphertext they came from (oauth.decrypt_cache_size slots, wiped when
 * dropped, dropped whenever the key ring is re-read).  A ciphertext equal
 * byte for byte to one already verified for the same context needs no MAC
 * or AES again; anything else takes the full path.  This is what keeps
 * valid_token near the primary-key floor.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base64.h"
#include "common/hmac.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "common/hashfn.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "crypto.h"
#include "errors.h"

#define KEY_LEN 32
#define IV_LEN 16
#define MAC_LEN 32
#define MAX_KEY_ID 64
#define FORMAT_V1 0x01

typedef struct OAuthKey
{
	char		id[MAX_KEY_ID + 1];
	uint8		enc[KEY_LEN];
	uint8		mac[KEY_LEN];
} OAuthKey;

char	   *oauth_key_file = NULL;

static OAuthKey *ring = NULL;
static int	ring_len = 0;
static int	ring_cap = 0;		/* allocated slots of ring, all wiped on discard */
static char *ring_path = NULL;
static struct stat ring_stat;
static TimestampTz ring_checked_at = 0;	/* last look at the file */
static char *ring_checked_setting = NULL;	/* oauth.key_file at that look */

/*
 * The open cache (see the header): direct-mapped, oauth.decrypt_cache_size
 * slots, a slot chosen by the hash of the context.  Fixed cost on a miss,
 * no eviction policy to run.
 */
#define CONTEXT_MAX 64
typedef struct OpenCacheSlot
{
	char		context[CONTEXT_MAX];	/* "" when empty */
	bytea	   *ciphertext;
	char	   *plain;
} OpenCacheSlot;
int			oauth_decrypt_cache_size = 4096;
static OpenCacheSlot *open_cache = NULL;
static int	open_cache_len = 0;
static MemoryContext open_cache_cxt = NULL;

static PGFunction pgcrypto_encrypt_iv = NULL;
static PGFunction pgcrypto_decrypt_iv = NULL;

/*
 * pgcrypto's entry points, both or neither: a load that fails half-way
 * leaves both NULL and raises, so no caller can reach a NULL pointer.
 */
static void
load_pgcrypto(void)
{
	PGFunction	enc;
	PGFunction	dec;

	if (pgcrypto_encrypt_iv != NULL && pgcrypto_decrypt_iv != NULL)
		return;
	enc = (PGFunction) load_external_function("$libdir/pgcrypto", "pg_encrypt_iv", false, NULL);
	dec = (PGFunction) load_external_function("$libdir/pgcrypto", "pg_decrypt_iv", false, NULL);
	if (enc == NULL || dec == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("could not find pgcrypto's pg_encrypt_iv and pg_decrypt_iv"),
				 errhint("Install pgcrypto (CREATE EXTENSION oauth_tokens CASCADE creates it).")));
	pgcrypto_encrypt_iv = enc;
	pgcrypto_decrypt_iv = dec;
}

/* The key file's path: the setting, or the default in the data directory. */
static char *
key_file_path(void)
{
	if (oauth_key_file == NULL || oauth_key_file[0] == '\0')
		return psprintf("%s/oauth_tokens.keys", DataDir);
	if (is_absolute_path(oauth_key_file))
		return pstrdup(oauth_key_file);
	return psprintf("%s/%s", DataDir, oauth_key_file);
}

/* HMAC-SHA256 of data under key into out[32]; errors never show the key. */
static void
hmac_sha256(const uint8 *key, size_t keylen, const uint8 *data, size_t len,
			const uint8 *data2, size_t len2, uint8 *out)
{
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);

	if (ctx == NULL ||
		pg_hmac_init(ctx, key, keylen) < 0 ||
		pg_hmac_update(ctx, data, len) < 0 ||
		(data2 && pg_hmac_update(ctx, data2, len2) < 0) ||
		pg_hmac_final(ctx, out, MAC_LEN) < 0)
	{
		if (ctx)
			pg_hmac_free(ctx);
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
						errmsg("could not compute HMAC")));
	}
	pg_hmac_free(ctx);
}

/* Forget every cached plaintext, wiping it first. */
static void
open_cache_clear(void)
{
	if (open_cache == NULL)
		return;
	for (int i = 0; i < open_cache_len; i++)
		if (open_cache[i].plain)
			explicit_bzero(open_cache[i].plain, strlen(open_cache[i].plain));
	MemoryContextReset(open_cache_cxt);
	open_cache = NULL;
	open_cache_len = 0;
}

/* The slot for a context, or NULL when caching is off or it does not fit. */
static OpenCacheSlot *
open_cache_slot(const char *context)
{
	size_t		len = strlen(context);

	if (oauth_decrypt_cache_size <= 0)
	{
		open_cache_clear();
		return NULL;
	}
	/* access tokens only: refresh tokens and client secrets are never kept */
	if (len >= CONTEXT_MAX || len < 7 || strcmp(context + len - 7, "/access") != 0)
		return NULL;
	if (open_cache_len != oauth_decrypt_cache_size)
	{
		open_cache_clear();
		if (open_cache_cxt == NULL)
			open_cache_cxt = AllocSetContextCreate(TopMemoryContext, "oauth_tokens open cache",
												   ALLOCSET_DEFAULT_SIZES);
		open_cache = MemoryContextAllocZero(open_cache_cxt,
											sizeof(OpenCacheSlot) * oauth_decrypt_cache_size);
		open_cache_len = oauth_decrypt_cache_size;
	}
	return &open_cache[hash_bytes((const unsigned char *) context, len) % open_cache_len];
}

/*
 * The key file's permissions, by PostgreSQL's rule for ssl_key_file
 * (be-secure-common.c): a regular file, owned by the server's user with no
 * group or other access (0600), or owned by root with at most group read
 * (0640, for keys managed by root and shared through a group).
 */
static void
check_key_file_mode(const char *path, const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("key file \"%s\" is not a regular file", path),
				 errhint("oauth.key_file must name a regular file.")));
	if (st->st_uid != geteuid() && st->st_uid != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("key file \"%s\" must be owned by the database user or root", path),
				 errhint("Change the owner of the file named by oauth.key_file, as for ssl_key_file.")));
	if ((st->st_uid == geteuid() && (st->st_mode & (S_IRWXG | S_IRWXO))) ||
		(st->st_uid == 0 && (st->st_mode & (S_IWGRP | S_IXGRP | S_IRWXO))))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("key file \"%s\" has group or world access", path),
				 errdetail("oauth.key_file must have permissions u=rw (0600) or less if owned by the database user, or permissions u=rw,g=r (0640) or less if owned by root."),
				 errhint("Run chmod 600 on the file, as for ssl_key_file.")));
}

/* Largest key file read: thousands of keys, far more than any ring needs. */
#define KEY_FILE_MAX (256 * 1024)

/*
 * Read the whole key file with read(2) into a palloc'd buffer that the
 * caller wipes; no stdio buffer keeps a copy.  The mode is checked on the
 * open descriptor, so the file checked is the file read.
 */
static char *
read_key_file(const char *path, int *len)
{
	int			fd;
	struct stat st;
	char	   *buf;
	int			n = 0;

	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not read key file \"%s\": %m", path),
				 errhint("Check oauth.key_file and the file's owner and permissions.")));
	if (fstat(fd, &st) != 0)
	{
		int			save_errno = errno;

		CloseTransientFile(fd);
		errno = save_errno;
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not stat key file \"%s\": %m", path)));
	}
	PG_TRY();
	{
		check_key_file_mode(path, &st);
		if (st.st_size > KEY_FILE_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("key file \"%s\" is larger than %d bytes", path, KEY_FILE_MAX)));
	}
	PG_CATCH();
	{
		CloseTransientFile(fd);
		PG_RE_THROW();
	}
	PG_END_TRY();

	buf = MemoryContextAllocZero(TopMemoryContext, KEY_FILE_MAX + 1);
	for (;;)
	{
		ssize_t		r = read(fd, buf + n, KEY_FILE_MAX - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
		{
			int			save_errno = errno;

			explicit_bzero(buf, n);
			pfree(buf);
			CloseTransientFile(fd);
			errno = save_errno;
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("could not read key file \"%s\": %m", path)));
		}
		if (r == 0 || n + r >= KEY_FILE_MAX)
		{
			n += r;
			break;
		}
		n += r;
	}
	CloseTransientFile(fd);
	buf[n] = '\0';
	*len = n;
	return buf;
}

/*
 * Parse one key line (trimmed, NUL-terminated) into key; false if it is
 * malformed.  Wipes its decoded bytes whatever the outcome.
 */
static bool
parse_key_line(char *p, OAuthKey *key)
{
	char	   *colon = strchr(p, ':');
	uint8		raw[KEY_LEN + 8];
	int			idlen;
	int			rawlen;
	bool		ok;

	idlen = colon ? colon - p : 0;
	rawlen = colon ? pg_b64_dec_len(strlen(colon + 1)) : 0;
	ok = colon != NULL && idlen >= 1 && idlen <= MAX_KEY_ID &&
		strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == idlen &&
		rawlen <= (int) sizeof(raw) &&
		oauth_b64_decode(colon + 1, strlen(colon + 1), raw, sizeof(raw)) == KEY_LEN;
	if (ok)
	{
		memcpy(key->id, p, idlen);
		key->id[idlen] = '\0';
		hmac_sha256(raw, KEY_LEN, (const uint8 *) "oauth_tokens/enc", 16, NULL, 0, key->enc);
		hmac_sha256(raw, KEY_LEN, (const uint8 *) "oauth_tokens/mac", 16, NULL, 0, key->mac);
	}
	explicit_bzero(raw, sizeof(raw));
	return ok;
}

/* Wipe and free a ring. */
static void
free_ring(OAuthKey *keys, int cap)
{
	if (keys == NULL)
		return;
	explicit_bzero(keys, cap * sizeof(OAuthKey));
	pfree(keys);
}

/*
 * Parse the key file into a fresh ring.  Every failure names the setting and
 * the line, never the line's content; the file's bytes and every key parsed
 * so far are wiped on every path, error or not.
 */
static void
load_ring(const char *path, struct stat *st)
{
	char	   *volatile buf = NULL;
	int			len = 0;
	OAuthKey   *volatile keys = NULL;
	volatile int cap = 4;
	int			nkeys = 0;

	PG_TRY();
	{
		char	   *line;
		char	   *next;
		int			lineno = 0;

		buf = read_key_file(path, &len);
		keys = MemoryContextAllocZero(TopMemoryContext, cap * sizeof(OAuthKey));
		for (line = buf; line != NULL && line < buf + len; line = next)
		{
			char	   *p = line;
			char	   *end;

			next = strchr(line, '\n');
			if (next)
				*next++ = '\0';
			lineno++;
			while (*p == ' ' || *p == '\t')
				p++;
			end = p + strlen(p);
			while (end > p && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
				*--end = '\0';
			if (*p == '\0' || *p == '#')
				continue;
			if (nkeys == cap)
			{
				OAuthKey   *bigger = MemoryContextAllocZero(TopMemoryContext,
															2 * cap * sizeof(OAuthKey));

				memcpy(bigger, keys, cap * sizeof(OAuthKey));
				free_ring(keys, cap);
				keys = bigger;
				cap *= 2;
			}
			if (!parse_key_line(p, &keys[nkeys]))
				ereport(ERROR,
						(errcode(ERRCODE_CONFIG_FILE_ERROR),
						 errmsg("malformed key in key file \"%s\" line %d", path, lineno),
						 errdetail("Each line of oauth.key_file must be key_id:base64 of 32 random bytes."),
						 errhint("Create a key with: echo \"k1:$(openssl rand -base64 32)\" > oauth_tokens.keys")));
			for (int i = 0; i < nkeys; i++)
				if (strcmp(keys[i].id, keys[nkeys].id) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_CONFIG_FILE_ERROR),
							 errmsg("duplicate key id in key file \"%s\" line %d", path, lineno),
							 errhint("Each key in oauth.key_file needs its own id.")));
			nkeys++;
		}
		if (nkeys == 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("key file \"%s\" holds no key", path),
					 errhint("Create a key with: echo \"k1:$(openssl rand -base64 32)\" > oauth_tokens.keys")));
	}
	PG_CATCH();
	{
		if (buf)
		{
			explicit_bzero(buf, KEY_FILE_MAX + 1);
			pfree(buf);
		}
		free_ring(keys, cap);
		PG_RE_THROW();
	}
	PG_END_TRY();
	explicit_bzero(buf, KEY_FILE_MAX + 1);
	pfree(buf);

	if (ring)
		free_ring(ring, ring_cap);
	open_cache_clear();
	ring = keys;
	ring_len = nkeys;
	ring_cap = cap;
	ring_stat = *st;
	if (ring_path)
		pfree(ring_path);
	ring_path = MemoryContextStrdup(TopMemoryContext, path);
}

/*
 * Make sure the ring in this process matches the file.  A stat per call is
 * the whole cost when nothing changed.
 */
static void
ensure_ring(bool force)
{
	char	   *path;
	struct stat st;
	TimestampTz now = GetCurrentTimestamp();

	/*
	 * A stat() with its path walk costs about a tenth of a valid_token call:
	 * reads look at the file at most once a second.  Writes (seal, the
	 * active key, rotate_key) and a key id missing from the ring always look.
	 */
	if (!force && ring != NULL && ring_checked_setting != NULL &&
		now - ring_checked_at < USECS_PER_SEC && now >= ring_checked_at &&
		strcmp(ring_checked_setting, oauth_key_file ? oauth_key_file : "") == 0)
		return;

	path = key_file_path();

	if (stat(path, &st) != 0)
	{
		int			save_errno = errno;

		free_ring(ring, ring_cap);
		ring = NULL;
		ring_len = 0;
		ring_cap = 0;
		open_cache_clear();
		errno = save_errno;
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not read key file \"%s\": %m", path),
				 errhint("Set oauth.key_file, or create the file as the operating system user the server runs as (postgres on Debian): umask 077 && echo \"k1:$(openssl rand -base64 32)\" > \"%s\"",
						 path)));
	}
	if (ring == NULL || ring_path == NULL || strcmp(path, ring_path) != 0 ||
		st.st_ino != ring_stat.st_ino || st.st_dev != ring_stat.st_dev ||
		st.st_size != ring_stat.st_size ||
		st.st_mtim.tv_sec != ring_stat.st_mtim.tv_sec ||
		st.st_mtim.tv_nsec != ring_stat.st_mtim.tv_nsec ||
		st.st_ctim.tv_sec != ring_stat.st_ctim.tv_sec ||
		st.st_ctim.tv_nsec != ring_stat.st_ctim.tv_nsec ||
		st.st_mode != ring_stat.st_mode)
		load_ring(path, &st);
	pfree(path);
	ring_checked_at = now;
	if (ring_checked_setting)
		pfree(ring_checked_setting);
	ring_checked_setting = MemoryContextStrdup(TopMemoryContext,
											   oauth_key_file ? oauth_key_file : "");

	load_pgcrypto();
}

/* Make the next use of the key ring look at the file again. */
void
oauth_keyring_stale(void)
{
	ring_checked_at = 0;
}

const char *
oauth_active_key_id(void)
{
	ensure_ring(true);
	return ring[0].id;
}

static OAuthKey *
find_key(const char *id)
{
	for (int i = 0; i < ring_len; i++)
		if (strcmp(ring[i].id, id) == 0)
			return &ring[i];
	return NULL;
}

static bytea *
bytea_from(const void *data, int len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	if (len > 0)
		memcpy(VARDATA(b), data, len);
	return b;
}

/*
 * Encrypt plain[len] for the row named by context under the active key.
 * Returns a palloc'd bytea.
 */
bytea *
oauth_seal(const char *plain, int len, const char *context)
{
	OAuthKey   *key;
	uint8		iv[IV_LEN];
	bytea	   *ct;
	bytea	   *out;
	bytea	   *keyb;
	bytea	   *plainb;
	int			idlen;
	int			ctlen;
	int			total;
	uint8	   *p;

	ensure_ring(true);
	key = &ring[0];
	if (!pg_strong_random(iv, IV_LEN))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
						errmsg("could not generate random IV")));

	keyb = bytea_from(key->enc, KEY_LEN);
	plainb = bytea_from(plain, len);
	ct = DatumGetByteaPP(DirectFunctionCall4Coll(pgcrypto_encrypt_iv, InvalidOid,
												 PointerGetDatum(plainb),
												 PointerGetDatum(keyb),
												 PointerGetDatum(bytea_from(iv, IV_LEN)),
												 CStringGetTextDatum("aes-cbc/pad:pkcs")));
	explicit_bzero(VARDATA(keyb), KEY_LEN);
	explicit_bzero(VARDATA(plainb), len);

	idlen = strlen(key->id);
	ctlen = VARSIZE_ANY_EXHDR(ct);
	total = 2 + idlen + IV_LEN + ctlen + MAC_LEN;
	out = palloc(VARHDRSZ + total);
	SET_VARSIZE(out, VARHDRSZ + total);
	p = (uint8 *) VARDATA(out);
	p[0] = FORMAT_V1;
	p[1] = (uint8) idlen;
	memcpy(p + 2, key->id, idlen);
	memcpy(p + 2 + idlen, iv, IV_LEN);
	memcpy(p + 2 + idlen + IV_LEN, VARDATA_ANY(ct), ctlen);
	hmac_sha256(key->mac, KEY_LEN, (const uint8 *) context, strlen(context) + 1,
				p, total - MAC_LEN, p + total - MAC_LEN);
	return out;
}

/* Split a ciphertext's header; errors if it is not ours. */
static void
parse_header(bytea *ciphertext, uint8 **data, int *len, char *keyid)
{
	uint8	   *p = (uint8 *) VARDATA_ANY(ciphertext);
	int			n = VARSIZE_ANY_EXHDR(ciphertext);

	if (n < 2 || p[0] != FORMAT_V1 || p[1] < 1 || p[1] > MAX_KEY_ID ||
		n < 2 + p[1] + IV_LEN + 16 + MAC_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("stored secret is not an oauth_tokens ciphertext")));
	memcpy(keyid, p + 2, p[1]);
	keyid[p[1]] = '\0';
	*data = p;
	*len = n;
}

char *
oauth_ciphertext_key_id(bytea *ciphertext)
{
	uint8	   *p;
	int			n;
	char		keyid[MAX_KEY_ID + 1];

	parse_header(ciphertext, &p, &n, keyid);
	return pstrdup(keyid);
}

/* Remember a verified ciphertext and its plaintext in the context's slot. */
static void
open_cache_put(OpenCacheSlot *slot, const char *context, const uint8 *ct, int n,
			   const char *plain)
{
	MemoryContext old;

	if (slot == NULL || open_cache == NULL)
		return;
	if (slot->plain)
	{
		explicit_bzero(slot->plain, strlen(slot->plain));
		pfree(slot->plain);
		pfree(slot->ciphertext);
	}
	old = MemoryContextSwitchTo(open_cache_cxt);
	strlcpy(slot->context, context, CONTEXT_MAX);
	slot->ciphertext = palloc(VARHDRSZ + n);
	SET_VARSIZE(slot->ciphertext, VARHDRSZ + n);
	memcpy(VARDATA(slot->ciphertext), ct, n);
	slot->plain = pstrdup(plain);
	MemoryContextSwitchTo(old);
}

/*
 * Decrypt a ciphertext that must belong to the row named by context.
 * Returns a palloc'd NUL-terminated string.  Errors name no secret.
 */
char *
oauth_open(bytea *ciphertext, const char *context)
{
	uint8	   *p;
	int			n;
	char		keyid[MAX_KEY_ID + 1];
	OAuthKey   *key;
	OpenCacheSlot *slot;
	uint8		mac[MAC_LEN];
	uint8		diff = 0;
	int			idlen;
	bytea	   *keyb;
	bytea	   *plain;
	char	   *result;
	int			plen;

	ensure_ring(false);
	parse_header(ciphertext, &p, &n, keyid);

	/* the same ciphertext already verified for this row: no MAC, no AES */
	slot = open_cache_slot(context);
	if (slot && slot->plain && strcmp(slot->context, context) == 0 &&
		VARSIZE_ANY_EXHDR(slot->ciphertext) == n &&
		memcmp(VARDATA_ANY(slot->ciphertext), p, n) == 0)
		return pstrdup(slot->plain);

	key = find_key(keyid);
	if (key == NULL)
	{
		/* a key added since our last look at the file? */
		ensure_ring(true);
		key = find_key(keyid);
	}
	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("secret is encrypted under key \"%s\", which is not in the key ring", keyid),
				 errhint("Add the key back to oauth.key_file, then run oauth.rotate_key().")));
	hmac_sha256(key->mac, KEY_LEN, (const uint8 *) context, strlen(context) + 1,
				p, n - MAC_LEN, mac);
	for (int i = 0; i < MAC_LEN; i++)
		diff |= mac[i] ^ p[n - MAC_LEN + i];
	if (diff != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("stored secret does not belong to this row"),
				 errdetail("Its authentication tag does not match: the ciphertext was altered or copied from another row, or the key ring holds a different key under the id \"%s\".", keyid),
				 errhint("After a restore or on a copy, oauth.key_file must be the key ring of the source server.")));

	idlen = p[1];
	keyb = bytea_from(key->enc, KEY_LEN);
	plain = DatumGetByteaPP(DirectFunctionCall4Coll(pgcrypto_decrypt_iv, InvalidOid,
													PointerGetDatum(bytea_from(p + 2 + idlen + IV_LEN,
																			   n - MAC_LEN - 2 - idlen - IV_LEN)),
													PointerGetDatum(keyb),
													PointerGetDatum(bytea_from(p + 2 + idlen, IV_LEN)),
													CStringGetTextDatum("aes-cbc/pad:pkcs")));
	explicit_bzero(VARDATA(keyb), KEY_LEN);
	plen = VARSIZE_ANY_EXHDR(plain);
	result = palloc(plen + 1);
	memcpy(result, VARDATA_ANY(plain), plen);
	result[plen] = '\0';
	explicit_bzero(VARDATA_ANY(plain), plen);
	open_cache_put(slot, context, p, n, result);
	return result;
}

char *
oauth_conn_context(const char *conn_id, const char *field)
{
	return psprintf("connection/%s/%s", conn_id, field);
}

char *
oauth_provider_context(const char *provider)
{
	return psprintf("provider/%s/client_secret", provider);
}
