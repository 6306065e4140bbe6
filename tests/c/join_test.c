/*
** join_test.c: the stream and dgram backends join the in-order TCP
** segments of one connection waiting in their receive buffer into one TSO
** frame, for a frontend that negotiated GUEST_CSUM and GUEST_TSO4/6, by
** GRO's rules. A raw peer writes segments built here, checksums and all;
** each frame received is checked field by field (the virtio-net header,
** the lengths, the partial checksum, which must complete to a right one)
** and cut back with netbe_frame_offload into exactly the segments sent.
** Segments that must not join come out as they went, behind a zero
** header: another connection, a gap in the sequence, a PSH, IPv4 options,
** TCP options that differ, a fragment, a VLAN tag, a short segment (which
** ends a frame), a wrong checksum, an IPv4 id out of step, padding, and
** a frontend that did not negotiate the feature.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "allow.h"
#include "be_bytes.h"
#include "check.h"
#include "inet_csum.h"
#include "netbe.h"

#define JOIN_CAPS (NETBE_F_GUEST_CSUM | NETBE_F_GUEST_TSO4 | NETBE_F_GUEST_TSO6)
#define HL 12

static struct event_base *base;
static char dir[64];

/* ---- Segments ---- */

/* One TCP segment of a test connection; the zero value of every field
** but SEQ and PAY is the usual segment. Its payload is the bytes of the
** connection's stream from SEQ on (stream_byte). */
struct seg {
    uint32_t seq;
    size_t pay;
    int v6;
    uint16_t sport;              /* 0: 40000 */
    uint8_t flags;               /* 0: ACK */
    int id;                      /* IPv4 id; -1 in segs_run's template: 100 on, counting up */
    int no_df;
    uint32_t tsval;              /* the timestamps option's value */
    int ipopt;                   /* 4 bytes of IPv4 options */
    int mf;                      /* IPv4 more fragments */
    int vlan;
    int pad;                     /* bytes of Ethernet padding after the packet */
    int bad_csum;
};

static uint8_t stream_byte(uint32_t at)
{
    return (uint8_t)(at * 7 + (at >> 8) + 3);
}

static const uint8_t v6_src[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
static const uint8_t v6_dst[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};

/* The sum of the pseudo header of the IP packet at IP for an L4LEN-byte
** TCP segment. */
static uint32_t pseudo(const uint8_t *ip, int v6, size_t l4len)
{
    uint8_t ph[8] = {0};
    uint32_t s = v6 ? sum16(ip + 8, 32, 0) : sum16(ip + 12, 8, 0);
    be_put32(ph, (uint32_t)l4len);
    ph[7] = 6;
    return sum16(ph, 8, s);
}

/* Build S into F; returns the frame's length. */
static size_t seg_build(uint8_t *f, const struct seg *s)
{
    size_t l3 = s->vlan ? 18 : 14, ihl = s->v6 ? 40 : 20 + (s->ipopt ? 4 : 0);
    size_t l4 = l3 + ihl, thl = 32, l4len = thl + s->pay, end = l4 + l4len;
    memcpy(f, "\x52\x54\x00\x12\x34\x56\x52\x54\x00\x65\x43\x21", 12);
    if (s->vlan) {
        be_put16(f + 12, 0x8100);
        be_put16(f + 14, 5);
    }
    be_put16(f + l3 - 2, s->v6 ? 0x86dd : 0x0800);
    uint8_t *ip = f + l3, *th = f + l4;
    memset(ip, 0, ihl);
    if (s->v6) {
        ip[0] = 0x60;
        be_put16(ip + 4, (unsigned)l4len);
        ip[6] = 6;
        ip[7] = 64;
        memcpy(ip + 8, v6_src, 16);
        memcpy(ip + 24, v6_dst, 16);
    } else {
        ip[0] = (uint8_t)(0x40 | ihl / 4);
        be_put16(ip + 2, (unsigned)(ihl + l4len));
        be_put16(ip + 4, (unsigned)s->id);
        ip[6] = (uint8_t)((s->no_df ? 0 : 0x40) | (s->mf ? 0x20 : 0));
        ip[8] = 64;
        ip[9] = 6;
        memcpy(ip + 12, "\x0a\x00\x00\x01\x0a\x00\x00\x02", 8);
        if (s->ipopt)
            memcpy(ip + 20, "\x01\x01\x01\x00", 4);
        be_put16(ip + 10, (uint16_t)~fold(sum16(ip, ihl, 0)));
    }
    be_put16(th, s->sport ? s->sport : 40000);
    be_put16(th + 2, 5201);
    be_put32(th + 4, s->seq);
    be_put32(th + 8, 777);
    th[12] = 8 << 4;
    th[13] = s->flags ? s->flags : 0x10;
    be_put16(th + 14, 512);
    th[16] = th[17] = th[18] = th[19] = 0;
    memcpy(th + 20, "\x01\x01\x08\x0a", 4);
    be_put32(th + 24, s->tsval);
    be_put32(th + 28, 99);
    for (size_t k = 0; k < s->pay; k++)
        f[l4 + thl + k] = stream_byte(s->seq + (uint32_t)k);
    be_put16(th + 16, (uint16_t)~fold(sum16(th, l4len, pseudo(ip, s->v6, l4len))));
    if (s->bad_csum)
        th[17] ^= 1;
    memset(f + end, 0, (size_t)s->pad);
    return end + (size_t)s->pad;
}

/* Segments of COUNT, the first at SEQ, each of MSS bytes but the last of
** LAST, into S, from the template T. */
static int segs_run(struct seg *s, const struct seg *t, int count, uint32_t seq, size_t mss,
                    size_t last)
{
    for (int i = 0; i < count; i++) {
        s[i] = *t;
        s[i].id = t->id < 0 ? 100 + i : t->id;
        s[i].seq = seq;
        s[i].pay = i == count - 1 ? last : mss;
        seq += (uint32_t)s[i].pay;
    }
    return count;
}

/* ---- The peers ---- */

static uint8_t out[NETBE_MAX_FRAME + 4 + 64];

/* Write segments S[0..N) to the stream peer FD, one record each. */
static void stream_write(int fd, const struct seg *s, int n)
{
    static uint8_t buf[1 << 20];
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t len = seg_build(buf + off + 4, &s[i]);
        be_put32(buf + off, (uint32_t)len);
        off += 4 + len;
    }
    CHECK(write(fd, buf, off) == (ssize_t)off, "write %zu bytes", off);
}

static void spin(void)
{
    struct timeval tv = {0, 5000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* The next frame into GOT (ROOM bytes), waiting up to 0.5 s. */
static ssize_t recv_frame(netbe *be, uint8_t *got, size_t room)
{
    struct iovec v = {got, room};
    for (int i = 0; i < 100; i++) {
        ssize_t n = netbe_recv(be, &v, 1);
        if (n != 0)
            return n;
        spin();
    }
    return 0;
}

/* ---- What came out ---- */

struct cut {
    const struct seg *s;         /* the segments the frame must cut into */
    int n, at;
    int bad;
};


static int cut_cb(const struct iovec *iov, int iovcnt, void *arg)
{
    struct cut *c = arg;
    static uint8_t want[NETBE_MAX_FRAME], got[NETBE_MAX_FRAME];
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(got + len, iov[i].iov_base, iov[i].iov_len);
        len += iov[i].iov_len;
    }
    if (c->at >= c->n) {
        c->bad = 1;
        printf("segment %d is one too many\n", c->at);
        return -1;
    }
    size_t wl = seg_build(want, &c->s[c->at]);
    /* Cut again, IPv4 ids count up from the first's (as Linux's GSO
    ** makes them); under DF the segments may have had one id. */
    if (!c->s->v6 && wl == len) {
        be_put16(want + 18, (unsigned)(c->s->id + c->at));
        be_put16(want + 24, 0);
        be_put16(want + 24, (uint16_t)~fold(sum16(want + 14, 20, 0)));
    }
    if (wl != len || memcmp(want, got, len) != 0) {
        size_t d = 0;
        while (d < len && d < wl && want[d] == got[d])
            d++;
        printf("segment %d: %zu bytes, want %zu; first difference at %zu\n", c->at, len, wl, d);
        c->bad = 1;
    }
    c->at++;
    return 0;
}

/* Frame GOT (N bytes with a 12-byte header) must be segments S[0..COUNT)
** joined: a TSO frame when COUNT > 1, else the one segment behind a zero
** header. */
static void check_frame(const uint8_t *got, ssize_t n, const struct seg *s, int count)
{
    static uint8_t f[NETBE_MAX_FRAME + HL];
    static const uint8_t zero[10];
    if (count == 1) {
        size_t len = seg_build(f, s);
        CHECK(n == (ssize_t)(HL + len), "a plain frame of %zu bytes: got %zd", len, n);
        CHECK(n >= HL && memcmp(got, zero, 10) == 0 && got[10] == 1 && got[11] == 0,
              "a plain frame comes behind a zero header (num_buffers 1)");
        CHECK(n == (ssize_t)(HL + len) && memcmp(got + HL, f, len) == 0,
              "the frame as it was sent");
        return;
    }
    size_t l4 = s->v6 ? 54 : 34, hdrs = l4 + 32, pay = 0;
    for (int i = 0; i < count; i++)
        pay += s[i].pay;
    CHECK(n == (ssize_t)(HL + hdrs + pay), "%d segments, %zu payload bytes, joined: got %zd",
          count, pay, n);
    if (n != (ssize_t)(HL + hdrs + pay))
        return;
    const uint8_t *h = got, *fr = got + HL, *ip = fr + 14;
    unsigned gso_size = h[4] | h[5] << 8, hdr_len = h[2] | h[3] << 8;
    unsigned cstart = h[6] | h[7] << 8, coff = h[8] | h[9] << 8;
    CHECK(h[0] == 1 && h[1] == (s->v6 ? 4 : 1), "NEEDS_CSUM and TSO%d: flags %u type %u",
          s->v6 ? 6 : 4, h[0], h[1]);
    CHECK(gso_size == s->pay && hdr_len == hdrs && cstart == l4 && coff == 16 &&
          h[10] == 1 && h[11] == 0, "gso_size %u (want %zu), hdr_len %u, csum %u+%u",
          gso_size, s->pay, hdr_len, cstart, coff);
    if (s->v6)
        CHECK(((size_t)ip[4] << 8 | ip[5]) == 32 + pay, "the IPv6 payload length");
    else
        CHECK(((size_t)ip[2] << 8 | ip[3]) == 20 + 32 + pay && fold(sum16(ip, 20, 0)) == 0xffff,
              "the IPv4 length and header checksum");
    for (size_t k = 0; k < pay; k++)
        if (fr[hdrs + k] != stream_byte(s->seq + (uint32_t)k)) {
            CHECK(0, "payload byte %zu", k);
            break;
        }
    /* The field holds the pseudo-header sum: summing from csum_start
    ** completes it, and the result checks against the pseudo header. */
    memcpy(f, fr, (size_t)n - HL);
    be_put16(f + l4 + 16, (uint16_t)~fold(sum16(f + l4, (size_t)n - HL - l4, 0)));
    CHECK(fold(sum16(f + l4, (size_t)n - HL - l4, pseudo(f + 14, s->v6, (size_t)n - HL - l4)))
          == 0xffff, "the partial checksum completes to a right one");
    struct cut c = {s, count, 0, 0};
    memcpy(f, got, (size_t)n);
    int cuts = netbe_frame_offload(f, (size_t)n, HL, cut_cb, &c);
    CHECK(cuts == count && !c.bad, "cut back into %d segments as sent: %d", count, cuts);
}

/* Receive frames until none comes; each must be the next run of S as
** RUNS says (run sizes, in order); then nothing more. */
static void expect(netbe *be, const struct seg *s, const int *runs, int nruns)
{
    for (int r = 0; r < nruns; s += runs[r++]) {
        ssize_t n = recv_frame(be, out, sizeof out);
        CHECK(n > 0, "frame %d of %d: %zd", r, nruns, n);
        if (n <= 0)
            return;
        check_frame(out, n, s, runs[r]);
    }
    struct iovec v = {out, sizeof out};
    CHECK(netbe_recv(be, &v, 1) == 0, "no frame more");
}

/* ---- Stream ---- */

struct conn {
    netbe *be;
    int peer, lfd;
    char path[108];
};

/* A stream client under FEATURES (header length 12), its raw server. */
static void stream_conn(struct conn *c, const char *name, uint64_t features)
{
    char err[NETBE_ERRMAX], spec[200];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(c->path, sizeof c->path, "%s/%s", dir, name);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", c->path);
    c->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(bind(c->lfd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(c->lfd, 1) == 0,
          "listen");
    snprintf(spec, sizeof spec, "stream,connect=unix:%s", c->path);
    CHECK(open_allowing(&c->be, spec, dir, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    c->peer = accept(c->lfd, NULL, NULL);
    struct timeval patience = {2, 0};        /* a frame that never comes fails, not hangs */
    setsockopt(c->peer, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
    CHECK(netbe_set_cap(c->be, features, HL) == 0, "set_cap 0x%llx",
          (unsigned long long)features);
}

static void conn_close(struct conn *c)
{
    netbe_close(c->be);
    close(c->peer);
    close(c->lfd);
    unlink(c->path);
}

/* Write S[0..N) in one piece and check the frames that come. */
static void stream_case(const char *what, uint64_t features, const struct seg *s, int n,
                        const int *runs, int nruns)
{
    struct conn c;
    int failed = check_failed;
    stream_conn(&c, "s.sock", features);
    stream_write(c.peer, s, n);
    expect(c.be, s, runs, nruns);
    conn_close(&c);
    if (check_failed > failed)
        printf("... in case: %s\n", what);
}

static const struct seg plain = {.id = -1};

/* In-order full segments, IPv4 and IPv6, join; the last may be short, and
** a PSH on it is kept. */
static void test_join(void)
{
    struct seg s[8], t = plain;
    segs_run(s, &t, 6, 1000, 1448, 1000);
    s[5].flags = 0x18;
    stream_case("IPv4, PSH last", JOIN_CAPS, s, 6, (int[]){6}, 1);
    t.v6 = 1;
    segs_run(s, &t, 4, 0xfffff000u, 1440, 1440);
    stream_case("IPv6, the sequence number wraps", JOIN_CAPS, s, 4, (int[]){4}, 1);
    t = plain;
    t.id = 7;
    segs_run(s, &t, 3, 1, 1448, 1448);
    stream_case("DF with a fixed IPv4 id", JOIN_CAPS, s, 3, (int[]){3}, 1);
    t = plain;
    t.no_df = 1;
    segs_run(s, &t, 3, 1, 1448, 1448);
    stream_case("no DF, the id counting up", JOIN_CAPS, s, 3, (int[]){3}, 1);
}

/* Each kind of segment that must not join the one before it. */
static void test_no_join(void)
{
    struct seg s[8], t = plain;
    segs_run(s, &t, 4, 1000, 1448, 1448);
    s[2].sport = 40001;
    stream_case("another connection", JOIN_CAPS, s, 4, (int[]){2, 1, 1}, 3);
    segs_run(s, &t, 4, 1000, 1448, 1448);
    s[2].seq += 1448;
    s[3].seq += 1448;
    stream_case("a gap in the sequence", JOIN_CAPS, s, 4, (int[]){2, 2}, 2);
    segs_run(s, &t, 4, 1000, 1448, 1448);
    s[2].seq -= 100;
    stream_case("an overlap", JOIN_CAPS, s, 4, (int[]){2, 1, 1}, 3);
    segs_run(s, &t, 4, 1000, 1448, 1448);
    s[1].flags = 0x18;
    stream_case("a PSH ends the frame", JOIN_CAPS, s, 4, (int[]){2, 2}, 2);
    segs_run(s, &t, 4, 1000, 1448, 1448);
    s[1].pay = 1000;
    s[2].seq = s[1].seq + 1000;
    s[3].seq = s[2].seq + 1448;
    stream_case("a short segment ends the frame", JOIN_CAPS, s, 4, (int[]){2, 2}, 2);
    segs_run(s, &t, 3, 1000, 1000, 1448);
    stream_case("no segment longer than the first", JOIN_CAPS, s, 3, (int[]){2, 1}, 2);
    segs_run(s, &t, 4, 1000, 1448, 1448);
    s[2].tsval = s[3].tsval = 5;
    stream_case("TCP options that differ", JOIN_CAPS, s, 4, (int[]){2, 2}, 2);
    segs_run(s, &t, 3, 1000, 1448, 1448);
    s[1].flags = 0x11;
    stream_case("a FIN", JOIN_CAPS, s, 3, (int[]){1, 1, 1}, 3);
    segs_run(s, &t, 3, 1000, 1448, 1448);
    s[0].flags = 0x90;
    stream_case("a CWR", JOIN_CAPS, s, 3, (int[]){1, 2}, 2);
    segs_run(s, &t, 3, 1000, 1448, 1448);
    s[1].ipopt = 1;
    stream_case("IPv4 options", JOIN_CAPS, s, 3, (int[]){1, 1, 1}, 3);
    segs_run(s, &t, 3, 1000, 1448, 1448);
    for (int i = 0; i < 3; i++)
        s[i].mf = 1;
    stream_case("fragments", JOIN_CAPS, s, 3, (int[]){1, 1, 1}, 3);
    for (int v6 = 0; v6 < 2; v6++) {
        t.v6 = v6;
        segs_run(s, &t, 3, 1000, 1448, 1448);
        for (int i = 0; i < 3; i++)
            s[i].vlan = 1;
        stream_case(v6 ? "VLAN tags, IPv6" : "VLAN tags, IPv4", JOIN_CAPS, s, 3,
                    (int[]){1, 1, 1}, 3);
    }
    t.v6 = 0;
    segs_run(s, &t, 3, 1000, 1448, 100);
    s[2].pad = 6;
    stream_case("bytes after the IP packet", JOIN_CAPS, s, 3, (int[]){2, 1}, 2);
    segs_run(s, &t, 4, 1000, 1448, 1448);
    s[2].bad_csum = 1;
    stream_case("a wrong TCP checksum", JOIN_CAPS, s, 4, (int[]){2, 1, 1}, 3);
    segs_run(s, &t, 3, 1000, 1448, 1448);
    s[0].bad_csum = 1;
    stream_case("a wrong checksum first", JOIN_CAPS, s, 3, (int[]){1, 2}, 2);
    t.no_df = 1;
    segs_run(s, &t, 3, 1000, 1448, 1448);
    s[2].id = s[1].id;
    stream_case("an IPv4 id out of step without DF", JOIN_CAPS, s, 3, (int[]){2, 1}, 2);
}

/* Without GUEST_CSUM and the TSO of the segments' kind, nothing joins
** and no header is made up. */
static void test_not_negotiated(void)
{
    struct seg s[4], t = plain;
    segs_run(s, &t, 3, 1000, 1448, 1448);
    stream_case("no offloads", 0, s, 3, (int[]){1, 1, 1}, 3);
    stream_case("GUEST_CSUM alone", NETBE_F_GUEST_CSUM, s, 3, (int[]){1, 1, 1}, 3);
    stream_case("TSO4 without GUEST_CSUM", NETBE_F_GUEST_TSO4, s, 3, (int[]){1, 1, 1}, 3);
    stream_case("IPv4 with TSO6 only", NETBE_F_GUEST_CSUM | NETBE_F_GUEST_TSO6, s, 3,
                (int[]){1, 1, 1}, 3);
    t.v6 = 1;
    segs_run(s, &t, 3, 1000, 1448, 1448);
    stream_case("IPv6 with TSO4 only", NETBE_F_GUEST_CSUM | NETBE_F_GUEST_TSO4, s, 3,
                (int[]){1, 1, 1}, 3);
}

/* A frame stops at 64 KiB of IP packet: 60 segments of 1456 bytes make
** 44 (64,116 bytes; 45 would make 65,572, which a receive buffer of the
** largest frame still holds), then 16. And at NB_SEG_MAX (1024)
** segments: 1100 of 40 bytes make 1024, then 76. */
static void test_bounds(void)
{
    static struct seg s[1100];
    struct seg t = plain;
    segs_run(s, &t, 60, 1, 1456, 1456);
    stream_case("64 KiB", JOIN_CAPS, s, 60, (int[]){44, 16}, 2);
    t.id = 9;
    segs_run(s, &t, 1100, 1, 40, 40);
    stream_case("1024 segments", JOIN_CAPS, s, 1100, (int[]){1024, 76}, 2);
}

/* A frame the receive buffer has no room for whole is not made: as much
** joins as fits, and the rest comes next. */
static void test_room(void)
{
    struct conn c;
    struct seg s[6], t = plain;
    segs_run(s, &t, 6, 1000, 1448, 1448);
    stream_conn(&c, "room.sock", JOIN_CAPS);
    stream_write(c.peer, s, 6);
    size_t room = HL + 66 + 3 * 1448 + 100;
    ssize_t n = recv_frame(c.be, out, room);
    check_frame(out, n, s, 3);
    n = recv_frame(c.be, out, sizeof out);
    check_frame(out, n, s + 3, 3);
    struct netbe_stats st;
    netbe_get_stats(c.be, &st);
    CHECK(st.rx_frames == 2 && st.rx_bytes == 2 * (HL + 66 + 3 * 1448u) && st.rx_drops == 0,
          "a joined frame counts once, with its bytes: %llu frames %llu bytes",
          (unsigned long long)st.rx_frames, (unsigned long long)st.rx_bytes);
    conn_close(&c);
}

/* Records that arrive in pieces join once whole; what waits behind an
** incomplete record comes with the next read. */
static void test_partial(void)
{
    struct conn c;
    struct seg s[4], t = plain;
    static uint8_t buf[4 * 1600];
    segs_run(s, &t, 4, 1000, 1448, 1448);
    stream_conn(&c, "part.sock", JOIN_CAPS);
    size_t off = 0;
    for (int i = 0; i < 4; i++) {
        size_t len = seg_build(buf + off + 4, &s[i]);
        be_put32(buf + off, (uint32_t)len);
        off += 4 + len;
    }
    size_t cut = 2 * (4 + 1514) + 700;
    CHECK(write(c.peer, buf, cut) == (ssize_t)cut, "write");
    check_frame(out, recv_frame(c.be, out, sizeof out), s, 2);
    CHECK(write(c.peer, buf + cut, off - cut) == (ssize_t)(off - cut), "write");
    check_frame(out, recv_frame(c.be, out, sizeof out), s + 2, 2);
    conn_close(&c);
}

/* Our sends through a stream with a header negotiated: the peer sees
** plain records; a TSO frame goes as segments. */
static void test_send_with_header(void)
{
    struct conn c;
    struct seg s[3], t = plain;
    static uint8_t f[HL + NETBE_MAX_FRAME], rec[8192];
    segs_run(s, &t, 3, 1000, 1448, 1448);
    stream_conn(&c, "send.sock", JOIN_CAPS | NETBE_F_CSUM | NETBE_F_HOST_TSO4);
    memset(f, 0, HL);
    size_t len = seg_build(f + HL, &s[0]);
    struct iovec v = {f, HL + len};
    CHECK(netbe_send(c.be, &v, 1) == (ssize_t)(HL + len), "a plain frame with a header");
    ssize_t n = recv(c.peer, rec, 4 + len, MSG_WAITALL);
    CHECK(n == (ssize_t)(4 + len) && memcmp(rec + 4, f + HL, len) == 0 &&
          rec[2] == (uint8_t)(len >> 8) && rec[3] == (uint8_t)len, "the peer's record");
    /* Joined here by the stream's own receive: send it back out as TSO. */
    stream_write(c.peer, s, 3);
    ssize_t j = recv_frame(c.be, f, sizeof f);
    check_frame(f, j, s, 3);
    v.iov_len = (size_t)j;
    CHECK(netbe_send(c.be, &v, 1) == j, "a TSO frame");
    for (int i = 0; i < 3; i++) {
        len = seg_build(out, &s[i]);
        n = recv(c.peer, rec, 4 + len, MSG_WAITALL);
        CHECK(n == (ssize_t)(4 + len) && memcmp(rec + 4, out, len) == 0,
              "segment %d as the peer sent it", i);
    }
    conn_close(&c);
}

/* ---- Wires ---- */

/* A wire between two streams: what one receives the other sends as the
** same records, and no segment is joined on one side only to be cut
** again in software on the other. */
static void test_wire_streams(void)
{
    char err[NETBE_ERRMAX];
    struct conn a, b;
    struct seg s[6], t = plain;
    static uint8_t rec[8192];
    netbe_wire *w = NULL;
    stream_conn(&a, "wa.sock", 0);
    stream_conn(&b, "wb.sock", 0);
    CHECK(netbe_wire_new(&w, a.be, b.be, err, sizeof err) == 0, "%s", err);
    CHECK(!(netbe_get_features(a.be) & (NETBE_F_GUEST_TSO4 | NETBE_F_GUEST_TSO6)) &&
          !(netbe_get_features(b.be) & (NETBE_F_GUEST_TSO4 | NETBE_F_GUEST_TSO6)),
          "no join between sockets: features 0x%llx and 0x%llx",
          (unsigned long long)netbe_get_features(a.be),
          (unsigned long long)netbe_get_features(b.be));
    segs_run(s, &t, 6, 1000, 1448, 1448);
    stream_write(a.peer, s, 6);
    for (int i = 0; i < 20; i++)
        spin();
    for (int i = 0; i < 6; i++) {
        size_t len = seg_build(out, &s[i]);
        ssize_t n = recv(b.peer, rec, 4 + len, MSG_WAITALL);
        CHECK(n == (ssize_t)(4 + len) && memcmp(rec + 4, out, len) == 0,
              "segment %d as the other peer sent it", i);
    }
    struct netbe_stats sa, sb;
    netbe_get_stats(a.be, &sa);
    netbe_get_stats(b.be, &sb);
    CHECK(sa.rx_frames == 6 && sb.tx_sw_frames == 0,
          "%llu frames received, %llu cut in software (want 6, 0)",
          (unsigned long long)sa.rx_frames, (unsigned long long)sb.tx_sw_frames);
    netbe_wire_free(w);
    conn_close(&a);
    conn_close(&b);
}

/* ---- dgram ---- */

/* Datagrams read in one batch join as records do. */
static void test_dgram(void)
{
    char pl[108], pr[108], spec[300], err[NETBE_ERRMAX];
    struct sockaddr_un sa = {.sun_family = AF_UNIX}, to = {.sun_family = AF_UNIX};
    netbe *be = NULL;
    struct seg s[6], t = plain;
    static uint8_t f[2048];
    snprintf(pl, sizeof pl, "%s/d.sock", dir);
    snprintf(pr, sizeof pr, "%s/d-peer.sock", dir);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", pr);
    snprintf(to.sun_path, sizeof to.sun_path, "%s", pl);
    int raw = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(bind(raw, (struct sockaddr *)&sa, sizeof sa) == 0, "bind");
    snprintf(spec, sizeof spec, "dgram,local=unix:%s,remote=unix:%s", pl, pr);
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_set_cap(be, JOIN_CAPS, HL) == 0, "set_cap");
    /* Linux queues at most 10 datagrams for a UNIX receiver. */
    segs_run(s, &t, 6, 1000, 1448, 1448);
    s[4].sport = 1;
    for (int i = 0; i < 6; i++) {
        size_t len = seg_build(f, &s[i]);
        CHECK(sendto(raw, f, len, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)len,
              "datagram %d", i);
    }
    expect(be, s, (int[]){4, 1, 1}, 3);
    struct netbe_stats st;
    netbe_get_stats(be, &st);
    CHECK(st.rx_frames == 3, "rx_frames %llu", (unsigned long long)st.rx_frames);
    netbe_close(be);
    close(raw);
}

int main(void)
{
    base = event_base_new();
    snprintf(dir, sizeof dir, "/tmp/netbe-join-%d", (int)getpid());
    if (mkdir(dir, 0700) < 0)
        return 1;
    RUN(test_join());
    RUN(test_no_join());
    RUN(test_not_negotiated());
    RUN(test_bounds());
    RUN(test_room());
    RUN(test_partial());
    RUN(test_send_with_header());
    RUN(test_dgram());
    RUN(test_wire_streams());
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("could not remove %s\n", dir);
    event_base_free(base);
    return check_summary();
}
