/*
 * tenant_answers.h — one tenant's rejection is that tenant's (src/tenant_answers.c).
 */
#ifndef OAUTH_TENANT_ANSWERS_H
#define OAUTH_TENANT_ANSWERS_H

#include "provider.h"

extern bool tenant_failure(TokenAnswer *a, bool templated_url);

#endif
