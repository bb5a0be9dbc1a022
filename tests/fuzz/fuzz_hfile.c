/* The Hessian-file reader (tqp quantize --hessians) on structure-aware mutations of a valid
 * index and its layer files: $TQP_FUZZ_HFILE (with its .layers directory), made by
 * tools/fuzz-corpus.sh from the model $TQP_FUZZ_MODEL.  Every group of every layer is read; a
 * mutation must be refused with an error, never crash, and what reads must be finite. */
#include <dirent.h>
#include <mpi.h>

#include "fuzz_h5mut.h"
#include "fuzz_util.h"
#include "tqp/forward.h"
#include "tqp/h5util.h"
#include "tqp/hstore.h"

static tqp_model *model;
static char fingerprint[65];
static const char *base;
static char *layer_names[64];
static int n_layer_files;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    MPI_Init(argc, argv);
    tqp_h5_quiet();
    base = getenv("TQP_FUZZ_HFILE");
    const char *mpath = getenv("TQP_FUZZ_MODEL");
    if (!base || !mpath || tqp_model_load(mpath, &model) != TQP_OK ||
        tqp_model_fingerprint(model, fingerprint) != TQP_OK) {
        fprintf(stderr,
                "fuzz_hfile: set TQP_FUZZ_HFILE and TQP_FUZZ_MODEL "
                "(tools/fuzz-corpus.sh makes them): %s\n",
                tqp_error_message());
        exit(2);
    }
    char dir[700];
    snprintf(dir, sizeof dir, "%s.layers", base);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) && n_layer_files < 64)
        if (de->d_name[0] != '.') layer_names[n_layer_files++] = strdup(de->d_name);
    if (d) closedir(d);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600], dir[700], from[1400], to[1400];
    snprintf(path, sizeof path, "%s/h.h5", fuzz_dir());
    snprintf(dir, sizeof dir, "%s.layers", path);
    mkdir(dir, 0755);
    if (copy_file(base, path) != 0) return 0;
    char *files[65] = {path};
    int nf = 1;
    for (int i = 0; i < n_layer_files; i++) {
        snprintf(from, sizeof from, "%s.layers/%s", base, layer_names[i]);
        snprintf(to, sizeof to, "%s/%s", dir, layer_names[i]);
        if (copy_file(from, to) != 0) return 0;
        files[nf++] = strdup(to);
    }
    h5_mutate(files, nf, data, size);
    for (int i = 1; i < nf; i++)
        free(files[i]);
    tqp_hfile hf;
    if (tqp_hfile_open(path, fingerprint, model->cfg.n_layers, &hf) == TQP_OK) {
        for (int l = 0; l < model->cfg.n_layers; l++)
            for (int g = 0; g < TQP_GROUP_COUNT; g++) {
                int n = tqp_group_width(&model->cfg, (tqp_group)g);
                double *H = malloc(sizeof(double) * (size_t)n * (size_t)n);
                int64_t count;
                if (H && tqp_hfile_read(&hf, l, g, n, H, &count) == TQP_OK)
                    for (size_t k = 0; k < (size_t)n * (size_t)n; k++)
                        if (!isfinite(H[k]) || count < 1) abort();
                free(H);
            }
        tqp_hfile_close(&hf);
    }
    return 0;
}
