/*
** stream_test.c: the stream backend against a raw socket peer, byte by byte
** as QEMU's -netdev stream writes it: 4-byte big-endian length, then the
** frame. Partial writes, several frames in one write, an oversize length,
** a peer that goes away and a client that reconnects, and a client whose
** server's backlog is full, which must not stop the event loop.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "allow.h"
#include "check.h"
#include "netbe.h"

static struct event_base *base;
static char path[108];

static int raw_listener(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 1) < 0)
        return -1;
    return fd;
}

static int raw_connect(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    return connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ? -1 : fd;
}

/* A client backend (connect= with EXTRA options) and the raw server's end
** of its connection; *LFD gets the raw listener. */
static int client_and_peer(netbe **be, int *lfd, const char *extra)
{
    char err[NETBE_ERRMAX], spec[200];
    *lfd = raw_listener();
    snprintf(spec, sizeof spec, "stream,connect=unix:%s%s", path, extra);
    CHECK(open_allowing(be, spec, "/tmp", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    return accept(*lfd, NULL, NULL);
}

static void spin(void)
{
    struct timeval tv = {0, 20000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void frame(uint8_t *buf, size_t len, uint8_t seed)
{
    memset(buf, 0xff, 6);
    memset(buf + 6, 0x02, 6);
    buf[12] = 0x08;
    buf[13] = 0x00;
    for (size_t i = 14; i < len; i++)
        buf[i] = (uint8_t)(seed + i);
}

static ssize_t recv_one(netbe *be, uint8_t *out, size_t room)
{
    struct iovec v = {out, room};
    for (int i = 0; i < 50; i++) {
        ssize_t n = netbe_recv(be, &v, 1);
        if (n != 0)
            return n;
        spin();
    }
    return 0;
}

/* Bytes written by the raw side in awkward pieces arrive as whole frames. */
static void test_partial_writes(void)
{
    netbe *be;
    int lfd, peer = client_and_peer(&be, &lfd, "");
    uint8_t wire[3 * 1600], f[1600], got[2000];
    size_t off = 0;
    size_t lens[3] = {60, 1514, 200};
    for (int i = 0; i < 3; i++) {
        uint32_t l = htonl((uint32_t)lens[i]);
        memcpy(wire + off, &l, 4);
        frame(wire + off + 4, lens[i], (uint8_t)i);
        off += 4 + lens[i];
    }
    /* One byte, then 2 bytes, then the rest: lengths and frames split. */
    CHECK(write(peer, wire, 1) == 1, "write");
    spin();
    CHECK(recv_one(be, got, sizeof got) == 0, "a 1-byte prefix is not a frame");
    CHECK(write(peer, wire + 1, 2) == 2, "write");
    CHECK(write(peer, wire + 3, off - 3) == (ssize_t)(off - 3), "write");
    for (int i = 0; i < 3; i++) {
        frame(f, lens[i], (uint8_t)i);
        ssize_t n = recv_one(be, got, sizeof got);
        CHECK(n == (ssize_t)lens[i], "frame %d: got %zd bytes, want %zu", i, n, lens[i]);
        CHECK(n > 0 && memcmp(got, f, lens[i]) == 0, "frame %d content", i);
    }
    /* Our send side: the raw peer sees the length prefix and the frame. */
    frame(f, 1514, 7);
    struct iovec v[2] = {{f, 100}, {f + 100, 1414}};
    CHECK(netbe_send(be, v, 2) == 1514, "send");
    uint8_t in[1518];
    size_t got_n = 0;
    while (got_n < sizeof in) {
        ssize_t n = read(peer, in + got_n, sizeof in - got_n);
        if (n <= 0)
            break;
        got_n += (size_t)n;
    }
    uint32_t l;
    memcpy(&l, in, 4);
    CHECK(got_n == 1518 && ntohl(l) == 1514, "prefix %u", ntohl(l));
    CHECK(memcmp(in + 4, f, 1514) == 0, "sent frame content");
    struct netbe_stats st;
    netbe_get_stats(be, &st);
    CHECK(st.rx_frames == 3 && st.tx_frames == 1 && st.rx_errors == 0,
          "counters rx %llu tx %llu", (unsigned long long)st.rx_frames,
          (unsigned long long)st.tx_frames);
    netbe_close(be);
    close(peer);
    close(lfd);
}

/* A length no frame can have closes the connection and counts an error;
** with reconnect= the client comes back. */
static void test_oversize_and_reconnect(void)
{
    netbe *be;
    int lfd, peer = client_and_peer(&be, &lfd, ",reconnect=1");
    uint32_t huge = htonl(NETBE_MAX_FRAME + 1);
    CHECK(write(peer, &huge, 4) == 4, "write");
    uint8_t got[100];
    struct iovec gv = {got, sizeof got};
    for (int i = 0; i < 5; i++) {
        spin();
        netbe_recv(be, &gv, 1);
    }
    struct netbe_stats st;
    netbe_get_stats(be, &st);
    CHECK(st.rx_errors == 1, "oversize length counted, rx_errors=%llu",
          (unsigned long long)st.rx_errors);
    char c;
    CHECK(read(peer, &c, 1) == 0, "connection closed after the bad length");
    close(peer);
    uint8_t f[60];
    frame(f, 60, 1);
    struct iovec v = {f, 60};
    CHECK(netbe_send(be, &v, 1) == -ENOTCONN, "send while disconnected is refused");
    /* The reconnect timer is 1 s: run the loop until the client is back. */
    struct timeval tv = {1, 300000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    peer = accept(lfd, NULL, NULL);
    CHECK(peer >= 0, "client reconnected");
    CHECK(netbe_send(be, &v, 1) == 60, "send after reconnect");
    netbe_close(be);
    close(peer);
    close(lfd);
}

/* An empty record is skipped and counted as an error; the frames behind
** it, in the same write, are delivered at once, not at the peer's next one. */
static void test_empty_record(void)
{
    netbe *be;
    int lfd, peer = client_and_peer(&be, &lfd, "");
    uint8_t wire[4 + 4 + 60 + 4 + 4 + 80], got[100];
    uint32_t l = htonl(60);
    memset(wire, 0, 4);
    memcpy(wire + 4, &l, 4);
    frame(wire + 8, 60, 1);
    memset(wire + 68, 0, 4);
    l = htonl(80);
    memcpy(wire + 72, &l, 4);
    frame(wire + 76, 80, 2);
    CHECK(write(peer, wire, sizeof wire) == (ssize_t)sizeof wire, "write");
    CHECK(recv_one(be, got, sizeof got) == 60 && memcmp(got, wire + 8, 60) == 0,
          "the frame behind the first empty record");
    struct iovec v = {got, sizeof got};
    ssize_t n = netbe_recv(be, &v, 1);
    CHECK(n == 80 && memcmp(got, wire + 76, 80) == 0,
          "the frame behind the second comes in the same pass: %zd", n);
    struct netbe_stats st;
    netbe_get_stats(be, &st);
    CHECK(st.rx_frames == 2 && st.rx_errors == 2, "two frames, two errors: %llu %llu",
          (unsigned long long)st.rx_frames, (unsigned long long)st.rx_errors);
    netbe_close(be);
    close(peer);
    close(lfd);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (*(int *)arg)++;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Run the loop for MS milliseconds; returns how often a 10 ms timer ran. */
static int ticks_in(int ms)
{
    int ticks = 0;
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, &ticks);
    struct timeval every = {0, 10000}, run = {ms / 1000, (ms % 1000) * 1000};
    event_add(tick, &every);
    event_base_loopexit(base, &run);
    event_base_dispatch(base);
    event_free(tick);
    return ticks;
}

/* Connect to LFD until its backlog refuses; returns the sockets made. */
static int fill_backlog(int *fds, int max)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    for (int n = 0; n < max; n++) {
        fds[n] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(fds[n], (struct sockaddr *)&sa, sizeof sa) < 0) {
            close(fds[n]);
            return n;
        }
    }
    return max;
}

/* Accept every waiting connection and close it; returns how many had sent
** a 64-byte frame. */
static int drain_listener(int lfd)
{
    int peer, got = 0;
    uint8_t in[68];
    while ((peer = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
        got += read(peer, in, sizeof in) == (ssize_t)sizeof in;
        close(peer);
    }
    return got;
}

/* Send F until the client has connected: about 0.6 s at most. */
static int send_when_connected(netbe *be, const struct iovec *v)
{
    for (int i = 0; i < 30; i++) {
        if (netbe_send(be, v, 1) == (ssize_t)v->iov_len)
            return 1;
        spin();
    }
    return 0;
}

/* Read what arrives, so that the client sees its server hang up. */
static void drain_rx(netbe *be, int events, void *arg)
{
    uint8_t buf[100];
    struct iovec v = {buf, sizeof buf};
    while (netbe_recv(be, &v, 1) > 0)
        ;
}

/* A UNIX listener whose backlog is full: connect=, which used to block in
** connect() until the server accepted, returns at once; the loop keeps
** running other events while the client waits; once there is room the
** client connects by itself. The same when it reconnects after the server
** dropped it. (SIGALRM ends the test if anything blocks.) */
static void test_connect_full_backlog(void)
{
    char err[NETBE_ERRMAX];
    char spec[200];
    netbe *be;
    int lfd = raw_listener(), fill[8], nfill;
    listen(lfd, 0);
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    nfill = fill_backlog(fill, 8);
    CHECK(nfill >= 1 && nfill < 8, "the backlog is full after %d connections", nfill);
    alarm(10);
    double t0 = seconds();
    snprintf(spec, sizeof spec, "stream,connect=unix:%s,reconnect=1", path);
    int rc = open_allowing(&be, spec, "/tmp", base, drain_rx, NULL, err, sizeof err);
    double took = seconds() - t0;
    CHECK(rc == 0 && took < 0.1, "open returns at once: %d in %.3f s (%s)", rc, took, err);
    if (rc < 0)
        return;
    netbe_rx_enable(be);
    int ticks = ticks_in(500);
    CHECK(ticks >= 20, "the loop ran a 10 ms timer %d times in 0.5 s", ticks);
    uint8_t f[64];
    frame(f, sizeof f, 5);
    struct iovec v = {f, sizeof f};
    CHECK(netbe_send(be, &v, 1) == -ENOTCONN, "not connected while the server is busy");
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    CHECK(drain_listener(lfd) == 0, "room made");
    CHECK(send_when_connected(be, &v), "connected once the server made room");
    CHECK(drain_listener(lfd) == 1, "the frame arrived, and the server dropped the client");
    nfill = fill_backlog(fill, 8);
    ticks = ticks_in(1500);
    CHECK(ticks >= 60, "reconnecting to a full backlog, the loop ran %d ticks in 1.5 s", ticks);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    drain_listener(lfd);
    CHECK(send_when_connected(be, &v), "reconnected once the server made room");
    CHECK(drain_listener(lfd) == 1, "the frame arrived");
    alarm(0);
    netbe_close(be);
    close(lfd);
}

/* As a listener: a raw client connects, frames flow, the client leaves and a
** second client is served. */
static void test_listener(void)
{
    char err[NETBE_ERRMAX];
    char spec[200];
    netbe *be;
    snprintf(spec, sizeof spec, "stream,listen=unix:%s", path);
    CHECK(open_allowing(&be, spec, "/tmp", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    for (int round = 0; round < 2; round++) {
        int c = raw_connect();
        CHECK(c >= 0, "connect round %d", round);
        spin();
        uint8_t buf[4 + 64], got[100];
        uint32_t l = htonl(64);
        memcpy(buf, &l, 4);
        frame(buf + 4, 64, (uint8_t)round);
        CHECK(write(c, buf, sizeof buf) == (ssize_t)sizeof buf, "write");
        CHECK(recv_one(be, got, sizeof got) == 64, "frame from client %d", round);
        CHECK(memcmp(got, buf + 4, 64) == 0, "content round %d", round);
        close(c);
        spin();
        recv_one(be, got, sizeof got);
    }
    netbe_close(be);
    CHECK(access(path, F_OK) != 0, "listener removes its socket file on close");
}

/* Send from a second thread while the loop runs (bhyve's TX thread does). */
struct tx_arg {
    netbe *be;
    int sent;
};

static void *tx_thread(void *p)
{
    struct tx_arg *a = p;
    uint8_t f[200];
    frame(f, sizeof f, 3);
    struct iovec v = {f, sizeof f};
    for (int i = 0; i < 2000; i++) {
        while (netbe_send(a->be, &v, 1) == -EAGAIN)
            usleep(100);
        a->sent++;
    }
    return NULL;
}

static void test_threaded_send(void)
{
    netbe *be;
    int lfd, peer = client_and_peer(&be, &lfd, "");
    struct tx_arg a = {be, 0};
    pthread_t t;
    pthread_create(&t, NULL, tx_thread, &a);
    /* The reader checks every frame boundary while the sender runs. */
    size_t frames = 0, bad = 0;
    uint8_t buf[204];
    while (frames < 2000) {
        size_t got = 0;
        while (got < sizeof buf) {
            ssize_t n = read(peer, buf + got, sizeof buf - got);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got < sizeof buf)
            break;
        uint32_t l;
        memcpy(&l, buf, 4);
        bad += ntohl(l) != 200;
        frames++;
    }
    pthread_join(t, NULL);
    CHECK(frames == 2000 && bad == 0, "frames %zu, bad lengths %zu", frames, bad);
    netbe_close(be);
    close(peer);
    close(lfd);
}

int main(void)
{
    base = event_base_new();
    snprintf(path, sizeof path, "/tmp/netbe-stream-test-%d.sock", (int)getpid());
    RUN(test_partial_writes());
    RUN(test_oversize_and_reconnect());
    RUN(test_empty_record());
    RUN(test_connect_full_backlog());
    RUN(test_listener());
    RUN(test_threaded_send());
    unlink(path);
    event_base_free(base);
    return check_summary();
}
