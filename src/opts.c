/* Table-driven option parsing for the subcommands (see include/tqp/cli.h). */
#include "tqp/cli.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int is_input(tqp_opt_kind k)
{
    return k == TQP_OPT_IN_FILE || k == TQP_OPT_IN_PATH || k == TQP_OPT_IN_FILES;
}

static int is_path(tqp_opt_kind k)
{
    return is_input(k) || k == TQP_OPT_OUT;
}

/* Element `k` of an input option's value (one path, or a comma-separated list for
 * TQP_OPT_IN_FILES) into buf; 0 past the last. */
static int input_at(const tqp_opt *o, int k, char *buf, size_t cap)
{
    const char *v = *(const char **)o->dest;
    if (!v) return 0;
    if (o->kind != TQP_OPT_IN_FILES) return k == 0 && snprintf(buf, cap, "%s", v) < (int)cap;
    for (; k > 0; k--) {
        v = strchr(v, ',');
        if (!v) return 0;
        v++;
    }
    size_t n = strcspn(v, ",");
    if (n >= cap) return 0;
    memcpy(buf, v, n);
    buf[n] = 0;
    return 1;
}

static int has_range(const tqp_opt *o)
{
    return o->lo < o->hi;
}

static tqp_status set_value(const tqp_opt *o, const char *v)
{
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case TQP_OPT_STRING:
    case TQP_OPT_IN_FILE:
    case TQP_OPT_IN_PATH:
    case TQP_OPT_IN_FILES:
    case TQP_OPT_OUT:
        if (is_path(o->kind) && !*v) return tqp_error_set(TQP_EUSAGE, "%s: empty path", o->name);
        *(const char **)o->dest = v;
        return TQP_OK;
    case TQP_OPT_FLAG:
        *(int *)o->dest = v ? atoi(v) : 1;
        return TQP_OK;
    case TQP_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < -2147483647L || x > 2147483647L)
            return tqp_error_set(TQP_EUSAGE, "%s expects an integer, got '%s'", o->name, v);
        if (has_range(o) && (x < o->lo || x > o->hi))
            return tqp_error_set(TQP_EUSAGE, "%s %ld is out of range (%.0f .. %.0f)", o->name, x,
                                 o->lo, o->hi);
        *(int *)o->dest = (int)x;
        return TQP_OK;
    }
    case TQP_OPT_DOUBLE: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x))
            return tqp_error_set(TQP_EUSAGE, "%s expects a finite number, got '%s'", o->name, v);
        if (has_range(o) && (x < o->lo || x > o->hi))
            return tqp_error_set(TQP_EUSAGE, "%s %g is out of range (%g .. %g)", o->name, x, o->lo,
                                 o->hi);
        *(double *)o->dest = x;
        return TQP_OK;
    }
    }
    return TQP_EINTERNAL;
}

/* The absolute path `path` names with links resolved, also when it does not exist yet (then
 * its directory's, plus its last component).  0 when not even the directory exists. */
static int canonical(const char *path, char out[PATH_MAX])
{
    if (realpath(path, out)) return 1;
    char *a = strdup(path), *b = strdup(path), dir[PATH_MAX];
    int ok = a && b && realpath(dirname(a), dir) != NULL;
    if (ok) ok = snprintf(out, PATH_MAX, "%s/%s", strcmp(dir, "/") ? dir : "", basename(b)) <
                 PATH_MAX;
    free(a);
    free(b);
    return ok;
}

/* Files a model or tokenizer directory is read from. */
static int checkpoint_file_name(const char *base)
{
    size_t n = strlen(base);
    const char *st = ".safetensors", *idx = ".safetensors.index.json";
    return !strcmp(base, "config.json") || !strcmp(base, "generation_config.json") ||
           !strncmp(base, "tokenizer", 9) || (!strncmp(base, "tok", 3) && n > 4 &&
                                              !strcmp(base + n - 4, ".bin")) ||
           (n > strlen(st) && !strcmp(base + n - strlen(st), st)) ||
           (n > strlen(idx) && !strcmp(base + n - strlen(idx), idx));
}

tqp_status tqp_opts_check_output(const tqp_cmd_spec *s, const char *what, const char *out)
{
    char co[PATH_MAX], ci[PATH_MAX];
    if (!canonical(out, co)) return TQP_OK; /* its directory does not exist: it aliases nothing */
    struct stat so, si;
    int out_exists = stat(out, &so) == 0;
    char in[PATH_MAX];
    for (int i = 0; i < s->n_opts; i++) {
        const tqp_opt *o = &s->opts[i];
        if (!is_input(o->kind)) continue;
        for (int k = 0; input_at(o, k, in, sizeof in); k++) {
            if (stat(in, &si) != 0 || !realpath(in, ci)) continue;
            int same = !strcmp(co, ci) || (out_exists && so.st_dev == si.st_dev &&
                                           so.st_ino == si.st_ino);
            size_t n = strlen(ci);
            if (!same && S_ISDIR(si.st_mode) && !strncmp(co, ci, n) && co[n] == '/' &&
                !strchr(co + n + 1, '/') && checkpoint_file_name(co + n + 1))
                same = 1;
            if (same)
                return tqp_error_set(TQP_EUSAGE,
                                     "%s: %s would overwrite the input given as %s (choose "
                                     "another output path)",
                                     out, what, o->name);
        }
    }
    return TQP_OK;
}

/* The checks of every path option (see tqp_opt_kind). */
static tqp_status check_paths(const tqp_cmd_spec *s)
{
    struct stat st;
    char p[PATH_MAX];
    for (int i = 0; i < s->n_opts; i++) {
        const tqp_opt *o = &s->opts[i];
        if (!is_input(o->kind)) continue;
        for (int k = 0; input_at(o, k, p, sizeof p); k++) {
            if (!*p) return tqp_error_set(TQP_EUSAGE, "%s: an empty path in the list", o->name);
            if (stat(p, &st) != 0)
                return tqp_error_set(errno == ENOENT || errno == ENOTDIR ? TQP_ENOENT : TQP_EINPUT,
                                     "%s: %s (%s)", p,
                                     errno == ENOENT || errno == ENOTDIR ? "no such file"
                                                                         : strerror(errno),
                                     o->name);
            if (o->kind != TQP_OPT_IN_PATH && !S_ISREG(st.st_mode))
                return tqp_error_set(TQP_EINPUT, "%s: not a regular file (%s)", p, o->name);
            if (o->kind == TQP_OPT_IN_PATH && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
                return tqp_error_set(TQP_EINPUT, "%s: not a regular file or directory (%s)", p,
                                     o->name);
        }
    }
    char ci[PATH_MAX], cj[PATH_MAX];
    for (int i = 0; i < s->n_opts; i++) {
        const tqp_opt *o = &s->opts[i];
        const char *out = o->kind == TQP_OPT_OUT ? *(const char **)o->dest : NULL;
        if (!out) continue;
        TQP_CHECK(tqp_opts_check_output(s, o->name, out));
        for (int j = i + 1; j < s->n_opts; j++) {
            const char *q = s->opts[j].kind == TQP_OPT_OUT ? *(const char **)s->opts[j].dest : NULL;
            if (q && canonical(out, ci) && canonical(q, cj) && !strcmp(ci, cj))
                return tqp_error_set(TQP_EUSAGE, "%s: given as both %s and %s", out, o->name,
                                     s->opts[j].name);
        }
    }
    return TQP_OK;
}

static const tqp_opt *find(const tqp_cmd_spec *s, const char *name, size_t len)
{
    for (int i = 0; i < s->n_opts; i++)
        if (strlen(s->opts[i].name) == len && !strncmp(s->opts[i].name, name, len))
            return &s->opts[i];
    return NULL;
}

static tqp_status apply_defaults(const tqp_cmd_spec *s)
{
    for (int i = 0; i < s->n_opts; i++) {
        const tqp_opt *o = &s->opts[i];
        if (o->kind == TQP_OPT_FLAG)
            *(int *)o->dest = 0;
        else if (o->kind == TQP_OPT_STRING || is_path(o->kind))
            *(const char **)o->dest = o->def;
        if (o->def && (o->kind == TQP_OPT_INT || o->kind == TQP_OPT_DOUBLE))
            TQP_CHECK(set_value(o, o->def));
    }
    return TQP_OK;
}

tqp_status tqp_opts_parse(const tqp_cmd_spec *s, int argc, char **argv, int *help)
{
    *help = 0;
    TQP_CHECK(apply_defaults(s));
    int *seen = tqp_calloc((size_t)s->n_opts, sizeof *seen);
    if (!seen) return TQP_ENOMEM;
    tqp_status st = TQP_OK;
    for (int i = 1; i < argc && st == TQP_OK; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            int rank = 0, up = 0;
            MPI_Initialized(&up);
            if (up) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
            if (rank == 0) tqp_opts_usage(s, stdout); /* once, not once per rank */
            *help = 1;
            break;
        }
        const tqp_opt *o =
            strncmp(a, "--", 2) ? NULL : find(s, a, eq ? (size_t)(eq - a) : strlen(a));
        if (!o) {
            st = tqp_error_set(TQP_EUSAGE, "unknown argument '%s' (see tqp %s --help)", a,
                               s->name);
            break;
        }
        seen[o - s->opts] = 1;
        if (o->kind == TQP_OPT_FLAG && !eq)
            st = set_value(o, NULL);
        else if (eq)
            st = set_value(o, eq + 1);
        else if (i + 1 < argc)
            st = set_value(o, argv[++i]);
        else
            st = tqp_error_set(TQP_EUSAGE, "%s needs a value", o->name);
    }
    for (int i = 0; i < s->n_opts && st == TQP_OK && !*help; i++)
        if (s->opts[i].required && !seen[i])
            st = tqp_error_set(TQP_EUSAGE, "%s is required (see tqp %s --help)",
                               s->opts[i].name, s->name);
    free(seen);
    if (st == TQP_OK && !*help) st = check_paths(s);
    return st;
}

void tqp_opts_usage(const tqp_cmd_spec *s, FILE *out)
{
    fprintf(out, "usage: tqp %s [options]\n\n%s\n", s->name, s->summary);
    if (s->details) fprintf(out, "\n%s\n", s->details);
    fprintf(out, "\noptions:\n");
    for (int i = 0; i < s->n_opts; i++) {
        const tqp_opt *o = &s->opts[i];
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->meta ? " " : "", o->meta ? o->meta : "");
        fprintf(out, "  %-24s %s", left, o->help);
        if (has_range(o) && o->kind == TQP_OPT_INT)
            fprintf(out, " [%.0f .. %.0f]", o->lo, o->hi);
        else if (has_range(o))
            fprintf(out, " [%g .. %g]", o->lo, o->hi);
        if (o->required)
            fprintf(out, " (required)");
        else if (o->def)
            fprintf(out, " (default: %s)", o->def);
        else if (o->kind == TQP_OPT_FLAG)
            fprintf(out, " (default: off)");
        fputc('\n', out);
    }
    fprintf(out, "  %-24s %s\n", "--help", "print this help and exit");
}
