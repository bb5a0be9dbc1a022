/* Structure-aware mutation of TQP's own HDF5 files, for the fuzz targets of the readers of
 * quantized and Hessian files.  Raw byte flips of an HDF5 file mostly exercise the HDF5 library;
 * these mutations go through the library instead and reach TQP's checks: the fuzzer's bytes
 * are a list of 16-byte operations, each choosing an object of a file (by index, among all
 * groups and datasets), then one of
 *   - rewrite an existing attribute (by index) with a value of its class: doubles from a table
 *     of specials (NaN, +-Inf, 0, -1, 1e300, a denormal...) or raw bits, integers from a table
 *     (0, -1, 99, 2^31, 2^62...) or raw, strings from a list of names TQP knows and garbage;
 *   - delete an attribute;
 *   - overwrite bytes of a dataset (whole-dataset read, splice, write; files are small);
 *   - delete the object's link.
 * The mutated copy is then read back by the code under test. */
#ifndef TQP_FUZZ_H5MUT_H
#define TQP_FUZZ_H5MUT_H

#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char (*names)[256];
    int n, cap;
} obj_list;

static herr_t visit_cb(hid_t o, const char *name, const H5O_info_t *info, void *ctx)
{
    obj_list *l = ctx;
    (void)o;
    if (info->type != H5O_TYPE_GROUP && info->type != H5O_TYPE_DATASET) return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->names = realloc(l->names, sizeof *l->names * (size_t)l->cap);
        if (!l->names) return -1;
    }
    snprintf(l->names[l->n++], 256, "%s", name);
    return 0;
}

static void set_attr(hid_t obj, const uint8_t *op)
{
    int na = (int)H5Aget_num_attrs(obj);
    if (na <= 0) return;
    hid_t a = H5Aopen_by_idx(obj, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)(op[2] % na),
                             H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return;
    hid_t t = H5Aget_type(a);
    H5T_class_t cls = H5Tget_class(t);
    hid_t sp = H5Aget_space(a);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    char name[256] = "";
    H5Aget_name(a, sizeof name, name);
    if (np == 1 && cls == H5T_FLOAT) {
        static const double sp_d[] = {NAN,    INFINITY, -INFINITY, 0.0, -1.0,  1e300,
                                      -1e300, 4.9e-324, 1.0,       0.5, 1e-30, 2.0};
        double v;
        memcpy(&v, op + 4, 8);
        if (!(op[3] & 1)) v = sp_d[op[3] / 2 % 12];
        H5Awrite(a, H5T_NATIVE_DOUBLE, &v);
    } else if (np == 1 && cls == H5T_INTEGER) {
        static const int64_t sp_i[] = {0,
                                       -1,
                                       1,
                                       2,
                                       3,
                                       4,
                                       5,
                                       99,
                                       INT32_MAX,
                                       (int64_t)1 << 31,
                                       (int64_t)1 << 40,
                                       INT64_MAX,
                                       INT64_MIN,
                                       16,
                                       64,
                                       65536};
        int64_t v;
        memcpy(&v, op + 4, 8);
        if (!(op[3] & 1)) v = sp_i[op[3] / 2 % 16];
        H5Awrite(a, H5T_NATIVE_INT64, &v);
    } else if (cls == H5T_STRING) {
        static const char *const sp_s[] = {"",
                                           "scalar",
                                           "trellis",
                                           "rht",
                                           "kron",
                                           "none",
                                           "ldlq",
                                           "nearest",
                                           "1mad",
                                           "3inst",
                                           "hyb",
                                           "tqp-quantized",
                                           "tqp-hessians",
                                           "18446744073709551616",
                                           "-1",
                                           "{"};
        const char *v = sp_s[op[3] % 16];
        char raw[9] = {0};
        if (op[3] & 0x80) { /* raw bytes as the string */
            memcpy(raw, op + 4, 8);
            v = raw;
        }
        H5Aclose(a);
        H5Tclose(t);
        H5Sclose(sp);
        H5Adelete(obj, name);
        hid_t st = H5Tcopy(H5T_C_S1), s1 = H5Screate(H5S_SCALAR);
        H5Tset_size(st, strlen(v) + 1);
        hid_t b = H5Acreate2(obj, name, st, s1, H5P_DEFAULT, H5P_DEFAULT);
        if (b >= 0) {
            H5Awrite(b, st, v);
            H5Aclose(b);
        }
        H5Tclose(st);
        H5Sclose(s1);
        return;
    }
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
}

static void splice_dataset(hid_t d, const uint8_t *op)
{
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    size_t es = H5Tget_size(t), bytes = np > 0 ? (size_t)np * es : 0;
    if (bytes > 0 && bytes <= (64u << 20)) {
        uint8_t *buf = malloc(bytes);
        if (buf && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0) {
            uint32_t at;
            memcpy(&at, op + 4, 4);
            size_t off = at % bytes;
            for (int i = 0; i < 8 && off + (size_t)i < bytes; i++)
                buf[off + i] = op[8 + i];
            if (op[3] & 1) /* a double's worth of specials at the offset, for float data */
                if (H5Tget_class(t) == H5T_FLOAT && es == 8 && off / 8 * 8 + 8 <= bytes) {
                    double v = (op[3] & 2) ? NAN : INFINITY;
                    memcpy(buf + off / 8 * 8, &v, 8);
                }
            H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        }
        free(buf);
    }
    H5Sclose(sp);
    H5Tclose(t);
}

/* Apply the operations in data[0..size) to the HDF5 files files[0..nfiles). */
static void h5_mutate(char *const *files, int nfiles, const uint8_t *data, size_t size)
{
    for (size_t k = 0; k + 16 <= size; k += 16) {
        const uint8_t *op = data + k;
        hid_t f = H5Fopen(files[op[0] % nfiles], H5F_ACC_RDWR, H5P_DEFAULT);
        if (f < 0) continue;
        obj_list l = {0};
        H5Ovisit(f, H5_INDEX_NAME, H5_ITER_INC, visit_cb, &l);
        if (l.n > 0) {
            const char *name = l.names[op[1] % l.n];
            hid_t o = H5Oopen(f, name, H5P_DEFAULT);
            if (o >= 0) {
                int kind = (op[2] >> 5) & 7;
                H5O_info_t info;
                H5Oget_info(o, &info);
                if (kind <= 3) {
                    set_attr(o, op);
                } else if (kind == 4) {
                    int na = (int)H5Aget_num_attrs(o);
                    if (na > 0)
                        H5Adelete_by_idx(o, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)(op[3] % na),
                                         H5P_DEFAULT);
                } else if (kind <= 6 && info.type == H5O_TYPE_DATASET) {
                    splice_dataset(o, op);
                } else if (kind == 7 && strcmp(name, ".") != 0) {
                    H5Oclose(o);
                    o = -1;
                    H5Ldelete(f, name, H5P_DEFAULT);
                }
                if (o >= 0) H5Oclose(o);
            }
        }
        free(l.names);
        H5Fclose(f);
    }
}

/* Copy file `from` to `to` (bytes); 0 on success. */
static int copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = a ? fopen(to, "wb") : NULL;
    int ok = a && b;
    char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0)
        ok = fwrite(buf, 1, n, b) == n;
    if (a) fclose(a);
    if (b) ok &= fclose(b) == 0;
    return ok ? 0 : -1;
}

#endif
