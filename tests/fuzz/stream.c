/*
** stream.c: the stream backend (QEMU's and passt's 4-byte length, then the
** frame) fed fuzzed bytes by a real connected UNIX socket peer. netbe
** either connects to the harness or listens for it, under fuzzed features
** and header lengths. The input writes records, raw bytes and raw length
** words in pieces cut at fuzzed points, interleaved with receives into
** fuzzed buffers, peeks, discards, loop runs and the peer's close.
** What must hold, against an independent reading of the byte stream:
**   - frames come out in order, each exactly the record's bytes behind a
**     zero header (num_buffers 1 at length 12), truncated with -EMSGSIZE
**     when the buffer is too small; empty records are no frames;
**   - a length over NETBE_MAX_FRAME ends the connection, nothing after it
**     comes out;
**   - once every byte is written, receiving until 0 has delivered every
**     complete record: nothing waits behind an empty record or anything.
** Sockets live in a directory of the harness's own under $TMPDIR or /tmp.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "fuzz.h"
#include "tests/c/allow.h"

static struct event_base *base;
static char dir[80], peer_path[108], netbe_path[108];
static int peer_listen_fd = -1;
static uint8_t rbuf[NETBE_MAX_FRAME + 64];

/* Everything the peer wrote, and the records an independent reader finds. */
#define LOG_MAX (4u << 20)
#define MAX_RECORDS 4096

struct ref {
    uint8_t *log;
    size_t written, queued;      /* bytes sent so far, bytes meant to be sent */
    size_t parsed;               /* bytes of LOG the reader has gone through */
    size_t off[MAX_RECORDS], len[MAX_RECORDS];
    int n, next;                 /* records found, the next one to come out */
    int out_of_step;             /* a length no frame has: nothing more counts */
};

static struct ref ref;

/* Find the complete records in what was queued. */
static void ref_parse(void)
{
    while (!ref.out_of_step && ref.queued - ref.parsed >= 4 && ref.n < MAX_RECORDS) {
        const uint8_t *p = ref.log + ref.parsed;
        size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (len > NETBE_MAX_FRAME) {
            ref.out_of_step = 1;
            return;
        }
        if (ref.queued - ref.parsed - 4 < len)
            return;
        if (len > 0) {
            ref.off[ref.n] = ref.parsed + 4;
            ref.len[ref.n++] = len;
        }
        ref.parsed += 4 + len;
    }
}

struct ctx {
    netbe *be;
    int fd;                      /* the peer's socket, -1 once closed */
    int shut;                    /* the peer closed its side */
    unsigned hl;
};

/* Write what is queued, as far as the socket takes it. */
static void flush(struct ctx *c)
{
    while (c->fd >= 0 && ref.written < ref.queued) {
        ssize_t n = send(c->fd, ref.log + ref.written, ref.queued - ref.written,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN) {
                /* netbe hung up (a length out of step): nothing more goes. */
                ref.queued = ref.written;
                close(c->fd);
                c->fd = -1;
            }
            return;
        }
        ref.written += (size_t)n;
    }
}

static void queue(struct ctx *c, const void *p, size_t n)
{
    if (c->shut || n > LOG_MAX - ref.queued)
        return;
    memcpy(ref.log + ref.queued, p, n);
    ref.queued += n;
    ref_parse();
    flush(c);
}

/* A record: length word, then bytes from the input padded with zeros. */
static void op_record(struct ctx *c, struct fz *in)
{
    static uint8_t body[4 + (1 << 17)];
    size_t len = fz_frame(in, body + 4, sizeof body - 4);
    body[0] = (uint8_t)(len >> 24);
    body[1] = (uint8_t)(len >> 16);
    body[2] = (uint8_t)(len >> 8);
    body[3] = (uint8_t)len;
    /* Cut the write where the input says, so a record arrives in pieces. */
    size_t cut = fz_u16(in) % (len + 5);
    queue(c, body, cut);
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    queue(c, body + cut, len + 4 - cut);
}

static void op_bytes(struct ctx *c, struct fz *in)
{
    const uint8_t *p;
    size_t n = fz_take(in, fz_u8(in), &p);
    queue(c, p, n);
}

/* What netbe_recv returned (R bytes into ROOM) against the next record. */
static void check_frame(struct ctx *c, ssize_t r, size_t room)
{
    if (r == 0)
        return;
    if (r == -ENOTCONN) {
        FZ_ASSERT(c->shut || ref.out_of_step || c->fd < 0, "netbe says the peer is gone");
        return;
    }
    FZ_ASSERT(r > 0 || r == -EMSGSIZE, "receive returned %zd", r);
    FZ_ASSERT(ref.next < ref.n, "a frame came out (%zd) where the stream holds none", r);
    size_t len = ref.len[ref.next], want = c->hl + len;
    const uint8_t *rec = ref.log + ref.off[ref.next];
    ref.next++;
    if (r == -EMSGSIZE) {
        FZ_ASSERT(want > room, "-EMSGSIZE for %zu bytes into %zu", want, room);
        return;
    }
    FZ_ASSERT((size_t)r == want, "a %zd-byte frame, the record has %zu", r, len);
    static const uint8_t zero[10];
    FZ_ASSERT(c->hl == 0 || memcmp(rbuf, zero, 10) == 0, "the header is not zero");
    FZ_ASSERT(c->hl != 12 || (rbuf[10] == 1 && rbuf[11] == 0), "num_buffers is not 1");
    FZ_ASSERT(memcmp(rbuf + c->hl, rec, len) == 0, "the frame differs from record %d",
              ref.next - 1);
}

static void op_recv(struct ctx *c, struct fz *in)
{
    struct iovec iov[8];
    size_t room = fz_u8(in) & 1 ? sizeof rbuf : fz_len(in) % sizeof rbuf;
    int cnt = fz_split(in, rbuf, room, iov, 8);
    /* The pieces are consecutive in rbuf: the frame reads as one. */
    ssize_t r = netbe_recv(c->be, iov, cnt);
    check_frame(c, r, room);
}

static void op_peek(struct ctx *c, int discard)
{
    ssize_t r = discard ? netbe_rx_discard(c->be) : netbe_peek_recvlen(c->be);
    if (r <= 0) {
        FZ_ASSERT(r == 0 || r == -ENOTCONN, "peek returned %zd", r);
        return;
    }
    FZ_ASSERT(ref.next < ref.n && (size_t)r == c->hl + ref.len[ref.next],
              "peek says %zd, the next record has %zu", r,
              ref.next < ref.n ? ref.len[ref.next] : 0);
    ref.next += discard;
}

static void op_close(struct ctx *c)
{
    if (c->fd >= 0 && !c->shut && ref.written == ref.queued) {
        shutdown(c->fd, SHUT_WR);
        c->shut = 1;
    }
}

/* Write the rest and receive until nothing comes: every record is out. */
static void finish(struct ctx *c)
{
    for (int i = 0; i < 10000 && ref.written < ref.queued && c->fd >= 0; i++) {
        struct iovec v = {rbuf, sizeof rbuf};
        flush(c);
        check_frame(c, netbe_recv(c->be, &v, 1), sizeof rbuf);
    }
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    for (;;) {
        struct iovec v = {rbuf, sizeof rbuf};
        ssize_t r = netbe_recv(c->be, &v, 1);
        if (r == 0 || r == -ENOTCONN)
            break;
        check_frame(c, r, sizeof rbuf);
    }
    FZ_ASSERT(ref.written < ref.queued || ref.next == ref.n,
              "%d of %d complete records came out; receive said none waits",
              ref.next, ref.n);
}

static int peer_connect(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", netbe_path);
    FZ_ASSERT(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0,
              "connect to netbe: %s", strerror(errno));
    return fd;
}

static void setup_once(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    base = event_base_new();
    ref.log = malloc(LOG_MAX);
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/netbe-fuzz-stream-XXXXXX", tmp ? tmp : "/tmp");
    FZ_ASSERT(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    snprintf(peer_path, sizeof peer_path, "%s/peer", dir);
    snprintf(netbe_path, sizeof netbe_path, "%s/netbe", dir);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", peer_path);
    peer_listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FZ_ASSERT(bind(peer_listen_fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
              listen(peer_listen_fd, 4) == 0, "listen: %s", strerror(errno));
}

static void cleanup(void)
{
    unlink(peer_path);
    unlink(netbe_path);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[NETBE_ERRMAX], spec[200];
    struct fz in = {data, size};
    struct ctx c = {.fd = -1};
    if (!base) {
        setup_once();
        atexit(cleanup);
    }
    ref.written = ref.queued = ref.parsed = 0;
    ref.n = ref.next = ref.out_of_step = 0;
    int listen_mode = fz_u8(&in) & 1;
    snprintf(spec, sizeof spec, "stream,%s=unix:%s", listen_mode ? "listen" : "connect",
             listen_mode ? netbe_path : peer_path);
    FZ_ASSERT(open_allowing(&c.be, spec, dir, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    if (listen_mode) {
        c.fd = peer_connect();
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    } else {
        c.fd = accept4(peer_listen_fd, NULL, NULL, SOCK_CLOEXEC);
        FZ_ASSERT(c.fd >= 0, "accept: %s", strerror(errno));
    }
    fcntl(c.fd, F_SETFL, O_NONBLOCK);
    unsigned hl = fz_hdr_len(&in);
    if (fz_set_cap(c.be, fz_features(&in, netbe_get_cap(c.be)), hl) == 0)
        c.hl = hl;
    for (int ops = 0; in.n && ops < 64; ops++) {
        uint32_t word;
        switch (fz_u8(&in) % 9) {
        case 0: case 1: op_record(&c, &in); break;
        case 2: op_bytes(&c, &in); break;
        case 3:
            word = fz_u32(&in);
            queue(&c, &word, 4);
            break;
        case 4: case 5: op_recv(&c, &in); break;
        case 6: event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK); break;
        case 7: op_peek(&c, fz_u8(&in) & 1); break;
        case 8: op_close(&c); break;
        }
    }
    finish(&c);
    netbe_close(c.be);
    if (c.fd >= 0)
        close(c.fd);
    return 0;
}
