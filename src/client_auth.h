/*
 * client_auth.h — client authentication beyond shared secrets: signed
 * assertions and TLS client certificates (src/client_auth.c).
 */
#ifndef OAUTH_CLIENT_AUTH_H
#define OAUTH_CLIENT_AUTH_H

#include "postgres.h"

#include "answer.h"
#include "provider.h"

extern bool client_auth_is_known(const char *method);
extern void client_auth_open(ProviderConf *conf);
extern List *client_auth_fields(ProviderConf *conf, TokenRequest *req);
extern void client_auth_redact(ProviderConf *conf, Redactor *r);
extern void client_auth_wipe(ProviderConf *conf);

#endif
