/* Tests for the report module: job-file parsing and its errors, the JSON summaries (absent
 * fields, wrong types, mismatches), and the CSV, markdown and SVG texts (quoting, escaping,
 * unknown numbers, one polyline per plotted method). */
#include "tqp/report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void test_jobs(void)
{
    tqp_report r;
    const char *text = "# a grid\n"
                       "RTN   2 --rotation none    --rounding nearest\n"
                       "\n"
                       "   \t\n"
                       "QuIP\t3 --rotation rht # the usual\n"
                       "bare 4\n"
                       "# RTN 5 commented out\n"
                       "last 2 --x";
    CHECK(tqp_report_parse_jobs("g.txt", text, &r) == TQP_OK);
    CHECK(r.n == 4);
    if (r.n == 4) {
        CHECK(!strcmp(r.cells[0].method, "RTN") && r.cells[0].bits == 2 && r.cells[0].line == 2);
        CHECK(!strcmp(r.cells[0].options, "--rotation none --rounding nearest"));
        CHECK(!strcmp(r.cells[1].method, "QuIP") && r.cells[1].bits == 3 && r.cells[1].line == 5);
        CHECK(!strcmp(r.cells[1].options, "--rotation rht"));
        CHECK(!strcmp(r.cells[2].options, "") && r.cells[2].line == 6);
        CHECK(!strcmp(r.cells[3].method, "last") && r.cells[3].line == 8);
        CHECK(isnan(r.cells[0].ppl) && isnan(r.cells[0].bpw_total) && !r.cells[0].missing);
    }
    CHECK(!strcmp(r.jobs, "g.txt"));
    tqp_report_free(&r);

    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"RTN 2\nGPTQ x --a\n", "g.txt:2: bits 'x' is not a whole number"},
        {"RTN 2.5\n", "g.txt:1: bits '2.5'"},
        {"RTN 0\n", "g.txt:1: bits '0'"},
        {"RTN 33\n", "g.txt:1: bits '33'"},
        {"\n\nlonely\n", "g.txt:3: expected '<method> <bits>"},
        {"a/b 2\n", "g.txt:1: method 'a/b' contains '/'"},
        {"RTN 2\nQuIP 2\nRTN 2 --x\n", "g.txt:3: RTN at 2 bits is already on line 1"},
        {"# only a comment\n\n", "g.txt: no cells"},
        {"", "g.txt: no cells"},
        {"@seeds 3\nRTN 2\n@seeds 2\n", "g.txt:3: @seeds again (first on line 1)"},
        {"@seeds 0\nRTN 2\n", "g.txt:1: expected '@seeds N' with N from 1 to 64"},
        {"@seeds 65\nRTN 2\n", "g.txt:1: expected '@seeds N'"},
        {"@seeds 2 3\nRTN 2\n", "g.txt:1: expected '@seeds N'"},
        {"@seeds\nRTN 2\n", "g.txt:1: expected '@seeds N'"},
        {"RTN 2\n  @runs 2\n", "g.txt:2: unknown directive '@runs'"},
        {"@seeds 3\n", "g.txt: no cells"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tqp_status s = tqp_report_parse_jobs("g.txt", bad[i].text, &r);
        CHECK_MSG(s == TQP_EINPUT, "case %zu: status %d", i, (int)s);
        CHECK_MSG(strstr(tqp_error_message(), bad[i].msg), "case %zu: '%s'", i,
                  tqp_error_message());
        CHECK(r.n == 0 && r.cells == NULL);
    }
}

static tqp_report_cell blank_cell(int bits)
{
    tqp_report_cell c;
    memset(&c, 0, sizeof c);
    c.bits = bits;
    c.ppl = c.ppl_fp = c.proxy_loss_mean = c.bpw_code = c.bpw_total = c.seconds = NAN;
    return c;
}

static void test_summaries(void)
{
    tqp_report_cell c = blank_cell(3);
    CHECK(tqp_report_parse_summary("s.json",
                                   "{\"command\": \"quantize\", \"tqp_version\": \"9.9\", "
                                   "\"bits\": 3, \"ppl_quantized\": 12.5, "
                                   "\"proxy_loss_mean\": 0.25, \"bits_per_weight_code\": 3, "
                                   "\"bits_per_weight_total\": 3.0625, \"seconds\": 1.5, "
                                   "\"matrices\": []}",
                                   &c) == TQP_OK);
    CHECK(c.ppl == 12.5 && isnan(c.ppl_fp) && c.proxy_loss_mean == 0.25);
    CHECK(c.bpw_code == 3 && c.bpw_total == 3.0625 && c.seconds == 1.5);
    CHECK(c.version && !strcmp(c.version, "9.9"));
    free(c.version);

    c = blank_cell(2);
    CHECK(tqp_report_parse_summary("s.json", "{\"ppl_full_precision\": 5.5, \"seconds\": null}",
                                   &c) == TQP_OK);
    CHECK(c.ppl_fp == 5.5 && isnan(c.ppl) && isnan(c.seconds) && !c.version);

    static const struct {
        const char *text, *msg;
        tqp_status s;
    } bad[] = {
        {"{\"bits\": 3}", "s.json: quantized at 3 bits, but the job file says 2", TQP_EMISMATCH},
        {"{\"seconds\": \"fast\"}", "s.json: field seconds is not a number", TQP_EINPUT},
        {"{\"ppl_quantized\": -1}", "s.json: ppl_quantized is -1", TQP_EINPUT},
        {"{\"command\": \"eval\"}", "s.json: a tqp eval summary", TQP_EINPUT},
        {"[1, 2]", "s.json: not a JSON object", TQP_EINPUT},
        {"{\n\"a\": 1,\n}", "s.json: not valid JSON near line 3", TQP_EINPUT},
        {"{} trailing", "s.json: not valid JSON", TQP_EINPUT},
        {"", "s.json: not valid JSON", TQP_EINPUT},
        {"{\"tqp_version\": 1}", "s.json: field tqp_version is not a string", TQP_EINPUT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = blank_cell(2);
        tqp_status s = tqp_report_parse_summary("s.json", bad[i].text, &c);
        CHECK_MSG(s == bad[i].s, "case %zu: status %d", i, (int)s);
        CHECK_MSG(strstr(tqp_error_message(), bad[i].msg), "case %zu: '%s'", i,
                  tqp_error_message());
        free(c.version);
    }

    double ppl = 0;
    const char *qeval = "{\"command\": \"eval\", \"quantized\": \"q.h5\", \"ppl\": 7.25}";
    const char *fpeval = "{\"command\": \"eval\", \"ppl\": 5.5}";
    CHECK(tqp_report_parse_eval("e.json", qeval, 1, &ppl) == TQP_OK && ppl == 7.25);
    CHECK(tqp_report_parse_eval("e.json", qeval, -1, &ppl) == TQP_OK && ppl == 7.25);
    CHECK(tqp_report_parse_eval("e.json", fpeval, 0, &ppl) == TQP_OK && ppl == 5.5);
    CHECK(tqp_report_parse_eval("e.json", fpeval, 1, &ppl) == TQP_EINPUT);
    CHECK(strstr(tqp_error_message(), "e.json: the evaluation of a full-precision model"));
    CHECK(tqp_report_parse_eval("e.json", qeval, 0, &ppl) == TQP_EINPUT);
    CHECK(strstr(tqp_error_message(), "quantized model q.h5"));
    CHECK(tqp_report_parse_eval("e.json",
                                "{\"quantized\": \"q.h5\", \"only\": \"q,k\", \"ppl\": 6}", 1,
                                &ppl) == TQP_EINPUT);
    CHECK(tqp_report_parse_eval("e.json", "{\"command\": \"quantize\"}", -1, &ppl) == TQP_EINPUT);
    CHECK(tqp_report_parse_eval("e.json", "{}", -1, &ppl) == TQP_OK && isnan(ppl));
}

static void test_render(void)
{
    tqp_report r;
    CHECK(tqp_report_parse_jobs("g.txt",
                                "A|B 2 --x a,b\n"
                                "A|B 3\n"
                                "C 2 --q=\"v\"\n"
                                "D 2\n"
                                "E 4\n",
                                &r) == TQP_OK);
    if (r.n != 5) return;
    double ppl[5] = {100, 10, 50, NAN, 7}, bpw[5] = {2.1, 3.1, 2.2, 2.2, NAN};
    for (int i = 0; i < 5; i++) {
        r.cells[i].ppl = ppl[i];
        r.cells[i].bpw_total = bpw[i];
        r.cells[i].bpw_code = r.cells[i].bits;
        r.cells[i].proxy_loss_mean = 0.125;
        r.cells[i].seconds = 2;
    }
    r.cells[4].missing = 1;
    r.ppl_fp = 5;

    char *csv = tqp_report_csv(&r);
    CHECK(csv && count(csv, "\n") == 6);
    CHECK(csv && strstr(csv, "\nA|B,2,\"--x a,b\",100.000000,0.125,2.0000,2.1000,2.00,1,,,,\n"));
    CHECK(csv && strstr(csv, "\nC,2,\"--q=\"\"v\"\"\",50.000000,"));
    CHECK(csv && strstr(csv, "\nD,2,,,0.125,2.0000,2.2000,2.00,1,,,,\n"));
    free(csv);

    char *md = tqp_report_markdown(&r, "T", "Notes here.", "x.svg");
    const char *head = "# T\n\nNotes here.\n\nFull precision: perplexity 5.000000.\n\n| method |";
    CHECK(md && !strncmp(md, head, strlen(head)));
    CHECK(md && strstr(md, "\n| A\\|B | 2 | 100.0000 | 0.12500 | 2.0000 | 2.1000 | 2.00 |\n"));
    CHECK(md && strstr(md, "\n| D | 2 | - | 0.12500 |"));
    CHECK(md && strstr(md, "\n| E | 4 | missing | - | - | - | - |\n"));
    CHECK(md && strstr(md, "No summary for 1 cell: E 4."));
    CHECK(md && strstr(md, "](x.svg)\n"));
    free(md);

    int points, methods;
    tqp_report_plotted(&r, &points, &methods);
    CHECK(points == 3 && methods == 2);
    char *svg = tqp_report_svg(&r, "a <b> & c");
    CHECK(svg && count(svg, "<polyline ") == 2);
    CHECK(svg && count(svg, "<circle class=\"point\"") == 3);
    CHECK(svg && count(svg, "class=\"full-precision\"") == 1);
    CHECK(svg && strstr(svg, "<title>a &lt;b&gt; &amp; c</title>"));
    CHECK(svg && !strstr(svg, "<b>"));
    CHECK(svg && count(svg, "<svg ") == 1 && strstr(svg, "</svg>\n") &&
          !strcmp(strstr(svg, "</svg>\n"), "</svg>\n"));
    /* Decades 1..100 (ppl from 5 to 100): three major lines. */
    CHECK(svg && count(svg, "class=\"ydecade\"") == 3);
    free(svg);
    tqp_report_free(&r);
}

/* "@seeds N": every cell's N summaries, mean, minimum and maximum, and their renderings. */
static void test_seeds(void)
{
    tqp_report r;
    CHECK(tqp_report_parse_jobs("s.txt", "A 2 --x\n @seeds 3 # three sign seeds\nB 3\n", &r) ==
          TQP_OK);
    CHECK(r.n == 2 && r.seeds == 3);
    char dir[] = "/tmp/tqp_test_report_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    /* A: ppl 40, 50, 45 (mean 45); proxy 0.1, 0.2, 0.3.  B: the perplexity in .eval.json. */
    static const double ppl[3] = {40, 50, 45}, proxy[3] = {0.1, 0.2, 0.3};
    char path[256];
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/A-2-s%d.json", dir, k);
        FILE *f = fopen(path, "w");
        if (f) fprintf(f, "{\"command\": \"quantize\", \"bits\": 2, \"ppl_quantized\": %g, "
                          "\"ppl_full_precision\": 5, \"proxy_loss_mean\": %g, "
                          "\"bits_per_weight_total\": 2.05, \"seconds\": %d}", ppl[k], proxy[k], k + 1),
                fclose(f);
        snprintf(path, sizeof path, "%s/B-3-s%d.json", dir, k);
        if ((f = fopen(path, "w")))
            fprintf(f, "{\"command\": \"quantize\", \"bits\": 3, \"bits_per_weight_total\": 3.05}"),
                fclose(f);
        snprintf(path, sizeof path, "%s/B-3-s%d.eval.json", dir, k);
        if ((f = fopen(path, "w"))) fprintf(f, "{\"quantized\": \"q.h5\", \"ppl\": 9}"), fclose(f);
    }
    CHECK(tqp_report_load(&r, dir, 0) == TQP_OK);
    if (r.n == 2) {
        CHECK_NEAR(r.cells[0].ppl, 45, 1e-12);
        CHECK(r.cells[0].ppl_min == 40 && r.cells[0].ppl_max == 50);
        CHECK_NEAR(r.cells[0].proxy_loss_mean, 0.2, 1e-12);
        CHECK(r.cells[0].proxy_min == 0.1 && r.cells[0].proxy_max == 0.3);
        CHECK_NEAR(r.cells[0].seconds, 2, 1e-12);
        CHECK(r.cells[1].ppl == 9 && r.cells[1].ppl_min == 9 && r.cells[1].ppl_max == 9);
        CHECK(r.ppl_fp == 5);
    }
    char *csv = tqp_report_csv(&r);
    CHECK(csv && strstr(csv, "\nA,2,--x,45.000000,0.2,,2.0500,2.00,3,40.000000,50.000000,0.1,0.3\n"));
    free(csv);
    char *md = tqp_report_markdown(&r, "T", NULL, NULL);
    CHECK(md && strstr(md, "Every cell ran 3 times"));
    CHECK(md && strstr(md, "| A | 2 | 45.0000 (40.0000-50.0000) | 0.20000 (0.10000-0.30000) |"));
    free(md);
    char *svg = tqp_report_svg(&r, "T");
    CHECK(svg && count(svg, "class=\"range\"") == 1); /* B's three runs agree: no bar */
    CHECK(svg && strstr(svg, "(3 seeds: 40.0000 to 50.0000)"));
    free(svg);
    /* one seed's summary missing: an error naming it, or a missing cell */
    snprintf(path, sizeof path, "%s/A-2-s1.json", dir);
    remove(path);
    CHECK(tqp_report_load(&r, dir, 0) != TQP_OK);
    CHECK(strstr(tqp_error_message(), "A-2-s1.json"));
    CHECK(tqp_report_load(&r, dir, 1) == TQP_OK && r.cells[0].missing && !r.cells[1].missing);
    tqp_error_clear();
    for (int k = 0; k < 3; k++) {
        const char *names[] = {"A-2-s%d.json", "B-3-s%d.json", "B-3-s%d.eval.json"};
        for (int f = 0; f < 3; f++) {
            char name[64];
            snprintf(name, sizeof name, names[f], k);
            snprintf(path, sizeof path, "%s/%s", dir, name);
            remove(path);
        }
    }
    rmdir(dir);
    tqp_report_free(&r);
}

int main(void)
{
    test_jobs();
    test_seeds();
    test_summaries();
    test_render();
    return check_done();
}
