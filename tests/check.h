/* A minimal test harness: CHECK macros count failures and print file:line; a test program's
 * main() ends with `return check_done();`, which prints "N passed, N failed" and returns the
 * exit status.  Data paths come from TQP_DATA_DIR (default: ../shared/data beside the
 * source tree). */
#ifndef TQP_TEST_CHECK_H
#define TQP_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_passed_, check_failed_;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            check_passed_++;                                                                       \
        } else {                                                                                   \
            check_failed_++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (cond) {                                                                                \
            check_passed_++;                                                                       \
        } else {                                                                                   \
            check_failed_++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double ca_ = (a), cb_ = (b);                                                               \
        double lim_ = (tol) * (fabs(cb_) > 1.0 ? fabs(cb_) : 1.0);                                 \
        CHECK_MSG(fabs(ca_ - cb_) <= lim_, "%.17g vs %.17g (tol %g)", ca_, cb_, (double)(tol));    \
    } while (0)

static inline int check_done(void)
{
    printf("%d passed, %d failed\n", check_passed_, check_failed_);
    return check_failed_ ? 1 : 0;
}

/* Path of a file under the shared data directory, in a static buffer. */
static inline const char *data_path(const char *rel)
{
    static char buf[4][4096];
    static int slot;
    const char *dir = getenv("TQP_DATA_DIR");
    if (!dir || !*dir) dir = TQP_DEFAULT_DATA_DIR;
    slot = (slot + 1) % 4;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", dir, rel);
    return buf[slot];
}

#endif
