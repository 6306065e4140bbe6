/*
** stream.c: the stream backend (QEMU's and passt's 4-byte length, then the
** frame) fed fuzzed bytes by a real connected UNIX socket peer. netbe
** either connects to the harness or listens for it, under fuzzed features
** and header lengths. The input writes records, raw bytes, raw length
** words and TCP segments the harness builds (checksums right unless the
** input says, in order on a few connections unless it says), in pieces
** cut at fuzzed points, interleaved with receives into fuzzed buffers,
** peeks, discards, loop runs and the peer's close.
** What must hold, against an independent reading of the byte stream:
**   - frames come out in order, each exactly the record's bytes behind a
**     zero header (num_buffers 1 at length 12), truncated with -EMSGSIZE
**     when the buffer is too small; empty records are no frames;
**   - or, for a frontend that negotiated GUEST_CSUM and the TSO of their
**     kind, several records joined into one TSO frame, which
**     netbe_frame_offload cuts back into exactly those records but for
**     the IPv4 ids and checksums made anew; each record joined had right
**     checksums and its IPv4 id counting up from the first's (or, under
**     DF, equal to it);
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
#include "tests/c/inet_csum.h"
#include "tests/c/be_bytes.h"

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
    uint64_t features;
    int peeked;                  /* records the frame read ahead by a peek holds */
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

/* The connections op_tcp writes segments of: the next sequence number
** and IPv4 id, and the segment size, chosen at the first segment. */
static struct flow {
    uint32_t seq;
    uint16_t id;
    uint16_t mss;
} flows[4];

/* The pseudo-header sum of the IP packet at IP for L4LEN bytes of TCP. */
static uint32_t pseudo_sum(const uint8_t *ip, int v6, size_t l4len)
{
    uint8_t ph[8] = {0};
    be_put32(ph, (uint32_t)l4len);
    ph[7] = 6;
    return sum16(ph, 8, v6 ? sum16(ip + 8, 32, 0) : sum16(ip + 12, 8, 0));
}

/* A TCP segment of one of four connections, as a record. The input
** chooses: the connection, IPv6, PSH, flags of its own, a jump in the
** sequence, an id of its own, a wrong checksum; TCP options (none,
** timestamps, or up to 40 bytes of its own), no DF, IPv4 options, a
** fragment, a VLAN tag, padding, and the length (the connection's
** segment size, or one of its own). */
static void op_tcp(struct ctx *c, struct fz *in)
{
    static uint8_t body[4 + 18 + 40 + 60 + 4096 + 8];
    unsigned a = fz_u8(in), b = fz_u8(in);
    struct flow *w = &flows[a & 3];
    int v6 = a >> 2 & 1, vlan = b >> 5 & 1;
    if (!w->mss)
        w->mss = (uint16_t)(1 + fz_u16(in) % 2048);
    size_t optlen = (b & 3) == 0 ? 0 : (b & 3) == 1 ? 12 : 4 * (fz_u8(in) % 11);
    size_t ihl = v6 ? 40 : b & 8 ? 24 : 20, l3 = vlan ? 18 : 14, l4 = l3 + ihl;
    size_t pay = b & 0x80 ? fz_u16(in) % 4096 : w->mss, l4len = 20 + optlen + pay;
    size_t pad = b & 0x40 ? fz_u8(in) % 8 : 0, len = l4 + l4len + pad;
    uint8_t *f = body + 4, *ip = f + l3, *th = f + l4;
    if (a & 0x20)
        w->seq += fz_u16(in) - 0x8000u;
    if (a & 0x40)
        w->id = (uint16_t)fz_u16(in);
    memset(f, 0, len);
    memcpy(f, "\x52\x54\x00\x12\x34\x56\x52\x54\x00\x65\x43\x21", 12);
    if (vlan)
        be_put16(f + 12, 0x8100);
    be_put16(f + l3 - 2, v6 ? 0x86dd : 0x0800);
    if (v6) {
        ip[0] = 0x60;
        be_put16(ip + 4, (unsigned)l4len);
        ip[6] = 6;
        ip[7] = 64;
        ip[8] = ip[24] = 0xfd;
        ip[39] = 2;
    } else {
        ip[0] = (uint8_t)(0x40 | ihl / 4);
        be_put16(ip + 2, (unsigned)(ihl + l4len));
        be_put16(ip + 4, w->id);
        ip[6] = (uint8_t)((b & 4 ? 0 : 0x40) | (b & 0x10 ? 0x20 : 0));
        ip[8] = 64;
        ip[9] = 6;
        memcpy(ip + 12, "\x0a\x00\x00\x01\x0a\x00\x00\x02", 8);
        be_put16(ip + 10, (uint16_t)~fold(sum16(ip, ihl, 0)));
    }
    be_put16(th, 40000 + (a & 3));
    be_put16(th + 2, 5201);
    be_put32(th + 4, w->seq);
    be_put32(th + 8, 1);
    th[12] = (uint8_t)((20 + optlen) / 4 << 4);
    th[13] = (uint8_t)(a & 0x10 ? fz_u8(in) : a & 8 ? 0x18 : 0x10);
    be_put16(th + 14, 512);
    if (optlen == 12) {
        memcpy(th + 20, "\x01\x01\x08\x0a\x00\x00\x00\x07\x00\x00\x00\x09", 12);
    } else {
        const uint8_t *o;
        size_t got = fz_take(in, optlen, &o);
        memcpy(th + 20, o, got);
    }
    for (size_t k = 0; k < pay; k++)
        th[20 + optlen + k] = (uint8_t)((w->seq + k) * 7 + 3);
    be_put16(th + 16, (uint16_t)~fold(sum16(th, l4len, pseudo_sum(ip, v6, l4len))));
    if (a & 0x80)
        th[17] ^= 1;
    w->seq += (uint32_t)pay;
    w->id++;
    be_put32(body, (uint32_t)len);
    size_t cut = fz_u16(in) % (len + 5);
    queue(c, body, cut);
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    queue(c, body + cut, len + 4 - cut);
}

/* Where record REC (LEN bytes) has its TCP header and payload, when it is
** TCP in untagged Ethernet: *V6, *L4, *HDRS. Returns 0 when not. */
static int rec_tcp(const uint8_t *rec, size_t len, int *v6, size_t *l4, size_t *hdrs)
{
    if (len < 14 + 20 + 20)
        return 0;
    *v6 = rec[12] == 0x86 && rec[13] == 0xdd;
    if (!*v6 && !(rec[12] == 0x08 && rec[13] == 0x00))
        return 0;
    *l4 = *v6 ? 54 : 14 + (rec[14] & 15u) * 4;
    if (*l4 + 20 > len)
        return 0;
    *hdrs = *l4 + (rec[*l4 + 12] >> 4) * 4u;
    return *hdrs <= len;
}

/* A joined frame cut back (netbe_frame_offload), segment by segment,
** against the records from ref.next on. */
struct cut {
    int n;                       /* segments so far */
    uint16_t id0;                /* the first record's IPv4 id */
};

/* True when TCP segment F (LEN bytes, TCP at L4) has right checksums. */
static int csum_ok(const uint8_t *f, size_t len, int v6, size_t l4)
{
    return fold(sum16(f + l4, len - l4, pseudo_sum(f + 14, v6, len - l4))) == 0xffff &&
           (v6 || fold(sum16(f + 14, 20, 0)) == 0xffff);
}

static int cut_cb(const struct iovec *iov, int iovcnt, void *arg)
{
    static uint8_t seg[NETBE_MAX_FRAME];
    struct cut *k = arg;
    size_t len = 0, l4, hdrs;
    int v6, i = ref.next + k->n;
    for (int j = 0; j < iovcnt; j++) {
        FZ_ASSERT(len + iov[j].iov_len <= sizeof seg, "a segment past the largest frame");
        memcpy(seg + len, iov[j].iov_base, iov[j].iov_len);
        len += iov[j].iov_len;
    }
    FZ_ASSERT(i < ref.n, "a joined frame holds more than the %d records left",
              ref.n - ref.next);
    const uint8_t *rec = ref.log + ref.off[i];
    FZ_ASSERT(ref.len[i] == len && rec_tcp(rec, len, &v6, &l4, &hdrs) && l4 == (v6 ? 54u : 34u),
              "record %d (%zu bytes) joined, but is not plain TCP or cuts back to %zu bytes",
              i, ref.len[i], len);
    FZ_ASSERT(csum_ok(rec, len, v6, l4), "record %d joined with a wrong checksum", i);
    FZ_ASSERT(csum_ok(seg, len, v6, l4), "segment %d cut back has a wrong checksum", k->n);
    if (!v6) {
        uint16_t id = (uint16_t)(rec[18] << 8 | rec[19]);
        if (k->n == 0)
            k->id0 = id;
        FZ_ASSERT(id == (uint16_t)(k->id0 + k->n) || (rec[20] & 0x40 && id == k->id0),
                  "record %d joined with IPv4 id %u after %u", i, id, k->id0);
    }
    /* Equal but for the IPv4 id and header checksum, and the TCP checksum. */
    FZ_ASSERT(memcmp(seg, rec, v6 ? l4 + 16 : 18) == 0 &&
              (v6 || (memcmp(seg + 20, rec + 20, 4) == 0 &&
                      memcmp(seg + 26, rec + 26, l4 + 16 - 26) == 0)) &&
              memcmp(seg + l4 + 18, rec + l4 + 18, len - l4 - 18) == 0,
              "segment %d differs from record %d", k->n, i);
    k->n++;
    return 0;
}

/* R bytes in rbuf came with a GSO header, PEEKED records said by a peek
** before: the records the frame cuts back into come off the reference. */
static void check_joined(struct ctx *c, ssize_t r, int peeked)
{
    static uint8_t copy[sizeof rbuf];
    uint64_t tso = rbuf[1] == 4 ? NETBE_F_GUEST_TSO6 : NETBE_F_GUEST_TSO4;
    FZ_ASSERT(rbuf[0] == 1 && (rbuf[1] == 1 || rbuf[1] == 4),
              "a frame with flags %u and GSO type %u", rbuf[0], rbuf[1]);
    FZ_ASSERT(c->features & tso && c->features & NETBE_F_GUEST_CSUM,
              "a TSO frame for a frontend that did not negotiate it (0x%llx)",
              (unsigned long long)c->features);
    FZ_ASSERT(c->hl != 12 || (rbuf[10] == 1 && rbuf[11] == 0), "num_buffers is not 1");
    memcpy(copy, rbuf, (size_t)r);
    struct cut k = {0, 0};
    int n = netbe_frame_offload(copy, (size_t)r, c->hl, cut_cb, &k);
    FZ_ASSERT(n >= 2 && n == k.n, "a joined frame cut back into %d segments", n);
    FZ_ASSERT(!peeked || peeked == n, "peek said %d records, the frame holds %d", peeked, n);
    ref.next += n;
}

/* The records from ref.next a frame of R bytes (header included) may
** hold: 1 when it is the next record alone, K when it is K joined (each
** record's payload behind the first one's headers), else 0. */
static int ref_span(struct ctx *c, size_t r)
{
    size_t l4, hdrs;
    int v6;
    if (ref.next >= ref.n)
        return 0;
    size_t want = c->hl + ref.len[ref.next];
    if (r == want)
        return 1;
    if (!rec_tcp(ref.log + ref.off[ref.next], ref.len[ref.next], &v6, &l4, &hdrs))
        return 0;
    for (int k = 1; ref.next + k < ref.n && want < r; k++) {
        if (ref.len[ref.next + k] <= hdrs)
            return 0;
        want += ref.len[ref.next + k] - hdrs;
        if (want == r)
            return k + 1;
    }
    return 0;
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
    int peeked = c->peeked;
    c->peeked = 0;
    if (r > 0 && c->hl && rbuf[1]) {
        check_joined(c, r, peeked);
        return;
    }
    size_t len = ref.len[ref.next], want = c->hl + len;
    const uint8_t *rec = ref.log + ref.off[ref.next];
    if (r == -EMSGSIZE) {
        /* A joined frame is made only where it fits, unless a peek made it. */
        ref.next += peeked ? peeked : 1;
        FZ_ASSERT(peeked > 1 || want > room, "-EMSGSIZE for %zu bytes into %zu", want, room);
        return;
    }
    FZ_ASSERT(peeked <= 1, "peek said %d records joined, a plain frame came", peeked);
    ref.next++;
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
    int span = c->peeked ? c->peeked : ref_span(c, (size_t)r);
    FZ_ASSERT(span > 0, "peek says %zd, the next record has %zu", r,
              ref.next < ref.n ? ref.len[ref.next] : 0);
    FZ_ASSERT(span == 1 || (c->features & NETBE_F_GUEST_CSUM && c->hl),
              "peek says %zd: %d records joined without offloads", r, span);
    if (discard) {
        ref.next += span;
        c->peeked = 0;
    } else {
        c->peeked = span;
    }
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
    memset(flows, 0, sizeof flows);
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
    uint64_t features = fz_features(&in, netbe_get_cap(c.be));
    if (fz_set_cap(c.be, features, hl) == 0) {
        c.hl = hl;
        c.features = features;
    }
    for (int ops = 0; in.n && ops < 64; ops++) {
        uint32_t word;
        switch (fz_u8(&in) % 10) {
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
        case 9: op_tcp(&c, &in); break;
        }
    }
    finish(&c);
    netbe_close(c.be);
    if (c.fd >= 0)
        close(c.fd);
    return 0;
}
