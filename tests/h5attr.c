/* Sets a scalar attribute of an HDF5 file's object, as someone tampering with a file would:
 * for the bad-input tests of files TQP reads back.
 * Usage: h5attr FILE OBJECT NAME i64|f64 VALUE   (OBJECT: "/" or a group path) */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 6 || (strcmp(argv[4], "i64") && strcmp(argv[4], "f64"))) {
        fprintf(stderr, "usage: h5attr FILE OBJECT NAME i64|f64 VALUE\n");
        return 2;
    }
    hid_t f = H5Fopen(argv[1], H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t o = f < 0 ? -1 : H5Oopen(f, argv[2], H5P_DEFAULT);
    if (o < 0) {
        fprintf(stderr, "h5attr: %s: cannot open %s\n", argv[1], argv[2]);
        return 1;
    }
    int i64 = !strcmp(argv[4], "i64");
    long long iv = strtoll(argv[5], NULL, 10);
    double dv = strtod(argv[5], NULL);
    if (H5Aexists(o, argv[3]) > 0) H5Adelete(o, argv[3]);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t type = i64 ? H5T_STD_I64LE : H5T_IEEE_F64LE;
    hid_t a = H5Acreate2(o, argv[3], type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1
                      : H5Awrite(a, i64 ? H5T_NATIVE_LLONG : H5T_NATIVE_DOUBLE,
                                 i64 ? (const void *)&iv : (const void *)&dv);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Oclose(o);
    H5Fclose(f);
    if (rc < 0) fprintf(stderr, "h5attr: %s: cannot write %s\n", argv[1], argv[3]);
    return rc < 0 ? 1 : 0;
}
