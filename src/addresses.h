/*
 * addresses.h — which addresses provider requests may go to (src/addresses.c).
 */
#ifndef OAUTH_ADDRESSES_H
#define OAUTH_ADDRESSES_H

#include "postgres.h"

#include <sys/socket.h>

/* Longest text of a refused address and its range, e.g. "[::1] (loopback)". */
#define OAUTH_ADDRESS_TEXT 96

extern const char *address_refusal(const struct sockaddr *sa, socklen_t len);
extern void address_text(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);
extern const char *url_ip_literal(const char *url, char **host);

#endif
