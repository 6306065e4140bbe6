/*
** policy_test.c: the per-packet policy on crafted frames. Every match field,
** truncated and malformed headers (under ASan a read past the end fails the
** run), VLAN tags, IPv6 extension headers, actions, Lua hooks and their
** sandbox, builder errors, carrying counters over, and the index against
** rule sets large enough to spread over every bucket.
*/
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "netbe.h"

static const uint8_t MAC_G[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
static const uint8_t MAC_H[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};

/* A frame under construction; IP is where its IP header starts. */
struct fb {
    uint8_t b[2048];
    size_t n, ip;
};

static void put(struct fb *f, const void *p, size_t n)
{
    memcpy(f->b + f->n, p, n);
    f->n += n;
}

static void put8(struct fb *f, unsigned v) { f->b[f->n++] = (uint8_t)v; }
static void put16(struct fb *f, unsigned v) { put8(f, v >> 8); put8(f, v & 255); }

static void eth(struct fb *f, const uint8_t *dst, const uint8_t *src, unsigned type)
{
    f->n = f->ip = 0;
    put(f, dst, 6);
    put(f, src, 6);
    put16(f, type);
}

static void vlan(struct fb *f, unsigned tpid, unsigned id, unsigned inner)
{
    f->n -= 2;
    put16(f, tpid);
    put16(f, id);
    put16(f, inner);
}

/* The IP header's length field tells the truth about what follows it. */
static void seal(struct fb *f)
{
    uint8_t *ip = f->b + f->ip;
    unsigned n = (unsigned)(f->n - f->ip) - (ip[0] >> 4 == 6 ? 40 : 0);
    ip[ip[0] >> 4 == 6 ? 4 : 2] = (uint8_t)(n >> 8);
    ip[ip[0] >> 4 == 6 ? 5 : 3] = (uint8_t)n;
}

/* IPv4 header with protocol PROTO, fragment field FRAG. */
static void ip4(struct fb *f, const char *src, const char *dst, unsigned proto, unsigned frag)
{
    uint8_t a[4], b[4];
    sscanf(src, "%hhu.%hhu.%hhu.%hhu", &a[0], &a[1], &a[2], &a[3]);
    sscanf(dst, "%hhu.%hhu.%hhu.%hhu", &b[0], &b[1], &b[2], &b[3]);
    f->ip = f->n;
    put8(f, 0x45); put8(f, 0); put16(f, 60); put16(f, 0); put16(f, frag);
    put8(f, 64); put8(f, proto); put16(f, 0);
    put(f, a, 4);
    put(f, b, 4);
}

static void ip6(struct fb *f, uint8_t last_src_byte, unsigned nh)
{
    uint8_t src[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last_src_byte};
    uint8_t dst[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    f->ip = f->n;
    put16(f, 0x6000); put16(f, 0); put16(f, 40); put8(f, nh); put8(f, 64);
    put(f, src, 16);
    put(f, dst, 16);
}

static void tcp(struct fb *f, unsigned sport, unsigned dport, unsigned flags)
{
    put16(f, sport); put16(f, dport);
    for (int i = 0; i < 8; i++) put8(f, 0);
    put8(f, 0x50); put8(f, flags); put16(f, 1000); put16(f, 0); put16(f, 0);
    seal(f);
}

static void udp(struct fb *f, unsigned sport, unsigned dport)
{
    put16(f, sport); put16(f, dport); put16(f, 8); put16(f, 0);
    seal(f);
}

static void icmp(struct fb *f, unsigned type)
{
    put8(f, type); put8(f, 0); put16(f, 0); put16(f, 0); put16(f, 0);
    seal(f);
}

/* A TCP/IPv4 frame from the guest's MAC. */
static void tcp4(struct fb *f, const char *src, const char *dst, unsigned sp, unsigned dp,
                 unsigned flags)
{
    eth(f, MAC_H, MAC_G, 0x0800);
    ip4(f, src, dst, 6, 0);
    tcp(f, sp, dp, flags);
}

static struct netbe_rule rule(const char *name, enum netbe_action action)
{
    struct netbe_rule r;
    memset(&r, 0, sizeof r);
    r.name = name;
    r.action = action;
    memset(r.src_mac_mask, 0xff, 6);
    memset(r.dst_mac_mask, 0xff, 6);
    return r;
}

static netbe_policy *build(const struct netbe_rule *rules, int n, int def, char *err)
{
    struct netbe_policy_desc d = {rules, n, def, NETBE_DROP, 0, 0, 0};
    netbe_policy *p = NULL;
    int rc = netbe_policy_new(&p, &d, err, NETBE_ERRMAX);
    CHECK(rc == 0, "build: %s", err);
    return p;
}

/* Verdict of a one-rule "drop if it matches" policy on F. */
static int matches(const struct netbe_rule *r0, int dir, const struct fb *f)
{
    char err[NETBE_ERRMAX];
    struct netbe_rule r = *r0;
    r.action = NETBE_ACT_DROP;
    netbe_policy *p = build(&r, 1, NETBE_PASS, err);
    if (!p)
        return -1;
    int v = netbe_policy_eval(p, dir, f->b, f->n, 0) == NETBE_DROP;
    netbe_policy_free(p);
    return v;
}

static void set_ip4(uint8_t *out, const char *text)
{
    sscanf(text, "%hhu.%hhu.%hhu.%hhu", &out[0], &out[1], &out[2], &out[3]);
}

static void test_fields(void)
{
    struct fb f;
    tcp4(&f, "10.0.0.2", "10.0.0.1", 40000, 22, 0x02);
    struct netbe_rule r = rule("x", NETBE_ACT_DROP);

    r.match = NETBE_M_DIR; r.dir = NETBE_DIR_FROM_GUEST;
    CHECK(matches(&r, NETBE_DIR_FROM_GUEST, &f) == 1, "dir from_guest");
    CHECK(matches(&r, NETBE_DIR_TO_GUEST, &f) == 0, "dir to_guest");

    r = rule("x", 0); r.match = NETBE_M_SRC_MAC; memcpy(r.src_mac, MAC_G, 6);
    CHECK(matches(&r, 0, &f) == 1, "src_mac");
    r.src_mac[5] ^= 1;
    CHECK(matches(&r, 0, &f) == 0, "src_mac other");
    memset(r.src_mac_mask + 3, 0, 3);
    CHECK(matches(&r, 0, &f) == 1, "src_mac under a /24 mask");

    r = rule("x", 0); r.match = NETBE_M_DST_MAC; memcpy(r.dst_mac, MAC_H, 6);
    CHECK(matches(&r, 0, &f) == 1, "dst_mac");
    memcpy(r.dst_mac, MAC_G, 6);
    CHECK(matches(&r, 0, &f) == 0, "dst_mac other");

    r = rule("x", 0); r.match = NETBE_M_ETHERTYPE; r.ethertype = 0x0800;
    CHECK(matches(&r, 0, &f) == 1, "ethertype");
    r.ethertype = 0x86dd;
    CHECK(matches(&r, 0, &f) == 0, "ethertype other");

    r = rule("x", 0); r.match = NETBE_M_VLAN; r.vlan = 0xffff;
    CHECK(matches(&r, 0, &f) == 1, "untagged frame matches vlan none");
    r.vlan = 100;
    CHECK(matches(&r, 0, &f) == 0, "untagged frame does not match vlan 100");

    r = rule("x", 0); r.match = NETBE_M_SRC_IP; r.ip_family = 4;
    set_ip4(r.src_ip, "10.0.0.0"); r.src_plen = 24;
    CHECK(matches(&r, 0, &f) == 1, "src_ip 10.0.0.0/24");
    set_ip4(r.src_ip, "10.0.1.0");
    CHECK(matches(&r, 0, &f) == 0, "src_ip 10.0.1.0/24");
    r.src_plen = 0;
    CHECK(matches(&r, 0, &f) == 1, "src_ip /0 matches any IPv4");
    r.ip_family = 6;
    CHECK(matches(&r, 0, &f) == 0, "an IPv6 prefix never matches IPv4");

    r = rule("x", 0); r.match = NETBE_M_DST_IP; r.ip_family = 4;
    set_ip4(r.dst_ip, "10.0.0.1"); r.dst_plen = 32;
    CHECK(matches(&r, 0, &f) == 1, "dst_ip /32");
    set_ip4(r.dst_ip, "10.0.0.3");
    CHECK(matches(&r, 0, &f) == 0, "dst_ip other /32");

    r = rule("x", 0); r.match = NETBE_M_PROTO; r.proto = 6;
    CHECK(matches(&r, 0, &f) == 1, "proto tcp");
    r.proto = 17;
    CHECK(matches(&r, 0, &f) == 0, "proto udp");

    r = rule("x", 0); r.match = NETBE_M_DPORT; r.dport_lo = 20; r.dport_hi = 22;
    CHECK(matches(&r, 0, &f) == 1, "dport 20-22");
    r.dport_lo = r.dport_hi = 23;
    CHECK(matches(&r, 0, &f) == 0, "dport 23");
    r = rule("x", 0); r.match = NETBE_M_SPORT; r.sport_lo = 32768; r.sport_hi = 65535;
    CHECK(matches(&r, 0, &f) == 1, "sport 32768-65535");
    r.sport_hi = 39999;
    CHECK(matches(&r, 0, &f) == 0, "sport 32768-39999");

    r = rule("x", 0); r.match = NETBE_M_TCP_FLAGS; r.tcp_flags = 0x02; r.tcp_flags_mask = 0x12;
    CHECK(matches(&r, 0, &f) == 1, "tcp syn,!ack on a SYN");
    tcp4(&f, "10.0.0.2", "10.0.0.1", 40000, 22, 0x12);
    CHECK(matches(&r, 0, &f) == 0, "tcp syn,!ack on a SYN-ACK");

    eth(&f, MAC_H, MAC_G, 0x0800);
    ip4(&f, "10.0.0.2", "10.0.0.1", 1, 0);
    icmp(&f, 8);
    r = rule("x", 0); r.match = NETBE_M_ICMP_TYPE; r.icmp_type = 8;
    CHECK(matches(&r, 0, &f) == 1, "icmp echo request");
    r.icmp_type = 0;
    CHECK(matches(&r, 0, &f) == 0, "icmp echo reply");

    r = rule("x", 0); r.match = NETBE_M_LEN; r.len_lo = 0; r.len_hi = (unsigned)f.n;
    CHECK(matches(&r, 0, &f) == 1, "len up to the frame length");
    r.len_hi = (unsigned)f.n - 1;
    CHECK(matches(&r, 0, &f) == 0, "len below the frame length");

    eth(&f, MAC_H, MAC_G, 0x0800);
    ip4(&f, "10.0.0.2", "10.0.0.1", 17, 0);
    udp(&f, 68, 67);
    r = rule("x", 0); r.match = NETBE_M_PROTO | NETBE_M_DPORT | NETBE_M_SPORT;
    r.proto = 17; r.sport_lo = r.sport_hi = 68; r.dport_lo = r.dport_hi = 67;
    CHECK(matches(&r, 0, &f) == 1, "udp 68 -> 67");
}

static void test_arp_vlan_ipv6(void)
{
    struct fb f;
    struct netbe_rule r;
    uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, tip[4] = {10, 0, 0, 1};
    uint8_t sip[4] = {10, 0, 0, 2};
    eth(&f, bcast, MAC_G, 0x0806);
    put16(&f, 1); put16(&f, 0x0800); put8(&f, 6); put8(&f, 4); put16(&f, 1);
    put(&f, MAC_G, 6); put(&f, sip, 4); put(&f, bcast, 6); put(&f, tip, 4);
    r = rule("x", 0); r.match = NETBE_M_SRC_IP | NETBE_M_ETHERTYPE; r.ethertype = 0x0806;
    r.ip_family = 4; set_ip4(r.src_ip, "10.0.0.2"); r.src_plen = 32;
    CHECK(matches(&r, 0, &f) == 1, "ARP sender address");
    set_ip4(r.src_ip, "10.0.0.9");
    CHECK(matches(&r, 0, &f) == 0, "ARP sender address spoofed");
    f.n -= 1;
    set_ip4(r.src_ip, "10.0.0.2");
    CHECK(matches(&r, 0, &f) == 0, "truncated ARP has no addresses");

    eth(&f, MAC_H, MAC_G, 0x0800);
    vlan(&f, 0x8100, 100, 0x0800);
    ip4(&f, "10.0.0.2", "10.0.0.1", 6, 0);
    tcp(&f, 1000, 443, 0x10);
    r = rule("x", 0); r.match = NETBE_M_VLAN | NETBE_M_DPORT | NETBE_M_ETHERTYPE;
    r.vlan = 100; r.dport_lo = r.dport_hi = 443; r.ethertype = 0x0800;
    CHECK(matches(&r, 0, &f) == 1, "VLAN 100, inner IPv4 TCP 443");
    r.vlan = 101;
    CHECK(matches(&r, 0, &f) == 0, "VLAN 101");
    eth(&f, MAC_H, MAC_G, 0x0800);
    vlan(&f, 0x88a8, 7, 0x8100);
    put16(&f, 100); put16(&f, 0x0800);
    ip4(&f, "10.0.0.2", "10.0.0.1", 6, 0);
    tcp(&f, 1000, 443, 0x10);
    r.vlan = 7;
    CHECK(matches(&r, 0, &f) == 1, "QinQ: outer id 7, ports past both tags");

    /* IPv6, hop-by-hop and destination options, then TCP. */
    eth(&f, MAC_H, MAC_G, 0x86dd);
    ip6(&f, 2, 0);
    put8(&f, 60); put8(&f, 0); for (int i = 0; i < 6; i++) put8(&f, 0);
    put8(&f, 6); put8(&f, 1); for (int i = 0; i < 14; i++) put8(&f, 0);
    tcp(&f, 5555, 80, 0x02);
    r = rule("x", 0); r.match = NETBE_M_PROTO | NETBE_M_DPORT | NETBE_M_SRC_IP;
    r.proto = 6; r.dport_lo = r.dport_hi = 80; r.ip_family = 6;
    r.src_ip[0] = 0xfd; r.src_plen = 8;
    CHECK(matches(&r, 0, &f) == 1, "IPv6 through two extension headers to TCP 80");
    r.src_ip[0] = 0xfe;
    CHECK(matches(&r, 0, &f) == 0, "IPv6 other prefix");
    /* A later fragment: protocol known, ports absent. */
    eth(&f, MAC_H, MAC_G, 0x86dd);
    ip6(&f, 2, 44);
    put8(&f, 6); put8(&f, 0); put16(&f, 8 << 3); put16(&f, 0); put16(&f, 1);
    tcp(&f, 5555, 80, 0x02);
    r = rule("x", 0); r.match = NETBE_M_PROTO; r.proto = 6;
    CHECK(matches(&r, 0, &f) == 1, "IPv6 later fragment: proto tcp known");
    r.match = NETBE_M_DPORT; r.dport_lo = r.dport_hi = 80;
    CHECK(matches(&r, 0, &f) == 0, "IPv6 later fragment: no ports");
    /* ICMPv6 neighbor solicitation. */
    eth(&f, MAC_H, MAC_G, 0x86dd);
    ip6(&f, 2, 58);
    icmp(&f, 135);
    r = rule("x", 0); r.match = NETBE_M_ICMP_TYPE | NETBE_M_PROTO; r.proto = 58; r.icmp_type = 135;
    CHECK(matches(&r, 0, &f) == 1, "ICMPv6 type 135");
    /* An IPv4 later fragment has no ports either. */
    eth(&f, MAC_H, MAC_G, 0x0800);
    ip4(&f, "10.0.0.2", "10.0.0.1", 6, 100);
    tcp(&f, 1, 22, 0);
    r = rule("x", 0); r.match = NETBE_M_DPORT; r.dport_lo = r.dport_hi = 22;
    CHECK(matches(&r, 0, &f) == 0, "IPv4 later fragment: no ports");
}

/* Truncate a frame at every length and check that a rule on each header
** matches only when the header is whole. ASan catches any over-read. */
static void test_truncated(void)
{
    char err[NETBE_ERRMAX];
    struct fb f, g;
    tcp4(&f, "10.0.0.2", "10.0.0.1", 40000, 22, 0x02);
    struct netbe_rule r = rule("all", NETBE_ACT_DROP);
    r.match = NETBE_M_DPORT | NETBE_M_TCP_FLAGS;
    r.dport_lo = r.dport_hi = 22; r.tcp_flags = r.tcp_flags_mask = 0x02;
    netbe_policy *p = build(&r, 1, NETBE_PASS, err);
    int wrong = 0;
    for (size_t n = 0; n <= f.n; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, f.b, n);
        int v = netbe_policy_eval(p, 0, copy, n, 0);
        wrong += v != (n == f.n ? NETBE_DROP : NETBE_PASS);
        free(copy);
    }
    CHECK(wrong == 0, "%d truncated lengths judged wrong", wrong);
    netbe_policy_free(p);

    /* Lying headers: IHL below 5, IHL past the end, wrong version. */
    r = rule("p", NETBE_ACT_DROP); r.match = NETBE_M_PROTO; r.proto = 6;
    g = f; g.b[14] = 0x44;
    CHECK(matches(&r, 0, &g) == 0, "IHL 4 is not IPv4");
    g = f; g.b[14] = 0x4f;
    CHECK(matches(&r, 0, &g) == 0, "IHL past the frame end");
    g = f; g.b[14] = 0x65;
    CHECK(matches(&r, 0, &g) == 0, "version 6 in an IPv4 ethertype");
    /* IPv6 extension header whose length runs past the end. */
    eth(&g, MAC_H, MAC_G, 0x86dd);
    ip6(&g, 2, 0);
    put8(&g, 6); put8(&g, 200); for (int i = 0; i < 6; i++) put8(&g, 0);
    tcp(&g, 1, 22, 0);
    r = rule("d", 0); r.match = NETBE_M_DPORT; r.dport_lo = r.dport_hi = 22;
    CHECK(matches(&r, 0, &g) == 0, "IPv6 extension length past the end");
    /* Random garbage of every length must not crash anything. */
    struct netbe_rule many[4] = {rule("a", NETBE_ACT_COUNT), rule("b", NETBE_ACT_COUNT),
                                 rule("c", NETBE_ACT_COUNT), rule("d", NETBE_ACT_DROP)};
    many[0].match = NETBE_M_DPORT; many[0].dport_hi = 65535;
    many[1].match = NETBE_M_ICMP_TYPE;
    many[2].match = NETBE_M_SRC_IP; many[2].ip_family = 6;
    many[3].match = NETBE_M_TCP_FLAGS;
    p = build(many, 4, NETBE_PASS, err);
    srand(7);
    for (int i = 0; i < 20000; i++) {
        size_t n = (size_t)(rand() % 120);
        uint8_t *buf = malloc(n ? n : 1);
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)rand();
        if (n > 13) { buf[12] = (i & 1) ? 0x86 : 0x08; buf[13] = (i & 1) ? 0xdd : 0x00; }
        if (n > 14) buf[14] = (i & 1) ? 0x60 : 0x45;
        netbe_policy_eval(p, i & 1, buf, n, 0);
        free(buf);
    }
    struct netbe_policy_stats st;
    netbe_policy_get_stats(p, &st);
    CHECK(st.pass_frames[0] + st.pass_frames[1] + st.drop_frames[0] + st.drop_frames[1] == 20000,
          "every random frame counted once");
    netbe_policy_free(p);
}

/* A field is read only from a header whose lengths hold: the IP header
** within the frame and its own length fields, the transport header whole
** within the IP packet (not in Ethernet padding), extension headers whole.
** Each case is checked against the same frame with true lengths. */
static void test_lengths(void)
{
    struct fb f, g;
    struct netbe_rule ip = rule("ip", 0), port = rule("port", 0), proto = rule("proto", 0);
    ip.match = NETBE_M_SRC_IP; ip.ip_family = 4; set_ip4(ip.src_ip, "10.0.0.2"); ip.src_plen = 32;
    port.match = NETBE_M_DPORT; port.dport_lo = port.dport_hi = 22;
    proto.match = NETBE_M_PROTO; proto.proto = 6;
    tcp4(&f, "10.0.0.2", "10.0.0.1", 40000, 22, 0x02);
    CHECK(matches(&ip, 0, &f) == 1 && matches(&port, 0, &f) == 1, "the true frame");
    g = f; g.b[17] += 1;
    CHECK(matches(&ip, 0, &g) == 0, "IPv4 total length one past the frame");
    g = f; g.b[16] = 0; g.b[17] = 19;
    CHECK(matches(&ip, 0, &g) == 0, "IPv4 total length below its header length");
    g = f; g.b[17] = 20 + 10;
    CHECK(matches(&port, 0, &g) == 0 && matches(&proto, 0, &g) == 1,
          "TCP header cut short by the IP length: protocol, no ports");
    g = f; g.b[17] = 20;
    CHECK(matches(&port, 0, &g) == 0, "a TCP header in the Ethernet padding");
    g = f; g.b[14 + 20 + 12] = 0x40;
    CHECK(matches(&port, 0, &g) == 0 && matches(&proto, 0, &g) == 1,
          "TCP data offset below 20: protocol, no ports");

    eth(&f, MAC_H, MAC_G, 0x0800);
    ip4(&f, "10.0.0.2", "10.0.0.1", 1, 0);
    icmp(&f, 8);
    struct netbe_rule it = rule("icmp", 0);
    it.match = NETBE_M_ICMP_TYPE; it.icmp_type = 8;
    CHECK(matches(&it, 0, &f) == 1, "ICMP type");
    f.b[17] = 20;
    CHECK(matches(&it, 0, &f) == 0, "an ICMP header in the Ethernet padding");

    /* SCTP: ports from its whole 12-byte common header only. */
    eth(&f, MAC_H, MAC_G, 0x0800);
    ip4(&f, "10.0.0.2", "10.0.0.1", 132, 0);
    put16(&f, 5000); put16(&f, 22); put16(&f, 0); put16(&f, 0); put16(&f, 0); put16(&f, 0);
    seal(&f);
    CHECK(matches(&port, 0, &f) == 1, "SCTP ports");
    f.b[17] -= 4;
    CHECK(matches(&port, 0, &f) == 0, "SCTP common header cut to 8 bytes");

    eth(&f, MAC_H, MAC_G, 0x86dd);
    ip6(&f, 2, 6);
    tcp(&f, 40000, 22, 0x02);
    struct netbe_rule ip6r = rule("ip6", 0);
    ip6r.match = NETBE_M_SRC_IP; ip6r.ip_family = 6; ip6r.src_ip[0] = 0xfd; ip6r.src_plen = 8;
    CHECK(matches(&ip6r, 0, &f) == 1 && matches(&port, 0, &f) == 1, "the true IPv6 frame");
    g = f; g.b[14 + 5] += 1;
    CHECK(matches(&ip6r, 0, &g) == 0, "IPv6 payload length one past the frame");
    /* Hop-by-hop options of 16 bytes, of which the packet holds 8. */
    eth(&f, MAC_H, MAC_G, 0x86dd);
    ip6(&f, 2, 0);
    put8(&f, 6); put8(&f, 1); for (int i = 0; i < 6; i++) put8(&f, 0);
    seal(&f);
    tcp(&f, 40000, 22, 0x02);
    f.b[14 + 5] = 8;
    CHECK(matches(&proto, 0, &f) == 0 && matches(&ip6r, 0, &f) == 1,
          "an extension header past the packet: addresses, no protocol");
}

static void test_actions(void)
{
    char err[NETBE_ERRMAX];
    struct fb f;
    tcp4(&f, "10.0.0.2", "10.0.0.1", 40000, 22, 0x02);
    struct netbe_rule r[3] = {rule("count", NETBE_ACT_COUNT), rule("rate", NETBE_ACT_RATE),
                              rule("pass", NETBE_ACT_PASS)};
    r[1].rate_unit = NETBE_RATE_FRAMES; r[1].rate = 10; r[1].burst = 2;
    netbe_policy *p = build(r, 3, NETBE_DROP, err);
    uint64_t t = 1000000000;
    int v1 = netbe_policy_eval(p, 0, f.b, f.n, t);
    int v2 = netbe_policy_eval(p, 0, f.b, f.n, t);
    int v3 = netbe_policy_eval(p, 0, f.b, f.n, t);
    int v4 = netbe_policy_eval(p, 0, f.b, f.n, t + 100000000);   /* +0.1 s: one token */
    int v5 = netbe_policy_eval(p, 0, f.b, f.n, t + 100000000);
    CHECK(v1 == NETBE_PASS && v2 == NETBE_PASS && v3 == NETBE_DROP, "burst of 2 then drop");
    CHECK(v4 == NETBE_PASS && v5 == NETBE_DROP, "one token after 0.1 s at 10/s");
    struct netbe_rule_stats rs;
    netbe_policy_rule_stats(p, 0, &rs);
    CHECK(rs.hits == 5 && rs.bytes == 5 * f.n && rs.drops == 0, "count saw all 5: %llu",
          (unsigned long long)rs.hits);
    netbe_policy_rule_stats(p, 1, &rs);
    CHECK(rs.hits == 5 && rs.drops == 2 && strcmp(rs.name, "rate") == 0, "rate dropped 2");
    netbe_policy_rule_stats(p, 2, &rs);
    CHECK(rs.hits == 3, "pass saw the 3 conforming frames");
    CHECK(netbe_policy_rule_stats(p, 3, &rs) == -ENOENT, "rule 3 out of range");
    struct netbe_policy_stats st;
    netbe_policy_get_stats(p, &st);
    CHECK(st.pass_frames[0] == 3 && st.drop_frames[0] == 2 && st.pass_bytes[0] == 3 * f.n &&
          st.nrules == 3, "direction counters");
    netbe_policy_free(p);

    /* Bits: 8000 bit/s, burst one frame of f.n bytes. */
    r[1].rate_unit = NETBE_RATE_BITS; r[1].rate = 8000; r[1].burst = (double)f.n * 8;
    p = build(r + 1, 1, NETBE_PASS, err);
    CHECK(netbe_policy_eval(p, 0, f.b, f.n, t) == NETBE_PASS, "bits: first frame fits");
    CHECK(netbe_policy_eval(p, 0, f.b, f.n, t) == NETBE_DROP, "bits: second does not");
    uint64_t later = t + (uint64_t)f.n * 1000000;                /* f.n*8 bits at 8000/s */
    CHECK(netbe_policy_eval(p, 0, f.b, f.n, later) == NETBE_PASS, "bits: refilled");
    netbe_policy_free(p);

    /* Default verdict with no rule matching. */
    p = build(NULL, 0, NETBE_DROP, err);
    CHECK(netbe_policy_eval(p, 1, f.b, f.n, 0) == NETBE_DROP, "empty policy, default drop");
    netbe_policy_free(p);
}

static netbe_policy *hook_policy(const char *src, int fail, unsigned budget, size_t mem,
                                 char *err)
{
    struct netbe_rule r = rule("hook", NETBE_ACT_LUA);
    r.hook = src;
    r.hook_len = strlen(src);
    struct netbe_policy_desc d = {&r, 1, NETBE_PASS, fail, budget, mem, 0};
    netbe_policy *p = NULL;
    if (netbe_policy_new(&p, &d, err, NETBE_ERRMAX) < 0)
        return NULL;
    return p;
}

static uint64_t hook_errors(netbe_policy *p)
{
    struct netbe_policy_stats st;
    netbe_policy_get_stats(p, &st);
    return st.hook_errors;
}

/* Keys and verdicts made at run time are the view's and the verdicts',
** which the view finds by the address of Lua's one copy of a string. */
static void test_hook_keys(struct fb *f)
{
    char err[NETBE_ERRMAX];
    netbe_policy *p = hook_policy(
        "return function(pkt)\n"
        "local k, v = 'dp' .. 'ort', 'dr' .. 'op'\n"
        "if pkt[k] == 22 and pkt[1] == nil and pkt[true] == nil and pkt[pkt] == nil and\n"
        "   pkt.family == 4 and pkt.dir == 'from_guest' and pkt.byte ~= nil then\n"
        "  return v end\n"
        "return ('pa' .. 'ss') .. (pkt.len > 0 and '' or 'x')\n"
        "end\n", NETBE_PASS, 0, 0, err);
    CHECK(p != NULL, "the hook builds: %s", err);
    if (p) {
        CHECK(netbe_policy_eval(p, 1, f->b, f->n, 0) == NETBE_DROP && hook_errors(p) == 0,
              "computed key and verdict: drop");
        CHECK(netbe_policy_eval(p, 0, f->b, f->n, 0) == NETBE_PASS && hook_errors(p) == 0,
              "computed verdict: pass");
        netbe_policy_free(p);
    }
    p = hook_policy("return function() return 'pass ' end", NETBE_DROP, 0, 0, err);
    CHECK(p && netbe_policy_eval(p, 0, f->b, f->n, 0) == NETBE_DROP && hook_errors(p) == 1,
          "'pass ' is no verdict");
    netbe_policy_free(p);
}

/* Hooks with no loop and no call run without Lua's count hook when they
** are shorter than its step. The bounds hold all the same. */
static void test_straight_hooks(struct fb *f)
{
    char err[NETBE_ERRMAX], src[2048];
    netbe_policy *p;
    /* About 150 instructions: past a budget of 100, within the default. */
    int n = snprintf(src, sizeof src, "return function() local x = 0 ");
    for (int i = 0; i < 150; i++)
        n += snprintf(src + n, sizeof src - (size_t)n, "x = x + 1 ");
    snprintf(src + n, sizeof src - (size_t)n, "return 'drop' end");
    p = hook_policy(src, NETBE_PASS, 100, 0, err);
    CHECK(p && netbe_policy_eval(p, 0, f->b, f->n, 0) == NETBE_PASS && hook_errors(p) == 1,
          "a straight hook longer than its budget fails");
    netbe_policy_free(p);
    p = hook_policy(src, NETBE_PASS, 0, 0, err);
    CHECK(p && netbe_policy_eval(p, 0, f->b, f->n, 0) == NETBE_DROP && hook_errors(p) == 0,
          "the same hook within the default budget: %s", err);
    netbe_policy_free(p);
    /* 14 instructions; the first call copies 3 MiB past a time bound of 1 us,
    ** which the allocator finds. The second returns at once, with no count
    ** hook left from the first: one left would spend the budget of 50 in
    ** four instructions. */
    struct netbe_rule r = rule("hook", NETBE_ACT_LUA);
    r.hook = "local s, x = string.rep('x', 1 << 19)\n"
             "return function()\n"
             "if x then return 'drop' end\n"
             "x = s .. s\n"
             "x = x .. x\n"
             "end\n";
    r.hook_len = strlen(r.hook);
    struct netbe_policy_desc d = {&r, 1, NETBE_PASS, NETBE_PASS, 50, 16u << 20, 1000};
    p = NULL;
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == 0, "%s", err);
    if (p) {
        int v1 = netbe_policy_eval(p, 0, f->b, f->n, 0), e1 = (int)hook_errors(p);
        int v2 = netbe_policy_eval(p, 0, f->b, f->n, 0), e2 = (int)hook_errors(p);
        CHECK(v1 == NETBE_PASS && e1 == 1, "past the time bound: %d, %d errors", v1, e1);
        CHECK(v2 == NETBE_DROP && e2 == 1, "the next call runs unhooked: %d, %d errors", v2,
              e2);
        netbe_policy_free(p);
    }
}

static void test_hooks(void)
{
    char err[NETBE_ERRMAX];
    struct fb f;
    tcp4(&f, "10.0.0.2", "10.0.0.1", 40000, 22, 0x02);
    netbe_policy *p = hook_policy(
        "return function(pkt)\n"
        "assert(pkt.len == 54 and pkt.dir == 'from_guest' and pkt.ethertype == 0x0800)\n"
        "assert(pkt.src_mac == '52:54:00:12:34:56' and pkt.dst_mac == '02:00:00:00:00:01')\n"
        "assert(pkt.src_ip == '10.0.0.2' and pkt.dst_ip == '10.0.0.1' and pkt.family == 4)\n"
        "assert(pkt.proto == 6 and pkt.sport == 40000 and pkt.tcp_flags == 2)\n"
        "assert(pkt.vlan == nil and pkt.icmp_type == nil and pkt.nonsense == nil)\n"
        "assert(pkt:byte(12) == 8 and pkt:u16(12) == 0x0800 and pkt:u32(26) == 0x0a000002)\n"
        "assert(pkt:byte(54) == nil and pkt:byte(-1) == nil and pkt:u16(53) == nil)\n"
        "if pkt.dport == 22 then return 'drop' end\n"
        "end\n", NETBE_PASS, 0, 0, err);
    CHECK(p != NULL, "hook builds: %s", err);
    if (p) {
        CHECK(netbe_policy_eval(p, 1, f.b, f.n, 0) == NETBE_DROP, "hook drops port 22");
        CHECK(hook_errors(p) == 0, "the view's fields are right (asserts passed)");
        tcp4(&f, "10.0.0.2", "10.0.0.1", 40000, 80, 0x02);
        CHECK(netbe_policy_eval(p, 1, f.b, f.n, 0) == NETBE_PASS, "nil continues to default");
        netbe_policy_free(p);
    }
    /* A tagged ICMP frame: the fields a TCP frame lacks. */
    eth(&f, MAC_G, MAC_H, 0x0800);
    vlan(&f, 0x8100, 100, 0x0800);
    ip4(&f, "10.0.0.1", "10.0.0.2", 1, 0);
    icmp(&f, 8);
    p = hook_policy("return function(pkt)\n"
                    "assert(pkt.vlan == 100 and pkt.icmp_type == 8 and pkt.dir == 'to_guest')\n"
                    "assert(pkt.sport == nil and pkt.tcp_flags == nil)\n"
                    "return 'drop' end\n", NETBE_PASS, 0, 0, err);
    CHECK(p && netbe_policy_eval(p, 0, f.b, f.n, 0) == NETBE_DROP && hook_errors(p) == 0,
          "vlan, icmp_type and dir in the view: %s", err);
    netbe_policy_free(p);
    tcp4(&f, "10.0.0.2", "10.0.0.1", 40000, 22, 0x02);
    static const struct { const char *src, *why; } bad[] = {
        {"while true do end", "runaway loop"},
        {"local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 100) .. i end", "memory hog"},
        {"error('boom')", "error"},
        {"return 42", "not a verdict"},
        {"return os.exit(1)", "os is not in the sandbox"},
        {"return io.open('/etc/passwd')", "io is not in the sandbox"},
        {"return load('return 1')()", "load is not in the sandbox"},
        {"return require('os')", "require is not in the sandbox"},
        {"return pcall(function() while true do end end)", "pcall is not in the sandbox"},
        {"return string.dump(print)", "string.dump is not in the sandbox"},
        {"setmetatable({}, {__gc = function() while true do end end})",
         "no finalizers: setmetatable is not in the sandbox"},
        {"return string.rep('x', 1 << 30)", "a huge string"},
        {"::again:: goto again", "a backward goto"},
        {"local f = function() while true do end end f()", "a loop in a function it calls"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char src[256];
        snprintf(src, sizeof src, "return function(pkt) %s end", bad[i].src);
        p = hook_policy(src, NETBE_DROP, 100000, 1 << 20, err);
        CHECK(p != NULL, "%s builds: %s", bad[i].why, err);
        if (!p)
            continue;
        int v = netbe_policy_eval(p, 0, f.b, f.n, 0);
        CHECK(v == NETBE_DROP && hook_errors(p) == 1, "%s: fail-closed verdict and one error",
              bad[i].why);
        /* The sandbox stays usable after the failure. */
        v = netbe_policy_eval(p, 0, f.b, f.n, 0);
        CHECK(hook_errors(p) == 2, "%s: second call fails the same way", bad[i].why);
        netbe_policy_free(p);
    }
    p = hook_policy("return function() while true do end end", NETBE_PASS, 1000, 0, err);
    CHECK(p && netbe_policy_eval(p, 0, f.b, f.n, 0) == NETBE_PASS, "fail open passes");
    netbe_policy_free(p);
    p = hook_policy("this is not lua", NETBE_PASS, 0, 0, err);
    CHECK(!p && strstr(err, "rule 'hook': hook:1: ") && strstr(err, "syntax error"),
          "syntax: %s", err);
    p = hook_policy("return 'pass'", NETBE_PASS, 0, 0, err);
    CHECK(!p && strstr(err, "rule 'hook': the hook's chunk returned string (expected the "
                       "hook function"), "a chunk that is not a function's source: %s", err);
    p = hook_policy("return function() return 'pass' end", NETBE_PASS, 0, 2000, err);
    CHECK(!p && strstr(err, "hook_memory 2000 bytes"), "tiny memory limit: %s", err);
    p = hook_policy("while true do end", NETBE_PASS, 1000, 0, err);
    CHECK(!p && strstr(err, "rule 'hook': hook:1: ran past its instruction budget of 1000"),
          "a runaway chunk fails the build, naming the bound: %s", err);
    /* Locals the chunk sets up stay the hook's own between calls. */
    p = hook_policy("local n = 0\nreturn function() n = n + 1\n"
                    "if n > 2 then return 'drop' end end", NETBE_PASS, 0, 0, err);
    CHECK(p != NULL, "%s", err);
    if (p) {
        int v1 = netbe_policy_eval(p, 0, f.b, f.n, 0), v2 = netbe_policy_eval(p, 0, f.b, f.n, 0);
        int v3 = netbe_policy_eval(p, 0, f.b, f.n, 0);
        CHECK(v1 == NETBE_PASS && v2 == NETBE_PASS && v3 == NETBE_DROP && hook_errors(p) == 0,
              "a counter upvalue: %d %d %d", v1, v2, v3);
        netbe_policy_free(p);
    }
    test_hook_keys(&f);
    test_straight_hooks(&f);
    /* The chunk name comes from hook_name. */
    struct netbe_rule r = rule("named", NETBE_ACT_LUA);
    r.hook = "\n\nerror('at line 3')";
    r.hook_len = strlen(r.hook);
    r.hook_name = "@vm0.lua";
    struct netbe_policy_desc d = {&r, 1, NETBE_PASS, NETBE_DROP, 0, 0, 0};
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL &&
          strcmp(err, "rule 'named': vm0.lua:3: at line 3") == 0, "hook_name: %s", err);
}

/* The table of match fields: one per bit, in bit order, ending in NULL. */
static void test_field_table(void)
{
    const struct netbe_match_field *f;
    int n = 0;
    for (; (f = netbe_match_field(n)); n++)
        CHECK(f->bit == 1u << n && f->nmembers >= 1 && f->nmembers <= 3, "field %d", n);
    CHECK(n == 13 && !netbe_match_field(-1), "13 fields, then NULL");
    f = netbe_match_field(9);
    CHECK(f && strcmp(f->name, "dport") == 0 && f->bit == NETBE_M_DPORT &&
          strcmp(f->kind, "RANGE") == 0 && f->nmembers == 2 &&
          f->members[0].off == offsetof(struct netbe_rule, dport_lo) &&
          f->members[1].off == offsetof(struct netbe_rule, dport_hi) &&
          f->members[0].size == 2 && f->members[0].hi == 65535, "dport's row");
    f = netbe_match_field(5);
    CHECK(f && strcmp(f->name, "src_ip") == 0 && f->nmembers == 3 &&
          strcmp(f->members[0].name, "ip_family") == 0 && f->members[1].bytes &&
          f->members[1].match == NETBE_M_SRC_IP && f->members[2].match == 0 &&
          f->members[2].off == offsetof(struct netbe_rule, src_plen), "src_ip's row");
}

static void test_errors(void)
{
    char err[NETBE_ERRMAX];
    netbe_policy *p;
    struct netbe_rule r[2] = {rule("same", NETBE_ACT_PASS), rule("same", NETBE_ACT_DROP)};
    struct netbe_policy_desc d = {r, 2, NETBE_PASS, NETBE_DROP, 0, 0, 0};
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL && !p &&
          strstr(err, "name 'same' is already used by rule 1"), "duplicate: %s", err);
    r[1].name = "other";
    r[1].match = NETBE_M_SRC_IP; r[1].ip_family = 4; r[1].src_plen = 33;
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL &&
          strstr(err, "rule 'other': prefix length over 32"), "plen: %s", err);
    r[1].ip_family = 5;
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL && strstr(err, "family 5"),
          "family: %s", err);
    r[1] = rule("other", NETBE_ACT_DROP); r[1].match = NETBE_M_DPORT;
    r[1].dport_lo = 100; r[1].dport_hi = 10;
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL && strstr(err, "port range"),
          "range: %s", err);
    r[1] = rule("other", NETBE_ACT_DROP); r[1].match = NETBE_M_PROTO | NETBE_M_SPORT;
    r[1].proto = 1; r[1].sport_lo = r[1].sport_hi = 22;
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL &&
          strstr(err, "rule 'other': ports need proto tcp, udp, sctp or udplite, not 1"),
          "ports on ICMP: %s", err);
    CHECK(netbe_proto_has_ports(6) && netbe_proto_has_ports(17) && netbe_proto_has_ports(132) &&
          netbe_proto_has_ports(136) && !netbe_proto_has_ports(1) && !netbe_proto_has_ports(-1) &&
          !netbe_proto_has_ports(256 + 6), "netbe_proto_has_ports");
    r[1] = rule("other", (enum netbe_action)9);
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL && strstr(err, "unknown action"),
          "action: %s", err);
    r[1] = rule("other", NETBE_ACT_RATE);
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL && strstr(err, "positive"),
          "rate: %s", err);
    r[1] = rule("", NETBE_ACT_PASS);
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL && strstr(err, "rule 2: name"),
          "name: %s", err);
    r[1] = rule("other", NETBE_ACT_LUA);
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL && strstr(err, "needs a hook"),
          "hook: %s", err);
    r[1].hook = "while true do end";
    r[1].hook_len = strlen(r[1].hook);
    d.hook_budget = 0xf0000000u;
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL && strstr(err, "hook_budget"),
          "a budget past INT_MAX (Lua's count would go negative, never stopping the "
          "loop): %s", err);
    d.hook_budget = 0;
    d.default_verdict = 7;
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -EINVAL && strstr(err, "default"),
          "default: %s", err);
}

static void test_carry(void)
{
    char err[NETBE_ERRMAX];
    struct fb f;
    tcp4(&f, "10.0.0.2", "10.0.0.1", 40000, 22, 0x02);
    struct netbe_rule a[2] = {rule("keep", NETBE_ACT_COUNT), rule("gone", NETBE_ACT_DROP)};
    netbe_policy *old = build(a, 2, NETBE_PASS, err);
    for (int i = 0; i < 3; i++)
        netbe_policy_eval(old, 0, f.b, f.n, 0);
    struct netbe_rule b[2] = {rule("new", NETBE_ACT_COUNT), rule("keep", NETBE_ACT_PASS)};
    netbe_policy *np = build(b, 2, NETBE_PASS, err);
    netbe_policy_carry(np, old);
    struct netbe_rule_stats rs;
    netbe_policy_rule_stats(np, 1, &rs);
    CHECK(rs.hits == 3 && strcmp(rs.name, "keep") == 0, "keep carried 3 hits over");
    netbe_policy_rule_stats(np, 0, &rs);
    CHECK(rs.hits == 0, "a new rule starts at 0");
    struct netbe_policy_stats st;
    netbe_policy_get_stats(np, &st);
    CHECK(st.drop_frames[0] == 3 && st.nrules == 2, "direction totals carried over");
    netbe_policy_free(old);
    netbe_policy_free(np);
}

/* 1000 rules, one per port, some with ranges across bucket edges: each
** frame must hit exactly its own rule (the index keeps every candidate). */
static void test_index(void)
{
    char err[NETBE_ERRMAX];
    enum { N = 1000 };
    static struct netbe_rule r[N + 2];
    static char names[N + 2][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "port%d", i);
        r[i] = rule(names[i], NETBE_ACT_DROP);
        r[i].match = NETBE_M_DPORT | NETBE_M_PROTO | NETBE_M_DIR;
        r[i].proto = 6;
        r[i].dir = NETBE_DIR_FROM_GUEST;
        r[i].dport_lo = r[i].dport_hi = (uint16_t)(2000 + i * 3);
    }
    r[N] = rule("range", NETBE_ACT_DROP);     /* 250-260 wraps bucket 255 -> 0 */
    r[N].match = NETBE_M_DPORT; r[N].dport_lo = 250; r[N].dport_hi = 260;
    r[N + 1] = rule("wide", NETBE_ACT_COUNT);
    r[N + 1].match = NETBE_M_DPORT; r[N + 1].dport_lo = 0; r[N + 1].dport_hi = 1999;
    netbe_policy *p = build(r, N + 2, NETBE_PASS, err);
    struct fb f;
    int wrong = 0;
    for (int i = 0; i < N; i++) {
        tcp4(&f, "10.0.0.2", "10.0.0.1", 1, 2000 + i * 3, 0);
        wrong += netbe_policy_eval(p, 1, f.b, f.n, 0) != NETBE_DROP;
        tcp4(&f, "10.0.0.2", "10.0.0.1", 1, 2001 + i * 3, 0);
        wrong += netbe_policy_eval(p, 1, f.b, f.n, 0) != NETBE_PASS;
        wrong += netbe_policy_eval(p, 0, f.b, f.n, 0) != NETBE_PASS;
    }
    CHECK(wrong == 0, "%d frames judged wrong among 1000 port rules", wrong);
    struct netbe_rule_stats rs;
    for (int i = 0; i < N; i++) {
        netbe_policy_rule_stats(p, i, &rs);
        wrong += rs.hits != 1;
    }
    CHECK(wrong == 0, "%d rules without exactly one hit", wrong);
    for (unsigned port = 245; port <= 265; port++) {
        tcp4(&f, "10.0.0.2", "10.0.0.1", 1, port, 0);
        int v = netbe_policy_eval(p, 0, f.b, f.n, 0);
        wrong += v != (port >= 250 && port <= 260 ? NETBE_DROP : NETBE_PASS);
    }
    CHECK(wrong == 0, "range 250-260 across a bucket edge");
    netbe_policy_rule_stats(p, N + 1, &rs);
    CHECK(rs.hits == 10, "wide count rule saw the 10 frames the range let by: %llu",
          (unsigned long long)rs.hits);
    netbe_policy_free(p);
}

/* Host rules (one address, no port) go under a hash of the address; the
** frame's slot list and host lists must merge in rule order. Rules 1..N
** drop one source host each, except that rule "mid", a /16 in the slot
** lists, sits in the middle and passes every host after it. */
static void test_host_index(void)
{
    char err[NETBE_ERRMAX];
    enum { N = 1000, MID = 500 };
    static struct netbe_rule r[N + 3];
    static char names[N + 3][16];
    int n = 0;
    r[n++] = rule("first", NETBE_ACT_COUNT);
    for (int k = 0; k < N; k++) {
        if (k == MID) {
            r[n] = rule("mid", NETBE_ACT_PASS);
            r[n].match = NETBE_M_SRC_IP; r[n].ip_family = 4;
            set_ip4(r[n].src_ip, "10.1.0.0"); r[n].src_plen = 16;
            n++;
        }
        snprintf(names[n], sizeof names[n], "host%d", k);
        r[n] = rule(names[n], NETBE_ACT_DROP);
        r[n].match = NETBE_M_SRC_IP | NETBE_M_DIR;
        r[n].dir = NETBE_DIR_FROM_GUEST;
        r[n].ip_family = 4;
        r[n].src_ip[0] = 10; r[n].src_ip[1] = 1;
        r[n].src_ip[2] = (uint8_t)(k >> 8); r[n].src_ip[3] = (uint8_t)k;
        r[n].src_plen = 32;
        n++;
    }
    r[n] = rule("to-host", NETBE_ACT_DROP);       /* a destination host rule */
    r[n].match = NETBE_M_DST_IP; r[n].ip_family = 4;
    set_ip4(r[n].dst_ip, "10.9.9.9"); r[n].dst_plen = 32;
    n++;
    netbe_policy *p = build(r, n, NETBE_PASS, err);
    struct fb f;
    char src[32];
    int wrong = 0;
    for (int k = 0; k < N; k++) {
        snprintf(src, sizeof src, "10.1.%d.%d", k >> 8, k & 255);
        tcp4(&f, src, "10.0.0.1", 1, 80, 0);
        int v = netbe_policy_eval(p, NETBE_DIR_FROM_GUEST, f.b, f.n, 0);
        wrong += v != (k < MID ? NETBE_DROP : NETBE_PASS);
        wrong += netbe_policy_eval(p, NETBE_DIR_TO_GUEST, f.b, f.n, 0) != NETBE_PASS;
    }
    CHECK(wrong == 0, "%d frames judged out of rule order", wrong);
    tcp4(&f, "10.2.0.1", "10.9.9.9", 1, 80, 0);
    CHECK(netbe_policy_eval(p, 0, f.b, f.n, 0) == NETBE_DROP, "destination host rule");
    tcp4(&f, "10.2.0.1", "10.9.9.8", 1, 80, 0);
    CHECK(netbe_policy_eval(p, 0, f.b, f.n, 0) == NETBE_PASS, "other destination");
    struct netbe_rule_stats rs;
    netbe_policy_rule_stats(p, 0, &rs);
    CHECK(rs.hits == 2 * N + 2, "the first rule saw every frame: %llu",
          (unsigned long long)rs.hits);
    netbe_policy_rule_stats(p, MID + 1, &rs);
    CHECK(strcmp(rs.name, "mid") == 0 && rs.hits == N + N - MID, "mid passed %llu",
          (unsigned long long)rs.hits);
    netbe_policy_free(p);
}

int main(void)
{
    RUN(test_fields());
    RUN(test_arp_vlan_ipv6());
    RUN(test_truncated());
    RUN(test_lengths());
    RUN(test_actions());
    RUN(test_hooks());
    RUN(test_field_table());
    RUN(test_errors());
    RUN(test_carry());
    RUN(test_index());
    RUN(test_host_index());
    return check_summary();
}
