/*
 * exe-racer: run inside a container, it races to open /proc/PID/exe of every
 * process it can see (a process being exec'd into the container is one,
 * for a moment), then tries to write the file it got: the attack of
 * CVE-2019-5736, which overwrote the runtime's binary on the host.
 *
 *   exe-racer SECONDS [DEV:INO ...]
 *
 * It stops once /tmp/exe-racer-stop exists, or after SECONDS.
 * DEV:INO name files that must never be reached (the runtime's binaries on
 * the host). For each distinct file it opened it prints
 *   opened TARGET dev=DEV ino=INO forbidden=0|1 written=0|1 (ERRNO)
 * and at the end
 *   summary scans=N opened=M forbidden=F written=W
 * A write is tried with the file's own first byte at offset 0, so that
 * even a successful one changes nothing; files of the container's own root
 * filesystem are not tried (holding one open for writing would make the
 * container's next exec of it fail with ETXTBSY).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct identity {
    unsigned long long dev, ino;
};

static struct identity forbidden[64], seen[4096];
static int forbidden_count, seen_count;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: exe-racer SECONDS [DEV:INO ...]\n");
        return 2;
    }
    double seconds = atof(argv[1]);
    for (int i = 2; i < argc && forbidden_count < 64; i++) {
        if (sscanf(argv[i], "%llu:%llu", &forbidden[forbidden_count].dev, &forbidden[forbidden_count].ino) == 2) forbidden_count++;
    }
    pid_t self = getpid();
    struct stat root;
    if (stat("/", &root) < 0) return 3;
    long scans = 0;
    int opened = 0, hits = 0, written = 0;
    double end = now() + seconds;
    while (now() < end && access("/tmp/exe-racer-stop", F_OK) != 0) {
        scans++;
        DIR *proc = opendir("/proc");
        if (!proc) return 3;
        struct dirent *entry;
        while ((entry = readdir(proc))) {
            char *tail;
            long pid = strtol(entry->d_name, &tail, 10);
            if (*tail || pid <= 0 || pid == self) continue;
            char path[64];
            snprintf(path, sizeof path, "/proc/%ld/exe", pid);
            int fd = open(path, O_PATH | O_CLOEXEC);
            if (fd < 0) continue;
            struct stat st;
            if (fstat(fd, &st) < 0) {
                close(fd);
                continue;
            }
            int known = 0;
            for (int i = 0; i < seen_count; i++) known |= seen[i].dev == st.st_dev && seen[i].ino == st.st_ino;
            if (known || seen_count >= 4096) {
                close(fd);
                continue;
            }
            seen[seen_count].dev = st.st_dev;
            seen[seen_count].ino = st.st_ino;
            seen_count++;
            opened++;
            char target[512] = "?";
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            ssize_t n = readlink(path, target, sizeof target - 1);
            if (n >= 0) target[n] = 0;
            int bad = 0;
            for (int i = 0; i < forbidden_count; i++) bad |= forbidden[i].dev == st.st_dev && forbidden[i].ino == st.st_ino;
            hits += bad;
            /* Reopen what the descriptor holds, for reading, then for writing. */
            int wrote = 0, error = 0;
            unsigned char first = 0;
            if (st.st_dev == root.st_dev) {
                printf("opened %s dev=%llu ino=%llu forbidden=%d written=0 (own file)\n", target, (unsigned long long)st.st_dev,
                       (unsigned long long)st.st_ino, bad);
                fflush(stdout);
                close(fd);
                continue;
            }
            int reader = open(path, O_RDONLY | O_CLOEXEC);
            if (reader >= 0) {
                if (pread(reader, &first, 1, 0) != 1) first = 0;
                close(reader);
            }
            int writer = open(path, O_WRONLY | O_CLOEXEC);
            if (writer < 0) {
                error = errno;
            } else {
                if (pwrite(writer, &first, 1, 0) == 1)
                    wrote = 1;
                else
                    error = errno;
                close(writer);
            }
            written += wrote;
            printf("opened %s dev=%llu ino=%llu forbidden=%d written=%d (%s)\n", target, (unsigned long long)st.st_dev,
                   (unsigned long long)st.st_ino, bad, wrote, error ? strerrorname_np(error) : "ok");
            fflush(stdout);
            close(fd);
        }
        closedir(proc);
    }
    printf("summary scans=%ld opened=%d forbidden=%d written=%d\n", scans, opened, hits, written);
    return 0;
}
