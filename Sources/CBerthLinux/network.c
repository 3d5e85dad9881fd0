/*
 * Network namespaces for containers: made, entered and configured on a
 * thread of its own, so that the calling process's namespace never changes.
 * Interfaces are configured with the classic ioctls (address, netmask, flags,
 * a default route), which need no netlink parsing.
 */
#define _GNU_SOURCE
#include "berth_linux.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

struct netns_job {
    const char *path;
    const char *ifname;
    uint32_t address; /* host byte order */
    int prefix;
    uint32_t gateway;
    int create;
    int error;
    char stage[BERTH_STAGE_MAX];
};

static void job_fail(struct netns_job *job, const char *stage) {
    job->error = errno ? errno : EIO;
    snprintf(job->stage, sizeof job->stage, "%s", stage);
}

static void set_ipv4(struct sockaddr *sa, uint32_t address) {
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    memset(in, 0, sizeof *in);
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(address);
}

static int set_up(int s, const char *ifname) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) return -1;
    ifr.ifr_flags |= IFF_UP;
    return ioctl(s, SIOCSIFFLAGS, &ifr);
}

static void *netns_thread(void *argument) {
    struct netns_job *job = argument;
    if (job->create) {
        if (unshare(CLONE_NEWNET) < 0) { job_fail(job, "unshare(CLONE_NEWNET)"); return NULL; }
        int fd = open(job->path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
        if (fd < 0) { job_fail(job, "create the namespace file"); return NULL; }
        close(fd);
        if (mount("/proc/thread-self/ns/net", job->path, NULL, MS_BIND, NULL) < 0) {
            job_fail(job, "bind the namespace");
            int saved = job->error;
            unlink(job->path);
            job->error = saved;
            return NULL;
        }
    } else {
        int fd = open(job->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) { job_fail(job, "open the namespace"); return NULL; }
        int entered = setns(fd, CLONE_NEWNET);
        close(fd);
        if (entered < 0) { job_fail(job, "setns"); return NULL; }
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) { job_fail(job, "socket"); return NULL; }
    if (job->create) {
        if (set_up(s, "lo") < 0) job_fail(job, "set lo up");
        close(s);
        return NULL;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", job->ifname);
    set_ipv4(&ifr.ifr_addr, job->address);
    if (ioctl(s, SIOCSIFADDR, &ifr) < 0) { job_fail(job, "SIOCSIFADDR"); goto out; }
    set_ipv4(&ifr.ifr_netmask, job->prefix == 0 ? 0 : 0xffffffffu << (32 - job->prefix));
    if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) { job_fail(job, "SIOCSIFNETMASK"); goto out; }
    if (set_up(s, job->ifname) < 0) { job_fail(job, "set the interface up"); goto out; }
    if (job->gateway) {
        struct rtentry route;
        memset(&route, 0, sizeof route);
        set_ipv4(&route.rt_dst, 0);
        set_ipv4(&route.rt_genmask, 0);
        set_ipv4(&route.rt_gateway, job->gateway);
        route.rt_flags = RTF_UP | RTF_GATEWAY;
        route.rt_dev = (char *)job->ifname;
        if (ioctl(s, SIOCADDRT, &route) < 0 && errno != EEXIST) { job_fail(job, "add the default route"); goto out; }
    }
out:
    close(s);
    return NULL;
}

static int run_job(struct netns_job *job, char *stage, size_t stage_size) {
    pthread_t thread;
    int error = pthread_create(&thread, NULL, netns_thread, job);
    if (error) {
        snprintf(stage, stage_size, "pthread_create");
        errno = error;
        return -1;
    }
    pthread_join(thread, NULL);
    if (job->error) {
        snprintf(stage, stage_size, "%s", job->stage);
        errno = job->error;
        return -1;
    }
    return 0;
}

int berth_netns_create(const char *path, char *stage, size_t stage_size) {
    struct netns_job job = {.path = path, .create = 1};
    return run_job(&job, stage, stage_size);
}

int berth_netns_configure(const char *path, const char *ifname, uint32_t address, int prefix, uint32_t gateway, char *stage,
                          size_t stage_size) {
    struct netns_job job = {.path = path, .ifname = ifname, .address = address, .prefix = prefix, .gateway = gateway};
    return run_job(&job, stage, stage_size);
}

int berth_netns_remove(const char *path) {
    if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT) return -1;
    if (unlink(path) < 0 && errno != ENOENT) return -1;
    return 0;
}
