/*
** fuzz.h: what the libFuzzer harnesses in tests/fuzz share.
**   - The fuzzer's bytes read as a little program: numbers and byte strings
**     taken in order, zero once the input is used up (fz_*).
**   - Frames of any length from a few input bytes, and iovec layouts.
**   - FZ_ASSERT: a broken promise aborts, so libFuzzer keeps the input.
**   - fz_require_netns: harnesses that could open sockets refuse to run
**     where a route leads off the machine.
*/
#ifndef NETBE_FUZZ_H
#define NETBE_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "netbe.h"

#define FZ_ASSERT(cond, ...) do {                                              \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz: %s:%d: broken: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* ---- Sanitizer options (also when a file is replayed by hand) ---- */

/* ASan zeroes the shadow of a large block with memset rather than by
** mapping it anew: slirp's 8 MiB ring, opened for every input, otherwise
** costs a page fault per shadow page each time (three times slower).
** Harnesses that run libslirp define FZ_LIBSLIRP: it has no frame
** pointers, so the slow unwinder gives its allocations whole stacks, and
** the leak libslirp 4.7 has itself (slirp_cleanup never frees the
** tftp-server-name slirp_new copied) is suppressed by that stack. */
#ifdef FZ_LIBSLIRP
#define FZ_ASAN_UNWIND ":fast_unwind_on_malloc=0"
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:slirp_new\n";
}
const char *__lsan_default_options(void);
const char *__lsan_default_options(void)
{
    return "print_suppressions=0";
}
#else
#define FZ_ASAN_UNWIND ""
#endif
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "clear_shadow_mmap_threshold=1000000000" FZ_ASAN_UNWIND;
}

/* ---- Reading the input ---- */

struct fz {
    const uint8_t *p;
    size_t n;
};

static inline unsigned fz_u8(struct fz *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static inline unsigned fz_u16(struct fz *in)
{
    unsigned lo = fz_u8(in);
    return lo | fz_u8(in) << 8;
}

static inline uint32_t fz_u32(struct fz *in)
{
    uint32_t lo = fz_u16(in);
    return lo | (uint32_t)fz_u16(in) << 16;
}

/* Up to WANT bytes of input at *OUT; returns how many there were. */
static inline size_t fz_take(struct fz *in, size_t want, const uint8_t **out)
{
    size_t n = want < in->n ? want : in->n;
    *out = in->p;
    in->p += n;
    in->n -= n;
    return n;
}

/* A length: mostly small, sometimes up to 2^17 - 1, past any frame. */
static inline size_t fz_len(struct fz *in)
{
    unsigned kind = fz_u8(in);
    size_t v = fz_u16(in);
    return kind & 0x80 ? v | (size_t)(kind & 1) << 16 : v % 2048;
}

/* Fill BUF with a frame of fz_len bytes (at most MAX): a 16-bit count of
** bytes from the input, then zeros, so a few input bytes make a frame of
** any length. Returns its length. */
static inline size_t fz_frame(struct fz *in, uint8_t *buf, size_t max)
{
    size_t len = fz_len(in), want = fz_u16(in);
    const uint8_t *src;
    if (len > max)
        len = max;
    size_t have = fz_take(in, want < len ? want : len, &src);
    memcpy(buf, src, have);
    memset(buf + have, 0, len - have);
    return len;
}

/* Cut LEN bytes at BUF into 1..MAXIOV iovecs at input-chosen places,
** empty ones included. Returns the count. */
static inline int fz_split(struct fz *in, uint8_t *buf, size_t len, struct iovec *iov,
                           int maxiov)
{
    int cnt = 1 + (int)(fz_u8(in) % (unsigned)maxiov);
    size_t off = 0;
    for (int i = 0; i < cnt; i++) {
        size_t piece = i == cnt - 1 ? len - off : fz_u16(in) % (len - off + 1);
        iov[i].iov_base = buf + off;
        iov[i].iov_len = piece;
        off += piece;
    }
    return cnt;
}

static inline size_t fz_iov_len(const struct iovec *iov, int cnt)
{
    size_t n = 0;
    for (int i = 0; i < cnt; i++)
        n += iov[i].iov_len;
    return n;
}

/* ---- The features a frontend may ask for ---- */

static const uint64_t fz_feature_bits[] = {
    NETBE_F_CSUM, NETBE_F_GUEST_CSUM, NETBE_F_MTU, NETBE_F_MAC, NETBE_F_GUEST_TSO4,
    NETBE_F_GUEST_TSO6, NETBE_F_GUEST_ECN, NETBE_F_GUEST_UFO, NETBE_F_HOST_TSO4,
    NETBE_F_HOST_TSO6, NETBE_F_HOST_ECN, NETBE_F_HOST_UFO, NETBE_F_MRG_RXBUF,
    NETBE_F_STATUS, NETBE_F_GUEST_USO4, NETBE_F_GUEST_USO6, NETBE_F_HOST_USO};

/* Features from the input: bit I of a 32-bit word asks for feature I.
** The high bit asks for what BE offers, masked by the rest, so offered
** sets come often and any other set now and then. */
static inline uint64_t fz_features(struct fz *in, uint64_t offered)
{
    uint32_t w = fz_u32(in);
    uint64_t f = 0;
    for (size_t i = 0; i < sizeof fz_feature_bits / sizeof fz_feature_bits[0]; i++)
        if (w & 1u << i)
            f |= fz_feature_bits[i];
    return w & 0x80000000u ? f & offered : f;
}

/* Header lengths netbe_set_cap takes, and one it must refuse now and then. */
static inline unsigned fz_hdr_len(struct fz *in)
{
    static const unsigned lens[] = {0, 10, 12, 0, 10, 12, 0, 10, 12, 11};
    return lens[fz_u8(in) % 10];
}

/* netbe_set_cap, checked against its contract: the offloads must be
** offered and need a header; other feature bits are kept as they are.
** Returns its result. */
static inline int fz_set_cap(netbe *be, uint64_t features, unsigned hdr_len)
{
    uint64_t offloads = features & NETBE_F_OFFLOADS;
    int valid = !(offloads & ~netbe_get_cap(be)) && (hdr_len == 0 || hdr_len == 10 ||
                hdr_len == 12) && !(offloads && hdr_len == 0);
    int rc = netbe_set_cap(be, features, hdr_len);
    FZ_ASSERT((rc == 0) == valid, "set_cap(0x%llx, %u) returned %d",
              (unsigned long long)features, hdr_len, rc);
    if (rc == 0)
        FZ_ASSERT(netbe_get_vnet_hdr_len(be) == hdr_len && netbe_get_features(be) == features,
                  "set_cap did not take");
    return rc;
}

/* ---- Network safety ---- */

/* Lines of /proc/net/route (IPv4) or /proc/net/ipv6_route that name a
** device other than lo. */
static inline int fz_routes_off_lo(const char *path, int v6)
{
    FILE *f = fopen(path, "r");
    char line[512];
    int n = 0;
    if (!f)
        return 0;
    for (int i = 0; fgets(line, sizeof line, f); i++) {
        char dev[64] = "";
        if (!v6 && i == 0)
            continue;
        if (v6) {
            char *last = strrchr(line, ' ');
            if (last)
                sscanf(last, "%63s", dev);
        } else {
            sscanf(line, "%63s", dev);
        }
        n += dev[0] && strcmp(dev, "lo") != 0;
    }
    fclose(f);
    return n;
}

/* Stop unless this network namespace has no route but loopback (what
** `unshare --net` gives): a harness that could open sockets never
** reaches another machine. scripts/fuzz starts such harnesses so. */
static inline void fz_require_netns(void)
{
    if (fz_routes_off_lo("/proc/net/route", 0) || fz_routes_off_lo("/proc/net/ipv6_route", 1)) {
        fprintf(stderr, "fuzz: this harness may open sockets: run it in a network namespace "
                "with no route off the machine (scripts/fuzz runs it under unshare --net)\n");
        exit(2);
    }
}

#endif
