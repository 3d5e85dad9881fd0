/*
 * Starting a container process. See include/berth_container.h.
 *
 * The child side is a fork of a multi-threaded process: everything it does
 * is a system call or plain arithmetic on stack buffers. It never allocates,
 * never takes a lock, and reports failures to the parent as a fixed-size
 * record on a pipe: the stage that failed and its errno.
 */
#define _GNU_SOURCE
#include "berth_container.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* ---- records sent from the child to the parent ---- */

/* An error (stage and errno), a warning, or (from exec's helper) the PID it cloned. */
enum { RECORD_ERROR = 'E', RECORD_WARNING = 'W', RECORD_PID = 'P' };

struct record {
    char type;
    int error;
    char text[200];
};

/* ---- async-signal-safe string helpers ---- */

static size_t s_len(const char *s) {
    size_t n = 0;
    while (s && s[n]) n++;
    return n;
}

/* Appends src to dst (capacity cap, always NUL-terminated); returns 0, or -1 when truncated. */
static int s_append(char *dst, size_t cap, const char *src) {
    size_t n = s_len(dst), i = 0;
    while (src && src[i]) {
        if (n + 1 >= cap) {
            dst[n] = 0;
            return -1;
        }
        dst[n++] = src[i++];
    }
    dst[n] = 0;
    return 0;
}

static void s_append_u64(char *dst, size_t cap, uint64_t v) {
    char digits[24];
    int i = 0;
    if (v == 0) digits[i++] = '0';
    while (v > 0) {
        digits[i++] = (char)('0' + v % 10);
        v /= 10;
    }
    char out[24];
    int j = 0;
    while (i > 0) out[j++] = digits[--i];
    out[j] = 0;
    s_append(dst, cap, out);
}

static void send_record(int fd, char type, int error, const char *a, const char *b) {
    struct record r;
    memset(&r, 0, sizeof r);
    r.type = type;
    r.error = error;
    s_append(r.text, sizeof r.text, a);
    if (b) {
        s_append(r.text, sizeof r.text, " ");
        s_append(r.text, sizeof r.text, b);
    }
    ssize_t ignored = write(fd, &r, sizeof r);
    (void)ignored;
}

__attribute__((noreturn)) static void fail(int fd, const char *stage, const char *detail) {
    int e = errno;
    send_record(fd, RECORD_ERROR, e, stage, detail);
    _exit(127);
}

/* ---- resolving paths inside the root ---- */

static long sys_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = flags;
    how.mode = mode;
    how.resolve = resolve;
    return syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

/* Opens `path` (absolute inside the container) beneath rootfd, so that no
 * symlink or ".." in the image can lead outside it. */
static int open_in_root(int rootfd, const char *path, int flags) {
    while (*path == '/') path++;
    if (*path == 0) path = ".";
    return (int)sys_openat2(rootfd, path, (uint64_t)(flags | O_CLOEXEC), 0,
                            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
}

/* Creates every missing directory of `path` beneath rootfd; when
 * `last_is_file` the last component is created as an empty file. */
static int make_in_root(int rootfd, const char *path, int last_is_file) {
    char prefix[4096];
    size_t n = s_len(path);
    if (n >= sizeof prefix) {
        errno = ENAMETOOLONG;
        return -1;
    }
    size_t i = 0;
    while (i < n) {
        while (i < n && path[i] == '/') i++;
        size_t start = i;
        while (i < n && path[i] != '/') i++;
        if (i == start) break;
        memcpy(prefix, path, i);
        prefix[i] = 0;
        int is_last = (i >= n) || (path[i] == '/' && i + 1 >= n);
        int fd = open_in_root(rootfd, prefix, O_PATH);
        if (fd >= 0) {
            close(fd);
            continue;
        }
        if (errno != ENOENT) return -1;
        /* Create the component in its (already resolved) parent. */
        char parent[4096];
        memcpy(parent, path, start);
        parent[start] = 0;
        int pfd = open_in_root(rootfd, parent, O_PATH | O_DIRECTORY);
        if (pfd < 0) return -1;
        char name[256];
        size_t len = i - start;
        if (len >= sizeof name) {
            close(pfd);
            errno = ENAMETOOLONG;
            return -1;
        }
        memcpy(name, path + start, len);
        name[len] = 0;
        int rc;
        if (is_last && last_is_file) {
            int f = openat(pfd, name, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
            rc = f < 0 ? -1 : 0;
            if (f >= 0) close(f);
        } else {
            rc = mkdirat(pfd, name, 0755);
        }
        int saved = errno;
        close(pfd);
        if (rc < 0 && saved != EEXIST) {
            errno = saved;
            return -1;
        }
    }
    return 0;
}

static void fd_path(char *out, size_t cap, int fd) {
    out[0] = 0;
    s_append(out, cap, "/proc/self/fd/");
    s_append_u64(out, cap, (uint64_t)fd);
}

/* ---- mounts ---- */

static void do_mount(int status_fd, int rootfd, const struct berth_mount *m) {
    int is_file = 0;
    if (m->kind == BERTH_MOUNT_BIND) {
        struct stat st;
        if (stat(m->source, &st) < 0) fail(status_fd, "bind mount source", m->source);
        is_file = !S_ISDIR(st.st_mode);
    }
    if (make_in_root(rootfd, m->target, is_file) < 0) fail(status_fd, "create mount point", m->target);
    int target = open_in_root(rootfd, m->target, O_PATH);
    if (target < 0) fail(status_fd, "open mount point", m->target);
    char where[64];
    fd_path(where, sizeof where, target);
    if (m->kind == BERTH_MOUNT_BIND) {
        if (mount(m->source, where, NULL, MS_BIND | MS_REC, NULL) < 0) fail(status_fd, "bind mount", m->target);
        unsigned long extra = m->flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
        if (extra) {
            /* Re-open: the new mount sits on top of the old fd's dentry. */
            close(target);
            target = open_in_root(rootfd, m->target, O_PATH);
            if (target < 0) fail(status_fd, "open mount point", m->target);
            fd_path(where, sizeof where, target);
            if (mount(NULL, where, NULL, MS_BIND | MS_REMOUNT | extra, NULL) < 0)
                fail(status_fd, "remount", m->target);
        }
    } else {
        if (mount(m->source, where, m->fstype, m->flags, m->data) < 0) fail(status_fd, "mount", m->target);
    }
    close(target);
}

/* A new network namespace starts with its loopback down; up it goes, as
   docker's containers have it. */
static void loopback_up(int status_fd) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) fail(status_fd, "socket", "for loopback");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) fail(status_fd, "SIOCGIFFLAGS", "lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) fail(status_fd, "SIOCSIFFLAGS", "lo");
    close(s);
}

static void make_devices(int status_fd, int rootfd) {
    static const struct {
        const char *name;
        unsigned major, minor;
    } nodes[] = {{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    int dev = open_in_root(rootfd, "/dev", O_PATH | O_DIRECTORY);
    if (dev < 0) fail(status_fd, "open", "/dev");
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        if (mknodat(dev, nodes[i].name, S_IFCHR | 0666, makedev(nodes[i].major, nodes[i].minor)) < 0 && errno != EEXIST)
            fail(status_fd, "mknod /dev/", nodes[i].name);
    }
    static const struct {
        const char *target, *name;
    } links[] = {{"pts/ptmx", "ptmx"},        {"/proc/self/fd", "fd"},     {"/proc/self/fd/0", "stdin"},
                 {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}, {"/proc/kcore", "core"}};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        if (symlinkat(links[i].target, dev, links[i].name) < 0 && errno != EEXIST)
            fail(status_fd, "symlink /dev/", links[i].name);
    }
    close(dev);
}

/* The nodes asked for with --device, each where the container asked for it
 * (its directories made as needed), replacing what the image has there. */
static void make_requested_devices(int status_fd, int rootfd, const struct berth_container_spec *spec) {
    for (size_t i = 0; i < spec->device_count; i++) {
        const struct berth_device_node *d = &spec->devices[i];
        char parent[4096];
        parent[0] = 0;
        if (s_append(parent, sizeof parent, d->path) < 0) {
            errno = ENAMETOOLONG;
            fail(status_fd, "device path", d->path);
        }
        size_t n = s_len(parent);
        while (n > 0 && parent[n - 1] != '/') n--;
        const char *name = d->path + n;
        parent[n] = 0;
        if (!*name || (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))) {
            errno = EINVAL;
            fail(status_fd, "device path", d->path);
        }
        if (make_in_root(rootfd, parent, 0) < 0) fail(status_fd, "create device directory", d->path);
        int dir = open_in_root(rootfd, parent, O_PATH | O_DIRECTORY);
        if (dir < 0) fail(status_fd, "open device directory", d->path);
        if (unlinkat(dir, name, 0) < 0 && errno != ENOENT) fail(status_fd, "replace device", d->path);
        mode_t kind = d->type == 'b' ? S_IFBLK : S_IFCHR;
        if (mknodat(dir, name, kind | (d->mode & 07777), makedev(d->major, d->minor)) < 0) fail(status_fd, "mknod", d->path);
        if (fchownat(dir, name, d->uid, d->gid, AT_SYMLINK_NOFOLLOW) < 0) fail(status_fd, "chown device", d->path);
        close(dir);
    }
}

static void mask_paths(int status_fd, int rootfd, const struct berth_container_spec *spec) {
    char where[64];
    for (size_t i = 0; i < spec->masked_count; i++) {
        int fd = open_in_root(rootfd, spec->masked_paths[i], O_PATH);
        if (fd < 0) {
            if (errno == ENOENT) continue;
            fail(status_fd, "open masked path", spec->masked_paths[i]);
        }
        struct stat st;
        if (fstat(fd, &st) < 0) fail(status_fd, "stat masked path", spec->masked_paths[i]);
        fd_path(where, sizeof where, fd);
        int rc = S_ISDIR(st.st_mode) ? mount("tmpfs", where, "tmpfs", MS_RDONLY, "size=0")
                                     : mount("/dev/null", where, NULL, MS_BIND, NULL);
        if (rc < 0) fail(status_fd, "mask", spec->masked_paths[i]);
        close(fd);
    }
    for (size_t i = 0; i < spec->readonly_count; i++) {
        int fd = open_in_root(rootfd, spec->readonly_paths[i], O_PATH);
        if (fd < 0) {
            if (errno == ENOENT) continue;
            fail(status_fd, "open read-only path", spec->readonly_paths[i]);
        }
        fd_path(where, sizeof where, fd);
        if (mount(where, where, NULL, MS_BIND | MS_REC, NULL) < 0) fail(status_fd, "bind read-only path", spec->readonly_paths[i]);
        close(fd);
        fd = open_in_root(rootfd, spec->readonly_paths[i], O_PATH);
        if (fd < 0) fail(status_fd, "open read-only path", spec->readonly_paths[i]);
        fd_path(where, sizeof where, fd);
        if (mount(NULL, where, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            fail(status_fd, "remount read-only", spec->readonly_paths[i]);
        close(fd);
    }
}

/* ---- identity, limits, capabilities ---- */

static const char *rlimit_name(int r) {
    switch (r) {
    case RLIMIT_NOFILE: return "RLIMIT_NOFILE";
    case RLIMIT_NPROC: return "RLIMIT_NPROC";
    case RLIMIT_CORE: return "RLIMIT_CORE";
    case RLIMIT_MEMLOCK: return "RLIMIT_MEMLOCK";
    case RLIMIT_STACK: return "RLIMIT_STACK";
    case RLIMIT_FSIZE: return "RLIMIT_FSIZE";
    case RLIMIT_AS: return "RLIMIT_AS";
    case RLIMIT_CPU: return "RLIMIT_CPU";
    case RLIMIT_MSGQUEUE: return "RLIMIT_MSGQUEUE";
    case RLIMIT_NICE: return "RLIMIT_NICE";
    case RLIMIT_RTPRIO: return "RLIMIT_RTPRIO";
    case RLIMIT_SIGPENDING: return "RLIMIT_SIGPENDING";
    default: return "RLIMIT";
    }
}

static void append_limit(char *text, size_t cap, uint64_t v) {
    if (v == (uint64_t)RLIM_INFINITY)
        s_append(text, cap, "unlimited");
    else
        s_append_u64(text, cap, v);
}

/* Applies what can be applied; a limit the kernel refuses (raising a hard
 * limit without CAP_SYS_RESOURCE) becomes a warning, and the soft limit is
 * still raised as far as the current hard limit allows. */
static void apply_rlimits(int status_fd, const struct berth_container_spec *spec) {
    for (size_t i = 0; i < spec->rlimit_count; i++) {
        const struct berth_rlimit *l = &spec->rlimits[i];
        struct rlimit want = {(rlim_t)l->soft, (rlim_t)l->hard};
        if (setrlimit(l->resource, &want) == 0) continue;
        int e = errno;
        struct rlimit cur;
        getrlimit(l->resource, &cur);
        struct rlimit fallback = {want.rlim_cur < cur.rlim_max ? want.rlim_cur : cur.rlim_max, cur.rlim_max};
        setrlimit(l->resource, &fallback);
        getrlimit(l->resource, &cur);
        char text[200] = {0};
        s_append(text, sizeof text, rlimit_name(l->resource));
        s_append(text, sizeof text, " ");
        append_limit(text, sizeof text, l->soft);
        s_append(text, sizeof text, ":");
        append_limit(text, sizeof text, l->hard);
        s_append(text, sizeof text, " could not be applied; kept ");
        append_limit(text, sizeof text, (uint64_t)cur.rlim_cur);
        s_append(text, sizeof text, ":");
        append_limit(text, sizeof text, (uint64_t)cur.rlim_max);
        send_record(status_fd, RECORD_WARNING, e, text, NULL);
    }
}

static void set_identity_and_capabilities(int status_fd, const struct berth_container_spec *spec) {
    for (int cap = 0; cap <= spec->cap_last; cap++) {
        if (!(spec->cap_bounding & (1ULL << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            fail(status_fd, "drop capability from bounding set", NULL);
    }
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) fail(status_fd, "prctl PR_SET_KEEPCAPS", NULL);
    /* The raw system calls, not glibc's wrappers: cloned from a process
       with threads, this child still looks multi-threaded to glibc, whose
       wrappers would then try to change the ids of threads it does not
       have (__nptl_setxid) and wait for them forever. */
    if (syscall(SYS_setgroups, (size_t)spec->group_count, spec->groups) < 0) fail(status_fd, "setgroups", NULL);
    if (syscall(SYS_setresgid, spec->gid, spec->gid, spec->gid) < 0) fail(status_fd, "setresgid", NULL);
    if (syscall(SYS_setresuid, spec->uid, spec->uid, spec->uid) < 0) fail(status_fd, "setresuid", NULL);
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) fail(status_fd, "prctl PR_SET_KEEPCAPS", NULL);

    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    data[0].effective = (uint32_t)spec->cap_effective;
    data[1].effective = (uint32_t)(spec->cap_effective >> 32);
    data[0].permitted = (uint32_t)spec->cap_permitted;
    data[1].permitted = (uint32_t)(spec->cap_permitted >> 32);
    data[0].inheritable = (uint32_t)spec->cap_inheritable;
    data[1].inheritable = (uint32_t)(spec->cap_inheritable >> 32);
    if (syscall(SYS_capset, &header, data) < 0) fail(status_fd, "capset", NULL);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        fail(status_fd, "clear ambient capabilities", NULL);
    for (int cap = 0; cap <= spec->cap_last; cap++) {
        if ((spec->cap_ambient & (1ULL << cap)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
            fail(status_fd, "raise ambient capability", NULL);
    }
}

static void reset_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < 65; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        sigaction(sig, &sa, NULL);
    }
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
}

/* True when `path` resolves to one of the files the process must never
 * execute (the runtime's own images). Opened O_PATH, so nothing is read and
 * a path that cannot be opened is left to execve to report. */
static int is_forbidden(const struct berth_container_spec *spec, const char *path) {
    if (spec->forbidden_exec_count == 0) return 0;
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    int rc = fstat(fd, &st);
    close(fd);
    if (rc < 0) return 0;
    for (size_t i = 0; i < spec->forbidden_exec_count; i++) {
        if ((uint64_t)st.st_dev == spec->forbidden_exec[i].dev && (uint64_t)st.st_ino == spec->forbidden_exec[i].ino) return 1;
    }
    return 0;
}

/* The candidates for argv[0], in order, as execvpe tries them: the name
 * itself when it has a slash, else each $PATH directory joined with it.
 * `visit` returns 0 to go on, 1 to stop (success); errno of the last
 * failure is left for the caller. Nothing is allocated. */
typedef int (*candidate_visit)(const struct berth_container_spec *spec, const char *candidate, int *saw_eacces, char *out, size_t cap);

static int each_candidate(int status_fd, const struct berth_container_spec *spec, candidate_visit visit, char *out, size_t cap) {
    const char *file = spec->argv[0];
    if (!file || !*file) {
        errno = ENOENT;
        fail(status_fd, "exec", "(empty command)");
    }
    int saw_eacces = 0;
    for (const char *p = file; *p; p++) {
        if (*p == '/') {
            if (visit(spec, file, &saw_eacces, out, cap)) return 0;
            return -1;
        }
    }
    const char *path = spec->path ? spec->path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    const char *segment = path;
    for (;;) {
        const char *end = segment;
        while (*end && *end != ':') end++;
        char candidate[4096];
        size_t dirlen = (size_t)(end - segment);
        if (dirlen == 0) {
            candidate[0] = 0;
        } else if (dirlen < sizeof candidate - 2) {
            memcpy(candidate, segment, dirlen);
            candidate[dirlen] = '/';
            candidate[dirlen + 1] = 0;
        } else {
            candidate[0] = 0;
        }
        if (s_append(candidate, sizeof candidate, file) == 0) {
            if (visit(spec, candidate, &saw_eacces, out, cap)) return 0;
            if (errno != EACCES && errno != ENOENT && errno != ENOTDIR) return -1;
        }
        if (!*end) break;
        segment = end + 1;
    }
    errno = saw_eacces ? EACCES : ENOENT;
    return -1;
}

/* execve of a candidate; returns only on failure. */
static int exec_candidate(const struct berth_container_spec *spec, const char *candidate, int *saw_eacces, char *out, size_t cap) {
    (void)out;
    (void)cap;
    if (is_forbidden(spec, candidate)) {
        errno = ENOENT;
        return 0;
    }
    execve(candidate, (char *const *)spec->argv, (char *const *)spec->envp);
    if (errno == EACCES) *saw_eacces = 1;
    return 0;
}

/* A candidate that execve would take: a regular file that may be executed. */
static int find_candidate(const struct berth_container_spec *spec, const char *candidate, int *saw_eacces, char *out, size_t cap) {
    if (is_forbidden(spec, candidate)) {
        errno = ENOENT;
        return 0;
    }
    struct stat st;
    if (stat(candidate, &st) < 0) return 0;
    if (!S_ISREG(st.st_mode) || access(candidate, X_OK) < 0) {
        errno = EACCES;
        *saw_eacces = 1;
        return 0;
    }
    out[0] = 0;
    s_append(out, cap, candidate);
    return 1;
}

/* execve with a $PATH search, as execvpe does, but without allocating. */
__attribute__((noreturn)) static void exec_process(int status_fd, const struct berth_container_spec *spec) {
    each_candidate(status_fd, spec, exec_candidate, NULL, 0);
    fail(status_fd, "exec", spec->argv[0]);
}

/* With --init: the command is looked up (a missing one fails the start),
 * then PID 1 becomes the init, from its sealed copy; the init runs the
 * command as its child. */
__attribute__((noreturn)) static void exec_init(int status_fd, const struct berth_container_spec *spec) {
    char found[4096];
    if (each_candidate(status_fd, spec, find_candidate, found, sizeof found) < 0) fail(status_fd, "exec", spec->argv[0]);
    syscall(SYS_execveat, spec->init_fd, "", (char *const *)spec->init_argv, (char *const *)spec->envp, AT_EMPTY_PATH);
    /* A seccomp profile without execveat: the same file through /proc. */
    char path[64];
    fd_path(path, sizeof path, spec->init_fd);
    execve(path, (char *const *)spec->init_argv, (char *const *)spec->envp);
    fail(status_fd, "exec", "the init");
}

/* The container's /dev/null, for stdio the caller gave no descriptor for
 * (the shim gives the host's /dev/null instead). It must be the null
 * device itself: in a running container (exec) its root may have replaced
 * it with a symlink (to /proc/self/fd/N, a descriptor of the shim's, or
 * anywhere) or another node, and a process's stdio must never lead to a
 * host file. */
static int open_dev_null(int status_fd, int flags) {
    int fd = (int)sys_openat2(AT_FDCWD, "/dev/null", (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW), 0,
                              RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
    if (fd < 0) fail(status_fd, "open", "/dev/null");
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != 1 || minor(st.st_rdev) != 3) {
        errno = ENODEV;
        fail(status_fd, "open", "/dev/null (not the null device)");
    }
    return fd;
}

/* fds 0, 1 and 2 from the spec (/dev/null for -1), in a new session; a
 * terminal on stdin becomes the controlling terminal when asked. */
static void set_up_stdio(int status_fd, const struct berth_container_spec *spec) {
    int fds[3] = {spec->stdin_fd, spec->stdout_fd, spec->stderr_fd};
    for (int i = 0; i < 3; i++) {
        int fd = fds[i];
        if (fd < 0) fd = open_dev_null(status_fd, i == 0 ? O_RDONLY : O_WRONLY);
        if (fd != i) {
            if (dup2(fd, i) < 0) fail(status_fd, "dup2", NULL);
        } else {
            int flags = fcntl(fd, F_GETFD);
            fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
        }
    }
    if (setsid() < 0) fail(status_fd, "setsid", NULL);
    if (spec->controlling_tty && ioctl(0, TIOCSCTTY, 0) < 0) fail(status_fd, "set controlling terminal", NULL);
}

/* Everything after the namespaces exist, up to (not including) the identity change. */
static void set_up_root(int status_fd, const struct berth_container_spec *spec) {
    if (spec->netns_path) {
        int netns = open(spec->netns_path, O_RDONLY | O_CLOEXEC);
        if (netns < 0) fail(status_fd, "open the network namespace", spec->netns_path);
        if (setns(netns, CLONE_NEWNET) < 0) fail(status_fd, "join the network namespace", spec->netns_path);
        close(netns);
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail(status_fd, "make mounts private", NULL);
    if (spec->overlay_data) {
        if (mount("overlay", spec->rootfs, "overlay", 0, spec->overlay_data) < 0) fail(status_fd, "mount overlay", spec->rootfs);
    } else {
        if (mount(spec->rootfs, spec->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0) fail(status_fd, "bind rootfs", spec->rootfs);
    }
    int rootfd = open(spec->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) fail(status_fd, "open rootfs", spec->rootfs);
    for (size_t i = 0; i < spec->mount_count; i++) {
        do_mount(status_fd, rootfd, &spec->mounts[i]);
        if (spec->create_devices && strcmp(spec->mounts[i].target, "/dev") == 0) make_devices(status_fd, rootfd);
    }
    make_requested_devices(status_fd, rootfd, spec);
    mask_paths(status_fd, rootfd, spec);
    close(rootfd);

    if (spec->hostname && sethostname(spec->hostname, s_len(spec->hostname)) < 0) fail(status_fd, "sethostname", spec->hostname);
    if ((spec->clone_flags & CLONE_NEWNET) && !spec->netns_path) loopback_up(status_fd);

    if (chdir(spec->rootfs) < 0) fail(status_fd, "chdir", spec->rootfs);
    if (syscall(SYS_pivot_root, ".", ".") < 0) fail(status_fd, "pivot_root", NULL);
    if (umount2(".", MNT_DETACH) < 0) fail(status_fd, "unmount old root", NULL);
    if (chdir("/") < 0) fail(status_fd, "chdir", "/");
    if (spec->readonly_rootfs && mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
        fail(status_fd, "remount / read-only", NULL);

    set_up_stdio(status_fd, spec);
}

/* The working directory must be inside the container's root: a path
 * through /proc/self/fd/N (a descriptor still open at this point) could
 * otherwise land in a host directory (CVE-2024-21626). The kernel's
 * getcwd says "(unreachable)…" for a directory outside the root. */
static void check_cwd_inside_root(int status_fd, const char *cwd) {
    char buffer[4096];
    if (syscall(SYS_getcwd, buffer, sizeof buffer) < 0) fail(status_fd, "getcwd", cwd);
    if (buffer[0] != '/') {
        errno = ENOENT;
        fail(status_fd, "chdir (outside the root)", cwd);
    }
}

static void enter_working_directory(int status_fd, const struct berth_container_spec *spec) {
    if (!spec->cwd) return;
    if (chdir(spec->cwd) == 0) {
        check_cwd_inside_root(status_fd, spec->cwd);
        return;
    }
    if (errno != ENOENT) fail(status_fd, "chdir", spec->cwd);
    /* Like docker: a missing working directory is created. */
    int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0 || make_in_root(root, spec->cwd, 0) < 0 || chdir(spec->cwd) < 0) fail(status_fd, "chdir", spec->cwd);
    close(root);
    check_cwd_inside_root(status_fd, spec->cwd);
}

__attribute__((noreturn)) static void become_process(int status_fd, const struct berth_container_spec *spec) {
    apply_rlimits(status_fd, spec);
    enter_working_directory(status_fd, spec);
    set_identity_and_capabilities(status_fd, spec);
    if (spec->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail(status_fd, "prctl PR_SET_NO_NEW_PRIVS", NULL);
    reset_signals();
    umask(022);
    /* No descriptor of the shim's survives the exec: mark them all close-on-exec. */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
        for (int fd = 3; fd < 1024; fd++) {
            int flags = fcntl(fd, F_GETFD);
            if (flags >= 0) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
        }
    }
    if (spec->seccomp_program) {
        struct sock_fprog prog = {(unsigned short)(spec->seccomp_program_length / sizeof(struct sock_filter)),
                                  (struct sock_filter *)spec->seccomp_program};
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) fail(status_fd, "seccomp", NULL);
    }
    if (spec->init) {
        if (spec->init_fd < 0) {
            errno = ENOENT;
            fail(status_fd, "exec", "the init (none was given)");
        }
        exec_init(status_fd, spec);
    }
    exec_process(status_fd, spec);
}

/* Moves the calling thread (the child is single-threaded) into each v1
 * hierarchy's cgroup. Writing "0" to `tasks` names the caller itself, for
 * which the kernel skips the global threadgroup write lock. */
static void join_cgroups(int status_fd, const struct berth_container_spec *spec) {
    for (size_t i = 0; i < spec->cgroup_tasks_count; i++) {
        int fd = open(spec->cgroup_tasks[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0) fail(status_fd, "join cgroup", spec->cgroup_tasks[i]);
        ssize_t w;
        do {
            w = write(fd, "0", 1);
        } while (w < 0 && errno == EINTR);
        if (w != 1) fail(status_fd, "join cgroup", spec->cgroup_tasks[i]);
        close(fd);
    }
}

__attribute__((noreturn)) static void child_main(const struct berth_container_spec *spec, int status_fd) {
    join_cgroups(status_fd, spec);
    umask(0);
    if (spec->new_cgroup_namespace && unshare(CLONE_NEWCGROUP) < 0) fail(status_fd, "unshare", "cgroup namespace");
    set_up_root(status_fd, spec);
    become_process(status_fd, spec);
}

/* ---- the parent side ---- */

static void copy_text(char *dst, size_t cap, const char *src) {
    dst[0] = 0;
    s_append(dst, cap, src);
}

/* The child's side of a start: it reports on `status_fd` and never returns. */
typedef void (*child_entry)(const struct berth_container_spec *spec, int target_pidfd, int status_fd);

/*
 * The parent's side of every start: clones a child (straight into spec's v2
 * cgroup when there is one) that runs `entry`, then reads its records until
 * the status pipe closes (the last holder execs or exits). Warnings are
 * collected; the first error record sets *failed with its stage and errno; a
 * PID record (exec's helper reports the process it cloned) sets *reported.
 * Returns the child's PID, or -1 with the stage and errno when no child was
 * started.
 */
static long start_child(const struct berth_container_spec *spec, uint64_t flags, int *pidfd, child_entry entry,
                        int target_pidfd, pid_t *reported, struct berth_start_result *result, int *failed) {
    memset(result, 0, sizeof *result);
    result->pid = -1;
    result->pidfd = -1;
    *failed = 0;
    int status[2];
    if (pipe2(status, O_CLOEXEC) < 0) {
        result->error = errno;
        copy_text(result->stage, sizeof result->stage, "pipe");
        return -1;
    }
    int cgroup_fd = -1;
    if (spec->cgroup_dir) {
        cgroup_fd = open(spec->cgroup_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cgroup_fd < 0) {
            result->error = errno;
            copy_text(result->stage, sizeof result->stage, "open cgroup");
            close(status[0]);
            close(status[1]);
            return -1;
        }
    }
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = flags;
    if (pidfd) args.pidfd = (uint64_t)(uintptr_t)pidfd;
    args.exit_signal = SIGCHLD;
    if (cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)cgroup_fd;
    }
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) {
        result->error = errno;
        copy_text(result->stage, sizeof result->stage, cgroup_fd >= 0 ? "clone3 into cgroup" : "clone3");
        if (cgroup_fd >= 0) close(cgroup_fd);
        close(status[0]);
        close(status[1]);
        return -1;
    }
    if (pid == 0) {
        close(status[0]);
        entry(spec, target_pidfd, status[1]);
        _exit(127);
    }
    if (cgroup_fd >= 0) close(cgroup_fd);
    close(status[1]);

    struct record r;
    for (;;) {
        ssize_t n = read(status[0], &r, sizeof r);
        if (n < 0 && errno == EINTR) continue;
        if (n != (ssize_t)sizeof r) break;
        if (r.type == RECORD_PID && reported) {
            *reported = (pid_t)r.error;
        } else if (r.type == RECORD_WARNING) {
            s_append(result->warnings, sizeof result->warnings, r.text);
            s_append(result->warnings, sizeof result->warnings, " (");
            s_append(result->warnings, sizeof result->warnings, strerrorname_np(r.error) ? strerrorname_np(r.error) : "error");
            s_append(result->warnings, sizeof result->warnings, ")\n");
        } else if (r.type == RECORD_ERROR && !*failed) {
            *failed = 1;
            result->error = r.error;
            copy_text(result->stage, sizeof result->stage, r.text);
        }
    }
    close(status[0]);
    return pid;
}

static void reap_child(pid_t pid) {
    int ignored;
    while (waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {
    }
}

static void container_child(const struct berth_container_spec *spec, int target_pidfd, int status_fd) {
    (void)target_pidfd;
    child_main(spec, status_fd);
}

int berth_container_start(const struct berth_container_spec *spec, struct berth_start_result *result) {
    int pidfd = -1;
    int failed;
    long pid = start_child(spec, CLONE_PIDFD | spec->clone_flags, &pidfd, container_child, -1, NULL, result, &failed);
    if (pid < 0) return -1;
    if (failed) {
        if (pidfd >= 0) {
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
            close(pidfd);
        }
        reap_child((pid_t)pid);
        return -1;
    }
    result->pid = (pid_t)pid;
    result->pidfd = pidfd;
    return 0;
}

/* ---- exec ---- */

/* The helper: in the container's cgroups and namespaces, it starts the
 * process as a sibling (a child of the caller) and reports its PID. */
__attribute__((noreturn)) static void exec_helper(const struct berth_container_spec *spec, int target_pidfd, int status_fd) {
    join_cgroups(status_fd, spec);
    int namespaces = CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWCGROUP;
    if (setns(target_pidfd, namespaces) < 0) fail(status_fd, "enter the container's namespaces", NULL);
    close(target_pidfd);
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PARENT;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) fail(status_fd, "clone3", "(exec)");
    if (pid == 0) {
        umask(0);
        set_up_stdio(status_fd, spec);
        become_process(status_fd, spec);
    }
    send_record(status_fd, RECORD_PID, (int)pid, "pid", NULL);
    _exit(0);
}

int berth_exec_start(const struct berth_container_spec *spec, int target_pidfd, struct berth_start_result *result) {
    /* Records come from the helper (the PID) and the process (warnings, or
     * the stage that failed), in any order, until the process execs. */
    pid_t pid = -1;
    int failed;
    long helper = start_child(spec, 0, NULL, exec_helper, target_pidfd, &pid, result, &failed);
    if (helper < 0) return -1;
    reap_child((pid_t)helper);
    if (!failed && pid <= 0) {
        failed = 1;
        result->error = ECHILD;
        copy_text(result->stage, sizeof result->stage, "exec helper");
    }
    if (failed) {
        if (pid > 0) {
            kill(pid, SIGKILL);
            reap_child(pid);
        }
        return -1;
    }
    result->pid = pid;
    result->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    return 0;
}
