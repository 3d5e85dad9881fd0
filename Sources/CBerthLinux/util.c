#define _GNU_SOURCE
#include "berth_linux.h"

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
