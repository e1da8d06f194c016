/*
 * svmm-launch: the exec helper between sandbox-vmm (Node, running as root) and QEMU.
 *
 *   svmm-launch [options] -- /absolute/program [args...]
 *
 *   --keep-fd N          inherited fd N (>= 3) stays open in the program (repeatable)
 *   --listen N:PATH      listening unix socket bound to PATH, placed at fd N (repeatable)
 *   --uid N --gid N      run as this uid/gid (both or neither)
 *   --groups A,B,...     supplementary groups with --uid/--gid (default: none)
 *   --drop-caps          empty the capability bounding set
 *   --die-with-parent    SIGKILL the program when the launcher's parent dies
 *   --chdir DIR          working directory of the program (default: /)
 *   --netns PATH         enter this network namespace (/run/netns/NAME, /proc/PID/ns/net)
 *
 * Node cannot do these steps itself between fork and exec, and setpriv alone leaves every
 * non-CLOEXEC fd of the caller open and keeps the bounding set. So every privileged step lives in
 * one ordered function, setup(), and ends in execv: the program keeps the launcher's pid.
 *
 * Exit status: 2 usage, 126 a setup step failed, 127 exec failed, 1 the parent died during setup.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FDS 64
#define MAX_GROUPS 64
/* The high copies of the listening sockets start here (or above the highest target fd). */
#define HIGH_FD_BASE 64

struct listen_fd {
  int fd;
  const char *path;
  int high; /* the socket while it waits above every target */
};

static struct {
  int keep[MAX_FDS];
  size_t nkeep;
  struct listen_fd listen[MAX_FDS];
  size_t nlisten;
  int has_ids;
  uid_t uid;
  gid_t gid;
  gid_t groups[MAX_GROUPS];
  size_t ngroups;
  int drop_caps;
  int die_with_parent;
  const char *chdir;
  const char *netns;
  char **argv; /* program and its arguments */
} opt = { .chdir = "/" };

/* Socket files bound so far: a failed launch removes them, so it leaves nothing behind. */
static const char *bound[MAX_FDS];
static size_t nbound;

static void usage(const char *fmt, ...) {
  va_list ap;
  fputs("svmm-launch: usage: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\n  svmm-launch [--keep-fd N]... [--listen N:PATH]... [--uid N --gid N [--groups A,B]]"
        " [--drop-caps] [--die-with-parent] [--chdir DIR] [--netns PATH] -- /absolute/program [args...]\n",
        stderr);
  exit(2);
}

/* "svmm-launch: <step>: <strerror>", where step names the path or fd involved. */
static void fail(int status, int err, const char *fmt, ...) {
  va_list ap;
  fputs("svmm-launch: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, ": %s\n", strerror(err));
  for (size_t i = 0; i < nbound; i++) unlink(bound[i]);
  exit(status);
}

/* A decimal in [min, max]: digits only, so "-1", "+1", " 1" and "" are refused. */
static int parse_num(const char *s, unsigned long long min, unsigned long long max,
                     unsigned long long *out, const char **end) {
  unsigned long long v = 0;
  const char *p = s;
  if (*p < '0' || *p > '9') return -1;
  for (; *p >= '0' && *p <= '9'; p++) {
    v = v * 10 + (unsigned long long)(*p - '0');
    if (v > max) return -1;
  }
  if (v < min || (end == NULL && *p != '\0')) return -1;
  if (end) *end = p;
  *out = v;
  return 0;
}

/* Ids are 32-bit; 4294967295 is (uid_t)-1, which set*id calls read as "leave unchanged". */
#define MAX_ID 4294967294ULL

static int fd_taken(int fd) {
  for (size_t i = 0; i < opt.nkeep; i++)
    if (opt.keep[i] == fd) return 1;
  for (size_t i = 0; i < opt.nlisten; i++)
    if (opt.listen[i].fd == fd) return 1;
  return 0;
}

static void parse(int argc, char **argv) {
  int have_uid = 0, have_gid = 0, have_groups = 0, have_chdir = 0, have_netns = 0;
  unsigned long long v;
  int i;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    const char *end;
    if (strcmp(a, "--") == 0) break;
    if (strcmp(a, "--drop-caps") == 0) {
      opt.drop_caps = 1;
      continue;
    }
    if (strcmp(a, "--die-with-parent") == 0) {
      opt.die_with_parent = 1;
      continue;
    }
    if (strcmp(a, "--keep-fd") != 0 && strcmp(a, "--listen") != 0 && strcmp(a, "--uid") != 0 &&
        strcmp(a, "--gid") != 0 && strcmp(a, "--groups") != 0 && strcmp(a, "--chdir") != 0 &&
        strcmp(a, "--netns") != 0)
      usage("unknown option '%s' (the program follows --)", a);
    if (val == NULL) usage("%s needs a value", a);
    i++;
    if (strcmp(a, "--keep-fd") == 0) {
      if (parse_num(val, 3, 1048576, &v, NULL) != 0) usage("--keep-fd '%s': not an fd >= 3", val);
      if (fd_taken((int)v)) usage("--keep-fd %s: fd given twice", val);
      if (opt.nkeep == MAX_FDS) usage("too many --keep-fd");
      opt.keep[opt.nkeep++] = (int)v;
    } else if (strcmp(a, "--listen") == 0) {
      if (parse_num(val, 3, 1048576, &v, &end) != 0 || *end != ':' || end[1] == '\0')
        usage("--listen '%s': expected N:PATH with N >= 3", val);
      if (fd_taken((int)v)) usage("--listen %s: fd given twice", val);
      if (opt.nlisten == MAX_FDS) usage("too many --listen");
      opt.listen[opt.nlisten++] = (struct listen_fd){ .fd = (int)v, .path = end + 1, .high = -1 };
    } else if (strcmp(a, "--uid") == 0 && !have_uid) {
      if (parse_num(val, 0, MAX_ID, &v, NULL) != 0) usage("--uid '%s': not an id in 0..%llu", val, MAX_ID);
      opt.uid = (uid_t)v;
      have_uid = 1;
    } else if (strcmp(a, "--gid") == 0 && !have_gid) {
      if (parse_num(val, 0, MAX_ID, &v, NULL) != 0) usage("--gid '%s': not an id in 0..%llu", val, MAX_ID);
      opt.gid = (gid_t)v;
      have_gid = 1;
    } else if (strcmp(a, "--groups") == 0 && !have_groups) {
      /* "" means no supplementary groups, like leaving the option out. */
      for (const char *p = val; *p != '\0'; p = *end == ',' ? end + 1 : end) {
        if (parse_num(p, 0, MAX_ID, &v, &end) != 0 || (*end != ',' && *end != '\0') ||
            (*end == ',' && end[1] == '\0'))
          usage("--groups '%s': expected comma-separated ids in 0..%llu", val, MAX_ID);
        if (opt.ngroups == MAX_GROUPS) usage("--groups: more than %d groups", MAX_GROUPS);
        opt.groups[opt.ngroups++] = (gid_t)v;
      }
      have_groups = 1;
    } else if (strcmp(a, "--chdir") == 0 && !have_chdir) {
      if (val[0] == '\0') usage("--chdir: empty directory");
      opt.chdir = val;
      have_chdir = 1;
    } else if (strcmp(a, "--netns") == 0 && !have_netns) {
      if (val[0] != '/') usage("--netns '%s': not an absolute path", val);
      opt.netns = val;
      have_netns = 1;
    } else {
      usage("%s given twice", a);
    }
  }
  if (have_uid != have_gid) usage("--uid and --gid go together");
  if (have_groups && !have_uid) usage("--groups needs --uid and --gid");
  opt.has_ids = have_uid;
  if (i >= argc) usage("missing -- before the program");
  if (i + 1 >= argc) usage("missing program after --");
  /* Absolute only: execv does no PATH search, and a relative name would follow --chdir. */
  if (argv[i + 1][0] != '/') usage("program '%s' is not an absolute path", argv[i + 1]);
  opt.argv = &argv[i + 1];
}

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

static int is_kept(int fd) {
  for (size_t i = 0; i < opt.nkeep; i++)
    if (opt.keep[i] == fd) return 1;
  return 0;
}

/* Fallback for kernels without close_range (< 5.9): close what /proc/self/fd lists. */
static void close_by_proc(void) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  if (d == NULL) fail(126, errno, "close fds: /proc/self/fd");
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (fd >= 3 && fd != dirfd(d) && !is_kept(fd)) close(fd);
  }
  closedir(d);
}

/* Everything the caller leaked (any non-CLOEXEC fd) goes, except what it asked to pass on. */
static void close_inherited_fds(void) {
  /* A kept fd must be open now, and must survive exec even if the caller set CLOEXEC on it. */
  for (size_t i = 0; i < opt.nkeep; i++) {
    int flags = fcntl(opt.keep[i], F_GETFD);
    if (flags < 0 || fcntl(opt.keep[i], F_SETFD, flags & ~FD_CLOEXEC) < 0)
      fail(126, errno, "keep-fd %d", opt.keep[i]);
  }
  qsort(opt.keep, opt.nkeep, sizeof opt.keep[0], cmp_int);
#ifdef SYS_close_range
  {
    unsigned int from = 3;
    int ok = 1;
    /* close_range over each gap between kept fds, then from the last one to the end. */
    for (size_t i = 0; i <= opt.nkeep && ok; i++) {
      unsigned int to = i < opt.nkeep ? (unsigned int)opt.keep[i] - 1 : ~0U;
      if (from <= to && syscall(SYS_close_range, from, to, 0) != 0) ok = 0;
      if (i < opt.nkeep) from = (unsigned int)opt.keep[i] + 1;
    }
    if (ok) return;
    if (errno != ENOSYS && errno != EINVAL) fail(126, errno, "close_range");
  }
#endif
  close_by_proc();
}

/*
 * All sockets are created first and parked at high fds, and only then moved onto their targets:
 * socket() returns the lowest free fd, which may be another socket's target.
 */
static void create_listen_sockets(void) {
  int base = HIGH_FD_BASE;
  for (size_t i = 0; i < opt.nkeep; i++)
    if (opt.keep[i] >= base) base = opt.keep[i] + 1;
  for (size_t i = 0; i < opt.nlisten; i++)
    if (opt.listen[i].fd >= base) base = opt.listen[i].fd + 1;

  for (size_t i = 0; i < opt.nlisten; i++) {
    struct listen_fd *l = &opt.listen[i];
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int s;
    /* The path and its NUL must fit: an abstract or truncated name is not what was asked. */
    if (strlen(l->path) >= sizeof addr.sun_path) fail(126, ENAMETOOLONG, "listen %s", l->path);
    memcpy(addr.sun_path, l->path, strlen(l->path) + 1);
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) fail(126, errno, "socket for %s", l->path);
    l->high = fcntl(s, F_DUPFD_CLOEXEC, base);
    if (l->high < 0) fail(126, errno, "move socket for %s above fd %d", l->path, base);
    close(s);
    /*
     * bind never replaces an existing file (EADDRINUSE): a stale or foreign path is an error.
     * The file gets 0777 & ~umask: 0177 makes it 0600 (x means nothing on a socket).
     */
    umask(0177);
    if (bind(l->high, (struct sockaddr *)&addr, sizeof addr) != 0) fail(126, errno, "bind %s", l->path);
    umask(077);
    bound[nbound++] = l->path;
    if (listen(l->high, 16) != 0) fail(126, errno, "listen %s", l->path);
  }
  /* Targets are all below base, so no dup2 can hit another socket's parked copy. */
  for (size_t i = 0; i < opt.nlisten; i++) {
    if (dup2(opt.listen[i].high, opt.listen[i].fd) < 0)
      fail(126, errno, "place socket %s at fd %d", opt.listen[i].path, opt.listen[i].fd);
    close(opt.listen[i].high);
  }
}

/*
 * Joins the pod's network namespace, so that the taps its CNI plugin made there are the ones the
 * program opens. Checked to be a network namespace first: setns with CLONE_NEWNET would refuse
 * another kind too, but NS_GET_NSTYPE lets the error say what the file is.
 */
static void enter_netns(void) {
  int fd = open(opt.netns, O_RDONLY | O_CLOEXEC);
  int type;
  if (fd < 0) fail(126, errno, "netns %s", opt.netns);
  type = ioctl(fd, NS_GET_NSTYPE);
  /* ENOTTY: not a namespace file at all; older kernels (< 4.11) lack the ioctl and leave it to setns. */
  if (type < 0 && errno == ENOTTY) fail(126, EINVAL, "netns %s is not a namespace file", opt.netns);
  if (type >= 0 && type != CLONE_NEWNET) fail(126, EINVAL, "netns %s is not a network namespace", opt.netns);
  if (setns(fd, CLONE_NEWNET) != 0) fail(126, errno, "setns %s", opt.netns);
  close(fd);
}

/* Empties the bounding set, so no later exec (e.g. of a setuid binary) can regain a capability. */
static void drop_bounding_set(void) {
  FILE *f;
  int last = -1;
  /* Without privilege there is nothing to lose, and no-new-privs keeps it that way. */
  if (geteuid() != 0) return;
  f = fopen("/proc/sys/kernel/cap_last_cap", "re");
  if (f == NULL) fail(126, errno, "read /proc/sys/kernel/cap_last_cap");
  if (fscanf(f, "%d", &last) != 1 || last < 0) fail(126, EINVAL, "read /proc/sys/kernel/cap_last_cap");
  fclose(f);
  for (int cap = 0; cap <= last; cap++)
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) fail(126, errno, "drop capability %d from the bounding set", cap);
}

static void change_ids(void) {
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  /* Groups first, then gid, then uid: after setresuid we could no longer change the others. */
  if (setgroups(opt.ngroups, opt.ngroups ? opt.groups : NULL) != 0) fail(126, errno, "setgroups");
  if (setresgid(opt.gid, opt.gid, opt.gid) != 0) fail(126, errno, "setresgid %u", (unsigned)opt.gid);
  if (setresuid(opt.uid, opt.uid, opt.uid) != 0) fail(126, errno, "setresuid %u", (unsigned)opt.uid);
  /* Trust but verify: a partial change would leave a way back to root. */
  if (getresuid(&ru, &eu, &su) != 0) fail(126, errno, "getresuid");
  if (getresgid(&rg, &eg, &sg) != 0) fail(126, errno, "getresgid");
  if (ru != opt.uid || eu != opt.uid || su != opt.uid) fail(126, EPERM, "uid is not %u after setresuid", (unsigned)opt.uid);
  if (rg != opt.gid || eg != opt.gid || sg != opt.gid) fail(126, EPERM, "gid is not %u after setresgid", (unsigned)opt.gid);
}

/* Ambient and inheritable capabilities are the two ways a capability can cross exec unasked. */
static void clear_exec_capabilities(void) {
  struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
  /* EINVAL: a kernel older than 4.3 has no ambient set, so there is nothing to clear. */
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    fail(126, errno, "clear ambient capabilities");
  if (syscall(SYS_capget, &hdr, data) != 0) fail(126, errno, "capget");
  for (size_t i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) data[i].inheritable = 0;
  if (syscall(SYS_capset, &hdr, data) != 0) fail(126, errno, "clear inheritable capabilities");
}

static void setup(pid_t parent) {
  close_inherited_fds();
  /* Needs CAP_SYS_ADMIN, so before any privilege goes. */
  if (opt.netns) enter_netns();
  /* Files created from here on (the sockets, then the program's) are their owner's alone. */
  umask(077);
  create_listen_sockets();
  if (chdir(opt.chdir) != 0) fail(126, errno, "chdir %s", opt.chdir);
  /* PR_CAPBSET_DROP needs CAP_SETPCAP, which the uid change takes away. */
  if (opt.drop_caps) drop_bounding_set();
  if (opt.has_ids) change_ids();
  clear_exec_capabilities();
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail(126, errno, "set no_new_privs");
  if (opt.die_with_parent) {
    /* Only now: a uid change resets the parent-death signal. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) fail(126, errno, "set parent-death signal");
    /* If the parent is already gone, the signal will never come: do not start an orphan. */
    if (getppid() != parent) fail(1, ESRCH, "parent %d exited before the parent-death signal was set", (int)parent);
  }
}

int main(int argc, char **argv) {
  /* Recorded first, before anything can be slow, so that a parent lost during setup is noticed. */
  pid_t parent = getppid();
  parse(argc, argv);
  setup(parent);
  /* The environment is the launcher's own: the caller passes an explicit minimal one. */
  execv(opt.argv[0], opt.argv);
  fail(127, errno, "exec %s", opt.argv[0]);
  return 127;
}
