/*
 * fuzz.h — what the fuzz targets share with fuzz/backend_stubs.c.
 */
#ifndef OAUTH_FUZZ_H
#define OAUTH_FUZZ_H

#include <setjmp.h>

/* ereport(ERROR) jumps here (set by the target around each call) */
extern sigjmp_buf *fuzz_error_jmp;

/* free every palloc'd chunk of the input just run */
extern void fuzz_reset(void);

#endif
