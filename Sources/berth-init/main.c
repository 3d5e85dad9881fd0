/*
 * berth-init: PID 1 of a container started with --init.
 *
 *     berth-init -- COMMAND [ARG...]
 *
 * It starts COMMAND as its child (in a process group of its own, given the
 * terminal when stdin is one), reaps every process that ends in the
 * container, forwards the signals it receives to COMMAND, and exits as
 * COMMAND does: its exit code, or 128 + the signal that ended it.
 *
 * The runtime executes it from a sealed copy in memory, with the
 * container's identity, capabilities and seccomp filter already in place:
 * no host file is behind /proc/1/exe, and nothing it could reach is
 * writable. It is not dumpable, so that the container's processes cannot
 * open its /proc/1 files without CAP_SYS_PTRACE, and it never executes
 * itself: a COMMAND that resolves to its own image (/proc/self/exe,
 * /proc/1/exe) is not found.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static struct stat self;
static int know_self;

static int is_self(const char *path) {
    if (!know_self) return 0;
    struct stat st;
    if (stat(path, &st) < 0) return 0;
    return st.st_dev == self.st_dev && st.st_ino == self.st_ino;
}

/* execvp, without ever executing this program's own image. */
static void exec_command(char **argv) {
    const char *file = argv[0];
    if (strchr(file, '/')) {
        if (is_self(file)) {
            errno = ENOENT;
            return;
        }
        execv(file, argv);
        return;
    }
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    int saw_eacces = 0;
    for (const char *segment = path;;) {
        const char *end = strchrnul(segment, ':');
        char candidate[4096];
        int n = snprintf(candidate, sizeof candidate, "%.*s%s%s", (int)(end - segment), segment, end > segment ? "/" : "", file);
        if (n > 0 && (size_t)n < sizeof candidate && !is_self(candidate)) {
            execv(candidate, argv);
            if (errno == EACCES)
                saw_eacces = 1;
            else if (errno != ENOENT && errno != ENOTDIR)
                return;
        }
        if (!*end) break;
        segment = end + 1;
    }
    errno = saw_eacces ? EACCES : ENOENT;
}

int main(int argc, char **argv) {
    int first = 1;
    if (first < argc && strcmp(argv[first], "--") == 0) first++;
    if (first >= argc) {
        fprintf(stderr, "usage: berth-init -- COMMAND [ARG...]\n");
        return 2;
    }
    know_self = stat("/proc/self/exe", &self) == 0;
    /* Its name in ps is its own, not the memfd's; and no process of the
     * container opens its /proc/1 files (exe among them) without
     * CAP_SYS_PTRACE. Its child is dumpable again after its exec. */
    prctl(PR_SET_NAME, "berth-init", 0, 0, 0);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    sigprocmask(SIG_BLOCK, &all, NULL);
    pid_t child = fork();
    if (child < 0) {
        fprintf(stderr, "berth-init: fork: %s\n", strerror(errno));
        return 126;
    }
    if (child == 0) {
        setpgid(0, 0);
        /* Signals are still blocked: taking the terminal raises no SIGTTOU. */
        if (isatty(STDIN_FILENO)) tcsetpgrp(STDIN_FILENO, getpgrp());
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, NULL);
        sigprocmask(SIG_SETMASK, &none, NULL);
        exec_command(argv + first);
        int e = errno;
        fprintf(stderr, "berth-init: exec %s: %s\n", argv[first], strerror(e));
        _exit(e == ENOENT ? 127 : 126);
    }
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig < 0) continue;
        if (sig == SIGCHLD) {
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                if (pid != child) continue;
                if (WIFEXITED(status)) return WEXITSTATUS(status);
                if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
            }
        } else {
            kill(child, sig);
        }
    }
}
