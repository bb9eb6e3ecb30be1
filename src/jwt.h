/*
 * jwt.h — JWS compact serialisation of client assertions (src/jwt.c).
 */
#ifndef OAUTH_JWT_H
#define OAUTH_JWT_H

#include "postgres.h"

#include "datatype/timestamp.h"

extern char *jwt_b64url(const void *data, int len);
extern const char *jwt_key_algorithm(const char *key_pem);
extern char *jwt_sign(const char *alg, const char *kid, const char *claims_json,
					  const char *key, int keylen);
extern bool jwt_key_matches_certificate(const char *key_pem, const char *cert_pem,
										TimestampTz *not_after);

#endif
