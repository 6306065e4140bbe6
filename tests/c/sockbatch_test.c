/*
** sockbatch_test.c: the stream and dgram backends' batches. Frames sent
** from a netbe callback wait until the end of the loop turn and then go
** in one write (sendmmsg for dgram); frames sent from outside the loop go
** at once. Against raw peers: record boundaries, order and counts through
** batches of many small frames, of mixed sizes up to the largest frame,
** and to a stream peer that reads slowly, so that writes stop halfway
** through a batch; frames queued when the backend closes still go.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "allow.h"
#include "check.h"
#include "netbe.h"

static struct event_base *base;
static char dir[64];

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

/* Frame I of a test: its length follows from I (SIZES cycled), its bytes
** from I too, so the reader can check each one alone. */
static const size_t mixed[] = {60, 1514, 9000, 61, 65535 + 14 + 4, 200, 4096};
static const size_t *sizes = mixed;
static size_t nsizes = 1;

static size_t frame_len(size_t i)
{
    return sizes[i % nsizes];
}

static void frame_fill(uint8_t *b, size_t i)
{
    size_t len = frame_len(i);
    memset(b, 0xff, 6);
    memset(b + 6, 0x02, 6);
    b[12] = 0x08;
    b[13] = 0x00;
    memcpy(b + 14, &i, sizeof i);
    for (size_t k = 14 + sizeof i; k < len; k++)
        b[k] = (uint8_t)(i * 7 + k);
}

static int frame_ok(const uint8_t *b, size_t len, size_t i)
{
    static uint8_t want[NETBE_MAX_FRAME];
    if (len != frame_len(i))
        return 0;
    frame_fill(want, i);
    return memcmp(b, want, len) == 0;
}

static int unix_listener(const char *p)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", p);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 1) < 0)
        return -1;
    return fd;
}

static void spin(int ms)
{
    struct timeval tv = {0, ms * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static int readable(int fd)
{
    int n = 0;
    ioctl(fd, FIONREAD, &n);
    return n;
}

/* ---- A relay: frames arriving on one end of a pair go to OUT from the
** pair's receive callback, that is from inside a loop turn. ---- */

struct relay {
    netbe *in, *out;
    int peer;                    /* the raw peer's descriptor */
    size_t sent;                 /* frames OUT took */
    int queued_in_turn;          /* the peer had nothing before the turn ended */
    int close_out;               /* close OUT right after sending, in the turn */
    uint8_t buf[NETBE_MAX_FRAME];
};

static void relay_on_rx(netbe *be, int events, void *arg)
{
    struct relay *r = arg;
    struct iovec v = {r->buf, sizeof r->buf};
    ssize_t n;
    size_t before = r->sent;
    while (r->out && (n = netbe_recv(be, &v, 1)) > 0) {
        struct iovec f = {r->buf, (size_t)n};
        if (netbe_send(r->out, &f, 1) == n)
            r->sent++;
    }
    if (r->sent > before && r->out) {
        r->queued_in_turn = readable(r->peer) == 0;
        if (r->close_out) {
            netbe_close(r->out);
            r->out = NULL;
        }
    }
}

/* Open a pair (*A to write into, the relay's end IN) for relay R. */
static void relay_open(struct relay *r, netbe **a, const char *name)
{
    char spec[64], err[NETBE_ERRMAX];
    snprintf(spec, sizeof spec, "pair,name=%s", name);
    CHECK(netbe_open_str(a, spec, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_open_str(&r->in, spec, base, relay_on_rx, r, err, sizeof err) == 0, "%s",
          err);
    netbe_rx_enable(r->in);
}

/* Send frames FIRST..FIRST+COUNT-1 into A from outside the loop. */
static void push(netbe *a, size_t first, size_t count)
{
    static uint8_t b[NETBE_MAX_FRAME];
    for (size_t i = first; i < first + count; i++) {
        frame_fill(b, i);
        struct iovec v = {b, frame_len(i)};
        CHECK(netbe_send(a, &v, 1) == (ssize_t)frame_len(i), "push frame %zu", i);
    }
}

/* ---- stream ---- */

/* Read stream records from FD until COUNT frames came or 5 s passed, the
** loop running meanwhile; returns the frames that were whole and right. */
static size_t stream_read(int fd, size_t first, size_t count)
{
    static uint8_t b[NETBE_MAX_FRAME + 4];
    size_t good = 0;
    for (size_t i = first; i < first + count; i++) {
        size_t have = 0, want = 4;
        for (int tries = 0; have < want && tries < 500; ) {
            ssize_t n = recv(fd, b + have, want - have, MSG_DONTWAIT);
            if (n > 0) {
                have += (size_t)n;
                if (have == 4) {
                    uint32_t l;
                    memcpy(&l, b, 4);
                    want = 4 + (ntohl(l) <= NETBE_MAX_FRAME ? ntohl(l) : 0);
                }
            } else {
                spin(10);
                tries++;
            }
        }
        if (have != want || !frame_ok(b + 4, want - 4, i)) {
            printf("frame %zu: %zu bytes read of %zu\n", i, have, want);
            break;
        }
        good++;
    }
    return good;
}

/* A stream client whose server end is the raw *PEER. */
static netbe *stream_client(int *peer, int *lfd, const char *name)
{
    char p[108], spec[160], err[NETBE_ERRMAX];
    netbe *be = NULL;
    path_of(p, sizeof p, name);
    *lfd = unix_listener(p);
    snprintf(spec, sizeof spec, "stream,connect=unix:%s", p);
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    *peer = accept(*lfd, NULL, NULL);
    return be;
}

/* Many small frames in one turn: none reaches the peer before the turn
** ends, then all do, whole and in order. */
static void test_stream_small(void)
{
    static const size_t small[] = {60, 61, 62, 100};
    struct relay r = {0};
    netbe *a;
    int lfd;
    sizes = small;
    nsizes = 4;
    r.out = stream_client(&r.peer, &lfd, "s1.sock");
    relay_open(&r, &a, "sb1");
    push(a, 0, 500);
    spin(20);
    CHECK(r.sent == 500, "relayed %zu of 500", r.sent);
    CHECK(r.queued_in_turn, "frames sent in a callback reached the peer before the turn ended");
    CHECK(stream_read(r.peer, 0, 500) == 500, "records");
    struct netbe_stats st;
    netbe_get_stats(r.out, &st);
    CHECK(st.tx_frames == 500 && st.tx_drops == 0, "tx %llu drops %llu",
          (unsigned long long)st.tx_frames, (unsigned long long)st.tx_drops);
    CHECK(readable(r.peer) == 0, "bytes past the last record");
    netbe_close(r.in);
    netbe_close(a);
    netbe_close(r.out);
    close(r.peer);
    close(lfd);
}

/* Mixed sizes up to the largest frame, more than a batch holds, to a
** peer that reads slowly: the socket fills, writes stop halfway through
** batches and records, the pair's receive pauses and resumes. */
struct slow_reader {
    int fd;
    size_t count, good;
};

static void *slow_read(void *arg)
{
    struct slow_reader *s = arg;
    static uint8_t b[NETBE_MAX_FRAME + 4];
    for (size_t i = 0; i < s->count; i++) {
        size_t have = 0, want = 4;
        while (have < want) {
            /* Small reads with pauses: the sender finds a full socket. */
            size_t ask = want - have < 3000 ? want - have : 3000;
            ssize_t n = recv(s->fd, b + have, ask, 0);
            if (n <= 0)
                return NULL;
            have += (size_t)n;
            if (have == 4) {
                uint32_t l;
                memcpy(&l, b, 4);
                want = 4 + (ntohl(l) <= NETBE_MAX_FRAME ? ntohl(l) : 0);
            }
            if (i % 64 == 0)
                usleep(200);
        }
        if (!frame_ok(b + 4, want - 4, i)) {
            printf("frame %zu: bad record of %zu bytes\n", i, want - 4);
            return NULL;
        }
        s->good++;
    }
    return NULL;
}

static void test_stream_mixed_slow(void)
{
    struct relay r = {0};
    netbe *a;
    netbe_wire *w;
    char err[NETBE_ERRMAX];
    int lfd, small = 4096;
    sizes = mixed;
    nsizes = sizeof mixed / sizeof mixed[0];
    r.out = stream_client(&r.peer, &lfd, "s2.sock");
    setsockopt(r.peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    relay_open(&r, &a, "sb2");
    /* A wire holds a frame the stream refuses and resumes on NETBE_EV_TX. */
    CHECK(netbe_wire_new(&w, r.in, r.out, err, sizeof err) == 0, "%s", err);
    struct slow_reader s = {r.peer, 700, 0};
    pthread_t t;
    pthread_create(&t, NULL, slow_read, &s);
    static uint8_t b[NETBE_MAX_FRAME];
    size_t next = 0;
    for (int rounds = 0; rounds < 3000 && s.good < s.count; rounds++) {
        /* Into the pair until it is full; the relay drains it. */
        while (next < s.count) {
            frame_fill(b, next);
            struct iovec v = {b, frame_len(next)};
            if (netbe_send(a, &v, 1) != (ssize_t)frame_len(next))
                break;
            next++;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (s.good < s.count)
            usleep(1000);
    }
    shutdown(r.peer, SHUT_RD);
    pthread_join(t, NULL);
    CHECK(s.good == s.count, "%zu of %zu records whole and in order", s.good, s.count);
    struct netbe_stats st;
    netbe_get_stats(r.out, &st);
    CHECK(st.tx_frames == s.count && st.tx_drops == 0, "tx %llu drops %llu",
          (unsigned long long)st.tx_frames, (unsigned long long)st.tx_drops);
    netbe_wire_free(w);
    netbe_close(r.in);
    netbe_close(a);
    netbe_close(r.out);
    close(r.peer);
    close(lfd);
}

/* Frames queued in a turn still go when the backend closes in it. */
static void test_stream_close_flushes(void)
{
    struct relay r = {.close_out = 1};
    netbe *a;
    int lfd;
    sizes = mixed;
    nsizes = 4;
    r.out = stream_client(&r.peer, &lfd, "s3.sock");
    relay_open(&r, &a, "sb3");
    push(a, 0, 8);
    spin(20);
    CHECK(r.sent == 8 && r.out == NULL, "relayed %zu, closed %d", r.sent, r.out == NULL);
    CHECK(stream_read(r.peer, 0, 8) == 8, "records sent before the close");
    netbe_close(r.in);
    netbe_close(a);
    close(r.peer);
    close(lfd);
}

/* ---- dgram ---- */

/* A raw UNIX datagram socket bound at DIR/NAME. */
static int dgram_raw(const char *name, struct sockaddr_un *sa)
{
    *sa = (struct sockaddr_un){.sun_family = AF_UNIX};
    path_of(sa->sun_path, sizeof sa->sun_path, name);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0), big = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    return bind(fd, (struct sockaddr *)sa, sizeof *sa) < 0 ? -1 : fd;
}

/* A dgram backend on DIR/LOCAL whose remote is DIR/REMOTE. */
static netbe *dgram_open(const char *local, const char *remote)
{
    char pl[108], pr[108], spec[300], err[NETBE_ERRMAX];
    netbe *be = NULL;
    path_of(pl, sizeof pl, local);
    path_of(pr, sizeof pr, remote);
    snprintf(spec, sizeof spec, "dgram,local=unix:%s,remote=unix:%s", pl, pr);
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    return be;
}

/* Frames sent in a turn go out together at its end (sendmmsg), one
** datagram each; a send from outside the loop goes at once. */
static void test_dgram_send_batches(void)
{
    struct relay r = {0};
    struct sockaddr_un sa;
    netbe *a;
    sizes = mixed;
    nsizes = 4;                  /* up to 9000 bytes: larger needs the sysctls */
    r.peer = dgram_raw("d1-peer.sock", &sa);
    r.out = dgram_open("d1.sock", "d1-peer.sock");
    relay_open(&r, &a, "sb4");
    static uint8_t b[NETBE_MAX_FRAME];
    size_t good = 0;
    ssize_t n;
    int queued = 1;
    /* Rounds of 8: Linux queues at most net.unix.max_dgram_qlen (10)
    ** datagrams for a UNIX receiver. */
    for (size_t i = 0; i < 200; i += 8) {
        push(a, i, 8);
        spin(10);
        queued &= r.queued_in_turn;
        while (good < 200 && (n = recv(r.peer, b, sizeof b, MSG_DONTWAIT)) > 0 &&
               frame_ok(b, (size_t)n, good))
            good++;
    }
    CHECK(r.sent == 200, "relayed %zu of 200", r.sent);
    CHECK(queued, "datagrams sent in a callback left before the turn ended");
    CHECK(good == 200, "%zu of 200 datagrams whole and in order", good);
    frame_fill(b, 200);
    struct iovec v = {b, frame_len(200)};
    CHECK(netbe_send(r.out, &v, 1) == (ssize_t)frame_len(200), "send outside the loop");
    n = recv(r.peer, b, sizeof b, MSG_DONTWAIT);
    CHECK(n > 0 && frame_ok(b, (size_t)n, 200), "a send outside the loop waited: %zd", n);
    struct netbe_stats st;
    netbe_get_stats(r.out, &st);
    CHECK(st.tx_frames == 201 && st.tx_drops == 0, "tx %llu drops %llu",
          (unsigned long long)st.tx_frames, (unsigned long long)st.tx_drops);
    netbe_close(r.in);
    netbe_close(a);
    netbe_close(r.out);
    close(r.peer);
}

/* Datagrams read many per recvmmsg come out one per receive, whole and
** in order; one longer than any frame is dropped and counted, and the
** ones behind it still come. */
static void test_dgram_recv_batches(void)
{
    struct sockaddr_un sa, to = {.sun_family = AF_UNIX};
    sizes = mixed;
    nsizes = 4;
    int raw = dgram_raw("d2-peer.sock", &sa);
    netbe *be = dgram_open("d2.sock", "d2-peer.sock");
    path_of(to.sun_path, sizeof to.sun_path, "d2.sock");
    static uint8_t b[NETBE_MAX_FRAME + 100];
    struct iovec v = {b, NETBE_MAX_FRAME};
    size_t good = 0;
    ssize_t n = 0;
    /* Linux queues at most net.unix.max_dgram_qlen (10) datagrams: send
    ** them in rounds of 8, each read back with one recvmmsg. */
    for (size_t i = 0; i < 100; i++) {
        if (i == 50) {
            memset(b, 0, sizeof b);
            CHECK(sendto(raw, b, sizeof b, 0, (struct sockaddr *)&to, sizeof to) ==
                  (ssize_t)sizeof b, "oversize datagram: %s", strerror(errno));
        }
        frame_fill(b, i);
        CHECK(sendto(raw, b, frame_len(i), 0, (struct sockaddr *)&to, sizeof to) ==
              (ssize_t)frame_len(i), "datagram %zu: %s", i, strerror(errno));
        if (i % 8 == 7 || i == 99)
            while ((n = netbe_recv(be, &v, 1)) > 0 && frame_ok(b, (size_t)n, good))
                good++;
    }
    CHECK(good == 100, "%zu of 100 datagrams whole and in order (last %zd)", good, n);
    struct netbe_stats st;
    netbe_get_stats(be, &st);
    CHECK(st.rx_frames == 100 && st.rx_drops == 1, "rx %llu drops %llu",
          (unsigned long long)st.rx_frames, (unsigned long long)st.rx_drops);
    netbe_close(be);
    close(raw);
}

int main(void)
{
    base = event_base_new();
    snprintf(dir, sizeof dir, "/tmp/netbe-sockbatch-%d", (int)getpid());
    if (mkdir(dir, 0700) < 0)
        return 1;
    RUN(test_stream_small());
    RUN(test_stream_mixed_slow());
    RUN(test_stream_close_flushes());
    RUN(test_dgram_send_batches());
    RUN(test_dgram_recv_batches());
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("could not remove %s\n", dir);
    event_base_free(base);
    return check_summary();
}
