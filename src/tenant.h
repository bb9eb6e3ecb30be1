/*
 * tenant.h — one tenant's rejection is that tenant's (src/tenant.c).
 */
#ifndef OAUTH_TENANT_H
#define OAUTH_TENANT_H

#include "provider.h"

extern bool tenant_failure(TokenAnswer *a, bool templated_url);

#endif
