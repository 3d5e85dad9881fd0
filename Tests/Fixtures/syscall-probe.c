/*
 * syscall-probe: runs inside a test container and reports, for each system
 * call named on the command line, whether the kernel let it through:
 * "NAME: OK" or "NAME: ERRNO" (e.g. "keyctl: EPERM"). Built static, so it
 * runs in any root filesystem.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *name_of(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case ENOKEY: return "ENOKEY";
    case ENOENT: return "ENOENT";
    default: return strerror(e);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long rc;
        if (strcmp(argv[i], "keyctl") == 0) {
            rc = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0);
        } else if (strcmp(argv[i], "unshare") == 0) {
            rc = unshare(CLONE_NEWUSER);
        } else if (strcmp(argv[i], "mount") == 0) {
            rc = mount("none", "/tmp", "tmpfs", 0, NULL);
        } else if (strcmp(argv[i], "clone3") == 0) {
            rc = syscall(SYS_clone3, NULL, 0);
        } else {
            printf("%s: unknown\n", argv[i]);
            continue;
        }
        printf("%s: %s\n", argv[i], rc >= 0 ? "OK" : name_of(errno));
    }
    return 0;
}
