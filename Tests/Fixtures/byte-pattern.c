/*
 * byte-pattern: writes BYTES bytes of a fixed pseudo-random sequence
 * (xorshift64, from SEED) to stdout, in writes of CHUNK bytes (64 KiB by
 * default), so that a reader can tell whether it got every byte, in order:
 * the same command on the host gives the same bytes.
 *
 *   byte-pattern BYTES [SEED [CHUNK]]
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: byte-pattern BYTES [SEED [CHUNK]]\n");
        return 2;
    }
    unsigned long long left = strtoull(argv[1], NULL, 10);
    uint64_t state = argc > 2 ? strtoull(argv[2], NULL, 10) : 88172645463325252ULL;
    if (state == 0) state = 1;
    size_t chunk = argc > 3 ? (size_t)strtoull(argv[3], NULL, 10) : 65536;
    if (chunk == 0 || chunk > (1 << 20)) chunk = 65536;
    static unsigned char buffer[1 << 20];
    while (left > 0) {
        size_t n = left < chunk ? (size_t)left : chunk;
        for (size_t i = 0; i < n; i += 8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for (size_t j = 0; j < 8 && i + j < n; j++) buffer[i + j] = (unsigned char)(state >> (8 * j));
        }
        size_t done = 0;
        while (done < n) {
            ssize_t w = write(1, buffer + done, n - done);
            if (w < 0) {
                if (errno == EINTR) continue;
                return 1;
            }
            done += (size_t)w;
        }
        left -= n;
    }
    return 0;
}
