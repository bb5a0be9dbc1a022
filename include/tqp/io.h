/* Files: whole-file reads, read-only memory maps, durable writes.  Every failure records a
 * one-line message that names the path. */
#ifndef TQP_IO_H
#define TQP_IO_H

#include <stddef.h>
#include <stdint.h>

#include "tqp/error.h"

/* A read-only memory map of a whole file.  `data` is NULL for an empty file. */
typedef struct {
    const uint8_t *data; // (size) bytes, borrowed from the kernel page cache
    size_t size;
    char *path; // owned copy, for messages
} tqp_mmap;

tqp_status tqp_mmap_open(const char *path, tqp_mmap *map);

void tqp_mmap_close(tqp_mmap *map);

/* Read a whole file into a malloc'd buffer with a terminating NUL (not counted in *len). */
tqp_status tqp_file_read_all(const char *path, char **buf, size_t *len);

/* Write `len` bytes to `path` durably: write a temporary file beside it, fsync, rename into
 * place, fsync the directory.  A crash leaves either the old file or the new one. */
tqp_status tqp_file_write_atomic(const char *path, const void *data, size_t len);

/* fsync a file by name. */
tqp_status tqp_fsync_path(const char *path);
/* fsync `from`, rename it to `to`, fsync the directory: the commit point of a durable write. */
tqp_status tqp_rename_durable(const char *from, const char *to);
/* Remove a directory of plain files (no recursion into subdirectories); absent is fine. */
tqp_status tqp_remove_tree(const char *dir);
/* Remove the temporary files that interrupted atomic writes of `path` left beside it (named
 * PATH.tmp.<pid>, for a pid other than this process's), and nothing else; returns how many. */
int tqp_remove_stale_temps(const char *path);

/* This machine's physical memory in bytes (0 if unknown). */
double tqp_physical_memory(void);

/* Check before long work that `path` can be created: its directory exists and is writable. */
tqp_status tqp_check_writable(const char *path);

/* Hex SHA-256 (64 characters + NUL) of a buffer. */
void tqp_sha256_hex(const void *data, size_t len, char hex[65]);

/* Hex SHA-256 of a file's contents. */
tqp_status tqp_sha256_file(const char *path, char hex[65]);

#endif
