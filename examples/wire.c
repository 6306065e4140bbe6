/*
** wire.c: the smallest useful embedding of netbe.
**
**   wire SPEC_A SPEC_B
**
** Opens two backends from bhyve-style config strings, joins them both ways
** and runs the embedder's own libevent loop until SIGINT or SIGTERM, then
** prints each side's counters. `netbe wire` does the same from Lua.
*/
#include <signal.h>
#include <stdio.h>

#include <event2/event.h>

#include "netbe.h"

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopbreak(arg);
}

static void print_stats(netbe *be)
{
    struct netbe_stats st;
    netbe_get_stats(be, &st);
    printf("%-10s rx %llu frames %llu bytes, tx %llu frames %llu bytes, "
           "drops %llu/%llu, errors %llu/%llu\n", netbe_name(be),
           (unsigned long long)st.rx_frames, (unsigned long long)st.rx_bytes,
           (unsigned long long)st.tx_frames, (unsigned long long)st.tx_bytes,
           (unsigned long long)st.rx_drops, (unsigned long long)st.tx_drops,
           (unsigned long long)st.rx_errors, (unsigned long long)st.tx_errors);
}

int main(int argc, char **argv)
{
    char err[NETBE_ERRMAX];
    netbe *a = NULL, *b = NULL;
    netbe_wire *w = NULL;
    if (argc != 3) {
        fprintf(stderr, "usage: %s SPEC_A SPEC_B\n", argv[0]);
        return 2;
    }
    struct event_base *base = event_base_new();
    if (!base) {
        fprintf(stderr, "wire: cannot create an event base\n");
        return 1;
    }
    /* The wire sets its own callbacks; none are needed at open. */
    if (netbe_open_str(&a, argv[1], base, NULL, NULL, err, sizeof err) < 0 ||
        netbe_open_str(&b, argv[2], base, NULL, NULL, err, sizeof err) < 0 ||
        netbe_wire_new(&w, a, b, err, sizeof err) < 0) {
        fprintf(stderr, "wire: %s\n", err);
        netbe_close(a);
        event_base_free(base);
        return 1;
    }
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);
    printf("wire: %s <-> %s, until SIGINT or SIGTERM\n", netbe_name(a), netbe_name(b));
    fflush(stdout);
    event_base_dispatch(base);
    print_stats(a);
    print_stats(b);
    printf("wire: %llu frames dropped by the wire\n",
           (unsigned long long)netbe_wire_drops(w));
    netbe_wire_free(w);
    netbe_close(a);
    netbe_close(b);
    event_free(sigint);
    event_free(sigterm);
    event_base_free(base);
    return 0;
}
