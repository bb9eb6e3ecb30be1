/*
 * tenant.h — the workspace a transaction is bound to (src/tenant.c).
 */
#ifndef OAUTH_TENANT_H
#define OAUTH_TENANT_H

#include "postgres.h"

/* longest workspace_id (and provider_account_id) the doors accept, in bytes */
#define OAUTH_WORKSPACE_MAX 256

/* oauth.require_workspace (src/oauth_tokens.c defines it) */
extern bool oauth_require_workspace;

extern bool oauth_workspace_admitted(const char *workspace, size_t len);

#endif
