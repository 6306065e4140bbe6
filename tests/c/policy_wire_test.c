/*
** policy_wire_test.c: a wire over pair backends whose policy is replaced
** from another thread, thousands of times, while frames flow. Every frame
** must be judged by exactly one whole policy: frames to port 9 dropped by
** the rule, every other frame delivered, the counters carried over through
** every swap. Under ASan a policy freed while in use would fail the run.
*/
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "check.h"
#include "netbe.h"

enum { FRAMES = 20000, SWAPS = 2000 };

static netbe_wire *wire;
static volatile int stop_swapping;
static int swaps_done, reads_ok;

/* Two rule sets that judge alike; only the order of rules differs. */
static netbe_policy *make_policy(int variant)
{
    char err[NETBE_ERRMAX];
    struct netbe_rule r[2];
    memset(r, 0, sizeof r);
    r[variant].name = "discard";
    r[variant].match = NETBE_M_PROTO | NETBE_M_DPORT;
    r[variant].proto = 17;
    r[variant].dport_lo = r[variant].dport_hi = 9;
    r[variant].action = NETBE_ACT_DROP;
    r[!variant].name = "seen";
    r[!variant].match = NETBE_M_PROTO | NETBE_M_DPORT;
    r[!variant].proto = 17;
    r[!variant].dport_lo = r[!variant].dport_hi = 53;
    r[!variant].action = NETBE_ACT_COUNT;
    struct netbe_policy_desc d = {r, 2, NETBE_PASS, NETBE_DROP, 0, 0, 0};
    netbe_policy *p = NULL;
    if (netbe_policy_new(&p, &d, err, sizeof err) < 0)
        printf("FAIL policy: %s\n", err);
    return p;
}

static void *swapper(void *arg)
{
    struct timespec pause = {0, 50000};
    for (int i = 0; i < SWAPS && !stop_swapping; i++) {
        netbe_wire_set_policy(wire, make_policy(i & 1));
        swaps_done++;
        struct netbe_policy_stats st;
        struct netbe_rule_stats rs;
        if (netbe_wire_policy_stats(wire, &st) == 0 && netbe_wire_rule_stats(wire, 0, &rs) == 0)
            reads_ok++;
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static size_t udp_frame(uint8_t *b, unsigned seq, unsigned dport)
{
    static const uint8_t head[] = {2, 0, 0, 0, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 8, 0,
        0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2};
    memcpy(b, head, sizeof head);
    b[34] = 0x13; b[35] = 0x88;
    b[36] = (uint8_t)(dport >> 8); b[37] = (uint8_t)dport;
    b[38] = 0; b[39] = 12; b[40] = 0; b[41] = 0;
    memcpy(b + 42, &seq, 4);
    return 46;
}

int main(void)
{
    char err[NETBE_ERRMAX];
    evthread_use_pthreads();
    struct event_base *base = event_base_new();
    netbe *h, *hw, *g, *gw;
    CHECK(netbe_open_str(&h, "pair,name=pwt-host", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_open_str(&hw, "pair,name=pwt-host", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_open_str(&g, "pair,name=pwt-guest", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_open_str(&gw, "pair,name=pwt-guest", base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(netbe_wire_new(&wire, hw, gw, err, sizeof err) == 0, "%s", err);
    netbe_wire_set_policy(wire, make_policy(0));
    pthread_t t;
    pthread_create(&t, NULL, swapper, NULL);

    uint8_t frame[64], in[NETBE_MAX_FRAME];
    struct iovec rv = {in, sizeof in};
    int received = 0, wrong = 0;
    unsigned expect = 1;         /* sequence numbers of port-53 frames arrive in order */
    for (unsigned seq = 0; seq < FRAMES; seq++) {
        struct iovec v = {frame, udp_frame(frame, seq, seq % 2 ? 9 : 53)};
        while (netbe_send(h, &v, 1) == -EAGAIN)
            event_base_loop(base, EVLOOP_NONBLOCK);
        event_base_loop(base, EVLOOP_NONBLOCK);
        ssize_t n;
        while ((n = netbe_recv(g, &rv, 1)) > 0) {
            unsigned s;
            memcpy(&s, in + 42, 4);
            wrong += s != expect - 1 || in[37] != 53;
            expect += 2;
            received++;
        }
    }
    stop_swapping = 1;
    pthread_join(t, NULL);
    for (int i = 0; i < 200 && received < FRAMES / 2; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        while (netbe_recv(g, &rv, 1) > 0)
            received++;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    CHECK(received == FRAMES / 2, "every port-53 frame delivered: %d of %d", received, FRAMES / 2);
    CHECK(wrong == 0, "%d frames out of order or not port 53", wrong);
    struct netbe_policy_stats st;
    CHECK(netbe_wire_policy_stats(wire, &st) == 0, "stats");
    CHECK(st.drop_frames[NETBE_DIR_TO_GUEST] == FRAMES / 2 &&
          st.pass_frames[NETBE_DIR_TO_GUEST] == FRAMES / 2,
          "drops %llu passes %llu: exactly what the rule dropped",
          (unsigned long long)st.drop_frames[0], (unsigned long long)st.pass_frames[0]);
    struct netbe_rule_stats rs;
    int found = 0;
    for (int i = 0; netbe_wire_rule_stats(wire, i, &rs) == 0; i++) {
        if (strcmp(rs.name, "discard") == 0)
            found += rs.drops == FRAMES / 2;
        if (strcmp(rs.name, "seen") == 0)
            found += rs.hits == FRAMES / 2;
    }
    CHECK(found == 2, "rule counters carried over through every swap");
    CHECK(st.reloads > 100 && swaps_done > 100 && reads_ok > 0,
          "%llu swaps taken of %d published", (unsigned long long)st.reloads, swaps_done);
    printf("swaps published %d, taken %llu\n", swaps_done, (unsigned long long)st.reloads);
    netbe_wire_free(wire);
    netbe_close(h); netbe_close(hw); netbe_close(g); netbe_close(gw);
    event_base_free(base);
    return check_summary();
}
