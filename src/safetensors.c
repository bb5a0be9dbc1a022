/* Reading and writing the safetensors container (see include/tqp/safetensors.h).  Nothing in
 * the header is trusted: every size and offset is checked against the mapped file. */
#include "tqp/safetensors.h"

#include "tqp/io.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse_dtype(const char *s, tqp_dtype *d)
{
    if (!strcmp(s, "F32"))
        *d = TQP_DTYPE_F32;
    else if (!strcmp(s, "F16"))
        *d = TQP_DTYPE_F16;
    else if (!strcmp(s, "BF16"))
        *d = TQP_DTYPE_BF16;
    else
        return 0;
    return 1;
}

/* A non-negative integer JSON number that is exactly representable, or -1. */
static int64_t json_u53(const cJSON *v)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(int64_t)d) return -1;
    return (int64_t)d;
}

static tqp_status parse_entry(const char *path, const cJSON *item, uint64_t data_len,
                              tqp_st_entry *e)
{
    const char *name = item->string;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) ||
        cJSON_GetArraySize(offs) != 2)
        return tqp_error_set(TQP_EINPUT, "%s: tensor %s: needs dtype, shape and two data_offsets",
                             path, name);
    if (!parse_dtype(dt->valuestring, &e->dtype))
        return tqp_error_set(TQP_EINPUT,
                             "%s: tensor %s: dtype %s is not supported (F32, F16, "
                             "BF16)",
                             path, name, dt->valuestring);
    e->ndim = cJSON_GetArraySize(shape);
    if (e->ndim < 0 || e->ndim > 4)
        return tqp_error_set(TQP_EINPUT, "%s: tensor %s: %d dimensions", path, name, e->ndim);
    uint64_t numel = 1;
    for (int i = 0; i < e->ndim; i++) {
        int64_t d = json_u53(cJSON_GetArrayItem(shape, i));
        if (d < 0 || d > (1ll << 40))
            return tqp_error_set(TQP_EINPUT, "%s: tensor %s: bad shape", path, name);
        e->shape[i] = d;
        numel *= (uint64_t)d;
        if (numel > (1ull << 50))
            return tqp_error_set(TQP_EINPUT, "%s: tensor %s: absurd shape", path, name);
    }
    int64_t b = json_u53(cJSON_GetArrayItem(offs, 0)), en = json_u53(cJSON_GetArrayItem(offs, 1));
    if (b < 0 || en < b || (uint64_t)en > data_len)
        return tqp_error_set(TQP_EINPUT,
                             "%s: tensor %s: data_offsets [%lld, %lld] outside the "
                             "%llu-byte data section",
                             path, name, (long long)b, (long long)en, (unsigned long long)data_len);
    if ((uint64_t)(en - b) != numel * tqp_dtype_size(e->dtype))
        return tqp_error_set(TQP_EINPUT,
                             "%s: tensor %s: %lld bytes for a shape of %llu %s "
                             "elements",
                             path, name, (long long)(en - b), (unsigned long long)numel,
                             tqp_dtype_name(e->dtype));
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    e->name = strdup(name);
    return e->name ? TQP_OK : tqp_error_set(TQP_ENOMEM, "out of memory");
}

static int by_begin(const void *a, const void *b)
{
    const tqp_st_entry *x = *(tqp_st_entry *const *)a, *y = *(tqp_st_entry *const *)b;
    return x->begin < y->begin   ? -1
           : x->begin > y->begin ? 1
                                 : (x->end > y->end) - (x->end < y->end);
}

static tqp_status check_overlap(const char *path, tqp_st_entry *e, int n)
{
    tqp_st_entry **order = tqp_malloc(sizeof *order * (size_t)(n ? n : 1));
    if (!order) return TQP_ENOMEM;
    for (int i = 0; i < n; i++)
        order[i] = &e[i];
    qsort(order, (size_t)n, sizeof *order, by_begin);
    tqp_status s = TQP_OK;
    for (int i = 1; i < n && s == TQP_OK; i++)
        if (order[i]->begin < order[i - 1]->end)
            s = tqp_error_set(TQP_EINPUT, "%s: tensors %s and %s overlap", path, order[i - 1]->name,
                              order[i]->name);
    free(order);
    return s;
}

static tqp_status parse_header(const tqp_mmap *map, const cJSON *root, uint64_t data_off,
                               tqp_st_entry **entries, int *n)
{
    const char *path = map->path;
    int cap = cJSON_GetArraySize(root), cnt = 0;
    tqp_st_entry *e = tqp_calloc((size_t)(cap ? cap : 1), sizeof *e);
    if (!e) return TQP_ENOMEM;
    tqp_status s = TQP_OK;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        if (!strcmp(item->string, "__metadata__")) continue;
        if (!cJSON_IsObject(item)) {
            s = tqp_error_set(TQP_EINPUT, "%s: tensor %s is not an object", path, item->string);
            break;
        }
        s = parse_entry(path, item, map->size - data_off, &e[cnt]);
        if (s != TQP_OK) break;
        e[cnt].data = map->data + data_off + e[cnt].begin;
        cnt++;
    }
    if (s == TQP_OK) s = check_overlap(path, e, cnt);
    if (s != TQP_OK) {
        tqp_safetensors_free(e, cnt);
        return s;
    }
    *entries = e;
    *n = cnt;
    return TQP_OK;
}

tqp_status tqp_safetensors_parse(const tqp_mmap *map, tqp_st_entry **entries, int *n)
{
    const char *path = map->path;
    *entries = NULL;
    *n = 0;
    if (map->size < 8)
        return tqp_error_set(TQP_EINPUT, "%s: truncated: %zu bytes, no safetensors header", path,
                             map->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | map->data[i];
    if (hlen > map->size - 8)
        return tqp_error_set(TQP_EINPUT,
                             "%s: header length %llu is longer than the file (%zu "
                             "bytes)",
                             path, (unsigned long long)hlen, map->size);
    cJSON *root = cJSON_ParseWithLength((const char *)map->data + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return tqp_error_set(TQP_EINPUT, "%s: the safetensors header is not a valid JSON object",
                             path);
    }
    tqp_status s = parse_header(map, root, 8 + hlen, entries, n);
    cJSON_Delete(root);
    return s;
}

void tqp_safetensors_free(tqp_st_entry *e, int n)
{
    if (!e) return;
    for (int i = 0; i < n; i++)
        free(e[i].name);
    free(e);
}

const tqp_st_entry *tqp_safetensors_find(const tqp_st_entry *e, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(e[i].name, name)) return &e[i];
    return NULL;
}

/* ---- writing ---- */

static int64_t numel_of(const tqp_st_tensor *t)
{
    return t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1];
}

static cJSON *build_header(const tqp_st_tensor *t, int n)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_AddObjectToObject(root, t[i].name);
        cJSON_AddStringToObject(o, "dtype", tqp_dtype_name(t[i].dtype));
        double shape[2] = {(double)t[i].shape[0], (double)t[i].shape[1]};
        cJSON_AddItemToObject(o, "shape", cJSON_CreateDoubleArray(shape, t[i].ndim));
        uint64_t len = (uint64_t)numel_of(&t[i]) * tqp_dtype_size(t[i].dtype);
        double offs[2] = {(double)off, (double)(off + len)};
        cJSON_AddItemToObject(o, "data_offsets", cJSON_CreateDoubleArray(offs, 2));
        off += len;
    }
    return root;
}

/* Write one tensor's data; `scratch` holds the largest tensor when some need fill(). */
static tqp_status write_tensor(FILE *f, const char *path, const tqp_st_tensor *t, float *scratch)
{
    int64_t n = numel_of(t);
    const float *src = t->data;
    if (!src) {
        TQP_CHECK(t->fill(t->fill_ctx, scratch));
        src = scratch;
    }
    int ok = 1;
    if (t->dtype == TQP_DTYPE_F32) ok = fwrite(src, 4, (size_t)n, f) == (size_t)n;
    for (int64_t i = 0; ok && t->dtype != TQP_DTYPE_F32 && i < n; i++) {
        uint16_t h = t->dtype == TQP_DTYPE_F16 ? tqp_f32_to_f16(src[i]) : tqp_f32_to_bf16(src[i]);
        ok = fwrite(&h, 2, 1, f) == 1;
    }
    return ok ? TQP_OK : tqp_error_set(TQP_EIO, "%s: write failed: %s", path, strerror(errno));
}

static float *scratch_for(const tqp_st_tensor *t, int n)
{
    int64_t most = 0;
    for (int i = 0; i < n; i++)
        if (!t[i].data && numel_of(&t[i]) > most) most = numel_of(&t[i]);
    return tqp_malloc_aligned((size_t)most * sizeof(float));
}

tqp_status tqp_safetensors_write(const char *path, const tqp_st_tensor *t, int n)
{
    cJSON *root = build_header(t, n);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return tqp_error_set(TQP_ENOMEM, "out of memory");
    size_t jlen = strlen(json), padded = (jlen + 7) & ~(size_t)7; /* 8-byte aligned data */
    char tmp[4096];
    tqp_remove_stale_temps(path);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    float *scratch = scratch_for(t, n);
    FILE *f = scratch ? fopen(tmp, "wb") : NULL;
    tqp_status s = TQP_OK;
    if (!f) {
        s = scratch ? tqp_error_set(TQP_EIO, "%s: cannot write: %s", path, strerror(errno))
                    : TQP_ENOMEM;
        goto out;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(json, 1, jlen, f) == jlen;
    for (size_t i = jlen; ok && i < padded; i++)
        ok = fputc(' ', f) != EOF;
    if (!ok) s = tqp_error_set(TQP_EIO, "%s: write failed: %s", path, strerror(errno));
    for (int i = 0; s == TQP_OK && i < n; i++)
        s = write_tensor(f, path, &t[i], scratch);
    if (s == TQP_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        s = tqp_error_set(TQP_EIO, "%s: write failed: %s", path, strerror(errno));
    if (fclose(f) != 0 && s == TQP_OK)
        s = tqp_error_set(TQP_EIO, "%s: close failed: %s", path, strerror(errno));
    if (s == TQP_OK && rename(tmp, path) != 0)
        s = tqp_error_set(TQP_EIO, "%s: rename failed: %s", path, strerror(errno));
    if (s != TQP_OK) unlink(tmp);
out:
    free(scratch);
    free(json);
    return s;
}
