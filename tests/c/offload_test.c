/*
** offload_test.c: software offloads checked with an independent checksum
** and by rebuilding the stream: checksum completion, TCP segmentation
** (IPv4, IPv6, VLAN), USO, UFO; lying and truncated headers; randomized
** headers and frames; the path through a backend without offloads (pair);
** the mergeable receive buffer helper.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "be_bytes.h"
#include "check.h"
#include "inet_csum.h"
#include "netbe.h"

#define HL 12


/* True when the L4 checksum of the IP packet at IP (version V6) is right. */
static int l4_csum_ok(const uint8_t *ip, int v6, size_t l4off, size_t l4len, unsigned proto)
{
    uint32_t s = 0;
    if (v6) {
        s = sum16(ip + 8, 32, 0);
    } else {
        s = sum16(ip + 12, 8, 0);
    }
    s += proto + (uint32_t)l4len;
    s = sum16(ip + l4off, l4len, s);
    return fold(s) == 0xffff;
}

/* A frame: virtio header, Ethernet (VLAN tags), IP, TCP or UDP, payload. */
struct spec {
    int v6, vlan, udp;
    size_t payload;
    uint8_t tcp_flags;
    unsigned ip_id;
    uint32_t seq;
};

static size_t build(uint8_t *buf, const struct spec *sp, size_t *l3out, size_t *l4out)
{
    uint8_t *f = buf + HL;
    memset(buf, 0, HL);
    memcpy(f, "\x02\0\0\0\0\x02\x02\0\0\0\0\x01", 12);
    size_t off = 12;
    for (int i = 0; i < sp->vlan; i++) {
        f[off] = 0x81; f[off + 1] = 0; f[off + 2] = 0; f[off + 3] = (uint8_t)(10 + i);
        off += 4;
    }
    size_t l3 = off + 2, l4hl = sp->udp ? 8 : 32;
    f[off] = sp->v6 ? 0x86 : 0x08;
    f[off + 1] = sp->v6 ? 0xdd : 0x00;
    uint8_t *ip = f + l3;
    size_t iphl = sp->v6 ? 40 : 20, l4 = l3 + iphl;
    size_t iplen = iphl + l4hl + sp->payload;
    memset(ip, 0, iphl);
    if (sp->v6) {
        ip[0] = 0x60; ip[1] = 0x01; ip[2] = 0x23; ip[3] = 0x45;
        ip[4] = (uint8_t)((iplen - 40) >> 8); ip[5] = (uint8_t)(iplen - 40);
        ip[6] = sp->udp ? 17 : 6; ip[7] = 64;
        ip[8] = 0xfd; ip[23] = 1; ip[24] = 0xfd; ip[39] = 2;
    } else {
        ip[0] = 0x45; ip[2] = (uint8_t)(iplen >> 8); ip[3] = (uint8_t)iplen;
        ip[4] = (uint8_t)(sp->ip_id >> 8); ip[5] = (uint8_t)sp->ip_id;
        ip[6] = 0x40; ip[8] = 64; ip[9] = sp->udp ? 17 : 6;
        ip[12] = 10; ip[15] = 1; ip[16] = 10; ip[19] = 2;
        uint16_t c = (uint16_t)~fold(sum16(ip, 20, 0));
        ip[10] = (uint8_t)(c >> 8);
        ip[11] = (uint8_t)c;
    }
    uint8_t *th = f + l4;
    memset(th, 0, l4hl);
    th[0] = 0x30; th[1] = 0x39; th[2] = 0x1f; th[3] = 0x90;
    if (sp->udp) {
        th[4] = (uint8_t)((8 + sp->payload) >> 8); th[5] = (uint8_t)(8 + sp->payload);
    } else {
        th[4] = (uint8_t)(sp->seq >> 24); th[5] = (uint8_t)(sp->seq >> 16);
        th[6] = (uint8_t)(sp->seq >> 8); th[7] = (uint8_t)sp->seq;
        th[12] = 0x80;          /* 32-byte header: 12 bytes of options */
        th[13] = sp->tcp_flags;
        th[14] = 0xff; th[15] = 0xff;
        th[20] = 1; th[21] = 1; th[22] = 8; th[23] = 10;  /* NOP NOP timestamps */
        th[24] = 0x11; th[31] = 0x22;
    }
    for (size_t i = 0; i < sp->payload; i++)
        th[l4hl + i] = (uint8_t)(i * 7 + (i >> 8));
    /* As a driver does for NEEDS_CSUM: the pseudo header sum in the field. */
    uint32_t ps = (sp->v6 ? sum16(ip + 8, 32, 0) : sum16(ip + 12, 8, 0)) +
                  (sp->udp ? 17u : 6u) + (uint32_t)(l4hl + sp->payload);
    uint16_t partial = fold(ps);
    th[sp->udp ? 6 : 16] = (uint8_t)(partial >> 8);
    th[sp->udp ? 7 : 17] = (uint8_t)partial;
    *l3out = l3;
    *l4out = l4;
    return HL + l3 + iplen;
}

static void set_hdr(uint8_t *buf, unsigned flags, unsigned gso, unsigned hdr_len,
                    unsigned gso_size, unsigned cstart, unsigned coff)
{
    buf[0] = (uint8_t)flags; buf[1] = (uint8_t)gso;
    buf[2] = (uint8_t)hdr_len; buf[3] = (uint8_t)(hdr_len >> 8);
    buf[4] = (uint8_t)gso_size; buf[5] = (uint8_t)(gso_size >> 8);
    buf[6] = (uint8_t)cstart; buf[7] = (uint8_t)(cstart >> 8);
    buf[8] = (uint8_t)coff; buf[9] = (uint8_t)(coff >> 8);
}

/* Segments handed over by netbe_frame_offload. */
struct segs {
    int n;
    size_t len[1100];
    uint8_t *data[1100];
};

static int collect(const struct iovec *iov, int iovcnt, void *arg)
{
    struct segs *s = arg;
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (s->n == 1100)
        return -ENOSPC;
    uint8_t *d = malloc(len);
    size_t off = 0;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(d + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    s->data[s->n] = d;
    s->len[s->n++] = len;
    return 0;
}

static void segs_free(struct segs *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->data[i]);
    s->n = 0;
}

/* Check the segments of a TSO/USO frame built from SP against the rules. */
static void check_segments(const char *what, const struct spec *sp, const uint8_t *orig,
                           size_t l3, size_t l4, unsigned mss, struct segs *s)
{
    size_t l4hl = sp->udp ? 8 : 32, hdrs = l4 + l4hl;
    size_t want = sp->payload ? (sp->payload + mss - 1) / mss : 1;
    CHECK((size_t)s->n == want, "%s: %d segments, expected %zu", what, s->n, want);
    size_t off = 0;
    for (int i = 0; i < s->n; i++) {
        const uint8_t *f = s->data[i], *ip = f + l3, *th = f + l4;
        size_t chunk = sp->payload - off < mss ? sp->payload - off : mss;
        int last = i == s->n - 1;
        CHECK(s->len[i] == hdrs + chunk, "%s seg %d: length %zu, expected %zu", what, i,
              s->len[i], hdrs + chunk);
        CHECK(memcmp(f, orig, l3) == 0, "%s seg %d: Ethernet header changed", what, i);
        if (sp->v6) {
            CHECK(be_get16(ip + 4) == l4hl + chunk, "%s seg %d: payload length %u", what, i,
                  be_get16(ip + 4));
        } else {
            CHECK(be_get16(ip + 2) == 20 + l4hl + chunk, "%s seg %d: total length %u", what, i,
                  be_get16(ip + 2));
            CHECK(fold(sum16(ip, 20, 0)) == 0xffff, "%s seg %d: bad IPv4 checksum", what, i);
            CHECK(be_get16(ip + 4) == ((sp->ip_id + (unsigned)i) & 0xffff), "%s seg %d: id %u",
                  what, i, be_get16(ip + 4));
        }
        CHECK(l4_csum_ok(ip, sp->v6, l4 - l3, l4hl + chunk, sp->udp ? 17 : 6),
              "%s seg %d: bad L4 checksum", what, i);
        if (sp->udp) {
            CHECK(be_get16(th + 4) == 8 + chunk, "%s seg %d: UDP length %u", what, i, be_get16(th + 4));
        } else {
            CHECK(be_get32(th + 4) == (uint32_t)(sp->seq + off), "%s seg %d: seq %u", what, i, be_get32(th + 4));
            uint8_t fl = sp->tcp_flags;
            if (i > 0)
                fl &= (uint8_t)~0x80;
            if (!last)
                fl &= (uint8_t)~0x09;
            CHECK(th[13] == fl, "%s seg %d: flags 0x%02x, expected 0x%02x", what, i, th[13], fl);
            CHECK(memcmp(th + 20, orig + l4 + 20, 12) == 0, "%s seg %d: options changed",
                  what, i);
        }
        CHECK(memcmp(f + hdrs, orig + hdrs + off, chunk) == 0, "%s seg %d: payload differs",
              what, i);
        off += chunk;
    }
}

static void test_tso(const char *what, struct spec sp, unsigned mss)
{
    static uint8_t buf[70000], orig[70000];
    size_t l3, l4;
    size_t len = build(buf, &sp, &l3, &l4);
    unsigned gso = sp.udp ? 5 : sp.v6 ? 4 : 1;
    if (!sp.udp && sp.tcp_flags & 0x80)
        gso |= 0x80;
    set_hdr(buf, 1, gso, (unsigned)(l4 + (sp.udp ? 8 : 32)), mss, (unsigned)l4,
            sp.udp ? 6 : 16);
    memcpy(orig, buf + HL, len - HL);
    CHECK(netbe_frame_check(buf, len, HL) == 0, "%s: a true header refused", what);
    struct segs s = {0};
    int n = netbe_frame_offload(buf, len, HL, collect, &s);
    CHECK(n == s.n, "%s: returned %d for %d segments", what, n, s.n);
    check_segments(what, &sp, orig, l3, l4, mss, &s);
    segs_free(&s);
}

static void test_segmentation(void)
{
    test_tso("tcp4", (struct spec){0, 0, 0, 10000, 0x18 | 0x01 | 0x80, 0xfffe, 0xfffff000u}, 1448);
    test_tso("tcp4 exact", (struct spec){0, 0, 0, 1448 * 4, 0x18, 7, 1}, 1448);
    test_tso("tcp4 one", (struct spec){0, 0, 0, 100, 0x19, 7, 1}, 1448);
    test_tso("tcp4 empty", (struct spec){0, 0, 0, 0, 0x11, 7, 1}, 1448);
    test_tso("tcp4 64k", (struct spec){0, 0, 0, 65535 - 52, 0x10, 1, 1}, 1448);
    test_tso("tcp4 mss88", (struct spec){0, 0, 0, 60000, 0x10, 1, 1}, 88);
    test_tso("tcp6", (struct spec){1, 0, 0, 30001, 0x18, 0, 123456}, 1428);
    test_tso("tcp4 vlan", (struct spec){0, 1, 0, 5000, 0x18, 9, 5}, 1000);
    test_tso("tcp6 qinq", (struct spec){1, 2, 0, 5000, 0x18, 9, 5}, 1000);
    test_tso("uso4", (struct spec){0, 0, 1, 9000, 0, 300, 0}, 1472);
    test_tso("uso6", (struct spec){1, 0, 1, 9001, 0, 0, 0}, 1452);
}

static void test_ufo(void)
{
    static uint8_t buf[70000], orig[70000];
    struct spec sp = {0, 0, 1, 4000, 0, 77, 0};
    size_t l3, l4;
    size_t len = build(buf, &sp, &l3, &l4);
    set_hdr(buf, 1, 3, (unsigned)(l4 + 8), 1480, (unsigned)l4, 6);
    memcpy(orig, buf + HL, len - HL);
    struct segs s = {0};
    int n = netbe_frame_offload(buf, len, HL, collect, &s);
    CHECK(n == 3, "ufo: %d fragments, expected 3", n);
    /* Rebuild the datagram from the fragments and check its checksum. */
    static uint8_t dgram[70000];
    size_t got = 0;
    for (int i = 0; i < s.n; i++) {
        const uint8_t *ip = s.data[i] + l3;
        unsigned fo = be_get16(ip + 6);
        CHECK(fold(sum16(ip, 20, 0)) == 0xffff, "ufo frag %d: bad IPv4 checksum", i);
        CHECK(be_get16(ip + 4) == 77, "ufo frag %d: id %u, expected 77", i, be_get16(ip + 4));
        CHECK((fo & 0x1fff) * 8 == got, "ufo frag %d: offset %u, expected %zu", i,
              (fo & 0x1fff) * 8, got);
        CHECK(!!(fo & 0x2000) == (i < s.n - 1), "ufo frag %d: MF wrong", i);
        size_t plen = be_get16(ip + 2) - 20;
        CHECK(i == s.n - 1 || plen == 1480, "ufo frag %d: %zu bytes", i, plen);
        memcpy(dgram + got, ip + 20, plen);
        got += plen;
    }
    CHECK(got == 8 + 4000, "ufo: %zu bytes reassembled", got);
    CHECK(memcmp(dgram + 8, orig + l4 + 8, 4000) == 0, "ufo: payload differs");
    uint32_t ps = sum16(orig + l3 + 12, 8, 0) + 17 + (uint32_t)got;
    CHECK(fold(sum16(dgram, got, ps)) == 0xffff, "ufo: bad UDP checksum");
    segs_free(&s);
    /* UFO over IPv6 needs a fragment header netbe does not make. */
    sp.v6 = 1;
    len = build(buf, &sp, &l3, &l4);
    set_hdr(buf, 1, 3, 0, 1448, (unsigned)l4, 6);
    CHECK(netbe_frame_offload(buf, len, HL, collect, &s) == -EOPNOTSUPP, "ufo6 taken");
    segs_free(&s);
}

static void test_csum(void)
{
    static uint8_t buf[2000];
    for (int udp = 0; udp < 2; udp++) {
        for (int v6 = 0; v6 < 2; v6++) {
            struct spec sp = {v6, 0, udp, 999, 0x18, 1, 1};
            size_t l3, l4;
            size_t len = build(buf, &sp, &l3, &l4);
            size_t l4len = len - HL - l4;
            uint8_t *field = buf + HL + l4 + (udp ? 6 : 16);
            /* The driver leaves the pseudo header sum in the field. */
            uint32_t ps = (v6 ? sum16(buf + HL + l3 + 8, 32, 0) : sum16(buf + HL + l3 + 12, 8, 0))
                          + (udp ? 17 : 6) + (uint32_t)l4len;
            uint16_t p = fold(ps);
            field[0] = (uint8_t)(p >> 8);
            field[1] = (uint8_t)p;
            set_hdr(buf, 1, 0, 0, 0, (unsigned)l4, udp ? 6 : 16);
            struct segs s = {0};
            CHECK(netbe_frame_offload(buf, len, HL, collect, &s) == 1, "csum: one frame");
            CHECK(s.n == 1 && s.len[0] == len - HL, "csum: frame length %zu", s.len[0]);
            CHECK(l4_csum_ok(s.data[0] + l3, v6, l4 - l3, l4len, udp ? 17 : 6),
                  "csum udp=%d v6=%d: checksum not completed", udp, v6);
            segs_free(&s);
        }
    }
}

/* Headers that lie, on an otherwise good TCPv4 TSO frame. */
static void test_lies(void)
{
    static uint8_t buf[20000];
    struct spec sp = {0, 0, 0, 5000, 0x18, 1, 1};
    size_t l3, l4;
    size_t len = build(buf, &sp, &l3, &l4);
    unsigned hl = (unsigned)(l4 + 32), L4 = (unsigned)l4;
    struct { const char *what; unsigned flags, gso, hdr_len, gso_size, cs, co; } lie[] = {
        {"csum_start past the end", 1, 0, 0, 0, (unsigned)len, 0},
        {"csum_offset past the end", 1, 0, 0, 0, L4, 6000},
        {"csum_start in the Ethernet header", 1, 0, 0, 0, 4, 0},
        {"gso_size 0", 1, 1, hl, 0, L4, 16},
        {"unknown gso type", 1, 2, hl, 1448, L4, 16},
        {"unknown gso type 6", 1, 6, hl, 1448, L4, 16},
        {"TCPV6 on IPv4", 1, 4, hl, 1448, L4, 16},
        {"UDP gso on TCP", 1, 5, hl, 1448, L4, 6},
        {"UFO on TCP", 1, 3, hl, 1448, L4, 6},
        {"ECN without gso", 1, 0x80, 0, 0, L4, 16},
        {"unknown flag", 5, 1, hl, 1448, L4, 16},
        {"RSC flag", 4, 0, 0, 0, 0, 0},
        {"hdr_len too short", 1, 1, hl - 1, 1448, L4, 16},
        {"hdr_len past the end", 1, 1, (unsigned)len, 1448, L4, 16},
        {"hdr_len past the end, no gso", 0, 0, 60000, 0, 0, 0},
        {"csum not at the TCP field", 1, 1, hl, 1448, L4, 6},
        {"csum_start not at L4", 1, 1, hl, 1448, L4 + 2, 16},
        {"too many segments", 1, 1, hl, 1, L4, 16},
    };
    struct event_base *base = event_base_new();
    char err[NETBE_ERRMAX];
    netbe *a = NULL, *b = NULL;
    CHECK(netbe_open_str(&a, "pair,name=lies", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_open_str(&b, "pair,name=lies", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_set_cap(a, netbe_get_cap(a), HL) == 0, "set_cap");
    for (size_t i = 0; i < sizeof lie / sizeof lie[0]; i++) {
        set_hdr(buf, lie[i].flags, lie[i].gso, lie[i].hdr_len, lie[i].gso_size, lie[i].cs,
                lie[i].co);
        CHECK(netbe_frame_check(buf, len, HL) == -EINVAL, "lie '%s' believed", lie[i].what);
        struct iovec v = {buf, len};
        CHECK(netbe_send(a, &v, 1) == -EINVAL, "lie '%s' sent", lie[i].what);
    }
    /* A frame that is not TCP/IP at all cannot be segmented. */
    set_hdr(buf, 0, 1, 0, 1448, 0, 0);
    buf[HL + 12] = 0x88;
    CHECK(netbe_frame_check(buf, len, HL) == -EINVAL, "gso on a non-IP frame believed");
    buf[HL + 12] = 0x08;
    /* An IPv4 fragment cannot be segmented. */
    buf[HL + l3 + 6] = 0x20;
    CHECK(netbe_frame_check(buf, len, HL) == -EINVAL, "gso on a fragment believed");
    buf[HL + l3 + 6] = 0x40;
    /* IP length past the frame. */
    buf[HL + l3 + 2] = 0xff;
    CHECK(netbe_frame_check(buf, len, HL) == -EINVAL, "IP length past the end believed");
    buf[HL + l3 + 2] = (uint8_t)((len - HL - l3) >> 8);
    set_hdr(buf, 1, 1, hl, 1448, L4, 16);
    CHECK(netbe_frame_check(buf, len, HL) == 0, "the true header refused");
    CHECK(netbe_frame_check(buf, len, 11) == -EINVAL, "header length 11 taken");
    CHECK(netbe_frame_check(buf, 5, HL) == -EINVAL, "5-byte frame taken");
    struct netbe_stats st;
    netbe_get_stats(a, &st);
    size_t nlies = sizeof lie / sizeof lie[0];
    CHECK(st.tx_bad_hdr == nlies && st.tx_drops == nlies && st.tx_frames == 0,
          "counted bad %llu drops %llu frames %llu", (unsigned long long)st.tx_bad_hdr,
          (unsigned long long)st.tx_drops, (unsigned long long)st.tx_frames);
    static uint8_t rx[70000];
    struct iovec rv = {rx, sizeof rx};
    CHECK(netbe_recv(b, &rv, 1) == 0, "a lying frame reached the other end");
    netbe_close(a);
    netbe_close(b);
    event_base_free(base);
}

/* TSO over IPv6 with extension headers before TCP is refused, whether
** the headers end within the bytes netbe reads first or past them (ASan
** sees any read past those bytes). Each case is a chain of destination
** options headers of these lengths, 0 ending the chain. */
static void test_ext_headers(void)
{
    static uint8_t buf[20000];
    static const size_t chain[][3] = {{8, 0}, {96, 0}, {104, 0}, {112, 8, 0}, {256, 0}};
    struct event_base *base = event_base_new();
    char err[NETBE_ERRMAX];
    netbe *a = NULL, *b = NULL;
    CHECK(netbe_open_str(&a, "pair,name=ext", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_open_str(&b, "pair,name=ext", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_set_cap(a, netbe_get_cap(a), HL) == 0, "set_cap");
    for (size_t i = 0; i < sizeof chain / sizeof chain[0]; i++) {
        struct spec sp = {1, 0, 0, 4000, 0x18, 1, 1};
        size_t l3, l4, n = 0;
        size_t len = build(buf, &sp, &l3, &l4);
        uint8_t *ip = buf + HL + l3;
        for (int k = 0; chain[i][k]; k++) {
            size_t at = HL + l4 + n, e = chain[i][k];
            memmove(buf + at + e, buf + at, len - at);
            memset(buf + at, 0, e);
            buf[at] = chain[i][k + 1] ? 60 : 6;
            buf[at + 1] = (uint8_t)(e / 8 - 1);
            len += e;
            n += e;
        }
        ip[6] = 60;
        unsigned plen = be_get16(ip + 4) + (unsigned)n;
        ip[4] = (uint8_t)(plen >> 8);
        ip[5] = (uint8_t)plen;
        unsigned th = (unsigned)(l4 + n);
        set_hdr(buf, 1, 4, th + 32, 1448, th, 16);
        CHECK(netbe_frame_check(buf, len, HL) == -EINVAL, "case %zu: TSO6 after %zu bytes of "
              "extension headers believed", i, n);
        struct iovec v = {buf, len};
        CHECK(netbe_send(a, &v, 1) == -EINVAL, "case %zu: TSO6 after %zu bytes of extension "
              "headers sent", i, n);
        /* Only its checksum asked for, the frame goes as it is. */
        set_hdr(buf, 1, 0, 0, 0, th, 16);
        CHECK(netbe_frame_check(buf, len, HL) == 0, "case %zu: checksum only refused", i);
    }
    netbe_close(a);
    netbe_close(b);
    event_base_free(base);
}

/* Every prefix of a GSO frame, in a buffer of exactly that size, so ASan
** sees any read past the end. */
static void test_truncated(void)
{
    static uint8_t full[20000];
    struct spec sp = {0, 1, 0, 3000, 0x18, 1, 1};
    size_t l3, l4;
    size_t len = build(full, &sp, &l3, &l4);
    set_hdr(full, 1, 1, 0, 536, (unsigned)l4, 16);
    int accepted = 0;
    for (size_t n = 0; n <= len; n++) {
        uint8_t *b = malloc(n ? n : 1);
        memcpy(b, full, n);
        struct segs s = {0};
        if (netbe_frame_check(b, n, HL) == 0) {
            accepted++;
            netbe_frame_offload(b, n, HL, collect, &s);
        }
        segs_free(&s);
        free(b);
    }
    CHECK(accepted == 1, "%d truncated GSO frames believed (only the whole one should be)",
          accepted);
}

static uint32_t rnd_state = 12345;
static uint32_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 17;
    rnd_state ^= rnd_state << 5;
    return rnd_state;
}

/* Random headers on random and on mutated frames: whatever is believed
** must come out as checksummed segments carrying every payload byte. */
static void test_random(void)
{
    static uint8_t buf[70000];
    int believed = 0, bad = 0, rounds = 20000;
    const char *env = getenv("FUZZ_ITERATIONS");
    if (env && atoi(env) > rounds)
        rounds = atoi(env);
    for (int iter = 0; iter < rounds; iter++) {
        struct spec sp = {rnd() & 1, rnd() % 3, rnd() & 1, rnd() % 9000, (uint8_t)rnd(),
                          rnd() & 0xffff, rnd()};
        size_t l3, l4;
        size_t len = build(buf, &sp, &l3, &l4);
        unsigned gso = sp.udp ? 5 : sp.v6 ? 4 : 1;
        unsigned l4hl = sp.udp ? 8 : 32;
        set_hdr(buf, 1, gso, (unsigned)l4 + l4hl, 9 + rnd() % 2000, (unsigned)l4,
                sp.udp ? 6 : 16);
        int mutated = rnd() % 4 != 0;
        if (mutated) {
            int k = 1 + rnd() % 4;
            for (int j = 0; j < k; j++) {
                size_t pos = rnd() % (mutated == 1 && j == 0 ? HL + l4 + l4hl : len);
                buf[pos] = (uint8_t)rnd();
            }
            if (rnd() % 4 == 0)
                len = rnd() % len;
        }
        uint8_t *f = malloc(len ? len : 1);
        memcpy(f, buf, len);
        struct segs s = {0};
        if (netbe_frame_check(f, len, HL) == 0) {
            believed++;
            int n = netbe_frame_offload(f, len, HL, collect, &s);
            if (n < 0 && n != -EOPNOTSUPP)
                bad++;
            if (!mutated && n != s.n)
                bad++;
        } else if (!mutated) {
            bad++;
        }
        segs_free(&s);
        free(f);
    }
    CHECK(bad == 0, "%d randomized frames went wrong", bad);
    CHECK(believed > rounds / 4, "only %d of %d randomized frames believed", believed, rounds);
}

/* A TSO frame sent to a pair (no offloads) arrives as the segments
** netbe_frame_offload makes; a lone NEEDS_CSUM frame arrives completed. */
static void test_pair(void)
{
    static uint8_t buf[70000], copy[70000], rx[70000];
    struct event_base *base = event_base_new();
    char err[NETBE_ERRMAX];
    netbe *a = NULL, *b = NULL;
    netbe_open_str(&a, "pair,name=seg", base, NULL, NULL, err, sizeof err);
    netbe_open_str(&b, "pair,name=seg", base, NULL, NULL, err, sizeof err);
    CHECK(netbe_set_cap(a, NETBE_F_CSUM | NETBE_F_HOST_TSO4 | NETBE_F_HOST_TSO6, HL) == 0,
          "set_cap");
    struct spec sp = {0, 0, 0, 20000, 0x19, 100, 1000};
    size_t l3, l4;
    size_t len = build(buf, &sp, &l3, &l4);
    set_hdr(buf, 1, 1, (unsigned)l4 + 32, 1448, (unsigned)l4, 16);
    memcpy(copy, buf, len);
    struct segs want = {0};
    netbe_frame_offload(copy, len, HL, collect, &want);
    struct iovec v[3] = {{buf, 7}, {buf + 7, 100}, {buf + 107, len - 107}};
    CHECK(netbe_send(a, v, 3) == (ssize_t)len, "TSO frame not taken");
    int got = 0;
    for (;;) {
        struct iovec rv = {rx, sizeof rx};
        ssize_t n = netbe_recv(b, &rv, 1);
        if (n <= 0)
            break;
        CHECK(got < want.n && (size_t)n == want.len[got] && !memcmp(rx, want.data[got], n),
              "segment %d differs from netbe_frame_offload's", got);
        got++;
    }
    CHECK(got == want.n && got == 14, "%d segments arrived, expected %d", got, want.n);
    struct netbe_stats st;
    netbe_get_stats(a, &st);
    CHECK(st.tx_sw_frames == 1 && st.tx_frames == 14, "sw %llu frames %llu",
          (unsigned long long)st.tx_sw_frames, (unsigned long long)st.tx_frames);
    segs_free(&want);
    netbe_close(a);
    netbe_close(b);
    event_base_free(base);
}

static int tx_events;

static void on_event(netbe *be, int events, void *arg)
{
    if (events & NETBE_EV_TX)
        tx_events++;
}

/* A backend that fills up halfway through a frame's segments: the frame
** counts as taken, the rest go out on TX readiness before anything else,
** and the receiver sees one unbroken sequence. */
static void test_backpressure(void)
{
    static uint8_t buf[70000], rx[70000];
    struct event_base *base = event_base_new();
    char err[NETBE_ERRMAX];
    netbe *a = NULL, *b = NULL;
    netbe_open_str(&a, "pair,name=bp", base, on_event, NULL, err, sizeof err);
    netbe_open_str(&b, "pair,name=bp", base, NULL, NULL, err, sizeof err);
    CHECK(netbe_set_cap(a, NETBE_F_CSUM | NETBE_F_HOST_TSO4, HL) == 0, "set_cap");
    const size_t payload = 60000;
    uint32_t base_seq = 1000, next_seq = base_seq, want_seq = base_seq;
    int taken = 0, refused = 0, received = 0, rounds = 0;
    while (rounds++ < 10000 && (taken < 200 || want_seq != next_seq)) {
        if (taken < 200) {
            struct spec sp = {0, 0, 0, payload, 0x18, 1, next_seq};
            size_t l3, l4;
            size_t len = build(buf, &sp, &l3, &l4);
            set_hdr(buf, 1, 1, (unsigned)l4 + 32, 1448, (unsigned)l4, 16);
            struct iovec v = {buf, len};
            ssize_t n = netbe_send(a, &v, 1);
            if (n == (ssize_t)len) {
                taken++;
                next_seq += (uint32_t)payload;
            } else {
                CHECK(n == -EAGAIN, "send returned %zd", n);
                refused++;
            }
        }
        /* The receiver reads a little at a time. */
        for (int i = 0; i < 20; i++) {
            struct iovec rv = {rx, sizeof rx};
            ssize_t n = netbe_recv(b, &rv, 1);
            if (n <= 0)
                break;
            uint32_t seq = be_get32(rx + 14 + 20 + 4);
            if (seq != want_seq) {
                CHECK(seq == want_seq, "segment seq %u, expected %u", seq, want_seq);
                want_seq = seq;
            }
            want_seq += (uint32_t)(n - 14 - 20 - 32);
            received++;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    CHECK(taken == 200, "%d frames taken", taken);
    CHECK(refused > 0, "the pair never filled up: nothing was tested");
    CHECK(tx_events > 0, "no NETBE_EV_TX after a refused send");
    CHECK(want_seq == next_seq, "received up to seq %u, sent up to %u", want_seq, next_seq);
    CHECK(received == 200 * 42, "%d segments received, expected %d", received, 200 * 42);
    netbe_close(a);
    netbe_close(b);
    event_base_free(base);
}

static void test_rx_merge(void)
{
    static uint8_t frame[3000], g[4][1024];
    for (size_t i = 0; i < sizeof frame; i++)
        frame[i] = (uint8_t)(i * 3);
    memset(frame, 0, 12);
    struct iovec fv[2] = {{frame, 1000}, {frame + 1000, 2000}};
    struct iovec bufs[4] = {{g[0], 1024}, {g[1], 1024}, {g[2], 1024}, {g[3], 1024}};
    uint32_t lens[4] = {0};
    int n = netbe_rx_merge(fv, 2, bufs, 4, lens);
    CHECK(n == 3, "rx_merge used %d buffers, expected 3", n);
    CHECK(lens[0] == 1024 && lens[1] == 1024 && lens[2] == 952, "lens %u %u %u", lens[0],
          lens[1], lens[2]);
    CHECK(g[0][10] == 3 && g[0][11] == 0, "num_buffers %u", g[0][10] | g[0][11] << 8);
    CHECK(!memcmp(g[0] + 12, frame + 12, 1012) && !memcmp(g[1], frame + 1024, 1024) &&
          !memcmp(g[2], frame + 2048, 952), "data differs");
    CHECK(netbe_rx_merge(fv, 2, bufs, 2, lens) == -EMSGSIZE, "too few buffers taken");
    struct iovec tiny = {g[0], 8};
    CHECK(netbe_rx_merge(fv, 2, &tiny, 1, lens) == -EINVAL, "first buffer under 12 taken");
    struct iovec shortf = {frame, 11};
    CHECK(netbe_rx_merge(&shortf, 1, bufs, 4, lens) == -EINVAL, "11-byte frame taken");
    struct iovec one = {frame, 500};
    CHECK(netbe_rx_merge(&one, 1, bufs, 4, lens) == 1 && lens[0] == 500 && g[0][10] == 1,
          "a small frame takes one buffer");
}

int main(void)
{
    RUN(test_segmentation());
    RUN(test_ufo());
    RUN(test_csum());
    RUN(test_lies());
    RUN(test_ext_headers());
    RUN(test_truncated());
    RUN(test_random());
    RUN(test_pair());
    RUN(test_backpressure());
    RUN(test_rx_merge());
    return check_summary();
}
