/*
** tap_queue_test.c: the tap backend's queues (queues=N, netbe_queues,
** netbe_open_queue, netbe_queue_attach) and its receive bound, on Linux
** taps in a network namespace of the test's own (it needs root; without
** it, it says so and checks only the config). Frames of many flows are
** written into the interface through a packet socket; the kernel spreads
** them over the attached queues, and every one must be read back whole
** from some queue, none from a detached one.
*/
#define _GNU_SOURCE
#include "check.h"

#ifdef __linux__
#include <arpa/inet.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "netbe.h"

#define FLOWS 32

static struct event_base *base;
static char ifname[IFNAMSIZ];

/* An IPv4/UDP frame of LEN bytes of flow FLOW, numbered SEQ in its payload. */
static void make_frame(uint8_t *f, size_t len, int flow, uint32_t seq)
{
    memset(f, 0, len);
    memcpy(f, "\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00", 14);
    uint8_t *ip = f + 14, *udp = ip + 20;
    ip[0] = 0x45;
    ip[2] = (uint8_t)((len - 14) >> 8);
    ip[3] = (uint8_t)(len - 14);
    ip[8] = 64;
    ip[9] = 17;
    memcpy(ip + 12, "\x0a\x09\x00\x01\x0a\x09\x00\x02", 8);
    udp[0] = 4;
    udp[1] = (uint8_t)flow;
    udp[2] = 8;
    udp[4] = (uint8_t)((len - 34) >> 8);
    udp[5] = (uint8_t)(len - 34);
    memcpy(udp + 8, &seq, 4);
}

static int packet_socket(void)
{
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    struct sockaddr_ll sa = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                             .sll_ifindex = (int)if_nametoindex(ifname)};
    CHECK(s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof sa) == 0, "packet socket on %s: %s",
          ifname, strerror(errno));
    return s;
}

/* Read every frame waiting on Q into SEEN (by sequence number); returns
** how many, after checking each is whole. */
static int drain(netbe *q, int *seen, int n, size_t len)
{
    uint8_t buf[2048];
    struct iovec v = {buf, sizeof buf};
    int got = 0;
    ssize_t r;
    while ((r = netbe_recv(q, &v, 1)) > 0) {
        uint32_t seq;
        memcpy(&seq, buf + 42, 4);
        if (r == (ssize_t)len && buf[23] == 17 && seq < (uint32_t)n) {
            seen[seq]++;
            got++;
        }
    }
    CHECK(r == 0, "netbe_recv: %zd", r);
    return got;
}

/* Write N frames of FLOWS flows into the interface and read them back
** from the queues in QS; returns how many each queue took in TOOK. */
static void spread(netbe **qs, int nq, int n, int *took)
{
    int s = packet_socket(), seen[512] = {0};
    uint8_t f[200];
    for (int i = 0; i < n; i++) {
        make_frame(f, sizeof f, i % FLOWS, (uint32_t)i);
        CHECK(send(s, f, sizeof f, 0) == (ssize_t)sizeof f, "send: %s", strerror(errno));
    }
    close(s);
    usleep(100000);
    for (int k = 0; k < nq; k++)
        took[k] = qs[k] ? drain(qs[k], seen, n, sizeof f) : 0;
    for (int i = 0; i < n; i++)
        CHECK(seen[i] == 1, "frame %d read %d times", i, seen[i]);
}

static void test_config(void)
{
    static const char *const bad[] = {"tap0,queues=0", "tap0,queues=257", "tap0,queues=2x",
                                      "tap0,queues="};
    char err[NETBE_ERRMAX];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        netbe_config *cfg = netbe_config_new();
        netbe_config_parse(cfg, bad[i], NULL, 0);
        CHECK(netbe_config_check(cfg, err, sizeof err) == -EINVAL, "%s accepted", bad[i]);
        CHECK(strstr(err, "queues=") && strstr(err, "from 1 to 256"), "%s: %s", bad[i], err);
        netbe_config_free(cfg);
    }
    netbe *be, *q;
    CHECK(netbe_open_str(&be, "null", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_queues(be) == 1, "null has %d queues", netbe_queues(be));
    CHECK(netbe_open_queue(&q, be, 1, base, NULL, NULL, err, sizeof err) == -EINVAL && !q,
          "a second queue of null");
    CHECK(strstr(err, "no queue 1"), "%s", err);
    CHECK(netbe_queue_attach(be, 0) == -ENOTSUP, "null detached");
    netbe_close(be);
}

static void test_queues(void)
{
    char err[NETBE_ERRMAX], spec[64];
    netbe *q[3] = {NULL, NULL, NULL}, *x;
    int took[3];
    snprintf(spec, sizeof spec, "%s,queues=3", ifname);
    CHECK(netbe_open_str(&q[0], spec, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    if (!q[0])
        return;
    CHECK(netbe_queues(q[0]) == 3, "%d queues", netbe_queues(q[0]));
    CHECK(netbe_open_queue(&q[1], q[0], 1, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_queues(q[1]) == 3 && strcmp(netbe_name(q[1]), ifname) == 0, "queue 1 is %s",
          netbe_name(q[1]));
    CHECK(netbe_open_queue(&x, q[0], 1, base, NULL, NULL, err, sizeof err) == -EBUSY, "twice");
    CHECK(netbe_open_queue(&x, q[0], 3, base, NULL, NULL, err, sizeof err) == -EINVAL, "queue 3");
    CHECK(netbe_open_queue(&x, q[0], 0, base, NULL, NULL, err, sizeof err) == -EINVAL, "queue 0");

    /* Queue 2 is not open yet, so detached: every frame goes to 0 or 1. */
    spread(q, 3, 256, took);
    CHECK(took[0] > 0 && took[1] > 0 && took[0] + took[1] == 256, "queues took %d and %d",
          took[0], took[1]);

    /* Queue 1 detached: all on queue 0; it neither reads nor sends. */
    CHECK(netbe_queue_attach(q[1], 0) == 0 && netbe_queue_attach(q[1], 0) == 0, "detach");
    spread(q, 3, 256, took);
    CHECK(took[0] == 256 && took[1] == 0, "queues took %d and %d", took[0], took[1]);
    uint8_t f[60] = {0};
    struct iovec v = {f, sizeof f};
    CHECK(netbe_send(q[1], &v, 1) == -ENOTCONN, "send on a detached queue");
    CHECK(netbe_down(q[1]) == 0, "a detached queue went down");

    /* Queue 2 opened, queue 1 back: the three share the flows. */
    CHECK(netbe_open_queue(&q[2], q[0], 2, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_queue_attach(q[1], 1) == 0, "attach");
    spread(q, 3, 384, took);
    CHECK(took[0] > 0 && took[1] > 0 && took[2] > 0, "queues took %d, %d and %d", took[0],
          took[1], took[2]);
    for (int k = 2; k >= 0; k--)
        netbe_close(q[k]);
}

/* A frame longer than the buffers is dropped and counted, never cut. */
static void test_recv_bound(void)
{
    char err[NETBE_ERRMAX];
    netbe *be;
    CHECK(netbe_open_str(&be, ifname, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    if (!be)
        return;
    int s = packet_socket();
    uint8_t f[600], buf[600];
    make_frame(f, 500, 1, 7);
    send(s, f, 500, 0);
    make_frame(f, 100, 1, 8);
    send(s, f, 100, 0);
    close(s);
    usleep(100000);
    struct iovec v = {buf, 200};
    struct netbe_stats st;
    CHECK(netbe_recv(be, &v, 1) == -EMSGSIZE, "a 500-byte frame in 200 bytes");
    netbe_get_stats(be, &st);
    CHECK(st.rx_drops == 1 && st.rx_frames == 0, "drops %llu frames %llu",
          (unsigned long long)st.rx_drops, (unsigned long long)st.rx_frames);
    CHECK(netbe_recv(be, &v, 1) == 100 && buf[42] == 8, "the frame behind it");
    netbe_close(be);
}

int main(void)
{
    base = event_base_new();
    snprintf(ifname, sizeof ifname, "tapq%d", (int)getpid() % 100000);
    RUN(test_config());
    if (geteuid() != 0 || unshare(CLONE_NEWNET) < 0) {
        printf("tap tests skipped: a network namespace of our own needs root\n");
    } else {
        RUN(test_queues());
        RUN(test_recv_bound());
    }
    event_base_free(base);
    return check_summary();
}

#else

int main(void)
{
    printf("tap queues are Linux's: nothing to test here\n");
    return check_summary();
}

#endif
