/*
** policy.c: the policy compiler and netbe_policy_eval. The input fills a
** struct netbe_policy_desc: up to 32 rules with any match bits, addresses,
** prefixes, ranges, actions and rates, hooks as Lua source text of a chunk
** that returns the hook (the chunk name too, now and then), the verdicts
** and the hook bounds (instructions under 1e6, or past INT_MAX; memory
** under 64 MiB; CPU time up to 2 ms: what an embedder sets to mean a long
** time and much memory is its own business). Then
** fuzzed frames are judged in both directions at fuzzed times, and a
** second policy built from the same description takes over the counters.
** tests/fuzz/policy.dict holds Lua and packet-view words.
** What must hold:
**   - netbe_policy_new succeeds, or fails with a one-line message;
**   - every verdict is pass or drop, and the counters add up to the
**     frames judged in each direction;
**   - rule counters are there for each rule and only for them.
*/
#include <errno.h>
#include <math.h>

#include "fuzz.h"

#define MAX_RULES 32

/* Text from the input: a length byte, then the bytes, NUL-terminated in
** BUF (room for 256). Returns its length. */
static size_t fz_text(struct fz *in, char *buf)
{
    const uint8_t *src;
    size_t n = fz_take(in, fz_u8(in), &src);
    memcpy(buf, src, n);
    buf[n] = '\0';
    return n;
}

/* A number for a rate or burst, the troublesome ones included. */
static double fz_rate(struct fz *in)
{
    static const double odd[] = {0, -1, INFINITY, -INFINITY, NAN, 1e-300, 1e300, 0.5};
    unsigned k = fz_u8(in);
    return k & 0x80 ? odd[k & 7] : (double)fz_u32(in) * (k & 1 ? 1e3 : 1);
}

struct rules {
    struct netbe_rule r[MAX_RULES];
    char names[MAX_RULES][80], hooks[MAX_RULES][257], chunknames[MAX_RULES][257];
};

static void read_rule(struct fz *in, struct rules *rs, int i)
{
    struct netbe_rule *r = &rs->r[i];
    const uint8_t *src;
    unsigned kind = fz_u8(in);
    if (kind & 0x80) {
        size_t n = fz_take(in, fz_u8(in) % 70, &src);
        memcpy(rs->names[i], src, n);
        rs->names[i][n] = '\0';
    } else {
        snprintf(rs->names[i], sizeof rs->names[i], "r%u", kind % 8);
    }
    r->name = rs->names[i];
    r->match = fz_u16(in) & (kind & 0x40 ? 0xffff : 0x1fff);
    r->dir = (int)(fz_u8(in) % 3);
    if (fz_take(in, 6, &src) == 6)
        memcpy(r->src_mac, src, 6);
    memset(r->src_mac_mask, 0xff, 6);
    memset(r->dst_mac_mask, 0xff, 6);
    if (r->match & NETBE_M_DST_MAC && fz_take(in, 12, &src) == 12) {
        memcpy(r->dst_mac, src, 6);
        memcpy(r->dst_mac_mask, src + 6, 6);
    }
    r->ethertype = (uint16_t)fz_u16(in);
    r->vlan = (uint16_t)fz_u16(in);
    r->ip_family = (int[]){4, 6, 4, 6, 0, 5, 4, 6}[fz_u8(in) % 8];
    if (r->match & (NETBE_M_SRC_IP | NETBE_M_DST_IP) && fz_take(in, 32, &src) == 32) {
        memcpy(r->src_ip, src, 16);
        memcpy(r->dst_ip, src + 16, 16);
    }
    r->src_plen = fz_u8(in);
    r->dst_plen = fz_u8(in);
    r->proto = (uint8_t)fz_u8(in);
    r->sport_lo = (uint16_t)fz_u16(in);
    r->sport_hi = (uint16_t)fz_u16(in);
    r->dport_lo = (uint16_t)fz_u16(in);
    r->dport_hi = (uint16_t)fz_u16(in);
    r->tcp_flags = (uint8_t)fz_u8(in);
    r->tcp_flags_mask = (uint8_t)fz_u8(in);
    r->icmp_type = (uint8_t)fz_u8(in);
    r->len_lo = fz_u16(in);
    r->len_hi = fz_u8(in) & 1 ? fz_u32(in) : fz_u16(in);
    r->action = (enum netbe_action)(fz_u8(in) % 6);
    r->rate_unit = (int)(fz_u8(in) % 3);
    r->rate = fz_rate(in);
    r->burst = fz_rate(in);
    if (r->action == NETBE_ACT_LUA || kind & 0x20) {
        r->hook = rs->hooks[i];
        r->hook_len = fz_text(in, rs->hooks[i]);
        if (fz_u8(in) & 1) {
            fz_text(in, rs->chunknames[i]);
            r->hook_name = rs->chunknames[i];
        }
    }
}

static void check_stats(netbe_policy *p, int nrules, const uint64_t judged[2])
{
    struct netbe_policy_stats st;
    struct netbe_rule_stats rs;
    netbe_policy_get_stats(p, &st);
    FZ_ASSERT(st.nrules == nrules, "stats say %d rules, the policy has %d", st.nrules, nrules);
    for (int d = 0; d < 2; d++)
        FZ_ASSERT(st.pass_frames[d] + st.drop_frames[d] == judged[d], "direction %d: %llu "
                  "passed and %llu dropped of %llu judged", d,
                  (unsigned long long)st.pass_frames[d], (unsigned long long)st.drop_frames[d],
                  (unsigned long long)judged[d]);
    for (int i = 0; i < nrules; i++)
        FZ_ASSERT(netbe_policy_rule_stats(p, i, &rs) == 0 && rs.drops <= rs.hits,
                  "rule %d's counters", i);
    FZ_ASSERT(netbe_policy_rule_stats(p, nrules, &rs) == -ENOENT &&
              netbe_policy_rule_stats(p, -1, &rs) == -ENOENT, "counters past the rules");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct rules rs;
    static uint8_t frame[NETBE_MAX_FRAME + 64];
    char err[NETBE_ERRMAX] = "";
    struct fz in = {data, size};
    struct netbe_policy_desc desc = {0};
    memset(&rs, 0, sizeof rs);
    desc.nrules = (int)(fz_u8(&in) % (MAX_RULES + 1));
    desc.rules = rs.r;
    desc.default_verdict = (int)(fz_u8(&in) % 3);
    desc.fail_verdict = (int)(fz_u8(&in) % 3);
    /* Budgets past INT_MAX, now and then: the C API takes any unsigned. */
    desc.hook_budget = fz_u32(&in);
    desc.hook_budget %= desc.hook_budget > 0x80000000u ? 0xffffffffu : 1000000;
    desc.hook_memory = fz_u8(&in) & 1 ? fz_u32(&in) % (64u << 20) : 0;
    desc.hook_time_ns = fz_u8(&in) & 1 ? fz_u32(&in) % 2000000 : 0;
    for (int i = 0; i < desc.nrules; i++)
        read_rule(&in, &rs, i);
    netbe_policy *p, *next;
    int rc = netbe_policy_new(&p, &desc, err, sizeof err);
    if (rc < 0) {
        FZ_ASSERT(err[0] && !strchr(err, '\n'), "policy_new failed (%d) without a one-line "
                  "message: '%s'", rc, err);
        return 0;
    }
    uint64_t judged[2] = {0, 0}, now = 0;
    for (int n = 0; in.n && n < 64; n++) {
        int dir = (int)(fz_u8(&in) & 1);
        now += fz_u32(&in);
        size_t len = fz_frame(&in, frame, sizeof frame);
        int v = netbe_policy_eval(p, dir, frame, len, now);
        FZ_ASSERT(v == NETBE_PASS || v == NETBE_DROP, "verdict %d", v);
        judged[dir]++;
    }
    check_stats(p, desc.nrules, judged);
    if (netbe_policy_new(&next, &desc, err, sizeof err) == 0) {
        netbe_policy_carry(next, p);
        check_stats(next, desc.nrules, judged);
        netbe_policy_free(next);
    }
    netbe_policy_free(p);
    return 0;
}
