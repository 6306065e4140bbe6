/*
** slirp.c: guest frames into the slirp backend (libslirp's NAT) as a VM
** manager wires it: slirp <-> pair, the harness playing the guest at the
** pair's other end. Frames go in through the pair (under fuzzed features,
** so netbe's software offloads cut them first) or straight into slirp with
** its own header; the loop runs; what slirp answers comes back to the
** guest. The backend is opened with fuzzed options (IPv6, "open", MTU,
** offloads on the wire or not), each input on a fresh one.
** "open" lets libslirp connect out, so this harness refuses to run outside
** a network namespace with no route (scripts/fuzz starts it under
** unshare --net, loopback up).
** What must hold: no crash, no frame to the guest longer than the bound,
** and the guest's end receives nothing but whole frames.
*/
#include <errno.h>

#include <event2/event.h>

#define FZ_LIBSLIRP
#include "fuzz.h"

static struct event_base *base;
static uint8_t frame[2 * NETBE_MAX_FRAME + 64];

struct ctx {
    netbe *slirp, *near, *guest;     /* slirp <-> near (wired), guest: the far end */
    netbe_wire *wire;
    unsigned guest_hl;
};

/* libslirp reassembles IPv4 fragments, and a lone one crashes it
** (issue 12): while that is known, no fragment reaches it, neither one
** from the input nor one netbe's UFO makes. FRAME starts with a HL-byte
** header. */
static int ipv4_fragment(const uint8_t *f, size_t len, unsigned hl)
{
    if (hl && len > 1 && (f[1] & 0x7f) == 3)
        return 1;
    f += hl;
    len -= hl < len ? hl : len;
    return len >= 34 && f[12] == 0x08 && f[13] == 0x00 && (f[20] & 0x3f) | f[21];
}

static void op_send(struct ctx *c, struct fz *in, int direct)
{
    struct iovec iov[4];
    netbe *to = direct ? c->slirp : c->guest;
    unsigned hl = netbe_get_vnet_hdr_len(to);
    size_t len = fz_frame(in, frame, sizeof frame);
    int cnt = fz_split(in, frame, len, iov, 4);
    if (len > NETBE_MAX_FRAME + hl && fz_avoid("tx_bound"))
        return;
    if (ipv4_fragment(frame, len, hl) && fz_avoid("ipv4_frag"))
        return;
    netbe_send(to, iov, cnt);
}

static void drain(struct ctx *c)
{
    static uint8_t buf[NETBE_MAX_FRAME + 64];
    struct iovec v = {buf, sizeof buf};
    ssize_t r;
    while ((r = netbe_recv(c->guest, &v, 1)) != 0)
        FZ_ASSERT(r > 0 && (size_t)r <= NETBE_MAX_FRAME + c->guest_hl,
                  "the guest received %zd", r);
}

static void run(struct ctx *c, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        drain(c);
    }
}

static void open_all(struct ctx *c, struct fz *in)
{
    static const char *const mtus[] = {"", ",mtu=576", ",mtu=1500", ",mtu=9000",
                                       ",mtu=65520", ",mtu=68", "", ""};
    char spec[128], err[NETBE_ERRMAX];
    unsigned opt = fz_u8(in);
    snprintf(spec, sizeof spec, "slirp%s%s%s", opt & 1 ? ",ipv6=off" : "",
             opt & 2 ? ",open" : "", mtus[opt >> 2 & 7]);
    FZ_ASSERT(netbe_open_str(&c->slirp, spec, base, NULL, NULL, err, sizeof err) == 0,
              "%s: %s", spec, err);
    FZ_ASSERT(netbe_open_str(&c->near, "pair,name=fuzz-slirp", base, NULL, NULL, err,
                             sizeof err) == 0, "%s", err);
    FZ_ASSERT(netbe_open_str(&c->guest, "pair,name=fuzz-slirp", base, NULL, NULL, err,
                             sizeof err) == 0, "%s", err);
    FZ_ASSERT(netbe_wire_new_flags(&c->wire, c->slirp, c->near,
                                   opt & 0x20 ? NETBE_WIRE_NO_OFFLOAD : 0, err,
                                   sizeof err) == 0, "%s", err);
    unsigned hl = fz_hdr_len(in);
    if (fz_set_cap(c->guest, fz_features(in, netbe_get_cap(c->guest)), hl) == 0)
        c->guest_hl = hl;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz in = {data, size};
    struct ctx c = {0};
    if (!base) {
        fz_require_netns();
        base = event_base_new();
    }
    open_all(&c, &in);
    for (int ops = 0; in.n && ops < 32; ops++) {
        switch (fz_u8(&in) % 5) {
        case 0: case 1: op_send(&c, &in, 0); break;
        case 2: op_send(&c, &in, 1); break;
        case 3: run(&c, 1 + (int)(fz_u8(&in) % 8)); break;
        case 4: drain(&c); break;
        }
    }
    run(&c, 4);
    netbe_wire_free(c.wire);
    netbe_close(c.slirp);
    netbe_close(c.near);
    netbe_close(c.guest);
    return 0;
}
