/*
** bounds_test.c: every length a guest or a peer controls is held to
** NETBE_MAX_FRAME plus the header. A 200 KB frame with a checksum header
** is refused before the software offload copies it; a longer datagram from
** a peer is skipped for the next frame; a frame too big for the caller's
** buffer strands none behind it; mtu= drops giants where netbe enforces
** it; mergeable buffers never wrap num_buffers. Runs under ASan and UBSan,
** so an overflow is a failure here.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "allow.h"
#include "check.h"
#include "netbe.h"

#define HL 12
#define BIG (200 * 1024)

static struct event_base *base;
static char dir[64];

/* An Ethernet frame of LEN bytes behind HDR bytes of zero header, with a
** byte pattern from SEED. */
static void frame(uint8_t *buf, size_t hdr, size_t len, uint8_t seed)
{
    memset(buf, 0, hdr);
    uint8_t *f = buf + hdr;
    memset(f, 0xff, 6);
    memset(f + 6, 0x02, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    for (size_t i = 14; i < len; i++)
        f[i] = (uint8_t)(seed + i);
}

/* NEEDS_CSUM over a TCP checksum field at 34 + 16: a header that passes
** netbe_frame_check for any frame of 52 bytes or more. */
static void needs_csum(uint8_t *buf)
{
    buf[0] = 1;
    buf[6] = 34;
    buf[8] = 16;
}

static struct netbe_stats stats(netbe *be)
{
    struct netbe_stats st;
    netbe_get_stats(be, &st);
    return st;
}

static void spin(void)
{
    struct timeval tv = {0, 20000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static netbe *open_be(const char *spec)
{
    char err[NETBE_ERRMAX];
    netbe *be = NULL;
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == 0, "%s: %s",
          spec, err);
    return be;
}

/* netbe_send refuses a frame over the bound with -EMSGSIZE, counted,
** before the software checksum (null and pair have no offloads) copies
** it; the longest frame allowed still goes through whole. */
static void test_send_bound(void)
{
    static uint8_t buf[BIG], rx[BIG];
    const char *specs[] = {"null", "pair,name=bound"};
    netbe *peer = open_be("pair,name=bound");
    for (int i = 0; i < 2; i++) {
        netbe *be = open_be(specs[i]);
        if (!be)
            continue;
        CHECK(netbe_set_cap(be, NETBE_F_CSUM, HL) == 0, "%s: set_cap", specs[i]);
        frame(buf, HL, BIG - HL, 1);
        needs_csum(buf);
        struct iovec v[2] = {{buf, 100}, {buf + 100, BIG - 100}};
        CHECK(netbe_send(be, v, 2) == -EMSGSIZE, "%s: a 200 KB frame was not refused",
              specs[i]);
        v[1].iov_len = NETBE_MAX_FRAME + HL + 1 - 100;
        CHECK(netbe_send(be, v, 2) == -EMSGSIZE, "%s: one byte over the bound taken",
              specs[i]);
        struct netbe_stats st = stats(be);
        CHECK(st.tx_drops == 2 && st.tx_frames == 0 && st.tx_sw_frames == 0,
              "%s: drops %llu frames %llu sw %llu", specs[i],
              (unsigned long long)st.tx_drops, (unsigned long long)st.tx_frames,
              (unsigned long long)st.tx_sw_frames);
        v[1].iov_len = NETBE_MAX_FRAME + HL - 100;
        CHECK(netbe_send(be, v, 2) == NETBE_MAX_FRAME + HL, "%s: the longest frame refused",
              specs[i]);
        if (i == 1) {
            struct iovec r = {rx, sizeof rx};
            CHECK(netbe_recv(peer, &r, 1) == NETBE_MAX_FRAME, "the longest frame did not "
                  "arrive whole");
        }
        netbe_close(be);
    }
    /* Without a header the bound is NETBE_MAX_FRAME itself. */
    netbe *be = open_be("null");
    struct iovec v = {buf, NETBE_MAX_FRAME + 1};
    CHECK(netbe_send(be, &v, 1) == -EMSGSIZE, "headerless: one byte over taken");
    v.iov_len = NETBE_MAX_FRAME;
    CHECK(netbe_send(be, &v, 1) == NETBE_MAX_FRAME, "headerless: longest frame refused");
    netbe_close(be);
    netbe_close(peer);
}

/* A UNIX datagram socket bound at DIR/NAME. */
static int dgram_at(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, name);
    unlink(sa.sun_path);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    int big = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int dgram_send(int fd, const char *name, const void *buf, size_t len)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, name);
    return sendto(fd, buf, len, 0, (struct sockaddr *)&sa, sizeof sa) == (ssize_t)len;
}

/* A datagram longer than any frame is skipped, counted, and the call
** returns the frame behind it, even into a buffer that could hold it. */
static void test_recv_skip(void)
{
    static uint8_t buf[BIG], rx[BIG + HL];
    char spec[200];
    int peer = dgram_at("peer");
    CHECK(peer >= 0, "cannot bind the peer socket");
    snprintf(spec, sizeof spec, "dgram,local=unix:%s/be,remote=unix:%s/peer", dir, dir);
    netbe *be = open_be(spec);
    if (!be || peer < 0)
        return;
    for (int hl = 0; hl <= HL; hl += HL) {
        CHECK(netbe_set_cap(be, 0, (unsigned)hl) == 0, "set_cap %d", hl);
        frame(buf, 0, BIG, 2);
        CHECK(dgram_send(peer, "be", buf, 100000), "send 100000");
        CHECK(dgram_send(peer, "be", buf, NETBE_MAX_FRAME + 1), "send MAX + 1");
        frame(buf, 0, 60, 3);
        CHECK(dgram_send(peer, "be", buf, 60), "send 60");
        frame(buf, 0, NETBE_MAX_FRAME, 4);
        CHECK(dgram_send(peer, "be", buf, NETBE_MAX_FRAME), "send MAX");
        struct iovec r = {rx, sizeof rx};
        ssize_t n = netbe_recv(be, &r, 1);
        CHECK(n == 60 + hl && rx[hl + 14] == (uint8_t)(3 + 14), "header %d: got %zd bytes, "
              "expected the 60-byte frame behind two oversize ones", hl, n);
        n = netbe_recv(be, &r, 1);
        CHECK(n == NETBE_MAX_FRAME + hl && rx[hl + 100] == (uint8_t)(4 + 100),
              "header %d: the longest frame came as %zd bytes", hl, n);
        CHECK(netbe_recv(be, &r, 1) == 0, "nothing else waits");
    }
    struct netbe_stats st = stats(be);
    CHECK(st.rx_drops == 4 && st.rx_frames == 4, "rx drops %llu frames %llu",
          (unsigned long long)st.rx_drops, (unsigned long long)st.rx_frames);
    netbe_close(be);
    close(peer);
}

/* What the README's receive loop gets, with a 1514-byte buffer. */
struct small_rx {
    int frames, too_big, calls;
    size_t last;
};

static void on_small(netbe *be, int events, void *arg)
{
    struct small_rx *s = arg;
    uint8_t f[1514];
    struct iovec v = {f, sizeof f};
    ssize_t n;
    s->calls++;
    while ((n = netbe_recv(be, &v, 1)) > 0) {
        s->frames++;
        s->last = (size_t)n;
    }
    s->too_big += n == -EMSGSIZE;
}

/* A stream peer writes a 3000-byte frame and a 60-byte one at once. The
** loop stops at -EMSGSIZE; the 60-byte frame waits in netbe's buffer with
** no new readiness to announce it, so netbe must call back. */
static void test_small_buffer_progress(void)
{
    char spec[200], path[100];
    struct small_rx s = {0};
    snprintf(path, sizeof path, "%s/stream", dir);
    snprintf(spec, sizeof spec, "stream,listen=unix:%s", path);
    char err[NETBE_ERRMAX];
    netbe *be = NULL;
    CHECK(open_allowing(&be, spec, dir, base, on_small, &s, err, sizeof err) == 0, "%s", err);
    if (!be)
        return;
    netbe_rx_enable(be);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect");
    spin();
    static uint8_t out[4 + 3000 + 4 + 60];
    out[2] = 3000 >> 8;
    out[3] = 3000 & 0xff;
    frame(out + 4, 0, 3000, 5);
    out[3004 + 3] = 60;
    frame(out + 3008, 0, 60, 6);
    CHECK(send(fd, out, sizeof out, 0) == (ssize_t)sizeof out, "send");
    for (int i = 0; i < 20 && s.frames == 0; i++)
        spin();
    CHECK(s.too_big == 1, "-EMSGSIZE seen %d times", s.too_big);
    CHECK(s.frames == 1 && s.last == 60, "the frame behind the big one: %d frames, last "
          "%zu bytes (%d callbacks)", s.frames, s.last, s.calls);
    struct netbe_stats st = stats(be);
    CHECK(st.rx_drops == 1, "rx drops %llu", (unsigned long long)st.rx_drops);
    close(fd);
    netbe_close(be);
}

/* Backends without a kernel link drop frames over mtu= (VLAN tags aside),
** also the segments netbe cuts; with no mtu= they check nothing. */
static void test_mtu(void)
{
    static uint8_t buf[20000], rx[20000];
    netbe *a = open_be("pair,name=mtu,mtu=1500");
    netbe *b = open_be("pair,name=mtu");
    if (!a || !b)
        return;
    struct iovec v = {buf, 1514}, r = {rx, sizeof rx};
    frame(buf, 0, 1514, 7);
    CHECK(netbe_send(a, &v, 1) == 1514, "a 1500-byte packet refused");
    v.iov_len = 1515;
    CHECK(netbe_send(a, &v, 1) == -EMSGSIZE, "a 1501-byte packet taken");
    buf[12] = 0x81;                  /* one VLAN tag: 4 more bytes are fine */
    buf[13] = 0x00;
    buf[16] = 0x08;
    buf[17] = 0x00;
    v.iov_len = 1518;
    CHECK(netbe_send(a, &v, 1) == 1518, "a tagged 1500-byte packet refused");
    CHECK(netbe_recv(b, &r, 1) == 1514 && netbe_recv(b, &r, 1) == 1518 &&
          netbe_recv(b, &r, 1) == 0, "the two frames within the MTU arrive, no other");
    /* A checksum frame netbe completes in software is checked as sent. */
    CHECK(netbe_set_cap(a, NETBE_F_CSUM, HL) == 0, "set_cap");
    frame(buf, HL, 1600, 8);
    needs_csum(buf);
    v.iov_len = HL + 1600;
    netbe_send(a, &v, 1);
    CHECK(netbe_recv(b, &r, 1) == 0, "a 1586-byte packet with a checksum header arrived");
    struct netbe_stats st = stats(a);
    CHECK(st.tx_drops == 2 && st.tx_frames == 2, "drops %llu frames %llu",
          (unsigned long long)st.tx_drops, (unsigned long long)st.tx_frames);
    /* The other end has no mtu=: a 9000-byte packet passes. */
    frame(buf, 0, 9014, 9);
    v.iov_len = 9014;
    CHECK(netbe_send(b, &v, 1) == 9014, "no mtu=: a 9000-byte packet refused");
    netbe_close(a);
    netbe_close(b);
}

/* num_buffers is 16 bits: a frame spread over more buffers is refused, not
** told to the guest as the count modulo 65536. */
static void test_rx_merge_limit(void)
{
    static uint8_t f[NETBE_MAX_FRAME + HL], g[NETBE_MAX_FRAME + HL];
    const int nbufs = NETBE_MAX_FRAME + 1;
    struct iovec *bufs = calloc((size_t)nbufs, sizeof *bufs);
    uint32_t *lens = calloc((size_t)nbufs, sizeof *lens);
    bufs[0].iov_base = g;
    bufs[0].iov_len = HL;
    for (int i = 1; i < nbufs; i++) {
        bufs[i].iov_base = g + HL + i - 1;
        bufs[i].iov_len = 1;
    }
    struct iovec fv = {f, HL + 65535};
    CHECK(netbe_rx_merge(&fv, 1, bufs, nbufs, lens) == -EMSGSIZE,
          "a frame in 65536 buffers was taken");
    fv.iov_len = HL + 65534;
    int n = netbe_rx_merge(&fv, 1, bufs, nbufs, lens);
    CHECK(n == 65535 && g[10] == 0xff && g[11] == 0xff, "65535 buffers: %d, num_buffers %u",
          n, g[10] | g[11] << 8);
    free(bufs);
    free(lens);
}

int main(void)
{
    base = event_base_new();
    snprintf(dir, sizeof dir, "/tmp/netbe-bounds-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    RUN(test_send_bound());
    RUN(test_recv_skip());
    RUN(test_small_buffer_progress());
    RUN(test_mtu());
    RUN(test_rx_merge_limit());
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        CHECK(0, "cannot remove %s", dir);
    event_base_free(base);
    return check_summary();
}
