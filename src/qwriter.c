/* The quantized-file writer: per-layer commits in <out>.parts/, verification and salvage on
 * resume, and the final assembly (see the state diagram in include/tqp/qfile.h and
 * docs/pipeline.md). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "tqp/cli.h"
#include "tqp/events.h"
#include "tqp/h5util.h"
#include "tqp/io.h"
#include "tqp/qfile.h"
#include "tqp/tcq.h"

static const char hdf5_magic[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};

/* ": no space left on device" and the like when the last system error says so. */
static const char *space_hint(void)
{
    if (errno == ENOSPC || errno == EDQUOT) return ": no space left on device";
    if (errno == EFBIG) return ": file size limit exceeded";
    if (errno == EACCES || errno == EPERM || errno == EROFS) return ": not writable";
    return "";
}

/* Before writing about `bytes` into a new file at `path`: enough free space on its file system
 * and within the process's file-size limit?  HDF5 does not recover well from a failed write,
 * so running out is caught here, with a clear message, whenever it can be foreseen. */
static tqp_status space_check(const char *path, double bytes)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    struct statvfs v;
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && bytes > (double)rl.rlim_cur)
        return tqp_error_set(TQP_EIO,
                             "%s: needs about %.0f KiB but the file size limit (ulimit -f) is "
                             "%.0f KiB: file size limit exceeded",
                             path, bytes / 1024, (double)rl.rlim_cur / 1024);
    if (statvfs(dir, &v) == 0 && bytes > (double)v.f_bavail * (double)v.f_frsize)
        return tqp_error_set(TQP_EIO,
                             "%s: needs about %.0f KiB but %s has %.0f KiB free: no space left on "
                             "device",
                             path, bytes / 1024, dir, (double)v.f_bavail * (double)v.f_frsize / 1024);
    return TQP_OK;
}

static double file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (double)sb.st_size : 0;
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}

static char *layer_path(const tqp_qwriter *w, int layer)
{
    char name[32];
    snprintf(name, sizeof name, "layer_%03d.h5", layer);
    return path_join(w->dir, name);
}

static hid_t create_file(const char *path)
{
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_link_creation_order(fcpl, 0);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    return f;
}

/* ---- the state file: identity and committed layers with their SHA-256 ---- */

static tqp_status write_state(const tqp_qwriter *w)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "format", "tqp-quantize-state");
    cJSON_AddNumberToObject(d, "format_version", 1);
    cJSON_AddStringToObject(d, "identity", w->identity);
    cJSON_AddNumberToObject(d, "n_layers", w->n_layers);
    cJSON *ls = cJSON_AddArrayToObject(d, "committed");
    for (int l = 0; l < w->n_layers; l++) {
        if (!w->committed[l]) continue;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "layer", l);
        cJSON_AddStringToObject(e, "sha256", w->sha[l]);
        cJSON_AddItemToArray(ls, e);
    }
    char *p = path_join(w->dir, "state.json");
    tqp_status s = p ? tqp_json_write(p, d) : TQP_ENOMEM;
    free(p);
    cJSON_Delete(d);
    return s;
}

/* The identity stored with an existing output (final file or state file), malloc'd, or NULL
 * with *readable saying whether the file opened as HDF5. */
static char *final_identity(const char *path, int *readable)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    *readable = f >= 0;
    if (f < 0) return NULL;
    char *id = tqp_h5_attr_read_str(f, "identity");
    H5Fclose(f);
    return id;
}

static cJSON *read_state(const tqp_qwriter *w)
{
    char *p = path_join(w->dir, "state.json"), *txt = NULL;
    size_t len;
    cJSON *d = NULL;
    if (p && access(p, F_OK) == 0 && tqp_file_read_all(p, &txt, &len) == TQP_OK)
        d = cJSON_Parse(txt);
    free(txt);
    free(p);
    return d;
}

static int is_hdf5(const char *path)
{
    char head[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return n == sizeof head && !memcmp(head, hdf5_magic, sizeof head);
}

/* `why`: the difference, as tqp_json_first_diff describes it. */
static tqp_status mismatch(const char *where, const char *why)
{
    return tqp_error_set(TQP_EMISMATCH,
                         "%s: was written with other options (%s); use --force to start over "
                         "or choose another --out",
                         where, why);
}

tqp_status tqp_qwriter_precheck(const char *path, const char *identity, int force)
{
    if (force) return TQP_OK;
    struct stat sb;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s.parts", path);
    if (stat(path, &sb) == 0) {
        int readable;
        char *id = final_identity(path, &readable);
        tqp_status s = TQP_OK;
        if (!readable && !is_hdf5(path))
            s = tqp_error_set(TQP_EUSAGE,
                              "%s: exists and is not a TQP quantized file; use --force to "
                              "replace it",
                              path);
        else if (readable && !id)
            s = tqp_error_set(TQP_EUSAGE,
                              "%s: exists without a run identity (another program or an older "
                              "TQP); use --force to replace it",
                              path);
        else if (id) {
            char why[512];
            if (tqp_json_first_diff(id, identity, why, sizeof why)) s = mismatch(path, why);
        }
        free(id);
        if (s != TQP_OK) return s;
    }
    tqp_qwriter probe = {.dir = dir};
    cJSON *st = read_state(&probe);
    cJSON *id = st ? cJSON_GetObjectItemCaseSensitive(st, "identity") : NULL;
    tqp_status s = TQP_OK;
    char why[512];
    if (cJSON_IsString(id) && tqp_json_first_diff(id->valuestring, identity, why, sizeof why))
        s = mismatch(dir, why);
    cJSON_Delete(st);
    return s;
}

/* ---- verification and salvage ---- */

typedef struct {
    tqp_status s;
    char bad[256];
} visit_state;

static herr_t read_dataset(hid_t loc, const char *name, const H5O_info_t *info, void *op)
{
    visit_state *v = op;
    if (info->type != H5O_TYPE_DATASET) return 0;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    hid_t t = d >= 0 ? H5Dget_type(d) : -1;
    hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
    hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    size_t es = t >= 0 ? H5Tget_size(t) : 0;
    void *buf = n >= 0 && es ? malloc((size_t)n * es + 1) : NULL;
    herr_t rc = buf ? H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : -1;
    free(buf);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (d >= 0) H5Dclose(d);
    if (rc < 0) {
        snprintf(v->bad, sizeof v->bad, "%s", name);
        v->s = TQP_EINPUT;
        return 1;
    }
    return 0;
}

/* Read every dataset under `group` (checksums verified on read): 1 if all read back. */
static int group_reads_back(hid_t f, const char *group, char *bad, size_t cap)
{
    visit_state v = {TQP_OK, ""};
    hid_t g = H5Lexists(f, group, H5P_DEFAULT) > 0 ? H5Gopen2(f, group, H5P_DEFAULT) : -1;
    if (g < 0) {
        snprintf(bad, cap, "group missing or unreadable");
        return 0;
    }
    herr_t rc = H5Ovisit2(g, H5_INDEX_NAME, H5_ITER_INC, read_dataset, &v, H5O_INFO_BASIC);
    H5Gclose(g);
    if (rc < 0 && v.s == TQP_OK) snprintf(v.bad, sizeof v.bad, "unreadable metadata");
    if (rc < 0 || v.s != TQP_OK) {
        snprintf(bad, cap, "%s", v.bad);
        return 0;
    }
    return 1;
}

/* Commit the finished temporary file w->tmp as layer `layer`: fsync, rename, checksum, state. */
static tqp_status commit_tmp(tqp_qwriter *w, int layer)
{
    char *dst = layer_path(w, layer), point[64];
    if (!dst) return TQP_ENOMEM;
    tqp_status s = tqp_rename_durable(w->tmp, dst);
    if (s == TQP_OK) {
        free(w->tmp);
        w->tmp = NULL;
        snprintf(point, sizeof point, "quantize-commit-%d", layer);
        tqp_crash_point(point);
        s = tqp_sha256_file(dst, w->sha[layer]);
    }
    if (s == TQP_OK && !w->worker) {
        w->committed[layer] = 1;
        s = write_state(w);
        if (s != TQP_OK) w->committed[layer] = 0;
    }
    free(dst);
    return s;
}

tqp_status tqp_qwriter_record(tqp_qwriter *w, int layer, const char *sha)
{
    snprintf(w->sha[layer], sizeof w->sha[layer], "%s", sha);
    w->committed[layer] = 1;
    tqp_status s = write_state(w);
    if (s != TQP_OK) w->committed[layer] = 0;
    return s;
}

static tqp_status open_tmp(tqp_qwriter *w, const char *base)
{
    size_t n = strlen(base) + 32;
    free(w->tmp);
    w->tmp = malloc(n);
    if (!w->tmp) return TQP_ENOMEM;
    snprintf(w->tmp, n, "%s.tmp.%ld", base, (long)getpid());
    w->f = create_file(w->tmp);
    if (w->f < 0) {
        tqp_status s = tqp_error_set(TQP_EIO, "%s: cannot create%s", w->tmp, space_hint());
        free(w->tmp);
        w->tmp = NULL;
        return s;
    }
    return TQP_OK;
}

/* A complete final file with our identity: keep it if every layer reads back, else copy the
 * good layers into the parts directory so that only the damaged ones are redone. */
static tqp_status salvage_final(tqp_qwriter *w, int *unreadable)
{
    hid_t f = H5Fopen(w->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    *unreadable = f < 0;
    if (f < 0) return TQP_OK;
    int bad = 0;
    unsigned char *good = calloc((size_t)w->n_layers, 1);
    if (!good) {
        H5Fclose(f);
        return TQP_ENOMEM;
    }
    for (int l = 0; l < w->n_layers; l++) {
        char name[32], why[256];
        snprintf(name, sizeof name, "layer_%03d", l);
        good[l] = group_reads_back(f, name, why, sizeof why);
        if (!good[l]) {
            bad++;
            fprintf(stderr, "tqp quantize: %s: layer %d is damaged (%s: checksum or read error); "
                            "it will be redone\n", w->path, l, why);
            cJSON *e = tqp_event_begin("layer_damaged");
            cJSON_AddStringToObject(e, "file", w->path);
            cJSON_AddNumberToObject(e, "layer", l);
            tqp_event_end(e);
        }
    }
    char why[256];
    int rest = bad == 0 && group_reads_back(f, "/", why, sizeof why);
    if (bad == 0 && rest) {
        w->complete = 1;
        free(good);
        H5Fclose(f);
        return TQP_OK;
    }
    if (bad == 0)
        fprintf(stderr, "tqp quantize: %s: damaged outside the layers (%s); reassembling it\n",
                w->path, why);
    tqp_status s = TQP_OK;
    for (int l = 0; l < w->n_layers && s == TQP_OK; l++) {
        if (!good[l] || w->committed[l]) continue;
        char *base = layer_path(w, l), name[32];
        snprintf(name, sizeof name, "layer_%03d", l);
        s = base ? open_tmp(w, base) : TQP_ENOMEM;
        free(base);
        if (s != TQP_OK) break;
        hid_t ocp = H5Pcreate(H5P_OBJECT_COPY);
        herr_t rc = H5Ocopy(f, name, w->f, name, ocp, H5P_DEFAULT);
        H5Pclose(ocp);
        rc = H5Fclose(w->f) < 0 ? -1 : rc;
        w->f = -1;
        if (rc < 0) s = tqp_error_set(TQP_EIO, "%s: cannot copy %s%s", w->tmp, name, space_hint());
        if (s == TQP_OK) s = commit_tmp(w, l);
    }
    free(good);
    H5Fclose(f);
    return s;
}

/* Check the committed layers listed in the state file against their checksums. */
static tqp_status load_state(tqp_qwriter *w)
{
    cJSON *st = read_state(w), *e;
    cJSON *ls = st ? cJSON_GetObjectItemCaseSensitive(st, "committed") : NULL;
    cJSON_ArrayForEach(e, ls)
    {
        cJSON *l = cJSON_GetObjectItemCaseSensitive(e, "layer");
        cJSON *h = cJSON_GetObjectItemCaseSensitive(e, "sha256");
        if (!cJSON_IsNumber(l) || !cJSON_IsString(h) || l->valueint < 0 ||
            l->valueint >= w->n_layers || strlen(h->valuestring) != 64)
            continue;
        int layer = l->valueint;
        char *p = layer_path(w, layer), now[65] = "";
        tqp_status s = p ? tqp_sha256_file(p, now) : TQP_ENOMEM;
        if (s == TQP_OK && !strcmp(now, h->valuestring)) {
            w->committed[layer] = 1;
            memcpy(w->sha[layer], now, 65);
        } else {
            fprintf(stderr, "tqp quantize: %s: %s; layer %d will be redone\n", p ? p : w->dir,
                    s == TQP_OK ? "checksum mismatch (corrupted or truncated)" : "missing or unreadable",
                    layer);
            cJSON *ev = tqp_event_begin("layer_damaged");
            cJSON_AddStringToObject(ev, "file", p ? p : w->dir);
            cJSON_AddNumberToObject(ev, "layer", layer);
            tqp_event_end(ev);
            if (p) unlink(p);
        }
        free(p);
    }
    cJSON_Delete(st);
    /* Anything else in the directory is left over from an interrupted write. */
    DIR *d = opendir(w->dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        int l = -1, end = 0;
        if (sscanf(de->d_name, "layer_%d.h5%n", &l, &end) == 1 && !de->d_name[end] && l >= 0 &&
            l < w->n_layers && w->committed[l])
            continue;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            !strcmp(de->d_name, "state.json"))
            continue;
        char *p = path_join(w->dir, de->d_name);
        if (p) unlink(p);
        free(p);
    }
    if (d) closedir(d);
    return TQP_OK;
}

static tqp_status start_dir(tqp_qwriter *w)
{
    struct stat sb;
    if (stat(w->dir, &sb) != 0 && mkdir(w->dir, 0755) != 0)
        return tqp_error_set(TQP_EIO, "%s: cannot create directory: %s", w->dir, strerror(errno));
    return TQP_OK;
}

tqp_status tqp_qwriter_open(const char *path, const char *identity, int n_layers, int force,
                            tqp_qwriter *w)
{
    memset(w, 0, sizeof *w);
    w->f = -1;
    w->n_layers = n_layers;
    w->path = strdup(path);
    w->identity = strdup(identity);
    size_t n = strlen(path) + 8;
    w->dir = malloc(n);
    if (w->dir) snprintf(w->dir, n, "%s.parts", path);
    w->committed = calloc((size_t)n_layers + 1, 1);
    w->sha = calloc((size_t)n_layers + 1, sizeof *w->sha);
    if (!w->path || !w->identity || !w->dir || !w->committed || !w->sha) return TQP_ENOMEM;
    TQP_CHECK(tqp_check_writable(path));
    if (force) {
        if (unlink(path) != 0 && errno != ENOENT)
            return tqp_error_set(TQP_EIO, "%s: cannot remove: %s", path, strerror(errno));
        TQP_CHECK(tqp_remove_tree(w->dir));
    }
    TQP_CHECK(tqp_qwriter_precheck(path, identity, 0));
    int stale = tqp_remove_stale_temps(path); /* OUT.tmp.<pid> of an interrupted assembly */
    if (stale > 0)
        fprintf(stderr, "tqp quantize: %s: removed %d temporary file%s of an earlier attempt\n",
                path, stale, stale == 1 ? "" : "s");
    struct stat sb;
    int have_final = stat(path, &sb) == 0;
    if (stat(w->dir, &sb) == 0) TQP_CHECK(load_state(w));
    TQP_CHECK(start_dir(w));
    if (have_final) {
        int unreadable = 0;
        tqp_status s = salvage_final(w, &unreadable);
        if (s == TQP_OK && unreadable) {
            fprintf(stderr, "tqp quantize: %s: damaged (cannot be opened: truncated or corrupted); "
                            "layers not in %s are redone\n", path, w->dir);
            cJSON *e = tqp_event_begin("output_damaged");
            cJSON_AddStringToObject(e, "file", path);
            tqp_event_end(e);
        }
        TQP_CHECK(s);
        if (w->complete) { /* a finished run: leftovers of its last step can go */
            memset(w->committed, 0, (size_t)n_layers);
            return tqp_remove_tree(w->dir);
        }
    }
    return write_state(w);
}

tqp_status tqp_qwriter_open_worker(const char *path, int n_layers, tqp_qwriter *w)
{
    memset(w, 0, sizeof *w);
    w->f = -1;
    w->worker = 1;
    w->n_layers = n_layers;
    w->path = strdup(path);
    w->identity = strdup("");
    size_t n = strlen(path) + 8;
    w->dir = malloc(n);
    if (w->dir) snprintf(w->dir, n, "%s.parts", path);
    w->committed = calloc((size_t)n_layers + 1, 1);
    w->sha = calloc((size_t)n_layers + 1, sizeof *w->sha);
    return w->path && w->identity && w->dir && w->committed && w->sha ? TQP_OK : TQP_ENOMEM;
}

int tqp_qwriter_committed_count(const tqp_qwriter *w)
{
    int k = 0;
    for (int l = 0; l < w->n_layers; l++) k += w->committed[l];
    return k;
}

/* ---- one layer ---- */

static tqp_status write_f32(hid_t loc, const char *name, const float *x, int64_t rows,
                            int64_t cols)
{
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    int rank = rows == 1 ? 1 : 2;
    if (rank == 1) dims[0] = (hsize_t)cols;
    return tqp_h5_write(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rank, dims, x);
}

static hid_t make_group(hid_t loc, const char *name)
{
    hid_t gcpl = tqp_h5_gcpl();
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    return g;
}

static hid_t open_or_make(hid_t loc, const char *name)
{
    if (H5Lexists(loc, name, H5P_DEFAULT) > 0) return H5Gopen2(loc, name, H5P_DEFAULT);
    return make_group(loc, name);
}

/* Bytes of one layer's file, generously: codes at up to 4 bits, signs, norms, metadata. */
static double layer_bytes(const tqp_config *c)
{
    double b = 65536 + 8.0 * c->dim;
    for (int i = 0; i < TQP_QMATS; i++) {
        int64_t r, k;
        tqp_layer_tensor_shape(c, tqp_qmat_tensor(i), &r, &k);
        b += 0.5 * (double)r * (double)k + (double)(r + k) / 8 + 4096;
    }
    return b;
}

tqp_status tqp_qwriter_layer_begin(tqp_qwriter *w, const tqp_model *m, int layer)
{
    char *base = layer_path(w, layer), name[32];
    tqp_status s = base ? space_check(base, layer_bytes(&m->cfg)) : TQP_ENOMEM;
    if (s == TQP_OK) s = open_tmp(w, base);
    free(base);
    TQP_CHECK(s);
    /* the vectors only: norms and, where the architecture has them, biases and q/k norms (the
     * matrices are read by rows where they are quantized) */
    hid_t g = -1;
    snprintf(name, sizeof name, "layer_%03d", layer);
    g = make_group(w->f, name);
    s = g < 0 ? tqp_error_set(TQP_EHDF5, "cannot create %s", name) : TQP_OK;
    for (int t = 0; t < TQP_T_LAYER_COUNT && s == TQP_OK; t++) {
        int64_t r, k;
        tqp_layer_tensor_shape(&m->cfg, (tqp_layer_tensor)t, &r, &k);
        const char *vname = tqp_qfile_vector_name((tqp_layer_tensor)t);
        if (!vname || r * k == 0) continue;
        double *vd = tqp_malloc(sizeof(double) * (size_t)k);
        float *vf = tqp_malloc(sizeof(float) * (size_t)k);
        s = vd && vf ? tqp_model_tensor_rows(m, layer, t, 0, 1, vd) : TQP_ENOMEM;
        if (s != TQP_OK) { /* the message names the checkpoint */
            free(vd), free(vf);
            H5Gclose(g);
            return s;
        }
        for (int64_t i = 0; i < k; i++) vf[i] = (float)vd[i];
        s = write_f32(g, vname, vf, 1, (int)k);
        free(vd), free(vf);
    }
    if (g >= 0) H5Gclose(g);
    return s == TQP_OK ? s : tqp_error_set(s, "%s: %s%s", w->tmp, tqp_error_message(), space_hint());
}

tqp_status tqp_qwriter_layer_commit(tqp_qwriter *w, int layer)
{
    herr_t rc = H5Fclose(w->f);
    w->f = -1;
    if (rc < 0) return tqp_error_set(TQP_EIO, "%s: cannot close%s", w->tmp, space_hint());
    return commit_tmp(w, layer);
}

static tqp_status read_infos(hid_t f, const char *path, int layer, tqp_qmat_info *infos)
{
    tqp_status s = TQP_OK;
    for (int i = 0; i < TQP_QMATS && s == TQP_OK; i++) {
        char name[64];
        snprintf(name, sizeof name, "layer_%03d/%s", layer, tqp_qmat_name(i));
        hid_t g = H5Lexists(f, name, H5P_DEFAULT) > 0 ? H5Gopen2(f, name, H5P_DEFAULT) : -1;
        s = g < 0 ? tqp_error_set(TQP_EINPUT, "no group %s", name) : tqp_qmat_read_info(g, &infos[i]);
        if (g >= 0) H5Gclose(g);
        if (s != TQP_OK) s = tqp_error_set(s, "%s: %s", path, tqp_error_message());
    }
    return s;
}

tqp_status tqp_qwriter_layer_infos(const tqp_qwriter *w, int layer, tqp_qmat_info *infos)
{
    char *p = w->complete ? strdup(w->path) : layer_path(w, layer);
    hid_t f = p ? H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    tqp_status s = f < 0 ? tqp_error_set(TQP_EIO, "%s: cannot open", p ? p : w->dir) : TQP_OK;
    if (s == TQP_OK) s = read_infos(f, p, layer, infos);
    if (f >= 0) H5Fclose(f);
    free(p);
    return s;
}

/* ---- matrices ---- */

static tqp_status write_signs(hid_t g, const char *name, const tqp_rot_side *side)
{
    size_t n = (size_t)side->n, bytes = tqp_pack_bytes(n, 1);
    uint32_t *bits = tqp_malloc(sizeof(uint32_t) * (n ? n : 1));
    uint8_t *packed = tqp_malloc(bytes ? bytes : 1);
    tqp_status s = bits && packed ? TQP_OK : TQP_ENOMEM;
    if (s == TQP_OK) {
        for (size_t i = 0; i < n; i++) bits[i] = side->sign[i] < 0;
        tqp_pack_codes(bits, n, 1, packed);
        hsize_t dim = bytes;
        s = tqp_h5_write(g, name, H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &dim, packed);
    }
    free(bits);
    free(packed);
    return s;
}

static tqp_status seed_attr(hid_t g, const char *name, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return tqp_h5_attr_str(g, name, buf);
}

static tqp_status matrix_attrs(hid_t g, const tqp_qmat_info *q)
{
    TQP_CHECK(tqp_h5_attr_i64(g, "rows", q->rows));
    TQP_CHECK(tqp_h5_attr_i64(g, "cols", q->cols));
    TQP_CHECK(tqp_h5_attr_i64(g, "bits", q->bits));
    TQP_CHECK(tqp_h5_attr_str(g, "codebook", q->cb->name));
    TQP_CHECK(tqp_h5_attr_str(g, "rotation", tqp_rot_name(q->rotation)));
    TQP_CHECK(tqp_h5_attr_str(g, "rounding", tqp_rounding_name(q->rounding)));
    TQP_CHECK(seed_attr(g, "seed_out", q->seed_out));
    TQP_CHECK(seed_attr(g, "seed_in", q->seed_in));
    TQP_CHECK(tqp_h5_attr_f64(g, "scale", q->scale));
    TQP_CHECK(tqp_h5_attr_f64(g, "rho", q->rho));
    TQP_CHECK(tqp_h5_attr_f64(g, "damp", q->damp));
    TQP_CHECK(tqp_h5_attr_i64(g, "damp_retries", q->damp_retries));
    TQP_CHECK(tqp_h5_attr_f64(g, "proxy_loss_rel", q->proxy_rel));
    TQP_CHECK(tqp_h5_attr_f64(g, "code_bits", q->code_bits));
    if (q->resid_scale > 0) TQP_CHECK(tqp_h5_attr_f64(g, "resid_scale", q->resid_scale));
    return tqp_h5_attr_f64(g, "total_bits", q->total_bits);
}

tqp_status tqp_qwriter_matrix_packed(tqp_qwriter *w, int layer, int mat, const tqp_qmat_info *q,
                                     const uint8_t *packed, size_t bytes, const tqp_rot *rot)
{
    char name[64];
    snprintf(name, sizeof name, "layer_%03d", layer);
    hid_t lg = open_or_make(w->f, name);
    hid_t g = lg < 0 ? -1 : make_group(lg, tqp_qmat_name(mat));
    tqp_status s = g < 0 ? tqp_error_set(TQP_EHDF5, "cannot create %s/%s", name,
                                         tqp_qmat_name(mat))
                         : TQP_OK;
    hsize_t dim = bytes;
    if (s == TQP_OK) s = tqp_h5_write(g, "codes", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &dim, packed);
    if (s == TQP_OK && mat == TQP_QMATS - 3) { /* between two datasets of one layer file */
        char point[64];
        snprintf(point, sizeof point, "quantize-h5write-%d", layer);
        H5Fflush(w->f, H5F_SCOPE_LOCAL);
        tqp_crash_point(point);
    }
    if (s == TQP_OK) s = matrix_attrs(g, q);
    if (s == TQP_OK && q->cb->tile)
        s = tqp_h5_attr_str(g, "tile_order",
                            TQP_CB_IS(q->cb, TQP_CB_E8P) ? "e8p-bands-8" : "tcq-bands-16");
    if (s == TQP_OK && q->rotation == TQP_ROT_RHT) s = write_signs(g, "sign_out", &rot->out);
    if (s == TQP_OK && q->rotation == TQP_ROT_RHT) s = write_signs(g, "sign_in", &rot->in);
    if (g >= 0) H5Gclose(g);
    if (lg >= 0) H5Gclose(lg);
    return s == TQP_OK ? s : tqp_error_set(s, "%s: %s%s", w->tmp, tqp_error_message(), space_hint());
}

tqp_status tqp_qwriter_matrix(tqp_qwriter *w, int layer, int mat, const tqp_qmat_info *q,
                              const uint32_t *codes, const tqp_rot *rot)
{
    size_t count = (size_t)q->rows * q->cols, bytes = tqp_pack_bytes(count, q->bits);
    uint8_t *packed = tqp_malloc(bytes ? bytes : 1);
    if (!packed) return TQP_ENOMEM;
    tqp_pack_codes(codes, count, q->bits, packed);
    tqp_status s = tqp_qwriter_matrix_packed(w, layer, mat, q, packed, bytes, rot);
    free(packed);
    return s;
}

/* ---- assembly ---- */

typedef struct {
    const tqp_model *m;
    tqp_global_tensor t;
} plain_rows;

static tqp_status fill_plain(void *ctx, int64_t r0, int64_t r1, void *buf)
{
    const plain_rows *p = ctx;
    return tqp_model_global_rows(p->m, p->t, r0, r1, buf);
}

/* The embedding, final norm and head, converted and written a chunk of rows at a time. */
static tqp_status write_plain(hid_t f, const tqp_model *m)
{
    static const char *const gname[TQP_G_COUNT] = {"embed", "norm", "output"};
    for (int t = 0; t < TQP_G_COUNT; t++) {
        if (t == TQP_G_OUTPUT && m->cfg.tied_embeddings) continue;
        int64_t r, c;
        tqp_global_tensor_shape(&m->cfg, (tqp_global_tensor)t, &r, &c);
        plain_rows p = {m, (tqp_global_tensor)t};
        if (r == 1) { /* a vector is stored 1-D */
            float *x = tqp_malloc(sizeof(float) * (size_t)c);
            if (!x) return TQP_ENOMEM;
            tqp_status s = fill_plain(&p, 0, 1, x);
            if (s == TQP_OK) s = write_f32(f, gname[t], x, 1, c);
            free(x);
            TQP_CHECK(s);
            continue;
        }
        hsize_t dims[2] = {(hsize_t)r, (hsize_t)c};
        TQP_CHECK(tqp_h5_write_rows(f, gname[t], H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, dims,
                                    sizeof(float), fill_plain, &p));
    }
    return TQP_OK;
}

static tqp_status write_trellis(hid_t f, const tqp_trellis *t)
{
    hid_t g = make_group(f, "trellis");
    if (g < 0) return tqp_error_set(TQP_EHDF5, "cannot create /trellis");
    tqp_status s = tqp_h5_attr_i64(g, "L", t->L);
    if (s == TQP_OK) s = tqp_h5_attr_i64(g, "K", t->K);
    if (s == TQP_OK) s = tqp_h5_attr_i64(g, "V", t->V);
    if (s == TQP_OK) s = tqp_h5_attr_i64(g, "tile", 16);
    if (s == TQP_OK) s = tqp_h5_attr_str(g, "code", tqp_tcode_name(t->code));
    if (s == TQP_OK && t->lut) {
        hsize_t dims[2] = {(hsize_t)tqp_trellis_lut_entries(t->code, t->L), (hsize_t)t->V};
        s = tqp_h5_write(g, "lut", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dims, t->lut);
    }
    H5Gclose(g);
    return s;
}

static tqp_status json_attrs(hid_t f, const char *json)
{
    cJSON *d = cJSON_Parse(json), *it;
    if (!d) return tqp_error_set(TQP_EINTERNAL, "bad attribute JSON");
    tqp_status s = TQP_OK;
    cJSON_ArrayForEach(it, d)
    {
        if (s != TQP_OK) break;
        if (cJSON_IsString(it)) s = tqp_h5_attr_str(f, it->string, it->valuestring);
        else if (cJSON_IsNumber(it)) s = tqp_h5_attr_f64(f, it->string, it->valuedouble);
        else {
            char *txt = cJSON_PrintUnformatted(it);
            s = tqp_h5_attr_str(f, it->string, txt ? txt : "");
            free(txt);
        }
    }
    cJSON_Delete(d);
    return s;
}

static tqp_status copy_layer(tqp_qwriter *w, int layer)
{
    char *p = layer_path(w, layer), name[32];
    snprintf(name, sizeof name, "layer_%03d", layer);
    hid_t src = p ? H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    tqp_status s = src < 0 ? tqp_error_set(TQP_EIO, "%s: cannot open", p ? p : w->dir) : TQP_OK;
    if (s == TQP_OK) {
        hid_t ocp = H5Pcreate(H5P_OBJECT_COPY);
        if (H5Ocopy(src, name, w->f, name, ocp, H5P_DEFAULT) < 0)
            s = tqp_error_set(TQP_EIO, "%s: cannot copy %s from %s%s", w->tmp, name, p,
                              space_hint());
        H5Pclose(ocp);
    }
    if (src >= 0) H5Fclose(src);
    free(p);
    return s;
}

tqp_status tqp_qwriter_finish(tqp_qwriter *w, const tqp_model *m, const tqp_trellis *t,
                              const char *attrs_json)
{
    for (int l = 0; l < w->n_layers; l++)
        if (!w->committed[l])
            return tqp_error_set(TQP_EINTERNAL, "%s: layer %d is not committed", w->dir, l);
    double need = 65536;
    for (int g = 0; g < TQP_G_COUNT; g++) {
        int64_t r, c;
        tqp_global_tensor_shape(&m->cfg, (tqp_global_tensor)g, &r, &c);
        need += 4.0 * (double)r * (double)c;
    }
    for (int l = 0; l < w->n_layers; l++) {
        char *p = layer_path(w, l);
        need += p ? file_size(p) : 0;
        free(p);
    }
    TQP_CHECK(space_check(w->path, need));
    TQP_CHECK(open_tmp(w, w->path));
    tqp_status s = write_plain(w->f, m);
    if (s == TQP_OK && t) s = write_trellis(w->f, t);
    if (s != TQP_OK) s = tqp_error_set(s, "%s: %s%s", w->tmp, tqp_error_message(), space_hint());
    for (int l = 0; l < w->n_layers && s == TQP_OK; l++) {
        s = copy_layer(w, l);
        if (l == w->n_layers / 2) {
            H5Fflush(w->f, H5F_SCOPE_LOCAL);
            tqp_crash_point("quantize-assemble");
        }
    }
    if (s == TQP_OK) s = tqp_h5_attr_str(w->f, "format", "tqp-quantized");
    if (s == TQP_OK) s = tqp_h5_attr_i64(w->f, "format_version", TQP_QFILE_VERSION);
    if (s == TQP_OK) s = tqp_h5_attr_str(w->f, "tqp_version", TQP_VERSION);
    if (s == TQP_OK) s = tqp_h5_attr_str(w->f, "identity", w->identity);
    if (s == TQP_OK) s = json_attrs(w->f, attrs_json);
    if (s == TQP_OK) s = tqp_h5_attr_i64(w->f, "complete", 1);
    herr_t rc = H5Fclose(w->f);
    w->f = -1;
    if (s == TQP_OK && rc < 0)
        s = tqp_error_set(TQP_EIO, "%s: cannot close%s", w->tmp, space_hint());
    tqp_crash_point("quantize-rename");
    if (s == TQP_OK) s = tqp_rename_durable(w->tmp, w->path);
    if (s != TQP_OK) return s; /* the caller aborts: the temporary file goes, the parts stay */
    free(w->tmp);
    w->tmp = NULL;
    tqp_crash_point("quantize-cleanup");
    w->complete = 1;
    return tqp_remove_tree(w->dir);
}

void tqp_qwriter_abort(tqp_qwriter *w)
{
    if (w->f >= 0) H5Fclose(w->f);
    w->f = -1;
    if (w->tmp) unlink(w->tmp);
    free(w->tmp);
    w->tmp = NULL;
}

void tqp_qwriter_close(tqp_qwriter *w)
{
    tqp_qwriter_abort(w);
    free(w->path);
    free(w->dir);
    free(w->identity);
    free(w->committed);
    free(w->sha);
    memset(w, 0, sizeof *w);
    w->f = -1;
}
