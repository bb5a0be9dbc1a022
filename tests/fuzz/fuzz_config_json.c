/* config.json on arbitrary bytes: the planner's reader (tqp_config_read, which also accepts what
 * only the forward pass refuses) and the loader's, in a directory with no weights and in one
 * with a small valid model.safetensors when the seed script put one beside the corpus
 * ($TQP_FUZZ_SAFETENSORS). */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[600], path[600];
    snprintf(dir, sizeof dir, "%s/cfg", fuzz_dir());
    mkdir(dir, 0755);
    static int linked;
    const char *st = getenv("TQP_FUZZ_SAFETENSORS");
    if (!linked && st) {
        char link_path[700];
        snprintf(link_path, sizeof link_path, "%s/model.safetensors", dir);
        if (symlink(st, link_path) != 0) { /* already there */
        }
        linked = 1;
    }
    if (!fuzz_write("cfg/config.json", data, size, path, sizeof path)) return 0;
    tqp_config cfg;
    tqp_model_format fmt;
    tqp_dtype dt;
    tqp_config_read(path, &cfg, &fmt, &dt);
    tqp_config_read(dir, &cfg, &fmt, &dt);
    tqp_model *m = NULL;
    if (tqp_model_load(dir, &m) == TQP_OK) fuzz_walk_model(m);
    tqp_model_destroy(&m);
    return 0;
}
