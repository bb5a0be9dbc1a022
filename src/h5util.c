/* HDF5 attribute helpers and deterministic creation property lists. */
#include "tqp/h5util.h"

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

tqp_status tqp_h5_attr_read_i64(hid_t obj, const char *name, int64_t *value)
{
    if (H5Aexists(obj, name) <= 0) return tqp_error_set(TQP_EINPUT, "no attribute %s", name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Aread(a, H5T_NATIVE_INT64, value);
    if (a >= 0) H5Aclose(a);
    return rc < 0 ? tqp_error_set(TQP_EINPUT, "cannot read attribute %s", name) : TQP_OK;
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
