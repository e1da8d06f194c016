/*
 * How svmm-sendfd and svmm-memfd fail: "<SVMM_PROGRAM>: <what>[: <strerror(err)>]" on stderr, then
 * exit(status). Define SVMM_PROGRAM before including this header.
 */
#ifndef SVMM_FAIL_H
#define SVMM_FAIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noreturn, format(printf, 3, 4))) static void fail(int status, int err, const char *fmt, ...) {
  va_list ap;
  fputs(SVMM_PROGRAM ": ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (err) fprintf(stderr, ": %s", strerror(err));
  fputc('\n', stderr);
  exit(status);
}

#endif
