/*
 * Small system-call wrappers for Swift (BerthLinux, the shim): what glibc
 * does not wrap or the Swift Glibc module does not show, and a few jobs
 * best done in C (descriptor passing, sealed copies, spawning, watching
 * cgroups' memory events, the cgroup v2 device program).
 */
#ifndef BERTH_SYSCALLS_H
#define BERTH_SYSCALLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A file by its identity (st_dev, st_ino). */
struct berth_file_identity {
    uint64_t dev;
    uint64_t ino;
};

/* A pseudo-terminal pair: the master (O_RDWR | O_CLOEXEC | O_NOCTTY) and the
 * opened slave; 0, or -1 with errno. With `rootfd` >= 0 (a container's root
 * directory) it comes from that root's /dev/ptmx, the container's own devpts,
 * so that the process sees its terminal as /dev/pts/N; -1 uses the host's. */
int berth_open_pty(int rootfd, int *master, int *slave, unsigned short rows, unsigned short columns);
/* TIOCSWINSZ on a terminal. */
int berth_set_window_size(int fd, unsigned short rows, unsigned short columns);
/* TIOCGWINSZ; 0, or -1 when fd is not a terminal. */
int berth_get_window_size(int fd, unsigned short *rows, unsigned short *columns);

/*
 * Notifications of memory pressure in cgroups, for OOM kills of processes
 * in containers that keep running. One epoll set holds a v1 eventfd per
 * cgroup (memory.oom_control through cgroup.event_control) and one inotify
 * descriptor watching v2 memory.events files.
 */
/* The epoll set (and the inotify descriptor in it); -1 with errno. */
int berth_watch_open(int *inotify_fd);
/* v1: an eventfd registered for oom_control's events, in the set under `key`
 * (positive, below 2^40, never used for another); *control_fd is the
 * oom_control descriptor to close with it. */
int berth_watch_v1_oom(int epfd, const char *oom_control, const char *event_control, int64_t key, int *control_fd);
/* Takes what an eventfd counted (non-blocking); its owner calls it, never
 * the waiting thread on its own: a descriptor closed meanwhile may already
 * be another file. */
void berth_eventfd_drain(int fd);
/* v2: a watch descriptor for modifications of `path` (its key is -wd). */
int berth_watch_v2_file(int inotify_fd, const char *path);
int berth_unwatch_v2_file(int inotify_fd, int wd);
/* Blocks until something fires; the keys of what fired (inotify's events
 * read; eventfds are left to their owner to drain); their count, 0 on
 * EINTR, -1 on error. */
int berth_watch_wait(int epfd, int inotify_fd, int64_t *keys, int max);

/* Small wrappers for system calls glibc 2.36 does not wrap. */
int berth_pidfd_open(pid_t pid);
int berth_pidfd_send_signal(int pidfd, int signal);
/* waitid(P_PIDFD): 0 with *status (wait status, as waitpid gives it), or -1. */
int berth_pidfd_wait(int pidfd, int *code, int *status, int options);

/* write(2) until all `length` bytes are written, retrying on EINTR:
 * 0, or -1 with errno from the write that failed. */
int berth_write_all(int fd, const void *bytes, size_t length);

/* GNU extensions the Swift Glibc module does not show. */
int berth_pipe2_cloexec(int fds[2]);
int berth_accept_cloexec_nonblock(int listener);
/* A blocking, close-on-exec connection to the unix socket at `path` (at
 * most 107 bytes), whose reads and writes give up after `timeout_seconds`
 * (EAGAIN). -1 with errno when it cannot be made. */
int berth_unix_connect(const char *path, int timeout_seconds);
/* Names the calling thread (PR_SET_NAME; at most 15 bytes show). */
int berth_set_thread_name(const char *name);
/* Sets the calling thread's nice value (setpriority on its thread ID). */
int berth_set_thread_nice(int value);
/* Puts the calling thread's disk I/O in the idle class (ioprio_set): it is
 * served when no other I/O waits. */
int berth_set_thread_io_idle(void);
/* Gives the calling thread's disk I/O the default priority back (its nice
 * value decides it again). */
int berth_set_thread_io_default(void);
/* GNU flag values the Swift Glibc module does not show. */
enum { BERTH_O_PATH = 010000000, BERTH_AT_EMPTY_PATH = 0x1000 };

/* openat2 with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS: `path` cannot leave `dirfd`. */
int berth_openat2_in_root(int dirfd, const char *path, int flags, unsigned long long mode);
unsigned long long berth_makedev(unsigned int major, unsigned int minor);
/* lsetxattr on the file an O_PATH descriptor refers to. */
int berth_fsetxattr_path(int opath_fd, const char *name, const void *value, size_t size);

ssize_t berth_lgetxattr(const char *path, const char *name, void *value, size_t size);

/* posix_spawn in a new session; pass_fds[i] becomes the child's fd 3 + i,
 * stdin and stdout are /dev/null, stderr is `stderr_fd` (-1: /dev/null). */
pid_t berth_spawn_session(const char *path, char *const argv[], char *const envp[], const int *pass_fds, int pass_count, int stderr_fd);

/* posix_spawn with fds 0-2 given (-1: /dev/null) and all others closed. */
pid_t berth_spawn(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd, int new_session);
int berth_wait_status(pid_t pid, int *status);
/* The exit code, or 128 + the signal that ended the process. */
int berth_wexitstatus(int status);
int berth_exit_code(int status);

/*
 * The runtime's own executables, out of the container's reach (the class of
 * CVE-2019-5736): a process that is about to become a container's is a
 * clone of the shim, and until its execve /proc/self/exe leads to the
 * shim's image. That image is a sealed copy in memory, never a host file.
 */
/* A memfd (close-on-exec) holding a copy of the file at `path`, sealed
 * against every change (F_SEAL_SEAL|SHRINK|GROW|WRITE, and F_SEAL_EXEC
 * where the kernel has it); named `name` in /proc/PID/exe. -1 with errno. */
int berth_sealed_copy(const char *path, const char *name);
/* 1 when fd is a memfd sealed against writes, shrinking and growth; 0 if not. */
int berth_is_sealed(int fd);
/* The identity of the file `fd` refers to; 0, or -1 with errno. */
int berth_file_identity_of(int fd, struct berth_file_identity *identity);
/* prctl(PR_SET_DUMPABLE, value). */
int berth_set_dumpable(int value);

/* One message on a unix stream socket with descriptors attached (SCM_RIGHTS):
 * 0 once all `length` bytes are sent, or -1 with errno. */
int berth_send_with_fds(int socket, const void *bytes, size_t length, const int *fds, int count);
/* Reads up to `capacity` bytes; descriptors that came with them (at most
 * `max_fds`, close-on-exec; any beyond are closed) land in `fds` and their
 * number in *received. The bytes read (0 at the end), or -1 with errno. */
ssize_t berth_recv_with_fds(int socket, void *bytes, size_t capacity, int *fds, int max_fds, int *received);

/*
 * cgroup v2 device access: a BPF_PROG_TYPE_CGROUP_DEVICE program (its
 * instructions built by the caller: `count` struct bpf_insn of 8 bytes)
 * loaded into the kernel, and attached to a cgroup (BPF_F_ALLOW_MULTI).
 */
/* The program's descriptor (close-on-exec), or -1 with errno and, when the
 * verifier refused it, its log in `log`. */
int berth_bpf_load_device_program(const void *instructions, size_t count, char *log, size_t log_size);
/* 0, or -1 with errno. */
int berth_bpf_attach_device_program(int program_fd, int cgroup_fd);
/* The number of programs attached to the cgroup for device access (BPF_PROG_QUERY); -1 with errno. */
int berth_bpf_count_device_programs(int cgroup_fd);

/* "EINVAL", or NULL for an unknown errno. */
const char *berth_errno_name(int error);

#endif
