/*
** frag_test.c: IP fragments from a guest reach libslirp only as whole
** datagrams, under ASan and UBSan. libslirp 4.7 crashes on a lone last
** IPv4 fragment and drops every IPv6 fragment; netbe reassembles in front
** of it. ICMP echo requests to the host side (10.0.2.2, fec0::2) show what
** libslirp got: it answers a whole, intact request and nothing else. The
** backend is restricted: it opens no host socket.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "check.h"
#include "netbe.h"
#include "slirp_frames.h"

/* Heap bytes in use, from the AddressSanitizer runtime these tests run
** under (gcc ships no header for it). */
size_t __sanitizer_get_current_allocated_bytes(void);

/* Echo replies seen, by ICMP id. */
struct seen {
    int arp, replies[64];
};

static struct event_base *base;
static uint8_t msg[70000], frame[NETBE_MAX_FRAME];

static void note_reply(struct seen *s, const uint8_t *f, ssize_t n)
{
    if (n >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[21] == 2)
        s->arp++;
    /* A first IPv4 fragment (or whole packet) of an ICMP echo reply. */
    if (n >= 42 && f[12] == 0x08 && f[13] == 0x00 && f[23] == 1 &&
        (((f[20] << 8) | f[21]) & 0x1fff) == 0 && memcmp(f + 26, host_ip4, 4) == 0 &&
        f[14 + (f[14] & 15) * 4] == 0)
        s->replies[f[14 + (f[14] & 15) * 4 + 5] & 63]++;
    if (n >= 62 && f[12] == 0x86 && f[13] == 0xdd && f[20] == 58 &&
        memcmp(f + 22, host_ip6, 16) == 0 && f[54] == 129)
        s->replies[f[59] & 63]++;
}

static void on_ready(netbe *be, int events, void *arg)
{
    uint8_t f[NETBE_MAX_FRAME];
    struct iovec v = {f, sizeof f};
    ssize_t n;
    while ((n = netbe_recv(be, &v, 1)) > 0)
        note_reply(arg, f, n);
}

static void send_frame(netbe *be, size_t len)
{
    struct iovec v = {frame, len};
    CHECK(netbe_send(be, &v, 1) == (ssize_t)len, "frame of %zu bytes taken", len);
}

/* Bytes OFF..OFF+LEN of ICMP message msg in one IPv4 packet with id IPID,
** more fragments following when MORE, into frame; returns its length. */
static size_t build_frag4(size_t off, size_t len, int more, unsigned ipid)
{
    eth_header(frame, host_mac, 0x0800);
    uint8_t *ip = frame + 14;
    memset(ip, 0, 20);
    ip[0] = 0x45;
    put16(ip + 2, (unsigned)(20 + len));
    put16(ip + 4, ipid);
    put16(ip + 6, (more ? 0x2000u : 0) | (unsigned)(off / 8));
    ip[8] = 64;
    ip[9] = 1;
    memcpy(ip + 12, guest_ip4, 4);
    memcpy(ip + 16, host_ip4, 4);
    put16(ip + 10, ip_checksum(ip, 20));
    memcpy(ip + 20, msg + off, len);
    return 34 + len;
}

static void send_frag4(netbe *be, size_t off, size_t len, int more, unsigned ipid)
{
    send_frame(be, build_frag4(off, len, more, ipid));
}

/* The same with a fragment header behind IPv6; ID is its 32-bit id. */
static void send_frag6(netbe *be, size_t off, size_t len, int more, unsigned id)
{
    size_t h = ip6_header(frame, guest_ip6, host_ip6, 44, 8 + len);
    uint8_t *fh = frame + h;
    fh[0] = 58;
    fh[1] = 0;
    put16(fh + 2, (unsigned)off | (more ? 1u : 0));
    put16(fh + 4, id >> 16);
    put16(fh + 6, id & 0xffff);
    memcpy(fh + 8, msg + off, len);
    send_frame(be, h + 8 + len);
}

/* An IPv6 packet carrying msg whole, no fragment header. */
static void send_whole6(netbe *be, size_t len)
{
    size_t h = ip6_header(frame, guest_ip6, host_ip6, 58, len);
    memcpy(frame + h, msg, len);
    send_frame(be, h + len);
}

/* Let slirp learn the guest's MAC for both its addresses: an ARP request
** and an IPv6 router solicitation. */
static void introduce(netbe *be, struct seen *s)
{
    send_frame(be, arp_request(frame));
    size_t h = ip6_header(frame, guest_ip6, (const uint8_t[16]){0xff, 0x02, [15] = 2}, 58, 8);
    frame[21] = 255;
    memset(frame + h, 0, 8);
    frame[h] = 133;
    uint8_t ph[8] = {0, 0, 0, 8, 0, 0, 0, 58};
    put16(frame + h + 2, sum_fold(sum16(sum16(sum16(sum16(0, guest_ip6, 16), frame + 38, 16),
                                              ph, 8), frame + h, 8)));
    send_frame(be, h + 8);
    run_until(base, &s->arp, 1);
}

static netbe *open_slirp(const char *spec, struct seen *s)
{
    char err[NETBE_ERRMAX];
    netbe *be = NULL;
    memset(s, 0, sizeof *s);
    int rc = netbe_open_str(&be, spec, base, on_ready, s, err, sizeof err);
    CHECK(rc == 0, "open %s: %s", spec, err);
    if (rc < 0)
        return NULL;
    netbe_rx_enable(be);
    introduce(be, s);
    CHECK(s->arp == 1, "slirp answers ARP");
    return be;
}

/* Run the loop for MS milliseconds. */
static void settle(int ms)
{
    struct timeval tv = {0, ms * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static struct netbe_stats stats(netbe *be)
{
    struct netbe_stats st;
    netbe_get_stats(be, &st);
    return st;
}

#define U(x) ((unsigned long long)(x))

/* A lone last fragment (MF clear, offset 8) is held, not taken for a
** whole datagram: libslirp 4.7 crashes on it. The backend goes on. */
static void test_lone_last_fragment(void)
{
    struct seen s;
    netbe *be = open_slirp("slirp", &s);
    if (!be)
        return;
    echo_request(msg, 64, 0, 1, NULL, NULL);
    send_frag4(be, 8, 56, 0, 0x100);
    echo_request(msg, 64, 1, 2, guest_ip6, host_ip6);
    send_frag6(be, 8, 56, 0, 0x100);
    echo_request(msg, 64, 0, 3, NULL, NULL);
    send_frag4(be, 0, 64, 0, 0x101);
    echo_request(msg, 64, 1, 4, guest_ip6, host_ip6);
    send_whole6(be, 64);
    run_until(base, &s.replies[4], 1);
    run_until(base, &s.replies[3], 1);
    CHECK(s.replies[3] == 1 && s.replies[4] == 1 && !s.replies[1] && !s.replies[2],
          "whole packets answered after the lone fragments (%d %d), these not (%d %d)",
          s.replies[3], s.replies[4], s.replies[1], s.replies[2]);
    struct netbe_stats st = stats(be);
    CHECK(st.tx_frags == 2 && st.tx_frag_whole == 0 && st.tx_frag_drops == 0,
          "two fragments held: frags %llu whole %llu drops %llu", U(st.tx_frags),
          U(st.tx_frag_whole), U(st.tx_frag_drops));
    netbe_close(be);
}

/* Fragments in any order become the datagram the guest sent; an exact
** duplicate is dropped alone; an IPv6 atomic fragment is taken as it is. */
static void test_whole_datagrams(void)
{
    struct seen s;
    netbe *be = open_slirp("slirp", &s);
    if (!be)
        return;
    echo_request(msg, 3000, 0, 5, NULL, NULL);
    send_frag4(be, 2960, 40, 0, 0x200);
    send_frag4(be, 0, 1480, 1, 0x200);
    send_frag4(be, 0, 1480, 1, 0x200);
    send_frag4(be, 1480, 1480, 1, 0x200);
    run_until(base, &s.replies[5], 1);
    echo_request(msg, 1200, 1, 6, guest_ip6, host_ip6);
    send_frag6(be, 496, 496, 1, 0x200);
    send_frag6(be, 992, 208, 0, 0x200);
    send_frag6(be, 0, 496, 1, 0x200);
    run_until(base, &s.replies[6], 1);
    echo_request(msg, 600, 1, 7, guest_ip6, host_ip6);
    send_frag6(be, 0, 600, 0, 0x201);
    run_until(base, &s.replies[7], 1);
    CHECK(s.replies[5] == 1 && s.replies[6] == 1 && s.replies[7] == 1,
          "IPv4, IPv6 and atomic fragments answered: %d %d %d", s.replies[5], s.replies[6],
          s.replies[7]);
    struct netbe_stats st = stats(be);
    CHECK(st.tx_frags == 8 && st.tx_frag_whole == 3 && st.tx_frag_drops == 1 &&
          st.tx_drops == 1, "frags %llu whole %llu drops %llu/%llu", U(st.tx_frags),
          U(st.tx_frag_whole), U(st.tx_frag_drops), U(st.tx_drops));
    netbe_close(be);
}

/* Overlapping fragments drop the whole datagram (RFC 5722), even when
** the overlap carries the same bytes and trimming would give a valid one. */
static void test_overlap(void)
{
    struct seen s;
    netbe *be = open_slirp("slirp", &s);
    if (!be)
        return;
    echo_request(msg, 3000, 0, 8, NULL, NULL);
    send_frag4(be, 0, 1480, 1, 0x300);
    send_frag4(be, 1000, 1480, 1, 0x300);
    send_frag4(be, 1480, 1520, 0, 0x300);
    echo_request(msg, 1200, 1, 9, guest_ip6, host_ip6);
    send_frag6(be, 0, 504, 1, 0x300);
    send_frag6(be, 496, 504, 1, 0x300);
    send_frag6(be, 1000, 200, 0, 0x300);
    settle(300);
    CHECK(s.replies[8] == 0 && s.replies[9] == 0, "overlapping datagrams not answered: %d %d",
          s.replies[8], s.replies[9]);
    struct netbe_stats st = stats(be);
    CHECK(st.tx_frag_overlap == 2 && st.tx_frag_drops == 4 && st.tx_frag_whole == 0,
          "two datagrams dropped for overlap (%llu), four fragments (%llu)",
          U(st.tx_frag_overlap), U(st.tx_frag_drops));
    /* The same requests cut cleanly get their answers. */
    echo_request(msg, 3000, 0, 10, NULL, NULL);
    send_frag4(be, 0, 1480, 1, 0x301);
    send_frag4(be, 1480, 1520, 0, 0x301);
    run_until(base, &s.replies[10], 1);
    CHECK(s.replies[10] == 1, "a clean datagram after them is answered");
    netbe_close(be);
}

/* A datagram that would reassemble past 65,535 bytes is dropped; so is an
** IPv6 one past slirp's mtu=, which libslirp would refuse. */
static void test_oversize(void)
{
    struct seen s;
    netbe *be = open_slirp("slirp", &s);
    if (!be)
        return;
    echo_request(msg, 65600, 0, 11, NULL, NULL);
    for (size_t off = 0; off < 65600; off += 1480)
        send_frag4(be, off, off + 1480 < 65600 ? 1480 : 65600 - off, off + 1480 < 65600,
                   0x400);
    echo_request(msg, 65544, 1, 12, guest_ip6, host_ip6);
    send_frag6(be, 65528, 16, 0, 0x400);
    echo_request(msg, 2000, 1, 13, guest_ip6, host_ip6);
    send_frag6(be, 0, 1448, 1, 0x401);
    send_frag6(be, 1448, 552, 0, 0x401);
    settle(300);
    CHECK(s.replies[11] == 0 && s.replies[12] == 0 && s.replies[13] == 0,
          "none answered: %d %d %d", s.replies[11], s.replies[12], s.replies[13]);
    struct netbe_stats st = stats(be);
    CHECK(st.tx_frag_oversize == 3 && st.tx_frag_drops == 45 + 1 + 2 && st.tx_frag_whole == 0,
          "three datagrams too big (%llu), their fragments dropped (%llu)",
          U(st.tx_frag_oversize), U(st.tx_frag_drops));
    netbe_close(be);
}

/* Many incomplete datagrams: memory stays bounded, the oldest go first,
** counted, and the newest still completes. */
static void test_storm(void)
{
    struct seen s;
    netbe *be = open_slirp("slirp", &s);
    if (!be)
        return;
    size_t before = __sanitizer_get_current_allocated_bytes(), most = 0;
    echo_request(msg, 1480, 0, 14, NULL, NULL);
    for (unsigned id = 0; id < 3000; id++)
        send_frag4(be, 0, 1480, 1, id);
    struct netbe_stats st = stats(be);
    CHECK(st.tx_frag_evicted == 3000 - 256, "all but 256 datagrams evicted: %llu",
          U(st.tx_frag_evicted));
    /* 100 datagrams of 40 fragments each, all but their last: 5.9 MB. */
    echo_request(msg, 40 * 1480 + 520, 0, 15, NULL, NULL);
    for (unsigned id = 3000; id < 3100; id++) {
        for (size_t off = 0; off < 40 * 1480; off += 1480)
            send_frag4(be, off, 1480, 1, id);
        size_t now = __sanitizer_get_current_allocated_bytes();
        most = now > most ? now : most;
    }
    CHECK(most - before < (9u << 19), "the heap grew by %zu bytes, at most 4.5 MiB expected",
          most - before);
    send_frag4(be, 40 * 1480, 520, 0, 3000);
    send_frag4(be, 40 * 1480, 520, 0, 3099);
    run_until(base, &s.replies[15], 1);
    st = stats(be);
    CHECK(st.tx_frag_whole == 1 && s.replies[15] == 1 && st.tx_frag_timeout == 0,
          "the oldest did not complete, the newest did: whole %llu, answers %d",
          U(st.tx_frag_whole), s.replies[15]);
    netbe_close(be);
}

/* A datagram that saw none of its fragments while 64 others came is stale
** (its id has likely wrapped): dropped as Linux's ipfrag_max_dist does. */
static void test_distance(void)
{
    struct seen s;
    netbe *be = open_slirp("slirp", &s);
    if (!be)
        return;
    echo_request(msg, 2000, 0, 16, NULL, NULL);
    send_frag4(be, 0, 1480, 1, 0x500);
    for (unsigned id = 0; id < 63; id++)
        send_frag4(be, 0, 8, 1, 0x600 + id);
    send_frag4(be, 1480, 520, 0, 0x500);
    echo_request(msg, 2000, 0, 17, NULL, NULL);
    send_frag4(be, 0, 1480, 1, 0x501);
    for (unsigned id = 0; id < 64; id++)
        send_frag4(be, 0, 8, 1, 0x700 + id);
    send_frag4(be, 1480, 520, 0, 0x501);
    run_until(base, &s.replies[16], 1);
    settle(100);
    struct netbe_stats st = stats(be);
    CHECK(s.replies[16] == 1 && s.replies[17] == 0 && st.tx_frag_evicted == 1,
          "63 fragments between are fine, 64 are not: answers %d %d, evicted %llu",
          s.replies[16], s.replies[17], U(st.tx_frag_evicted));
    netbe_close(be);
}

/* Checksum offload repairs nothing in a fragment: one asking for it is a
** header that lies, and a fragment with a bad IPv4 header checksum is
** dropped, not made valid. */
static void test_no_repair(void)
{
    struct seen s;
    netbe *be = open_slirp("slirp", &s);
    if (!be)
        return;
    CHECK(netbe_set_cap(be, NETBE_F_CSUM, 12) == 0, "checksum offload on");
    echo_request(msg, 64, 0, 18, NULL, NULL);
    uint8_t buf[12 + 100] = {1};                 /* NEEDS_CSUM */
    buf[6] = 34;                                 /* csum_start (little-endian) */
    buf[8] = 2;                                  /* csum_offset: the ICMP checksum */
    size_t n = build_frag4(8, 56, 0, 0x800);
    memcpy(buf + 12, frame, n);
    buf[12 + 24] ^= 0xff;                        /* and a wrong IP header checksum */
    struct iovec v = {buf, 12 + n};
    ssize_t r = netbe_send(be, &v, 1);
    struct netbe_stats st = stats(be);
    CHECK(r < 0 && st.tx_bad_hdr == 1 && st.tx_frags == 0,
          "a fragment asking for a checksum is refused: %zd, bad_hdr %llu frags %llu", r,
          U(st.tx_bad_hdr), U(st.tx_frags));
    memset(buf, 0, 12);
    r = netbe_send(be, &v, 1);
    settle(100);
    st = stats(be);
    CHECK(r == (ssize_t)v.iov_len && st.tx_frags == 1 && st.tx_frag_drops == 1,
          "a fragment with a bad IP checksum is dropped: frags %llu drops %llu",
          U(st.tx_frags), U(st.tx_frag_drops));
    netbe_close(be);
}

int main(void)
{
    base = event_base_new();
    RUN(test_lone_last_fragment());
    RUN(test_whole_datagrams());
    RUN(test_overlap());
    RUN(test_oversize());
    RUN(test_storm());
    RUN(test_distance());
    RUN(test_no_repair());
    event_base_free(base);
    return check_summary();
}
