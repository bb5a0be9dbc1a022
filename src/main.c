/* The tqp command: MPI start-up, subcommand dispatch, and one clean exit path.  A failure on
 * any rank is agreed on by all ranks (tqp_mpi_agree) and reported once, by rank 0, as one line
 * "tqp <command>: error: <file>: <reason>"; the exit status is 2 for bad input or usage and 1
 * for other failures. */
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "tqp/cli.h"
#include "tqp/h5util.h"

typedef struct {
    const char *name;
    tqp_status (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"eval", tqp_cmd_eval, "perplexity of a model on a text (stream-windows protocol)"},
    {"convert", tqp_cmd_convert, "write a checkpoint as a Hugging Face directory"},
    {"hessian", tqp_cmd_hessian, "collect per-layer Hessians from calibration text into HDF5"},
    {"quantize", tqp_cmd_quantize, "quantize a model to 2-4 bits per weight into HDF5"},
    {"bench", tqp_cmd_bench, "benchmarks that print a table (tqp bench --help)"},
    {"tokenize", tqp_cmd_tokenize, "write a text's token ids as a pre-tokenized file"},
    {"plan", tqp_cmd_plan, "memory per rank and node, Viterbi work and time of a planned run"},
    {"generate", tqp_cmd_generate, "generate text from a prompt (KV cache, fused quantized kernels)"},
    {"report", tqp_cmd_report, "tables and plot of an ablation grid from its JSON summaries"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tqp <command> [options]    (run under mpiexec for several ranks)\n\n"
            "TQP %s, the Trellis Quantization Pipeline.\n\ncommands:\n",
            TQP_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'tqp <command> --help' lists a command's options and their defaults.\n");
}

static int finish(int rank, const char *cmd, tqp_status s)
{
    if (s != TQP_OK && rank == 0)
        fprintf(stderr, "tqp %s: error: %s\n", cmd,
                *tqp_error_message() ? tqp_error_message() : tqp_strerror(s));
    MPI_Finalize();
    return tqp_exit_code(s);
}

int main(int argc, char **argv)
{
    /* A file-size limit (ulimit -f) makes writes fail with EFBIG, reported like a full disk,
     * instead of killing the process. */
    signal(SIGXFSZ, SIG_IGN);
    /* tqp bench matvec is one process and needs no MPI: it runs where no MPI runtime is
     * installed (a GPU node with only the CUDA toolkit) */
    if (argc >= 3 && !strcmp(argv[1], "bench") && !strcmp(argv[2], "matvec")) {
        tqp_status s = tqp_bench_matvec(argc - 2, argv + 2);
        if (s != TQP_OK)
            fprintf(stderr, "tqp bench: error: %s\n",
                    *tqp_error_message() ? tqp_error_message() : tqp_strerror(s));
        return tqp_exit_code(s);
    }
    MPI_Init(&argc, &argv);
    tqp_h5_quiet();
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        if (rank == 0) usage(argc < 2 ? stderr : stdout);
        MPI_Finalize();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        if (rank == 0) printf("tqp %s\n", TQP_VERSION);
        MPI_Finalize();
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return finish(rank, argv[1], commands[i].run(argc - 1, argv + 1));
    if (rank == 0) fprintf(stderr, "tqp: unknown command '%s' (see tqp --help)\n", argv[1]);
    MPI_Finalize();
    return 2;
}
