/*-------------------------------------------------------------------------
 *
 * tenant_answers.c
 *	  One tenant's rejection is that tenant's: the rule that tells a
 *	  connection's failure from a provider's.
 *
 * invalid_client, unauthorized_client or a 401 from a token URL filled from
 * the connection's metadata (any placeholder, host or path) fails that
 * connection only ("tenant_rejected: <code>", reauth_required).  Such
 * answers never count toward pausing the provider, however many workspaces
 * get them: the metadata, and so the endpoint that answers, is the tenant's
 * to choose, and no tenant may stop the provider for the others.  Only an
 * untemplated URL pauses it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "tenant_answers.h"

/*
 * A provider-class answer a (invalid_client, unauthorized_client, a bare
 * 401): from a token URL filled by the connection's metadata (templated_url)
 * it concerns this connection only: a becomes this connection's failure
 * and the result is true.  From an untemplated URL it is left as it is
 * (pause the provider) and the result is false.  No count across
 * workspaces: the tenant chooses what its URL reaches, so any number of its
 * workspaces is still one party.
 */
bool
tenant_failure(TokenAnswer *a, bool templated_url)
{
	if (!templated_url)
		return false;
	a->klass = RO_REAUTH;
	a->tenant_failure = true;
	if (a->error_code == NULL)
		a->error_code = psprintf("http_%ld", a->http_status);
	a->message = psprintf("%s (for this connection's tenant only)", a->message);
	return true;
}
