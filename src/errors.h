/*
 * errors.h — the contract's SQLSTATEs (SPEC section 6).
 */
#ifndef OAUTH_ERRORS_H
#define OAUTH_ERRORS_H

#include "utils/elog.h"

#define ERRCODE_OAUTH_NOT_FOUND			MAKE_SQLSTATE('O','A','0','0','1')
#define ERRCODE_OAUTH_REAUTH_REQUIRED	MAKE_SQLSTATE('O','A','0','0','2')
#define ERRCODE_OAUTH_NO_VALID_TOKEN	MAKE_SQLSTATE('O','A','0','0','3')
#define ERRCODE_OAUTH_PROVIDER_CONFIG	MAKE_SQLSTATE('O','A','0','0','4')
#define ERRCODE_OAUTH_REVOKED			MAKE_SQLSTATE('O','A','0','0','5')
#define ERRCODE_OAUTH_UNAVAILABLE		MAKE_SQLSTATE('O','A','0','0','6')

#endif
