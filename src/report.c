/* Ablation reports: the job file, the per-cell JSON summaries, and the CSV, markdown and SVG
 * renderings (see include/tqp/report.h).  The SVG is written by hand: a log-scale perplexity
 * axis with decade grid lines, a linear axis of total bits per weight, one polyline with
 * markers per method, and a dashed line at the full-precision perplexity. */
#include "tqp/report.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tqp/io.h"

/* ---- a growing text buffer ----------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    int failed; // an allocation failed: the text is lost
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    while (!b->failed) {
        size_t room = b->cap - b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
        } else if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        } else {
            size_t cap = b->cap ? b->cap : 4096;
            while (cap - b->len <= (size_t)n)
                cap *= 2;
            char *q = realloc(b->p, cap);
            if (!q)
                b->failed = 1;
            else {
                b->p = q;
                b->cap = cap;
            }
        }
    }
}

static char *sb_finish(sbuf *b)
{
    if (b->failed || !b->p) {
        free(b->p);
        tqp_error_set(TQP_ENOMEM, "out of memory while rendering the report");
        return NULL;
    }
    return b->p;
}

/* Text inside XML elements and attribute values. */
static void sb_xml(sbuf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': sb_printf(b, "&amp;"); break;
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        case '\'': sb_printf(b, "&apos;"); break;
        default:
            /* XML 1.0 allows no control characters but tab, newline and carriage return. */
            sb_printf(b, "%c", (unsigned char)*s < 0x20 ? ' ' : *s);
        }
    }
}

/* A markdown table cell: '|' would end the cell. */
static void sb_md(sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            sb_printf(b, "\\|");
        else
            sb_printf(b, "%c", *s);
    }
}

/* A CSV field (RFC 4180): quoted, with quotes doubled, when it holds a comma, quote or newline. */
static void sb_csv(sbuf *b, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        sb_printf(b, "%s", s);
        return;
    }
    sb_printf(b, "\"");
    for (; *s; s++) {
        if (*s == '"')
            sb_printf(b, "\"\"");
        else
            sb_printf(b, "%c", *s);
    }
    sb_printf(b, "\"");
}

/* A number with a printf format, or `unknown` when it is NAN. */
static void sb_num(sbuf *b, const char *fmt, double v, const char *unknown)
{
    if (isfinite(v))
        sb_printf(b, fmt, v);
    else
        sb_printf(b, "%s", unknown);
}

static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *str_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n < 0 ? NULL : tqp_malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* ---- the job file ---------------------------------------------------------------------------- */

static void cell_clear_numbers(tqp_report_cell *c)
{
    c->ppl = c->ppl_fp = c->proxy_loss_mean = c->bpw_code = c->bpw_total = c->seconds = NAN;
    c->ppl_min = c->ppl_max = c->proxy_min = c->proxy_max = NAN;
    free(c->version);
    c->version = NULL;
}

static void cell_free(tqp_report_cell *c)
{
    free(c->method);
    free(c->options);
    free(c->why);
    free(c->version);
}

void tqp_report_free(tqp_report *r)
{
    for (int i = 0; i < r->n; i++)
        cell_free(&r->cells[i]);
    free(r->cells);
    free(r->jobs);
    memset(r, 0, sizeof *r);
    r->ppl_fp = NAN;
    r->seeds = 1;
}

/* "@seeds N": r->seeds; *seen_line: the line of an earlier one (0: none). */
static tqp_status parse_directive(const char *path, int lineno, char *line, tqp_report *r,
                                  int *seen_line)
{
    static const char *const ws = " \t\r\v\f";
    char *save = NULL, *key = strtok_r(line, ws, &save), *val = strtok_r(NULL, ws, &save);
    if (strcmp(key, "@seeds"))
        return tqp_error_set(TQP_EINPUT, "%s:%d: unknown directive '%s' (only @seeds N)", path,
                             lineno, key);
    if (*seen_line)
        return tqp_error_set(TQP_EINPUT, "%s:%d: @seeds again (first on line %d)", path, lineno,
                             *seen_line);
    char *end = NULL;
    errno = 0;
    long n = val ? strtol(val, &end, 10) : 0;
    if (!val || errno || end == val || *end || n < 1 || n > 64 || strtok_r(NULL, ws, &save))
        return tqp_error_set(TQP_EINPUT, "%s:%d: expected '@seeds N' with N from 1 to 64", path,
                             lineno);
    r->seeds = (int)n;
    *seen_line = lineno;
    return TQP_OK;
}

/* Parse one line (comment already cut) into *c; returns 0 for a blank line, 1 for a cell. */
static tqp_status parse_line(const char *path, int lineno, char *line, tqp_report_cell *c,
                             int *is_cell)
{
    static const char *const ws = " \t\r\v\f";
    char *save = NULL, *method = strtok_r(line, ws, &save), *bits = strtok_r(NULL, ws, &save);
    *is_cell = 0;
    if (!method) return TQP_OK;
    if (!bits)
        return tqp_error_set(TQP_EINPUT,
                             "%s:%d: expected '<method> <bits> [tqp quantize options]', got '%s'",
                             path, lineno, method);
    char *end = NULL;
    errno = 0;
    long b = strtol(bits, &end, 10);
    if (errno || end == bits || *end || b < 1 || b > 32)
        return tqp_error_set(TQP_EINPUT, "%s:%d: bits '%s' is not a whole number from 1 to 32",
                             path, lineno, bits);
    if (strchr(method, '/'))
        return tqp_error_set(TQP_EINPUT,
                             "%s:%d: method '%s' contains '/' (it names the summary file)", path,
                             lineno, method);
    sbuf opts = {0};
    sb_printf(&opts, "%s", "");
    for (char *t = strtok_r(NULL, ws, &save); t; t = strtok_r(NULL, ws, &save))
        sb_printf(&opts, "%s%s", opts.len ? " " : "", t);
    memset(c, 0, sizeof *c);
    cell_clear_numbers(c);
    c->method = strdup(method);
    c->bits = (int)b;
    c->options = sb_finish(&opts);
    c->line = lineno;
    if (!c->method || !c->options) {
        cell_free(c);
        return tqp_error_set(TQP_ENOMEM, "out of memory");
    }
    *is_cell = 1;
    return TQP_OK;
}

tqp_status tqp_report_parse_jobs(const char *path, const char *text, tqp_report *r)
{
    memset(r, 0, sizeof *r);
    r->ppl_fp = NAN;
    r->seeds = 1;
    r->jobs = strdup(path);
    if (!r->jobs) return tqp_error_set(TQP_ENOMEM, "out of memory");
    tqp_status s = TQP_OK;
    int cap = 0, lineno = 0, seeds_line = 0;
    for (const char *p = text; *p && s == TQP_OK;) {
        lineno++;
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char *line = strndup(p, len);
        p += len + (eol ? 1 : 0);
        if (!line) {
            s = tqp_error_set(TQP_ENOMEM, "out of memory");
            break;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *first = line + strspn(line, " \t\r\v\f");
        if (*first == '@') {
            s = parse_directive(path, lineno, first, r, &seeds_line);
            free(line);
            continue;
        }
        tqp_report_cell c;
        int is_cell = 0;
        s = parse_line(path, lineno, line, &c, &is_cell);
        free(line);
        if (s != TQP_OK || !is_cell) continue;
        for (int i = 0; i < r->n && s == TQP_OK; i++)
            if (r->cells[i].bits == c.bits && !strcmp(r->cells[i].method, c.method))
                s = tqp_error_set(TQP_EINPUT, "%s:%d: %s at %d bits is already on line %d", path,
                                  lineno, c.method, c.bits, r->cells[i].line);
        if (s == TQP_OK && r->n == cap) {
            int ncap = cap ? 2 * cap : 16;
            tqp_report_cell *q = realloc(r->cells, (size_t)ncap * sizeof *q);
            if (!q)
                s = tqp_error_set(TQP_ENOMEM, "out of memory");
            else {
                r->cells = q;
                cap = ncap;
            }
        }
        if (s == TQP_OK)
            r->cells[r->n++] = c;
        else
            cell_free(&c);
    }
    if (s == TQP_OK && r->n == 0)
        s = tqp_error_set(TQP_EINPUT, "%s: no cells (only blank lines and comments)", path);
    if (s != TQP_OK) tqp_report_free(r);
    return s;
}

tqp_status tqp_report_read_jobs(const char *path, tqp_report *r)
{
    char *text = NULL;
    size_t len = 0;
    memset(r, 0, sizeof *r);
    r->ppl_fp = NAN;
    r->seeds = 1;
    TQP_CHECK(tqp_file_read_all(path, &text, &len));
    tqp_status s = tqp_report_parse_jobs(path, text, r);
    free(text);
    return s;
}

/* ---- the JSON summaries ---------------------------------------------------------------------- */

/* Parse `text` as a JSON object; if it has a "command" it must be `command`. */
static tqp_status parse_object(const char *path, const char *text, const char *command,
                               cJSON **doc)
{
    const char *end = NULL;
    cJSON *d = cJSON_ParseWithOpts(text, &end, 1);
    if (!d) {
        int line = 1;
        for (const char *p = text; end && p < end && *p; p++)
            line += *p == '\n';
        return tqp_error_set(TQP_EINPUT, "%s: not valid JSON near line %d", path, line);
    }
    if (!cJSON_IsObject(d)) {
        cJSON_Delete(d);
        return tqp_error_set(TQP_EINPUT, "%s: not a JSON object", path);
    }
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(d, "command");
    if (cJSON_IsString(cmd) && strcmp(cmd->valuestring, command)) {
        tqp_status s = tqp_error_set(TQP_EINPUT, "%s: a tqp %s summary, not one of tqp %s", path,
                                     cmd->valuestring, command);
        cJSON_Delete(d);
        return s;
    }
    *doc = d;
    return TQP_OK;
}

/* A number field: NAN when absent or null, an error when of another type. */
static tqp_status get_number(const char *path, const cJSON *d, const char *key, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(d, key);
    *out = NAN;
    if (!v || cJSON_IsNull(v)) return TQP_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return tqp_error_set(TQP_EINPUT, "%s: field %s is not a number", path, key);
    *out = v->valuedouble;
    return TQP_OK;
}

/* A perplexity field: as get_number, and positive when present. */
static tqp_status get_ppl(const char *path, const cJSON *d, const char *key, double *out)
{
    TQP_CHECK(get_number(path, d, key, out));
    if (isfinite(*out) && !(*out > 0))
        return tqp_error_set(TQP_EINPUT, "%s: %s is %g, not a positive perplexity", path, key,
                             *out);
    return TQP_OK;
}

tqp_status tqp_report_parse_summary(const char *path, const char *text, tqp_report_cell *c)
{
    cJSON *d = NULL;
    TQP_CHECK(parse_object(path, text, "quantize", &d));
    double bits = NAN;
    tqp_status s = get_number(path, d, "bits", &bits);
    if (s == TQP_OK && isfinite(bits) && bits != c->bits)
        s = tqp_error_set(TQP_EMISMATCH, "%s: quantized at %g bits, but the job file says %d",
                          path, bits, c->bits);
    if (s == TQP_OK) s = get_ppl(path, d, "ppl_quantized", &c->ppl);
    if (s == TQP_OK) s = get_ppl(path, d, "ppl_full_precision", &c->ppl_fp);
    if (s == TQP_OK) s = get_number(path, d, "proxy_loss_mean", &c->proxy_loss_mean);
    if (s == TQP_OK) s = get_number(path, d, "bits_per_weight_code", &c->bpw_code);
    if (s == TQP_OK) s = get_number(path, d, "bits_per_weight_total", &c->bpw_total);
    if (s == TQP_OK) s = get_number(path, d, "seconds", &c->seconds);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(d, "tqp_version");
    if (s == TQP_OK && v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v))
            s = tqp_error_set(TQP_EINPUT, "%s: field tqp_version is not a string", path);
        else if (!(c->version = strdup(v->valuestring)))
            s = tqp_error_set(TQP_ENOMEM, "out of memory");
    }
    cJSON_Delete(d);
    return s;
}

tqp_status tqp_report_parse_eval(const char *path, const char *text, int want_quantized,
                                 double *ppl)
{
    cJSON *d = NULL;
    *ppl = NAN;
    TQP_CHECK(parse_object(path, text, "eval", &d));
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(d, "quantized");
    const cJSON *only = cJSON_GetObjectItemCaseSensitive(d, "only");
    tqp_status s = TQP_OK;
    if (want_quantized == 1 && !cJSON_IsString(q))
        s = tqp_error_set(TQP_EINPUT,
                          "%s: the evaluation of a full-precision model, not of a quantized one",
                          path);
    else if (want_quantized == 1 && cJSON_IsString(only))
        s = tqp_error_set(TQP_EINPUT,
                          "%s: an evaluation with only matrices %s quantized, not all of them",
                          path, only->valuestring);
    else if (want_quantized == 0 && cJSON_IsString(q))
        s = tqp_error_set(TQP_EINPUT,
                          "%s: the evaluation of the quantized model %s, not of full precision",
                          path, q->valuestring);
    if (s == TQP_OK) s = get_ppl(path, d, "ppl", ppl);
    cJSON_Delete(d);
    return s;
}

static tqp_status read_summary(const char *path, tqp_report_cell *c, int eval)
{
    char *text = NULL;
    size_t len = 0;
    TQP_CHECK(tqp_file_read_all(path, &text, &len));
    tqp_status s = eval ? tqp_report_parse_eval(path, text, 1, &c->ppl)
                        : tqp_report_parse_summary(path, text, c);
    free(text);
    return s;
}

/* One run of a cell: DIR/<method>-<bits><suffix>.json (and .eval.json) into c's numbers. */
static tqp_status load_run(const tqp_report *r, tqp_report_cell *c, const char *dir,
                           const char *suffix)
{
    char *path = str_printf("%s/%s-%d%s.json", dir, c->method, c->bits, suffix);
    char *epath = str_printf("%s/%s-%d%s.eval.json", dir, c->method, c->bits, suffix);
    tqp_status s = path && epath ? TQP_OK : TQP_ENOMEM;
    if (s == TQP_OK) s = read_summary(path, c, 0);
    struct stat st;
    if (s == TQP_OK && !isfinite(c->ppl) && stat(epath, &st) == 0) s = read_summary(epath, c, 1);
    if (s != TQP_OK && s != TQP_ENOMEM)
        tqp_error_set(s, "%s (cell %s %d, line %d of %s)", tqp_error_message(), c->method,
                      c->bits, c->line, r->jobs);
    free(path);
    free(epath);
    return s;
}

/* Mean of the finite values (NAN when none), and their minimum and maximum. */
static double stats(const double *v, int n, double *lo, double *hi)
{
    double sum = 0;
    int k = 0;
    *lo = *hi = NAN;
    for (int i = 0; i < n; i++) {
        if (!isfinite(v[i])) continue;
        sum += v[i], k++;
        *lo = k == 1 ? v[i] : fmin(*lo, v[i]);
        *hi = k == 1 ? v[i] : fmax(*hi, v[i]);
    }
    return k ? sum / k : NAN;
}

/* Every run of a cell (one, or one per seed), summarized. */
static tqp_status load_cell(const tqp_report *r, tqp_report_cell *c, const char *dir)
{
    int n = r->seeds > 0 ? r->seeds : 1;
    double v[6][64], lo, hi;
    for (int k = 0; k < n; k++) {
        char suffix[16] = "";
        if (r->seeds > 1) snprintf(suffix, sizeof suffix, "-s%d", k);
        cell_clear_numbers(c);
        TQP_CHECK(load_run(r, c, dir, suffix));
        v[0][k] = c->ppl, v[1][k] = c->ppl_fp, v[2][k] = c->proxy_loss_mean;
        v[3][k] = c->bpw_code, v[4][k] = c->bpw_total, v[5][k] = c->seconds;
    }
    c->ppl = stats(v[0], n, &c->ppl_min, &c->ppl_max);
    c->ppl_fp = stats(v[1], n, &lo, &hi);
    c->proxy_loss_mean = stats(v[2], n, &c->proxy_min, &c->proxy_max);
    c->bpw_code = stats(v[3], n, &lo, &hi);
    c->bpw_total = stats(v[4], n, &lo, &hi);
    c->seconds = stats(v[5], n, &lo, &hi);
    return TQP_OK;
}

tqp_status tqp_report_load(tqp_report *r, const char *dir, int allow_missing)
{
    r->ppl_fp = NAN;
    for (int i = 0; i < r->n; i++) {
        tqp_report_cell *c = &r->cells[i];
        tqp_status s = load_cell(r, c, dir);
        if (s == TQP_OK) {
            if (!isfinite(r->ppl_fp)) r->ppl_fp = c->ppl_fp;
            continue;
        }
        if (!allow_missing || s == TQP_ENOMEM) return s;
        cell_clear_numbers(c);
        c->missing = 1;
        free(c->why);
        c->why = strdup(tqp_error_message());
        if (!c->why) return tqp_error_set(TQP_ENOMEM, "out of memory");
        tqp_error_clear();
    }
    return TQP_OK;
}

/* ---- CSV and markdown -------------------------------------------------------------------- */

char *tqp_report_csv(const tqp_report *r)
{
    sbuf b = {0};
    sb_printf(&b, "method,bits,options,ppl,proxy_loss_mean,bits_per_weight_code,"
                  "bits_per_weight_total,quantize_seconds,seeds,ppl_min,ppl_max,proxy_loss_min,"
                  "proxy_loss_max\n");
    for (int i = 0; i < r->n; i++) {
        const tqp_report_cell *c = &r->cells[i];
        sb_csv(&b, c->method);
        sb_printf(&b, ",%d,", c->bits);
        sb_csv(&b, c->options);
        sb_num(&b, ",%.6f", c->ppl, ",");
        sb_num(&b, ",%.6g", c->proxy_loss_mean, ",");
        sb_num(&b, ",%.4f", c->bpw_code, ",");
        sb_num(&b, ",%.4f", c->bpw_total, ",");
        sb_num(&b, ",%.2f", c->seconds, ",");
        sb_printf(&b, ",%d", r->seeds);
        sb_num(&b, ",%.6f", c->ppl_min, ",");
        sb_num(&b, ",%.6f", c->ppl_max, ",");
        sb_num(&b, ",%.6g", c->proxy_min, ",");
        sb_num(&b, ",%.6g", c->proxy_max, ",");
        sb_printf(&b, "\n");
    }
    return sb_finish(&b);
}

char *tqp_report_markdown(const tqp_report *r, const char *title, const char *notes,
                          const char *svg_name)
{
    sbuf b = {0};
    sb_printf(&b, "# %s\n\n", title);
    if (notes && *notes) sb_printf(&b, "%s\n\n", notes);
    if (isfinite(r->ppl_fp)) sb_printf(&b, "Full precision: perplexity %.6f.\n\n", r->ppl_fp);
    int many = r->seeds > 1;
    if (many)
        sb_printf(&b, "Every cell ran %d times, with `tqp quantize --seed 0` to `--seed %d`: "
                      "perplexity and proxy loss are the mean over the seeds, with the minimum "
                      "and maximum in brackets; the other columns are means.\n\n",
                  r->seeds, r->seeds - 1);
    sb_printf(&b, "| method | bits | perplexity%s | mean relative proxy loss%s | code bits/weight | "
                  "total bits/weight | quantize wall time (s) |\n"
                  "|---|---|---|---|---|---|---|\n",
              many ? " (min-max)" : "", many ? " (min-max)" : "");
    int missing = 0;
    for (int i = 0; i < r->n; i++) {
        const tqp_report_cell *c = &r->cells[i];
        sb_printf(&b, "| ");
        sb_md(&b, c->method);
        sb_printf(&b, " | %d | ", c->bits);
        if (c->missing) {
            sb_printf(&b, "missing | - | - | - | - |\n");
            missing++;
            continue;
        }
        sb_num(&b, "%.4f", c->ppl, "-");
        if (many && isfinite(c->ppl_min))
            sb_printf(&b, " (%.4f-%.4f)", c->ppl_min, c->ppl_max);
        sb_num(&b, " | %.5f", c->proxy_loss_mean, " | -");
        if (many && isfinite(c->proxy_min))
            sb_printf(&b, " (%.5f-%.5f)", c->proxy_min, c->proxy_max);
        sb_num(&b, " | %.4f", c->bpw_code, " | -");
        sb_num(&b, " | %.4f", c->bpw_total, " | -");
        sb_num(&b, " | %.2f", c->seconds, " | -");
        sb_printf(&b, " |\n");
    }
    if (missing) {
        sb_printf(&b, "\nNo summary for %d cell%s:", missing, missing == 1 ? "" : "s");
        for (int i = 0, k = 0; i < r->n; i++)
            if (r->cells[i].missing)
                sb_printf(&b, "%s %s %d", k++ ? "," : "", r->cells[i].method, r->cells[i].bits);
        sb_printf(&b, ".\n");
    }
    /* The versions that wrote the summaries, each once, in order of appearance. */
    int nver = 0;
    for (int i = 0; i < r->n; i++) {
        const char *v = r->cells[i].version;
        int seen = 0;
        for (int j = 0; j < i && v && !seen; j++)
            seen = r->cells[j].version && !strcmp(r->cells[j].version, v);
        if (!v || seen) continue;
        sb_printf(&b, "%s%s", nver++ ? ", " : "\nSummaries written by tqp ", v);
    }
    if (nver) sb_printf(&b, "%s.\n", nver > 1 ? " (mixed versions)" : "");
    if (svg_name) sb_printf(&b, "\n![Perplexity against total bits per weight](%s)\n", svg_name);
    return sb_finish(&b);
}

/* ---- the SVG plot ----------------------------------------------------------------------------- */

/* Canvas and plot area, in pixels. */
enum { SVG_W = 820, SVG_H = 540, PLOT_L = 80, PLOT_R = 600, PLOT_T = 60, PLOT_B = 470 };

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define PALETTE_N ((int)(sizeof palette / sizeof palette[0]))

static int plotted(const tqp_report_cell *c)
{
    return !c->missing && isfinite(c->ppl) && c->ppl > 0 && isfinite(c->bpw_total);
}

/* Index of the first plotted cell of c's method, so that each method is drawn once. */
static int first_of_method(const tqp_report *r, int i)
{
    for (int j = 0; j < i; j++)
        if (plotted(&r->cells[j]) && !strcmp(r->cells[j].method, r->cells[i].method)) return j;
    return i;
}

void tqp_report_plotted(const tqp_report *r, int *points, int *methods)
{
    *points = *methods = 0;
    for (int i = 0; i < r->n; i++)
        if (plotted(&r->cells[i])) {
            (*points)++;
            *methods += first_of_method(r, i) == i;
        }
}

typedef struct {
    double x0, x1, step;  // x axis range and tick spacing (bits per weight)
    int dec_lo, dec_hi;   // y axis from 10^dec_lo to 10^dec_hi
} axes;

static double xpx(const axes *a, double v)
{
    return PLOT_L + (v - a->x0) / (a->x1 - a->x0) * (PLOT_R - PLOT_L);
}

static double ypx(const axes *a, double ppl)
{
    return PLOT_B - (log10(ppl) - a->dec_lo) / (a->dec_hi - a->dec_lo) * (PLOT_B - PLOT_T);
}

/* A round tick spacing (1, 2, 2.5 or 5 times a power of ten) giving about `target` steps. */
static double nice_step(double span, int target)
{
    double raw = span / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
}

static axes make_axes(const tqp_report *r)
{
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int i = 0; i < r->n; i++) {
        const tqp_report_cell *c = &r->cells[i];
        if (!plotted(c)) continue;
        xmin = fmin(xmin, c->bpw_total);
        xmax = fmax(xmax, c->bpw_total);
        ymin = fmin(ymin, c->ppl);
        ymax = fmax(ymax, c->ppl);
        if (isfinite(c->ppl_min) && c->ppl_min > 0) ymin = fmin(ymin, c->ppl_min);
        if (isfinite(c->ppl_max)) ymax = fmax(ymax, c->ppl_max);
    }
    if (isfinite(r->ppl_fp) && r->ppl_fp > 0) {
        ymin = fmin(ymin, r->ppl_fp);
        ymax = fmax(ymax, r->ppl_fp);
    }
    if (!(xmin <= xmax)) xmin = 2, xmax = 4;  // nothing to plot: a placeholder range
    if (!(ymin <= ymax)) ymin = 1, ymax = 10;
    axes a;
    double pad = xmax > xmin ? 0.05 * (xmax - xmin) : 0.5;
    a.step = nice_step(xmax - xmin + 2 * pad, 6);
    a.x0 = floor((xmin - pad) / a.step) * a.step;
    a.x1 = ceil((xmax + pad) / a.step) * a.step;
    a.dec_lo = (int)floor(log10(ymin) + 1e-12);
    a.dec_hi = (int)ceil(log10(ymax) - 1e-12);
    if (a.dec_hi <= a.dec_lo) a.dec_hi = a.dec_lo + 1;
    return a;
}

/* The label of 10^k: plain decimals over a wide range, else 1e<k>. */
static void decade_label(char *buf, size_t n, int k)
{
    if (k >= 0 && k <= 6)
        snprintf(buf, n, "%.0f", pow(10, k));
    else if (k < 0 && k >= -4)
        snprintf(buf, n, "%.*f", -k, pow(10, k));
    else
        snprintf(buf, n, "1e%d", k);
}

static void svg_marker(sbuf *b, double x, double y, const char *color)
{
    sb_printf(b, "<circle class=\"point\" cx=\"%.2f\" cy=\"%.2f\" r=\"4\" fill=\"%s\"", x, y,
              color);
}

static void svg_axes(sbuf *b, const axes *a)
{
    sb_printf(b, "<g class=\"grid\" stroke-width=\"1\">\n");
    for (int k = a->dec_lo; k < a->dec_hi; k++)
        for (int m = 2; m <= 9; m++) {
            double y = ypx(a, m * pow(10, k));
            sb_printf(b,
                      "<line class=\"yminor\" x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" "
                      "stroke=\"#eeeeee\"/>\n",
                      PLOT_L, y, PLOT_R, y);
            if (a->dec_hi - a->dec_lo == 1 && (m == 2 || m == 5))
                sb_printf(b,
                          "<text class=\"ylabel-minor\" x=\"%d\" y=\"%.2f\" text-anchor=\"end\" "
                          "fill=\"#666666\">%g</text>\n",
                          PLOT_L - 8, y + 4, m * pow(10, k));
        }
    char label[32];
    for (int k = a->dec_lo; k <= a->dec_hi; k++) {
        double y = ypx(a, pow(10, k));
        decade_label(label, sizeof label, k);
        sb_printf(b,
                  "<line class=\"ydecade\" x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" "
                  "stroke=\"#bbbbbb\"/>\n",
                  PLOT_L, y, PLOT_R, y);
        sb_printf(b, "<text class=\"ylabel\" x=\"%d\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n",
                  PLOT_L - 8, y + 4, label);
    }
    int nx = (int)lround((a->x1 - a->x0) / a->step);
    for (int i = 0; i <= nx; i++) {
        double v = a->x0 + i * a->step, x = xpx(a, v);
        sb_printf(b,
                  "<line class=\"xtick\" x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\" "
                  "stroke=\"#eeeeee\"/>\n",
                  x, PLOT_T, x, PLOT_B);
        sb_printf(b,
                  "<text class=\"xlabel\" x=\"%.2f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n",
                  x, PLOT_B + 18, round(v * 1e6) / 1e6);
    }
    sb_printf(b, "</g>\n");
    sb_printf(b,
              "<rect class=\"frame\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
              "stroke=\"#000000\"/>\n",
              PLOT_L, PLOT_T, PLOT_R - PLOT_L, PLOT_B - PLOT_T);
    sb_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">total bits per weight</text>\n",
              (PLOT_L + PLOT_R) / 2, PLOT_B + 42);
    sb_printf(b,
              "<text transform=\"translate(%d,%d) rotate(-90)\" text-anchor=\"middle\">"
              "perplexity (log scale)</text>\n",
              22, (PLOT_T + PLOT_B) / 2);
}

/* Cells of method `first`'s method that are plotted, in order of total bits per weight. */
static int series_points(const tqp_report *r, int first, int *idx)
{
    int n = 0;
    for (int i = first; i < r->n; i++) {
        const tqp_report_cell *c = &r->cells[i];
        if (!plotted(c) || strcmp(c->method, r->cells[first].method)) continue;
        int k = n++;
        for (; k > 0 && r->cells[idx[k - 1]].bpw_total > c->bpw_total; k--)
            idx[k] = idx[k - 1];
        idx[k] = i;
    }
    return n;
}

char *tqp_report_svg(const tqp_report *r, const char *title)
{
    int points, methods;
    tqp_report_plotted(r, &points, &methods);
    int legend_rows = methods + (isfinite(r->ppl_fp) ? 1 : 0);
    int height = PLOT_T + 22 * legend_rows + 20 > SVG_H ? PLOT_T + 22 * legend_rows + 20 : SVG_H;
    int *idx = tqp_malloc(((size_t)r->n + 1) * sizeof *idx);
    if (!idx) return NULL;
    axes a = make_axes(r);
    sbuf b = {0};
    sb_printf(&b,
              "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
              "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
              SVG_W, height, SVG_W, height);
    sb_printf(&b, "<title>");
    sb_xml(&b, title);
    sb_printf(&b, "</title>\n<rect width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", SVG_W, height);
    sb_printf(&b, "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">",
              (PLOT_L + PLOT_R) / 2);
    sb_xml(&b, title);
    sb_printf(&b,
              "</text>\n<text x=\"%d\" y=\"44\" text-anchor=\"middle\" fill=\"#444444\">"
              "perplexity against total bits per weight</text>\n",
              (PLOT_L + PLOT_R) / 2);
    svg_axes(&b, &a);
    if (!points)
        sb_printf(&b,
                  "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#666666\">no cell has "
                  "both a perplexity and total bits per weight</text>\n",
                  (PLOT_L + PLOT_R) / 2, (PLOT_T + PLOT_B) / 2);
    if (isfinite(r->ppl_fp)) {
        double y = ypx(&a, r->ppl_fp);
        sb_printf(&b,
                  "<line class=\"full-precision\" x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" "
                  "stroke=\"#000000\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\">"
                  "<title>full precision: perplexity %.4f</title></line>\n",
                  PLOT_L, y, PLOT_R, y, r->ppl_fp);
    }
    /* One series per method: a polyline through its points and a marker on each. */
    int legend_y = PLOT_T + 10, series = 0;
    for (int i = 0; i < r->n; i++) {
        if (!plotted(&r->cells[i]) || first_of_method(r, i) != i) continue;
        const char *color = palette[series % PALETTE_N];
        const char *dash = series >= PALETTE_N ? " stroke-dasharray=\"3 3\"" : "";
        int n = series_points(r, i, idx);
        sb_printf(&b, "<g class=\"series\">\n<polyline points=\"");
        for (int k = 0; k < n; k++) {
            const tqp_report_cell *c = &r->cells[idx[k]];
            sb_printf(&b, "%s%.2f,%.2f", k ? " " : "", xpx(&a, c->bpw_total), ypx(&a, c->ppl));
        }
        sb_printf(&b, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s/>\n", color, dash);
        for (int k = 0; k < n; k++) {
            const tqp_report_cell *c = &r->cells[idx[k]];
            double x = xpx(&a, c->bpw_total);
            if (isfinite(c->ppl_min) && c->ppl_min > 0 && c->ppl_max > c->ppl_min) {
                /* the range over the seeds: a bar with caps */
                double y0 = ypx(&a, c->ppl_min), y1 = ypx(&a, c->ppl_max);
                sb_printf(&b,
                          "<path class=\"range\" d=\"M%.2f,%.2f V%.2f M%.2f,%.2f H%.2f "
                          "M%.2f,%.2f H%.2f\" stroke=\"%s\" stroke-width=\"1.5\" fill=\"none\"/>\n",
                          x, y0, y1, x - 4, y0, x + 4, x - 4, y1, x + 4, color);
            }
            svg_marker(&b, x, ypx(&a, c->ppl), color);
            sb_printf(&b, "><title>");
            sb_xml(&b, c->method);
            sb_printf(&b, ", %d bits: perplexity %.4f", c->bits, c->ppl);
            if (r->seeds > 1 && isfinite(c->ppl_min))
                sb_printf(&b, " (%d seeds: %.4f to %.4f)", r->seeds, c->ppl_min, c->ppl_max);
            sb_printf(&b, " at %.4f bits/weight</title></circle>\n", c->bpw_total);
        }
        sb_printf(&b, "</g>\n");
        /* Its legend entry, right of the plot. */
        sb_printf(&b,
                  "<g class=\"legend\"><line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" "
                  "stroke=\"%s\" stroke-width=\"2\"%s/>",
                  PLOT_R + 20, legend_y, PLOT_R + 50, legend_y, color, dash);
        sb_printf(&b, "<circle cx=\"%d\" cy=\"%d\" r=\"4\" fill=\"%s\"/>", PLOT_R + 35, legend_y,
                  color);
        sb_printf(&b, "<text x=\"%d\" y=\"%d\">", PLOT_R + 58, legend_y + 4);
        sb_xml(&b, r->cells[i].method);
        sb_printf(&b, "</text></g>\n");
        legend_y += 22;
        series++;
    }
    if (isfinite(r->ppl_fp))
        sb_printf(&b,
                  "<g class=\"legend\"><line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" "
                  "stroke=\"#000000\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>"
                  "<text x=\"%d\" y=\"%d\">full precision (%.4f)</text></g>\n",
                  PLOT_R + 20, legend_y, PLOT_R + 50, legend_y, PLOT_R + 58, legend_y + 4,
                  r->ppl_fp);
    sb_printf(&b, "</svg>\n");
    free(idx);
    return sb_finish(&b);
}
