/* A UDP echo server for published-port tests: udp-echo PORT. Each datagram
 * comes back prefixed with "echo:". Built static, mounted into containers. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
    printf("listening on udp %s\n", argv[1]);
    fflush(stdout);
    for (;;) {
        char in[1024], out[1100];
        struct sockaddr_in from;
        socklen_t length = sizeof from;
        ssize_t n = recvfrom(s, in, sizeof in, 0, (struct sockaddr *)&from, &length);
        if (n < 0) continue;
        memcpy(out, "echo:", 5);
        memcpy(out + 5, in, (size_t)n);
        sendto(s, out, (size_t)n + 5, 0, (struct sockaddr *)&from, length);
    }
}
