/*
 * svmm-sendfd: writes one message to a connected unix socket with one file descriptor attached
 * (SCM_RIGHTS), for sandbox-vmm's QMP client: QEMU's getfd and add-fd take the fd that arrives
 * with the command. Node has no sendmsg, so the client hands this program its QMP socket and the
 * fd, and holds its own writes until the program has exited.
 *
 *   svmm-sendfd SOCKET_FD FD   (the message is read from stdin, at most 64 KiB)
 *
 * Exit status: 0 sent, 2 usage, 1 failed (the reason on stderr). Nothing is sent unless the whole
 * message was read; a failure after the first byte went out is reported as such.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define SVMM_PROGRAM "svmm-sendfd"
#include "svmm-fail.h"

#define MAX_MESSAGE (64 * 1024)

static int parse_fd(const char *s) {
  char *end;
  long v;
  errno = 0;
  v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < 0 || v > INT_MAX) fail(2, 0, "usage: svmm-sendfd SOCKET_FD FD ('%s' is not an fd)", s);
  return (int)v;
}

int main(int argc, char **argv) {
  static char message[MAX_MESSAGE + 1];
  size_t length = 0, sent = 0;
  int sock, fd;
  struct stat st;

  if (argc != 3) fail(2, 0, "usage: svmm-sendfd SOCKET_FD FD (the message on stdin)");
  sock = parse_fd(argv[1]);
  fd = parse_fd(argv[2]);
  if (fstat(sock, &st) != 0) fail(1, errno, "socket fd %d", sock);
  if (!S_ISSOCK(st.st_mode)) fail(1, ENOTSOCK, "fd %d", sock);
  if (fstat(fd, &st) != 0) fail(1, errno, "fd %d", fd);

  for (;;) {
    ssize_t n = read(STDIN_FILENO, message + length, sizeof message - length);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(1, errno, "read the message");
    if (n == 0) break;
    length += (size_t)n;
    if (length > MAX_MESSAGE) fail(1, EMSGSIZE, "the message is longer than %d bytes", MAX_MESSAGE);
  }
  if (length == 0) fail(1, ENODATA, "empty message");

  /* The fd rides on the first sendmsg; a short write sends the rest plainly, in order. */
  while (sent < length) {
    union {
      struct cmsghdr align;
      char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct iovec iov = { .iov_base = message + sent, .iov_len = length - sent };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    ssize_t n;
    if (sent == 0) {
      struct cmsghdr *cmsg;
      memset(&control, 0, sizeof control);
      msg.msg_control = control.buf;
      msg.msg_controllen = sizeof control.buf;
      cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }
    n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
      /* Node's socket is non-blocking: wait for room rather than spin. */
      if (errno != EINTR) usleep(1000);
      continue;
    }
    if (n < 0) fail(1, errno, sent == 0 ? "sendmsg" : "sendmsg after %zu of %zu bytes", sent, length);
    sent += (size_t)n;
  }
  return 0;
}
