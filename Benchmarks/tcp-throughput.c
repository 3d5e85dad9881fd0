/* TCP throughput for the network benchmark, built static so that it runs
 * inside containers as on the host.
 *   tcp-throughput server PORT          accept connections forever, discard
 *   tcp-throughput client IP PORT SECS  send for SECS, print bytes/second
 *   tcp-throughput connect IP PORT N    N short connections, print the median microseconds */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    static char buffer[256 * 1024];
    if (argc == 3 && strcmp(argv[1], "server") == 0) {
        int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
        if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 8) < 0) { perror("listen"); return 1; }
        printf("listening\n");
        fflush(stdout);
        for (;;) {
            int c = accept(s, NULL, NULL);
            if (c < 0) continue;
            while (read(c, buffer, sizeof buffer) > 0) {}
            close(c);
        }
    }
    if (argc == 5 && strcmp(argv[1], "client") == 0) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[3]))};
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); return 1; }
        double seconds = atof(argv[4]), start = now(), elapsed;
        long long sent = 0;
        while ((elapsed = now() - start) < seconds) {
            ssize_t n = write(s, buffer, sizeof buffer);
            if (n <= 0) { perror("write"); return 1; }
            sent += n;
        }
        printf("%.0f\n", sent / elapsed);
        close(s);
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "connect") == 0) {
        /* COUNT connections, each: connect, one byte, half-close, wait for
         * the server's close. Prints the median in microseconds. */
        int count = atoi(argv[4]);
        if (count <= 0 || count > 100000) return 2;
        double *took = calloc((size_t)count, sizeof *took);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[3]))};
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        for (int i = 0; i < count; i++) {
            double began = now();
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); return 1; }
            if (write(s, "x", 1) != 1) { perror("write"); return 1; }
            shutdown(s, SHUT_WR);
            while (read(s, buffer, sizeof buffer) > 0) {}
            close(s);
            took[i] = (now() - began) * 1e6;
        }
        for (int i = 1; i < count; i++)
            for (int j = i; j > 0 && took[j - 1] > took[j]; j--) { double t = took[j]; took[j] = took[j - 1]; took[j - 1] = t; }
        printf("%.1f\n", took[count / 2]);
        free(took);
        return 0;
    }
    fprintf(stderr, "usage: tcp-throughput server PORT | client IP PORT SECONDS | connect IP PORT COUNT\n");
    return 2;
}
