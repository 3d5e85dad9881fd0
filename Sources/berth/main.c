/*
 * berth: the command line's front door.
 *
 * `berth run` of a container in the foreground, on an agent's local socket,
 * is done here: one Run call (gRPC over HTTP/2, framed by nghttp2, the
 * request encoded by protobuf-c), the container's output copied as it comes,
 * and the container's exit code as this process's. Starting a runtime,
 * parsing fifty options by reflection and building an event loop cost the
 * full command line about ten milliseconds before it sends a byte; this
 * costs well under one.
 *
 * Everything else is handed to `berth-cli`, the full command line, which
 * sits next to this executable: every other command, and any `run` this
 * does not take as it stands (a flag it does not know, a value it would
 * have to interpret, `-d`, `--help`, a TCP agent, a repeated option...).
 * The hand-over is an exec with the same arguments, so what the user sees
 * is always the full command line's behaviour. The same holds when the Run
 * call fails before the container started (an image to pull, a bad value,
 * a name in use, no agent): the agent created nothing, and the full
 * command line does it again in its own words. This program never prints
 * a usage error of its own.
 *
 * For the options it takes, the request is the one the full command line
 * would send (a test compares the containers the two make).
 */

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <protobuf-c/protobuf-c.h>

#include "berth/agent/v1/containers.pb-c.h"

#define DEFAULT_HOST "unix:///run/berth/agent.sock"
#define MAX_MESSAGE_LENGTH (16u * 1024u * 1024u)
#define RUN_PATH "/berth.agent.v1.Containers/Run"
#define KILL_PATH "/berth.agent.v1.Containers/Kill"

static char **original_argv;

/* Runs the full command line with this process's arguments. */
__attribute__((noreturn)) static void hand_over(void) {
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - sizeof "/berth-cli");
    if (n > 0) {
        path[n] = 0;
        char *slash = strrchr(path, '/');
        if (slash) {
            strcpy(slash, "/berth-cli");
            execv(path, original_argv);
        }
    }
    fprintf(stderr, "berth: cannot run berth-cli next to this executable (%s): %s\n", n > 0 ? path : "/proc/self/exe",
            strerror(errno));
    exit(1);
}

/* ---- the arguments of a run this program takes ---- */

struct strings {
    char **items;
    size_t count;
};

static void strings_add(struct strings *list, char *item) {
    char **grown = realloc(list->items, (list->count + 1) * sizeof *grown);
    if (!grown) hand_over();
    grown[list->count++] = item;
    list->items = grown;
}

struct run_request {
    const char *host;
    int rm, read_only, init;
    const char *name, *workdir, *user, *hostname, *entrypoint, *network, *restart;
    struct strings env, labels, aliases, cap_add, cap_drop;
    int64_t memory, nano_cpus, pids_limit;
    int32_t cpu_shares;
    const char *image;
    char **command;
    size_t command_count;
};

/* A decimal integer of at most `digits` digits, with no sign, no leading
 * zero and no spaces; 0 (which the full command line passes as set, where
 * the protobuf-c encoding would leave it out) is not taken. */
static int parse_count(const char *text, int digits, int64_t *out) {
    int64_t value = 0;
    int n = 0;
    if (text[0] == '0') return -1;
    for (; text[n]; n++) {
        if (text[n] < '0' || text[n] > '9' || n >= digits) return -1;
        value = value * 10 + (text[n] - '0');
    }
    if (n == 0) return -1;
    *out = value;
    return 0;
}

/* `-m`: whole bytes, or a whole number of k, m or g (binary, as docker). */
static int parse_memory(const char *text, int64_t *out) {
    char digits[16];
    size_t length = strlen(text);
    int shift = 0;
    if (length == 0 || length >= sizeof digits) return -1;
    memcpy(digits, text, length + 1);
    switch (digits[length - 1]) {
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    default: break;
    }
    if (shift) digits[length - 1] = 0;
    int64_t value;
    if (parse_count(digits, 15, &value) < 0 || value > (INT64_MAX >> shift)) return -1;
    *out = value << shift;
    return 0;
}

/* `--cpus`: whole CPUs with up to nine decimals, in billionths. */
static int parse_cpus(const char *text, int64_t *out) {
    char whole[8];
    const char *dot = strchr(text, '.');
    size_t whole_length = dot ? (size_t)(dot - text) : strlen(text);
    if (whole_length == 0 || whole_length >= sizeof whole) return -1;
    memcpy(whole, text, whole_length);
    whole[whole_length] = 0;
    int64_t units = 0;
    if (!(whole_length == 1 && whole[0] == '0') && parse_count(whole, 6, &units) < 0) return -1;
    int64_t nanos = 0;
    if (dot) {
        int places = 0;
        for (const char *p = dot + 1; *p; p++, places++) {
            if (*p < '0' || *p > '9' || places >= 9) return -1;
            nanos = nanos * 10 + (*p - '0');
        }
        if (places == 0) return -1;
        for (; places < 9; places++) nanos *= 10;
    }
    *out = units * 1000000000 + nanos;
    return *out > 0 ? 0 : -1;
}

/* Takes `berth [-H HOST] run FLAGS IMAGE [COMMAND...]` when every flag is
 * one this program knows and every value one it can pass on unchanged (or
 * read exactly as the full command line does). Returns -1 for anything
 * else. */
static int parse_run(int argc, char **argv, struct run_request *r) {
    memset(r, 0, sizeof *r);
    r->network = "bridge";
    r->restart = "no";
    int i = 1;
    int host_given = 0;
    for (;;) {
        if (i >= argc) return -1;
        const char *arg = argv[i];
        if (strcmp(arg, "-H") == 0 || strcmp(arg, "--host") == 0) {
            if (host_given++ || i + 1 >= argc) return -1;
            r->host = argv[i + 1];
            i += 2;
        } else if (strncmp(arg, "--host=", 7) == 0 || strncmp(arg, "-H=", 3) == 0) {
            if (host_given++) return -1;
            r->host = strchr(arg, '=') + 1;
            i++;
        } else {
            break;
        }
    }
    if (strcmp(argv[i++], "run") != 0) return -1;

    /* Each single-valued option may be given once. */
    int seen_network = 0, seen_restart = 0, seen_memory = 0, seen_cpus = 0, seen_pids = 0, seen_shares = 0;
    for (; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-' || arg[1] == 0) break;
        const char *name = arg;
        const char *value = NULL;
        char long_name[32];
        const char *equals = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
        if (equals) {
            size_t length = (size_t)(equals - arg);
            if (length >= sizeof long_name) return -1;
            memcpy(long_name, arg, length);
            long_name[length] = 0;
            name = long_name;
            value = equals + 1;
        } else if (arg[1] != '-' && arg[2] != 0) {
            return -1; /* -abc, -eVALUE: left to the full command line */
        }
#define IS(long_option) (strcmp(name, long_option) == 0)
#define EITHER(short_option, long_option) (strcmp(name, short_option) == 0 || IS(long_option))
        /* Flags. */
        if (IS("--rm") || IS("--read-only") || IS("--init")) {
            if (value) return -1;
            int *flag = IS("--rm") ? &r->rm : IS("--read-only") ? &r->read_only : &r->init;
            if (*flag) return -1;
            *flag = 1;
            continue;
        }
        /* Options with a value. */
        if (!value) {
            if (i + 1 >= argc) return -1;
            value = argv[++i];
        }
        if (value[0] == '-' || value[0] == 0) return -1;
        const char **single = NULL;
        if (EITHER("-H", "--host")) {
            if (host_given++) return -1;
            r->host = value;
        } else if (IS("--name")) {
            single = &r->name;
        } else if (EITHER("-w", "--workdir")) {
            single = &r->workdir;
        } else if (EITHER("-u", "--user")) {
            single = &r->user;
        } else if (EITHER("-h", "--hostname")) {
            single = &r->hostname;
        } else if (IS("--entrypoint")) {
            single = &r->entrypoint;
        } else if (IS("--network")) {
            if (seen_network++) return -1;
            r->network = value;
        } else if (IS("--restart")) {
            /* The policies whose written form is their stored form. */
            if (seen_restart++ || (strcmp(value, "no") != 0 && strcmp(value, "always") != 0 &&
                                   strcmp(value, "unless-stopped") != 0 && strcmp(value, "on-failure") != 0))
                return -1;
            r->restart = value;
        } else if (EITHER("-e", "--env")) {
            if (value[0] == '=') return -1;
            if (strchr(value, '=')) {
                strings_add(&r->env, (char *)value);
            } else {
                /* A bare KEY takes this process's value; none, and it is left out. */
                const char *local = getenv(value);
                if (local) {
                    size_t length = strlen(value) + strlen(local) + 2;
                    char *entry = malloc(length);
                    if (!entry) return -1;
                    snprintf(entry, length, "%s=%s", value, local);
                    strings_add(&r->env, entry);
                }
            }
        } else if (EITHER("-l", "--label")) {
            if (value[0] == '=') return -1;
            strings_add(&r->labels, (char *)value);
        } else if (IS("--network-alias")) {
            strings_add(&r->aliases, (char *)value);
        } else if (IS("--cap-add")) {
            strings_add(&r->cap_add, (char *)value);
        } else if (IS("--cap-drop")) {
            strings_add(&r->cap_drop, (char *)value);
        } else if (EITHER("-m", "--memory")) {
            if (seen_memory++ || parse_memory(value, &r->memory) < 0) return -1;
        } else if (IS("--cpus")) {
            if (seen_cpus++ || parse_cpus(value, &r->nano_cpus) < 0) return -1;
        } else if (IS("--pids-limit")) {
            if (seen_pids++ || parse_count(value, 18, &r->pids_limit) < 0) return -1;
        } else if (EITHER("-c", "--cpu-shares")) {
            int64_t shares;
            if (seen_shares++ || parse_count(value, 9, &shares) < 0) return -1;
            r->cpu_shares = (int32_t)shares;
        } else {
            return -1;
        }
#undef IS
#undef EITHER
        if (single) {
            if (*single) return -1;
            *single = value;
        }
    }
    if (i >= argc) return -1;
    r->image = argv[i];
    r->command = argv + i + 1;
    r->command_count = (size_t)(argc - i - 1);
    /* A label given twice: the last one wins there; not worth the bookkeeping here. */
    for (size_t a = 0; a < r->labels.count; a++) {
        size_t key = strcspn(r->labels.items[a], "=");
        for (size_t b = a + 1; b < r->labels.count; b++) {
            if (strcspn(r->labels.items[b], "=") == key && strncmp(r->labels.items[a], r->labels.items[b], key) == 0)
                return -1;
        }
    }
    return 0;
}

/* The unix socket path of the agent: -H, then BERTH_HOST, then the
 * default; NULL for a TCP agent (TLS is the full command line's). */
static const char *socket_path(const struct run_request *r) {
    const char *host = r->host;
    if (!host) host = getenv("BERTH_HOST");
    if (!host || !*host) host = DEFAULT_HOST;
    if (strncmp(host, "unix:///", 8) != 0) return NULL;
    const char *path = host + 7;
    return strlen(path) < sizeof(((struct sockaddr_un *)0)->sun_path) ? path : NULL;
}

/* ---- the call ---- */

struct framed {
    uint8_t *bytes;
    size_t length, offset;
};

struct session {
    int fd;
    nghttp2_session *h2;
    int32_t run_stream;
    /* The Run call's response. */
    uint8_t *pending;
    size_t pending_length, pending_capacity;
    int grpc_status; /* -1 until the trailers */
    char grpc_message[512];
    int closed;
    int started;
    int exit_code;
    int exited;
    char container_id[80];
    int broken;
    char broken_reason[160];
    struct framed run_body, kill_body;
};

static void session_break(struct session *s, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void session_break(struct session *s, const char *format, ...) {
    if (s->broken) return;
    s->broken = 1;
    va_list args;
    va_start(args, format);
    vsnprintf(s->broken_reason, sizeof s->broken_reason, format, args);
    va_end(args);
}

static void write_all(int fd, const uint8_t *data, size_t length) {
    while (length > 0) {
        ssize_t n = write(fd, data, length);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return; /* a closed stdout: the output is dropped, as it would be */
        data += n;
        length -= (size_t)n;
    }
}

/* One message of the Run call's response. */
static void on_message(struct session *s, const uint8_t *data, size_t length) {
    Berth__Agent__V1__RunContainerResponse *m = berth__agent__v1__run_container_response__unpack(NULL, length, data);
    if (!m) {
        session_break(s, "a malformed Run response from the agent");
        return;
    }
    switch (m->event_case) {
    case BERTH__AGENT__V1__RUN_CONTAINER_RESPONSE__EVENT_STARTED: {
        Berth__Agent__V1__CreateContainerResponse *started = m->started;
        s->started = 1;
        snprintf(s->container_id, sizeof s->container_id, "%s", started->id);
        for (size_t i = 0; i < started->n_warnings; i++) fprintf(stderr, "WARNING: %s\n", started->warnings[i]);
        if (started->start_error[0]) {
            fprintf(stderr, "berth: %s\n", started->start_error);
            /* As docker: a command that could not be started exits 127 (not
             * found) or 126; any other failure 125. */
            Berth__Agent__V1__ContainerStatus *status = started->container ? started->container->status : NULL;
            s->exit_code = status && strcmp(status->reason, "StartFailed") == 0 && status->exit_code != 0 ? status->exit_code : 125;
            s->exited = 1;
        }
        break;
    }
    case BERTH__AGENT__V1__RUN_CONTAINER_RESPONSE__EVENT_OUTPUT:
        write_all(m->output->stream == BERTH__AGENT__V1__LOG_STREAM__LOG_STREAM_STDERR ? 2 : 1, m->output->line.data,
                  m->output->line.len);
        break;
    case BERTH__AGENT__V1__RUN_CONTAINER_RESPONSE__EVENT_EXITED:
        s->exit_code = m->exited->exit_code;
        s->exited = 1;
        break;
    default:
        break;
    }
    berth__agent__v1__run_container_response__free_unpacked(m, NULL);
}

static ssize_t send_callback(nghttp2_session *h2, const uint8_t *data, size_t length, int flags, void *user) {
    (void)h2;
    (void)flags;
    struct session *s = user;
    for (;;) {
        ssize_t n = send(s->fd, data, length, MSG_NOSIGNAL);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            struct pollfd p = {.fd = s->fd, .events = POLLOUT};
            poll(&p, 1, -1);
            continue;
        }
        session_break(s, "the connection to the agent broke: %s", strerror(errno));
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t stream, const uint8_t *data, size_t length, void *user) {
    (void)h2;
    (void)flags;
    struct session *s = user;
    if (stream != s->run_stream) return 0;
    if (s->pending_length + length > s->pending_capacity) {
        size_t capacity = s->pending_capacity ? s->pending_capacity : 4096;
        while (capacity < s->pending_length + length) capacity *= 2;
        uint8_t *grown = realloc(s->pending, capacity);
        if (!grown) {
            session_break(s, "out of memory");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        s->pending = grown;
        s->pending_capacity = capacity;
    }
    memcpy(s->pending + s->pending_length, data, length);
    s->pending_length += length;
    /* Whole gRPC messages: a flag byte (0, uncompressed), a 4-byte length. */
    size_t used = 0;
    while (s->pending_length - used >= 5) {
        const uint8_t *p = s->pending + used;
        uint32_t size = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        if (p[0] != 0 || size > MAX_MESSAGE_LENGTH) {
            session_break(s, "a Run response the agent framed in a way not understood");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        if (s->pending_length - used - 5 < size) break;
        on_message(s, p + 5, size);
        used += 5 + (size_t)size;
    }
    memmove(s->pending, s->pending + used, s->pending_length - used);
    s->pending_length -= used;
    return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name, size_t name_length,
                     const uint8_t *value, size_t value_length, uint8_t flags, void *user) {
    (void)h2;
    (void)flags;
    struct session *s = user;
    if (frame->hd.stream_id != s->run_stream) return 0;
    if (name_length == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int status = 0;
        for (size_t i = 0; i < value_length && i < 4; i++) status = status * 10 + (value[i] - '0');
        s->grpc_status = status;
    } else if (name_length == 12 && memcmp(name, "grpc-message", 12) == 0) {
        /* Percent-encoded, as gRPC sends it. */
        size_t out = 0;
        for (size_t i = 0; i < value_length && out + 1 < sizeof s->grpc_message; i++) {
            unsigned int byte;
            if (value[i] == '%' && i + 2 < value_length && sscanf((const char *)value + i + 1, "%2x", &byte) == 1) {
                s->grpc_message[out++] = (char)byte;
                i += 2;
            } else {
                s->grpc_message[out++] = (char)value[i];
            }
        }
        s->grpc_message[out] = 0;
    }
    return 0;
}

static int on_close(nghttp2_session *h2, int32_t stream, uint32_t error, void *user) {
    (void)h2;
    struct session *s = user;
    if (stream != s->run_stream) return 0;
    s->closed = 1;
    if (error != 0 && s->grpc_status < 0) session_break(s, "the agent reset the Run call (HTTP/2 error %u)", error);
    return 0;
}

static ssize_t read_body(nghttp2_session *h2, int32_t stream, uint8_t *buffer, size_t length, uint32_t *flags,
                         nghttp2_data_source *source, void *user) {
    (void)h2;
    (void)stream;
    (void)user;
    struct framed *body = source->ptr;
    size_t n = body->length - body->offset;
    if (n > length) n = length;
    memcpy(buffer, body->bytes + body->offset, n);
    body->offset += n;
    if (body->offset == body->length) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* `message` with gRPC's 5-byte prefix. */
static int frame(const ProtobufCMessage *message, struct framed *out) {
    size_t length = protobuf_c_message_get_packed_size(message);
    out->bytes = malloc(length + 5);
    if (!out->bytes) return -1;
    out->bytes[0] = 0;
    out->bytes[1] = (uint8_t)(length >> 24);
    out->bytes[2] = (uint8_t)(length >> 16);
    out->bytes[3] = (uint8_t)(length >> 8);
    out->bytes[4] = (uint8_t)length;
    protobuf_c_message_pack(message, out->bytes + 5);
    out->length = length + 5;
    out->offset = 0;
    return 0;
}

static int32_t submit(struct session *s, const char *path, struct framed *body) {
#define HEADER(n, v) {(uint8_t *)n, (uint8_t *)v, sizeof n - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME}
    nghttp2_nv headers[] = {
        HEADER(":method", "POST"), HEADER(":scheme", "http"), HEADER(":path", path), HEADER(":authority", "localhost"),
        HEADER("content-type", "application/grpc"), HEADER("te", "trailers"), HEADER("user-agent", "berth"),
    };
#undef HEADER
    nghttp2_data_provider provider = {.source = {.ptr = body}, .read_callback = read_body};
    return nghttp2_submit_request(s->h2, NULL, headers, sizeof headers / sizeof headers[0], &provider, s);
}

static char **strings_or_null(const struct strings *list) { return list->count ? list->items : NULL; }

static int encode_run(const struct run_request *r, struct framed *out) {
    Berth__Agent__V1__Resources resources = BERTH__AGENT__V1__RESOURCES__INIT;
    resources.memory_bytes = r->memory;
    resources.nano_cpus = r->nano_cpus;
    resources.pids_limit = r->pids_limit;
    resources.cpu_shares = r->cpu_shares;

    Berth__Agent__V1__StringList entrypoint = BERTH__AGENT__V1__STRING_LIST__INIT;
    char *entrypoint_value = (char *)r->entrypoint;
    if (r->entrypoint) {
        entrypoint.n_values = 1;
        entrypoint.values = &entrypoint_value;
    }

    size_t label_count = r->labels.count;
    Berth__Agent__V1__ContainerSpec__LabelsEntry *entries = calloc(label_count + 1, sizeof *entries);
    Berth__Agent__V1__ContainerSpec__LabelsEntry **labels = calloc(label_count + 1, sizeof *labels);
    if (!entries || !labels) return -1;
    for (size_t i = 0; i < label_count; i++) {
        Berth__Agent__V1__ContainerSpec__LabelsEntry entry = BERTH__AGENT__V1__CONTAINER_SPEC__LABELS_ENTRY__INIT;
        char *item = strdup(r->labels.items[i]);
        if (!item) return -1;
        char *equals = strchr(item, '=');
        entry.key = item;
        entry.value = equals ? (*equals = 0, equals + 1) : "";
        entries[i] = entry;
        labels[i] = &entries[i];
    }

    Berth__Agent__V1__ContainerSpec spec = BERTH__AGENT__V1__CONTAINER_SPEC__INIT;
    spec.name = (char *)(r->name ? r->name : "");
    spec.image = (char *)r->image;
    spec.entrypoint = r->entrypoint ? &entrypoint : NULL;
    spec.n_command = r->command_count;
    spec.command = r->command;
    spec.n_env = r->env.count;
    spec.env = strings_or_null(&r->env);
    if (r->workdir) spec.working_dir = (char *)r->workdir;
    if (r->user) spec.user = (char *)r->user;
    if (r->hostname) spec.hostname = (char *)r->hostname;
    spec.n_labels = label_count;
    spec.labels = label_count ? labels : NULL;
    spec.resources = &resources;
    spec.network = (char *)r->network;
    spec.n_network_aliases = r->aliases.count;
    spec.network_aliases = strings_or_null(&r->aliases);
    spec.restart_policy = (char *)r->restart;
    spec.read_only_rootfs = r->read_only;
    spec.init = r->init;
    spec.n_cap_add = r->cap_add.count;
    spec.cap_add = strings_or_null(&r->cap_add);
    spec.n_cap_drop = r->cap_drop.count;
    spec.cap_drop = strings_or_null(&r->cap_drop);

    Berth__Agent__V1__RunContainerRequest request = BERTH__AGENT__V1__RUN_CONTAINER_REQUEST__INIT;
    request.spec = &spec;
    request.remove = r->rm;
    return frame(&request.base, out);
}

/* Ctrl-C and SIGTERM, once the container runs, go to the container (a
 * Kill call on the same connection), as the full command line does. */
static void forward_signal(struct session *s, int signal_number) {
    Berth__Agent__V1__KillContainerRequest kill = BERTH__AGENT__V1__KILL_CONTAINER_REQUEST__INIT;
    kill.container = s->container_id;
    kill.signal = signal_number == SIGINT ? "SIGINT" : "SIGTERM";
    free(s->kill_body.bytes);
    if (frame(&kill.base, &s->kill_body) == 0) submit(s, KILL_PATH, &s->kill_body);
}

int main(int argc, char **argv) {
    original_argv = argv;
    struct run_request r;
    if (parse_run(argc, argv, &r) < 0) hand_over();
    const char *path = socket_path(&r);
    if (!path) hand_over();

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    strcpy(address.sun_path, path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) < 0) hand_over();
    signal(SIGPIPE, SIG_IGN);

    struct session s;
    memset(&s, 0, sizeof s);
    s.fd = fd;
    s.grpc_status = -1;
    if (encode_run(&r, &s.run_body) < 0) hand_over();

    nghttp2_session_callbacks *callbacks;
    if (nghttp2_session_callbacks_new(&callbacks) != 0) hand_over();
    nghttp2_session_callbacks_set_send_callback(callbacks, send_callback);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_close);
    if (nghttp2_session_client_new(&s.h2, callbacks, &s) != 0) hand_over();
    nghttp2_session_callbacks_del(callbacks);
    /* Room for a container that writes quickly. */
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(s.h2, NGHTTP2_FLAG_NONE, settings, 1);
    nghttp2_session_set_local_window_size(s.h2, NGHTTP2_FLAG_NONE, 0, 1 << 24);
    s.run_stream = submit(&s, RUN_PATH, &s.run_body);
    if (s.run_stream < 0) hand_over();

    sigset_t forwarded;
    sigemptyset(&forwarded);
    sigaddset(&forwarded, SIGINT);
    sigaddset(&forwarded, SIGTERM);
    int signals = -1;
    uint8_t input[65536];
    while (!s.closed && !s.broken) {
        if (nghttp2_session_send(s.h2) != 0) session_break(&s, "the connection to the agent broke");
        if (s.broken) break;
        /* Until the container runs, Ctrl-C ends this process (and the call:
         * the agent then leaves a --rm container removed when it exits). */
        if (s.started && signals < 0) {
            sigprocmask(SIG_BLOCK, &forwarded, NULL);
            signals = signalfd(-1, &forwarded, SFD_CLOEXEC);
        }
        struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = signals, .events = POLLIN}};
        if (poll(fds, signals >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR) continue;
            session_break(&s, "poll: %s", strerror(errno));
            break;
        }
        if (signals >= 0 && (fds[1].revents & POLLIN)) {
            struct signalfd_siginfo info;
            if (read(signals, &info, sizeof info) == sizeof info) forward_signal(&s, (int)info.ssi_signo);
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(fd, input, sizeof input);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                session_break(&s, "the agent closed the connection");
                break;
            }
            if (nghttp2_session_mem_recv(s.h2, input, (size_t)n) < 0) session_break(&s, "the agent's HTTP/2 was not understood");
        }
    }
    /* The agent refused the call: nothing was made, and the full command
     * line takes it from the start (and pulls a missing image). */
    if (!s.started && s.grpc_status > 0) hand_over();
    /* The agent stopped (past its shutdown grace, UNAVAILABLE) or died
     * under a running container: say so, in berth-cli's words. */
    if (s.started && !s.exited && (s.grpc_status == 14 || (s.grpc_status < 0 && s.broken))) {
        const char *why = s.grpc_status != 14 ? "the connection closed during the call"
                          : strcmp(s.grpc_message, "the server is shutting down") == 0 ? "it is shutting down"
                          : s.grpc_message;
        fprintf(stderr, "berth: the Berth agent at unix://%s went away (%s)\n", path, why);
        return 125;
    }
    /* Berth, not the container, failed: docker's run says so with 125. */
    if (s.grpc_status > 0) {
        fprintf(stderr, "berth: %s\n", s.grpc_message[0] ? s.grpc_message : "the Run call failed");
        return 125;
    }
    if (s.broken || !s.exited) {
        fprintf(stderr, "berth: %s\n", s.broken ? s.broken_reason : "the agent ended the Run call without the container's exit");
        return 125;
    }
    return s.exit_code;
}
