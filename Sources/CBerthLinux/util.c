#define _GNU_SOURCE
#include "berth_linux.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int berth_pipe2_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int berth_accept_cloexec_nonblock(int listener) { return accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK); }

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

/* Starts `path` in a new session with stdin and stdout on /dev/null,
 * stderr on `stderr_fd` (or /dev/null), `pass_fd` as its fd 3, default
 * signal handling and an empty signal mask. Returns the pid or -1. */
pid_t berth_spawn_session(const char *path, char *const argv[], char *const envp[], int pass_fd, int stderr_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    if (posix_spawn_file_actions_init(&actions) != 0) return -1;
    if (posix_spawnattr_init(&attr) != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return -1;
    }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    if (stderr_fd >= 0)
        posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
    else
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    if (pass_fd >= 0) posix_spawn_file_actions_adddup2(&actions, pass_fd, 3);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
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
