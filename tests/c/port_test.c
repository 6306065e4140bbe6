/*
** port_test.c: what netbe.c decides differently on Linux and FreeBSD, tested
** where the logic is portable. It includes netbe.c to reach its internals:
** which receive errors end a backend (EBADFD exists on Linux only), what a
** failed tap write means on each system, and the dgram backend's check of
** an MTU against the largest UNIX datagram a system carries (FreeBSD's
** net.local.dgram.maxdgram, given here as a configured limit).
*/
#include "netbe.c"

#include "allow.h"
#include "check.h"

static void test_fatal_errors(void)
{
    static const int fatal[] = {EBADF, ENODEV, ENXIO, ENOTCONN};
    static const int passing[] = {EAGAIN, EINTR, EMSGSIZE, ENOBUFS, EIO, ECONNREFUSED};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        CHECK(nb_is_fatal(-fatal[i]), "%s ends a backend", strerror(fatal[i]));
    for (size_t i = 0; i < sizeof passing / sizeof passing[0]; i++)
        CHECK(!nb_is_fatal(-passing[i]), "%s does not", strerror(passing[i]));
#ifdef EBADFD
    CHECK(nb_is_fatal(-EBADFD), "Linux's tun: EBADFD once its interface is gone");
#endif
}

static void test_tap_write_errors(void)
{
    CHECK(tap_send_error(EWOULDBLOCK) == -EAGAIN, "full: try again");
    CHECK(tap_send_error(ENOBUFS) == -ENOBUFS, "other errors as they are");
#ifdef __linux__
    CHECK(tap_send_error(EIO) == -ENOTCONN, "Linux's tun: EIO while the link is down");
#else
    CHECK(tap_send_error(EIO) == -EMSGSIZE, "FreeBSD's tap: EIO for a frame above its MRU");
#endif
}

static void test_dgram_size(void)
{
    char err[NETBE_ERRMAX] = "";
    CHECK(dgram_check_size(1500, 8192, err, sizeof err) == 0, "1500 fits 8 KiB");
    CHECK(dgram_check_size(8174, 8192, err, sizeof err) == 0, "8174 + 18 is 8192");
    CHECK(dgram_check_size(8175, 8192, err, sizeof err) == -EINVAL, "8175 does not");
    CHECK(strstr(err, "mtu 8175") && strstr(err, "8192") && strstr(err, "mtu=8174"),
          "the message names both and the largest MTU: %s", err);
    CHECK(dgram_check_size(65535, 0, err, sizeof err) == 0, "no limit");
#ifdef __linux__
    CHECK(dgram_unix_max() == 0, "Linux has no limit of its own");
#endif
}

/* The limit is applied at open, to UNIX sockets only. */
static void test_dgram_open(void)
{
    char err[NETBE_ERRMAX], spec[256];
    struct event_base *base = event_base_new();
    char dir[] = "/tmp/netbe-port.XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(spec, sizeof spec, "dgram,local=unix:%s/a,remote=unix:%s/b,mtu=65535", dir, dir);
    netbe *be = NULL;
    int rc = open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err);
    size_t limit = dgram_unix_max();
    if (limit && limit < 65535 + 18)
        CHECK(rc == -EINVAL && strstr(err, "maxdgram"), "refused: %s", err);
    else
        CHECK(rc == 0, "mtu 65535 over UNIX datagrams: %s", err);
    netbe_close(be);
    snprintf(spec, sizeof spec, "%s/a", dir);
    unlink(spec);
    rmdir(dir);
    event_base_free(base);
}

int main(void)
{
    RUN(test_fatal_errors());
    RUN(test_tap_write_errors());
    RUN(test_dgram_size());
    RUN(test_dgram_open());
    return check_summary();
}
