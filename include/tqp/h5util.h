/* Small HDF5 helpers: checked calls, attributes, and deterministic object creation (no
 * modification times, so the same data give the same bytes). */
#ifndef TQP_H5UTIL_H
#define TQP_H5UTIL_H

#include <hdf5.h>
#include <stdint.h>

#include "tqp/error.h"

/* Wrap an HDF5 call returning a negative value on failure; `what` names the file. */
#define TQP_H5_CHECK(what, call)                                                                   \
    do {                                                                                           \
        if ((call) < 0)                                                                            \
            return tqp_error_set(TQP_EHDF5, "%s: HDF5 call failed: %s", (what), #call);            \
    } while (0)

/* Silence HDF5's own error printing (TQP reports errors itself). */
void tqp_h5_quiet(void);

tqp_status tqp_h5_attr_str(hid_t obj, const char *name, const char *value);
tqp_status tqp_h5_attr_i64(hid_t obj, const char *name, int64_t value);
tqp_status tqp_h5_attr_f64(hid_t obj, const char *name, double value);
/* Read a string attribute into a malloc'd buffer (NULL if absent or not a string). */
char *tqp_h5_attr_read_str(hid_t obj, const char *name);
tqp_status tqp_h5_attr_read_i64(hid_t obj, const char *name, int64_t *value);

tqp_status tqp_h5_attr_read_f64(hid_t obj, const char *name, double *value);

/* Serial dataset write: chunked, with Fletcher-32 checksums, no time tracking.  rank 1 or 2. */
tqp_status tqp_h5_write(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int rank,
                        const hsize_t *dims, const void *data);
/* The same for a 2-D dataset written chunk by chunk: fill(ctx, r0, r1, buf) puts rows
 * [r0, r1) (elem bytes per value, mem_type) into buf, so that only one chunk is ever held. */
tqp_status tqp_h5_write_rows(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                             const hsize_t *dims, size_t elem,
                             tqp_status (*fill)(void *ctx, int64_t r0, int64_t r1, void *buf),
                             void *ctx);
/* Serial dataset read; the dataset must have exactly the shape `dims` (else TQP_EINPUT naming
 * the dataset and both shapes).  A checksum failure is a read error.  Messages name the
 * dataset only: callers prefix the file. */
tqp_status tqp_h5_read(hid_t loc, const char *name, hid_t mem_type, int rank, const hsize_t *dims,
                       void *data);
/* Rows [r0, r1) of the first dimension (r0 <= r1 <= dims[0]) of the dataset, which must have
 * the shape dims, into data (contiguous, r1 - r0 rows). */
tqp_status tqp_h5_read_rows(hid_t loc, const char *name, hid_t mem_type, int rank,
                            const hsize_t *dims, hsize_t r0, hsize_t r1, void *data);

/* Group and dataset creation property lists without time tracking. */
hid_t tqp_h5_gcpl(void);
hid_t tqp_h5_dcpl(void);

#endif
