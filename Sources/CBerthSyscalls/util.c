#define _GNU_SOURCE
#include "berth_syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

int berth_write_all(int fd, const void *bytes, size_t length) {
    const char *p = bytes;
    while (length > 0) {
        ssize_t n = write(fd, p, length);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        length -= (size_t)n;
    }
    return 0;
}

int berth_pipe2_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int berth_accept_cloexec_nonblock(int listener) { return accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK); }

int berth_set_thread_nice(int value) { return setpriority(PRIO_PROCESS, (id_t)gettid(), value); }

int berth_set_thread_io_idle(void) {
    /* IOPRIO_WHO_PROCESS = 1; IOPRIO_CLASS_IDLE = 3, in the class bits from 13. */
    return (int)syscall(SYS_ioprio_set, 1, (int)gettid(), 3 << 13);
}

int berth_set_thread_io_default(void) { return (int)syscall(SYS_ioprio_set, 1, (int)gettid(), 0); }

int berth_unix_connect(const char *path, int timeout_seconds) {
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    size_t length = strlen(path);
    if (length >= sizeof address.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(address.sun_path, path, length);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval timeout = {.tv_sec = timeout_seconds};
    int rc;
    do {
        rc = connect(fd, (struct sockaddr *)&address, sizeof address);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

const char *berth_errno_name(int error) { return strerrorname_np(error); }

#include <linux/openat2.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

int berth_openat2_in_root(int dirfd, const char *path, int flags, unsigned long long mode) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (unsigned long long)flags;
    how.mode = mode;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    while (*path == '/') path++;
    if (*path == 0) path = ".";
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

unsigned long long berth_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }

int berth_fsetxattr_path(int opath_fd, const char *name, const void *value, size_t size) {
    /* O_PATH descriptors cannot take fsetxattr; go through /proc/self/fd.
     * Following that magic link reaches the very inode the descriptor holds
     * (a symlink stays a symlink), never what a symlink points to. */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", opath_fd);
    return setxattr(path, name, value, size, 0);
}

ssize_t berth_lgetxattr(const char *path, const char *name, void *value, size_t size) { return lgetxattr(path, name, value, size); }

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

/* Starts `path` in a new session with stdin and stdout on /dev/null,
 * stderr on `stderr_fd` (or /dev/null), pass_fds[i] as its fd 3 + i,
 * default signal handling and an empty signal mask. Returns the pid or -1. */
pid_t berth_spawn_session(const char *path, char *const argv[], char *const envp[], const int *pass_fds, int pass_count, int stderr_fd) {
    if (pass_count < 0 || pass_count > 8) {
        errno = EINVAL;
        return -1;
    }
    /* The file actions run in order: a descriptor numbered below the
     * targets could be overwritten before it is moved, so move such ones
     * above the targets first (in the caller, closed again below). */
    int moved[8];
    int sources[8];
    for (int i = 0; i < pass_count; i++) {
        moved[i] = -1;
        sources[i] = pass_fds[i];
        if (pass_fds[i] < 3 + pass_count) {
            moved[i] = fcntl(pass_fds[i], F_DUPFD_CLOEXEC, 3 + pass_count);
            if (moved[i] < 0) {
                for (int j = 0; j < i; j++)
                    if (moved[j] >= 0) close(moved[j]);
                return -1;
            }
            sources[i] = moved[i];
        }
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    pid_t pid = -1;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc == 0 && (rc = posix_spawnattr_init(&attr)) != 0) posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) goto done;
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    if (stderr_fd >= 0)
        posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
    else
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    for (int i = 0; i < pass_count; i++) posix_spawn_file_actions_adddup2(&actions, sources[i], 3 + i);
    /* Nothing else of the caller's leaks into the child. */
    posix_spawn_file_actions_addclosefrom_np(&actions, 3 + pass_count);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    rc = posix_spawn(&pid, path, &actions, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
done:
    for (int i = 0; i < pass_count; i++)
        if (moved[i] >= 0) close(moved[i]);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    return pid;
}

/* Starts `path` with fds 0, 1, 2 taken from the given descriptors (or
 * /dev/null for -1) and every other descriptor closed; in a new session when
 * `new_session`. Returns the pid or -1. */
pid_t berth_spawn(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd, int new_session) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    if (posix_spawn_file_actions_init(&actions) != 0) return -1;
    if (posix_spawnattr_init(&attr) != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return -1;
    }
    int fds[3] = {in_fd, out_fd, err_fd};
    for (int i = 0; i < 3; i++) {
        if (fds[i] >= 0)
            posix_spawn_file_actions_adddup2(&actions, fds[i], i);
        else
            posix_spawn_file_actions_addopen(&actions, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
    }
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (new_session) flags |= POSIX_SPAWN_SETSID;
    posix_spawnattr_setflags(&attr, flags);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, path, &actions, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    return pid;
}

int berth_wait_status(pid_t pid, int *status) { return waitpid(pid, status, 0) == pid ? 0 : -1; }
int berth_wexitstatus(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

int berth_exit_code(int status) { return berth_wexitstatus(status); }

/* ---- memory-pressure notifications (OOM kills) ---- */

#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>

int berth_watch_open(int *inotify_fd) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return -1;
    int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (in < 0) {
        int e = errno;
        close(ep);
        errno = e;
        return -1;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u64 = (uint64_t)1 << 40;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, in, &ev) < 0) {
        int e = errno;
        close(in);
        close(ep);
        errno = e;
        return -1;
    }
    *inotify_fd = in;
    return ep;
}

int berth_watch_v1_oom(int epfd, const char *oom_control, const char *event_control, int64_t key, int *control_fd) {
    int ofd = open(oom_control, O_RDONLY | O_CLOEXEC);
    if (ofd < 0) return -1;
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
        int e = errno;
        close(ofd);
        errno = e;
        return -1;
    }
    int cfd = open(event_control, O_WRONLY | O_CLOEXEC);
    char line[64];
    int n = snprintf(line, sizeof line, "%d %d", efd, ofd);
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u64 = (uint64_t)key;
    if (cfd < 0 || write(cfd, line, (size_t)n) != n || epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &ev) < 0) {
        int e = errno;
        if (cfd >= 0) close(cfd);
        close(efd);
        close(ofd);
        errno = e;
        return -1;
    }
    close(cfd);
    *control_fd = ofd;
    return efd;
}

int berth_watch_wait(int epfd, int inotify_fd, int64_t *keys, int max) {
    struct epoll_event events[32];
    int n = epoll_wait(epfd, events, 32, -1);
    if (n < 0) return errno == EINTR ? 0 : -1;
    int count = 0;
    for (int i = 0; i < n; i++) {
        uint64_t key = events[i].data.u64;
        if (key == ((uint64_t)1 << 40)) {
            /* inotify: one key per watch descriptor that fired. */
            char buffer[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
            ssize_t len;
            while ((len = read(inotify_fd, buffer, sizeof buffer)) > 0) {
                for (char *p = buffer; p < buffer + len;) {
                    struct inotify_event *event = (struct inotify_event *)p;
                    if (count < max) keys[count++] = -(int64_t)event->wd;
                    p += sizeof(struct inotify_event) + event->len;
                }
            }
        } else if (count < max) {
            keys[count++] = (int64_t)key;
        }
    }
    return count;
}

void berth_eventfd_drain(int fd) {
    uint64_t value;
    ssize_t ignored = read(fd, &value, sizeof value);
    (void)ignored;
}

int berth_watch_v2_file(int inotify_fd, const char *path) { return inotify_add_watch(inotify_fd, path, IN_MODIFY); }

int berth_unwatch_v2_file(int inotify_fd, int wd) { return inotify_rm_watch(inotify_fd, wd); }

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>

#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif

int berth_sealed_copy(const char *path, const char *name) {
    int source = open(path, O_RDONLY | O_CLOEXEC);
    if (source < 0) return -1;
    struct stat st;
    if (fstat(source, &st) < 0) {
        int saved = errno;
        close(source);
        errno = saved;
        return -1;
    }
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        int saved = errno;
        close(source);
        errno = saved;
        return -1;
    }
    off_t offset = 0;
    while (offset < st.st_size) {
        ssize_t n = sendfile(fd, source, &offset, (size_t)(st.st_size - offset));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int saved = n < 0 ? errno : EIO;
            close(source);
            close(fd);
            errno = saved;
            return -1;
        }
    }
    close(source);
    if (fchmod(fd, 0555) < 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    /* Kernels from 6.3 also seal the mode; older ones do not know it. */
    (void)fcntl(fd, F_ADD_SEALS, F_SEAL_EXEC);
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int berth_is_sealed(int fd) {
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) return 0;
    int needed = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
    return (seals & needed) == needed;
}

int berth_file_identity_of(int fd, struct berth_file_identity *identity) {
    struct stat st;
    if (fstat(fd, &st) < 0) return -1;
    identity->dev = (uint64_t)st.st_dev;
    identity->ino = (uint64_t)st.st_ino;
    return 0;
}

int berth_set_dumpable(int value) { return prctl(PR_SET_DUMPABLE, value, 0, 0, 0); }

int berth_send_with_fds(int socket, const void *bytes, size_t length, const int *fds, int count) {
    if (count < 0 || count > 8) {
        errno = EINVAL;
        return -1;
    }
    const char *p = bytes;
    int first = 1;
    while (length > 0) {
        struct iovec iov = {.iov_base = (void *)p, .iov_len = length};
        union {
            char buffer[CMSG_SPACE(8 * sizeof(int))];
            struct cmsghdr align;
        } control;
        memset(&control, 0, sizeof control);
        struct msghdr message;
        memset(&message, 0, sizeof message);
        message.msg_iov = &iov;
        message.msg_iovlen = 1;
        if (first && count > 0) {
            message.msg_control = control.buffer;
            message.msg_controllen = CMSG_SPACE((size_t)count * sizeof(int));
            struct cmsghdr *header = CMSG_FIRSTHDR(&message);
            header->cmsg_level = SOL_SOCKET;
            header->cmsg_type = SCM_RIGHTS;
            header->cmsg_len = CMSG_LEN((size_t)count * sizeof(int));
            memcpy(CMSG_DATA(header), fds, (size_t)count * sizeof(int));
        }
        ssize_t n = sendmsg(socket, &message, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        first = 0;
        p += n;
        length -= (size_t)n;
    }
    return 0;
}

ssize_t berth_recv_with_fds(int socket, void *bytes, size_t capacity, int *fds, int max_fds, int *received) {
    *received = 0;
    struct iovec iov = {.iov_base = bytes, .iov_len = capacity};
    union {
        char buffer[CMSG_SPACE(16 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    message.msg_controllen = sizeof control.buffer;
    ssize_t n;
    do {
        n = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *passed = (int *)CMSG_DATA(header);
        for (int i = 0; i < count; i++) {
            if (*received < max_fds)
                fds[(*received)++] = passed[i];
            else
                close(passed[i]);
        }
    }
    return n;
}

int berth_set_thread_name(const char *name) { return prctl(PR_SET_NAME, name, 0, 0, 0); }
