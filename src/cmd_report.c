/* `tqp report`: the tables and plot of an ablation grid from its per-cell JSON summaries
 * (src/report.c renders them).  Runs on rank 0; the other ranks only agree on the status.
 * The three outputs are first written in full under temporary names and then renamed into
 * place, so a failure leaves none of them half-written. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tqp/cli.h"
#include "tqp/io.h"
#include "tqp/mpiutil.h"
#include "tqp/report.h"

typedef struct {
    const char *jobs, *dir, *out, *title, *notes, *fp_eval;
    int allow_missing;
} report_args;

enum { N_OUT = 3 };

/* Write `text` to `tmp` and fsync it; messages name `final`, the file the user asked for. */
static tqp_status write_temp(const char *final, const char *tmp, const char *text)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return tqp_error_set(TQP_EIO, "%s: cannot write: %s", final, strerror(errno));
    size_t len = strlen(text), done = 0;
    tqp_status s = TQP_OK;
    while (done < len && s == TQP_OK) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            s = tqp_error_set(TQP_EIO, "%s: cannot write: %s", final, strerror(errno));
        else
            done += (size_t)w;
    }
    if (s == TQP_OK && fsync(fd) != 0)
        s = tqp_error_set(TQP_EIO, "%s: cannot write (fsync): %s", final, strerror(errno));
    if (close(fd) != 0 && s == TQP_OK)
        s = tqp_error_set(TQP_EIO, "%s: cannot write (close): %s", final, strerror(errno));
    return s;
}

/* All temporaries first, then the renames: no output appears unless all were written. */
static tqp_status write_outputs(char *const paths[N_OUT], char *const texts[N_OUT])
{
    char *tmp[N_OUT] = {0};
    tqp_status s = TQP_OK;
    for (int i = 0; i < N_OUT && s == TQP_OK; i++) {
        size_t n = strlen(paths[i]) + 32;
        if (!(tmp[i] = tqp_malloc(n))) {
            s = TQP_ENOMEM;
            break;
        }
        tqp_remove_stale_temps(paths[i]);
        snprintf(tmp[i], n, "%s.tmp.%ld", paths[i], (long)getpid());
        s = write_temp(paths[i], tmp[i], texts[i]);
    }
    for (int i = 0; i < N_OUT && s == TQP_OK; i++) {
        s = tqp_rename_durable(tmp[i], paths[i]);
        if (s == TQP_OK) {
            free(tmp[i]);
            tmp[i] = NULL;
        }
    }
    for (int i = 0; i < N_OUT; i++) {
        if (tmp[i]) unlink(tmp[i]);
        free(tmp[i]);
    }
    return s;
}

/* The full-precision perplexity from a tqp eval summary. */
static tqp_status read_fp_eval(const char *path, double *ppl)
{
    char *text = NULL;
    size_t len = 0;
    TQP_CHECK(tqp_file_read_all(path, &text, &len));
    tqp_status s = tqp_report_parse_eval(path, text, 0, ppl);
    free(text);
    if (s == TQP_OK && !(*ppl > 0))
        s = tqp_error_set(TQP_EINPUT, "%s: no field ppl", path);
    return s;
}

static tqp_status run(const report_args *a, const tqp_cmd_spec *spec)
{
    static const char *const ext[N_OUT] = {".csv", ".md", ".svg"};
    char *paths[N_OUT] = {0}, *texts[N_OUT] = {0}, *title = NULL;
    tqp_report r = {0};
    tqp_status s = TQP_OK;
    for (int i = 0; i < N_OUT && s == TQP_OK; i++) {
        size_t n = strlen(a->out) + 8;
        if (!(paths[i] = tqp_malloc(n)))
            s = TQP_ENOMEM;
        else {
            snprintf(paths[i], n, "%s%s", a->out, ext[i]);
            s = tqp_opts_check_output(spec, "--out", paths[i]);
            if (s == TQP_OK) s = tqp_check_writable(paths[i]);
        }
    }
    if (s == TQP_OK) s = tqp_report_read_jobs(a->jobs, &r);
    if (s == TQP_OK) s = tqp_report_load(&r, a->dir, a->allow_missing);
    if (s == TQP_OK && a->fp_eval) s = read_fp_eval(a->fp_eval, &r.ppl_fp);
    if (s != TQP_OK) goto out;
    for (int i = 0; i < r.n; i++)
        if (r.cells[i].missing)
            fprintf(stderr, "tqp report: warning: %s; its row is marked missing\n",
                    r.cells[i].why);
    if (!a->title) {
        const char *slash = strrchr(a->jobs, '/'), *base = slash ? slash + 1 : a->jobs;
        size_t n = strlen(base) + 16;
        if (!(title = tqp_malloc(n))) {
            s = TQP_ENOMEM;
            goto out;
        }
        snprintf(title, n, "Ablation: %s", base);
    }
    const char *slash = strrchr(paths[2], '/');
    texts[0] = tqp_report_csv(&r);
    texts[1] = tqp_report_markdown(&r, a->title ? a->title : title, a->notes,
                                   slash ? slash + 1 : paths[2]);
    texts[2] = tqp_report_svg(&r, a->title ? a->title : title);
    if (!texts[0] || !texts[1] || !texts[2]) {
        s = TQP_ENOMEM;
        goto out;
    }
    s = write_outputs(paths, texts);
    if (s == TQP_OK) {
        int missing = 0, points, methods;
        for (int i = 0; i < r.n; i++)
            missing += r.cells[i].missing;
        tqp_report_plotted(&r, &points, &methods);
        printf("wrote %s (%d cell%s, %d missing)\n", paths[0], r.n, r.n == 1 ? "" : "s",
               missing);
        printf("wrote %s\n", paths[1]);
        printf("wrote %s (%d point%s, %d method%s)\n", paths[2], points, points == 1 ? "" : "s",
               methods, methods == 1 ? "" : "s");
    }
out:
    for (int i = 0; i < N_OUT; i++) {
        free(paths[i]);
        free(texts[i]);
    }
    free(title);
    tqp_report_free(&r);
    return s;
}

tqp_status tqp_cmd_report(int argc, char **argv)
{
    report_args a;
    tqp_opt opts[] = {
        {"--jobs", TQP_OPT_IN_FILE, &a.jobs, NULL, "FILE",
         "job file: one cell per line, '<method> <bits> <tqp quantize options>'", 1},
        {"--dir", TQP_OPT_IN_PATH, &a.dir, NULL, "DIR",
         "directory of the summaries <method>-<bits>.json (tqp quantize --json)", 1},
        {"--out", TQP_OPT_STRING, &a.out, NULL, "PREFIX",
         "write PREFIX.csv, PREFIX.md and PREFIX.svg", 1},
        {"--title", TQP_OPT_STRING, &a.title, NULL, "TEXT",
         "title of the table and the plot (default: 'Ablation: <job file name>')"},
        {"--notes", TQP_OPT_STRING, &a.notes, NULL, "TEXT",
         "markdown paragraph under the title of PREFIX.md"},
        {"--fp-eval", TQP_OPT_IN_FILE, &a.fp_eval, NULL, "FILE",
         "tqp eval --json summary of the full-precision model: its ppl is the full-precision "
         "perplexity (default: ppl_full_precision of the summaries)"},
        {"--allow-missing", TQP_OPT_FLAG, &a.allow_missing, NULL, NULL,
         "mark a cell whose summary is absent or unreadable as missing instead of failing"},
    };
    tqp_cmd_spec spec = {
        "report", "Tables and plot of an ablation grid from its JSON summaries.",
        "For each cell of the job file ('#' starts a comment) reads DIR/<method>-<bits>.json, "
        "written by tqp quantize --json; when that summary has no ppl_quantized, the ppl of "
        "DIR/<method>-<bits>.eval.json (tqp eval --quantized --json), if present, is used. "
        "Writes PREFIX.csv (one row per cell, unknown numbers empty), PREFIX.md (a markdown "
        "table, unknown numbers '-') and PREFIX.svg (perplexity, log scale, against total bits "
        "per weight: one line per method, the full-precision perplexity dashed). Runs on rank 0.",
        opts, (int)(sizeof opts / sizeof opts[0])};
    int help, rank;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    tqp_status s = rank == 0 ? run(&a, &spec) : TQP_OK;
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}
