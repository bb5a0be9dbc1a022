/* tqp report's inputs on arbitrary text: the job file (through its reader, from a file), a
 * tqp quantize summary and a tqp eval summary; cells that parse are rendered as CSV, markdown
 * and SVG. */
#include <math.h>

#include "fuzz_util.h"
#include "tqp/report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];
    if (!fuzz_write("jobs.txt", data, size, path, sizeof path)) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    tqp_report r = {0};
    if (tqp_report_read_jobs(path, &r) == TQP_OK) {
        r.ppl_fp = NAN;
        for (int i = 0; i < r.n; i++)
            tqp_report_parse_summary("sum.json", text, &r.cells[i]);
        free(tqp_report_csv(&r));
        free(tqp_report_markdown(&r, "t", text, "p.svg"));
        free(tqp_report_svg(&r, text));
    }
    tqp_report_free(&r);
    tqp_report_cell c = {0};
    c.bits = 2;
    c.method = strdup("RTN");
    tqp_report_parse_summary("sum.json", text, &c);
    free(c.method);
    free(c.options);
    free(c.version);
    double ppl;
    for (int w = -1; w <= 1; w++)
        tqp_report_parse_eval("eval.json", text, w, &ppl);
    free(text);
    return 0;
}
