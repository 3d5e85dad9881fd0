/*
 * berth-interop: a gRPC client for the Berth agent written against nothing
 * but libnghttp2 (HTTP/2) and protobuf-c (messages generated from the
 * project's .proto files).
 *
 * It shares no code with the agent: it speaks HTTP/2 with prior knowledge
 * (h2c, no TLS) over a plain blocking socket, frames messages the way the
 * gRPC wire protocol prescribes (a 5-byte prefix: compressed flag, 4-byte
 * big-endian length), and reads the status from the trailers. If it passes,
 * any standard gRPC client can talk to the agent. It proves that the agent
 *
 *   - accepts the client connection preface and SETTINGS, and answers a
 *     unary call (Node/Version) with a well-formed response, :status 200,
 *     content-type application/grpc and trailers carrying grpc-status 0;
 *   - streams a server-streaming call (Node/WatchUsage, count=3) as exactly
 *     three messages, sequence 1, 2, 3, followed by grpc-status 0, whatever
 *     the way the messages are spread over DATA frames;
 *   - handles a client cancelling an endless stream with RST_STREAM(CANCEL)
 *     and keeps the connection usable for further calls;
 *   - reports a method the agent does not have (Volumes/NoSuchMethod) with
 *     grpc-status 12 (UNIMPLEMENTED) and a grpc-message.
 *
 * Usage:
 *   berth-interop unix:///path/to/agent.sock
 *   berth-interop tcp://127.0.0.1:PORT
 *
 * Exits 0 if every check passed. Otherwise prints "berth-interop: <what
 * failed>" to stderr and exits 1. Every socket read times out after
 * RECEIVE_TIMEOUT_SECONDS, so it never hangs.
 */

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <protobuf-c/protobuf-c.h>

#include "berth/agent/v1/node.pb-c.h"

#define RECEIVE_TIMEOUT_SECONDS 10
#define GRPC_PREFIX_LENGTH 5
#define MAX_MESSAGE_LENGTH (4u * 1024u * 1024u)
#define GRPC_STATUS_OK 0
#define GRPC_STATUS_UNIMPLEMENTED 12

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* Prints "berth-interop: <message>" to stderr and returns -1. */
static int fail(const char *format, ...)
    __attribute__((format(printf, 1, 2)));

static int fail(const char *format, ...) {
    va_list args;
    fputs("berth-interop: ", stderr);
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Growable byte buffer                                                     */
/* ------------------------------------------------------------------------ */

struct buffer {
    uint8_t *data;
    size_t length;
    size_t capacity;
};

static int buffer_append(struct buffer *buffer, const uint8_t *data,
                         size_t length) {
    if (length == 0) {
        return 0;
    }
    if (length > SIZE_MAX - buffer->length) {
        return -1;
    }
    size_t needed = buffer->length + length;
    if (needed > buffer->capacity) {
        size_t capacity = buffer->capacity == 0 ? 256 : buffer->capacity;
        while (capacity < needed) {
            if (capacity > SIZE_MAX / 2) {
                capacity = needed;
                break;
            }
            capacity *= 2;
        }
        uint8_t *grown = realloc(buffer->data, capacity);
        if (grown == NULL) {
            return -1;
        }
        buffer->data = grown;
        buffer->capacity = capacity;
    }
    memcpy(buffer->data + buffer->length, data, length);
    buffer->length = needed;
    return 0;
}

/* Drops the first `count` bytes. */
static void buffer_consume(struct buffer *buffer, size_t count) {
    memmove(buffer->data, buffer->data + count, buffer->length - count);
    buffer->length -= count;
}

static void buffer_free(struct buffer *buffer) {
    free(buffer->data);
    buffer->data = NULL;
    buffer->length = 0;
    buffer->capacity = 0;
}

/* ------------------------------------------------------------------------ */
/* One gRPC call = one HTTP/2 stream                                        */
/* ------------------------------------------------------------------------ */

struct message {
    uint8_t *data;
    size_t length;
};

struct call {
    const char *path;

    /* Request body: the gRPC-framed request message, sent by the data
       provider. */
    uint8_t *request;
    size_t request_length;
    size_t request_offset;

    int32_t stream_id;

    /* Response. */
    int http_status;         /* :status, 0 until seen */
    char *content_type;      /* NULL until seen */
    int grpc_status;         /* -1 until seen (trailers or trailers-only) */
    char *grpc_message;      /* percent-decoded, NULL if absent */
    struct buffer pending;   /* DATA bytes not yet forming a whole message */
    struct message *messages;
    size_t message_count;
    size_t message_capacity;

    int closed;              /* on_stream_close was called */
    uint32_t close_error;    /* its HTTP/2 error code */
    int failed;              /* a protocol error was seen in a callback */
    char failure[160];
};

static void call_free(struct call *call) {
    free(call->request);
    free(call->content_type);
    free(call->grpc_message);
    buffer_free(&call->pending);
    for (size_t i = 0; i < call->message_count; i++) {
        free(call->messages[i].data);
    }
    free(call->messages);
    memset(call, 0, sizeof(*call));
}

/* Records the first protocol error seen while receiving. */
static void call_set_failure(struct call *call, const char *what) {
    if (!call->failed) {
        call->failed = 1;
        snprintf(call->failure, sizeof(call->failure), "%s", what);
    }
}

/* Initialises `call` with `message` framed as a gRPC length-prefixed
   message (flag 0, 4-byte big-endian length). */
static int call_init(struct call *call, const char *path,
                     const ProtobufCMessage *message) {
    memset(call, 0, sizeof(*call));
    call->path = path;
    call->grpc_status = -1;
    call->stream_id = -1;

    size_t length = protobuf_c_message_get_packed_size(message);
    if (length > UINT32_MAX) {
        return fail("%s: request too large", path);
    }
    call->request = malloc(GRPC_PREFIX_LENGTH + length);
    if (call->request == NULL) {
        return fail("%s: out of memory", path);
    }
    call->request[0] = 0; /* not compressed */
    call->request[1] = (uint8_t)(length >> 24);
    call->request[2] = (uint8_t)(length >> 16);
    call->request[3] = (uint8_t)(length >> 8);
    call->request[4] = (uint8_t)length;
    size_t packed = protobuf_c_message_pack(message,
                                            call->request + GRPC_PREFIX_LENGTH);
    if (packed != length) {
        free(call->request);
        call->request = NULL;
        return fail("%s: protobuf_c_message_pack wrote %zu of %zu bytes",
                    path, packed, length);
    }
    call->request_length = GRPC_PREFIX_LENGTH + length;
    return 0;
}

/* Initialises `call` with an empty message body: 00 00 00 00 00. */
static int call_init_empty(struct call *call, const char *path) {
    memset(call, 0, sizeof(*call));
    call->path = path;
    call->grpc_status = -1;
    call->stream_id = -1;
    call->request = calloc(1, GRPC_PREFIX_LENGTH);
    if (call->request == NULL) {
        return fail("%s: out of memory", path);
    }
    call->request_length = GRPC_PREFIX_LENGTH;
    return 0;
}

/* Splits call->pending into whole gRPC messages. Returns -1 on a framing
   error or when out of memory. */
static int call_take_messages(struct call *call) {
    while (call->pending.length >= GRPC_PREFIX_LENGTH) {
        const uint8_t *p = call->pending.data;
        if (p[0] != 0) {
            call_set_failure(call, "compressed response message (flag != 0)");
            return -1;
        }
        uint32_t length = ((uint32_t)p[1] << 24) | ((uint32_t)p[2] << 16) |
                          ((uint32_t)p[3] << 8) | (uint32_t)p[4];
        if (length > MAX_MESSAGE_LENGTH) {
            call_set_failure(call, "response message too large");
            return -1;
        }
        if (call->pending.length - GRPC_PREFIX_LENGTH < length) {
            return 0; /* the rest is in a later DATA frame */
        }
        if (call->message_count == call->message_capacity) {
            size_t capacity =
                call->message_capacity == 0 ? 4 : call->message_capacity * 2;
            struct message *grown =
                realloc(call->messages, capacity * sizeof(*grown));
            if (grown == NULL) {
                call_set_failure(call, "out of memory");
                return -1;
            }
            call->messages = grown;
            call->message_capacity = capacity;
        }
        /* malloc(0) may return NULL; always allocate at least one byte. */
        uint8_t *copy = malloc(length == 0 ? 1 : length);
        if (copy == NULL) {
            call_set_failure(call, "out of memory");
            return -1;
        }
        memcpy(copy, p + GRPC_PREFIX_LENGTH, length);
        call->messages[call->message_count].data = copy;
        call->messages[call->message_count].length = length;
        call->message_count++;
        buffer_consume(&call->pending, GRPC_PREFIX_LENGTH + (size_t)length);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Connection                                                               */
/* ------------------------------------------------------------------------ */

struct connection {
    int fd;
    nghttp2_session *session;
    char authority[300];
    int read_blocking_done; /* see recv_callback */
    int timed_out;
    int eof;
    int io_errno;
};

/* Sends as much as the (blocking) socket takes. */
static ssize_t send_callback(nghttp2_session *session, const uint8_t *data,
                             size_t length, int flags, void *user_data) {
    (void)session;
    (void)flags;
    struct connection *connection = user_data;
    ssize_t sent;
    do {
        sent = send(connection->fd, data, length, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        connection->io_errno = errno;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            connection->timed_out = 1;
        }
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return sent;
}

/*
 * nghttp2_session_recv() calls this until it returns NGHTTP2_ERR_WOULDBLOCK.
 * The socket is blocking, so the first read of each nghttp2_session_recv()
 * round waits for data (at most RECEIVE_TIMEOUT_SECONDS, SO_RCVTIMEO); later
 * reads in the same round only drain what has already arrived
 * (MSG_DONTWAIT), so control returns to the caller once the input is
 * processed.
 */
static ssize_t recv_callback(nghttp2_session *session, uint8_t *data,
                             size_t length, int flags, void *user_data) {
    (void)session;
    (void)flags;
    struct connection *connection = user_data;
    int blocking = !connection->read_blocking_done;
    ssize_t received;
    do {
        received = recv(connection->fd, data, length,
                        blocking ? 0 : MSG_DONTWAIT);
    } while (received < 0 && errno == EINTR);
    connection->read_blocking_done = 1;
    if (received < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!blocking) {
                return NGHTTP2_ERR_WOULDBLOCK;
            }
            connection->timed_out = 1;
        }
        connection->io_errno = errno;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (received == 0) {
        connection->eof = 1;
        return NGHTTP2_ERR_EOF;
    }
    return received;
}

static int hex_digit(uint8_t c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Returns a malloc'ed, NUL-terminated copy of a grpc-message value with its
   percent-encoding undone. */
static char *percent_decode(const uint8_t *value, size_t length) {
    char *decoded = malloc(length + 1);
    if (decoded == NULL) {
        return NULL;
    }
    size_t out = 0;
    for (size_t i = 0; i < length; i++) {
        int high = -1;
        int low = -1;
        if (value[i] == '%' && i + 2 < length) {
            high = hex_digit(value[i + 1]);
            low = hex_digit(value[i + 2]);
        }
        if (high >= 0 && low >= 0) {
            decoded[out++] = (char)((high << 4) | low);
            i += 2;
        } else {
            decoded[out++] = (char)value[i];
        }
    }
    decoded[out] = '\0';
    return decoded;
}

static char *copy_string(const uint8_t *value, size_t length) {
    char *copy = malloc(length + 1);
    if (copy != NULL) {
        memcpy(copy, value, length);
        copy[length] = '\0';
    }
    return copy;
}

static int header_is(const uint8_t *name, size_t name_length,
                     const char *expected) {
    size_t expected_length = strlen(expected);
    return name_length == expected_length &&
           memcmp(name, expected, expected_length) == 0;
}

/* Parses a small non-negative decimal number; -1 if it is not one. */
static int parse_status(const uint8_t *value, size_t length) {
    if (length == 0 || length > 9) {
        return -1;
    }
    int number = 0;
    for (size_t i = 0; i < length; i++) {
        if (value[i] < '0' || value[i] > '9') {
            return -1;
        }
        number = number * 10 + (value[i] - '0');
    }
    return number;
}

static int on_header_callback(nghttp2_session *session,
                              const nghttp2_frame *frame, const uint8_t *name,
                              size_t name_length, const uint8_t *value,
                              size_t value_length, uint8_t flags,
                              void *user_data) {
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    struct call *call =
        nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (call == NULL) {
        return 0;
    }
    int is_response = frame->headers.cat == NGHTTP2_HCAT_RESPONSE;
    int is_trailer = frame->headers.cat == NGHTTP2_HCAT_HEADERS;

    if (is_response && header_is(name, name_length, ":status")) {
        call->http_status = parse_status(value, value_length);
    } else if (is_response && header_is(name, name_length, "content-type")) {
        free(call->content_type);
        call->content_type = copy_string(value, value_length);
        if (call->content_type == NULL) {
            call_set_failure(call, "out of memory");
        }
    } else if ((is_response || is_trailer) &&
               header_is(name, name_length, "grpc-status")) {
        /* In trailers, or in the response headers of a trailers-only
           response (HEADERS with END_STREAM). */
        call->grpc_status = parse_status(value, value_length);
        if (call->grpc_status < 0) {
            call_set_failure(call, "malformed grpc-status");
        }
    } else if ((is_response || is_trailer) &&
               header_is(name, name_length, "grpc-message")) {
        free(call->grpc_message);
        call->grpc_message = percent_decode(value, value_length);
        if (call->grpc_message == NULL) {
            call_set_failure(call, "out of memory");
        }
    }
    return 0;
}

static int on_data_chunk_recv_callback(nghttp2_session *session,
                                       uint8_t flags, int32_t stream_id,
                                       const uint8_t *data, size_t length,
                                       void *user_data) {
    (void)flags;
    (void)user_data;
    struct call *call =
        nghttp2_session_get_stream_user_data(session, stream_id);
    if (call == NULL || call->failed) {
        return 0;
    }
    if (buffer_append(&call->pending, data, length) != 0) {
        call_set_failure(call, "out of memory");
        return 0;
    }
    (void)call_take_messages(call);
    return 0;
}

static int on_frame_recv_callback(nghttp2_session *session,
                                  const nghttp2_frame *frame,
                                  void *user_data) {
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_RESPONSE) {
        return 0;
    }
    struct call *call =
        nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (call != NULL && call->http_status != 200) {
        char what[64];
        snprintf(what, sizeof(what), "HTTP :status %d, want 200",
                 call->http_status);
        call_set_failure(call, what);
    }
    return 0;
}

static int on_stream_close_callback(nghttp2_session *session,
                                    int32_t stream_id, uint32_t error_code,
                                    void *user_data) {
    (void)user_data;
    struct call *call =
        nghttp2_session_get_stream_user_data(session, stream_id);
    if (call != NULL) {
        call->closed = 1;
        call->close_error = error_code;
    }
    return 0;
}

/* Supplies the request body; the call is the data source. */
static ssize_t request_read_callback(nghttp2_session *session,
                                     int32_t stream_id, uint8_t *buf,
                                     size_t length, uint32_t *data_flags,
                                     nghttp2_data_source *source,
                                     void *user_data) {
    (void)session;
    (void)stream_id;
    (void)user_data;
    struct call *call = source->ptr;
    size_t remaining = call->request_length - call->request_offset;
    size_t count = remaining < length ? remaining : length;
    memcpy(buf, call->request + call->request_offset, count);
    call->request_offset += count;
    if (call->request_offset == call->request_length) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)count;
}

/* Opens the socket named by `address` (unix:///path or tcp://host:port). */
static int connect_address(const char *address, char *authority,
                           size_t authority_size) {
    const char unix_scheme[] = "unix://";
    const char tcp_scheme[] = "tcp://";
    int fd = -1;

    if (strncmp(address, unix_scheme, sizeof(unix_scheme) - 1) == 0) {
        const char *path = address + sizeof(unix_scheme) - 1;
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        if (path[0] == '\0' || strlen(path) >= sizeof(sun.sun_path)) {
            return fail("bad unix socket path in %s", address);
        }
        memcpy(sun.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            return fail("socket(AF_UNIX): %s", strerror(errno));
        }
        if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
            int saved = errno;
            close(fd);
            return fail("connect %s: %s", path, strerror(saved));
        }
        snprintf(authority, authority_size, "localhost");
    } else if (strncmp(address, tcp_scheme, sizeof(tcp_scheme) - 1) == 0) {
        const char *hostport = address + sizeof(tcp_scheme) - 1;
        char host[256];
        const char *colon = strrchr(hostport, ':');
        if (colon == NULL || colon == hostport || colon[1] == '\0' ||
            (size_t)(colon - hostport) >= sizeof(host)) {
            return fail("bad tcp address %s, want tcp://HOST:PORT", address);
        }
        memcpy(host, hostport, (size_t)(colon - hostport));
        host[colon - hostport] = '\0';
        const char *port = colon + 1;
        /* Accept [::1]:PORT. */
        char *h = host;
        size_t host_length = strlen(host);
        if (host_length >= 2 && host[0] == '[' && host[host_length - 1] == ']') {
            host[host_length - 1] = '\0';
            h = host + 1;
        }

        struct addrinfo hints;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        struct addrinfo *results = NULL;
        int rv = getaddrinfo(h, port, &hints, &results);
        if (rv != 0) {
            return fail("resolve %s: %s", hostport, gai_strerror(rv));
        }
        int saved = 0;
        for (struct addrinfo *ai = results; ai != NULL; ai = ai->ai_next) {
            fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                        ai->ai_protocol);
            if (fd < 0) {
                saved = errno;
                continue;
            }
            if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
                break;
            }
            saved = errno;
            close(fd);
            fd = -1;
        }
        freeaddrinfo(results);
        if (fd < 0) {
            return fail("connect %s: %s", hostport, strerror(saved));
        }
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
            int err = errno;
            close(fd);
            return fail("setsockopt(TCP_NODELAY): %s", strerror(err));
        }
        snprintf(authority, authority_size, "%s", hostport);
    } else {
        return fail("unsupported address %s, want unix:///PATH or "
                    "tcp://HOST:PORT", address);
    }

    struct timeval timeout = {.tv_sec = RECEIVE_TIMEOUT_SECONDS, .tv_usec = 0};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) !=
            0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout)) !=
            0) {
        int err = errno;
        close(fd);
        return fail("setsockopt(SO_RCVTIMEO/SO_SNDTIMEO): %s", strerror(err));
    }
    return fd;
}

/* Reports why nghttp2_session_recv/send failed. */
static int connection_failure(const struct connection *connection,
                              const char *what, int rv) {
    if (connection->timed_out) {
        return fail("%s: timed out after %d s", what, RECEIVE_TIMEOUT_SECONDS);
    }
    if (connection->eof) {
        return fail("%s: connection closed by the agent", what);
    }
    if (connection->io_errno != 0) {
        return fail("%s: %s", what, strerror(connection->io_errno));
    }
    return fail("%s: %s", what, nghttp2_strerror(rv));
}

/* Sends everything nghttp2 has queued. */
static int connection_flush(struct connection *connection, const char *what) {
    int rv = nghttp2_session_send(connection->session);
    if (rv != 0) {
        return connection_failure(connection, what, rv);
    }
    return 0;
}

/* One round of reading: waits for input, then processes all that arrived. */
static int connection_read(struct connection *connection, const char *what) {
    if (!nghttp2_session_want_read(connection->session)) {
        return fail("%s: the session does not want to read any more "
                    "(connection shut down)", what);
    }
    connection->read_blocking_done = 0;
    int rv = nghttp2_session_recv(connection->session);
    if (rv != 0) {
        return connection_failure(connection, what, rv);
    }
    return 0;
}

static int connection_open(struct connection *connection,
                           const char *address) {
    memset(connection, 0, sizeof(*connection));
    connection->fd = connect_address(address, connection->authority,
                                     sizeof(connection->authority));
    if (connection->fd < 0) {
        return -1;
    }

    nghttp2_session_callbacks *callbacks = NULL;
    if (nghttp2_session_callbacks_new(&callbacks) != 0) {
        close(connection->fd);
        return fail("nghttp2_session_callbacks_new failed");
    }
    nghttp2_session_callbacks_set_send_callback(callbacks, send_callback);
    nghttp2_session_callbacks_set_recv_callback(callbacks, recv_callback);
    nghttp2_session_callbacks_set_on_header_callback(callbacks,
                                                     on_header_callback);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        callbacks, on_data_chunk_recv_callback);
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        callbacks, on_frame_recv_callback);
    nghttp2_session_callbacks_set_on_stream_close_callback(
        callbacks, on_stream_close_callback);
    int rv = nghttp2_session_client_new(&connection->session, callbacks,
                                        connection);
    nghttp2_session_callbacks_del(callbacks);
    if (rv != 0) {
        close(connection->fd);
        return fail("nghttp2_session_client_new: %s", nghttp2_strerror(rv));
    }

    /* The client connection preface (magic) goes out with the first send,
       followed by this SETTINGS frame. */
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    rv = nghttp2_submit_settings(connection->session, NGHTTP2_FLAG_NONE,
                                 settings,
                                 sizeof(settings) / sizeof(settings[0]));
    if (rv != 0) {
        nghttp2_session_del(connection->session);
        close(connection->fd);
        return fail("nghttp2_submit_settings: %s", nghttp2_strerror(rv));
    }
    if (connection_flush(connection, "sending the connection preface") != 0) {
        nghttp2_session_del(connection->session);
        close(connection->fd);
        return -1;
    }
    return 0;
}

static void connection_close(struct connection *connection) {
    if (connection->session != NULL) {
        /* Say goodbye politely; failures here do not matter any more. */
        if (nghttp2_session_terminate_session(connection->session,
                                              NGHTTP2_NO_ERROR) == 0) {
            (void)nghttp2_session_send(connection->session);
        }
        nghttp2_session_del(connection->session);
        connection->session = NULL;
    }
    if (connection->fd >= 0) {
        close(connection->fd);
        connection->fd = -1;
    }
}

#define MAKE_NV(NAME, VALUE, VALUE_LENGTH)                                     \
    {                                                                          \
        (uint8_t *)(NAME), (uint8_t *)(VALUE), sizeof(NAME) - 1,               \
            (VALUE_LENGTH), NGHTTP2_NV_FLAG_NONE                               \
    }

/* Opens the stream for `call` and sends its headers and body. */
static int call_start(struct connection *connection, struct call *call) {
    char user_agent[64];
    snprintf(user_agent, sizeof(user_agent), "berth-interop-c nghttp2/%s",
             nghttp2_version(0)->version_str);
    nghttp2_nv headers[] = {
        MAKE_NV(":method", "POST", 4),
        MAKE_NV(":scheme", "http", 4),
        MAKE_NV(":path", call->path, strlen(call->path)),
        MAKE_NV(":authority", connection->authority,
                strlen(connection->authority)),
        MAKE_NV("content-type", "application/grpc", 16),
        MAKE_NV("te", "trailers", 8),
        MAKE_NV("user-agent", user_agent, strlen(user_agent)),
    };
    nghttp2_data_provider provider;
    provider.source.ptr = call;
    provider.read_callback = request_read_callback;

    int32_t stream_id = nghttp2_submit_request(
        connection->session, NULL, headers,
        sizeof(headers) / sizeof(headers[0]), &provider, call);
    if (stream_id < 0) {
        return fail("%s: nghttp2_submit_request: %s", call->path,
                    nghttp2_strerror(stream_id));
    }
    call->stream_id = stream_id;
    return connection_flush(connection, call->path);
}

/* Reads until the call's stream closes, or, if `wanted_messages` is not 0,
   until that many messages have arrived. */
static int call_wait(struct connection *connection, struct call *call,
                     size_t wanted_messages) {
    while (!call->closed && !call->failed &&
           (wanted_messages == 0 || call->message_count < wanted_messages)) {
        if (connection_read(connection, call->path) != 0) {
            return -1;
        }
        /* Send what reading produced: SETTINGS ACK, WINDOW_UPDATE, PING
           ACK. */
        if (connection_flush(connection, call->path) != 0) {
            return -1;
        }
    }
    if (call->failed) {
        return fail("%s: %s", call->path, call->failure);
    }
    return 0;
}

/* Runs `call` to completion and checks the HTTP/2 and gRPC envelope:
   a clean stream close, :status 200, application/grpc, no partial message
   and grpc-status `want_status`. */
static int call_run(struct connection *connection, struct call *call,
                    int want_status) {
    if (call_start(connection, call) != 0 || call_wait(connection, call, 0) != 0) {
        return -1;
    }
    if (call->close_error != NGHTTP2_NO_ERROR) {
        return fail("%s: stream reset with %s (%" PRIu32 ")", call->path,
                    nghttp2_http2_strerror(call->close_error),
                    call->close_error);
    }
    if (call->http_status != 200) {
        return fail("%s: HTTP :status %d, want 200", call->path,
                    call->http_status);
    }
    if (call->content_type == NULL ||
        strncmp(call->content_type, "application/grpc", 16) != 0) {
        return fail("%s: content-type %s, want application/grpc", call->path,
                    call->content_type ? call->content_type : "(none)");
    }
    if (call->pending.length != 0) {
        return fail("%s: %zu bytes of an incomplete message at end of stream",
                    call->path, call->pending.length);
    }
    if (call->grpc_status < 0) {
        return fail("%s: no grpc-status in the trailers", call->path);
    }
    if (call->grpc_status != want_status) {
        return fail("%s: grpc-status %d (%s), want %d", call->path,
                    call->grpc_status,
                    call->grpc_message ? call->grpc_message : "",
                    want_status);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The checks                                                               */
/* ------------------------------------------------------------------------ */

static const char VERSION_PATH[] = "/berth.agent.v1.Node/Version";
static const char WATCH_USAGE_PATH[] = "/berth.agent.v1.Node/WatchUsage";
static const char UNKNOWN_METHOD_PATH[] = "/berth.agent.v1.Volumes/NoSuchMethod";

/* Node/Version: one response message, grpc-status 0. */
static int check_version(struct connection *connection, const char *label) {
    Berth__Agent__V1__GetVersionRequest request =
        BERTH__AGENT__V1__GET_VERSION_REQUEST__INIT;
    struct call call;
    if (call_init(&call, VERSION_PATH, &request.base) != 0) {
        return -1;
    }
    int result = -1;
    Berth__Agent__V1__GetVersionResponse *response = NULL;
    if (call_run(connection, &call, GRPC_STATUS_OK) != 0) {
        goto out;
    }
    if (call.message_count != 1) {
        fail("%s: %zu response messages, want 1", VERSION_PATH,
             call.message_count);
        goto out;
    }
    response = berth__agent__v1__get_version_response__unpack(
        NULL, call.messages[0].length, call.messages[0].data);
    if (response == NULL) {
        fail("%s: cannot decode GetVersionResponse", VERSION_PATH);
        goto out;
    }
    const Berth__Agent__V1__VersionInfo *info = response->version;
    if (info == NULL || info->version == NULL || info->version[0] == '\0') {
        fail("%s: response has no version", VERSION_PATH);
        goto out;
    }
    if (info->api_version == NULL || info->api_version[0] == '\0') {
        fail("%s: response has no api_version", VERSION_PATH);
        goto out;
    }
    if (label == NULL) {
        printf("version=%s\n", info->version);
        printf("api_version=%s\n", info->api_version);
        printf("nghttp2_version=%s\n",
               info->nghttp2_version ? info->nghttp2_version : "");
        printf("client_nghttp2_version=%s\n", nghttp2_version(0)->version_str);
    } else {
        printf("%s version=%s\n", label, info->version);
    }
    result = 0;
out:
    if (response != NULL) {
        berth__agent__v1__get_version_response__free_unpacked(response, NULL);
    }
    call_free(&call);
    return result;
}

static int init_watch_usage(struct call *call, uint32_t interval_ms,
                            uint32_t count) {
    Berth__Agent__V1__WatchNodeUsageRequest request =
        BERTH__AGENT__V1__WATCH_NODE_USAGE_REQUEST__INIT;
    request.interval_ms = interval_ms;
    request.count = count;
    return call_init(call, WATCH_USAGE_PATH, &request.base);
}

/* Decodes message `index` of a WatchUsage call and checks its sequence. */
static int check_usage_message(const struct call *call, size_t index) {
    Berth__Agent__V1__WatchNodeUsageResponse *usage =
        berth__agent__v1__watch_node_usage_response__unpack(
            NULL, call->messages[index].length, call->messages[index].data);
    if (usage == NULL) {
        return fail("%s: cannot decode WatchNodeUsageResponse %zu",
                    WATCH_USAGE_PATH, index + 1);
    }
    int result = 0;
    printf("usage sequence=%" PRIu64 " memory_total_bytes=%" PRId64 "\n",
           usage->sequence, usage->memory_total_bytes);
    if (usage->sequence != (uint64_t)index + 1) {
        result = fail("%s: message %zu has sequence %" PRIu64 ", want %zu",
                      WATCH_USAGE_PATH, index + 1, usage->sequence, index + 1);
    } else if (usage->memory_total_bytes <= 0) {
        result = fail("%s: message %zu has memory_total_bytes %" PRId64,
                      WATCH_USAGE_PATH, index + 1, usage->memory_total_bytes);
    }
    berth__agent__v1__watch_node_usage_response__free_unpacked(usage, NULL);
    return result;
}

/* Node/WatchUsage with count=3: exactly three messages, sequence 1..3. */
static int check_watch_usage(struct connection *connection) {
    struct call call;
    if (init_watch_usage(&call, 100, 3) != 0) {
        return -1;
    }
    int result = -1;
    if (call_run(connection, &call, GRPC_STATUS_OK) != 0) {
        goto out;
    }
    for (size_t i = 0; i < call.message_count; i++) {
        if (check_usage_message(&call, i) != 0) {
            goto out;
        }
    }
    if (call.message_count != 3) {
        fail("%s: %zu messages, want 3", WATCH_USAGE_PATH, call.message_count);
        goto out;
    }
    result = 0;
out:
    call_free(&call);
    return result;
}

/* Node/WatchUsage with count=0 (endless): read one message, then cancel
   with RST_STREAM(CANCEL). */
static int check_cancel(struct connection *connection) {
    struct call call;
    if (init_watch_usage(&call, 100, 0) != 0) {
        return -1;
    }
    int result = -1;
    if (call_start(connection, &call) != 0 || call_wait(connection, &call, 1) != 0) {
        goto out;
    }
    if (call.closed) {
        fail("%s: endless stream ended by itself (grpc-status %d)",
             WATCH_USAGE_PATH, call.grpc_status);
        goto out;
    }
    if (call.http_status != 200) {
        fail("%s: HTTP :status %d, want 200", WATCH_USAGE_PATH,
             call.http_status);
        goto out;
    }
    if (check_usage_message(&call, 0) != 0) {
        goto out;
    }
    int rv = nghttp2_submit_rst_stream(connection->session, NGHTTP2_FLAG_NONE,
                                       call.stream_id, NGHTTP2_CANCEL);
    if (rv != 0) {
        fail("nghttp2_submit_rst_stream: %s", nghttp2_strerror(rv));
        goto out;
    }
    if (connection_flush(connection, "sending RST_STREAM") != 0) {
        goto out;
    }
    /* nghttp2 closes the stream once RST_STREAM is sent. */
    if (!call.closed || call.close_error != NGHTTP2_CANCEL) {
        fail("%s: stream not closed with CANCEL after RST_STREAM",
             WATCH_USAGE_PATH);
        goto out;
    }
    printf("cancelled after 1 message\n");
    result = 0;
out:
    call_free(&call);
    return result;
}

/* A method the agent does not have: grpc-status 12 (UNIMPLEMENTED).
   The body is an empty message: 00 00 00 00 00. */
static int check_unknown_method(struct connection *connection) {
    struct call call;
    if (call_init_empty(&call, UNKNOWN_METHOD_PATH) != 0) {
        return -1;
    }
    int result = -1;
    if (call_run(connection, &call, GRPC_STATUS_UNIMPLEMENTED) != 0) {
        goto out;
    }
    if (call.message_count != 0) {
        fail("%s: %zu response messages with UNIMPLEMENTED, want 0",
             UNKNOWN_METHOD_PATH, call.message_count);
        goto out;
    }
    printf("unknown_method status=%d message=%s\n", call.grpc_status,
           call.grpc_message ? call.grpc_message : "");
    result = 0;
out:
    call_free(&call);
    return result;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr,
                "usage: %s unix:///path/to/agent.sock | tcp://HOST:PORT\n",
                argc > 0 ? argv[0] : "berth-interop");
        return 2;
    }
    /* Make the output order match the order of the checks even when piped. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct connection connection;
    if (connection_open(&connection, argv[1]) != 0) {
        return 1;
    }
    int ok = check_version(&connection, NULL) == 0 &&
             check_watch_usage(&connection) == 0 &&
             check_cancel(&connection) == 0 &&
             check_version(&connection, "after_cancel") == 0 &&
             check_unknown_method(&connection) == 0;
    connection_close(&connection);
    if (!ok) {
        return 1;
    }
    printf("ok\n");
    return 0;
}
