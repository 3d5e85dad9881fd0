/*
 * cgroup v2's device controller is a BPF program attached to the cgroup
 * (BPF_PROG_TYPE_CGROUP_DEVICE); the program is built in Swift
 * (BerthCgroups.DeviceFilterProgram), loaded and attached here.
 */
#define _GNU_SOURCE
#include "berth_syscalls.h"

#include <errno.h>
#include <linux/bpf.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static long sys_bpf(int command, union bpf_attr *attr) { return syscall(SYS_bpf, command, attr, sizeof *attr); }

int berth_bpf_load_device_program(const void *instructions, size_t count, char *log, size_t log_size) {
    static const char license[] = "Apache-2.0";
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = (uint64_t)(uintptr_t)instructions;
    attr.insn_cnt = (uint32_t)count;
    attr.license = (uint64_t)(uintptr_t)license;
    if (log && log_size > 0) log[0] = 0;
    int fd = (int)sys_bpf(BPF_PROG_LOAD, &attr);
    if (fd >= 0 || !log || log_size == 0) return fd;
    /* The verifier refused it: load again for its reasons. */
    int saved = errno;
    attr.log_buf = (uint64_t)(uintptr_t)log;
    attr.log_size = (uint32_t)log_size;
    attr.log_level = 1;
    fd = (int)sys_bpf(BPF_PROG_LOAD, &attr);
    if (fd >= 0) return fd;
    errno = saved;
    return -1;
}

int berth_bpf_attach_device_program(int program_fd, int cgroup_fd) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.target_fd = (uint32_t)cgroup_fd;
    attr.attach_bpf_fd = (uint32_t)program_fd;
    attr.attach_type = BPF_CGROUP_DEVICE;
    attr.attach_flags = BPF_F_ALLOW_MULTI;
    return (int)sys_bpf(BPF_PROG_ATTACH, &attr);
}

int berth_bpf_count_device_programs(int cgroup_fd) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.query.target_fd = (uint32_t)cgroup_fd;
    attr.query.attach_type = BPF_CGROUP_DEVICE;
    if (sys_bpf(BPF_PROG_QUERY, &attr) < 0) return -1;
    return (int)attr.query.prog_cnt;
}
