/* Ablation reports (`tqp report`): a job file names the cells of a grid, one per line
 * ("<method> <bits> <tqp quantize options>"); each cell's results come from the JSON summary
 * that `tqp quantize --json` wrote as DIR/<method>-<bits>.json (and, for the perplexity until
 * that summary carries it, DIR/<method>-<bits>.eval.json from `tqp eval --json`).  A line
 * "@seeds N" (N from 1 to 64) runs every cell N times, with tqp quantize --seed 0 .. N-1: the
 * summaries are then DIR/<method>-<bits>-s<seed>.json (and .eval.json), and a cell reports the
 * mean, minimum and maximum over its seeds.  From them
 * this module renders three texts: a CSV table, a markdown table and an SVG plot of perplexity
 * (log scale) against total bits per weight.  Everything here is local to one process. */
#ifndef TQP_REPORT_H
#define TQP_REPORT_H

#include "tqp/error.h"

/* One cell of the grid.  A number that is not known is NAN. */
typedef struct {
    char *method;  // "QuIP"
    int bits;      // 2
    char *options; // the tqp quantize options, single-spaced; "" when none
    int line;      // its line in the job file (1-based)
    int missing;   // no usable summary (only with allow_missing); `why` says what was wrong
    char *why;     // NULL unless missing
    double ppl;    // ppl_quantized, else the ppl of DIR/<method>-<bits>.eval.json (seeds: mean)
    double ppl_fp; // ppl_full_precision
    double proxy_loss_mean, bpw_code, bpw_total, seconds; // seeds: means
    double ppl_min, ppl_max, proxy_min, proxy_max;         // over the seeds (one: the value)
    char *version; // tqp_version of the summary; NULL when absent
} tqp_report_cell;

typedef struct {
    char *jobs; // the job file's path, for messages
    tqp_report_cell *cells;
    int n;
    int seeds;     // runs per cell ("@seeds N"; 1 without)
    double ppl_fp; // full-precision perplexity (NAN if not known), set by tqp_report_load
} tqp_report;

/* Parse a job file's text; `path` is used in messages ("jobs.txt:4: ...").  Blank lines are
 * skipped and `#` starts a comment that runs to the end of the line.  Errors (TQP_EINPUT): a
 * line without bits, bits that are not a whole number from 1 to 32, a method containing '/' or
 * starting with '@', the same method and bits twice, no cells at all, an "@seeds" line that is
 * not "@seeds N" with N from 1 to 64 or comes twice, any other '@' line. */
tqp_status tqp_report_parse_jobs(const char *path, const char *text, tqp_report *r);
/* Read and parse the job file at `path`. */
tqp_status tqp_report_read_jobs(const char *path, tqp_report *r);

/* Fill a cell from the text of its tqp quantize summary (`path` for messages).  Fields that are
 * absent or null stay NAN; a field of the wrong type, a "command" other than quantize, "bits"
 * other than the cell's, or a non-positive perplexity is an error. */
tqp_status tqp_report_parse_summary(const char *path, const char *text, tqp_report_cell *c);
/* The "ppl" of a tqp eval summary's text (NAN when absent).  With `want_quantized` 1 the
 * summary must be of a quantized model, with 0 of a full-precision one, with -1 either. */
tqp_status tqp_report_parse_eval(const char *path, const char *text, int want_quantized,
                                 double *ppl);

/* Read every cell's summaries from `dir`.  A summary that is absent or cannot be read or
 * parsed is an error naming the file, or, with allow_missing, marks its cell missing.  Sets
 * r->ppl_fp to the first ppl_full_precision found. */
tqp_status tqp_report_load(tqp_report *r, const char *dir, int allow_missing);

/* The three renderings, as malloc'd NUL-terminated texts (NULL with TQP_ENOMEM recorded when
 * out of memory).  CSV: header `method,bits,options,ppl,proxy_loss_mean,bits_per_weight_code,
 * bits_per_weight_total,quantize_seconds,seeds,ppl_min,ppl_max,proxy_loss_min,proxy_loss_max`,
 * one row per cell, unknown numbers empty.  Markdown: `# title`, `notes` (may be NULL), the
 * full-precision line when known, the table (unknown numbers "-", missing cells "missing"; with
 * seeds, perplexity and proxy loss as "mean (min-max)"), and an image link to `svg_name` (may
 * be NULL).  SVG: with seeds, a vertical bar from the minimum to the maximum perplexity at each
 * point. */
char *tqp_report_csv(const tqp_report *r);
char *tqp_report_markdown(const tqp_report *r, const char *title, const char *notes,
                          const char *svg_name);
char *tqp_report_svg(const tqp_report *r, const char *title);

/* Number of cells the SVG plots (known perplexity and total bits per weight) and of methods
 * with at least one such cell. */
void tqp_report_plotted(const tqp_report *r, int *points, int *methods);

void tqp_report_free(tqp_report *r);

#endif
