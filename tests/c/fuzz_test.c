/*
** fuzz_test.c: random input where netbe meets the outside world. Config
** strings, frames with random virtio-net headers, and random bytes on a
** stream socket must give errors or frames, never a crash, a leak or
** undefined behaviour (this runs under ASan and UBSan).
** FUZZ_ITERATIONS sets the rounds (make fuzz runs many more).
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "allow.h"
#include "check.h"
#include "netbe.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* A config string stitched from fragments that hit the parser's edges. */
static void random_config(char *out, size_t len)
{
    static const char *bits[] = {
        "tap", "tap0", "vmnet1", "ngd0", "stream", "dgram", "null", "pair", "slirp",
        "netgraph", ",", ",,", "=", "mac=", "00:a0:98:12:34:56", "ff:ff", "mtu=",
        "9000", "65536", "-1", "type=", "listen=", "connect=", "unix:/tmp/x",
        "127.0.0.1:", "[::1]:", "80", "reconnect=", "local=", "remote=", "name=",
        "\xff", " ", ":", "[", "]", "x", "netmap:", "em0", "vale", "0:1", "path=",
        "peerhook=", "hook=", "socket=", "bnet0:", "-", "{", "/x", "@", "^", "."};
    size_t used = 0;
    int n = 1 + (int)(rnd() % 8);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *b = bits[rnd() % (sizeof bits / sizeof bits[0])];
        if (used + strlen(b) + 1 >= len)
            break;
        strcpy(out + used, b);
        used += strlen(b);
    }
}

static void fuzz_configs(int rounds)
{
    char spec[256], err[NETBE_ERRMAX];
    int accepted = 0, rejected_with_message = 0, rejected = 0;
    for (int i = 0; i < rounds; i++) {
        random_config(spec, sizeof spec);
        netbe_config *cfg = netbe_config_new();
        err[0] = '\0';
        int rc = netbe_config_parse(cfg, spec, err, sizeof err);
        if (rc == 0)
            rc = netbe_config_check(cfg, err, sizeof err);
        if (rc == 0) {
            accepted++;
        } else {
            rejected++;
            rejected_with_message += err[0] != '\0';
        }
        netbe_config_free(cfg);
    }
    CHECK(rejected == rejected_with_message, "%d of %d rejections had no message",
          rejected - rejected_with_message, rejected);
    CHECK(accepted > 0 && rejected > 0, "accepted %d rejected %d", accepted, rejected);
}

/* A message quotes the bad input; control characters in it must not make
** it more than one line (a caller logs it, `netbe check` prints it). */
static void messages_one_line(void)
{
    static const char *const specs[] = {"tap0,mac=\n00:a0:98:12:34:56", "bogus\nline",
        "slirp,hostfwd=tcp:\r\n:1-:2", "stream,connect=unix:/x,reconnect=\x1b[2J", "null,\t=1"};
    char err[NETBE_ERRMAX];
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        netbe_config *cfg = netbe_config_new();
        err[0] = '\0';
        int rc = netbe_config_parse(cfg, specs[i], err, sizeof err);
        if (rc == 0)
            rc = netbe_config_check(cfg, err, sizeof err);
        int ctl = 0;
        for (const char *c = err; *c; c++)
            ctl += (unsigned char)*c < 0x20 || *c == 0x7f;
        CHECK(rc < 0 && err[0] && !ctl, "config %zu: %d, message with %d control "
              "characters: %s", i, rc, ctl, err);
        netbe_config_free(cfg);
    }
}

/* Frames with random headers and lengths through a pair at header length
** 12, up to twice the longest frame: those past NETBE_MAX_FRAME plus the
** header must be refused, also when a checksum header sends them down the
** software offload path. */
static void fuzz_frames(struct event_base *base, int rounds)
{
    char err[NETBE_ERRMAX];
    netbe *a, *b;
    CHECK(netbe_open_str(&a, "pair,name=fz", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_open_str(&b, "pair,name=fz", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    netbe_set_cap(a, NETBE_F_CSUM, 12);
    static uint8_t buf[2 * NETBE_MAX_FRAME], in[200], big[NETBE_MAX_FRAME];
    int bad_returns = 0, oversize_taken = 0, oversize = 0;
    for (int i = 0; i < rounds; i++) {
        size_t len = rnd() % 3 ? rnd() % 1600 : rnd() % sizeof buf;
        /* Random headers nearly all lie and are dropped: every other
        ** frame has a plain (zero) header so that frames get through, and
        ** some a checksum request that is true for any long frame. */
        for (size_t j = 0; j < 24 && j < len; j++)
            buf[j] = j < 12 && i % 2 ? 0 : (uint8_t)rnd();
        if (i % 4 == 1 && len >= 64) {
            buf[0] = 1;
            buf[6] = 34;
            buf[8] = 16;
        }
        struct iovec v[3] = {{buf, len / 3}, {buf + len / 3, len / 3},
                             {buf + 2 * (len / 3), len - 2 * (len / 3)}};
        ssize_t n = netbe_send(a, v, 3);
        bad_returns += n != (ssize_t)len && n >= 0;
        if (len > NETBE_MAX_FRAME + 12) {
            oversize++;
            oversize_taken += n != -EMSGSIZE;
        }
        /* Receive into a buffer too small for most frames, or one that
        ** takes them all. */
        struct iovec r = i % 8 ? (struct iovec){in, sizeof in} : (struct iovec){big, sizeof big};
        while (netbe_recv(b, &r, 1) != 0)
            ;
    }
    CHECK(bad_returns == 0, "%d sends returned a length other than the frame's", bad_returns);
    CHECK(oversize > 0 && oversize_taken == 0, "%d of %d frames over the bound were not "
          "refused", oversize_taken, oversize);
    struct netbe_stats st;
    netbe_get_stats(b, &st);
    CHECK(st.rx_drops > 0, "oversize frames for the receive buffer are counted as drops");
    netbe_close(a);
    netbe_close(b);
}

/* Random bytes, in random pieces, from a stream peer. */
static void fuzz_stream(struct event_base *base, int rounds)
{
    char err[NETBE_ERRMAX], spec[128], path[100];
    snprintf(path, sizeof path, "/tmp/netbe-fuzz-%d.sock", (int)getpid());
    snprintf(spec, sizeof spec, "stream,listen=unix:%s", path);
    netbe *be;
    CHECK(open_allowing(&be, spec, "/tmp", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    static uint8_t junk[8192], in[NETBE_MAX_FRAME];
    for (int c = 0; c < rounds / 100 + 1; c++) {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un { sa_family_t f; char p[108]; } sa = {AF_UNIX, {0}};
        strcpy(sa.p, path);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            close(fd);
            continue;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        for (int i = 0; i < 20; i++) {
            size_t len = 1 + rnd() % sizeof junk;
            for (size_t j = 0; j < len; j++)
                junk[j] = (uint8_t)rnd();
            /* Small lengths now and then, so some frames do parse. */
            if (rnd() % 2) {
                junk[0] = 0;
                junk[1] = 0;
            }
            if (send(fd, junk, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                break;
            struct iovec r = {in, sizeof in};
            while (netbe_recv(be, &r, 1) > 0)
                ;
        }
        close(fd);
        event_base_loop(base, EVLOOP_NONBLOCK);
        struct iovec r = {in, sizeof in};
        netbe_recv(be, &r, 1);
    }
    struct netbe_stats st;
    netbe_get_stats(be, &st);
    CHECK(st.rx_errors > 0, "out-of-step lengths were seen and counted");
    netbe_close(be);
}

int main(void)
{
    const char *it = getenv("FUZZ_ITERATIONS");
    int rounds = it ? atoi(it) : 20000;
    struct event_base *base = event_base_new();
    RUN(fuzz_configs(rounds));
    RUN(messages_one_line());
    RUN(fuzz_frames(base, rounds));
    RUN(fuzz_stream(base, rounds));
    event_base_free(base);
    return check_summary();
}
