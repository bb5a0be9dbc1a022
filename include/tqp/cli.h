/* Command-line plumbing shared by the subcommands: a table-driven option parser whose --help
 * lists every option with its default, the token-stream loader used by eval and calibration,
 * and JSON summaries. */
#ifndef TQP_CLI_H
#define TQP_CLI_H

#include <cjson/cJSON.h>
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tqp/error.h"
#include "tqp/model.h"

/* Path options are strings that the parser also checks, the same way in every command:
 * TQP_OPT_IN_FILE must name an existing regular file, TQP_OPT_IN_PATH an existing regular file
 * or directory (a checkpoint directory), TQP_OPT_IN_FILES a comma-separated list of regular
 * files, and a TQP_OPT_OUT must not name (directly, through a
 * link or a hard link) any input of the command, a checkpoint file inside an input directory,
 * or another output.  All of this is decided before anything is read or written. */
typedef enum {
    TQP_OPT_STRING,
    TQP_OPT_INT,
    TQP_OPT_DOUBLE,
    TQP_OPT_FLAG,
    TQP_OPT_IN_FILE,
    TQP_OPT_IN_PATH,
    TQP_OPT_IN_FILES,
    TQP_OPT_OUT,
} tqp_opt_kind;

typedef struct {
    const char *name; // "--ctx"
    tqp_opt_kind kind;
    void *dest;       // char ** (string and path kinds), int *, double * or int * (flag)
    const char *def;  // default as text; NULL = no default
    const char *meta; // value placeholder for --help ("N")
    const char *help;
    int required;
    double lo, hi; // INT and DOUBLE: accepted range [lo, hi] when lo < hi (printed by --help)
} tqp_opt;

/* The --threads option every phase shares (0: tqp_threads_auto). */
#define TQP_OPT_THREADS(dest)                                                                     \
    {"--threads", TQP_OPT_INT, (dest), "0", "T",                                                 \
     "threads per rank for every phase (0: the CPUs of the rank's affinity mask, shared with "    \
     "the node's ranks that overlap it); outputs do not depend on it",                            \
     0, 0, 1024}

typedef struct {
    const char *name;    // "eval"
    const char *summary; // one line
    const char *details; // paragraph printed under the usage, may be NULL
    tqp_opt *opts;
    int n_opts;
} tqp_cmd_spec;

/* Parse argv (argv[0] is the subcommand).  Applies defaults first.  On --help prints the usage
 * to stdout and sets *help. */
tqp_status tqp_opts_parse(const tqp_cmd_spec *spec, int argc, char **argv, int *help);
void tqp_opts_usage(const tqp_cmd_spec *spec, FILE *out);

/* Refuse (TQP_EUSAGE, naming the path and the option it would overwrite) an output path `out`,
 * written for option `what`, that names an input of `spec` (as the parser does for every
 * TQP_OPT_OUT; commands call it for outputs derived from an option, such as PREFIX.md). */
tqp_status tqp_opts_check_output(const tqp_cmd_spec *spec, const char *what, const char *out);

/* Collective.  Rank 0 reads the texts (tokenizing them with the tokenizer at `tokenizer_path`,
 * a llama2.c tokenizer.bin or a tokenizer.json, or the one found beside the model when NULL) or
 * the pre-tokenized `tokens_path`, and broadcasts the ids.  `text_path` is one file or a
 * comma-separated list; each file is a document, or, when its name ends in .jsonl, holds one
 * {"text": ...} document per line.  Documents are encoded in order: llama2.c tokenizers put BOS
 * first; a tokenizer.json adds what its post-processor adds and puts its EOS between documents.
 * *sha gets the SHA-256 of the file read (of the list of the files' SHA-256s, one per line, for
 * several files).  `m` may be NULL with a tokenizer.json (no vocabulary check then). */
tqp_status tqp_load_token_stream(MPI_Comm comm, const tqp_model *m, const char *tokenizer_path,
                                 const char *text_path, const char *tokens_path, uint32_t **tokens,
                                 size_t *ntokens, char sha[65]);

/* The tokenizer beside a model: <dir>/tokenizer.json, else <dir>/tokenizer.bin, else
 * <dir>/tok<vocab>.bin.  Returns a malloc'd path or NULL (with an error message) if none
 * exists. */
char *tqp_find_tokenizer(const tqp_model *m);
/* Whether `path` names a Hugging Face tokenizer (a directory, or a .json file) rather than a
 * llama2.c tokenizer.bin. */
int tqp_is_hf_tokenizer(const char *path);

/* Write a JSON document atomically (pretty-printed, trailing newline). */
tqp_status tqp_json_write(const char *path, const cJSON *doc);

/* Compare two JSON objects member by member, over the members of `b` (so a partial `b` checks
 * only what it names).  Returns 1 and describes the first difference in `buf` ("bits is 3
 * there, 2 now"), or 0 if they agree; unparsable text counts as a difference. */
int tqp_json_first_diff(const char *a, const char *b, char *buf, size_t cap);

/* Check a --validate-on value: auto and cpu (and none where allow_none) are accepted and run on
 * the CPU; gpu is refused with the reason (no device, or no GPU evaluation yet). */
tqp_status tqp_check_validate_on(const char *where, int allow_none);

/* Subcommands: each returns a status; the caller prints the error and sets the exit code. */
tqp_status tqp_cmd_eval(int argc, char **argv);
tqp_status tqp_cmd_convert(int argc, char **argv);
tqp_status tqp_cmd_tokenize(int argc, char **argv);
tqp_status tqp_cmd_hessian(int argc, char **argv);
tqp_status tqp_cmd_bench(int argc, char **argv);
tqp_status tqp_cmd_quantize(int argc, char **argv);
tqp_status tqp_cmd_report(int argc, char **argv);
tqp_status tqp_cmd_plan(int argc, char **argv);
tqp_status tqp_cmd_generate(int argc, char **argv);
tqp_status tqp_bench_trellis(int argc, char **argv);     // tqp bench trellis
tqp_status tqp_bench_quantize_memory(int argc, char **argv); // tqp bench quantize-memory
tqp_status tqp_bench_matvec(int argc, char **argv);          // tqp bench matvec
tqp_status tqp_bench_chol(int argc, char **argv);            // tqp bench chol
tqp_status tqp_bench_infer(int argc, char **argv);           // tqp bench infer

/* The CPU's model name, from /proc/cpuinfo ("unknown CPU" when it cannot be read). */
void tqp_cpu_name(char *buf, size_t cap);

#endif
