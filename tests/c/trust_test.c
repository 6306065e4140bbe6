/*
** trust_test.c: what a config string may do on the host. netbe removes a
** path only when it is a UNIX socket nobody listens on (never a file, a
** directory, a link or a live socket, also when an open fails halfway);
** options that run commands or name host paths need the embedder's
** permission, and paths are confined to its directory after '..' and
** symbolic links are resolved; MACs and values parse strictly.
** Everything lives in a fresh directory under /tmp.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "allow.h"
#include "check.h"
#include "netbe.h"

static struct event_base *base;
static char dir[64];                 /* the allowed directory */
static char outside[64];             /* another directory, not allowed */

/* DIR/NAME into BUF. */
static const char *in(char *buf, size_t len, const char *d, const char *name)
{
    snprintf(buf, len, "%s/%s", d, name);
    return buf;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static int has_text(const char *path, const char *text)
{
    char buf[64] = "";
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strcmp(buf, text) == 0;
}

static int is_sock(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* A socket of TYPE bound at PATH (and listening, for a stream). */
static int bound_socket(const char *path, int type)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, type, 0);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        (type == SOCK_STREAM && listen(fd, 64) < 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A socket at PATH whose process is gone: bound, then closed. */
static void stale_socket(const char *path)
{
    close(bound_socket(path, SOCK_STREAM));
}

static int can_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* Check LEGACY with permissions ALLOW in D; returns the result, ERR the message. */
static int check_with(const char *legacy, unsigned allow, const char *d, unsigned *needs,
                      char *err, size_t errlen)
{
    netbe_config *cfg = netbe_config_new();
    int rc = netbe_config_parse(cfg, legacy, err, errlen);
    if (rc == 0 && allow)
        rc = netbe_config_allow(cfg, allow, d, err, errlen);
    if (rc == 0)
        rc = netbe_config_check(cfg, err, errlen);
    if (needs)
        *needs = netbe_config_needs(cfg);
    netbe_config_free(cfg);
    return rc;
}

static void test_mac_strict(void)
{
    static const char *const bad[] = {
        "+2:+a:00:00:00:01", " 2: a:00:00:00:01", "2:a:0:0:0:1", "02:0a:00:00:00:1",
        "02:0a:00:00:00:0g", "02-0a-00-00-00-01", "02:0a:00:00:00:01:", "0x:0a:00:00:00:01",
        "02:0a:00:00:00:01 ", "",
    };
    uint8_t mac[6];
    char err[NETBE_ERRMAX];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(netbe_parse_mac(bad[i], mac, err, sizeof err) == -EINVAL &&
              strstr(err, "expected six hex bytes"), "'%s' rejected: %s", bad[i], err);
    CHECK(netbe_parse_mac("02:AA:bb:0c:D0:ef", mac, err, sizeof err) == 0 &&
          mac[1] == 0xaa && mac[5] == 0xef, "mixed case accepted: %s", err);
}

/* A value set key by key cannot add keys to the legacy normal form. */
static void test_values_one_field(void)
{
    char err[NETBE_ERRMAX];
    netbe_config *cfg = netbe_config_new();
    netbe_config_set(cfg, "backend", "stream");
    netbe_config_set(cfg, "connect", "127.0.0.1:5000,reconnect=1,mtu=9000");
    CHECK(netbe_config_check(cfg, err, sizeof err) == -EINVAL &&
          strstr(err, "key 'connect': a ',' or control character at offset 14"),
          "comma refused: %s", err);
    netbe_config_set(cfg, "connect", "127.0.0.1:5000\nreconnect=1");
    CHECK(netbe_config_check(cfg, err, sizeof err) == -EINVAL && strstr(err, "control"),
          "newline refused: %s", err);
    netbe_config_set(cfg, "connect", "127.0.0.1:5000");
    CHECK(netbe_config_check(cfg, err, sizeof err) == 0, "plain value: %s", err);
    netbe_config_free(cfg);
}

static void test_allow_call(void)
{
    char err[NETBE_ERRMAX], file[96];
    netbe_config *cfg = netbe_config_new();
    CHECK(netbe_config_allow(cfg, 0x4, NULL, err, sizeof err) == -EINVAL &&
          strstr(err, "unknown permission bits 0x4"), "unknown bit: %s", err);
    CHECK(netbe_config_allow(cfg, NETBE_ALLOW_FILES, NULL, err, sizeof err) == -EINVAL &&
          strstr(err, "needs a directory"), "no dir: %s", err);
    CHECK(netbe_config_allow(cfg, NETBE_ALLOW_FILES, "", err, sizeof err) == -EINVAL &&
          strstr(err, "needs a directory"), "empty dir: %s", err);
    CHECK(netbe_config_allow(cfg, NETBE_ALLOW_FILES, "/nonexistent-netbe", err,
                             sizeof err) == -ENOENT, "missing dir: %s", err);
    write_file(in(file, sizeof file, dir, "plain"), "x");
    CHECK(netbe_config_allow(cfg, NETBE_ALLOW_FILES, file, err, sizeof err) == -ENOTDIR,
          "a file is not a directory: %s", err);
    CHECK(netbe_config_allow(cfg, NETBE_ALLOW_EXEC, NULL, err, sizeof err) == 0, "%s", err);
    unlink(file);
    netbe_config_free(cfg);
}

/* Without permission each option is refused, all named in one message. */
static void test_refused_by_default(void)
{
    char err[NETBE_ERRMAX], spec[300];
    unsigned needs = 0;
    CHECK(check_with("slirp,guestfwd=tcp:10.0.2.100:1-cmd:id", 0, NULL, &needs, err,
                     sizeof err) == -EPERM &&
          strstr(err, "guestfwd runs a host command (needs exec)") &&
          needs == NETBE_ALLOW_EXEC, "guestfwd: %s", err);
    CHECK(check_with("slirp,tftp=/", 0, NULL, &needs, err, sizeof err) == -EPERM &&
          strstr(err, "tftp '/' is a host path (needs files)") && needs == NETBE_ALLOW_FILES,
          "tftp: %s", err);
    snprintf(spec, sizeof spec, "slirp,guestfwd=tcp:10.0.2.100:1-cmd:id,tftp=%s,"
             "hostfwd=unix:%s/victim-:22", dir, dir);
    CHECK(check_with(spec, 0, NULL, &needs, err, sizeof err) == -EPERM &&
          strstr(err, "guestfwd runs") && strstr(err, "tftp '") && strstr(err, "hostfwd '") &&
          needs == (NETBE_ALLOW_EXEC | NETBE_ALLOW_FILES), "all named: %s", err);
    CHECK(check_with(spec, NETBE_ALLOW_FILES, dir, &needs, err, sizeof err) == -EPERM &&
          strstr(err, "guestfwd runs") && !strstr(err, "tftp"), "files given: %s", err);
    CHECK(check_with(spec, NETBE_ALLOW_FILES | NETBE_ALLOW_EXEC, dir, NULL, err,
                     sizeof err) == 0, "both given: %s", err);
    static const char *const sockets[] = {
        "stream,listen=unix:%s/s", "stream,connect=%s/s", "dgram,local=unix:%s/a,remote=unix:/b",
    };
    for (size_t i = 0; i < sizeof sockets / sizeof sockets[0]; i++) {
        snprintf(spec, sizeof spec, sockets[i], dir);
        CHECK(check_with(spec, 0, NULL, NULL, err, sizeof err) == -EPERM &&
              strstr(err, "(needs files)"), "%s: %s", spec, err);
    }
    CHECK(check_with("stream,connect=127.0.0.1:5000", 0, NULL, &needs, err, sizeof err) == 0 &&
          needs == 0, "IP addresses need nothing: %s", err);
}

/* Paths must resolve inside the directory: '..', symbolic links in the
** directories, a symbolic link as the socket itself. */
static void test_confinement(void)
{
    char err[NETBE_ERRMAX], spec[300], a[96], b[96];
    static const char *const ok[] = {
        "stream,listen=unix:%s/s.sock", "stream,connect=%s/./sub/../s.sock",
        "slirp,tftp=%s", "slirp,hostfwd=unix:%s/fwd-x.sock-:22",
        "dgram,local=unix:%s/a,remote=unix:%s/b",
    };
    mkdir(in(a, sizeof a, dir, "sub"), 0700);
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        snprintf(spec, sizeof spec, ok[i], dir, dir);
        CHECK(check_with(spec, NETBE_ALLOW_FILES, dir, NULL, err, sizeof err) == 0,
              "%s: %s", spec, err);
    }
    symlink(outside, in(a, sizeof a, dir, "up"));               /* dir/up -> outside */
    symlink(in(b, sizeof b, outside, "t"), in(a, sizeof a, dir, "leaf"));
    static const char *const bad[][2] = {
        {"stream,listen=unix:%s/../s.sock", "outside the allowed"},
        {"stream,listen=unix:%s/sub/../../s.sock", "outside the allowed"},
        {"stream,listen=unix:%s/up/s.sock", "outside the allowed"},
        {"stream,connect=unix:%s/leaf", "is a symbolic link"},
        {"stream,listen=unix:%s/..", "expected a socket name"},
        {"stream,listen=unix:%s/nodir/s.sock", "cannot resolve its directory"},
        {"slirp,tftp=%s/up", "outside the allowed"},
        {"slirp,tftp=%s/..", "outside the allowed"},
        {"slirp,hostfwd=unix:%s/up/x-:22", "outside the allowed"},
        {"dgram,local=unix:%s/a,remote=unix:%s/up/b", "remote '"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(spec, sizeof spec, bad[i][0], dir, dir);
        CHECK(check_with(spec, NETBE_ALLOW_FILES, dir, NULL, err, sizeof err) == -EPERM &&
              strstr(err, bad[i][1]), "%s: %s", spec, err);
    }
    CHECK(check_with("stream,listen=unix:/x/../../s.sock", NETBE_ALLOW_FILES, "/", NULL, err,
                     sizeof err) == 0, "'/' allows everything: %s", err);
    /* A directory named like the allowed one plus a suffix is not inside it. */
    snprintf(a, sizeof a, "%s-twin", dir);
    mkdir(a, 0700);
    snprintf(spec, sizeof spec, "stream,listen=unix:%s/s.sock", a);
    CHECK(check_with(spec, NETBE_ALLOW_FILES, dir, NULL, err, sizeof err) == -EPERM,
          "a sibling with the same prefix: %s", err);
    rmdir(a);
    unlink(in(a, sizeof a, dir, "up"));
    unlink(in(a, sizeof a, dir, "leaf"));
    rmdir(in(a, sizeof a, dir, "sub"));
}

/* stream listen= over what is already at the path. */
static void test_stream_listen_paths(void)
{
    char err[NETBE_ERRMAX], spec[200], p[96], t[96];
    netbe *be = NULL;
    in(p, sizeof p, dir, "s.sock");
    snprintf(spec, sizeof spec, "stream,listen=unix:%s", p);

    write_file(p, "precious");
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == -EEXIST &&
          strstr(err, "exists and is a regular file") && has_text(p, "precious"),
          "a regular file stays: %s", err);
    unlink(p);

    mkdir(p, 0700);
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == -EEXIST &&
          strstr(err, "is a directory"), "a directory stays: %s", err);
    CHECK(rmdir(p) == 0, "the directory was still there");

    write_file(in(t, sizeof t, dir, "target"), "precious");
    symlink(t, p);
    CHECK(open_allowing(&be, spec, "/", base, NULL, NULL, err, sizeof err) == -EEXIST &&
          strstr(err, "is a symbolic link") && has_text(p, "precious"),
          "a symbolic link and its target stay: %s", err);
    unlink(p);
    unlink(t);

    int live = bound_socket(p, SOCK_STREAM);
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == -EADDRINUSE &&
          strstr(err, "socket of a running process") && can_connect(p),
          "a live socket stays in service: %s", err);
    close(live);
    CHECK(is_sock(p), "closing a socket leaves its path (stale now)");

    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == 0,
          "a stale socket is taken over: %s", err);
    CHECK(can_connect(p), "and listened on");
    netbe_close(be);
    CHECK(!is_sock(p), "close removes its own socket");

    /* The path replaced by someone else's socket: close leaves it. */
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    unlink(p);
    live = bound_socket(p, SOCK_STREAM);
    netbe_close(be);
    CHECK(is_sock(p) && can_connect(p), "close leaves another process's socket");
    close(live);
    unlink(p);

    /* The path replaced by a file: close leaves it. */
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    unlink(p);
    write_file(p, "precious");
    netbe_close(be);
    CHECK(has_text(p, "precious"), "close leaves a file put at its path");
    unlink(p);

    char longpath[300], name[121];
    memset(name, 'a', 120);
    name[120] = '\0';
    snprintf(longpath, sizeof longpath, "stream,listen=unix:%s/%s", dir, name);
    CHECK(open_allowing(&be, longpath, dir, base, NULL, NULL, err, sizeof err) == -EINVAL &&
          strstr(err, "a UNIX socket path of 1 to 107 characters"), "too long: %s", err);
}

/* dgram local= likewise; a bound datagram socket counts as live. */
static void test_dgram_local_paths(void)
{
    char err[NETBE_ERRMAX], spec[300], a[96], b[96];
    netbe *be = NULL;
    in(a, sizeof a, dir, "a.sock");
    in(b, sizeof b, dir, "b.sock");
    snprintf(spec, sizeof spec, "dgram,local=unix:%s,remote=unix:%s", a, b);
    write_file(a, "precious");
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == -EEXIST &&
          has_text(a, "precious"), "a regular file stays: %s", err);
    unlink(a);
    int live = bound_socket(a, SOCK_DGRAM);
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == -EADDRINUSE &&
          is_sock(a), "a bound datagram socket stays: %s", err);
    close(live);
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == 0,
          "its stale socket is taken over: %s", err);
    netbe_close(be);
    CHECK(!is_sock(a), "close removes its own socket");
}

/* slirp: a failed open removes only the sockets it made; rules at run time. */
static void test_slirp_paths(void)
{
    char err[NETBE_ERRMAX], spec[400], victim[96], mine[96], live_path[96], rule[200];
    netbe *be = NULL;
    in(victim, sizeof victim, dir, "victim-");
    in(mine, sizeof mine, dir, "mine.sock");
    in(live_path, sizeof live_path, dir, "live.sock");
    write_file(victim, "precious");
    snprintf(spec, sizeof spec, "slirp,hostfwd=unix:%s-:22", victim);
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == -EEXIST &&
          strstr(err, "exists and is a regular file") && has_text(victim, "precious"),
          "hostfwd=unix:VICTIM- leaves the file: %s", err);

    int live = bound_socket(live_path, SOCK_STREAM);
    snprintf(spec, sizeof spec, "slirp,hostfwd=unix:%s-:22;unix:%s-:23;unix:%s-:24", mine,
             live_path, victim);
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == -EADDRINUSE,
          "a live socket fails the open: %s", err);
    CHECK(!is_sock(mine), "the socket this open made is removed");
    CHECK(can_connect(live_path), "the live socket still serves");
    CHECK(has_text(victim, "precious"), "the file never reached is untouched");

    snprintf(spec, sizeof spec, "slirp,hostfwd=unix:%s-:22", mine);
    CHECK(open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err) == 0, "%s", err);
    snprintf(rule, sizeof rule, "unix:%s-:23", live_path);
    CHECK(netbe_slirp_hostfwd_add(be, rule, err, sizeof err) == -EADDRINUSE &&
          can_connect(live_path), "run time: a live socket is not taken: %s", err);
    snprintf(rule, sizeof rule, "unix:%s-:23", victim);
    CHECK(netbe_slirp_hostfwd_add(be, rule, err, sizeof err) == -EEXIST &&
          has_text(victim, "precious"), "run time: a file is not taken: %s", err);
    snprintf(rule, sizeof rule, "unix:%s/x.sock-:23", outside);
    CHECK(netbe_slirp_hostfwd_add(be, rule, err, sizeof err) == -EPERM &&
          strstr(err, "outside the allowed"), "run time: confined too: %s", err);
    snprintf(rule, sizeof rule, "unix:%s", mine);
    CHECK(netbe_slirp_hostfwd_remove(be, rule, err, sizeof err) == 0 && !is_sock(mine),
          "removing a rule removes its socket: %s", err);
    netbe_close(be);
    close(live);

    CHECK(netbe_open_str(&be, spec, base, NULL, NULL, err, sizeof err) == -EPERM &&
          !be, "netbe_open_str allows nothing: %s", err);
    unlink(victim);
    unlink(live_path);
}

/* The three calls on their own. */
static void test_unix_calls(void)
{
    char err[NETBE_ERRMAX], p[96];
    struct netbe_unix_id id = {0, 0};
    in(p, sizeof p, dir, "c.sock");
    CHECK(netbe_unix_clear(p, err, sizeof err) == 0, "nothing there: %s", err);
    stale_socket(p);
    CHECK(netbe_unix_clear(p, err, sizeof err) == 0 && !is_sock(p), "stale removed: %s", err);
    int fd = bound_socket(p, SOCK_STREAM);
    CHECK(netbe_unix_release(p, &id) == 0 && is_sock(p), "an all-zero id removes nothing");
    CHECK(netbe_unix_mark(p, &id) == 0 && id.ino != 0, "mark");
    CHECK(netbe_unix_release(p, &id) == 0 && is_sock(p), "not while it listens");
    close(fd);
    CHECK(netbe_unix_release(p, &id) == 1 && !is_sock(p), "removed once closed");
    write_file(p, "x");
    CHECK(netbe_unix_mark(p, &id) == -ENOTSOCK, "a file is no socket");
    unlink(p);
}

int main(void)
{
    base = event_base_new();
    snprintf(dir, sizeof dir, "/tmp/netbe-trust.XXXXXX");
    snprintf(outside, sizeof outside, "/tmp/netbe-trust-out.XXXXXX");
    if (!mkdtemp(dir) || !mkdtemp(outside)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_mac_strict());
    RUN(test_values_one_field());
    RUN(test_allow_call());
    RUN(test_refused_by_default());
    RUN(test_confinement());
    RUN(test_stream_listen_paths());
    RUN(test_dgram_local_paths());
    RUN(test_slirp_paths());
    RUN(test_unix_calls());
    CHECK(rmdir(dir) == 0, "every test cleaned up after itself in %s", dir);
    rmdir(outside);
    event_base_free(base);
    return check_summary();
}
