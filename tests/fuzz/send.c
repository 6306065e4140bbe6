/*
** send.c: frames from the guest through netbe_send, under every feature
** set a frontend can ask for (header lengths 0, 10 and 12), into backends
** without offloads (null, pair), so netbe's software offloads do the work.
** Oversize frames included.
**
** The input: backend and header length, features, then operations (send,
** send and check, run the loop, drain the far end, negotiate again).
** What must hold:
**   - set_cap succeeds exactly for what the backend offers;
**   - netbe_send returns the frame's length or a documented error, and
**     refuses a frame longer than NETBE_MAX_FRAME plus the header;
**   - no frame longer than NETBE_MAX_FRAME leaves for the pair's far end;
**   - a frame netbe_frame_check believes arrives as an independent reading
**     of the virtio-net spec says: the checksum completed, or TCP and UDP
**     segments (IPv4 fragments for UFO) that carry every payload byte in
**     order, each with right lengths and checksums.
*/
#include <errno.h>

#include <event2/event.h>

#include "fuzz.h"
#include "../c/inet_csum.h"
#include "../c/be_bytes.h"

#define MAX_SEGS 1100            /* netbe makes at most 1024 */

static struct event_base *base;
static uint8_t frame[2 * NETBE_MAX_FRAME + 64];

/* ---- What arrives at the pair's far end ---- */

struct arrived {
    int n;
    size_t len[MAX_SEGS];
    uint8_t *data[MAX_SEGS];
};

static struct arrived got;

static void arrived_clear(void)
{
    for (int i = 0; i < got.n; i++)
        free(got.data[i]);
    got.n = 0;
}

/* Read what waits at FAR; returns how many frames came. */
static int drain(netbe *far)
{
    static uint8_t buf[NETBE_MAX_FRAME + 64];
    struct iovec v = {buf, sizeof buf};
    ssize_t r;
    int n = 0;
    while ((r = netbe_recv(far, &v, 1)) != 0) {
        FZ_ASSERT(r > 0, "the far end's receive failed: %zd", r);
        FZ_ASSERT(r <= NETBE_MAX_FRAME, "a %zd-byte frame left netbe", r);
        if (got.n < MAX_SEGS) {
            got.data[got.n] = malloc((size_t)r);
            memcpy(got.data[got.n], buf, (size_t)r);
            got.len[got.n++] = (size_t)r;
        }
        n++;
    }
    return n;
}

/* Run the loop (TX readiness sends segments left waiting) and read the far
** end until nothing more comes. */
static void settle(netbe *far)
{
    for (int quiet = 0, i = 0; quiet < 2 && i < 2000; i++) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        quiet = far && drain(far) > 0 ? 0 : quiet + 1;
    }
}

/* ---- An independent reading of the frame ---- */


/* The L4 checksum over a pseudo header is right. */
static int l4_ok(const uint8_t *ip, int v6, const uint8_t *l4, size_t l4len, unsigned proto)
{
    uint32_t s = v6 ? sum16(ip + 8, 32, 0) : sum16(ip + 12, 8, 0);
    return fold(sum16(l4, l4len, s + proto + l4len)) == 0xffff;
}

struct view {
    size_t l3, l4, hdrs, end;    /* as netbe.h describes a GSO frame */
    int v6;
    unsigned proto;
};

/* Ethernet, up to two VLAN tags, IPv4 or IPv6, TCP or UDP. */
static int view_parse(const uint8_t *f, size_t len, struct view *v)
{
    size_t off = 12;
    for (int tags = 0; tags < 2 && off + 2 <= len &&
         (be_get16(f + off) == 0x8100 || be_get16(f + off) == 0x88a8); tags++)
        off += 4;
    if (off + 2 > len)
        return -1;
    unsigned type = be_get16(f + off);
    v->l3 = off + 2;
    if (type == 0x0800 && v->l3 + 20 <= len) {
        v->v6 = 0;
        v->l4 = v->l3 + (f[v->l3] & 15u) * 4;
        v->end = v->l3 + be_get16(f + v->l3 + 2);
        v->proto = f[v->l3 + 9];
    } else if (type == 0x86dd && v->l3 + 40 <= len) {
        v->v6 = 1;
        v->l4 = v->l3 + 40;
        v->end = v->l4 + be_get16(f + v->l3 + 4);
        v->proto = f[v->l3 + 6];
    } else {
        return -1;
    }
    if (v->end > len || v->l4 > v->end)
        return -1;
    if (v->proto == 6 && v->l4 + 20 <= v->end)
        v->hdrs = v->l4 + (f[v->l4 + 12] >> 4) * 4u;
    else if (v->proto == 17)
        v->hdrs = v->l4 + 8;
    else
        return -1;
    return v->hdrs <= v->end ? 0 : -1;
}

/* The UDP datagram at UDP (LEN bytes) with the checksum at CSUM in place
** of its own, in a buffer that lasts until the next call. */
static const uint8_t *udp_with_csum(const uint8_t *udp, size_t len, const uint8_t *csum)
{
    static uint8_t copy[NETBE_MAX_FRAME];
    memcpy(copy, udp, len);
    memcpy(copy + 6, csum, 2);
    return copy;
}

/* Frame F (LEN bytes after a HL-byte header) was believed and taken: check
** what arrived against it. */
static void check_arrived(const uint8_t *hdr, const uint8_t *f, size_t len)
{
    unsigned flags = hdr[0], gso = hdr[1] & 0x7f;
    unsigned mss = hdr[4] | hdr[5] << 8, cstart = hdr[6] | hdr[7] << 8;
    unsigned coff = hdr[8] | hdr[9] << 8;
    struct view v;
    int segmented = 0;
    size_t start = 0, payload = 0;
    if (gso) {
        FZ_ASSERT(view_parse(f, len, &v) == 0, "netbe believed a GSO frame this reading "
                  "cannot parse");
        start = gso == 3 ? v.l4 : v.hdrs;
        mss = gso == 3 ? mss & ~7u : mss;
        payload = v.end - start;
        segmented = payload > mss;
    }
    if (!segmented) {
        FZ_ASSERT(got.n == 1, "a frame needing at most a checksum arrived as %d", got.n);
        FZ_ASSERT(got.len[0] == len, "its length changed from %zu to %zu", len, got.len[0]);
        size_t field = (size_t)cstart + coff;
        if (flags & 1) {
            /* The sum covers the field as the guest left it (the pseudo
            ** header's partial sum). */
            unsigned c = ~fold(sum16(f + cstart, len - cstart, 0)) & 0xffff;
            c = c ? c : 0xffff;
            FZ_ASSERT(be_get16(got.data[0] + field) == c, "checksum 0x%04x, expected 0x%04x",
                      be_get16(got.data[0] + field), c);
            FZ_ASSERT(memcmp(got.data[0], f, field) == 0 &&
                      memcmp(got.data[0] + field + 2, f + field + 2, len - field - 2) == 0,
                      "bytes other than the checksum changed");
        } else {
            FZ_ASSERT(memcmp(got.data[0], f, len) == 0, "the frame changed on its way");
        }
        return;
    }
    size_t want_n = (payload + mss - 1) / mss, off = 0;
    FZ_ASSERT((size_t)got.n == want_n, "%zu payload bytes at %u a piece arrived as %d "
              "frames, expected %zu", payload, mss, got.n, want_n);
    for (int i = 0; i < got.n; i++) {
        const uint8_t *s = got.data[i], *ip = s + v.l3;
        size_t chunk = payload - off < mss ? payload - off : mss;
        FZ_ASSERT(got.len[i] == start + chunk, "segment %d: %zu bytes, expected %zu", i,
                  got.len[i], start + chunk);
        FZ_ASSERT(memcmp(s, f, v.l3) == 0, "segment %d: Ethernet header changed", i);
        /* UFO: the first fragment carries the UDP checksum netbe completed. */
        size_t skip = gso == 3 && off == 0 && (flags & 1) ? 8 : 0;
        skip = skip < chunk ? skip : chunk;
        FZ_ASSERT(memcmp(s + start + skip, f + start + off + skip, chunk - skip) == 0,
                  "segment %d: payload at %zu differs", i, off);
        if (skip)
            FZ_ASSERT(memcmp(s + start, f + start, 6) == 0 &&
                      l4_ok(f + v.l3, 0, udp_with_csum(f + start, payload, s + start + 6),
                            payload, 17), "fragment 0: UDP header or checksum wrong");
        if (!v.v6)
            FZ_ASSERT(fold(sum16(ip, v.l4 - v.l3, 0)) == 0xffff && be_get16(ip + 2) == v.l4 -
                      v.l3 + (gso == 3 ? 0 : v.hdrs - v.l4) + chunk,
                      "segment %d: IPv4 header checksum or length wrong", i);
        if (gso == 3) {
            FZ_ASSERT((be_get16(ip + 6) & 0x1fff) * 8u == off &&
                      !!(be_get16(ip + 6) & 0x2000) == (i < got.n - 1),
                      "fragment %d: offset or MF wrong", i);
        } else {
            size_t l4len = v.hdrs - v.l4 + chunk;
            FZ_ASSERT(!v.v6 || be_get16(ip + 4) == l4len, "segment %d: IPv6 length wrong", i);
            FZ_ASSERT(l4_ok(ip, v.v6, s + v.l4, l4len, v.proto), "segment %d: bad L4 "
                      "checksum", i);
            if (v.proto == 6)
                FZ_ASSERT(be_get32(s + v.l4 + 4) == be_get32(f + v.l4 + 4) + (uint32_t)off,
                          "segment %d: sequence number wrong", i);
            else
                FZ_ASSERT(be_get16(s + v.l4 + 4) == l4len, "segment %d: UDP length wrong", i);
        }
        off += chunk;
    }
}

/* ---- Operations ---- */

struct ctx {
    netbe *be, *far;             /* far: the pair's other end, or NULL */
    unsigned hl;
};

/* Send one frame from the input; CHECKED: settle first and compare. */
static void op_send(struct ctx *c, struct fz *in, int checked)
{
    struct iovec iov[8];
    size_t len = fz_frame(in, frame, sizeof frame);
    int cnt = fz_split(in, frame, len, iov, 8);
    size_t bound = NETBE_MAX_FRAME + c->hl;
    checked = checked && c->far && c->hl && len <= bound;
    if (checked) {
        settle(c->far);
        arrived_clear();
    }
    /* netbe_send may complete a checksum in place: keep the original. */
    uint8_t *orig = checked ? malloc(len) : NULL;
    if (orig)
        memcpy(orig, frame, len);
    ssize_t n = netbe_send(c->be, iov, cnt);
    if (len < c->hl + 14)
        FZ_ASSERT(n == -EINVAL, "a %zu-byte frame: %zd, expected -EINVAL", len, n);
    else if (len > bound)
        FZ_ASSERT(n == -EMSGSIZE, "a %zu-byte frame (bound %zu): %zd, expected -EMSGSIZE",
                  len, bound, n);
    else
        FZ_ASSERT(n == (ssize_t)len || n == -EINVAL || n == -EAGAIN || n == -EOPNOTSUPP ||
                  n == -ENOBUFS, "a %zu-byte frame: netbe_send returned %zd", len, n);
    if (checked && n == (ssize_t)len && netbe_frame_check(orig, len, c->hl) == 0) {
        settle(c->far);
        check_arrived(orig, orig + c->hl, len - c->hl);
    }
    free(orig);
}

static void one_input(struct fz *in)
{
    char err[NETBE_ERRMAX];
    struct ctx c = {0};
    int pair = fz_u8(in) & 1;
    const char *spec = pair ? "pair,name=fuzz-send" : "null";
    FZ_ASSERT(netbe_open_str(&c.be, spec, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    if (pair)
        FZ_ASSERT(netbe_open_str(&c.far, spec, base, NULL, NULL, err, sizeof err) == 0,
                  "%s", err);
    unsigned hl = fz_hdr_len(in);
    if (fz_set_cap(c.be, fz_features(in, netbe_get_cap(c.be)), hl) == 0)
        c.hl = hl;
    for (int ops = 0; in->n && ops < 64; ops++) {
        switch (fz_u8(in) % 6) {
        case 0: case 1: op_send(&c, in, 0); break;
        case 2: op_send(&c, in, 1); break;
        case 3: event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK); break;
        case 4: if (c.far) drain(c.far); break;
        case 5:
            hl = fz_hdr_len(in);
            if (fz_set_cap(c.be, fz_features(in, netbe_get_cap(c.be)), hl) == 0)
                c.hl = hl;
            break;
        }
    }
    settle(c.far);
    arrived_clear();
    netbe_close(c.be);
    netbe_close(c.far);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base)
        base = event_base_new();
    struct fz in = {data, size};
    one_input(&in);
    return 0;
}
