/*
** recv.c: the receive side. One end of a pair sends fuzzed frames (with
** headers, so netbe's software offloads cut them); the other receives
** them under fuzzed features and header lengths into fuzzed iovec
** layouts, with peeks, discards and renegotiation in between; frames go
** through netbe_rx_merge into fuzzed guest buffer lists; and
** netbe_frame_offload, the receive path's software offload, cuts fuzzed
** frames.
** What must hold:
**   - netbe_send refuses a frame over the bound with -EMSGSIZE;
**   - netbe_recv returns 0, a length no larger than the buffer and the
**     bound (NETBE_MAX_FRAME plus the header), or -EMSGSIZE, and that only
**     for a buffer smaller than the bound; the header it writes is zero
**     but num_buffers, which is 1 at length 12;
**   - after netbe_peek_recvlen says N, the next receive or discard is N;
**   - netbe_rx_merge fills buffers in order, each as far as it holds, says
**     so in num_buffers and LENS, copies every byte, and fails with
**     -EMSGSIZE exactly when the buffers are too small;
**   - netbe_frame_offload returns the number of frames it handed over,
**     never more than 1024 and none longer than the frame.
*/
#include <errno.h>

#include <event2/event.h>

#include "fuzz.h"

static struct event_base *base;
static uint8_t frame[2 * NETBE_MAX_FRAME + 64];
static uint8_t rbuf[NETBE_MAX_FRAME + 64];

struct ctx {
    netbe *tx, *rx;
    unsigned tx_hl, rx_hl;
    ssize_t peeked;              /* what the last peek said, 0: none */
    size_t last_len;             /* the frame received last, in last[] */
    int events;
};

static uint8_t last[NETBE_MAX_FRAME + 64];

static void on_event(netbe *be, int events, void *arg)
{
    struct ctx *c = arg;
    c->events |= events;
}

static void op_send(struct ctx *c, struct fz *in)
{
    struct iovec iov[8];
    size_t len = fz_frame(in, frame, sizeof frame);
    int cnt = fz_split(in, frame, len, iov, 8);
    ssize_t n = netbe_send(c->tx, iov, cnt);
    if (len > NETBE_MAX_FRAME + c->tx_hl)
        FZ_ASSERT(n == -EMSGSIZE, "a %zu-byte frame: %zd, expected -EMSGSIZE", len, n);
}

static void op_recv(struct ctx *c, struct fz *in)
{
    struct iovec iov[8];
    size_t room = fz_len(in);
    room = room < sizeof rbuf ? room : sizeof rbuf;
    int cnt = fz_split(in, rbuf, room, iov, 8);
    memset(rbuf, 0xa5, room);
    ssize_t r = netbe_recv(c->rx, iov, cnt);
    if (c->peeked > 0)
        FZ_ASSERT(r == c->peeked || (r == -EMSGSIZE && (size_t)c->peeked > room),
                  "peek said %zd, receive into %zu bytes returned %zd", c->peeked, room, r);
    c->peeked = 0;
    if (r <= 0) {
        FZ_ASSERT(r == 0 || r == -EMSGSIZE, "receive returned %zd", r);
        FZ_ASSERT(r == 0 || room < NETBE_MAX_FRAME + c->rx_hl, "a frame longer than %zu "
                  "bytes of buffer came in", room);
        return;
    }
    FZ_ASSERT((size_t)r <= room, "a %zd-byte frame in %zu bytes of buffer", r, room);
    FZ_ASSERT((size_t)r <= NETBE_MAX_FRAME + c->rx_hl, "a %zd-byte frame came in", r);
    if (c->rx_hl) {
        static const uint8_t zero[10];
        FZ_ASSERT((size_t)r >= c->rx_hl && memcmp(rbuf, zero, 10) == 0,
                  "the pair's frames carry no offload, the header says otherwise");
        if (c->rx_hl == 12)
            FZ_ASSERT(rbuf[10] == 1 && rbuf[11] == 0, "num_buffers is not 1");
    }
    memcpy(last, rbuf, (size_t)r);
    c->last_len = (size_t)r;
}

static void op_peek(struct ctx *c)
{
    ssize_t r = netbe_peek_recvlen(c->rx);
    FZ_ASSERT(r >= 0 && (size_t)r <= NETBE_MAX_FRAME + c->rx_hl, "peek returned %zd", r);
    FZ_ASSERT(!c->peeked || r == c->peeked, "peek said %zd, then %zd", c->peeked, r);
    c->peeked = r;
}

static void op_discard(struct ctx *c)
{
    ssize_t r = netbe_rx_discard(c->rx);
    FZ_ASSERT(r >= 0, "discard returned %zd", r);
    FZ_ASSERT(!c->peeked || r == c->peeked, "peek said %zd, discard %zd", c->peeked, r);
    c->peeked = 0;
}

/* The last received frame, or one from the input, into guest buffers. */
static void op_merge(struct ctx *c, struct fz *in)
{
    struct iovec fv[8], bufs[32];
    uint32_t lens[32];
    size_t len = c->last_len;
    const uint8_t *src = last;
    if (fz_u8(in) & 1 || !len) {
        len = fz_frame(in, frame, sizeof frame);
        src = frame;
    } else {
        memcpy(frame, last, len);
    }
    int fcnt = fz_split(in, frame, len, fv, 8);
    int nbufs = 1 + (int)(fz_u8(in) % 32);
    size_t room = 0;
    for (int i = 0; i < nbufs; i++) {
        size_t n = fz_u16(in) % 8192;
        bufs[i].iov_base = malloc(n ? n : 1);
        bufs[i].iov_len = n;
        room += n;
    }
    int rc = netbe_rx_merge(fv, fcnt, bufs, nbufs, lens);
    if (len < 12 || bufs[0].iov_len < 12) {
        FZ_ASSERT(rc == -EINVAL, "merge of %zu bytes, first buffer %zu: %d", len,
                  bufs[0].iov_len, rc);
    } else if (room < len) {
        FZ_ASSERT(rc == -EMSGSIZE, "%zu bytes into %zu of buffers: %d", len, room, rc);
    } else {
        FZ_ASSERT(rc >= 1 && rc <= nbufs, "merge returned %d", rc);
        size_t off = 0;
        for (int i = 0; i < rc; i++) {
            size_t want = bufs[i].iov_len < len - off ? bufs[i].iov_len : len - off;
            FZ_ASSERT(lens[i] == want, "buffer %d: %u bytes, expected %zu", i, lens[i], want);
            const uint8_t *b = bufs[i].iov_base;
            for (size_t j = 0; j < want; j++, off++)
                FZ_ASSERT(b[j] == src[off] || off == 10 || off == 11,
                          "byte %zu of the frame differs in buffer %d", off, i);
        }
        FZ_ASSERT(off == len, "%zu of %zu bytes merged", off, len);
        const uint8_t *h = bufs[0].iov_base;
        FZ_ASSERT((h[10] | h[11] << 8) == rc, "num_buffers %u for %d buffers",
                  h[10] | h[11] << 8, rc);
    }
    for (int i = 0; i < nbufs; i++)
        free(bufs[i].iov_base);
}

static int count_frame(const struct iovec *iov, int iovcnt, void *arg)
{
    size_t *max = arg;
    size_t len = fz_iov_len(iov, iovcnt);
    max[0]++;
    max[1] = len > max[1] ? len : max[1];
    return 0;
}

/* The software offload of the receive path, on a frame from the input. */
static void op_offload(struct fz *in)
{
    unsigned hl = fz_u8(in) & 1 ? 12 : 10;
    size_t len = fz_frame(in, frame, sizeof frame);
    size_t seen[2] = {0, 0};
    int believed = netbe_frame_check(frame, len, hl) == 0;
    int n = netbe_frame_offload(frame, len, hl, count_frame, seen);
    FZ_ASSERT(believed == (n >= 0 || n == -EOPNOTSUPP), "check said %d, offload %d",
              believed, n);
    if (n >= 0)
        FZ_ASSERT((size_t)n == seen[0] && n <= 1024 && seen[1] <= len - hl,
                  "offload returned %d, made %zu frames, the longest %zu of %zu", n,
                  seen[0], seen[1], len - hl);
}

static void set_caps(struct ctx *c, struct fz *in)
{
    unsigned hl = fz_hdr_len(in);
    if (fz_set_cap(c->tx, fz_features(in, netbe_get_cap(c->tx)), hl) == 0)
        c->tx_hl = hl;
    hl = fz_hdr_len(in);
    if (fz_set_cap(c->rx, fz_features(in, netbe_get_cap(c->rx)), hl) == 0)
        c->rx_hl = hl;
    c->peeked = 0;
    c->last_len = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[NETBE_ERRMAX];
    struct fz in = {data, size};
    struct ctx c = {0};
    if (!base)
        base = event_base_new();
    FZ_ASSERT(netbe_open_str(&c.tx, "pair,name=fuzz-recv", base, NULL, NULL, err,
                             sizeof err) == 0, "%s", err);
    FZ_ASSERT(netbe_open_str(&c.rx, "pair,name=fuzz-recv", base, on_event, &c, err,
                             sizeof err) == 0, "%s", err);
    set_caps(&c, &in);
    for (int ops = 0; in.n && ops < 64; ops++) {
        switch (fz_u8(&in) % 9) {
        case 0: case 1: op_send(&c, &in); break;
        case 2: op_recv(&c, &in); break;
        case 3: op_peek(&c); break;
        case 4: op_discard(&c); break;
        case 5: op_merge(&c, &in); break;
        case 6: op_offload(&in); break;
        case 7:
            fz_u8(&in) & 1 ? netbe_rx_enable(c.rx) : netbe_rx_disable(c.rx);
            event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
            break;
        case 8: set_caps(&c, &in); break;
        }
    }
    netbe_close(c.tx);
    netbe_close(c.rx);
    return 0;
}
