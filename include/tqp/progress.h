/* Progress reporting for long work: a live line on a terminal, one line per report otherwise
 * (Slurm logs).  Reports are rate-limited; only the rank that creates a reporter with
 * `enabled` set prints. */
#ifndef TQP_PROGRESS_H
#define TQP_PROGRESS_H

#include <stdio.h>

typedef struct {
    const char *what; // borrowed label, e.g. "eval"
    double total;     // units of work (windows, tokens...)
    const char *unit; // "tok"
    double start, last_print;
    double min_interval; // seconds between lines when not on a terminal
    int enabled, tty, printed;
} tqp_progress;

double tqp_now(void); /* monotonic seconds */

void tqp_progress_init(tqp_progress *p, const char *what, double total, const char *unit,
                       int enabled);
/* Report `done` units so far; `extra` (may be NULL) is appended to the line. */
void tqp_progress_update(tqp_progress *p, double done, const char *extra);
/* Final line (always printed if anything was printed before, or if `force`). */
void tqp_progress_finish(tqp_progress *p, double done, int force);

#endif
