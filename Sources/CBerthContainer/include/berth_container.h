/*
 * The C side of starting a container: clone3 into new namespaces, then, in
 * the child, mounts, pivot_root, identity, limits, capabilities, seccomp and
 * execve. The child runs system calls only (no allocation, no locks): it is a
 * fork of a multi-threaded process.
 */
#ifndef BERTH_CONTAINER_H
#define BERTH_CONTAINER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "berth_syscalls.h"

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

#endif
