#ifndef BERTH_NETLINK_H
#define BERTH_NETLINK_H

#include <stddef.h>
#include <stdint.h>

/* The longest name of a failed step (with its terminating NUL). */
#define BERTH_NETLINK_STAGE_MAX 48

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
 * named `peer`, with `mac`, moved into the namespace at `netns_path`; both
 * ends with `mtu` bytes unless it is 0. 0, or -1 with errno (EEXIST: `host`
 * exists; ENODEV: no such bridge). */
int berth_veth_create(const char *host, const char *bridge, const char *peer, const unsigned char mac[6], const char *netns_path, int up,
                      unsigned int mtu);
/* Renames the interface `name` (which must be down) and sets it up, in one
 * rtnetlink request. 0, or -1 with errno. */
int berth_link_rename_up(const char *name, const char *new_name);
/* Unbinds and deletes a namespace file; one already gone is no error. */
int berth_netns_remove(const char *path);
/* Binds the namespace of the file `from` at `to` (which must not exist),
 * then removes `from`. 0, or -1 with errno. */
int berth_netns_move(const char *from, const char *to);

#endif
