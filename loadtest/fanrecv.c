/*
 * fanrecv: N WebSocket receivers in one room (or several each), counting frames at millions
 * per second.
 *
 * usage: fanrecv [-k K] [-z] [-s FIRST] [-c CONC] HOST PORT PATH ROOM_ID COUNT
 *   stdin:  ceil(COUNT / K) tokens, one per line (connection i uses token i / K), each
 *           optionally followed by a space and the comma-separated rooms its connections
 *           join instead of ROOM_ID;
 *           then commands: "tick" -> one line {"frames":F,"bytes":B,"closed":C}; "quit".
 *   stdout: "ready" once every connection has seen a room_joined for each of its rooms.
 *   -z      offer permessage-deflate (inflated only until room_joined is seen)
 *   -s N    bind connection i to 127.0.0.(10 + (N + i) / 500), like loadtest.accounts
 *   -c N    connections being set up at once (default 200)
 *
 * After the join, reads of 256 KiB are walked header by header: payloads are skipped,
 * frames split across reads carry over, PINGs are answered. No dependencies beyond libc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE (256 * 1024)
#define MAX_SETUP_MESSAGE (16 * 1024 * 1024)
#define PER_ADDRESS 500
#define MAX_EVENTS 256
#define USAGE "usage: fanrecv [-k K] [-z] [-s FIRST] [-c CONC] HOST PORT PATH ROOM COUNT"

enum state { IDLE, CONNECTING, HANDSHAKE, JOINING, JOINED, DEAD };

typedef struct {
    uint8_t *data;
    size_t len, cap;
} buf_t;

typedef struct {
    int fd;
    enum state state;
    int index;
    uint8_t head[14]; /* a frame header cut by the end of a read */
    int head_len;
    uint64_t remaining; /* payload bytes of the current frame still to come */
    uint8_t op;         /* first byte of the current frame */
    int collect;        /* keep the payload: control frames, and data frames until joined */
    int message_rsv1;   /* the message being reassembled is compressed */
    buf_t payload;      /* the current frame's payload (when collecting) */
    buf_t message;      /* setup: the message being reassembled */
    buf_t inflated;     /* setup: everything inflated so far (the deflate window) */
    buf_t out;          /* bytes not yet written */
    int deflate;
    int joins_pending; /* room_joined events still to come */
} conn_t;

static const char *host, *port_text, *path, *room;
static int count, per_token = 1, compression, first_index = -1, concurrency = 200;
static char **tokens;
static char **token_rooms; /* per token: its rooms, comma-separated (NULL: ROOM_ID) */
static conn_t *conns;
static int epfd, started, joined, closed;
static unsigned long long frames, total_bytes;
static struct sockaddr_storage server;
static socklen_t server_len;

static void die(const char *what) {
    fprintf(stderr, "fanrecv: %s\n", what);
    exit(2);
}

static void fail(conn_t *c, const char *why) {
    fprintf(stderr, "fanrecv: connection %d: %s\n", c->index, why);
    exit(2);
}

static void append(buf_t *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n) cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data) die("out of memory");
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void release(buf_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* --- inflate (RFC 1951), after zlib's puff.c: only used for the few setup messages ----- */

typedef struct {
    const uint8_t *in;
    size_t len, pos;
    uint32_t bitbuf;
    int bitcnt;
    buf_t *out;
    jmp_buf fail;
} inflate_t;

typedef struct {
    short count[16];
    short symbol[288];
} huffman_t;

static int bits(inflate_t *s, int need) {
    uint64_t val = s->bitbuf;
    while (s->bitcnt < need) {
        if (s->pos == s->len) longjmp(s->fail, 1);
        val |= (uint64_t)s->in[s->pos++] << s->bitcnt;
        s->bitcnt += 8;
    }
    s->bitbuf = (uint32_t)(val >> need);
    s->bitcnt -= need;
    return (int)(val & ((1u << need) - 1));
}

static void construct(huffman_t *h, const short *length, int n) {
    short offs[16];
    memset(h->count, 0, sizeof h->count);
    for (int symbol = 0; symbol < n; symbol++) h->count[length[symbol]]++;
    offs[1] = 0;
    for (int len = 1; len < 15; len++) offs[len + 1] = offs[len] + h->count[len];
    for (int symbol = 0; symbol < n; symbol++)
        if (length[symbol]) h->symbol[offs[length[symbol]]++] = symbol;
}

static int decode(inflate_t *s, const huffman_t *h) {
    int code = 0, first = 0, index = 0;
    for (int len = 1; len < 16; len++) {
        code |= bits(s, 1);
        int n = h->count[len];
        if (code - n < first) return h->symbol[index + (code - first)];
        index += n;
        first = (first + n) << 1;
        code <<= 1;
    }
    longjmp(s->fail, 2);
}

static void codes(inflate_t *s, const huffman_t *lencode, const huffman_t *distcode) {
    static const short lbase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                    31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const short lext[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                   2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const short dbase[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                    33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                    1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    static const short dext[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                   6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    buf_t *out = s->out;
    for (;;) {
        int symbol = decode(s, lencode);
        if (symbol < 256) {
            uint8_t byte = (uint8_t)symbol;
            append(out, &byte, 1);
        } else if (symbol == 256) {
            return;
        } else {
            symbol -= 257;
            if (symbol >= 29) longjmp(s->fail, 3);
            size_t len = lbase[symbol] + bits(s, lext[symbol]);
            symbol = decode(s, distcode);
            if (symbol >= 30) longjmp(s->fail, 3);
            size_t dist = dbase[symbol] + bits(s, dext[symbol]);
            if (dist > out->len) longjmp(s->fail, 4);
            for (size_t i = 0; i < len; i++) {
                uint8_t byte = out->data[out->len - dist];
                append(out, &byte, 1);
            }
        }
    }
}

static void dynamic(inflate_t *s) {
    static const short order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    short lengths[320] = {0};
    huffman_t lencode, distcode;
    int nlen = bits(s, 5) + 257, ndist = bits(s, 5) + 1, ncode = bits(s, 4) + 4;
    if (nlen > 286 || ndist > 30) longjmp(s->fail, 5);
    for (int i = 0; i < ncode; i++) lengths[order[i]] = (short)bits(s, 3);
    construct(&lencode, lengths, 19);
    memset(lengths, 0, sizeof lengths);
    int index = 0;
    while (index < nlen + ndist) {
        int symbol = decode(s, &lencode), repeat;
        short len = 0;
        if (symbol < 16) {
            lengths[index++] = (short)symbol;
            continue;
        }
        if (symbol == 16) {
            if (index == 0) longjmp(s->fail, 5);
            len = lengths[index - 1];
            repeat = 3 + bits(s, 2);
        } else if (symbol == 17) {
            repeat = 3 + bits(s, 3);
        } else {
            repeat = 11 + bits(s, 7);
        }
        if (index + repeat > nlen + ndist) longjmp(s->fail, 5);
        while (repeat--) lengths[index++] = len;
    }
    construct(&lencode, lengths, nlen);
    construct(&distcode, lengths + nlen, ndist);
    codes(s, &lencode, &distcode);
}

static void fixed(inflate_t *s) {
    static huffman_t lencode, distcode;
    static int built;
    if (!built) {
        short lengths[288];
        int i = 0;
        for (; i < 144; i++) lengths[i] = 8;
        for (; i < 256; i++) lengths[i] = 9;
        for (; i < 280; i++) lengths[i] = 7;
        for (; i < 288; i++) lengths[i] = 8;
        construct(&lencode, lengths, 288);
        for (i = 0; i < 30; i++) lengths[i] = 5;
        construct(&distcode, lengths, 30);
        built = 1;
    }
    codes(s, &lencode, &distcode);
}

/* Inflate one permessage-deflate message (tail already appended) onto c->inflated. */
static int inflate_message(conn_t *c, const uint8_t *in, size_t len) {
    static inflate_t s; /* static: its fields stay valid after longjmp */
    s.in = in;
    s.len = len;
    s.pos = 0;
    s.bitbuf = 0;
    s.bitcnt = 0;
    s.out = &c->inflated;
    if (setjmp(s.fail)) return s.pos == s.len ? 0 : -1; /* input ends after the sync flush */
    for (;;) {
        int last = bits(&s, 1), type = bits(&s, 2);
        if (type == 0) {
            s.bitbuf = 0;
            s.bitcnt = 0;
            if (s.pos + 4 > s.len) return -1;
            size_t n = s.in[s.pos] | s.in[s.pos + 1] << 8;
            s.pos += 4;
            if (s.pos + n > s.len) return -1;
            append(s.out, s.in + s.pos, n);
            s.pos += n;
        } else if (type == 1) {
            fixed(&s);
        } else if (type == 2) {
            dynamic(&s);
        } else {
            return -1;
        }
        if (last) return 0;
    }
}

/* --- connections --------------------------------------------------------------------- */

static void watch(conn_t *c, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void flush(conn_t *c) {
    size_t done = 0;
    while (done < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + done, c->out.len - done, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) break;
            if (c->state == JOINED) return; /* the read side will see the close */
            fail(c, strerror(errno));
        }
        done += (size_t)n;
    }
    memmove(c->out.data, c->out.data + done, c->out.len - done);
    c->out.len -= done;
    watch(c, EPOLL_CTL_MOD, EPOLLIN | (c->out.len ? EPOLLOUT : 0));
}

static void send_frame(conn_t *c, int opcode, const uint8_t *payload, size_t n) {
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    uint8_t head[14];
    size_t h = 2;
    head[0] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        head[1] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        head[1] = 0x80 | 126;
        head[2] = (uint8_t)(n >> 8);
        head[3] = (uint8_t)n;
        h = 4;
    } else {
        head[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) head[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        h = 10;
    }
    memcpy(head + h, key, 4);
    append(&c->out, head, h + 4);
    for (size_t i = 0; i < n; i++) {
        uint8_t byte = payload[i] ^ key[i & 3];
        append(&c->out, &byte, 1);
    }
}

static void send_text(conn_t *c, const char *text) {
    send_frame(c, 0x1, (const uint8_t *)text, strlen(text));
}

static void start(conn_t *c) {
    c->fd = socket(server.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket (raise ulimit -n?)");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (first_index >= 0 && server.ss_family == AF_INET) {
        struct sockaddr_in local = {.sin_family = AF_INET};
        char address[32];
        snprintf(address, sizeof address, "127.0.0.%d", 10 + (first_index + c->index) / PER_ADDRESS);
        inet_pton(AF_INET, address, &local.sin_addr);
        if (bind(c->fd, (struct sockaddr *)&local, sizeof local) < 0) fail(c, "bind");
    }
    if (connect(c->fd, (struct sockaddr *)&server, server_len) < 0 && errno != EINPROGRESS)
        fail(c, strerror(errno));
    c->state = CONNECTING;
    char request[1024];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     path, host, port_text,
                     compression ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                   "client_max_window_bits\r\n"
                                 : "");
    append(&c->out, request, (size_t)n);
    watch(c, EPOLL_CTL_ADD, EPOLLIN | EPOLLOUT);
    started++;
}

static int contains(const uint8_t *data, size_t len, const char *needle) {
    return memmem(data, len, needle, strlen(needle)) != NULL;
}

static void on_joined(conn_t *c) {
    c->state = JOINED;
    release(&c->message);
    release(&c->inflated);
    if (++joined == count) {
        printf("ready\n");
        fflush(stdout);
    }
    if (started < count) start(&conns[started]);
}

/* A complete setup message: look for room_joined (or an error). */
static void setup_message(conn_t *c) {
    const uint8_t *text = c->message.data;
    size_t len = c->message.len;
    if (c->message_rsv1) {
        if (!c->deflate) fail(c, "compressed frame without permessage-deflate");
        static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
        append(&c->message, tail, 4);
        size_t before = c->inflated.len;
        if (inflate_message(c, c->message.data, c->message.len) < 0) fail(c, "bad deflate data");
        text = c->inflated.data + before;
        len = c->inflated.len - before;
    }
    if (contains(text, len, "\"type\":\"room_joined\"")) {
        if (--c->joins_pending == 0) {
            on_joined(c);
            return;
        }
    }
    if (contains(text, len, "\"type\":\"error\"")) {
        fprintf(stderr, "fanrecv: connection %d: %.*s\n", c->index, (int)(len < 300 ? len : 300),
                (const char *)text);
        exit(2);
    }
    c->message.len = 0;
}

static void frame_done(conn_t *c) {
    int opcode = c->op & 0x0F;
    if (opcode >= 8) {
        if (opcode == 0x9) {
            send_frame(c, 0xA, c->payload.data, c->payload.len);
            flush(c);
        } else if (opcode == 0x8) {
            if (c->state != JOINED) fail(c, "closed by the server during setup");
            c->state = DEAD;
            closed++;
            close(c->fd);
        }
    } else {
        if (c->op & 0x80) frames++;
        if (c->state == JOINING) {
            if (opcode != 0) c->message_rsv1 = (c->op & 0x40) != 0;
            append(&c->message, c->payload.data, c->payload.len);
            if (c->message.len > MAX_SETUP_MESSAGE) fail(c, "setup message too large");
            if (c->op & 0x80) setup_message(c);
        }
    }
    c->payload.len = 0;
}

/* Walk the frames in buf[0..len): the hot path once joined. */
static void walk(conn_t *c, const uint8_t *buf, size_t len) {
    size_t pos = 0;
    while (pos < len && c->state != DEAD) {
        if (c->remaining) {
            size_t take = len - pos < c->remaining ? len - pos : (size_t)c->remaining;
            if (c->collect) append(&c->payload, buf + pos, take);
            pos += take;
            c->remaining -= take;
            if (!c->remaining) frame_done(c);
            continue;
        }
        const uint8_t *h = buf + pos;
        size_t avail = len - pos;
        if (c->head_len) {
            /* complete the carried header from this read */
            size_t take = avail < (size_t)(14 - c->head_len) ? avail : (size_t)(14 - c->head_len);
            memcpy(c->head + c->head_len, h, take);
            h = c->head;
            avail = (size_t)c->head_len + take;
        }
        if (avail < 2) goto cut;
        uint64_t n = h[1] & 0x7F;
        size_t size = 2 + ((h[1] & 0x80) ? 4 : 0);
        if (n == 126) {
            size += 2;
            if (avail < size) goto cut;
            n = (uint64_t)h[2] << 8 | h[3];
        } else if (n == 127) {
            size += 8;
            if (avail < size) goto cut;
            n = 0;
            for (int i = 0; i < 8; i++) n = n << 8 | h[2 + i];
        } else if (avail < size) {
            goto cut;
        }
        c->op = h[0];
        pos += size - (size_t)c->head_len; /* header bytes taken from this read */
        c->head_len = 0;
        c->collect = (c->op & 0x0F) >= 8 || c->state == JOINING;
        if (c->collect && n > MAX_SETUP_MESSAGE) fail(c, "frame too large during setup");
        if (!c->collect && pos + n <= len) {
            /* the common case: the whole frame is in this read */
            if ((c->op & 0x80)) frames++;
            pos += n;
            continue;
        }
        c->remaining = n;
        if (!n) frame_done(c);
        continue;
    cut:
        if (!c->head_len) {
            memcpy(c->head, h, avail);
        }
        c->head_len = (int)avail;
        return;
    }
}

static void handshake(conn_t *c, const uint8_t *buf, size_t len) {
    append(&c->message, buf, len);
    uint8_t *end = memmem(c->message.data, c->message.len, "\r\n\r\n", 4);
    if (!end) {
        if (c->message.len > 16384) fail(c, "response head too large");
        return;
    }
    size_t head = (size_t)(end - c->message.data) + 4;
    if (c->message.len < 12 || memcmp(c->message.data, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "fanrecv: upgrade refused: %.*s\n", (int)(head < 200 ? head : 200),
                (char *)c->message.data);
        exit(2);
    }
    c->deflate = contains(c->message.data, head, "permessage-deflate");
    size_t rest = c->message.len - head;
    uint8_t *copy = malloc(rest ? rest : 1);
    memcpy(copy, c->message.data + head, rest);
    c->message.len = 0;
    c->state = JOINING;
    char text[4096];
    snprintf(text, sizeof text, "{\"type\":\"authenticate\",\"token\":\"%s\"}",
             tokens[c->index / per_token]);
    send_text(c, text);
    const char *rooms = token_rooms[c->index / per_token];
    if (rooms == NULL) rooms = room;
    c->joins_pending = 0;
    for (const char *at = rooms; *at;) {
        size_t n = strcspn(at, ",");
        snprintf(text, sizeof text, "{\"type\":\"join_room\",\"roomId\":\"%.*s\"}", (int)n, at);
        send_text(c, text);
        c->joins_pending++;
        at += n;
        if (*at == ',') at++;
    }
    flush(c);
    walk(c, copy, rest);
    free(copy);
}

static void readable(conn_t *c) {
    static uint8_t buf[READ_SIZE];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EAGAIN) return;
            if (c->state != JOINED) fail(c, strerror(errno));
            n = 0;
        }
        if (n == 0) {
            if (c->state != JOINED) fail(c, "connection closed during setup");
            c->state = DEAD;
            closed++;
            close(c->fd);
            return;
        }
        total_bytes += (size_t)n;
        if (c->state == HANDSHAKE)
            handshake(c, buf, (size_t)n);
        else
            walk(c, buf, (size_t)n);
        if (c->state == DEAD || (size_t)n < sizeof buf) return;
    }
}

/* --- stdin --------------------------------------------------------------------------- */

static char pending[65536], line[8192];
static size_t have;

/* One read() of fd 0 into `pending`; 0 at EOF. */
static int fill(void) {
    if (have == sizeof pending) die("stdin line too long");
    ssize_t n = read(0, pending + have, sizeof pending - have);
    if (n <= 0) return 0;
    have += (size_t)n;
    return 1;
}

/* The next complete line already read, or NULL. */
static char *take_line(void) {
    char *nl = memchr(pending, '\n', have);
    if (!nl) return NULL;
    size_t len = (size_t)(nl - pending);
    if (len >= sizeof line) die("stdin line too long");
    memcpy(line, pending, len);
    line[len] = 0;
    have -= len + 1;
    memmove(pending, nl + 1, have);
    return line;
}

/* Read stdin and run every complete command; 0 on "quit" or EOF. */
static int commands(void) {
    int open = fill();
    char *cmd;
    while ((cmd = take_line()) != NULL) {
        if (!strcmp(cmd, "tick")) {
            printf("{\"frames\":%llu,\"bytes\":%llu,\"closed\":%d,\"joined\":%d}\n", frames,
                   total_bytes, closed, joined);
            fflush(stdout);
        } else if (!strcmp(cmd, "quit")) {
            return 0;
        } else if (cmd[0]) {
            die("unknown command");
        }
    }
    return open;
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "k:zs:c:")) != -1) {
        if (opt == 'k') per_token = atoi(optarg);
        else if (opt == 'z') compression = 1;
        else if (opt == 's') first_index = atoi(optarg);
        else if (opt == 'c') concurrency = atoi(optarg);
        else die(USAGE);
    }
    if (argc - optind != 5 || per_token < 1 || concurrency < 1)
        die(USAGE);
    host = argv[optind];
    port_text = argv[optind + 1];
    path = argv[optind + 2];
    room = argv[optind + 3];
    count = atoi(argv[optind + 4]);
    if (count < 1) die("COUNT must be positive");

    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *found;
    if (getaddrinfo(host, port_text, &hints, &found) != 0) die("cannot resolve host");
    memcpy(&server, found->ai_addr, found->ai_addrlen);
    server_len = found->ai_addrlen;
    freeaddrinfo(found);

    int ntokens = (count + per_token - 1) / per_token;
    tokens = calloc((size_t)ntokens, sizeof *tokens);
    token_rooms = calloc((size_t)ntokens, sizeof *token_rooms);
    for (int i = 0; i < ntokens; i++) {
        char *token;
        while ((token = take_line()) == NULL)
            if (!fill()) die("not enough tokens on stdin");
        char *rooms = strchr(token, ' ');
        if (rooms != NULL) {
            *rooms++ = '\0';
            token_rooms[i] = strdup(rooms);
        }
        tokens[i] = strdup(token);
    }
    conns = calloc((size_t)count, sizeof *conns);
    for (int i = 0; i < count; i++) conns[i].index = i;

    epfd = epoll_create1(0);
    struct epoll_event in = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &in);
    for (int i = 0; i < count && i < concurrency; i++) start(&conns[i]);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (!c) {
                if (!commands()) return 0;
                continue;
            }
            if (c->state == DEAD) continue;
            if (c->state == CONNECTING && (events[i].events & (EPOLLOUT | EPOLLERR))) {
                int error = 0;
                socklen_t size = sizeof error;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &size);
                if (error) fail(c, strerror(error));
                c->state = HANDSHAKE;
            }
            if (events[i].events & EPOLLOUT) flush(c);
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readable(c);
        }
    }
}
