/*
** slirp_frames.h: what a guest on slirp's default network sends, built by
** hand for the slirp C tests (10.0.2.15 and its EUI-64 address in fec0::/64
** talking to the host side, 10.0.2.2 and fec0::2), and a loop helper.
*/
#ifndef NETBE_SLIRP_FRAMES_H
#define NETBE_SLIRP_FRAMES_H

#include <stdint.h>
#include <string.h>

#include <event2/event.h>

static const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
static const uint8_t host_mac[6] = {0x52, 0x55, 0x0a, 0x00, 0x02, 0x02};
static const uint8_t guest_ip4[4] = {10, 0, 2, 15}, host_ip4[4] = {10, 0, 2, 2};
static const uint8_t guest_ip6[16] = {0xfe, 0xc0, [8] = 0x50, 0x54, 0x00, 0xff, 0xfe,
                                      0x12, 0x34, 0x56};
static const uint8_t host_ip6[16] = {0xfe, 0xc0, [15] = 2};

/* The one's complement sum of LEN bytes at P added to SUM (RFC 1071). */
static uint32_t sum16(uint32_t sum, const uint8_t *p, size_t len)
{
    for (size_t i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (len & 1)
        sum += (uint32_t)p[len - 1] << 8;
    return sum;
}

static uint16_t sum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static uint16_t ip_checksum(const uint8_t *p, size_t len)
{
    return sum_fold(sum16(0, p, len));
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Ethernet from the guest to DST with TYPE; returns 14. */
static size_t eth_header(uint8_t *f, const uint8_t *dst, unsigned type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, guest_mac, 6);
    put16(f + 12, type);
    return 14;
}

static size_t arp_request(uint8_t *f)
{
    static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    memset(f, 0, 60);
    eth_header(f, bcast, 0x0806);
    const uint8_t head[8] = {0, 1, 8, 0, 6, 4, 0, 1};
    memcpy(f + 14, head, 8);
    memcpy(f + 22, guest_mac, 6);
    memcpy(f + 28, guest_ip4, 4);      /* 10.0.2.15 asks */
    memcpy(f + 38, host_ip4, 4);       /* who has 10.0.2.2 */
    return 60;
}

/* An ICMP (V6: ICMPv6) echo request of LEN bytes with id ID into M: the
** checksum is over the whole message, as a sender computes it before
** fragmenting. For ICMPv6 the pseudo header names SRC and DST. */
static void echo_request(uint8_t *m, size_t len, int v6, unsigned id, const uint8_t *src,
                         const uint8_t *dst)
{
    memset(m, 0, 8);
    m[0] = v6 ? 128 : 8;
    put16(m + 4, id);
    put16(m + 6, 1);
    for (size_t i = 8; i < len; i++)
        m[i] = (uint8_t)(i * 7 + id);
    uint32_t s = 0;
    if (v6) {
        uint8_t ph[8] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                         (uint8_t)len, 0, 0, 0, 58};
        s = sum16(sum16(sum16(0, src, 16), dst, 16), ph, 8);
    }
    put16(m + 2, sum_fold(sum16(s, m, len)));
}

/* The IPv6 header from the guest's SRC to DST with NEXT header and
** payload length PLEN, behind Ethernet; returns 54. */
static size_t ip6_header(uint8_t *f, const uint8_t *src, const uint8_t *dst, unsigned next,
                         size_t plen)
{
    eth_header(f, host_mac, 0x86dd);
    uint8_t *ip = f + 14;
    memset(ip, 0, 8);
    ip[0] = 0x60;
    put16(ip + 4, (unsigned)plen);
    ip[6] = (uint8_t)next;
    ip[7] = 64;
    memcpy(ip + 8, src, 16);
    memcpy(ip + 24, dst, 16);
    return 54;
}

/* Run the loop in 20 ms steps until *FLAG reaches WANT, 3 s at most. */
static void run_until(struct event_base *base, int *flag, int want)
{
    struct timeval tick = {0, 20000};
    for (int i = 0; i < 150 && *flag < want; i++) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
}

#endif
