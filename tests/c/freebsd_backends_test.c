/*
** freebsd_backends_test.c: the errno values of the FreeBSD-only backends
** (netgraph, netmap, vale) off FreeBSD, which Lua cannot see: a bad config
** is -EINVAL from check and open alike, a good one opens to -ENOTSUP with a
** message, and *bep stays NULL. On FreeBSD this test has nothing to say.
*/
#include <errno.h>
#include <string.h>

#include <event2/event.h>

#include "check.h"
#include "netbe.h"

static struct event_base *base;

/* Open SPEC; returns the result and leaves the message in ERR. */
static int try_open(const char *spec, char *err, size_t errlen)
{
    static char sentinel;
    netbe *be = (netbe *)&sentinel;
    int rc = netbe_open_str(&be, spec, base, NULL, NULL, err, errlen);
    CHECK(be == NULL, "%s: *bep was not cleared", spec);
    return rc;
}

#ifndef __FreeBSD__
static void test_needs_freebsd(void)
{
    static const char *const specs[][2] = {
        {"netgraph,path=bnet0:,peerhook=link2,socket=vm1", "netgraph: the netgraph backend needs FreeBSD"},
        {"netmap:em0", "netmap:em0: the netmap backend needs FreeBSD"},
        {"vale0:1,mtu=9000", "vale0:1: the vale backend needs FreeBSD"},
    };
    char err[NETBE_ERRMAX];
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        err[0] = '\0';
        int rc = try_open(specs[i][0], err, sizeof err);
        CHECK(rc == -ENOTSUP, "%s: got %d", specs[i][0], rc);
        CHECK(strcmp(err, specs[i][1]) == 0, "%s: message '%s'", specs[i][0], err);
    }
}
#endif

static void test_bad_configs(void)
{
    static const char *const specs[] = {
        "netgraph,peerhook=link2", "netgraph,path=bnet0:", "netgraph,path=bnet0,peerhook=l",
        "vale:1", "vale0:", "netmap:", "netmap:em0/R", "vale0:1,colour=red",
    };
    char err[NETBE_ERRMAX];
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        netbe_config *cfg = netbe_config_new();
        CHECK(netbe_config_parse(cfg, specs[i], err, sizeof err) == 0, "%s: %s", specs[i], err);
        CHECK(netbe_config_check(cfg, err, sizeof err) == -EINVAL, "%s: check", specs[i]);
        netbe_config_free(cfg);
        err[0] = '\0';
        CHECK(try_open(specs[i], err, sizeof err) == -EINVAL, "%s: open", specs[i]);
        CHECK(err[0] != '\0', "%s: no message", specs[i]);
    }
}

/* The hook default lands in the config the caller checked. */
static void test_hook_default(void)
{
    char err[NETBE_ERRMAX];
    netbe_config *cfg = netbe_config_new();
    netbe_config_set(cfg, "backend", "netgraph");
    netbe_config_set(cfg, "path", "bnet0:");
    netbe_config_set(cfg, "peerhook", "link2");
    CHECK(netbe_config_check(cfg, err, sizeof err) == 0, "%s", err);
    const char *hook = netbe_config_get(cfg, "hook");
    CHECK(hook && strcmp(hook, "vmlink") == 0, "hook '%s'", hook ? hook : "(none)");
    CHECK(strcmp(netbe_config_get(cfg, "type"), "netgraph") == 0, "type");
    netbe_config_free(cfg);
}

int main(void)
{
    base = event_base_new();
    RUN(test_bad_configs());
    RUN(test_hook_default());
#ifndef __FreeBSD__
    RUN(test_needs_freebsd());
#endif
    event_base_free(base);
    return check_summary();
}
