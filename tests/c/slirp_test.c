/*
** slirp_test.c: the slirp backend through the C API under ASan and UBSan,
** with frames built by hand: an ARP request for the gateway and a DHCP
** discover must be answered through the embedder's event loop; a second
** thread sends while the loop runs; run-time forwarding and bad configs.
** The backend is restricted (no outbound connections) and forwards only
** from a UNIX socket in a temporary directory.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "allow.h"
#include "check.h"
#include "netbe.h"
#include "slirp_frames.h"

struct seen {
    int arp_reply, dhcp_offer, frames;
    uint8_t offered[4];
};

static void on_ready(netbe *be, int events, void *arg)
{
    struct seen *s = arg;
    uint8_t f[NETBE_MAX_FRAME];
    struct iovec v = {f, sizeof f};
    ssize_t n;
    while ((n = netbe_recv(be, &v, 1)) > 0) {
        s->frames++;
        if (n >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[21] == 2 &&
            memcmp(f + 28, "\x0a\x00\x02\x02", 4) == 0)
            s->arp_reply++;
        /* UDP 67 -> 68 with a BOOTP reply whose message type is OFFER (2). */
        if (n > 282 && f[12] == 0x08 && f[23] == 17 && f[36] == 0 && f[37] == 68 &&
            f[42] == 2) {
            memcpy(s->offered, f + 58, 4);
            for (ssize_t i = 282; i + 2 < n && f[i] != 255; i += 2 + f[i + 1])
                if (f[i] == 53 && f[i + 2] == 2)
                    s->dhcp_offer++;
        }
    }
}

static size_t dhcp_discover(uint8_t *f)
{
    size_t udp = 34, bootp = 42, len = bootp + 300;
    memset(f, 0, len);
    memset(f, 0xff, 6);
    memcpy(f + 6, guest_mac, 6);
    f[12] = 0x08;
    uint8_t *ip = f + 14;
    ip[0] = 0x45;
    ip[2] = (uint8_t)((len - 14) >> 8), ip[3] = (uint8_t)(len - 14);
    ip[8] = 64, ip[9] = 17;
    memset(ip + 16, 0xff, 4);
    uint16_t c = ip_checksum(ip, 20);
    ip[10] = (uint8_t)(c >> 8), ip[11] = (uint8_t)c;
    f[udp + 1] = 68, f[udp + 3] = 67;
    f[udp + 4] = (uint8_t)((len - udp) >> 8), f[udp + 5] = (uint8_t)(len - udp);
    uint8_t *b = f + bootp;
    b[0] = 1, b[1] = 1, b[2] = 6;
    memcpy(b + 4, "\x12\x34\x56\x78", 4);
    memcpy(b + 28, guest_mac, 6);
    memcpy(b + 236, "\x63\x82\x53\x63", 4);
    const uint8_t opts[] = {53, 1, 1, 255};
    memcpy(b + 240, opts, sizeof opts);
    return len;
}

struct sender {
    netbe *be;
    int sent;
};

static void *send_arps(void *arg)
{
    struct sender *s = arg;
    uint8_t f[60];
    struct iovec v = {f, arp_request(f)};
    for (int i = 0; i < 50; i++)
        if (netbe_send(s->be, &v, 1) == 60)
            s->sent++;
    return NULL;
}

static void test_answers(struct event_base *base)
{
    char err[NETBE_ERRMAX];
    struct seen s = {0};
    netbe *be;
    int rc = netbe_open_str(&be, "slirp", base, on_ready, &s, err, sizeof err);
    CHECK(rc == 0, "open: %s", err);
    if (rc < 0)
        return;
    netbe_rx_enable(be);
    uint8_t f[400];
    struct iovec v = {f, arp_request(f)};
    CHECK(netbe_send(be, &v, 1) == 60, "ARP request taken");
    run_until(base, &s.arp_reply, 1);
    CHECK(s.arp_reply == 1, "one ARP reply for 10.0.2.2 (got %d of %d frames)",
          s.arp_reply, s.frames);
    v.iov_len = dhcp_discover(f);
    CHECK(netbe_send(be, &v, 1) == (ssize_t)v.iov_len, "DHCP discover taken");
    run_until(base, &s.dhcp_offer, 1);
    CHECK(s.dhcp_offer == 1, "a DHCP offer");
    CHECK(memcmp(s.offered, "\x0a\x00\x02\x0f", 4) == 0, "offered 10.0.2.15, got %u.%u.%u.%u",
          s.offered[0], s.offered[1], s.offered[2], s.offered[3]);

    /* netbe_send from another thread while this one runs the loop. */
    struct sender snd = {be, 0};
    pthread_t t;
    int before = s.arp_reply;
    pthread_create(&t, NULL, send_arps, &snd);
    run_until(base, &s.arp_reply, before + 50);
    pthread_join(t, NULL);
    run_until(base, &s.arp_reply, before + 50);
    CHECK(snd.sent == 50 && s.arp_reply == before + 50,
          "50 ARPs from another thread, 50 replies (sent %d, replies %d)", snd.sent,
          s.arp_reply - before);
    struct netbe_stats st;
    netbe_get_stats(be, &st);
    CHECK(st.tx_frames == 52 && st.rx_frames == (uint64_t)s.frames,
          "counters: tx %llu rx %llu", (unsigned long long)st.tx_frames,
          (unsigned long long)st.rx_frames);
    netbe_close(be);
}

static void test_hostfwd(struct event_base *base)
{
    char err[NETBE_ERRMAX], dir[] = "/tmp/netbe-slirp-c.XXXXXX", rule[200], list[600];
    netbe *be, *null;
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(rule, sizeof rule, "slirp,hostfwd=unix:%s/a.sock-:22", dir);
    int rc = open_allowing(&be, rule, dir, base, NULL, NULL, err, sizeof err);
    CHECK(rc == 0, "open with a UNIX hostfwd: %s", err);
    if (rc < 0)
        return;
    snprintf(rule, sizeof rule, "unix:%s/b.sock-10.0.2.16:80", dir);
    CHECK(netbe_slirp_hostfwd_add(be, rule, err, sizeof err) == 0, "add: %s", err);
    CHECK(netbe_slirp_hostfwd_add(be, rule, err, sizeof err) == -EEXIST, "add twice");
    CHECK(netbe_slirp_hostfwd_add(be, "tcp:x:1-:2", err, sizeof err) == -EINVAL &&
          strstr(err, "hostfwd 'tcp:x:1-:2'"), "bad rule: %s", err);
    ssize_t n = netbe_slirp_hostfwd_list(be, list, sizeof list);
    char want[600];
    snprintf(want, sizeof want, "unix:%s/a.sock-10.0.2.15:22\nunix:%s/b.sock-10.0.2.16:80\n",
             dir, dir);
    CHECK(n == (ssize_t)strlen(want) && strcmp(list, want) == 0, "list: %s", list);
    CHECK(netbe_slirp_hostfwd_list(be, list, 5) == n && strlen(list) == 4,
          "a short buffer is cut and terminated, the full length returned");
    snprintf(rule, sizeof rule, "unix:%s/b.sock", dir);
    CHECK(netbe_slirp_hostfwd_remove(be, rule, err, sizeof err) == 0, "remove: %s", err);
    CHECK(netbe_slirp_hostfwd_remove(be, rule, err, sizeof err) == -ENOENT, "remove twice");
    netbe_close(be);
    snprintf(rule, sizeof rule, "%s/a.sock", dir);
    CHECK(access(rule, F_OK) < 0, "close removes the forwarding socket");
    rmdir(dir);
    CHECK(netbe_open_str(&null, "null", base, NULL, NULL, err, sizeof err) == 0, "null");
    CHECK(netbe_slirp_hostfwd_add(null, "tcp::1-:2", err, sizeof err) == -ENOTSUP &&
          strstr(err, "not a slirp backend"), "hostfwd on null: %s", err);
    CHECK(netbe_slirp_hostfwd_list(null, NULL, 0) == -ENOTSUP, "list on null");
    netbe_close(null);
}

static void test_bad_configs(struct event_base *base)
{
    static const char *const bad[][2] = {
        {"slirp,hostfwd=tcp::22", "hostfwd 'tcp::22'"},
        {"slirp,net=10.0.2.1/24", "host bits are set"},
        {"slirp,mtu=65530", "68 to 65521"},
        {"slirp,ipv6=sometimes", "ipv6='sometimes'"},
        {"slirp,dnssearch=;", "dnssearch=';'"},
        {"slirp,guestfwd=tcp:10.0.2.100:1-cmd:", "guestfwd="},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[NETBE_ERRMAX] = "";
        netbe *be = NULL;
        int rc = netbe_open_str(&be, bad[i][0], base, NULL, NULL, err, sizeof err);
        CHECK(rc == -EINVAL && be == NULL && strstr(err, bad[i][1]), "%s: %d %s", bad[i][0],
              rc, err);
    }
}

/* A wire from slirp to a pair end takes slirp's frames straight from its
** ring (lent, not copied): a policy that drops ARP toward the guest drops
** the reply, and without it the reply arrives at the pair's other end. */
static void test_wire_lend(struct event_base *base)
{
    char err[NETBE_ERRMAX];
    struct seen s = {0};
    netbe *slirp = NULL, *near = NULL, *far = NULL;
    netbe_wire *w = NULL;
    int rc = netbe_open_str(&slirp, "slirp", base, NULL, NULL, err, sizeof err);
    if (rc == 0)
        rc = netbe_open_str(&near, "pair,name=lend", base, NULL, NULL, err, sizeof err);
    if (rc == 0)
        rc = netbe_open_str(&far, "pair,name=lend", base, on_ready, &s, err, sizeof err);
    if (rc == 0)
        rc = netbe_wire_new_flags(&w, slirp, near, NETBE_WIRE_NO_OFFLOAD, err, sizeof err);
    CHECK(rc == 0, "slirp wired to a pair: %s", err);
    if (rc < 0)
        goto out;
    netbe_rx_enable(far);
    struct netbe_rule arp = {.name = "no-arp-in", .match = NETBE_M_DIR | NETBE_M_ETHERTYPE,
                             .dir = NETBE_DIR_TO_GUEST, .ethertype = 0x0806,
                             .action = NETBE_ACT_DROP};
    struct netbe_policy_desc d = {&arp, 1, NETBE_PASS, NETBE_DROP, 0, 0, 0};
    netbe_policy *pol = NULL;
    CHECK(netbe_policy_new(&pol, &d, err, sizeof err) == 0, "policy: %s", err);
    netbe_wire_set_policy(w, pol);
    uint8_t f[60];
    struct iovec v = {f, arp_request(f)};
    CHECK(netbe_send(far, &v, 1) == 60, "ARP request sent into the pair");
    struct netbe_policy_stats st = {0};
    struct timeval tick = {0, 20000};
    for (int i = 0; i < 150 && st.drop_frames[NETBE_DIR_TO_GUEST] == 0; i++) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
        netbe_wire_policy_stats(w, &st);
    }
    CHECK(st.drop_frames[NETBE_DIR_TO_GUEST] == 1 && s.arp_reply == 0,
          "the reply dropped by the policy (drops %llu, replies seen %d)",
          (unsigned long long)st.drop_frames[NETBE_DIR_TO_GUEST], s.arp_reply);
    netbe_wire_set_policy(w, NULL);
    CHECK(netbe_send(far, &v, 1) == 60, "second ARP request sent");
    run_until(base, &s.arp_reply, 1);
    CHECK(s.arp_reply == 1, "the reply arrives without the policy (%d frames)", s.frames);
    struct netbe_stats bs;
    netbe_get_stats(slirp, &bs);
    CHECK(bs.rx_frames == 2 && bs.rx_bytes >= (uint64_t)2 * 42,
          "slirp counted both replies it gave up: %llu frames, %llu bytes",
          (unsigned long long)bs.rx_frames, (unsigned long long)bs.rx_bytes);
out:
    netbe_wire_free(w);
    netbe_close(far);
    netbe_close(near);
    netbe_close(slirp);
}

/* New features are a device reset: a reply queued before them is dropped
** and counted, and the backend answers again afterwards. */
static void test_renegotiate(struct event_base *base)
{
    char err[NETBE_ERRMAX];
    netbe *be;
    int rc = netbe_open_str(&be, "slirp", base, NULL, NULL, err, sizeof err);
    CHECK(rc == 0, "open: %s", err);
    if (rc < 0)
        return;
    uint8_t f[NETBE_MAX_FRAME];
    struct iovec req = {f, arp_request(f)}, in = {f, sizeof f};
    CHECK(netbe_send(be, &req, 1) == 60, "ARP request taken");
    CHECK(netbe_set_cap(be, NETBE_F_GUEST_CSUM, 12) == 0, "features set");
    struct netbe_stats st;
    netbe_get_stats(be, &st);
    CHECK(netbe_recv(be, &in, 1) == 0 && st.rx_drops == 1,
          "the reply queued before was dropped (rx_drops %llu)", (unsigned long long)st.rx_drops);
    req.iov_len = 12 + arp_request(f + 12);
    memset(f, 0, 12);
    CHECK(netbe_send(be, &req, 1) == 72, "ARP request with a header taken");
    ssize_t n = netbe_recv(be, &in, 1);
    CHECK(n >= 12 + 42 && f[12 + 12] == 0x08 && f[12 + 13] == 0x06 && f[12 + 21] == 2,
          "an ARP reply behind a 12-byte header (%zd bytes)", n);
    netbe_close(be);
}

struct logged {
    int count, level;
    char msg[200];
};

static void collect_log(int level, const char *msg, void *arg)
{
    struct logged *l = arg;
    l->count++;
    l->level = level;
    snprintf(l->msg, sizeof l->msg, "%s", msg);
}

/* An ICMPv6 echo request to an address outside slirp's own makes libslirp
** 4.7 log g_critical("external icmpv6 not supported yet"). */
static void send_external_echo6(netbe *be)
{
    static const uint8_t far[16] = {0xfe, 0xc0, [15] = 0x99};
    uint8_t f[54 + 64];
    size_t h = ip6_header(f, guest_ip6, far, 58, 64);
    echo_request(f + h, 64, 1, 1, guest_ip6, far);
    struct iovec v = {f, sizeof f};
    CHECK(netbe_send(be, &v, 1) == (ssize_t)sizeof f, "echo request taken");
}

/* libslirp's log reaches the embedder's callback, never stderr; without a
** callback it is dropped; glib's handling of other domains is unchanged. */
static void test_log(struct event_base *base)
{
    char err[NETBE_ERRMAX], path[] = "/tmp/netbe-slirp-log.XXXXXX", text[400] = "";
    int fd = mkstemp(path), saved = dup(2);
    struct logged l = {0};
    netbe *be;
    fflush(stderr);
    dup2(fd, 2);
    netbe_set_log(collect_log, &l);
    int rc = netbe_open_str(&be, "slirp", base, NULL, NULL, err, sizeof err);
    if (rc == 0) {
        send_external_echo6(be);
        netbe_set_log(NULL, NULL);
        send_external_echo6(be);
        netbe_close(be);
    }
    g_log("netbe-test", G_LOG_LEVEL_MESSAGE, "another domain still prints");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    unlink(path);
    CHECK(rc == 0, "open: %s", err);
    CHECK(l.count == 1 && l.level == NETBE_LOG_CRIT &&
          strcmp(l.msg, "slirp: external icmpv6 not supported yet") == 0,
          "one critical message through the callback: %d, level %d, '%s'", l.count, l.level,
          l.msg);
    CHECK(n > 0 && !strstr(text, "Slirp") && strstr(text, "another domain still prints"),
          "stderr has no libslirp message, other domains print as before: '%s'", text);
}

int main(void)
{
    evthread_use_pthreads();
    struct event_base *base = event_base_new();
    RUN(test_answers(base));
    RUN(test_hostfwd(base));
    RUN(test_wire_lend(base));
    RUN(test_renegotiate(base));
    RUN(test_bad_configs(base));
    RUN(test_log(base));
    event_base_free(base);
    return check_summary();
}
