/*
** bhyve_test.c: the bhyve drop-in (examples/bhyve/net_backends_netbe.c) on
** Linux, against a pair: the legacy string into config nodes, receive
** readiness from the drop-in's own thread, and a replay of bhyve 14's
** pci_virtio_net.c: netbe_init from its config node, get_cap, set_cap with
** every negotiated bit, get_vnet_hdr_len, sends before and after the
** header is on (offloads honoured, failures counted), and receive enabled
** and disabled from a vCPU-like thread under the frontend's receive lock.
** bhyve's headers come from the FreeBSD sysroot; libnv and bhyve's config
** calls are played by the small table below.
*/
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "check.h"
#include "inet_csum.h"
#include "config.h"
#include "net_backends.h"
#include "netbe.h"

/* Transport bits bhyve's virtio.h defines and pci_virtio_net.c offers. */
#define NOTIFY_ON_EMPTY (1u << 24)
#define INDIRECT_DESC   (1u << 28)

int raw_stdio;

/* ---- libnv and bhyve's config nodes, as a table of strings ---- */

struct nvlist {
    int n;
    char key[16][32], val[16][80];
};

static int nv_find(const nvlist_t *nvl, const char *name)
{
    for (int i = 0; i < nvl->n; i++)
        if (strcmp(nvl->key[i], name) == 0)
            return i;
    return -1;
}

void set_config_value_node(nvlist_t *nvl, const char *name, const char *value)
{
    int i = nv_find(nvl, name);
    if (i < 0 && nvl->n < 16)
        i = nvl->n++;
    if (i >= 0) {
        snprintf(nvl->key[i], sizeof nvl->key[i], "%s", name);
        snprintf(nvl->val[i], sizeof nvl->val[i], "%s", value);
    }
}

const char *nvlist_next(const nvlist_t *nvl, int *typep, void **cookiep)
{
    intptr_t i = (intptr_t)*cookiep;
    if (i >= nvl->n)
        return NULL;
    *cookiep = (void *)(i + 1);
    *typep = NV_TYPE_STRING;
    return nvl->key[i];
}

const char *nvlist_get_string(const nvlist_t *nvl, const char *name)
{
    int i = nv_find(nvl, name);
    return i < 0 ? NULL : nvl->val[i];
}

static const char *nv_get(const nvlist_t *nvl, const char *name)
{
    return nvlist_get_string(nvl, name);
}

/* ---- A frontend, as pci_virtio_net.c keeps one ---- */

struct softc {
    pthread_mutex_t rx_mtx;
    net_backend_t *be;
    size_t hdrlen;               /* what netbe_get_vnet_hdr_len answered */
    int frames, bad_len, bad_hdr;
    int cb_fd, cb_type;
    pthread_t cb_thread;
};

static int load(const int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

/* pci_vtnet_rx_callback and pci_vtnet_rx, less the guest's rings: peek,
** then receive exactly that much, under the receive lock. */
static void rx_callback(int fd, enum ev_type type, void *param)
{
    struct softc *sc = param;
    uint8_t buf[NETBE_MAX_FRAME + 12];
    pthread_mutex_lock(&sc->rx_mtx);
    sc->cb_fd = fd;
    sc->cb_type = (int)type;
    sc->cb_thread = pthread_self();
    for (;;) {
        ssize_t plen = netbe_peek_recvlen(sc->be);
        if (plen <= 0)
            break;
        struct iovec v = {buf, sizeof buf};
        ssize_t rlen = netbe_recv(sc->be, &v, 1);
        if (rlen != plen)
            sc->bad_len++;
        /* With a 12-byte header: no flags, one buffer. */
        if (sc->hdrlen == 12 && (buf[0] != 0 || buf[10] != 1 || buf[11] != 0))
            sc->bad_hdr++;
        __atomic_add_fetch(&sc->frames, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&sc->rx_mtx);
}

static int wait_frames(struct softc *sc, int n)
{
    for (int i = 0; i < 5000 && load(&sc->frames) < n; i++)
        usleep(1000);
    return load(&sc->frames) >= n;
}

/* ---- Frames ---- */

/* Ethernet, IPv4, a 20-byte TCP header and PAYLOAD bytes at BUF + HL, the
** TCP checksum field holding the pseudo header sum (as for NEEDS_CSUM), and
** a zero virtio-net header of HL bytes before it. Returns the total length. */
static size_t tcp_frame(uint8_t *buf, size_t hl, size_t payload)
{
    uint8_t *f = buf + hl, *ip = f + 14, *th = ip + 20;
    size_t iplen = 20 + 20 + payload;
    memset(buf, 0, hl + 14 + iplen);
    memcpy(f, "\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00", 14);
    ip[0] = 0x45; ip[2] = (uint8_t)(iplen >> 8); ip[3] = (uint8_t)iplen;
    ip[6] = 0x40; ip[8] = 64; ip[9] = 6;
    ip[12] = 10; ip[15] = 1; ip[16] = 10; ip[19] = 2;
    uint16_t c = (uint16_t)~fold(sum16(ip, 20, 0));
    ip[10] = (uint8_t)(c >> 8); ip[11] = (uint8_t)c;
    th[0] = 0x30; th[1] = 0x39; th[2] = 0x1f; th[3] = 0x90;
    th[12] = 0x50; th[13] = 0x18; th[14] = 0xff; th[15] = 0xff;
    for (size_t i = 0; i < payload; i++)
        th[20 + i] = (uint8_t)(i * 13);
    uint16_t ps = fold(sum16(ip + 12, 8, 0) + 6 + (uint32_t)(20 + payload));
    th[16] = (uint8_t)(ps >> 8); th[17] = (uint8_t)ps;
    return hl + 14 + iplen;
}

/* True when the TCP checksum of the plain frame F (LEN bytes) is right. */
static int tcp_csum_ok(const uint8_t *f, size_t len)
{
    const uint8_t *ip = f + 14;
    size_t l4len = len - 14 - 20;
    uint32_t s = sum16(ip + 12, 8, 0) + 6 + (uint32_t)l4len;
    return fold(sum16(ip + 20, l4len, s)) == 0xffff;
}

/* The next frame on the plain end B, or 0 after a second without one. */
static ssize_t recv_plain(netbe *b, uint8_t *buf, size_t len)
{
    struct iovec v = {buf, len};
    for (int i = 0; i < 1000; i++) {
        ssize_t n = netbe_recv(b, &v, 1);
        if (n != 0)
            return n;
        usleep(1000);
    }
    return 0;
}

static netbe *open_peer(const char *name, struct event_base *base)
{
    char spec[64], err[NETBE_ERRMAX];
    netbe *b = NULL;
    snprintf(spec, sizeof spec, "pair,name=%s", name);
    CHECK(netbe_open_str(&b, spec, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    return b;
}

/* ---- Tests ---- */

static void test_legacy_config(void)
{
    nvlist_t nvl = {0};
    CHECK(netbe_legacy_config(&nvl, NULL) == 0 && nvl.n == 0, "NULL opts");
    CHECK(netbe_legacy_config(&nvl, "tap0") == 0, "backend only");
    CHECK(nvl.n == 1 && strcmp(nv_get(&nvl, "backend"), "tap0") == 0, "backend=tap0");
    nvlist_t n2 = {0};
    CHECK(netbe_legacy_config(&n2, "slirp,hostfwd=tcp::8022-:22,open,mtu=9000") == 0,
          "slirp string");
    CHECK(n2.n == 4, "%d keys", n2.n);
    CHECK(strcmp(n2.key[0], "backend") == 0 && strcmp(n2.val[0], "slirp") == 0, "first");
    CHECK(strcmp(nv_get(&n2, "hostfwd"), "tcp::8022-:22") == 0, "hostfwd");
    CHECK(strcmp(nv_get(&n2, "open"), "true") == 0, "a bare key is true, as bhyve's");
    CHECK(strcmp(nv_get(&n2, "mtu"), "9000") == 0, "mtu");
    nvlist_t n3 = {0};
    CHECK(netbe_legacy_config(&n3, "tap0,,mac=00:a0:98:00:00:01") == -1, "empty field");
    CHECK(n3.n == 0, "nothing stored from a bad string");
}

static void test_init_errors(void)
{
    struct softc sc = {.rx_mtx = PTHREAD_MUTEX_INITIALIZER};
    net_backend_t *be = (net_backend_t *)&sc;
    nvlist_t nvl = {0};
    set_config_value_node(&nvl, "device", "virtio-net");
    set_config_value_node(&nvl, "backend", "pair");
    set_config_value_node(&nvl, "colour", "blue");
    CHECK(netbe_init(&be, &nvl, rx_callback, &sc) == EINVAL, "unknown key refused");
    CHECK(be == NULL, "*ret cleared");
    nvlist_t n2 = {0};
    set_config_value_node(&n2, "backend", "nosuch0");
    CHECK(netbe_init(&be, &n2, rx_callback, &sc) == EINVAL, "unknown backend refused");
    netbe_cleanup(NULL);
}

/* Open the backend of a virtio-net config node for "pair,name=NAME". */
static net_backend_t *init_pair(struct softc *sc, const char *name)
{
    char opts[64];
    nvlist_t nvl = {0};
    net_backend_t *be = NULL;
    set_config_value_node(&nvl, "device", "virtio-net");
    snprintf(opts, sizeof opts, "pair,name=%s", name);
    CHECK(netbe_legacy_config(&nvl, opts) == 0, "legacy config");
    CHECK(netbe_init(&be, &nvl, rx_callback, sc) == 0 && be, "netbe_init");
    sc->be = be;
    return be;
}

static void test_callback_thread(void)
{
    struct softc sc = {.rx_mtx = PTHREAD_MUTEX_INITIALIZER, .cb_fd = 7};
    struct event_base *pb = event_base_new();
    net_backend_t *be = init_pair(&sc, "bhyve-cb");
    netbe *peer = open_peer("bhyve-cb", pb);
    uint8_t f[128];
    size_t len = tcp_frame(f, 0, 20);
    struct iovec v = {f, len};
    CHECK(netbe_send(peer, &v, 1) == (ssize_t)len, "peer send");
    usleep(50000);
    CHECK(load(&sc.frames) == 0, "receive starts disabled");
    netbe_rx_enable(be);
    CHECK(wait_frames(&sc, 1), "the callback delivered the frame");
    pthread_mutex_lock(&sc.rx_mtx);
    CHECK(!pthread_equal(sc.cb_thread, pthread_self()), "called from the drop-in's thread");
    CHECK(sc.cb_fd == -1 && sc.cb_type == EVF_READ, "fd %d type %d", sc.cb_fd, sc.cb_type);
    CHECK(sc.bad_len == 0, "recv returned what peek said");
    pthread_mutex_unlock(&sc.rx_mtx);
    netbe_cleanup(be);
    netbe_close(peer);
    event_base_free(pb);
}

struct vcpu {
    struct softc *sc;
    netbe *peer;
    int returned;
};

/* A vCPU thread. First, with the receive lock held, a frame arrives and the
** callback starts and waits for that lock; receive is then disabled, as
** pci_vtnet_reset does: that must not wait for the callback. Then receive
** goes off and on again many times while frames arrive. */
static void *vcpu_toggle(void *arg)
{
    struct vcpu *c = arg;
    struct softc *sc = c->sc;
    uint8_t f[128];
    struct iovec v = {f, tcp_frame(f, 0, 20)};
    pthread_mutex_lock(&sc->rx_mtx);
    netbe_send(c->peer, &v, 1);
    usleep(100000);
    netbe_rx_disable(sc->be);
    netbe_rx_enable(sc->be);
    pthread_mutex_unlock(&sc->rx_mtx);
    __atomic_store_n(&c->returned, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 3000; i++) {
        pthread_mutex_lock(&sc->rx_mtx);
        netbe_rx_disable(sc->be);
        netbe_rx_enable(sc->be);
        pthread_mutex_unlock(&sc->rx_mtx);
    }
    return NULL;
}

static void test_pci_virtio_net_replay(void)
{
    struct softc sc = {.rx_mtx = PTHREAD_MUTEX_INITIALIZER};
    struct event_base *pb = event_base_new();
    net_backend_t *be = init_pair(&sc, "bhyve-replay");
    netbe *peer = open_peer("bhyve-replay", pb);
    uint8_t f[8192], got[NETBE_MAX_FRAME];
    struct netbe_stats st;

    /* pci_vtnet_init: what the device offers. */
    uint64_t cap = netbe_get_cap(be);
    uint64_t hostcaps = VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | NOTIFY_ON_EMPTY |
                        INDIRECT_DESC | VIRTIO_NET_F_MRG_RXBUF | cap;
    CHECK(cap & VIRTIO_NET_F_CSUM, "checksum offload offered");
    CHECK(cap & VIRTIO_NET_F_HOST_TSO4, "TSO offered");

    /* Before negotiation bhyve strips the header itself: plain frames. */
    CHECK(netbe_get_vnet_hdr_len(be) == 0, "no header before set_cap");
    size_t len = tcp_frame(f, 0, 100);
    struct iovec v = {f, len};
    CHECK(netbe_send(be, &v, 1) == (ssize_t)len, "plain send");
    CHECK(recv_plain(peer, got, sizeof got) == (ssize_t)len && memcmp(got, f, len) == 0,
          "the peer got it as sent");

    /* pci_vtnet_neg_features: every negotiated bit, CTRL_VQ too. */
    uint64_t guest = VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_MAC |
                     VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_CTRL_VQ |
                     NOTIFY_ON_EMPTY | INDIRECT_DESC;
    uint64_t neg = guest & (hostcaps | VIRTIO_NET_F_CTRL_VQ);
    CHECK(netbe_set_cap(be, neg, VNET_HDR_LEN) == 0, "set_cap with every bit");
    sc.hdrlen = netbe_get_vnet_hdr_len(be);
    CHECK(sc.hdrlen == VNET_HDR_LEN, "frames carry the header: %zu", sc.hdrlen);
    CHECK(netbe_get_features(be) == neg, "features kept");
    CHECK(netbe_set_cap(be, neg | VIRTIO_NET_F_GUEST_TSO4, VNET_HDR_LEN) == -EINVAL,
          "an offload the pair did not offer is refused");
    CHECK(netbe_get_features(be) == neg, "and nothing changed");

    /* With the header: checksum offload honoured. */
    len = tcp_frame(f, 12, 100);
    f[0] = 1;                                /* NEEDS_CSUM */
    f[6] = 34; f[8] = 16;                    /* csum_start, csum_offset */
    v.iov_len = len;
    CHECK(netbe_send(be, &v, 1) == (ssize_t)len, "send with NEEDS_CSUM");
    ssize_t n = recv_plain(peer, got, sizeof got);
    CHECK(n == (ssize_t)len - 12 && tcp_csum_ok(got, (size_t)n), "checksum completed");

    /* TSO honoured: 3000 bytes in segments of 1000. */
    len = tcp_frame(f, 12, 3000);
    f[0] = 1; f[1] = 1;                      /* NEEDS_CSUM, GSO_TCPV4 */
    f[2] = 54; f[4] = 1000 & 0xff; f[5] = 1000 >> 8;
    f[6] = 34; f[8] = 16;
    v.iov_len = len;
    CHECK(netbe_send(be, &v, 1) == (ssize_t)len, "send a TSO frame");
    for (int i = 0; i < 3; i++) {
        n = recv_plain(peer, got, sizeof got);
        CHECK(n == 54 + 1000 && tcp_csum_ok(got, (size_t)n), "segment %d: %zd bytes", i, n);
    }

    /* A failed send is dropped by bhyve: each one counted. */
    netbe_get_stats(be, &st);
    uint64_t drops = st.tx_drops;
    len = tcp_frame(f, 12, 100);
    f[0] = 1; f[6] = 2; f[8] = 0;            /* checksum inside the Ethernet header */
    v.iov_len = len;
    CHECK(netbe_send(be, &v, 1) == -EINVAL, "a lying header fails");
    int failed = 1;
    len = tcp_frame(f, 12, 1400);
    v.iov_len = len;
    for (int i = 0; i < 4000; i++) {
        ssize_t r = netbe_send(be, &v, 1);
        CHECK(r == (ssize_t)len || r == -ENOBUFS, "full: %zd, not -EAGAIN", r);
        failed += r < 0;
    }
    netbe_get_stats(be, &st);
    CHECK(failed > 1, "the pair filled up");
    CHECK(st.tx_drops - drops == (uint64_t)failed, "%d failed sends, %llu drops", failed,
          (unsigned long long)(st.tx_drops - drops));
    while (recv_plain(peer, got, sizeof got) > 0)
        ;

    /* pci_vtnet_ping_rxq: receive enabled from a vCPU thread, under the lock
    ** the callback takes; another vCPU toggles it while frames arrive. */
    pthread_t vcpu;
    struct vcpu c = {&sc, peer, 0};
    pthread_mutex_lock(&sc.rx_mtx);
    netbe_rx_enable(be);
    pthread_mutex_unlock(&sc.rx_mtx);
    CHECK(pthread_create(&vcpu, NULL, vcpu_toggle, &c) == 0, "vcpu thread");
    for (int i = 0; i < 2000 && !load(&c.returned); i++)
        usleep(1000);
    CHECK(load(&c.returned), "netbe_rx_disable waited for the callback: deadlock");
    if (!load(&c.returned)) {   /* the callback and vCPU are stuck: no cleanup */
        check_tests_failed++;
        check_summary();
        fflush(stdout);
        _exit(1);
    }
    len = tcp_frame(f, 0, 200);
    v.iov_len = len;
    int sent = 0;
    for (int i = 0; i < 500; i++) {
        if (netbe_send(peer, &v, 1) == (ssize_t)len)
            sent++;
        if (i % 50 == 0)
            usleep(1000);
    }
    pthread_join(vcpu, NULL);
    CHECK(wait_frames(&sc, sent + 1), "%d of %d frames received", load(&sc.frames),
          sent + 1);
    pthread_mutex_lock(&sc.rx_mtx);
    CHECK(sc.bad_len == 0 && sc.bad_hdr == 0, "lengths and headers as bhyve expects");
    pthread_mutex_unlock(&sc.rx_mtx);
    netbe_cleanup(be);
    netbe_close(peer);
    event_base_free(pb);
}

int main(void)
{
    alarm(120);                  /* a deadlock fails the run instead of hanging it */
    RUN(test_legacy_config());
    RUN(test_init_errors());
    RUN(test_callback_thread());
    RUN(test_pci_virtio_net_replay());
    return check_summary();
}
