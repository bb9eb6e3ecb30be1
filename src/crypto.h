/*
 * crypto.h — key ring and row-bound encryption of secrets (src/crypto.c).
 */
#ifndef OAUTH_CRYPTO_H
#define OAUTH_CRYPTO_H

#include "postgres.h"

extern char *oauth_key_file;
extern int	oauth_decrypt_cache_size;

extern bytea *oauth_seal(const char *plain, int len, const char *context);
extern char *oauth_open(bytea *ciphertext, const char *context);
extern char *oauth_ciphertext_key_id(bytea *ciphertext);
extern const char *oauth_active_key_id(void);
extern void oauth_keyring_stale(void);

/* Context strings: the row a ciphertext belongs to. */
extern char *oauth_conn_context(const char *conn_id, const char *field);
extern char *oauth_provider_context(const char *provider);

#endif
