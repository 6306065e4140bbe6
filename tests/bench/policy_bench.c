/*
** policy_bench.c: nanoseconds per packet of netbe_policy_eval over a batch
** of realistic frames (TCP data and ACKs, DNS, ARP, ICMP, IPv6 TCP) for
** rule sets of 0, 10, 100 and 1000 rules and for one Lua hook. Rule I is
** what an operator writes: port allow/deny rules, some with source
** prefixes or port ranges; no frame of the batch matches any of them, so
** every candidate is tested (the worst case for first-match).
** Time is this thread's CPU time, so other work on the machine inflates
** the figures less. Prints one line per case: "rules=N ns_per_packet=X".
** "policy_bench count CASE ROUNDS" (CASE 0 or lua) instead evaluates the
** batch ROUNDS times in eval_rounds and prints "packets=N", for counting
** the instructions per packet under callgrind
** (--collect-atstart=no --toggle-collect=eval_rounds).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "netbe.h"

static const uint8_t GUEST[6] = {0x52, 0x54, 0, 0x12, 0x34, 0x56};
static const uint8_t HOST[6] = {2, 0, 0, 0, 0, 1};

struct frame { uint8_t b[1514]; size_t n; int dir; };

static size_t ipv4_frame(uint8_t *b, size_t len, int proto, unsigned sport, unsigned dport,
                         int to_guest)
{
    memset(b, 0, len);
    memcpy(b, to_guest ? GUEST : HOST, 6);
    memcpy(b + 6, to_guest ? HOST : GUEST, 6);
    b[12] = 8; b[14] = 0x45; b[23] = (uint8_t)proto;
    b[16] = (uint8_t)((len - 14) >> 8); b[17] = (uint8_t)(len - 14);
    b[26] = 10; b[29] = to_guest ? 1 : 2;
    b[30] = 10; b[33] = to_guest ? 2 : 1;
    b[34] = (uint8_t)(sport >> 8); b[35] = (uint8_t)sport;
    b[36] = (uint8_t)(dport >> 8); b[37] = (uint8_t)dport;
    b[46] = 0x50; b[47] = 0x10;
    return len;
}

static int make_frames(struct frame *f)
{
    int n = 0;
    for (int i = 0; i < 40; i++, n++) {      /* TCP data to the guest, ACKs back */
        f[n].dir = i & 1 ? NETBE_DIR_FROM_GUEST : NETBE_DIR_TO_GUEST;
        f[n].n = ipv4_frame(f[n].b, i & 1 ? 66 : 1514, 6, i & 1 ? 443 : 51000,
                            i & 1 ? 51000 : 443, !(i & 1));
    }
    for (int i = 0; i < 6; i++, n++) {       /* DNS */
        f[n].dir = NETBE_DIR_FROM_GUEST;
        f[n].n = ipv4_frame(f[n].b, 80, 17, 40000 + (unsigned)i, 53, 0);
    }
    f[n].dir = NETBE_DIR_TO_GUEST;           /* ICMP echo */
    f[n].n = ipv4_frame(f[n].b, 98, 1, 0x0800, 0, 1);
    n++;
    f[n].dir = NETBE_DIR_FROM_GUEST;         /* ARP */
    f[n].n = 42;
    memset(f[n].b, 0xff, 6);
    memcpy(f[n].b + 6, GUEST, 6);
    f[n].b[12] = 8; f[n].b[13] = 6; f[n].b[15] = 1; f[n].b[16] = 8; f[n].b[18] = 6; f[n].b[19] = 4;
    n++;
    return n;
}

/* MODE 0: port rules; 1: one Lua hook; 2: source-address rules without
** ports, which the index cannot split (a blocklist of hosts). */
static netbe_policy *rules(int count, int mode)
{
    char err[NETBE_ERRMAX];
    struct netbe_rule *r = calloc((size_t)count + 1, sizeof *r);
    char (*names)[16] = calloc((size_t)count + 1, 16);
    for (int i = 0; i < count; i++) {
        snprintf(names[i], 16, "r%d", i);
        r[i].name = names[i];
        r[i].action = i & 1 ? NETBE_ACT_DROP : NETBE_ACT_PASS;
        r[i].match = NETBE_M_DIR | NETBE_M_PROTO | NETBE_M_DPORT;
        r[i].dir = i & 2 ? NETBE_DIR_TO_GUEST : NETBE_DIR_FROM_GUEST;
        r[i].proto = i % 3 ? 6 : 17;
        r[i].dport_lo = r[i].dport_hi = (uint16_t)(1000 + i * 7);
        if (i % 4 == 1) {
            r[i].match |= NETBE_M_SRC_IP;
            r[i].ip_family = 4;
            r[i].src_ip[0] = 192; r[i].src_ip[1] = 168; r[i].src_ip[2] = (uint8_t)i;
            r[i].src_plen = 24;
        }
        if (i % 4 == 2)
            r[i].dport_hi = (uint16_t)(r[i].dport_lo + 5);
        if (mode == 2) {
            r[i].match = NETBE_M_SRC_IP;
            r[i].ip_family = 4;
            r[i].src_ip[0] = 192; r[i].src_ip[1] = 168;
            r[i].src_ip[2] = (uint8_t)(i >> 8); r[i].src_ip[3] = (uint8_t)i;
            r[i].src_plen = 32;
        }
    }
    if (mode == 1) {
        static const char hook[] =
            "return function(pkt)\n"
            "if pkt.dport == 22 then return 'drop' end\n"
            "return 'pass'\n"
            "end\n";
        r[0].name = "hook";
        r[0].action = NETBE_ACT_LUA;
        r[0].match = 0;
        r[0].hook = hook;
        r[0].hook_len = sizeof hook - 1;
    }
    struct netbe_policy_desc d = {r, count, NETBE_PASS, NETBE_DROP, 0, 0, 0};
    netbe_policy *p = NULL;
    if (netbe_policy_new(&p, &d, err, sizeof err) < 0)
        fprintf(stderr, "policy_bench: %s\n", err);
    free(r);
    free(names);
    return p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Not inlined: callgrind counts what runs inside it. */
__attribute__((noinline)) static void eval_rounds(netbe_policy *p, const struct frame *f,
                                                  int nf, int rounds)
{
    for (int it = 0; it < rounds; it++)
        for (int i = 0; i < nf; i++)
            netbe_policy_eval(p, f[i].dir, f[i].b, f[i].n, 1);
}

static double ns_per_packet(netbe_policy *p, const struct frame *f, int nf)
{
    double best = 1e9;
    for (int round = 0; round < 5; round++) {
        int iters = 20000;
        double t0 = now();
        eval_rounds(p, f, nf, iters);
        double ns = (now() - t0) * 1e9 / ((double)iters * nf);
        if (ns < best)
            best = ns;
    }
    return best;
}

/* "count CASE ROUNDS": one run of eval_rounds, for callgrind. */
static int count_run(const struct frame *f, int nf, const char *which, int rounds)
{
    netbe_policy *p = rules(strcmp(which, "lua") == 0 ? 1 : 0, strcmp(which, "lua") == 0);
    if (!p)
        return 1;
    eval_rounds(p, f, nf, 1);    /* the first call warms the hook's state */
    eval_rounds(p, f, nf, rounds);
    printf("packets=%d\n", rounds * nf);
    netbe_policy_free(p);
    return 0;
}

int main(int argc, char **argv)
{
    static struct frame f[64];
    int nf = make_frames(f);
    if (argc == 4 && strcmp(argv[1], "count") == 0)
        return count_run(f, nf, argv[2], atoi(argv[3]));
    static const int counts[] = {0, 10, 100, 1000};
    for (int i = 0; i < 4; i++) {
        netbe_policy *p = rules(counts[i], 0);
        if (!p)
            return 1;
        printf("rules=%d ns_per_packet=%.1f\n", counts[i], ns_per_packet(p, f, nf));
        netbe_policy_free(p);
    }
    netbe_policy *p = rules(1, 1);
    if (!p)
        return 1;
    printf("rules=lua ns_per_packet=%.1f\n", ns_per_packet(p, f, nf));
    netbe_policy_free(p);
    if (!(p = rules(1000, 2)))
        return 1;
    printf("rules=1000-hosts ns_per_packet=%.1f\n", ns_per_packet(p, f, nf));
    netbe_policy_free(p);
    return 0;
}
