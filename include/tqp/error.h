/* Status codes and error reporting for TQP.
 *
 * Recoverable failures (bad input, I/O, MPI, numerical breakdown) return a tqp_status from the
 * X-macro table below and record a one-line message with tqp_error_set(); call sites propagate
 * with TQP_CHECK, which adds nothing to the message but returns early.  Programmer errors are
 * asserts.  The message is per thread and names the file (or object) and the reason, e.g.
 * "model.bin: truncated: header says 1056540 bytes, file has 1000".
 */
#ifndef TQP_ERROR_H
#define TQP_ERROR_H

#include <stddef.h>

/* X(name, exit_code, text).  Exit code 2 = bad input or usage, 1 = any other failure. */
#define TQP_STATUS_TABLE(X)                                                                        \
    X(TQP_OK, 0, "ok")                                                                             \
    X(TQP_EUSAGE, 2, "bad usage")                                                                  \
    X(TQP_EINPUT, 2, "bad input")                                                                  \
    X(TQP_ENOENT, 2, "no such file")                                                               \
    X(TQP_EMISMATCH, 2, "inputs do not match")                                                     \
    X(TQP_ENONFINITE, 2, "non-finite value")                                                       \
    X(TQP_EIO, 1, "I/O error")                                                                     \
    X(TQP_ENOMEM, 1, "out of memory")                                                              \
    X(TQP_EMPI, 1, "MPI error")                                                                    \
    X(TQP_EHDF5, 1, "HDF5 error")                                                                  \
    X(TQP_ENUMERIC, 1, "numerical failure")                                                        \
    X(TQP_EINTERNAL, 1, "internal error")

typedef enum {
#define TQP_X_ENUM(name, code, text) name,
    TQP_STATUS_TABLE(TQP_X_ENUM)
#undef TQP_X_ENUM
        TQP_STATUS_COUNT
} tqp_status;

/* Short text for a status ("bad input"). */
const char *tqp_strerror(tqp_status s);
/* Process exit code for a status: 0, 1 or 2. */
int tqp_exit_code(tqp_status s);

/* Record a one-line message for the current thread and return `s` (so a failure site reads
 * `return tqp_error_set(TQP_EINPUT, "%s: truncated", path);`). */
tqp_status tqp_error_set(tqp_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The last message recorded on this thread ("" if none). */
const char *tqp_error_message(void);
/* Forget the last message. */
void tqp_error_clear(void);

/* Return early from the enclosing function if `call` fails. */
#define TQP_CHECK(call)                                                                            \
    do {                                                                                           \
        tqp_status tqp_check_s_ = (call);                                                          \
        if (tqp_check_s_ != TQP_OK) return tqp_check_s_;                                           \
    } while (0)

/* Jump to `label` with `st` set if `call` fails (for functions that clean up through one
 * goto label). */
#define TQP_TRY(st, call, label)                                                                   \
    do {                                                                                           \
        (st) = (call);                                                                             \
        if ((st) != TQP_OK) goto label;                                                            \
    } while (0)

/* Allocation helpers: return NULL after recording TQP_ENOMEM with the size requested. */
void *tqp_malloc(size_t bytes);
void *tqp_calloc(size_t n, size_t size);
/* 64-byte aligned allocation for SIMD/BLAS buffers; free with free(). */
void *tqp_malloc_aligned(size_t bytes);
/* The largest single request to the three functions above since the last reset, in bytes, in
 * this process (all threads): how a test or a summary shows that no whole n x n or m x n
 * matrix is allocated. */
size_t tqp_alloc_largest(void);
void tqp_alloc_largest_reset(void);

/* Crash-test hook: if the environment variable TQP_CRASH_AT equals `point`, the process kills
 * itself with SIGKILL here.  Used by the restart tests; a no-op otherwise. */
void tqp_crash_point(const char *point);

#endif
