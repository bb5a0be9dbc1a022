/* The quantized model file: writer (one rank, temporary file renamed into place) and decoder
 * (see include/tqp/qfile.h). */
#include "tqp/qfile.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tqp/forward.h"
#include "tqp/h5util.h"
#include "tqp/mpiutil.h"
#include "tqp/io.h"
#include "tqp/e8p.h"
#include "tqp/tcq.h"

static const tqp_layer_tensor mat_tensor[TQP_QMATS] = {TQP_T_Q,  TQP_T_K,    TQP_T_V,   TQP_T_O,
                                                       TQP_T_GATE, TQP_T_UP, TQP_T_DOWN};
static const int mat_group[TQP_QMATS] = {TQP_GROUP_QKV,    TQP_GROUP_QKV,    TQP_GROUP_QKV,
                                         TQP_GROUP_O,      TQP_GROUP_GATEUP, TQP_GROUP_GATEUP,
                                         TQP_GROUP_DOWN};
static const char *const mat_name[TQP_QMATS] = {"q", "k", "v", "o", "gate", "up", "down"};

tqp_layer_tensor tqp_qmat_tensor(int i) { return mat_tensor[i]; }
int tqp_qmat_group(int i) { return mat_group[i]; }
const char *tqp_qmat_name(int i) { return mat_name[i]; }

const char *tqp_qfile_vector_name(tqp_layer_tensor t)
{
    static const char *const names[TQP_T_LAYER_COUNT] = {
        [TQP_T_ATTN_NORM] = "attn_norm", [TQP_T_FFN_NORM] = "ffn_norm",
        [TQP_T_Q_BIAS] = "q_bias",       [TQP_T_K_BIAS] = "k_bias",
        [TQP_T_V_BIAS] = "v_bias",       [TQP_T_Q_NORM] = "q_norm",
        [TQP_T_K_NORM] = "k_norm",
    };
    return t >= 0 && t < TQP_T_LAYER_COUNT ? names[t] : NULL;
}

double tqp_qmat_total_bits(const tqp_qmat_info *q)
{
    double w = (double)q->rows * q->cols;
    double extra = 64 + 2 * 64 + (q->rotation == TQP_ROT_RHT ? q->rows + q->cols : 0) +
                   (q->resid_scale > 0 ? 64 : 0);
    return (w * q->code_bits + extra) / w;
}

/* ---- reading ---- */

struct tqp_qfile {
    hid_t f;
    char *path;
    const tqp_model *m; // borrowed
    unsigned mask;      // bit i set: matrix i decoded from the file, else the model's
    tqp_tcq *tcq;       // the file's trellis family, read on first use
    MPI_Comm comm;      // the weight source's ranks, which split the decoding
    int64_t decoded;    // matrices decoded by this process
};

/* The /trellis group: parameters and LUT, checked. */
static tqp_status read_trellis(tqp_qfile *q, int bits)
{
    if (q->tcq) return TQP_OK;
    hid_t g = H5Lexists(q->f, "trellis", H5P_DEFAULT) > 0 ? H5Gopen2(q->f, "trellis", H5P_DEFAULT) : -1;
    if (g < 0) return tqp_error_set(TQP_EINPUT, "no /trellis group");
    int64_t L = 0, K = 0, V = 0;
    char *code = tqp_h5_attr_read_str(g, "code");
    tqp_status s = tqp_h5_attr_read_i64(g, "L", &L);
    if (s == TQP_OK) s = tqp_h5_attr_read_i64(g, "K", &K);
    if (s == TQP_OK) s = tqp_h5_attr_read_i64(g, "V", &V);
    tqp_tcode c = code ? tqp_tcode_parse(code) : TQP_TCODE_COUNT;
    if (s == TQP_OK && c == TQP_TCODE_COUNT)
        s = tqp_error_set(TQP_EINPUT, "/trellis: unknown code '%s'", code ? code : "");
    if (s == TQP_OK && K != bits)
        s = tqp_error_set(TQP_EINPUT, "/trellis: K = %lld but the matrix has %d bits", (long long)K, bits);
    if (s == TQP_OK) s = tqp_trellis_check((int)L, (int)K, (int)V, 256, c);
    float *lut = NULL;
    int entries = s == TQP_OK ? tqp_trellis_lut_entries(c, (int)L) : 0;
    if (s == TQP_OK && entries) {
        lut = tqp_malloc(sizeof(float) * (size_t)entries * (size_t)V);
        hsize_t dims[2] = {(hsize_t)entries, (hsize_t)V};
        s = lut ? tqp_h5_read(g, "lut", H5T_NATIVE_FLOAT, 2, dims, lut) : TQP_ENOMEM;
        if (s != TQP_OK) s = tqp_error_set(s, "/trellis: LUT of the wrong size or unreadable: %s", tqp_error_message());
    }
    if (s == TQP_OK) s = tqp_tcq_create((int)L, (int)K, (int)V, c, lut, &q->tcq);
    free(lut);
    free(code);
    H5Gclose(g);
    return s;
}

char *tqp_qfile_attr(const tqp_qfile *q, const char *name)
{
    return tqp_h5_attr_read_str(q->f, name);
}

tqp_status tqp_qfile_open(const char *path, const tqp_model *m, tqp_qfile **out)
{
    *out = NULL;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return tqp_error_set(access(path, F_OK) ? TQP_ENOENT : TQP_EINPUT, "%s: %s", path,
                             access(path, F_OK) ? "no such file" : "not a readable HDF5 file");
    char *fmt = tqp_h5_attr_read_str(f, "format"), *fp = tqp_h5_attr_read_str(f, "model_fingerprint");
    char mine[65] = "";
    tqp_status s = tqp_model_fingerprint(m, mine);
    int64_t complete = 0, version = 0;
    tqp_h5_attr_read_i64(f, "complete", &complete);
    int has_version = tqp_h5_attr_read_i64(f, "format_version", &version) == TQP_OK;
    tqp_error_clear();
    if (s == TQP_OK && (!fmt || strcmp(fmt, "tqp-quantized") || !fp))
        s = tqp_error_set(TQP_EINPUT, "%s: not a TQP quantized model file", path);
    else if (s == TQP_OK && (!has_version || version != TQP_QFILE_VERSION))
        s = tqp_error_set(TQP_EINPUT,
                          "%s: format_version %lld is not one this TQP reads (it reads %d)", path,
                          (long long)version, TQP_QFILE_VERSION);
    else if (s == TQP_OK && !complete)
        s = tqp_error_set(TQP_EINPUT, "%s: incomplete quantized file", path);
    else if (s == TQP_OK && strcmp(fp, mine))
        s = tqp_error_set(TQP_EMISMATCH,
                          "%s: quantized from another model (fingerprint %.12s..., --model has "
                          "%.12s...)",
                          path, fp, mine);
    free(fmt);
    free(fp);
    tqp_qfile *q = s == TQP_OK ? tqp_calloc(1, sizeof *q) : NULL;
    if (s == TQP_OK && !q) s = TQP_ENOMEM;
    if (s != TQP_OK) {
        H5Fclose(f);
        return s;
    }
    q->f = f;
    q->path = strdup(path);
    q->m = m;
    q->mask = (1u << TQP_QMATS) - 1;
    *out = q;
    return TQP_OK;
}

void tqp_qfile_close(tqp_qfile **pq)
{
    if (!*pq) return;
    H5Fclose((*pq)->f);
    tqp_tcq_destroy(&(*pq)->tcq);
    free((*pq)->path);
    free(*pq);
    *pq = NULL;
}

static tqp_status read_seed(hid_t g, const char *name, uint64_t *v)
{
    char *s = tqp_h5_attr_read_str(g, name), *end = NULL;
    if (s) *v = strtoull(s, &end, 10);
    int ok = s && *s && end && !*end;
    free(s);
    return ok ? TQP_OK : tqp_error_set(TQP_EINPUT, "bad or missing attribute %s", name);
}

tqp_status tqp_qmat_read_info(hid_t g, tqp_qmat_info *q)
{
    int64_t v;
    char *cb = NULL, *rot = NULL, *rnd = NULL;
    memset(q, 0, sizeof *q);
    TQP_CHECK(tqp_h5_attr_read_i64(g, "rows", &v));
    q->rows = (int)v;
    TQP_CHECK(tqp_h5_attr_read_i64(g, "cols", &v));
    q->cols = (int)v;
    TQP_CHECK(tqp_h5_attr_read_i64(g, "bits", &v));
    q->bits = (int)v;
    TQP_CHECK(tqp_h5_attr_read_f64(g, "scale", &q->scale));
    TQP_CHECK(tqp_h5_attr_read_f64(g, "rho", &q->rho));
    TQP_CHECK(tqp_h5_attr_read_f64(g, "damp", &q->damp));
    TQP_CHECK(tqp_h5_attr_read_f64(g, "proxy_loss_rel", &q->proxy_rel));
    TQP_CHECK(tqp_h5_attr_read_f64(g, "code_bits", &q->code_bits));
    TQP_CHECK(tqp_h5_attr_read_f64(g, "total_bits", &q->total_bits));
    TQP_CHECK(read_seed(g, "seed_out", &q->seed_out));
    TQP_CHECK(read_seed(g, "seed_in", &q->seed_in));
    cb = tqp_h5_attr_read_str(g, "codebook");
    rot = tqp_h5_attr_read_str(g, "rotation");
    rnd = tqp_h5_attr_read_str(g, "rounding");
    q->cb = cb ? tqp_codebook_find(cb) : NULL;
    q->rotation = rot ? tqp_rot_parse(rot) : TQP_ROT_COUNT;
    q->rounding = rnd ? tqp_rounding_parse(rnd) : TQP_ROUND_COUNT;
    tqp_status s = TQP_OK;
    if (!q->cb) s = tqp_error_set(TQP_EINPUT, "unknown codebook '%s'", cb ? cb : "");
    else if (q->bits < q->cb->min_bits || q->bits > q->cb->max_bits)
        s = tqp_error_set(TQP_EINPUT, "%d bits is out of range for codebook %s", q->bits, cb);
    else if (q->rotation == TQP_ROT_COUNT)
        s = tqp_error_set(TQP_EINPUT, "unknown rotation '%s'", rot ? rot : "");
    else if (!(q->scale > 0) || !isfinite(q->scale))
        s = tqp_error_set(TQP_EINPUT, "bad scale %g", q->scale);
    if (s == TQP_OK && TQP_CB_IS(q->cb, TQP_CB_E8P) && q->bits > 2) {
        s = tqp_h5_attr_read_f64(g, "resid_scale", &q->resid_scale);
        if (s == TQP_OK && (!(q->resid_scale > 0) || !isfinite(q->resid_scale)))
            s = tqp_error_set(TQP_EINPUT, "bad resid_scale %g", q->resid_scale);
    }
    free(cb), free(rot), free(rnd);
    return s;
}

/* Stored sign vectors must be the ones the seeds regenerate. */
static tqp_status check_signs(hid_t g, const char *name, const tqp_rot_side *side)
{
    size_t n = (size_t)side->n, bytes = tqp_pack_bytes(n, 1);
    uint8_t *packed = tqp_malloc(bytes ? bytes : 1);
    uint32_t *bits = tqp_malloc(sizeof(uint32_t) * (n ? n : 1));
    hsize_t dim = bytes;
    tqp_status s = packed && bits ? tqp_h5_read(g, name, H5T_NATIVE_UINT8, 1, &dim, packed)
                                  : TQP_ENOMEM;
    if (s == TQP_OK) {
        tqp_unpack_codes(packed, n, 1, bits);
        for (size_t i = 0; i < n && s == TQP_OK; i++)
            if ((int)bits[i] != (side->sign[i] < 0))
                s = tqp_error_set(TQP_EINPUT, "%s disagrees with the recorded seed", name);
    }
    free(packed);
    free(bits);
    return s;
}

/* A stored matrix as it is: info, packed codes (*packed, *bytes: owned) and rotation (rot, to
 * destroy), every part checked against the model and the recorded seeds. */
static tqp_status read_group(hid_t g, tqp_qfile *qf, int mat, tqp_qmat_info *q, uint8_t **packed,
                             size_t *bytes, tqp_rot *rot)
{
    const tqp_model *m = qf->m;
    *packed = NULL;
    memset(rot, 0, sizeof *rot);
    TQP_CHECK(tqp_qmat_read_info(g, q));
    int trellis = TQP_CB_IS(q->cb, TQP_CB_TRELLIS), e8p = TQP_CB_IS(q->cb, TQP_CB_E8P);
    if (trellis) TQP_CHECK(read_trellis(qf, q->bits));
    int64_t er, ec;
    tqp_layer_tensor_shape(&m->cfg, mat_tensor[mat], &er, &ec);
    if (q->rows != er || q->cols != ec)
        return tqp_error_set(TQP_EINPUT, "shape (%d, %d) but the model needs (%lld, %lld)",
                             q->rows, q->cols, (long long)er, (long long)ec);
    size_t count = (size_t)q->rows * q->cols;
    *bytes = trellis ? tqp_tcq_matrix_bytes(qf->tcq, q->rows, q->cols)
             : e8p   ? tqp_e8p_matrix_bytes(q->rows, q->cols, q->bits)
                     : tqp_pack_bytes(count, q->bits);
    *packed = tqp_malloc(*bytes);
    hsize_t dim = *bytes;
    tqp_status s = *packed ? tqp_h5_read(g, "codes", H5T_NATIVE_UINT8, 1, &dim, *packed)
                           : TQP_ENOMEM;
    if (s == TQP_OK) s = tqp_rot_create(q->rotation, q->rows, q->cols, q->seed_out, q->seed_in, rot);
    if (s == TQP_OK && q->rotation == TQP_ROT_RHT) s = check_signs(g, "sign_out", &rot->out);
    if (s == TQP_OK && q->rotation == TQP_ROT_RHT) s = check_signs(g, "sign_in", &rot->in);
    if (s != TQP_OK) {
        tqp_rot_destroy(rot);
        free(*packed);
        *packed = NULL;
    }
    return s;
}

static tqp_status decode_group(hid_t g, tqp_qfile *qf, int mat, tqp_qmat_info *q, double *W)
{
    uint8_t *packed = NULL;
    size_t bytes = 0, count;
    tqp_rot rot;
    TQP_CHECK(read_group(g, qf, mat, q, &packed, &bytes, &rot));
    count = (size_t)q->rows * q->cols;
    tqp_status s = TQP_OK;
    if (TQP_CB_IS(q->cb, TQP_CB_TRELLIS) || TQP_CB_IS(q->cb, TQP_CB_E8P)) {
        if (TQP_CB_IS(q->cb, TQP_CB_TRELLIS))
            s = tqp_tcq_decode(qf->tcq, packed, q->rows, q->cols, W);
        else tqp_e8p_decode_matrix(packed, q->rows, q->cols, q->bits, q->resid_scale, W);
        for (size_t i = 0; i < count; i++) W[i] *= q->scale;
    } else {
        uint32_t *codes = tqp_malloc(sizeof(uint32_t) * count);
        if (!codes) s = TQP_ENOMEM;
        if (codes) tqp_unpack_codes(packed, count, q->bits, codes);
        for (size_t i = 0; codes && i < count; i++)
            W[i] = q->cb->decode(codes[i], q->bits) * q->scale;
        free(codes);
    }
    if (s == TQP_OK) s = tqp_rot_weights(&rot, W, 1);
    tqp_rot_destroy(&rot);
    free(packed);
    return s;
}

/* Open layer_NNN/<mat> of q (a message naming it when absent). */
static hid_t open_matrix(tqp_qfile *q, int layer, int mat, char *name, size_t cap)
{
    snprintf(name, cap, "layer_%03d/%s", layer, mat_name[mat]);
    hid_t g = H5Lexists(q->f, name, H5P_DEFAULT) > 0 ? H5Gopen2(q->f, name, H5P_DEFAULT) : -1;
    if (g < 0) tqp_error_set(TQP_EINPUT, "%s: no group %s", q->path, name);
    return g;
}

tqp_status tqp_qfile_read_codes(tqp_qfile *q, int layer, int mat, tqp_qmat_info *info,
                                uint8_t **packed, size_t *bytes, tqp_rot *rot)
{
    char name[64];
    hid_t g = open_matrix(q, layer, mat, name, sizeof name);
    if (g < 0) return TQP_EINPUT;
    tqp_status s = read_group(g, q, mat, info, packed, bytes, rot);
    H5Gclose(g);
    if (s != TQP_OK) return tqp_error_set(s, "%s: %s: %s", q->path, name, tqp_error_message());
    return TQP_OK;
}

const tqp_trellis *tqp_qfile_trellis(const tqp_qfile *q)
{
    return q->tcq ? tqp_tcq_base(q->tcq) : NULL;
}

tqp_status tqp_qfile_read_vector(tqp_qfile *q, int layer, tqp_layer_tensor t, float *dst)
{
    const tqp_config *c = &q->m->cfg;
    int64_t r, cc;
    tqp_layer_tensor_shape(c, t, &r, &cc);
    const char *vname = tqp_qfile_vector_name(t);
    if (!vname || r * cc == 0) return TQP_OK;
    char name[64];
    hsize_t dim = (hsize_t)(r * cc);
    snprintf(name, sizeof name, "layer_%03d/%s", layer, vname);
    tqp_status s = tqp_h5_read(q->f, name, H5T_NATIVE_FLOAT, 1, &dim, dst);
    for (hsize_t k = 0; s == TQP_OK && k < dim; k++)
        if (!isfinite(dst[k]))
            s = tqp_error_set(TQP_ENONFINITE, "%s[%llu] is not finite", name,
                              (unsigned long long)k);
    if (s != TQP_OK) s = tqp_error_set(s, "%s: %s", q->path, tqp_error_message());
    return s;
}

tqp_status tqp_qfile_decode(tqp_qfile *q, int layer, int mat, tqp_qmat_info *info, double *W)
{
    char name[64];
    hid_t g = open_matrix(q, layer, mat, name, sizeof name);
    if (g < 0) return TQP_EINPUT;
    tqp_status s = decode_group(g, q, mat, info, W);
    H5Gclose(g);
    q->decoded++;
    if (s != TQP_OK) return tqp_error_set(s, "%s: %s: %s", q->path, name, tqp_error_message());
    /* Whatever the file says (a scale of 1e300, say), every weight handed on fits an fp32. */
    for (size_t k = 0; k < (size_t)info->rows * (size_t)info->cols; k++)
        if (!(fabs(W[k]) <= FLT_MAX))
            return tqp_error_set(TQP_ENONFINITE,
                                 "%s: layer %d %s: decoded weight %g at element %zu is not a "
                                 "finite fp32 value (scale %g)",
                                 q->path, layer, mat_name[mat], W[k], k, info->scale);
    return TQP_OK;
}

/* Weight source: every fp32 tensor of layer l in one owned buffer. */
static tqp_status source_layer(void *ctx, int l, tqp_layer_weights *lw)
{
    tqp_qfile *q = ctx;
    const tqp_config *c = &q->m->cfg;
    int P, me;
    MPI_Comm_size(q->comm, &P), MPI_Comm_rank(q->comm, &me);
    size_t off[TQP_T_LAYER_COUNT], total = 0, maxw = 0;
    for (int t = 0; t < TQP_T_LAYER_COUNT; t++) {
        int64_t r, cc;
        tqp_layer_tensor_shape(c, (tqp_layer_tensor)t, &r, &cc);
        off[t] = total;
        total += (size_t)(r * cc);
        if ((size_t)(r * cc) > maxw) maxw = (size_t)(r * cc);
    }
    memset(lw, 0, sizeof *lw);
    lw->owned = tqp_malloc(sizeof(float) * total);
    double *W = tqp_malloc(sizeof(double) * maxw);
    tqp_status s = lw->owned && W ? TQP_OK : TQP_ENOMEM;
    for (int t = 0; t < TQP_T_LAYER_COUNT && s == TQP_OK; t++) /* norms and biases, fp32 */
        s = tqp_qfile_read_vector(q, l, (tqp_layer_tensor)t, lw->owned + off[t]);
    tqp_layer_weights orig = {0};
    if (s == TQP_OK && q->mask != (1u << TQP_QMATS) - 1) s = tqp_model_layer_load(q->m, l, &orig);
    for (int i = 0; i < TQP_QMATS && s == TQP_OK; i++) {
        float *dst = lw->owned + off[mat_tensor[i]];
        int64_t r, cc;
        tqp_layer_tensor_shape(c, mat_tensor[i], &r, &cc);
        if (!(q->mask >> i & 1)) {
            memcpy(dst, orig.w[mat_tensor[i]], sizeof(float) * (size_t)(r * cc));
            continue;
        }
        if (i % P != me) continue; /* decoded by rank i mod P */
        tqp_qmat_info info;
        s = tqp_qfile_decode(q, l, i, &info, W); /* every value checked there */
        for (size_t k = 0; s == TQP_OK && k < (size_t)(r * cc); k++)
            dst[k] = (float)W[k];
    }
    tqp_layer_weights_release(&orig);
    free(W);
    /* every decoded matrix from its rank to the others */
    s = tqp_mpi_agree(q->comm, s);
    for (int i = 0; i < TQP_QMATS && s == TQP_OK; i++) {
        if (!(q->mask >> i & 1)) continue;
        int64_t r, cc;
        tqp_layer_tensor_shape(c, mat_tensor[i], &r, &cc);
        float *dst = lw->owned + off[mat_tensor[i]];
        for (int64_t o = 0; o < r * cc && s == TQP_OK; o += (int64_t)1 << 28) {
            int len = (int)(r * cc - o < ((int64_t)1 << 28) ? r * cc - o : ((int64_t)1 << 28));
            if (MPI_Bcast(dst + o, len, MPI_FLOAT, i % P, q->comm) != MPI_SUCCESS)
                s = tqp_error_set(TQP_EMPI, "%s: broadcast of a decoded matrix failed", q->path);
        }
    }
    for (int t = 0; t < TQP_T_LAYER_COUNT && lw->owned; t++) {
        int64_t r, cc;
        tqp_layer_tensor_shape(c, (tqp_layer_tensor)t, &r, &cc);
        lw->w[t] = r * cc != 0 ? lw->owned + off[t] : NULL; /* absent from this architecture */
    }
    if (s != TQP_OK) tqp_layer_weights_release(lw);
    return s;
}

tqp_status tqp_qfile_select(tqp_qfile *q, const char *list)
{
    unsigned mask = 0;
    char *copy = strdup(list), *save = NULL;
    if (!copy) return TQP_ENOMEM;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int i = 0; i < TQP_QMATS; i++)
            if (!strcmp(t, mat_name[i])) found = i;
        if (found < 0) {
            tqp_error_set(TQP_EUSAGE, "unknown matrix '%s' (known: q,k,v,o,gate,up,down)", t);
            free(copy);
            return TQP_EUSAGE;
        }
        mask |= 1u << found;
    }
    free(copy);
    if (!mask) return tqp_error_set(TQP_EUSAGE, "no matrix selected");
    q->mask = mask;
    return TQP_OK;
}

int64_t tqp_qfile_decoded(const tqp_qfile *q)
{
    return q->decoded;
}

tqp_weight_source tqp_qfile_source_shared(tqp_qfile *q, MPI_Comm comm)
{
    q->comm = comm;
    return (tqp_weight_source){.layer = source_layer, .ctx = q, .collective = 1};
}
