/*
 * The C side of starting a container: clone3 into new namespaces, then, in
 * the child, mounts, pivot_root, identity, limits, capabilities, seccomp and
 * execve. The child runs system calls only (no allocation, no locks): it is a
 * fork of a multi-threaded process.
 */
#ifndef BERTH_LINUX_H
#define BERTH_LINUX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* How a mount entry is applied. */
enum berth_mount_kind {
    BERTH_MOUNT_FILESYSTEM = 0, /* mount(source, target, fstype, flags, data) */
    BERTH_MOUNT_BIND = 1,       /* bind source (a host path) onto target; file or directory */
};

struct berth_mount {
    int kind;
    const char *source;
    const char *target;   /* absolute path inside the container */
    const char *fstype;
    const char *data;
    unsigned long flags;  /* MS_* flags; MS_RDONLY on a bind remounts it read-only */
    int propagation_private;
};

struct berth_rlimit {
    int resource;
    uint64_t soft;
    uint64_t hard;
};

/* A file by its identity (st_dev, st_ino). */
struct berth_file_identity {
    uint64_t dev;
    uint64_t ino;
};

/* A device node made in the container (--device). */
struct berth_device_node {
    const char *path; /* absolute inside the container */
    char type;        /* 'c' or 'b' */
    unsigned major;
    unsigned minor;
    unsigned mode;    /* permission bits */
    uid_t uid;
    gid_t gid;
};

struct berth_container_spec {
    /* Namespaces to create (CLONE_NEW*); a cgroup namespace is entered once
     * the child is in its cgroups. */
    uint64_t clone_flags;
    int new_cgroup_namespace;

    /* The directory that becomes '/': overlay is mounted there when
     * overlay_data is set ("lowerdir=…,upperdir=…,workdir=…"), otherwise it
     * is bind-mounted onto itself. */
    const char *rootfs;
    const char *overlay_data;
    int readonly_rootfs;

    const struct berth_mount *mounts;
    size_t mount_count;
    const char *const *masked_paths;
    size_t masked_count;
    const char *const *readonly_paths;
    size_t readonly_count;
    int create_devices; /* populate /dev (a tmpfs in mounts) with the standard nodes */

    const char *hostname;

    /* How the child gets into its cgroups, before anything else it does:
     * cgroup v2: cloned straight into this directory (CLONE_INTO_CGROUP);
     * cgroup v1: it writes "0" (itself) to each hierarchy's `tasks` file.
     * Either way no process is migrated by PID, which would take the
     * kernel's global threadgroup lock for writing and wait for an RCU
     * grace period (milliseconds) on every start. */
    const char *cgroup_dir;
    const char *const *cgroup_tasks;
    size_t cgroup_tasks_count;

    /* The process. */
    const char *const *argv;  /* NULL-terminated */
    const char *const *envp;  /* NULL-terminated */
    const char *path;         /* $PATH for finding argv[0]; NULL uses a default */
    const char *cwd;
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t group_count;

    const struct berth_rlimit *rlimits;
    size_t rlimit_count;

    uint64_t cap_bounding;
    uint64_t cap_effective;
    uint64_t cap_permitted;
    uint64_t cap_inheritable;
    uint64_t cap_ambient;
    int cap_last; /* from /proc/sys/kernel/cap_last_cap */
    int no_new_privs;

    /* A compiled seccomp BPF program (struct sock_filter[]), or NULL. */
    const void *seccomp_program;
    size_t seccomp_program_length; /* in bytes */

    int stdin_fd;  /* -1 for /dev/null */
    int stdout_fd;
    int stderr_fd;

    /* PID 1 is a small init (berth-init: it reaps zombies, forwards
     * signals to the process, which runs as its child, and exits as it
     * does), executed from `init_fd` (a sealed copy, never a file the
     * container could reach) with `init_argv` once the process's identity,
     * limits, capabilities and seccomp filter are in place. The command is
     * looked up first, so that a missing one fails the start. */
    int init;
    int init_fd;
    const char *const *init_argv; /* NULL-terminated */

    /* Files the process must never execute: the runtime's own images (the
     * shim's and the init's sealed copies, which /proc/self/exe and
     * /proc/self/fd/N lead to before the exec). An exec that resolves to
     * one fails with ENOENT, as if the file were not there. */
    const struct berth_file_identity *forbidden_exec;
    size_t forbidden_exec_count;

    /* Device nodes made in the container after its mounts. */
    const struct berth_device_node *devices;
    size_t device_count;

    /* stdin is a terminal that becomes the process's controlling terminal
     * (exec -t). */
    int controlling_tty;

    /* A network namespace (a file bound to one) the container joins instead
     * of making its own; NULL otherwise. */
    const char *netns_path;
};

#define BERTH_STAGE_MAX 48
#define BERTH_WARNINGS_MAX 1024

struct berth_start_result {
    pid_t pid;
    int pidfd;
    /* On failure: the stage that failed ("pivot_root", "exec", "mount /proc")
     * and its errno. */
    char stage[BERTH_STAGE_MAX];
    int error;
    /* Non-fatal notes, one per line (rlimits that could not be applied). */
    char warnings[BERTH_WARNINGS_MAX];
};

/*
 * Starts the container process. Returns 0 with pid and pidfd set once the
 * process has called execve; -1 with stage and error set when the child
 * failed before that (the child is reaped then), or when clone3 failed.
 */
int berth_container_start(const struct berth_container_spec *spec, struct berth_start_result *result);

/*
 * Starts a process inside the running container whose PID 1 `target_pidfd`
 * refers to (exec): it joins the container's cgroups and its ipc, uts, net,
 * pid, mount and cgroup namespaces, then takes the identity, limits,
 * capabilities, no_new_privs and seccomp filter of `spec` and executes
 * spec->argv. Only the cgroup, process and stdio fields of `spec` are used.
 * The process is a child of the caller (CLONE_PARENT through a short-lived
 * helper that entered the namespaces). Returns as berth_container_start does.
 */
int berth_exec_start(const struct berth_container_spec *spec, int target_pidfd, struct berth_start_result *result);

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
 * Network namespaces kept as files (a bind mount of the namespace), made and
 * configured on a short-lived thread: the caller's namespace never changes.
 * On failure: -1 with errno, and the step that failed in `stage`.
 */
/* A new namespace bound at `path` (which must not exist), its loopback up. */
int berth_netns_create(const char *path, char *stage, size_t stage_size);
/* In the namespace at `path`: `ifname` gets `mac` (unless NULL; it must be
 * down then), the address/prefix (host byte order) and goes up; with a
 * nonzero gateway, a default route through it. */
int berth_netns_configure(const char *path, const char *ifname, const unsigned char *mac, uint32_t address, int prefix,
                          uint32_t gateway, char *stage, size_t stage_size);
/* A veth pair through rtnetlink: `host` in `bridge`, up if `up`; its peer
 * named `peer`, with `mac`, moved into the namespace at `netns_path`. 0, or
 * -1 with errno (EEXIST: `host` exists; ENODEV: no such bridge). */
int berth_veth_create(const char *host, const char *bridge, const char *peer, const unsigned char mac[6], const char *netns_path, int up);
/* Renames the interface `name` (which must be down) and sets it up, in one
 * rtnetlink request. 0, or -1 with errno. */
int berth_link_rename_up(const char *name, const char *new_name);
/* Unbinds and deletes a namespace file; one already gone is no error. */
int berth_netns_remove(const char *path);
/* Binds the namespace of the file `from` at `to` (which must not exist),
 * then removes `from`. 0, or -1 with errno. */
int berth_netns_move(const char *from, const char *to);

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
