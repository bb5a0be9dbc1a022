/* Rate-limited progress lines with throughput and ETA. */
#include "tqp/progress.h"

#include <time.h>
#include <unistd.h>

double tqp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void tqp_progress_init(tqp_progress *p, const char *what, double total, const char *unit,
                       int enabled)
{
    *p = (tqp_progress){.what = what,
                        .total = total,
                        .unit = unit,
                        .enabled = enabled,
                        .tty = isatty(STDERR_FILENO),
                        .start = tqp_now()};
    p->last_print = p->start;
    p->min_interval = p->tty ? 0.2 : 5.0;
}

static void print_line(tqp_progress *p, double done, const char *extra, int final)
{
    double el = tqp_now() - p->start, rate = el > 0 ? done / el : 0;
    double eta = rate > 0 ? (p->total - done) / rate : 0;
    fprintf(stderr, "%s%s: %.0f/%.0f %s (%.1f%%), %.0f %s/s, elapsed %.1fs, ETA %.1fs%s%s%s",
            p->tty ? "\r" : "", p->what, done, p->total, p->unit,
            p->total > 0 ? 100.0 * done / p->total : 100.0, rate, p->unit, el, final ? 0.0 : eta,
            extra ? ", " : "", extra ? extra : "", p->tty && !final ? "\033[K" : "\n");
    fflush(stderr);
    p->printed = 1;
    p->last_print = tqp_now();
}

void tqp_progress_update(tqp_progress *p, double done, const char *extra)
{
    if (!p->enabled) return;
    double now = tqp_now();
    /* Stay quiet for short jobs; then report at the interval. */
    if (now - p->start < 1.0 || now - p->last_print < p->min_interval) return;
    print_line(p, done, extra, 0);
}

void tqp_progress_finish(tqp_progress *p, double done, int force)
{
    if (!p->enabled || (!p->printed && !force)) return;
    print_line(p, done, NULL, 1);
}
