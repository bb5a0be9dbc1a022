/* Text input as every command reads it (tqp_load_token_stream): the input as a JSON-lines file
 * of documents, and as a plain text, through a small tokenizer.json written once, and the
 * pre-tokenized reader's sibling path with a model absent.  Documents must be refused or
 * encoded, never crash. */
#include <mpi.h>

#include "fuzz_util.h"
#include "tqp/cli.h"

static char tok_path[600];

static const char tokenizer[] =
    "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}, {\"id\": 1, "
    "\"content\": \"<s>\", \"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": "
    "true}], \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", "
    "\"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, "
    "\"content\": \"\\u2581\"}]}, \"post_processor\": {\"type\": \"TemplateProcessing\", "
    "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], "
    "\"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1]}}}, \"model\": {\"type\": "
    "\"BPE\", \"byte_fallback\": false, \"unk_token\": \"<unk>\", \"fuse_unk\": true, \"vocab\": "
    "{\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"\\u2581\": 3, \"a\": 4, \"b\": 5, \"\\u2581a\": 6}, "
    "\"merges\": [\"\\u2581 a\"]}}";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    MPI_Init(argc, argv);
    char cfg[600];
    fuzz_write("tokenizer.json", tokenizer, sizeof tokenizer - 1, tok_path, sizeof tok_path);
    fuzz_write("tokenizer_config.json", "{\"eos_token\": \"</s>\"}", 21, cfg, sizeof cfg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600], sha[65];
    static const char *const names[2] = {"docs.jsonl", "doc.txt"};
    for (int k = 0; k < 2; k++) {
        if (!fuzz_write(names[k], data, size, path, sizeof path)) return 0;
        uint32_t *ids = NULL;
        size_t n = 0;
        if (tqp_load_token_stream(MPI_COMM_SELF, NULL, tok_path, path, NULL, &ids, &n, sha) ==
            TQP_OK)
            for (size_t i = 0; i < n; i++)
                if (ids[i] > 6) abort(); /* an id the tokenizer does not have */
        free(ids);
    }
    return 0;
}
