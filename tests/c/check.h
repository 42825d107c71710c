/*
 * check.h - a tiny test harness for the C tests (ctest runs one executable per area).
 */
#ifndef CLIPL_CHECK_H
#define CLIPL_CHECK_H

#include "clipl.h"

#include <stdio.h>

extern int check_failures;
extern int check_count;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

/* Checks that a call returned CLIPL_OK, printing clipl_errmsg() otherwise. */
#define CHECK_OK(call)                                                                             \
    do {                                                                                           \
        check_count++;                                                                             \
        int rc_ = (call);                                                                          \
        if (rc_ != CLIPL_OK) {                                                                     \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #call, rc_,         \
                    clipl_errmsg());                                                               \
        }                                                                                          \
    } while (0)

/* Checks that a call failed with the given code and that the message contains `needle`. */
#define CHECK_ERR(call, code, needle)                                                              \
    check_err_((call), (code), (needle), __FILE__, __LINE__, #call)

void check_err_(int rc, int code, const char *needle, const char *file, int line, const char *what);
/* Max |a - b| / max(max |b|, tiny) over two float tensors of the same shape (any dtype, any
 * strides). */
double check_rel_err(const clipl_tensor *a, const clipl_tensor *b);
/* Max |a - b|. */
double check_max_abs(const clipl_tensor *a, const clipl_tensor *b);
/* Checks rel error <= tol and prints the measured error with the label. */
#define CHECK_CLOSE(a, b, tol, label) check_close_((a), (b), (tol), (label), __FILE__, __LINE__)
void check_close_(const clipl_tensor *a, const clipl_tensor *b, double tol, const char *label,
                  const char *file, int line);
/* Prints the summary and returns the process exit code. */
int check_done(const char *suite);

#endif
