/* Calibration windows sharded over ranks (see include/tqp/calib.h). */
#include "tqp/calib.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tqp/cli.h"
#include "tqp/io.h"
#include "tqp/mpiutil.h"
#include "tqp/rng.h"
#include "tqp/tokenizer.h"

tqp_status tqp_calib_starts(int64_t ntok, int nsamples, int ctx, int random, uint64_t seed,
                            const char *what, int64_t *starts)
{
    if (nsamples < 1 || ctx < 2)
        return tqp_error_set(TQP_EUSAGE, "--nsamples %d and --ctx %d must be >= 1 and >= 2",
                             nsamples, ctx);
    if (!random && ntok < (int64_t)nsamples * ctx)
        return tqp_error_set(TQP_EINPUT, "%s: %lld tokens, but %d windows of %d need %lld", what,
                             (long long)ntok, nsamples, ctx, (long long)nsamples * ctx);
    if (random && ntok < ctx)
        return tqp_error_set(TQP_EINPUT, "%s: %lld tokens, fewer than one window of %d", what,
                             (long long)ntok, ctx);
    /* Drawn windows may overlap, but more of them than there are distinct windows in the
     * text only repeats windows (and asks for memory in proportion). */
    if (random && (int64_t)nsamples > ntok - ctx + 1)
        return tqp_error_set(TQP_EUSAGE,
                             "--nsamples %d: %s has only %lld distinct windows of %d tokens",
                             nsamples, what, (long long)(ntok - ctx + 1), ctx);
    uint64_t s = seed, span = (uint64_t)(ntok - ctx + 1);
    for (int k = 0; k < nsamples; k++)
        starts[k] = random ? (int64_t)(tqp_splitmix64(&s) % span) : (int64_t)k * ctx;
    return TQP_OK;
}

/* Rank 0 holds the whole stream: send every rank its windows (in window order). */
static tqp_status scatter_windows(MPI_Comm comm, const uint32_t *stream, const int64_t *starts,
                                  tqp_calib *c)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    size_t mine = (size_t)(c->w1 - c->w0) * c->ctx;
    c->tokens = tqp_malloc((mine + 1) * sizeof *c->tokens);
    TQP_CHECK(tqp_mpi_agree(comm, c->tokens ? TQP_OK : TQP_ENOMEM));
    if (rank == 0) {
        for (int r = 0; r < P; r++) {
            long b, e;
            tqp_partition(c->nsamples, P, r, &b, &e);
            for (long w = b; w < e; w++) {
                const uint32_t *src = stream + starts[w];
                if (r == 0)
                    memcpy(c->tokens + (w - b) * c->ctx, src, sizeof *src * c->ctx);
                else
                    TQP_MPI_CHECK(MPI_Send(src, c->ctx, MPI_UINT32_T, r, (int)(w & 0x7fff), comm));
            }
        }
    } else {
        for (long w = c->w0; w < c->w1; w++)
            TQP_MPI_CHECK(MPI_Recv(c->tokens + (w - c->w0) * c->ctx, c->ctx, MPI_UINT32_T, 0,
                                   (int)(w & 0x7fff), comm, MPI_STATUS_IGNORE));
    }
    return TQP_OK;
}

static tqp_status from_text(MPI_Comm comm, const tqp_model *m, const char *tok_path,
                            const char *text, tqp_calib *c, int64_t **starts)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    uint32_t *stream = NULL;
    size_t n = 0;
    tqp_status s = TQP_OK;
    *starts = tqp_malloc(sizeof **starts * (size_t)c->nsamples);
    if (!*starts) s = TQP_ENOMEM;
    if (s == TQP_OK && rank == 0) {
        s = tqp_load_token_stream(MPI_COMM_SELF, m, tok_path, text, NULL, &stream, &n, c->sha256);
        if (s == TQP_OK)
            s = tqp_calib_starts((int64_t)n, c->nsamples, c->ctx, c->random, c->seed, text,
                                 *starts);
        c->stream_tokens = (int64_t)n;
    }
    s = tqp_mpi_agree(comm, s);
    if (s == TQP_OK)
        s = MPI_Bcast(*starts, c->nsamples, MPI_INT64_T, 0, comm) == MPI_SUCCESS
                ? TQP_OK
                : tqp_error_set(TQP_EMPI, "MPI_Bcast failed");
    if (s == TQP_OK) s = scatter_windows(comm, stream, *starts, c);
    free(stream);
    return s;
}

/* Every rank reads its own windows from the token file with pread. */
static tqp_status read_token_windows(const char *path, int vocab, const int64_t *starts,
                                     tqp_calib *c)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tqp_error_set(TQP_ENOENT, "%s: cannot open", path);
    size_t mine = (size_t)(c->w1 - c->w0) * c->ctx;
    c->tokens = tqp_malloc((mine + 1) * sizeof *c->tokens);
    tqp_status s = c->tokens ? TQP_OK : TQP_ENOMEM;
    for (long w = c->w0; w < c->w1 && s == TQP_OK; w++) {
        uint32_t *dst = c->tokens + (w - c->w0) * c->ctx;
        size_t want = sizeof *dst * (size_t)c->ctx;
        if (pread(fd, dst, want, (off_t)starts[w] * 4) != (ssize_t)want)
            s = tqp_error_set(TQP_EIO, "%s: short read", path);
        for (int t = 0; t < c->ctx && s == TQP_OK; t++)
            if (dst[t] >= (uint32_t)vocab)
                s = tqp_error_set(TQP_EINPUT, "%s: token %u at index %lld is >= vocab size %d",
                                  path, dst[t], (long long)(starts[w] + t), vocab);
    }
    close(fd);
    return s;
}

static tqp_status from_tokens(MPI_Comm comm, const tqp_model *m, const char *path, tqp_calib *c,
                              int64_t **starts)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    struct stat st;
    tqp_status s = TQP_OK;
    if (stat(path, &st) != 0)
        s = tqp_error_set(TQP_ENOENT, "%s: no such file", path);
    else if (st.st_size % 4 != 0 || st.st_size == 0)
        s = tqp_error_set(TQP_EINPUT, "%s: %lld bytes is not a whole number of uint32 tokens", path,
                          (long long)st.st_size);
    c->stream_tokens = s == TQP_OK ? st.st_size / 4 : 0;
    *starts = tqp_malloc(sizeof **starts * (size_t)c->nsamples);
    if (s == TQP_OK && !*starts) s = TQP_ENOMEM;
    if (s == TQP_OK)
        s = tqp_calib_starts(c->stream_tokens, c->nsamples, c->ctx, c->random, c->seed, path,
                             *starts);
    if (s == TQP_OK && rank == 0) s = tqp_sha256_file(path, c->sha256);
    TQP_CHECK(tqp_mpi_agree(comm, s));
    TQP_MPI_CHECK(MPI_Bcast(c->sha256, 65, MPI_CHAR, 0, comm));
    return tqp_mpi_agree(comm, read_token_windows(path, m->cfg.vocab_size, *starts, c));
}

tqp_status tqp_calib_load(MPI_Comm comm, const tqp_model *m, const char *tokenizer,
                          const char *text_path, const char *tokens_path, int nsamples, int ctx,
                          int random, uint64_t seed, tqp_calib *c)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    memset(c, 0, sizeof *c);
    c->nsamples = nsamples;
    c->ctx = ctx;
    c->random = random;
    c->seed = seed;
    if (nsamples < 1 || ctx < 2 || ctx > m->cfg.max_seq_len)
        return tqp_error_set(TQP_EUSAGE,
                             "--nsamples %d / --ctx %d: need nsamples >= 1 and "
                             "2 <= ctx <= %d (the model's maximum)",
                             nsamples, ctx, m->cfg.max_seq_len);
    /* Every rank holds the activations of its windows for the whole run: refuse up front what
     * the node's memory cannot hold, before reading anything. */
    double local_ranks = 1, node_bytes = 0;
    TQP_CHECK(tqp_node_memory(comm, &node_bytes, &local_ranks));
    double per_rank = ((double)nsamples + P - 1) / P * ctx * (4.0 * m->cfg.dim + 4.0);
    if (node_bytes > 0 && per_rank * local_ranks > node_bytes)
        return tqp_error_set(TQP_EUSAGE,
                             "--nsamples %d x --ctx %d: the activations take %.3g GB per rank, "
                             "%.3g GB for the %g ranks on this node, more than its %.3g GB of "
                             "memory (fewer windows, or more nodes)",
                             nsamples, ctx, per_rank / 1e9, per_rank * local_ranks / 1e9,
                             local_ranks, node_bytes / 1e9);
    tqp_partition(nsamples, P, rank, &c->w0, &c->w1);
    int64_t *starts = NULL;
    tqp_status s = tokens_path ? from_tokens(comm, m, tokens_path, c, &starts)
                               : from_text(comm, m, tokenizer, text_path, c, &starts);
    free(starts);
    if (s == TQP_OK) {
        long long n = c->stream_tokens;
        TQP_MPI_CHECK(MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, comm));
        TQP_MPI_CHECK(MPI_Bcast(c->sha256, 65, MPI_CHAR, 0, comm));
        c->stream_tokens = n;
    }
    return s;
}

void tqp_calib_free(tqp_calib *c)
{
    free(c->tokens);
    c->tokens = NULL;
}
