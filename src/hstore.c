/* The Hessian file and its per-layer commit protocol (see include/tqp/hstore.h for the state
 * machine and invariants).  Layer files are written collectively with MPI-IO; the index is
 * written by rank 0. */
#include "tqp/hstore.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tqp/forward.h"
#include "tqp/cli.h"
#include "tqp/h5util.h"
#include "tqp/io.h"
#include "tqp/mpiutil.h"

static char *identity_json(const tqp_hessian_meta *m)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "format_version", 1);
    cJSON_AddStringToObject(d, "model_fingerprint", m->model_fingerprint);
    cJSON_AddStringToObject(d, "text_sha256", m->text_sha256);
    cJSON_AddNumberToObject(d, "nsamples", m->nsamples);
    cJSON_AddNumberToObject(d, "ctx", m->ctx);
    cJSON_AddStringToObject(d, "window_mode", m->random ? "random" : "first");
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)m->seed);
    cJSON_AddStringToObject(d, "seed", m->random ? seed : "none");
    cJSON_AddBoolToObject(d, "sequential", m->sequential);
    cJSON_AddNumberToObject(d, "panel", TQP_HACC_PANEL);
    cJSON_AddNumberToObject(d, "frac_bits", TQP_HACC_FRAC_BITS);
    /* the products of a window: dgemm per block of unit_cols columns, dsyrk on the diagonal */
    cJSON_AddNumberToObject(d, "unit_cols", TQP_HACC_COLS);
    char *s = cJSON_PrintUnformatted(d);
    cJSON_Delete(d);
    return s;
}

char *tqp_hstore_layer_path(const tqp_hstore *st, int layer)
{
    size_t n = strlen(st->dir) + 32;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/layer_%03d.h5", st->dir, layer);
    return p;
}

static tqp_status index_attrs(hid_t f, const tqp_hstore *st, int complete)
{
    const tqp_hessian_meta *m = &st->meta;
    TQP_CHECK(tqp_h5_attr_str(f, "format", "tqp-hessians"));
    TQP_CHECK(tqp_h5_attr_i64(f, "format_version", 1));
    TQP_CHECK(tqp_h5_attr_str(f, "tqp_version", TQP_VERSION));
    TQP_CHECK(tqp_h5_attr_str(f, "identity", st->identity));
    TQP_CHECK(tqp_h5_attr_str(f, "model", m->model));
    TQP_CHECK(tqp_h5_attr_str(f, "model_fingerprint", m->model_fingerprint));
    TQP_CHECK(tqp_h5_attr_str(f, "text", m->text));
    TQP_CHECK(tqp_h5_attr_str(f, "text_sha256", m->text_sha256));
    TQP_CHECK(tqp_h5_attr_i64(f, "nsamples", m->nsamples));
    TQP_CHECK(tqp_h5_attr_i64(f, "ctx", m->ctx));
    TQP_CHECK(tqp_h5_attr_str(f, "window_mode", m->random ? "random" : "first"));
    TQP_CHECK(tqp_h5_attr_i64(f, "seed", m->random ? (int64_t)m->seed : -1));
    TQP_CHECK(tqp_h5_attr_i64(f, "n_layers", m->n_layers));
    TQP_CHECK(tqp_h5_attr_i64(f, "committed_layers", st->committed));
    return tqp_h5_attr_i64(f, "complete", complete);
}

/* Rank 0: rewrite the index atomically, linking layers [0, st->committed). */
static tqp_status write_index(const tqp_hstore *st, int layer_hint)
{
    char tmp[4096], point[64];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", st->out, (long)getpid());
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    if (f < 0) return tqp_error_set(TQP_EIO, "%s: cannot create", st->out);
    tqp_status s = index_attrs(f, st, st->committed == st->meta.n_layers);
    const char *base = strrchr(st->dir, '/') ? strrchr(st->dir, '/') + 1 : st->dir;
    for (int l = 0; l < st->committed && s == TQP_OK; l++) {
        char target[600], name[32];
        snprintf(target, sizeof target, "%s/layer_%03d.h5", base, l);
        snprintf(name, sizeof name, "layer_%03d", l);
        if (H5Lcreate_external(target, "/", f, name, H5P_DEFAULT, H5P_DEFAULT) < 0)
            s = tqp_error_set(TQP_EHDF5, "%s: cannot link %s", st->out, target);
    }
    if (H5Fclose(f) < 0 && s == TQP_OK) s = tqp_error_set(TQP_EIO, "%s: cannot close", tmp);
    snprintf(point, sizeof point, "hessian-index-%d", layer_hint);
    tqp_crash_point(point);
    if (s == TQP_OK) s = tqp_rename_durable(tmp, st->out);
    if (s != TQP_OK) unlink(tmp);
    return s;
}

/* Rank 0: how many consecutive layer files are committed. */
static int count_committed(const tqp_hstore *st)
{
    int k = 0;
    for (; k < st->meta.n_layers; k++) {
        char *p = tqp_hstore_layer_path(st, k);
        hid_t f = p ? H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
        free(p);
        if (f < 0) break;
        H5Fclose(f);
    }
    return k;
}

/* Rank 0: compare an existing index with this run; set st->committed. */
static tqp_status check_existing(tqp_hstore *st)
{
    hid_t f = H5Fopen(st->out, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return tqp_error_set(TQP_EINPUT,
                             "%s: exists but is not a readable HDF5 file; "
                             "use --force to replace it",
                             st->out);
    char *fmt = tqp_h5_attr_read_str(f, "format"), *id = tqp_h5_attr_read_str(f, "identity");
    H5Fclose(f);
    tqp_status s = TQP_OK;
    if (!fmt || strcmp(fmt, "tqp-hessians") || !id) {
        s = tqp_error_set(TQP_EINPUT,
                          "%s: exists and is not a TQP Hessian file; use --force to "
                          "replace it",
                          st->out);
    } else if (strcmp(id, st->identity)) {
        char why[512];
        tqp_json_first_diff(id, st->identity, why, sizeof why);
        s = tqp_error_set(TQP_EMISMATCH,
                          "%s: was written with other options (%s); use --force "
                          "to start over or choose another --out",
                          st->out, why);
    }
    free(fmt);
    free(id);
    if (s == TQP_OK) st->committed = count_committed(st);
    return s;
}

static tqp_status start_fresh(tqp_hstore *st)
{
    TQP_CHECK(tqp_check_writable(st->out));
    TQP_CHECK(tqp_remove_tree(st->dir));
    if (mkdir(st->dir, 0755) != 0)
        return tqp_error_set(TQP_EIO, "%s: cannot create directory: %s", st->dir, strerror(errno));
    st->committed = 0;
    return write_index(st, -1);
}

/* Rank 0: the temporary files of earlier, interrupted attempts: index copies beside OUT and
 * layer files that were written but never renamed. */
static void remove_leftovers(const tqp_hstore *st)
{
    int n = tqp_remove_stale_temps(st->out);
    DIR *d = opendir(st->dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        int l, end = 0;
        if (sscanf(de->d_name, "layer_%d.h5.tmp%n", &l, &end) != 1 || de->d_name[end]) continue;
        char *p = malloc(strlen(st->dir) + strlen(de->d_name) + 2);
        if (p) sprintf(p, "%s/%s", st->dir, de->d_name);
        n += p && unlink(p) == 0;
        free(p);
    }
    if (d) closedir(d);
    if (n > 0)
        fprintf(stderr, "tqp hessian: %s: removed %d temporary file%s of an earlier attempt\n",
                st->out, n, n == 1 ? "" : "s");
}

static tqp_status open_rank0(tqp_hstore *st, tqp_resume_mode mode)
{
    remove_leftovers(st);
    struct stat sb;
    int exists = stat(st->out, &sb) == 0;
    if (mode == TQP_RESUME_FORCE) {
        if (exists && unlink(st->out) != 0)
            return tqp_error_set(TQP_EIO, "%s: cannot remove: %s", st->out, strerror(errno));
        return start_fresh(st);
    }
    if (!exists) {
        if (mode == TQP_RESUME_REQUIRE)
            return tqp_error_set(TQP_EUSAGE, "%s: --resume given but there is nothing to resume",
                                 st->out);
        return start_fresh(st);
    }
    TQP_CHECK(check_existing(st));
    struct stat db;
    if (stat(st->dir, &db) != 0 && mkdir(st->dir, 0755) != 0)
        return tqp_error_set(TQP_EIO, "%s: cannot create directory", st->dir);
    return write_index(st, -1);
}

tqp_status tqp_hstore_open(MPI_Comm comm, const char *out, const tqp_hessian_meta *meta,
                           tqp_resume_mode mode, tqp_hstore *st)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    memset(st, 0, sizeof *st);
    st->meta = *meta;
    st->out = strdup(out);
    size_t n = strlen(out) + 16;
    st->dir = malloc(n);
    if (st->dir) snprintf(st->dir, n, "%s.layers", out);
    st->identity = identity_json(meta);
    tqp_status s = st->out && st->dir && st->identity ? TQP_OK : TQP_ENOMEM;
    if (s == TQP_OK && rank == 0) s = open_rank0(st, mode);
    TQP_CHECK(tqp_mpi_agree(comm, s));
    TQP_MPI_CHECK(MPI_Bcast(&st->committed, 1, MPI_INT, 0, comm));
    return TQP_OK;
}

/* ---- one layer ---- */

static tqp_status group_attrs(hid_t g, const tqp_hessian_meta *m, int layer, int group, int n)
{
    TQP_CHECK(tqp_h5_attr_i64(g, "layer", layer));
    TQP_CHECK(tqp_h5_attr_str(g, "group", tqp_group_name((tqp_group)group)));
    TQP_CHECK(tqp_h5_attr_i64(g, "n", n));
    TQP_CHECK(tqp_h5_attr_str(g, "model", m->model));
    TQP_CHECK(tqp_h5_attr_str(g, "model_fingerprint", m->model_fingerprint));
    TQP_CHECK(tqp_h5_attr_str(g, "text_sha256", m->text_sha256));
    TQP_CHECK(tqp_h5_attr_i64(g, "nsamples", m->nsamples));
    TQP_CHECK(tqp_h5_attr_i64(g, "ctx", m->ctx));
    return tqp_h5_attr_i64(g, "seed", m->random ? (int64_t)m->seed : -1);
}

/* Collective write of one block [r0, r1) x [c0, c1) of dataset d from buf (row-major). */
static tqp_status write_block(hid_t d, hid_t dxpl, const char *path, const double *buf, int64_t r0,
                              int64_t r1, int64_t c0, int64_t c1)
{
    hid_t fs = H5Dget_space(d);
    hsize_t start[2] = {(hsize_t)r0, (hsize_t)c0},
            count[2] = {(hsize_t)(r1 - r0), (hsize_t)(c1 - c0)};
    hsize_t cells = count[0] * count[1], one = cells > 0 ? cells : 1;
    hid_t ms = H5Screate_simple(1, &one, NULL);
    if (cells > 0) {
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    } else {
        H5Sselect_none(fs);
        H5Sselect_none(ms);
    }
    herr_t rc = H5Dwrite(d, H5T_NATIVE_DOUBLE, ms, fs, dxpl, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc < 0 ? tqp_error_set(TQP_EIO, "%s: collective write failed", path) : TQP_OK;
}

/* The full symmetric H: my rows [r0, r1) x [0, r1), and their transpose above my block. */
static tqp_status write_h(hid_t g, hid_t dxpl, const char *path, const tqp_hacc *acc, int n)
{
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)n};
    hid_t sp = H5Screate_simple(2, dims, NULL), dcpl = tqp_h5_dcpl();
    hid_t d = H5Dcreate2(g, "H", H5T_IEEE_F64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    if (d < 0) return tqp_error_set(TQP_EHDF5, "%s: cannot create dataset H", path);
    int64_t r0, r1;
    const double *rows = tqp_hacc_rows(acc, &r0, &r1);
    double *tr = tqp_malloc(sizeof(double) * (size_t)(r0 * (r1 - r0) + 1));
    tqp_status s = tr ? TQP_OK : TQP_ENOMEM;
    for (int64_t i = r0; s == TQP_OK && i < r1; i++)
        for (int64_t j = 0; j < r0; j++)
            tr[j * (r1 - r0) + (i - r0)] = rows[(i - r0) * r1 + j];
    if (s == TQP_OK) s = write_block(d, dxpl, path, rows, r0, r1, 0, r1);
    if (s == TQP_OK) s = write_block(d, dxpl, path, tr, 0, r0, r0, r1);
    free(tr);
    H5Dclose(d);
    return s;
}

/* count and mean: small datasets written by rank 0 (the others select nothing). */
static tqp_status write_small(hid_t g, hid_t dxpl, const char *path, const tqp_hacc *acc, int n,
                              int rank)
{
    hid_t dcpl = tqp_h5_dcpl(), sp = H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(g, "count", H5T_STD_I64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int64_t cnt = tqp_hacc_count(acc);
    if (rank != 0) H5Sselect_none(sp);
    herr_t rc = d < 0 ? -1 : H5Dwrite(d, H5T_NATIVE_INT64, sp, sp, dxpl, &cnt);
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    hsize_t dim = (hsize_t)n;
    sp = H5Screate_simple(1, &dim, NULL);
    d = H5Dcreate2(g, "mean", H5T_IEEE_F64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    double *mean = tqp_malloc(sizeof(double) * (size_t)n);
    for (int j = 0; mean && j < n; j++)
        mean[j] = cnt ? tqp_hacc_colsum(acc)[j] / (double)cnt : 0;
    if (rank != 0) H5Sselect_none(sp);
    if (rc >= 0) rc = (d < 0 || !mean) ? -1 : H5Dwrite(d, H5T_NATIVE_DOUBLE, sp, sp, dxpl, mean);
    free(mean);
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    H5Pclose(dcpl);
    return rc < 0 ? tqp_error_set(TQP_EIO, "%s: cannot write count/mean", path) : TQP_OK;
}

static tqp_status write_layer_file(MPI_Comm comm, const tqp_hstore *st, const char *tmp, int layer,
                                   tqp_hacc *const acc[4])
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    tqp_status s = f < 0 ? tqp_error_set(TQP_EIO, "%s: cannot create", tmp) : TQP_OK;
    if (s == TQP_OK) s = tqp_h5_attr_i64(f, "layer", layer);
    char point[64];
    for (int g = 0; g < 4 && s == TQP_OK; g++) {
        hid_t gcpl = tqp_h5_gcpl();
        hid_t grp = H5Gcreate2(f, tqp_group_name((tqp_group)g), H5P_DEFAULT, gcpl, H5P_DEFAULT);
        H5Pclose(gcpl);
        if (grp < 0) {
            s = tqp_error_set(TQP_EHDF5, "%s: cannot create group", tmp);
            break;
        }
        s = group_attrs(grp, &st->meta, layer, g, st->meta.width[g]);
        if (s == TQP_OK) s = write_h(grp, dxpl, tmp, acc[g], st->meta.width[g]);
        snprintf(point, sizeof point, "hessian-write-%d", layer);
        if (g == 1) tqp_crash_point(point); /* mid-file: some groups written, file open */
        if (s == TQP_OK) s = write_small(grp, dxpl, tmp, acc[g], st->meta.width[g], rank);
        H5Gclose(grp);
    }
    H5Pclose(dxpl);
    if (f >= 0 && H5Fclose(f) < 0 && s == TQP_OK)
        s = tqp_error_set(TQP_EIO, "%s: close failed", tmp);
    return s;
}

tqp_status tqp_hstore_commit_layer(MPI_Comm comm, tqp_hstore *st, int layer, tqp_hacc *const acc[4])
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    char *final = tqp_hstore_layer_path(st, layer), tmp[4200], point[64];
    if (!final) return TQP_ENOMEM;
    snprintf(tmp, sizeof tmp, "%s.tmp", final);
    tqp_status s = tqp_mpi_agree(comm, write_layer_file(comm, st, tmp, layer, acc));
    snprintf(point, sizeof point, "hessian-commit-%d", layer);
    if (s == TQP_OK && rank == 0) {
        tqp_crash_point(point); /* written and closed, not yet renamed */
        s = tqp_rename_durable(tmp, final);
        if (s == TQP_OK) {
            st->committed = layer + 1;
            s = write_index(st, layer);
        }
    }
    free(final);
    TQP_CHECK(tqp_mpi_agree(comm, s));
    st->committed = layer + 1;
    return TQP_OK;
}

void tqp_hstore_close(tqp_hstore *st)
{
    free(st->out);
    free(st->dir);
    free(st->identity);
    memset(st, 0, sizeof *st);
}

/* ---- reading ---- */

tqp_status tqp_hfile_open(const char *path, const char *fingerprint, int n_layers, tqp_hfile *hf)
{
    memset(hf, 0, sizeof *hf);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        struct stat sb;
        return tqp_error_set(stat(path, &sb) ? TQP_ENOENT : TQP_EINPUT, "%s: %s", path,
                             stat(path, &sb) ? "no such file" : "not a readable HDF5 file");
    }
    char *fmt = tqp_h5_attr_read_str(f, "format");
    int64_t layers = -1, complete = 0;
    tqp_h5_attr_read_i64(f, "n_layers", &layers);
    tqp_h5_attr_read_i64(f, "complete", &complete);
    hf->model_fingerprint = tqp_h5_attr_read_str(f, "model_fingerprint");
    hf->identity = tqp_h5_attr_read_str(f, "identity");
    H5Fclose(f);
    tqp_status s = TQP_OK;
    if (!fmt || strcmp(fmt, "tqp-hessians") || !hf->model_fingerprint || !hf->identity)
        s = tqp_error_set(TQP_EINPUT, "%s: not a TQP Hessian file", path);
    else if (strcmp(hf->model_fingerprint, fingerprint))
        s = tqp_error_set(TQP_EMISMATCH,
                          "%s: Hessians of another model (fingerprint %.12s..., this model "
                          "%.12s...)",
                          path, hf->model_fingerprint, fingerprint);
    else if (layers != n_layers)
        s = tqp_error_set(TQP_EMISMATCH, "%s: has %lld layers, the model %d", path,
                          (long long)layers, n_layers);
    else if (!complete)
        s = tqp_error_set(TQP_EINPUT,
                          "%s: incomplete (a Hessian run that did not finish); rerun tqp hessian "
                          "with the same options to resume it",
                          path);
    free(fmt);
    hf->n_layers = (int)layers;
    hf->path = strdup(path);
    size_t n = strlen(path) + 16;
    hf->dir = malloc(n);
    if (hf->dir) snprintf(hf->dir, n, "%s.layers", path);
    if (s == TQP_OK && (!hf->path || !hf->dir)) s = TQP_ENOMEM;
    if (s != TQP_OK) tqp_hfile_close(hf);
    return s;
}

tqp_status tqp_hfile_read(const tqp_hfile *hf, int layer, int group, int n, double *H,
                          int64_t *count)
{
    return tqp_hfile_read_rows(hf, layer, group, n, 0, n, H, count);
}

tqp_status tqp_hfile_read_rows(const tqp_hfile *hf, int layer, int group, int n, int r0, int r1,
                               double *H, int64_t *count)
{
    char path[4200], name[64];
    snprintf(path, sizeof path, "%s/layer_%03d.h5", hf->dir, layer);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return tqp_error_set(TQP_EINPUT, "%s: missing or unreadable layer file", path);
    const char *gname = tqp_group_name((tqp_group)group);
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)n};
    snprintf(name, sizeof name, "%s/H", gname);
    tqp_status s = tqp_h5_read_rows(f, name, H5T_NATIVE_DOUBLE, 2, dims, (hsize_t)r0,
                                    (hsize_t)r1, H);
    snprintf(name, sizeof name, "%s/count", gname);
    if (s == TQP_OK) s = tqp_h5_read(f, name, H5T_NATIVE_INT64, 0, dims, count);
    H5Fclose(f);
    for (size_t i = 0; s == TQP_OK && i < (size_t)(r1 - r0) * (size_t)n; i++)
        if (!isfinite(H[i]))
            s = tqp_error_set(TQP_ENONFINITE, "H[%zu][%zu] is not finite (%g)",
                              (size_t)r0 + i / (size_t)n, i % (size_t)n, H[i]);
    if (s == TQP_OK && *count < 1)
        s = tqp_error_set(TQP_EINPUT, "token count %lld is not positive", (long long)*count);
    if (s != TQP_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", tqp_error_message());
        return tqp_error_set(s, "%s: layer %d %s: %s", path, layer, gname, msg);
    }
    return TQP_OK;
}

void tqp_hfile_close(tqp_hfile *hf)
{
    free(hf->path);
    free(hf->dir);
    free(hf->model_fingerprint);
    free(hf->identity);
    memset(hf, 0, sizeof *hf);
}
