/*
** slirp.c: guest frames into the slirp backend (libslirp's NAT) as a VM
** manager wires it: slirp <-> pair, the harness playing the guest at the
** pair's other end. Frames go in through the pair (under fuzzed features,
** so netbe's software offloads cut them first) or straight into slirp with
** its own header; the loop runs; what slirp answers comes back to the
** guest. The backend is opened with fuzzed options (IPv6, "open", MTU,
** offloads on the wire or not), each input on a fresh one.
** A host peer drives traffic the other way: it connects through a
** hostfwd from a UNIX socket and writes, and the harness answers for the
** guest (SYN-ACK, ACKs with fuzzed windows, data, FIN or RST), so data
** flows host -> guest through slirp's receive ring and TSO joining.
** "open" lets libslirp connect out, so this harness refuses to run outside
** a network namespace with no route (scripts/fuzz starts it under
** unshare --net, loopback up).
** What must hold: no crash, no frame to the guest longer than the bound.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#define FZ_LIBSLIRP
#include "fuzz.h"
#include "tests/c/allow.h"
#include "tests/c/be_bytes.h"

static struct event_base *base;
static uint8_t frame[2 * NETBE_MAX_FRAME + 64];
static char dir[80], fwd_path[108];

static const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
static const uint8_t guest_ip[4] = {10, 0, 2, 15};

/* The last TCP segment the guest received, as the guest's stack sees it. */
struct tcp_seen {
    int valid;
    uint8_t mac[6], ip[4];
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t flags;
    size_t len;
};

struct ctx {
    netbe *slirp, *near, *guest;     /* slirp <-> near (wired), guest: the far end */
    netbe_wire *wire;
    unsigned guest_hl;
    int host;                        /* the host peer's socket, or -1 */
    struct tcp_seen last;
    uint32_t guest_seq;
};

static void op_send(struct ctx *c, struct fz *in, int direct)
{
    struct iovec iov[4];
    netbe *to = direct ? c->slirp : c->guest;
    unsigned hl = netbe_get_vnet_hdr_len(to);
    size_t len = fz_frame(in, frame, sizeof frame);
    int cnt = fz_split(in, frame, len, iov, 4);
    ssize_t n = netbe_send(to, iov, cnt);
    if (len > NETBE_MAX_FRAME + hl)
        FZ_ASSERT(n == -EMSGSIZE, "a %zu-byte frame: %zd, expected -EMSGSIZE", len, n);
}

/* Note a TCP segment to the guest (F: an Ethernet frame of LEN bytes). */
static void note_tcp(struct ctx *c, const uint8_t *f, size_t len)
{
    if (len < 54 || be_get16(f + 12) != 0x0800 || f[23] != 6 || memcmp(f + 30, guest_ip, 4))
        return;
    const uint8_t *ip = f + 14, *th = ip + (ip[0] & 15) * 4;
    size_t end = 14 + be_get16(ip + 2);
    if (th + 20 > f + len || end > len || th + (th[12] >> 4) * 4 > f + end)
        return;
    struct tcp_seen *t = &c->last;
    t->valid = 1;
    memcpy(t->mac, f + 6, 6);
    memcpy(t->ip, ip + 12, 4);
    t->sport = (uint16_t)be_get16(th);
    t->dport = (uint16_t)be_get16(th + 2);
    t->seq = be_get32(th + 4);
    t->ack = be_get32(th + 8);
    t->flags = th[13];
    t->len = (size_t)(f + end - (th + (th[12] >> 4) * 4));
}

static void drain(struct ctx *c)
{
    static uint8_t buf[NETBE_MAX_FRAME + 64];
    struct iovec v = {buf, sizeof buf};
    ssize_t r;
    while ((r = netbe_recv(c->guest, &v, 1)) != 0) {
        FZ_ASSERT(r > 0 && (size_t)r <= NETBE_MAX_FRAME + c->guest_hl,
                  "the guest received %zd", r);
        note_tcp(c, buf + c->guest_hl, (size_t)r - c->guest_hl);
    }
    if (c->host >= 0)
        while (recv(c->host, buf, sizeof buf, MSG_DONTWAIT) > 0)
            ;
}

static void run(struct ctx *c, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        drain(c);
    }
}

static uint16_t csum(const uint8_t *p, size_t len, uint32_t s)
{
    for (size_t i = 0; i < len; i++)
        s += i & 1 ? p[i] : (uint32_t)p[i] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* The guest answers the last segment it got: a SYN with SYN-ACK, anything
** else with an ACK of all of it; the input picks the window, flags to add
** and data to carry. */
static void op_answer(struct ctx *c, struct fz *in)
{
    const struct tcp_seen *t = &c->last;
    unsigned window = fz_u16(in), extra = fz_u8(in);
    const uint8_t *data;
    size_t n = fz_take(in, fz_u8(in) & 0x80 ? fz_u16(in) % 4096 : 0, &data);
    if (!t->valid)
        return;
    uint8_t *h = frame, *f = h + c->guest_hl, *ip = f + 14, *th = ip + 20;
    memset(h, 0, c->guest_hl + 54);
    memcpy(f, t->mac, 6);
    memcpy(f + 6, guest_mac, 6);
    be_put16(f + 12, 0x0800);
    ip[0] = 0x45;
    be_put16(ip + 2, (unsigned)(40 + n));
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    memcpy(ip + 12, guest_ip, 4);
    memcpy(ip + 16, t->ip, 4);
    be_put16(ip + 10, csum(ip, 20, 0));
    int syn = t->flags & 0x02;
    if (syn)
        c->guest_seq = 0x1000;
    be_put16(th, t->dport);
    be_put16(th + 2, t->sport);
    be_put32(th + 4, c->guest_seq);
    be_put32(th + 8, t->seq + (uint32_t)t->len + (syn ? 1 : 0) + (t->flags & 0x01));
    th[12] = 0x50;
    th[13] = (uint8_t)((syn ? 0x12 : 0x10) | (extra & 0x0d));
    be_put16(th + 14, window);
    memcpy(th + 20, data, n);
    uint8_t pseudo[12] = {0};
    memcpy(pseudo, ip + 12, 8);
    pseudo[9] = 6;
    be_put16(pseudo + 10, (unsigned)(20 + n));
    uint32_t s = 0;
    for (int i = 0; i < 12; i += 2)
        s += (uint32_t)be_get16(pseudo + i);
    be_put16(th + 16, csum(th, 20 + n, s));
    c->guest_seq += (uint32_t)n + (syn ? 1 : 0) + (extra & 0x01);
    struct iovec v = {frame, c->guest_hl + 54 + n};
    netbe_send(c->guest, &v, 1);
}

/* The host peer: connect through the hostfwd, write, close. */
static void op_host(struct ctx *c, struct fz *in)
{
    static uint8_t junk[1 << 18];
    unsigned what = fz_u8(in);
    if (what % 3 == 0 && c->host < 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", fwd_path);
        c->host = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (connect(c->host, (struct sockaddr *)&sa, sizeof sa) < 0) {
            close(c->host);
            c->host = -1;
        }
    } else if (what % 3 == 1 && c->host >= 0) {
        size_t n = (size_t)fz_u16(in) << (what >> 6);
        send(c->host, junk, n < sizeof junk ? n : sizeof junk, MSG_NOSIGNAL | MSG_DONTWAIT);
    } else if (c->host >= 0) {
        shutdown(c->host, what & 0x80 ? SHUT_WR : SHUT_RDWR);
    }
}

static void open_all(struct ctx *c, struct fz *in)
{
    static const char *const mtus[] = {"", ",mtu=576", ",mtu=1500", ",mtu=9000",
                                       ",mtu=65520", ",mtu=68", "", ""};
    char spec[256], err[NETBE_ERRMAX];
    unsigned opt = fz_u8(in);
    snprintf(spec, sizeof spec, "slirp%s%s%s,hostfwd=unix:%s-:22", opt & 1 ? ",ipv6=off" : "",
             opt & 2 ? ",open" : "", mtus[opt >> 2 & 7], fwd_path);
    FZ_ASSERT(open_allowing(&c->slirp, spec, dir, base, NULL, NULL, err, sizeof err) == 0,
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

static void cleanup(void)
{
    unlink(fwd_path);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz in = {data, size};
    struct ctx c = {.host = -1};
    if (!base) {
        const char *tmp = getenv("TMPDIR");
        fz_require_netns();
        base = event_base_new();
        snprintf(dir, sizeof dir, "%s/netbe-fuzz-slirp-XXXXXX", tmp ? tmp : "/tmp");
        FZ_ASSERT(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
        snprintf(fwd_path, sizeof fwd_path, "%s/fwd", dir);
        atexit(cleanup);
    }
    open_all(&c, &in);
    for (int ops = 0; in.n && ops < 48; ops++) {
        switch (fz_u8(&in) % 8) {
        case 0: case 1: op_send(&c, &in, 0); break;
        case 2: op_send(&c, &in, 1); break;
        case 3: run(&c, 1 + (int)(fz_u8(&in) % 8)); break;
        case 4: drain(&c); break;
        case 5: op_host(&c, &in); break;
        case 6: case 7: op_answer(&c, &in); break;
        }
    }
    run(&c, 4);
    if (c.host >= 0)
        close(c.host);
    netbe_wire_free(c.wire);
    netbe_close(c.slirp);
    netbe_close(c.near);
    netbe_close(c.guest);
    return 0;
}
