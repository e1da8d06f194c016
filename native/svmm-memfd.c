/*
 * svmm-memfd: a sealed copy of a file in memory, for sandbox-vmm's template clones on QEMUs that
 * open their RAM file read-write whatever the mapping (before 8.2). Every clone maps the copy
 * privately (copy on write), so clones share the pages they only read; the seals make the copy
 * unchangeable through any fd, even one a hostile QEMU reopened read-write.
 *
 *   svmm-memfd SOURCE NAME
 *
 * Opens SOURCE (no symlink followed), creates memfd NAME of the same size, copies SOURCE's data
 * into it (holes and all-zero blocks stay holes), seals it (no write, shrink, grow or further
 * seal), places it at fd 3, prints "ready SIZE\n" and waits for stdin to close. Node has no
 * memfd_create: the caller opens /proc/<pid>/fd/3 while this program waits, then closes its stdin.
 *
 * Exit status: 0 done, 2 usage, 1 failed (the reason on stderr, nothing printed on stdout).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SVMM_PROGRAM "svmm-memfd"
#include "svmm-fail.h"

#ifndef F_SEAL_SEAL
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#define F_SEAL_WRITE 0x0008
#endif

#define HELD_FD 3
#define CHUNK (1 << 20)
#define BLOCK 4096

static int all_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

/* Copies [start, end) of src into dst, block by block, skipping all-zero blocks (left as holes). */
static void copy_range(int src, int dst, off_t start, off_t end, unsigned char *buf) {
  for (off_t at = start; at < end;) {
    size_t want = (size_t)(end - at < CHUNK ? end - at : CHUNK);
    ssize_t got = pread(src, buf, want, at);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(1, errno, "read at %lld", (long long)at);
    if (got == 0) fail(1, 0, "the source shrank while it was copied (at %lld)", (long long)at);
    for (ssize_t off = 0; off < got; off += BLOCK) {
      size_t n = (size_t)(got - off < BLOCK ? got - off : BLOCK);
      if (all_zero(buf + off, n)) continue;
      for (size_t done = 0; done < n;) {
        ssize_t put = pwrite(dst, buf + off + done, n - done, at + off + (off_t)done);
        if (put < 0 && errno == EINTR) continue;
        if (put < 0) fail(1, errno, "write to the memfd at %lld", (long long)(at + off));
        done += (size_t)put;
      }
    }
    at += got;
  }
}

int main(int argc, char **argv) {
  if (argc != 3 || argv[1][0] != '/' || argv[2][0] == '\0') fail(2, 0, "usage: svmm-memfd /absolute/SOURCE NAME");
  const char *source = argv[1];

  int src = open(source, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (src < 0) fail(1, errno, "open %s", source);
  struct stat st;
  if (fstat(src, &st) < 0) fail(1, errno, "stat %s", source);
  if (!S_ISREG(st.st_mode)) fail(1, 0, "%s is not a regular file", source);

  int mem = memfd_create(argv[2], MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mem < 0) fail(1, errno, "memfd_create");
  if (ftruncate(mem, st.st_size) < 0) fail(1, errno, "size the memfd to %lld bytes", (long long)st.st_size);

  unsigned char *buf = malloc(CHUNK);
  if (!buf) fail(1, ENOMEM, "buffer");
  /* Data extents only (SEEK_DATA/SEEK_HOLE); a file system without them reports one extent. */
  for (off_t at = 0; at < st.st_size;) {
    off_t data = lseek(src, at, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;
    if (data < 0) fail(1, errno, "find data in %s", source);
    off_t hole = lseek(src, data, SEEK_HOLE);
    if (hole < 0) fail(1, errno, "find a hole in %s", source);
    if (hole > st.st_size) hole = st.st_size;
    copy_range(src, mem, data, hole, buf);
    at = hole;
  }
  free(buf);
  close(src);

  if (fcntl(mem, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) fail(1, errno, "seal the memfd");
  if (mem != HELD_FD) {
    if (dup2(mem, HELD_FD) < 0) fail(1, errno, "move the memfd to fd %d", HELD_FD);
    close(mem);
  }

  if (printf("ready %lld\n", (long long)st.st_size) < 0 || fflush(stdout) != 0) fail(1, errno, "write to stdout");
  /* Held until the caller has its own fd: it closes our stdin (or dies). */
  for (;;) {
    char c;
    ssize_t got = read(STDIN_FILENO, &c, 1);
    if (got > 0 || (got < 0 && errno == EINTR)) continue;
    return 0;
  }
}
