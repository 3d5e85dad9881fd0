#define _GNU_SOURCE
#include "berth_linux.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int berth_pipe2_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int berth_accept_cloexec_nonblock(int listener) { return accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK); }

const char *berth_errno_name(int error) { return strerrorname_np(error); }
