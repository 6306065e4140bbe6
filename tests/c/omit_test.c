/*
** omit_test.c: netbe.c built with NETBE_OMIT_SLIRP and NETBE_OMIT_LUA, and
** linked without libslirp, glib or Lua (the Makefile's rule for this test):
** slirp configs and hook rules are refused with a message that says why,
** compiled policy rules still decide, the other backends still move frames.
*/
#include <errno.h>
#include <string.h>

#include <event2/event.h>

#include "check.h"
#include "netbe.h"

static void test_version(void)
{
    CHECK(strcmp(netbe_libversion(), NETBE_VERSION) == 0, "library %s, header %s",
          netbe_libversion(), NETBE_VERSION);
    CHECK(NETBE_VERSION_NUMBER > 0, "version number");
}

static void test_no_slirp(void)
{
    char err[NETBE_ERRMAX] = "";
    struct event_base *base = event_base_new();
    netbe *be = NULL;
    CHECK(netbe_open_str(&be, "slirp,hostfwd=tcp::8022-:22", base, NULL, NULL, err,
                         sizeof err) == -ENOTSUP, "slirp refused");
    CHECK(be == NULL, "nothing opened");
    CHECK(strstr(err, "without libslirp") && strstr(err, "NETBE_OMIT_SLIRP"), "%s", err);
    netbe_config *cfg = netbe_config_new();
    netbe_config_parse(cfg, "slirp", err, sizeof err);
    CHECK(netbe_config_check(cfg, err, sizeof err) == -ENOTSUP, "check says so too");
    netbe_config_free(cfg);
    CHECK(netbe_slirp_hostfwd_list(be, NULL, 0) == -ENOTSUP, "hostfwd calls: -ENOTSUP");

    /* The rest works: a pair carries a frame. */
    netbe *a = NULL, *b = NULL;
    CHECK(netbe_open_str(&a, "pair,name=omit", base, NULL, NULL, err, sizeof err) == 0, "a");
    CHECK(netbe_open_str(&b, "pair,name=omit", base, NULL, NULL, err, sizeof err) == 0, "b");
    uint8_t f[60] = {2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00}, got[64];
    struct iovec v = {f, sizeof f}, g = {got, sizeof got};
    CHECK(netbe_send(a, &v, 1) == (ssize_t)sizeof f, "send");
    CHECK(netbe_recv(b, &g, 1) == (ssize_t)sizeof f && memcmp(f, got, sizeof f) == 0, "recv");
    netbe_close(a);
    netbe_close(b);
    event_base_free(base);
}

static void test_no_lua(void)
{
    char err[NETBE_ERRMAX] = "";
    netbe_policy *p = NULL;
    struct netbe_rule hook = {.name = "h", .action = NETBE_ACT_LUA,
                              .hook = "return 'drop'", .hook_len = 13};
    struct netbe_policy_desc d = {.rules = &hook, .nrules = 1};
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == -ENOTSUP && p == NULL, "hook refused");
    CHECK(strstr(err, "rule 'h'") && strstr(err, "NETBE_OMIT_LUA"), "%s", err);

    struct netbe_rule arp = {.name = "no-arp", .match = NETBE_M_ETHERTYPE,
                             .ethertype = 0x0806, .action = NETBE_ACT_DROP};
    d.rules = &arp;
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == 0, "compiled rules: %s", err);
    uint8_t f[60] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06};
    CHECK(netbe_policy_eval(p, NETBE_DIR_FROM_GUEST, f, sizeof f, 0) == NETBE_DROP, "ARP");
    f[13] = 0x00;
    CHECK(netbe_policy_eval(p, NETBE_DIR_FROM_GUEST, f, sizeof f, 0) == NETBE_PASS, "IPv4");
    netbe_policy_free(p);
}

int main(void)
{
    RUN(test_version());
    RUN(test_no_slirp());
    RUN(test_no_lua());
    return check_summary();
}
