/*
 * Terminals and pidfds: pseudo-terminal pairs (from a container's own
 * devpts), window sizes, and the pidfd calls glibc 2.36 does not wrap.
 */
#define _GNU_SOURCE
#include "berth_syscalls.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

int berth_open_pty(int rootfd, int *master, int *slave, unsigned short rows, unsigned short columns) {
    int m;
    if (rootfd >= 0) {
        /* The container's own devpts: its /dev/ptmx, resolved inside its
         * root. Found first without opening it (O_PATH): the container may
         * have put anything there, a disk's node or a FIFO among them, and
         * only the pty multiplexer is ever opened. */
        int found = berth_openat2_in_root(rootfd, "dev/ptmx", O_PATH | O_CLOEXEC, 0);
        if (found < 0) return -1;
        struct stat st;
        if (fstat(found, &st) < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != 5 || minor(st.st_rdev) != 2) {
            close(found);
            errno = ENOTTY;
            return -1;
        }
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", found);
        m = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
        int saved = errno;
        close(found);
        errno = saved;
        if (m < 0) return -1;
    } else {
        m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (m < 0) return -1;
    }
    int unlock = 0;
    if (ioctl(m, TIOCSPTLCK, &unlock) < 0) {
        int e = errno;
        close(m);
        errno = e;
        return -1;
    }
    int s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) {
        int e = errno;
        close(m);
        errno = e;
        return -1;
    }
    if (rows && columns) berth_set_window_size(m, rows, columns);
    *master = m;
    *slave = s;
    return 0;
}

int berth_set_window_size(int fd, unsigned short rows, unsigned short columns) {
    struct winsize size;
    memset(&size, 0, sizeof size);
    size.ws_row = rows;
    size.ws_col = columns;
    return ioctl(fd, TIOCSWINSZ, &size);
}

int berth_get_window_size(int fd, unsigned short *rows, unsigned short *columns) {
    struct winsize size;
    if (ioctl(fd, TIOCGWINSZ, &size) < 0) return -1;
    *rows = size.ws_row;
    *columns = size.ws_col;
    return 0;
}

int berth_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int berth_pidfd_send_signal(int pidfd, int signal) { return (int)syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0); }

int berth_pidfd_wait(int pidfd, int *code, int *status, int options) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | options) < 0) return -1;
    if (info.si_pid == 0) {
        *code = 0;
        *status = 0;
        return 1; /* nothing yet (WNOHANG) */
    }
    *code = info.si_code;
    *status = info.si_status;
    return 0;
}
