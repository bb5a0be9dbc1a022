/* HDF5 attribute helpers and deterministic creation property lists. */
#include "tqp/h5util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void tqp_h5_quiet(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static tqp_status write_attr(hid_t obj, const char *name, hid_t type, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc < 0 ? tqp_error_set(TQP_EHDF5, "cannot write attribute %s", name) : TQP_OK;
}

tqp_status tqp_h5_attr_str(hid_t obj, const char *name, const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(value) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    tqp_status s = write_attr(obj, name, t, value);
    H5Tclose(t);
    return s;
}

tqp_status tqp_h5_attr_i64(hid_t obj, const char *name, int64_t value)
{
    return write_attr(obj, name, H5T_STD_I64LE, &value);
}

tqp_status tqp_h5_attr_f64(hid_t obj, const char *name, double value)
{
    return write_attr(obj, name, H5T_IEEE_F64LE, &value);
}

char *tqp_h5_attr_read_str(hid_t obj, const char *name)
{
    if (H5Aexists(obj, name) <= 0) return NULL;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t t = a < 0 ? -1 : H5Aget_type(a);
    char *buf = NULL;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t)) {
        size_t n = H5Tget_size(t);
        buf = calloc(n + 1, 1);
        if (buf && H5Aread(a, t, buf) < 0) {
            free(buf);
            buf = NULL;
        }
    }
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return buf;
}

static tqp_status read_attr(hid_t obj, const char *name, hid_t type, void *value)
{
    if (H5Aexists(obj, name) <= 0) return tqp_error_set(TQP_EINPUT, "no attribute %s", name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Aread(a, type, value);
    if (a >= 0) H5Aclose(a);
    return rc < 0 ? tqp_error_set(TQP_EINPUT, "cannot read attribute %s", name) : TQP_OK;
}

tqp_status tqp_h5_attr_read_i64(hid_t obj, const char *name, int64_t *value)
{
    return read_attr(obj, name, H5T_NATIVE_INT64, value);
}

hid_t tqp_h5_gcpl(void)
{
    hid_t p = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_obj_track_times(p, 0);
    return p;
}

hid_t tqp_h5_dcpl(void)
{
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(p, 0);
    return p;
}

tqp_status tqp_h5_attr_read_f64(hid_t obj, const char *name, double *value)
{
    TQP_CHECK(read_attr(obj, name, H5T_NATIVE_DOUBLE, value));
    if (!isfinite(*value))
        return tqp_error_set(TQP_ENONFINITE, "attribute %s is not finite (%g)", name, *value);
    return TQP_OK;
}

/* A dataset of shape dims (rank 1 or 2): chunks of at most 1 MiElements, whole rows for 2-D
 * datasets (*chunk_rows of them), with Fletcher-32 checksums, no time tracking. */
static hid_t create_ds(hid_t loc, const char *name, hid_t file_type, int rank, const hsize_t *dims,
                       hsize_t *chunk_rows)
{
    hsize_t chunk[2], cells = 1;
    for (int i = 0; i < rank; i++) cells *= dims[i];
    if (rank == 1) {
        chunk[0] = dims[0] < (1u << 20) ? dims[0] : (1u << 20);
    } else {
        chunk[1] = dims[1];
        hsize_t rows = (1u << 20) / (dims[1] ? dims[1] : 1);
        chunk[0] = rows < 1 ? 1 : rows > dims[0] ? dims[0] : rows;
    }
    for (int i = 0; i < rank; i++)
        if (chunk[i] == 0) chunk[i] = 1;
    *chunk_rows = chunk[0];
    hid_t dcpl = tqp_h5_dcpl(), sp = H5Screate_simple(rank, dims, NULL);
    if (cells > 0) {
        H5Pset_chunk(dcpl, rank, chunk);
        H5Pset_fletcher32(dcpl);
    }
    hid_t d = H5Dcreate2(loc, name, file_type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Sclose(sp);
    H5Pclose(dcpl);
    return d;
}

tqp_status tqp_h5_write(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int rank,
                        const hsize_t *dims, const void *data)
{
    hsize_t cells = 1, cr;
    for (int i = 0; i < rank; i++) cells *= dims[i];
    hid_t d = create_ds(loc, name, file_type, rank, dims, &cr);
    herr_t rc = d < 0 ? -1 : cells ? H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
    if (d >= 0 && H5Dclose(d) < 0) rc = -1; /* the chunk cache is written here */
    return rc < 0 ? tqp_error_set(TQP_EHDF5, "cannot write dataset %s", name) : TQP_OK;
}

tqp_status tqp_h5_write_rows(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                             const hsize_t *dims, size_t elem,
                             tqp_status (*fill)(void *ctx, int64_t r0, int64_t r1, void *buf),
                             void *ctx)
{
    hsize_t cr;
    hid_t d = create_ds(loc, name, file_type, 2, dims, &cr);
    if (d < 0) return tqp_error_set(TQP_EHDF5, "cannot write dataset %s", name);
    void *buf = tqp_malloc(elem * (size_t)(cr * dims[1]) + 1);
    tqp_status s = buf ? TQP_OK : TQP_ENOMEM;
    for (hsize_t r0 = 0; s == TQP_OK && r0 < dims[0]; r0 += cr) {
        hsize_t start[2] = {r0, 0}, count[2] = {dims[0] - r0 < cr ? dims[0] - r0 : cr, dims[1]};
        s = fill(ctx, (int64_t)r0, (int64_t)(r0 + count[0]), buf);
        if (s != TQP_OK || count[1] == 0) continue;
        hid_t fsp = H5Dget_space(d), msp = H5Screate_simple(2, count, NULL);
        herr_t rc = H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL);
        if (rc >= 0) rc = H5Dwrite(d, mem_type, msp, fsp, H5P_DEFAULT, buf);
        H5Sclose(msp);
        H5Sclose(fsp);
        if (rc < 0) s = tqp_error_set(TQP_EHDF5, "cannot write dataset %s", name);
    }
    free(buf);
    if (H5Dclose(d) < 0 && s == TQP_OK) s = tqp_error_set(TQP_EHDF5, "cannot write dataset %s", name);
    return s;
}

tqp_status tqp_h5_read(hid_t loc, const char *name, hid_t mem_type, int rank, const hsize_t *dims,
                       void *data)
{
    return tqp_h5_read_rows(loc, name, mem_type, rank, dims, 0, rank ? dims[0] : 0, data);
}

tqp_status tqp_h5_read_rows(hid_t loc, const char *name, hid_t mem_type, int rank,
                            const hsize_t *dims, hsize_t r0, hsize_t r1, void *data)
{
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
        return tqp_error_set(TQP_EINPUT, "no dataset %s", name);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return tqp_error_set(TQP_EINPUT, "cannot open dataset %s", name);
    hid_t sp = H5Dget_space(d);
    hsize_t got[8] = {0};
    int r = H5Sget_simple_extent_ndims(sp);
    int ok = r == rank && H5Sget_simple_extent_dims(sp, got, NULL) == r;
    for (int i = 0; ok && i < rank; i++) ok = got[i] == dims[i];
    H5Sclose(sp);
    if (!ok) {
        H5Dclose(d);
        if (r == 2 && rank == 2)
            return tqp_error_set(TQP_EINPUT, "dataset %s has shape (%llu, %llu), expected (%llu, %llu)",
                                 name, (unsigned long long)got[0], (unsigned long long)got[1],
                                 (unsigned long long)dims[0], (unsigned long long)dims[1]);
        return tqp_error_set(TQP_EINPUT, "dataset %s has the wrong shape", name);
    }
    herr_t rc = 0;
    if (rank == 0 || (r0 == 0 && r1 == dims[0])) {
        rc = H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    } else if (r1 > r0) { /* rows [r0, r1) of the first dimension, everything of the others */
        hsize_t start[8] = {r0}, count[8] = {r1 - r0};
        for (int i = 1; i < rank; i++) count[i] = dims[i];
        hid_t fsp = H5Dget_space(d), msp = H5Screate_simple(rank, count, NULL);
        rc = H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL);
        if (rc >= 0) rc = H5Dread(d, mem_type, msp, fsp, H5P_DEFAULT, data);
        H5Sclose(msp);
        H5Sclose(fsp);
    }
    H5Dclose(d);
    return rc < 0 ? tqp_error_set(TQP_EINPUT, "cannot read dataset %s (checksum or I/O error)", name)
                  : TQP_OK;
}
