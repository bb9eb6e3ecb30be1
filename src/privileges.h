/*
 * privileges.h — running internal SQL as the extension's owner (src/privileges.c).
 */
#ifndef OAUTH_PRIVILEGES_H
#define OAUTH_PRIVILEGES_H

#include "postgres.h"

#include "fmgr.h"

typedef struct OwnerSwitch
{
	Oid			saved_user;
	int			saved_sec;
	int			saved_nestlevel;
} OwnerSwitch;

extern void oauth_become_owner(FunctionCallInfo fcinfo, OwnerSwitch *sw);
extern void oauth_restore_user(OwnerSwitch *sw);

#endif
