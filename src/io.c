/* Files: whole-file reads, read-only memory maps, atomic durable writes and SHA-256 digests.
 * Durable writes follow the write-temp / fsync / rename / fsync-directory sequence, so a crash
 * leaves either the old file or the new one. */
#include "tqp/io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static tqp_status os_error(const char *path, const char *what)
{
    if (errno == ENOENT || errno == ENOTDIR) /* worded as the option parser words it */
        return tqp_error_set(TQP_ENOENT, "%s: no such file", path);
    return tqp_error_set(TQP_EIO, "%s: %s%s%s", path, what, *what ? ": " : "", strerror(errno));
}

tqp_status tqp_mmap_open(const char *path, tqp_mmap *map)
{
    memset(map, 0, sizeof *map);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return os_error(path, "");
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return os_error(path, "stat");
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return tqp_error_set(TQP_EINPUT, "%s: not a regular file", path);
    }
    map->size = (size_t)st.st_size;
    if (map->size > 0) {
        void *p = mmap(NULL, map->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return os_error(path, "mmap");
        }
        map->data = p;
    }
    close(fd);
    map->path = strdup(path);
    return TQP_OK;
}

void tqp_mmap_close(tqp_mmap *map)
{
    if (map->data) munmap((void *)map->data, map->size);
    free(map->path);
    memset(map, 0, sizeof *map);
}

tqp_status tqp_file_read_all(const char *path, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return os_error(path, "");
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return tqp_error_set(TQP_EINPUT, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *b = tqp_malloc(n + 1);
    if (!b) {
        fclose(f);
        return TQP_ENOMEM;
    }
    size_t got = fread(b, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (got != n || err) {
        free(b);
        return tqp_error_set(TQP_EIO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return TQP_OK;
}

/* fsync the directory that holds `path`, so that a rename into it is durable. */
static tqp_status fsync_parent(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return tqp_error_set(TQP_ENOMEM, "out of memory");
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    tqp_status s = TQP_OK;
    if (fd < 0 || fsync(fd) != 0) s = os_error(path, "fsync of directory");
    if (fd >= 0) close(fd);
    free(copy);
    return s;
}

static tqp_status write_error(const char *path, const char *what)
{
    return tqp_error_set(TQP_EIO, "%s: cannot write (%s): %s", path, what, strerror(errno));
}

tqp_status tqp_check_writable(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return tqp_error_set(TQP_ENOMEM, "out of memory");
    const char *dir = dirname(copy);
    struct stat st;
    tqp_status s = TQP_OK;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        s = tqp_error_set(TQP_EIO, "%s: cannot write: directory %s does not exist", path, dir);
    else if (access(dir, W_OK) != 0)
        s = tqp_error_set(TQP_EIO, "%s: cannot write: directory %s is not writable", path, dir);
    free(copy);
    return s;
}

int tqp_remove_stale_temps(const char *path)
{
    char *a = strdup(path), *b = strdup(path);
    DIR *d = a && b ? opendir(dirname(a)) : NULL;
    const char *base = b ? basename(b) : "";
    size_t n = strlen(base);
    long me = (long)getpid();
    int removed = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        const char *e = de->d_name;
        if (strncmp(e, base, n) || strncmp(e + n, ".tmp.", 5)) continue;
        const char *digits = e + n + 5;
        char *end;
        long pid = strtol(digits, &end, 10);
        if (!*digits || *end || !isdigit((unsigned char)*digits) || pid == me) continue;
        size_t len = strlen(a) + strlen(e) + 2;
        char *full = malloc(len);
        if (full) {
            snprintf(full, len, "%s/%s", a, e);
            removed += unlink(full) == 0;
        }
        free(full);
    }
    if (d) closedir(d);
    free(a);
    free(b);
    return removed;
}

tqp_status tqp_file_write_atomic(const char *path, const void *data, size_t len)
{
    tqp_remove_stale_temps(path);
    size_t plen = strlen(path) + 32;
    char *tmp = tqp_malloc(plen);
    if (!tmp) return TQP_ENOMEM;
    snprintf(tmp, plen, "%s.tmp.%ld", path, (long)getpid());
    tqp_status s = TQP_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        s = write_error(path, "create");
        goto out;
    }
    const uint8_t *p = data;
    for (size_t done = 0; done < len;) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            s = write_error(path, "write");
            break;
        }
        done += (size_t)w;
    }
    if (s == TQP_OK && fsync(fd) != 0) s = write_error(path, "fsync");
    if (close(fd) != 0 && s == TQP_OK) s = write_error(path, "close");
    if (s == TQP_OK && rename(tmp, path) != 0) s = write_error(path, "rename");
    if (s == TQP_OK) s = fsync_parent(path);
    if (s != TQP_OK) unlink(tmp);
out:
    free(tmp);
    return s;
}

tqp_status tqp_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return write_error(path, "open for fsync");
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? TQP_OK : write_error(path, "fsync");
}

tqp_status tqp_rename_durable(const char *from, const char *to)
{
    TQP_CHECK(tqp_fsync_path(from));
    if (rename(from, to) != 0) return write_error(to, "rename");
    return fsync_parent(to);
}

tqp_status tqp_remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? TQP_OK : write_error(dir, "opendir");
    struct dirent *e;
    char path[4096];
    tqp_status s = TQP_OK;
    while ((e = readdir(d)) && s == TQP_OK) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0) s = write_error(path, "unlink");
    }
    closedir(d);
    if (s == TQP_OK && rmdir(dir) != 0) s = write_error(dir, "rmdir");
    return s;
}

static void to_hex(const unsigned char *d, unsigned n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[2 * n] = '\0';
}

void tqp_sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    to_hex(md, n, hex);
}

tqp_status tqp_sha256_file(const char *path, char hex[65])
{
    tqp_mmap m;
    TQP_CHECK(tqp_mmap_open(path, &m));
    tqp_sha256_hex(m.data ? (const void *)m.data : "", m.size, hex);
    tqp_mmap_close(&m);
    return TQP_OK;
}

double tqp_physical_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (double)pages * (double)page : 0;
}
