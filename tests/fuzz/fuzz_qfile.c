/* The quantized-file reader (tqp eval --quantized) on structure-aware mutations of valid
 * files: $TQP_FUZZ_QFILE, a ':'-separated list (a scalar and a trellis file, say; the input's
 * length chooses one), made by tools/fuzz-corpus.sh from the model $TQP_FUZZ_MODEL.  Every
 * matrix of the mutated copy is opened and decoded; a mutation must be refused with an error,
 * never crash, and a matrix that decodes must be finite. */
#include <mpi.h>

#include "fuzz_h5mut.h"
#include "fuzz_util.h"
#include "tqp/h5util.h"
#include "tqp/qfile.h"

static tqp_model *model;
static char *bases[8];
static int n_bases;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    MPI_Init(argc, argv);
    tqp_h5_quiet();
    const char *list = getenv("TQP_FUZZ_QFILE"), *mpath = getenv("TQP_FUZZ_MODEL");
    char *copy = list ? strdup(list) : NULL, *save = NULL;
    for (char *t = copy ? strtok_r(copy, ":", &save) : NULL; t && n_bases < 8;
         t = strtok_r(NULL, ":", &save))
        bases[n_bases++] = t;
    if (!n_bases || !mpath || tqp_model_load(mpath, &model) != TQP_OK) {
        fprintf(stderr,
                "fuzz_qfile: set TQP_FUZZ_QFILE and TQP_FUZZ_MODEL "
                "(tools/fuzz-corpus.sh makes them): %s\n",
                tqp_error_message());
        exit(2);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];
    snprintf(path, sizeof path, "%s/q.h5", fuzz_dir());
    if (copy_file(bases[size / 16 % (size_t)n_bases], path) != 0) return 0;
    char *files[1] = {path};
    h5_mutate(files, 1, data, size);
    tqp_qfile *q = NULL;
    if (tqp_qfile_open(path, model, &q) == TQP_OK) {
        for (int l = 0; l < model->cfg.n_layers; l++)
            for (int i = 0; i < TQP_QMATS; i++) {
                int64_t r, c;
                tqp_layer_tensor_shape(&model->cfg, tqp_qmat_tensor(i), &r, &c);
                double *W = malloc(sizeof(double) * (size_t)(r * c));
                tqp_qmat_info info;
                if (W && tqp_qfile_decode(q, l, i, &info, W) == TQP_OK)
                    for (int64_t k = 0; k < r * c; k++)
                        if (!isfinite(W[k]) || fabs(W[k]) > 3.4e38) abort();
                free(W);
            }
        tqp_qfile_close(&q);
    }
    return 0;
}
