/* Table-driven option parsing for the subcommands (see include/tqp/cli.h). */
#include "tqp/cli.h"

#include <errno.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static tqp_status set_value(const char *cmd, const tqp_opt *o, const char *v)
{
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case TQP_OPT_STRING:
        *(const char **)o->dest = v;
        return TQP_OK;
    case TQP_OPT_FLAG:
        *(int *)o->dest = v ? atoi(v) : 1;
        return TQP_OK;
    case TQP_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < -2147483647L || x > 2147483647L)
            return tqp_error_set(TQP_EUSAGE, "tqp %s: %s expects an integer, got '%s'", cmd,
                                 o->name, v);
        *(int *)o->dest = (int)x;
        return TQP_OK;
    }
    case TQP_OPT_DOUBLE: {
        double x = strtod(v, &end);
        if (errno || end == v || *end)
            return tqp_error_set(TQP_EUSAGE, "tqp %s: %s expects a number, got '%s'", cmd, o->name,
                                 v);
        *(double *)o->dest = x;
        return TQP_OK;
    }
    }
    return TQP_EINTERNAL;
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
        else if (o->kind == TQP_OPT_STRING)
            *(const char **)o->dest = o->def;
        if (o->def && o->kind != TQP_OPT_STRING) TQP_CHECK(set_value(s->name, o, o->def));
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
            st = tqp_error_set(TQP_EUSAGE, "tqp %s: unknown argument '%s' (see tqp %s --help)",
                               s->name, a, s->name);
            break;
        }
        seen[o - s->opts] = 1;
        if (o->kind == TQP_OPT_FLAG && !eq)
            st = set_value(s->name, o, NULL);
        else if (eq)
            st = set_value(s->name, o, eq + 1);
        else if (i + 1 < argc)
            st = set_value(s->name, o, argv[++i]);
        else
            st = tqp_error_set(TQP_EUSAGE, "tqp %s: %s needs a value", s->name, o->name);
    }
    for (int i = 0; i < s->n_opts && st == TQP_OK && !*help; i++)
        if (s->opts[i].required && !seen[i])
            st = tqp_error_set(TQP_EUSAGE, "tqp %s: %s is required (see tqp %s --help)", s->name,
                               s->opts[i].name, s->name);
    free(seen);
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
