/*
 * Network namespaces for containers: made, entered and configured on a
 * thread of its own, so that the calling process's namespace never changes.
 * Interfaces are configured with the classic ioctls (address, netmask, flags,
 * a default route), which need no netlink parsing.
 */
#define _GNU_SOURCE
#include "berth_netlink.h"

#include <arpa/inet.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
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
    const unsigned char *mac; /* NULL: the interface keeps its own */
    int create;
    int error;
    char stage[BERTH_NETLINK_STAGE_MAX];
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
    if (job->mac) {
        /* Before it is up: a veth takes a new address only while down. */
        ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
        memcpy(ifr.ifr_hwaddr.sa_data, job->mac, 6);
        if (ioctl(s, SIOCSIFHWADDR, &ifr) < 0) { job_fail(job, "SIOCSIFHWADDR"); goto out; }
        memset(&ifr, 0, sizeof ifr);
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", job->ifname);
    }
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

int berth_netns_configure(const char *path, const char *ifname, const unsigned char *mac, uint32_t address, int prefix,
                          uint32_t gateway, char *stage, size_t stage_size) {
    struct netns_job job = {.path = path, .ifname = ifname, .mac = mac, .address = address, .prefix = prefix, .gateway = gateway};
    return run_job(&job, stage, stage_size);
}

int berth_netns_move(const char *from, const char *to) {
    int fd = open(to, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (fd < 0) return -1;
    close(fd);
    if (mount(from, to, NULL, MS_BIND, NULL) < 0) {
        int saved = errno;
        unlink(to);
        errno = saved;
        return -1;
    }
    return berth_netns_remove(from);
}

int berth_netns_remove(const char *path) {
    if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT) return -1;
    if (unlink(path) < 0 && errno != ENOENT) return -1;
    return 0;
}

/* rtnetlink, for the one request on every start with a network: a veth pair
 * made in the bridge, up, its peer named, addressed and moved into the
 * container's namespace, in one message (as `ip link add … type veth peer
 * … netns …` sends it, without a process to start). */
struct nl_request {
    char *buffer;
    size_t size;
    size_t length;
};

static struct rtattr *nl_add(struct nl_request *r, unsigned short type, const void *data, size_t size) {
    size_t need = RTA_ALIGN(RTA_LENGTH(size));
    if (r->length + need > r->size) return NULL;
    struct rtattr *attribute = (struct rtattr *)(r->buffer + r->length);
    attribute->rta_type = type;
    attribute->rta_len = (unsigned short)RTA_LENGTH(size);
    if (size) memcpy(RTA_DATA(attribute), data, size);
    r->length += need;
    return attribute;
}

static void nl_end(struct nl_request *r, struct rtattr *nest) {
    nest->rta_len = (unsigned short)(r->buffer + r->length - (char *)nest);
}

/* Sends one request and reads its acknowledgement: 0, or -1 with errno. */
static int nl_exchange(const char *buffer, size_t length) {
    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (s < 0) return -1;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    int result = -1;
    if (sendto(s, buffer, length, 0, (struct sockaddr *)&kernel, sizeof kernel) == (ssize_t)length) {
        _Alignas(struct nlmsghdr) char reply[4096];
        for (;;) {
            ssize_t n = recv(s, reply, sizeof reply, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) break;
            struct nlmsghdr *answer = (struct nlmsghdr *)reply;
            if (!NLMSG_OK(answer, (size_t)n) || answer->nlmsg_type != NLMSG_ERROR) {
                errno = EPROTO;
                break;
            }
            int error = ((struct nlmsgerr *)NLMSG_DATA(answer))->error;
            if (error == 0) result = 0;
            else errno = -error;
            break;
        }
    }
    int saved = errno;
    close(s);
    errno = saved;
    return result;
}

int berth_link_rename_up(const char *name, const char *new_name) {
    unsigned int index = if_nametoindex(name);
    if (!index) return -1;
    _Alignas(struct nlmsghdr) char buffer[256];
    memset(buffer, 0, sizeof buffer);
    struct nl_request r = {.buffer = buffer, .size = sizeof buffer};
    struct nlmsghdr *header = (struct nlmsghdr *)buffer;
    header->nlmsg_type = RTM_NEWLINK;
    header->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    header->nlmsg_seq = 1;
    r.length = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    struct ifinfomsg *info = NLMSG_DATA(header);
    info->ifi_family = AF_UNSPEC;
    info->ifi_index = (int)index;
    /* The kernel renames before it changes flags: one request does both. */
    info->ifi_flags = IFF_UP;
    info->ifi_change = IFF_UP;
    if (!nl_add(&r, IFLA_IFNAME, new_name, strlen(new_name) + 1)) {
        errno = EMSGSIZE;
        return -1;
    }
    header->nlmsg_len = (uint32_t)r.length;
    return nl_exchange(buffer, r.length);
}

int berth_veth_create(const char *host, const char *bridge, const char *peer, const unsigned char mac[6], const char *netns_path, int up,
                      unsigned int mtu) {
    unsigned int bridge_index = if_nametoindex(bridge);
    if (!bridge_index) return -1;
    int netns = open(netns_path, O_RDONLY | O_CLOEXEC);
    if (netns < 0) return -1;
    _Alignas(struct nlmsghdr) char buffer[1024];
    memset(buffer, 0, sizeof buffer);
    struct nl_request r = {.buffer = buffer, .size = sizeof buffer};
    struct nlmsghdr *header = (struct nlmsghdr *)buffer;
    header->nlmsg_type = RTM_NEWLINK;
    header->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
    header->nlmsg_seq = 1;
    r.length = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    struct ifinfomsg *info = NLMSG_DATA(header);
    info->ifi_family = AF_UNSPEC;
    info->ifi_flags = up ? IFF_UP : 0;
    info->ifi_change = IFF_UP;
    uint32_t master = bridge_index, fd = (uint32_t)netns;
    int ok = nl_add(&r, IFLA_IFNAME, host, strlen(host) + 1) && nl_add(&r, IFLA_MASTER, &master, sizeof master)
        && (!mtu || nl_add(&r, IFLA_MTU, &mtu, sizeof mtu));
    struct rtattr *linkinfo = ok ? nl_add(&r, IFLA_LINKINFO, NULL, 0) : NULL;
    ok = linkinfo && nl_add(&r, IFLA_INFO_KIND, "veth", 4);
    struct rtattr *data = ok ? nl_add(&r, IFLA_INFO_DATA, NULL, 0) : NULL;
    struct rtattr *peer_info = data ? nl_add(&r, VETH_INFO_PEER, NULL, 0) : NULL;
    if (peer_info && r.length + NLMSG_ALIGN(sizeof(struct ifinfomsg)) <= r.size) {
        r.length += NLMSG_ALIGN(sizeof(struct ifinfomsg)); /* the peer's ifinfomsg, zeroed */
        ok = nl_add(&r, IFLA_IFNAME, peer, strlen(peer) + 1) && nl_add(&r, IFLA_ADDRESS, mac, 6)
            && nl_add(&r, IFLA_NET_NS_FD, &fd, sizeof fd) && (!mtu || nl_add(&r, IFLA_MTU, &mtu, sizeof mtu));
    } else {
        ok = 0;
    }
    if (!ok) {
        close(netns);
        errno = EMSGSIZE;
        return -1;
    }
    nl_end(&r, peer_info);
    nl_end(&r, data);
    nl_end(&r, linkinfo);
    header->nlmsg_len = (uint32_t)r.length;
    int result = nl_exchange(buffer, r.length);
    int saved = errno;
    close(netns);
    errno = saved;
    return result;
}
