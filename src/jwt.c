/*-------------------------------------------------------------------------
 *
 * jwt.c
 *	  JWS compact serialisation (RFC 7515) of client assertions.
 *
 * A signed assertion is base64url(header) "." base64url(claims) "."
 * base64url(signature), signed with RS256 (RSASSA-PKCS1-v1_5, SHA-256) or
 * ES256 (ECDSA P-256, SHA-256; the signature as r || s, 64 bytes, not DER)
 * by a PEM private key through OpenSSL's EVP interface, or with HS256
 * (HMAC-SHA-256 keyed by the client secret) through PostgreSQL's
 * common/hmac.h.  The caller builds the claims; nothing here logs or
 * reports key material: errors name what failed, never what was read.
 * OpenSSL's own error queue is cleared after every use, so no later
 * report can carry it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/base64.h"
#include "common/hmac.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "errors.h"
#include "jwt.h"

/* Base64url without padding (RFC 7515 2), palloc'd. */
char *
jwt_b64url(const void *data, int len)
{
	int			elen = pg_b64_enc_len(len);
	char	   *out = palloc(elen + 1);
	int			n = oauth_b64_encode(data, len, out, elen);
	int			j = 0;

	if (n < 0)
		elog(ERROR, "oauth_tokens: base64 encoding failed");
	for (int i = 0; i < n; i++)
	{
		char		c = out[i];

		if (c == '=' || c == '\n')
			continue;
		out[j++] = c == '+' ? '-' : c == '/' ? '_' : c;
	}
	out[j] = '\0';
	return out;
}

/* A PEM passphrase callback that has none: an encrypted key never prompts. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

/* The private key in key_pem, or NULL; OpenSSL's error queue is cleared. */
static EVP_PKEY *
read_key(const char *key_pem)
{
	BIO		   *bio = BIO_new_mem_buf(key_pem, -1);
	EVP_PKEY   *pkey = NULL;

	if (bio != NULL)
	{
		pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
		BIO_free(bio);
	}
	ERR_clear_error();
	return pkey;
}

static const char *
pkey_algorithm(EVP_PKEY *pkey)
{
	if (EVP_PKEY_base_id(pkey) == EVP_PKEY_RSA && EVP_PKEY_bits(pkey) >= 2048)
		return "RS256";
	if (EVP_PKEY_base_id(pkey) == EVP_PKEY_EC)
	{
		char		group[64];
		size_t		glen = 0;

		if (EVP_PKEY_get_utf8_string_param(pkey, "group", group, sizeof(group), &glen) == 1 &&
			(strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0))
			return "ES256";
	}
	return NULL;
}

/*
 * The JWS algorithm a PEM private key signs with: "RS256" (RSA, 2048 bits
 * or more) or "ES256" (EC P-256); NULL for anything else or no key.
 */
const char *
jwt_key_algorithm(const char *key_pem)
{
	EVP_PKEY   *pkey = read_key(key_pem);
	const char *alg;

	if (pkey == NULL)
		return NULL;
	alg = pkey_algorithm(pkey);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return alg;
}

/*
 * Does the certificate in cert_pem hold the public half of key_pem?  Sets
 * *not_after to the certificate's expiry.  False for an unreadable either.
 */
bool
jwt_key_matches_certificate(const char *key_pem, const char *cert_pem, TimestampTz *not_after)
{
	EVP_PKEY   *pkey = read_key(key_pem);
	BIO		   *bio = BIO_new_mem_buf(cert_pem, -1);
	X509	   *x = bio ? PEM_read_bio_X509(bio, NULL, no_passphrase, NULL) : NULL;
	bool		ok = false;

	if (pkey && x && X509_check_private_key(x, pkey) == 1)
	{
		struct tm	tm;

		ok = true;
		*not_after = 0;
		if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
			*not_after = time_t_to_timestamptz(timegm(&tm));
	}
	X509_free(x);
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return ok;
}

/* The signature of input under pkey, per alg, as JWS wants it; palloc'd. */
static uint8 *
sign_pkey(EVP_PKEY *pkey, const char *alg, const char *input, int *siglen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	size_t		len = 0;
	uint8	   *der = NULL;
	uint8	   *out = NULL;
	bool		ok;

	ok = md != NULL &&
		EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
		EVP_DigestSign(md, NULL, &len, (const uint8 *) input, strlen(input)) == 1;
	if (ok)
	{
		der = palloc(len);
		ok = EVP_DigestSign(md, der, &len, (const uint8 *) input, strlen(input)) == 1;
	}
	EVP_MD_CTX_free(md);
	if (ok && strcmp(alg, "ES256") == 0)
	{
		/* DER ECDSA-Sig-Value to the fixed-size r || s of RFC 7518 3.4 */
		const uint8 *p = der;
		ECDSA_SIG  *sig = d2i_ECDSA_SIG(NULL, &p, (long) len);

		ok = sig != NULL;
		if (ok)
		{
			out = palloc(64);
			ok = BN_bn2binpad(ECDSA_SIG_get0_r(sig), out, 32) == 32 &&
				BN_bn2binpad(ECDSA_SIG_get0_s(sig), out + 32, 32) == 32;
			len = 64;
		}
		ECDSA_SIG_free(sig);
	}
	else
		out = der;
	ERR_clear_error();
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not sign a client assertion with %s", alg)));
	*siglen = (int) len;
	return out;
}

/*
 * The compact JWS of claims_json, signed per alg: key is the PEM private
 * key (RS256, ES256) or the shared secret of keylen bytes (HS256).  The
 * header names kid when given.  palloc'd; the caller wipes it (it is a
 * credential until it expires).
 */
char *
jwt_sign(const char *alg, const char *kid, const char *claims_json, const char *key, int keylen)
{
	StringInfoData header;
	StringInfoData input;
	uint8	   *sig;
	int			siglen;
	char	   *sig64;
	char	   *out;

	initStringInfo(&header);
	appendStringInfoString(&header, "{\"alg\":");
	escape_json(&header, alg);
	appendStringInfoString(&header, ",\"typ\":\"JWT\"");
	if (kid != NULL)
	{
		appendStringInfoString(&header, ",\"kid\":");
		escape_json(&header, kid);
	}
	appendStringInfoChar(&header, '}');

	initStringInfo(&input);
	appendStringInfoString(&input, jwt_b64url(header.data, header.len));
	appendStringInfoChar(&input, '.');
	appendStringInfoString(&input, jwt_b64url(claims_json, strlen(claims_json)));

	if (strcmp(alg, "HS256") == 0)
	{
		pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);

		sig = palloc(32);
		siglen = 32;
		if (ctx == NULL ||
			pg_hmac_init(ctx, (const uint8 *) key, keylen) < 0 ||
			pg_hmac_update(ctx, (const uint8 *) input.data, input.len) < 0 ||
			pg_hmac_final(ctx, sig, 32) < 0)
		{
			pg_hmac_free(ctx);
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("could not sign a client assertion with HS256")));
		}
		pg_hmac_free(ctx);
	}
	else
	{
		EVP_PKEY   *pkey = read_key(key);
		const char *have = pkey ? pkey_algorithm(pkey) : NULL;

		if (have == NULL || strcmp(have, alg) != 0)
		{
			EVP_PKEY_free(pkey);
			ereport(ERROR,
					(errcode(ERRCODE_OAUTH_PROVIDER_CONFIG),
					 errmsg("the stored private key cannot sign %s", alg),
					 errhint("Store an RSA (2048 bits or more) or EC P-256 key with oauth.set_client_auth().")));
		}
		PG_TRY();
		{
			sig = sign_pkey(pkey, alg, input.data, &siglen);
		}
		PG_FINALLY();
		{
			EVP_PKEY_free(pkey);
		}
		PG_END_TRY();
	}
	sig64 = jwt_b64url(sig, siglen);
	explicit_bzero(sig, siglen);
	out = psprintf("%s.%s", input.data, sig64);
	explicit_bzero(sig64, strlen(sig64));
	return out;
}
