/* `tqp convert`: write a checkpoint as a Hugging Face directory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/cli.h"
#include "tqp/convert.h"
#include "tqp/mpiutil.h"

static tqp_status parse_dtype(const char *s, tqp_dtype *d)
{
    if (!strcmp(s, "f32") || !strcmp(s, "F32"))
        *d = TQP_DTYPE_F32;
    else if (!strcmp(s, "f16") || !strcmp(s, "F16"))
        *d = TQP_DTYPE_F16;
    else if (!strcmp(s, "bf16") || !strcmp(s, "BF16"))
        *d = TQP_DTYPE_BF16;
    else
        return tqp_error_set(TQP_EUSAGE, "--dtype must be f32, f16 or bf16, not '%s'",
                             s);
    return TQP_OK;
}

static tqp_status run(const char *model, const char *out, const char *dtype_s, const char *tok,
                      const char *json)
{
    tqp_dtype dt = TQP_DTYPE_F32;
    TQP_CHECK(parse_dtype(dtype_s, &dt));
    tqp_model *m = NULL;
    TQP_CHECK(tqp_model_load(model, &m));
    char *found = tok ? NULL : tqp_find_tokenizer(m); /* optional: copied when present */
    tqp_status s = tqp_convert_to_hf(m, out, dt, tok ? tok : found);
    if (s == TQP_OK)
        printf("wrote %s/model.safetensors (%s) and config.json%s\n", out, tqp_dtype_name(dt),
               (tok || found) ? " and tokenizer.bin" : "");
    if (s == TQP_OK && json) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "command", "convert");
        cJSON_AddStringToObject(d, "model", model);
        cJSON_AddStringToObject(d, "out", out);
        cJSON_AddStringToObject(d, "dtype", tqp_dtype_name(dt));
        cJSON_AddNumberToObject(d, "layers", m->cfg.n_layers);
        s = tqp_json_write(json, d);
        cJSON_Delete(d);
    }
    free(found);
    tqp_model_destroy(&m);
    return s;
}

tqp_status tqp_cmd_convert(int argc, char **argv)
{
    const char *model, *out, *dtype, *tok, *json;
    tqp_opt opts[] = {
        {"--model", TQP_OPT_IN_PATH, &model, NULL, "PATH", "checkpoint to convert (.bin or HF dir)",
         1},
        {"--out", TQP_OPT_OUT, &out, NULL, "DIR", "output Hugging Face directory", 1},
        {"--dtype", TQP_OPT_STRING, &dtype, "f32", "T", "tensor type: f32, f16 or bf16"},
        {"--tokenizer", TQP_OPT_IN_FILE, &tok, NULL, "PATH",
         "tokenizer to copy as DIR/tokenizer.bin (default: the one beside the model, if any)"},
        {"--json", TQP_OPT_OUT, &json, NULL, "FILE", "also write a JSON summary to FILE"},
    };
    tqp_cmd_spec spec = {"convert", "Write a checkpoint as a Hugging Face Llama directory.",
                         "llama2.c checkpoints get the q/k row permutation that Hugging Face's "
                         "rotate-half RoPE expects; the result computes the same function. Runs on "
                         "rank 0 only.",
                         opts, (int)(sizeof opts / sizeof opts[0])};
    int help, rank;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    tqp_error_clear();
    tqp_status s = rank == 0 ? run(model, out, dtype, tok, json) : TQP_OK;
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}
