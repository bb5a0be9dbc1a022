/* Status table, per-thread error message and checked allocation.  See include/tqp/error.h. */
#include "tqp/error.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_message[1024];

static const char *const status_text[] = {
#define TQP_X_TEXT(name, code, text) [name] = text,
    TQP_STATUS_TABLE(TQP_X_TEXT)
#undef TQP_X_TEXT
};

static const int status_exit[] = {
#define TQP_X_CODE(name, code, text) [name] = code,
    TQP_STATUS_TABLE(TQP_X_CODE)
#undef TQP_X_CODE
};

const char *tqp_strerror(tqp_status s)
{
    return (s >= 0 && s < TQP_STATUS_COUNT) ? status_text[s] : "unknown status";
}

int tqp_exit_code(tqp_status s)
{
    return (s >= 0 && s < TQP_STATUS_COUNT) ? status_exit[s] : 1;
}

/* Length of the well-formed UTF-8 sequence at p (1-4), or 0 if it is not one. */
static int utf8_len(const unsigned char *p)
{
    int n = p[0] < 0x80 ? 1 : (p[0] & 0xe0) == 0xc0 ? 2 : (p[0] & 0xf0) == 0xe0 ? 3
                                                    : (p[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (n == 2 && p[0] < 0xc2) return 0; /* overlong */
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    return n;
}

/* Keep a message on one printable line whatever was formatted into it (a line of a binary
 * file quoted in a parse error, say): line breaks become spaces, other control bytes and bytes
 * that are not UTF-8 become '?'. */
static void printable(char *msg)
{
    unsigned char *p = (unsigned char *)msg;
    while (*p) {
        int n = utf8_len(p);
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
        else if (n == 0 || *p < 0x20 || *p == 0x7f)
            *p = '?', n = 1;
        p += n ? n : 1;
    }
}

tqp_status tqp_error_set(tqp_status s, const char *fmt, ...)
{
    /* Format into a scratch buffer first: callers may pass the current message as an argument
     * to prefix it ("%s: %s", path, tqp_error_message()). */
    static _Thread_local char scratch[sizeof last_message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(scratch, sizeof scratch, fmt, ap);
    va_end(ap);
    memcpy(last_message, scratch, sizeof last_message);
    printable(last_message);
    return s;
}

const char *tqp_error_message(void)
{
    return last_message;
}

void tqp_error_clear(void)
{
    last_message[0] = '\0';
}

static _Atomic size_t largest_request;

static void note_request(size_t bytes)
{
    size_t seen = atomic_load_explicit(&largest_request, memory_order_relaxed);
    while (bytes > seen &&
           !atomic_compare_exchange_weak_explicit(&largest_request, &seen, bytes,
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

size_t tqp_alloc_largest(void)
{
    return atomic_load(&largest_request);
}

void tqp_alloc_largest_reset(void)
{
    atomic_store(&largest_request, 0);
}

void *tqp_malloc(size_t bytes)
{
    note_request(bytes);
    void *p = malloc(bytes ? bytes : 1);
    if (!p) tqp_error_set(TQP_ENOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *tqp_calloc(size_t n, size_t size)
{
    note_request(n && size > SIZE_MAX / n ? SIZE_MAX : n * size);
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) tqp_error_set(TQP_ENOMEM, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *tqp_malloc_aligned(size_t bytes)
{
    note_request(bytes);
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) {
        tqp_error_set(TQP_ENOMEM, "out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    return p;
}

void tqp_crash_point(const char *point)
{
    const char *at = getenv("TQP_CRASH_AT");
    if (at && !strcmp(at, point)) raise(SIGKILL);
}
