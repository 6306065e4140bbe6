/*
** config.c: backend config strings, every backend and every slirp option
** (tests/fuzz/config.dict lists the keys and values). The input is one
** legacy string "BACKEND[,key[=value]]..." (after a flags byte); "%D" in
** it stands for a directory of the harness's own, so that UNIX socket
** paths land there and nowhere else. It goes through netbe_config_parse
** and netbe_config_check; then the backends that open nothing on the host
** (null, pair and slirp, which binds only in this harness's network
** namespace: it refuses to run outside one with no route) are opened and
** closed; a refused config is given to netbe_open too. On a slirp, the
** NUL-separated strings after the config are forwarding rules added at run
** time ('-' first: removed), then listed. The directory holds a regular
** file and a live socket that are not netbe's.
** What must hold:
**   - every failure has a one-line message;
**   - the normal form check writes is accepted again, unchanged;
**   - a MAC is accepted only in the form xx:xx:xx:xx:xx:xx;
**   - netbe_open agrees with netbe_config_check;
**   - the forwarding list says how long it is and fits any buffer;
**   - files netbe did not make are still there, unchanged.
*/
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#define FZ_LIBSLIRP
#include "fuzz.h"

static struct event_base *base;
static char dir[80], victim[108], live[108];
static int live_fd = -1;

static void check_message(const char *what, int rc, const char *err)
{
    FZ_ASSERT(rc < 0, "%s returned %d", what, rc);
    FZ_ASSERT(err[0] && !strchr(err, '\n'), "%s failed (%d) without a one-line message: "
              "'%s'", what, rc, err);
}

/* A copy of CFG's keys and values, checked again, must come out the same. */
static void check_again(const netbe_config *cfg)
{
    char err[NETBE_ERRMAX] = "";
    netbe_config *again = netbe_config_new();
    for (int i = 0; i < netbe_config_count(cfg); i++)
        netbe_config_set(again, netbe_config_key(cfg, i), netbe_config_value(cfg, i));
    int rc = netbe_config_check(again, err, sizeof err);
    FZ_ASSERT(rc == 0, "the normal form is refused: %s", err);
    FZ_ASSERT(netbe_config_count(again) == netbe_config_count(cfg), "checking twice "
              "changed the key count");
    for (int i = 0; i < netbe_config_count(cfg); i++) {
        const char *v = netbe_config_get(again, netbe_config_key(cfg, i));
        FZ_ASSERT(v && strcmp(v, netbe_config_value(cfg, i)) == 0, "checking twice "
                  "changed %s from '%s' to '%s'", netbe_config_key(cfg, i),
                  netbe_config_value(cfg, i), v ? v : "(none)");
    }
    netbe_config_free(again);
}

/* xx:xx:xx:xx:xx:xx exactly. */
static int mac_form(const char *s)
{
    for (int i = 0; i < 17; i++)
        if (i % 3 == 2 ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
            return 0;
    return s[17] == '\0';
}

/* Every UNIX path RULE names lies in the harness's directory. */
static int rule_confined(const char *rule)
{
    size_t dlen = strlen(dir);
    if (strstr(rule, ".."))
        return 0;
    for (const char *p = rule; (p = strstr(p, "unix:")); p += 5)
        if (strncmp(p + 5, dir, dlen) != 0 || p[5 + dlen] != '/')
            return 0;
    return 1;
}

/* Run-time forwarding on an open slirp: each rule after the config (NUL
** separated) is added, or removed when it starts with '-'; then the list. */
static void try_rules(netbe *be, const char *rules, const char *end)
{
    char err[NETBE_ERRMAX], list[4096], tiny[8];
    for (const char *r = rules; r < end; r += strlen(r) + 1) {
        int rc;
        if (!rule_confined(r))
            continue;
        err[0] = '\0';
        rc = r[0] == '-' ? netbe_slirp_hostfwd_remove(be, r + 1, err, sizeof err)
                         : netbe_slirp_hostfwd_add(be, r, err, sizeof err);
        if (rc < 0)
            check_message("run-time hostfwd", rc, err);
    }
    ssize_t n = netbe_slirp_hostfwd_list(be, list, sizeof list);
    FZ_ASSERT(n >= 0 && (n >= (ssize_t)sizeof list || strlen(list) == (size_t)n),
              "hostfwd_list said %zd, wrote %zu", n, strlen(list));
    memset(tiny, 'x', sizeof tiny);
    FZ_ASSERT(netbe_slirp_hostfwd_list(be, tiny, sizeof tiny) == n &&
              memchr(tiny, '\0', sizeof tiny), "hostfwd_list into 8 bytes");
}

static void try_open(const netbe_config *cfg, int check_rc, const char *type,
                     const char *rules, const char *end)
{
    char err[NETBE_ERRMAX] = "";
    netbe *a = NULL, *b = NULL;
    int rc = netbe_open(&a, cfg, base, NULL, NULL, err, sizeof err);
    if (check_rc < 0) {
        check_message("netbe_open of a config check refused", rc, err);
        return;
    }
    if (rc < 0) {
        /* slirp binds; the rest cannot fail on a config check accepted. */
        FZ_ASSERT(strcmp(type, "slirp") == 0, "%s: open failed: %s", type, err);
        check_message("netbe_open", rc, err);
        return;
    }
    if (strcmp(type, "pair") == 0)
        FZ_ASSERT(netbe_open(&b, cfg, base, NULL, NULL, err, sizeof err) == 0,
                  "the pair's second end: %s", err);
    if (strcmp(type, "slirp") == 0)
        try_rules(a, rules, end);
    for (int i = 0; i < 3; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    netbe_close(a);
    netbe_close(b);
}

/* A listening socket at the path LIVE, standing for another service. */
static void listen_live(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", live);
    if (live_fd >= 0)
        close(live_fd);
    unlink(live);
    live_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FZ_ASSERT(bind(live_fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(live_fd, 1) == 0,
              "listen on %s: %s", live, strerror(errno));
}

static void write_victim(void)
{
    FILE *f = fopen(victim, "w");
    FZ_ASSERT(f, "%s: %s", victim, strerror(errno));
    fputs("victim\n", f);
    fclose(f);
}

/* The regular file and the live socket that are not netbe's. */
static void check_bystanders(void)
{
    struct stat st;
    int ok = stat(victim, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 7;
    ok = ok && stat(live, &st) == 0 && S_ISSOCK(st.st_mode);
    if (!ok && fz_avoid("unlink")) {
        write_victim();
        listen_live();
        return;
    }
    FZ_ASSERT(ok, "a file netbe did not make is gone or changed: %s or %s", victim, live);
}

static void setup_once(void)
{
    const char *tmp = getenv("TMPDIR");
    fz_require_netns();
    base = event_base_new();
    snprintf(dir, sizeof dir, "%s/netbe-fuzz-config-XXXXXX", tmp ? tmp : "/tmp");
    FZ_ASSERT(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    snprintf(victim, sizeof victim, "%s/victim", dir);
    snprintf(live, sizeof live, "%s/live", dir);
    write_victim();
    listen_live();
}

/* The input as strings (NUL separated, the config first), each "%D"
** replaced with the directory. *END is set past the last. */
static char *expand(const uint8_t *data, size_t size, char **end)
{
    size_t dlen = strlen(dir);
    char *s = malloc(size * dlen + 1), *o = s;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '%' && i + 1 < size && data[i + 1] == 'D') {
            memcpy(o, dir, dlen);
            o += dlen;
            i++;
        } else {
            *o++ = (char)data[i];
        }
    }
    *o = '\0';
    *end = o;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[NETBE_ERRMAX] = "";
    if (!base)
        setup_once();
    if (size < 1)
        return 0;
    int open_it = data[0] & 1;
    char *end, *legacy = expand(data + 1, size - 1, &end);
    const char *rules = legacy + strlen(legacy) + (legacy < end);
    netbe_config *cfg = netbe_config_new();
    int rc = netbe_config_parse(cfg, legacy, err, sizeof err);
    if (rc < 0) {
        check_message("netbe_config_parse", rc, err);
    } else {
        netbe_config *checked = netbe_config_new();
        for (int i = 0; i < netbe_config_count(cfg); i++)
            netbe_config_set(checked, netbe_config_key(cfg, i), netbe_config_value(cfg, i));
        rc = netbe_config_check(checked, err, sizeof err);
        const char *mac = netbe_config_get(cfg, "mac");
        if (rc < 0) {
            check_message("netbe_config_check", rc, err);
        } else {
            check_again(checked);
            if (mac && !fz_avoid("mac_strict"))
                FZ_ASSERT(mac_form(mac), "mac '%s' accepted", mac);
        }
        const char *type = netbe_config_get(checked, "type");
        /* A refused config opens nothing; hostfwd paths stay in the directory. */
        const char *fwd = netbe_config_get(cfg, "hostfwd");
        if (open_it && rc < 0)
            try_open(cfg, rc, NULL, rules, end);
        else if (open_it && (strcmp(type, "null") == 0 || strcmp(type, "pair") == 0 ||
                 (strcmp(type, "slirp") == 0 && (!fwd || rule_confined(fwd)))))
            try_open(cfg, rc, type, rules, end);
        netbe_config_free(checked);
    }
    check_bystanders();
    netbe_config_free(cfg);
    free(legacy);
    return 0;
}
