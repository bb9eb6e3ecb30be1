/*-------------------------------------------------------------------------
 *
 * client_auth.c
 *	  The client's authentication beyond a shared secret in the request:
 *	  signed client assertions and TLS client certificates.
 *
 * A provider's auth_method says how its requests (refresh, code exchange,
 * revocation) authenticate the client:
 *	  client_secret_post, client_secret_basic, none   src/provider.c
 *	  client_secret_jwt   an assertion signed with HS256, keyed by the
 *	                      client secret (OpenID Connect Core 9)
 *	  private_key_jwt     an assertion signed with the provider's private
 *	                      key, RS256 or ES256, with its key id (RFC 7523 2.2)
 *	  tls_client_auth     a client certificate in the TLS handshake (RFC 8705)
 * Assertions are sent as client_assertion_type = urn:ietf:params:oauth:
 * client-assertion-type:jwt-bearer and client_assertion, beside client_id;
 * their claims: iss = sub = client_id, aud = the provider's
 * client_assertion_audience or else the URL the request goes to, a jti of
 * 128 random bits, iat, and exp 60 seconds later.  A fresh assertion for
 * every request: a request rebuilt is signed again.
 *
 * Keys live in oauth.provider_credentials, one row per credential, the
 * private key sealed by src/crypto.c with the context
 * "provider/<name>/credential/<id>"; the certificate itself is public.
 * client_auth_open() reads and opens them with the provider's
 * configuration (SPI connected), client_auth_wipe() wipes the plaintext,
 * and client_auth_redact() lists every form of them (and of every
 * assertion built) for the redaction of provider text.  The key never
 * leaves this process except to OpenSSL (signing) and libcurl (TLS, as a
 * blob curl copies: src/http.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "client_auth.h"
#include "crypto.h"
#include "errors.h"
#include "jwt.h"

PG_FUNCTION_INFO_V1(oauth_check_credential);

#define ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define ASSERTION_LIFETIME_S 60

/* What client_auth_open read for one provider's requests. */
typedef struct ClientAuth
{
	char	   *key_pem;		/* the private key, plaintext; wiped */
	char	   *cert_pem;		/* tls_client_auth: the certificate */
	char	   *key_id;			/* private_key_jwt: the header's kid */
	char	   *algorithm;		/* RS256, ES256 (HS256: client_secret_jwt) */
	char	   *audience;		/* NULL: the URL the request goes to */
	List	   *assertions;		/* every assertion built; wiped */
} ClientAuth;

static bool
is_method(ProviderConf *conf, const char *m)
{
	return conf->auth_method != NULL && strcmp(conf->auth_method, m) == 0;
}

/* Is this one of the methods this file builds? */
bool
client_auth_is_known(const char *method)
{
	return strcmp(method, "client_secret_jwt") == 0 ||
		strcmp(method, "private_key_jwt") == 0 ||
		strcmp(method, "tls_client_auth") == 0;
}

/*
 * Read the provider's credential for its auth_method, and open its key.
 * SPI must be connected; everything lands in the caller's memory context.
 * Nothing to do for the shared-secret methods.
 */
void
client_auth_open(ProviderConf *conf)
{
	MemoryContext cxt = CurrentMemoryContext;
	const char *kind;
	Datum		args[2];
	Oid			argt[2] = {TEXTOID, TEXTOID};
	ClientAuth *ca;
	HeapTuple	t;
	TupleDesc	d;
	bool		isnull;
	Datum		ct;
	char	   *id;

	if (conf->client_auth != NULL || conf->auth_method == NULL ||
		!client_auth_is_known(conf->auth_method))
		return;
	kind = is_method(conf, "private_key_jwt") ? "private_key" :
		is_method(conf, "tls_client_auth") ? "client_certificate" : "";
	args[0] = CStringGetTextDatum(conf->name);
	args[1] = CStringGetTextDatum(kind);
	if (SPI_execute_with_args(
			"SELECT p.client_assertion_audience AS audience, c.id::text AS id, c.key_id, "
			"c.algorithm, c.certificate, c.key_ciphertext "
			"FROM oauth.providers p LEFT JOIN oauth.provider_credentials c "
			"ON c.provider = p.name AND c.kind = $2 AND c.status = 'current' "
			"WHERE p.name = $1",
			2, argt, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the client credentials of provider \"%s\"", conf->name);
	MemoryContextSwitchTo(cxt);
	if (SPI_processed == 0)
		return;
	t = SPI_tuptable->vals[0];
	d = SPI_tuptable->tupdesc;
	ca = palloc0(sizeof(ClientAuth));
	ca->audience = spi_column_text(t, d, "audience");
	ca->key_id = spi_column_text(t, d, "key_id");
	ca->algorithm = spi_column_text(t, d, "algorithm");
	ca->cert_pem = spi_column_text(t, d, "certificate");
	id = spi_column_text(t, d, "id");
	ct = spi_column(t, d, "key_ciphertext", &isnull);
	if (*kind != '\0' && (id == NULL || isnull))
		ereport(ERROR,
				(errcode(ERRCODE_OAUTH_PROVIDER_CONFIG),
				 errmsg("provider \"%s\" uses %s but has no %s", conf->name,
						conf->auth_method, strcmp(kind, "private_key") == 0 ?
						"private key" : "client certificate"),
				 errhint("Store one with oauth.set_client_auth().")));
	if (!isnull)
		ca->key_pem = oauth_open(DatumGetByteaPCopy(ct),
								 psprintf("provider/%s/credential/%s", conf->name, id));
	conf->client_auth = ca;
}

/* The claims of a new assertion for a request to url, as JSON. */
static char *
assertion_claims(ProviderConf *conf, const char *aud)
{
	uint8		rnd[16];
	StringInfoData c;
	int64		now = (int64) time(NULL);

	if (!pg_strong_random(rnd, sizeof(rnd)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random assertion id")));
	initStringInfo(&c);
	appendStringInfoString(&c, "{\"iss\":");
	escape_json(&c, conf->client_id);
	appendStringInfoString(&c, ",\"sub\":");
	escape_json(&c, conf->client_id);
	appendStringInfoString(&c, ",\"aud\":");
	escape_json(&c, aud);
	appendStringInfoString(&c, ",\"jti\":");
	escape_json(&c, jwt_b64url(rnd, sizeof(rnd)));
	appendStringInfo(&c, ",\"iat\":" INT64_FORMAT ",\"exp\":" INT64_FORMAT "}",
					 now, now + ASSERTION_LIFETIME_S);
	return c.data;
}

/*
 * The request fields (FormField) that authenticate the client by this
 * provider's method, for a request to req->url; for tls_client_auth, the
 * certificate and a copy of its key in req (wiped by wipe_token_request).
 * NIL for the shared-secret methods.  client_auth_open must have run.
 */
List *
client_auth_fields(ProviderConf *conf, TokenRequest *req)
{
	ClientAuth *ca = conf->client_auth;
	List	   *out = NIL;
	FormField  *f;

	if (conf->auth_method == NULL || !client_auth_is_known(conf->auth_method))
		return NIL;
	if (ca == NULL)
		elog(ERROR, "oauth_tokens: client credentials of provider \"%s\" were not read",
			 conf->name);
	f = palloc(sizeof(FormField));
	*f = (FormField) {"client_id", conf->client_id};
	out = lappend(out, f);
	if (is_method(conf, "tls_client_auth"))
	{
		req->tls_cert = ca->cert_pem;
		req->tls_key = pstrdup(ca->key_pem);
		return out;
	}
	{
		char	   *claims = assertion_claims(conf, ca->audience ? ca->audience : req->url);
		char	   *jwt;

		if (is_method(conf, "client_secret_jwt"))
		{
			if (conf->client_secret == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_OAUTH_PROVIDER_CONFIG),
						 errmsg("provider \"%s\" uses client_secret_jwt but has no client secret",
								conf->name)));
			jwt = jwt_sign("HS256", NULL, claims, conf->client_secret,
						   strlen(conf->client_secret));
		}
		else
			jwt = jwt_sign(ca->algorithm, ca->key_id, claims, ca->key_pem,
						   strlen(ca->key_pem));
		ca->assertions = lappend(ca->assertions, jwt);
		f = palloc(sizeof(FormField));
		*f = (FormField) {"client_assertion_type", ASSERTION_TYPE};
		out = lappend(out, f);
		f = palloc(sizeof(FormField));
		*f = (FormField) {"client_assertion", jwt};
		out = lappend(out, f);
	}
	return out;
}

/*
 * Every secret form of the client's credentials for the redaction of
 * provider text: the private key's PEM and its Base64 body (the lines
 * between the armour, joined), every assertion built and its signature.
 */
void
client_auth_redact(ProviderConf *conf, Redactor *r)
{
	ClientAuth *ca = conf->client_auth;
	ListCell   *lc;

	if (ca == NULL)
		return;
	if (ca->key_pem)
	{
		StringInfoData body;
		const char *p = ca->key_pem;

		redactor_add_secret(r, ca->key_pem);
		initStringInfo(&body);
		while (*p)
		{
			const char *eol = strchr(p, '\n');
			int			len = eol ? (int) (eol - p) : (int) strlen(p);

			if (len > 0 && *p != '-' && memchr(p, ':', len) == NULL)
			{
				appendBinaryStringInfo(&body, p, len);
				if (body.len > 0 && body.data[body.len - 1] == '\r')
					body.data[--body.len] = '\0';
				/* each line alone too: an echo may cut at a line break */
				{
					char	   *line = pnstrdup(p, len);

					redactor_add_secret(r, line);
					explicit_bzero(line, len);
				}
			}
			p += len;
			if (*p == '\n')
				p++;
		}
		redactor_add_secret(r, body.data);
		explicit_bzero(body.data, body.len);
	}
	foreach(lc, ca->assertions)
	{
		char	   *jwt = lfirst(lc);
		char	   *sig = strrchr(jwt, '.');

		redactor_add_secret(r, jwt);
		if (sig)
			redactor_add_secret(r, sig + 1);
	}
}

/* Wipe the plaintext key and the assertions. */
void
client_auth_wipe(ProviderConf *conf)
{
	ClientAuth *ca = conf->client_auth;
	ListCell   *lc;

	if (ca == NULL)
		return;
	if (ca->key_pem)
		explicit_bzero(ca->key_pem, strlen(ca->key_pem));
	foreach(lc, ca->assertions)
		explicit_bzero(lfirst(lc), strlen(lfirst(lc)));
}

/*
 * oauth._check_credential(private_key text, certificate text,
 *		OUT algorithm text, OUT not_after timestamptz)
 *	 Checks a credential before it is stored: the key is one this extension
 *	 signs with (RS256, ES256) and, with a certificate, the certificate
 *	 holds its public half.  The errors never show the material.
 *	 Internal; owner only (set_client_auth calls it).
 */
Datum
oauth_check_credential(PG_FUNCTION_ARGS)
{
	char	   *key;
	const char *alg;
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, true};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("private_key must not be NULL")));
	key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	alg = jwt_key_algorithm(key);
	if (alg == NULL)
	{
		explicit_bzero(key, strlen(key));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("private_key is not an unencrypted PEM private key of RSA (2048 bits or more) or EC P-256"),
				 errhint("Give the key in PEM (\"-----BEGIN PRIVATE KEY-----\"), without a passphrase.")));
	}
	values[0] = CStringGetTextDatum(alg);
	if (!PG_ARGISNULL(1))
	{
		TimestampTz not_after;

		if (!jwt_key_matches_certificate(key, text_to_cstring(PG_GETARG_TEXT_PP(1)), &not_after))
		{
			explicit_bzero(key, strlen(key));
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("client_certificate is not a PEM certificate of private_key's public key")));
		}
		values[1] = TimestampTzGetDatum(not_after);
		nulls[1] = not_after == 0;
	}
	explicit_bzero(key, strlen(key));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
