/*
** config.c: backend config strings, every backend and every slirp option
** (tests/fuzz/config.dict lists the keys and values), and the permissions
** of netbe_config_allow. The input is a flags byte, then one legacy string
** "BACKEND[,key[=value]]..."; in it "%D" stands for the directory the
** harness allows files in and "%O" for one beside it, outside. The flags
** choose the permissions: none, files in %D, files anywhere ("/": only
** checked, never opened), a file given as the directory (refused), and
** exec or not. The string goes through netbe_config_parse and
** netbe_config_check; then the backends that reach nothing off this
** machine are opened and closed: null, pair, stream, dgram and slirp (in
** this harness's network namespace: it refuses to run outside one with no
** route). A refused config is given to netbe_open too. On a slirp, the
** NUL-separated strings after the config are forwarding rules added at run
** time ('-' first: removed), then listed.
** Both directories hold a regular file, a live socket and a stale one that
** are not netbe's; %D also holds symbolic links out to them (and one
** dangling, to a name in %O), a link to itself and a subdirectory.
** What must hold:
**   - every failure has a one-line message;
**   - the normal form check writes is accepted again, unchanged;
**   - a MAC is accepted only in the form xx:xx:xx:xx:xx:xx;
**   - a config is accepted only when each UNIX socket path it names lies
**     in %D once '..' and links are resolved and is no link itself, its
**     tftp= directory resolves into %D, and it runs a command only with
**     exec allowed; netbe_config_needs names what it uses;
**   - netbe_open agrees with netbe_config_check;
**   - the forwarding list says how long it is and fits any buffer, and
**     rules added at run time stay in %D too;
**   - after the close the tree is as it was: nothing made, removed,
**     replaced or changed, but a stale socket in %D, which netbe may
**     remove; nothing connected to the live socket in %O.
*/
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#define FZ_LIBSLIRP
#include "fuzz.h"

static struct event_base *base;
static char root[PATH_MAX], in_dir[PATH_MAX], out_dir[PATH_MAX];
static int in_live = -1, out_live = -1;

/* ---- The tree under ROOT, as it must stay ---- */

#define MAX_ENTRIES 32

struct entry {
    char path[PATH_MAX];
    struct stat st;
};

static struct entry expected[MAX_ENTRIES], found[MAX_ENTRIES];
static int nexpected;

/* Every path under DIR (not following links) into OUT from *N on. */
static void walk(const char *dir, struct entry *out, int *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    FZ_ASSERT(d, "%s: %s", dir, strerror(errno));
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        FZ_ASSERT(*n < MAX_ENTRIES, "more than %d entries under %s", MAX_ENTRIES, root);
        struct entry *x = &out[(*n)++];
        snprintf(x->path, sizeof x->path, "%s/%s", dir, e->d_name);
        FZ_ASSERT(lstat(x->path, &x->st) == 0, "%s: %s", x->path, strerror(errno));
        if (S_ISDIR(x->st.st_mode))
            walk(x->path, out, n);
    }
    closedir(d);
}

static int snapshot(struct entry *out)
{
    int n = 0;
    walk(root, out, &n);
    return n;
}

static const struct entry *lookup(const struct entry *set, int n, const char *path)
{
    for (int i = 0; i < n; i++)
        if (strcmp(set[i].path, path) == 0)
            return &set[i];
    return NULL;
}

/* A stale socket: bound, then closed without removing it. */
static void make_stale(const char *dir)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/stale", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FZ_ASSERT(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind %s: %s", sa.sun_path,
              strerror(errno));
    close(fd);
}

/* A listening socket at DIR/live, standing for another service. */
static int make_live(const char *dir)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/live", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    FZ_ASSERT(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 8) == 0,
              "listen on %s: %s", sa.sun_path, strerror(errno));
    return fd;
}

static void make_file(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    FZ_ASSERT(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static void make_link(const char *target, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", in_dir, name);
    FZ_ASSERT(symlink(target, path) == 0, "symlink %s: %s", path, strerror(errno));
}

/* Connections a config made to the live socket in DIR: none may reach
** the one outside; the one inside is only drained. */
static int drain(int fd)
{
    int n = 0, c;
    while ((c = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
        close(c);
        n++;
    }
    return n;
}

/* The tree must be as it was (a directory's own times and size aside:
** sockets come and go in %D); a stale socket in %D may be gone (netbe
** clears stale sockets where it may bind): it is made again. */
static void check_tree(void)
{
    char stale[PATH_MAX];
    int n = snapshot(found), stale_gone = 0;
    snprintf(stale, sizeof stale, "%s/stale", in_dir);
    for (int i = 0; i < n; i++)
        FZ_ASSERT(lookup(expected, nexpected, found[i].path), "%s appeared", found[i].path);
    for (int i = 0; i < nexpected; i++) {
        const struct entry *was = &expected[i], *now = lookup(found, n, was->path);
        if (!now && strcmp(was->path, stale) == 0) {
            stale_gone = 1;
            continue;
        }
        FZ_ASSERT(now, "%s is gone", was->path);
        FZ_ASSERT(now->st.st_ino == was->st.st_ino && now->st.st_mode == was->st.st_mode,
                  "%s was replaced", was->path);
        FZ_ASSERT(S_ISDIR(was->st.st_mode) || (now->st.st_size == was->st.st_size &&
                  now->st.st_mtim.tv_sec == was->st.st_mtim.tv_sec &&
                  now->st.st_mtim.tv_nsec == was->st.st_mtim.tv_nsec),
                  "%s was changed", was->path);
    }
    FZ_ASSERT(drain(out_live) == 0, "a config connected to %s/live, outside", out_dir);
    drain(in_live);
    if (stale_gone) {
        make_stale(in_dir);
        nexpected = snapshot(expected);
    }
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path) < 0 ? -1 : 0;
}

static void cleanup(void)
{
    nftw(root, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup_once(void)
{
    const char *tmp = getenv("TMPDIR");
    char made[PATH_MAX];
    fz_require_netns();
    base = event_base_new();
    snprintf(made, sizeof made, "%s/netbe-fuzz-config-XXXXXX", tmp ? tmp : "/tmp");
    FZ_ASSERT(mkdtemp(made), "mkdtemp: %s", strerror(errno));
    FZ_ASSERT(realpath(made, root), "%s: %s", made, strerror(errno));
    snprintf(in_dir, sizeof in_dir, "%s/in", root);
    snprintf(out_dir, sizeof out_dir, "%s/out", root);
    FZ_ASSERT(mkdir(in_dir, 0700) == 0 && mkdir(out_dir, 0700) == 0, "mkdir: %s",
              strerror(errno));
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/sub", in_dir);
    FZ_ASSERT(mkdir(sub, 0700) == 0, "mkdir: %s", strerror(errno));
    make_file(in_dir, "victim", "victim\n");
    make_file(out_dir, "victim", "victim\n");
    make_file(out_dir, "boot", "secret\n");
    in_live = make_live(in_dir);
    out_live = make_live(out_dir);
    make_stale(in_dir);
    make_stale(out_dir);
    make_link("../out", "up");
    make_link("../out/live", "out-live");
    make_link("../out/stale", "out-stale");
    make_link("../out/victim", "out-victim");
    make_link("../out/new", "dangling");
    make_link(".", "self");
    nexpected = snapshot(expected);
    atexit(cleanup);
}

/* ---- What a config may use ---- */

/* PATH is DIR or below it. */
static int below(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* A socket path the embedder allowed in %D: its directory resolves there,
** it names a socket (not "", "." or ".."), and it is no link. */
static int socket_inside(const char *path)
{
    const char *slash = strrchr(path, '/'), *leaf = slash ? slash + 1 : path;
    char dir[PATH_MAX], real[PATH_MAX];
    struct stat st;
    if (!slash || !*leaf || strcmp(leaf, ".") == 0 || strcmp(leaf, "..") == 0 ||
        (size_t)(slash - path) >= sizeof dir)
        return 0;
    snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (!realpath(dir, real) || !below(real, in_dir))
        return 0;
    return !(lstat(path, &st) == 0 && S_ISLNK(st.st_mode));
}

/* Each UNIX path of forwarding RULES ("unix:/PATH-GADDR:GPORT", the guest
** part after the last '-'; SEP between rules: ";" in hostfwd=, "" for the
** one rule of netbe_slirp_hostfwd_add), passed to FN. Returns how many
** there were, or -1 at the first FN refuses. */
static int hostfwd_paths(const char *rules, const char *sep, int (*fn)(const char *))
{
    char copy[1024], *save = NULL;
    int n = 0;
    snprintf(copy, sizeof copy, "%s", rules);
    for (char *r = strtok_r(copy, sep, &save); r; r = strtok_r(NULL, sep, &save)) {
        if (strncmp(r, "unix:", 5) != 0)
            continue;
        char *dash = strrchr(r, '-');
        if (dash && strchr(dash, ':'))
            *dash = '\0';
        n++;
        if (fn && !fn(r + 5))
            return -1;
    }
    return n;
}

/* The UNIX socket paths of CFG: stream's and dgram's addresses ("unix:P"
** or "/P") and slirp's forwarding. Returns how many, or -1 when one lies
** outside %D. */
static int unix_paths(const netbe_config *cfg)
{
    static const char *const keys[] = {"listen", "connect", "local", "remote"};
    int n = 0;
    for (int i = 0; i < 4; i++) {
        const char *v = netbe_config_get(cfg, keys[i]);
        const char *path = !v ? NULL : strncmp(v, "unix:", 5) == 0 ? v + 5 :
                           v[0] == '/' ? v : NULL;
        if (path && !socket_inside(path))
            return -1;
        n += path != NULL;
    }
    const char *fwd = netbe_config_get(cfg, "hostfwd");
    int m = fwd ? hostfwd_paths(fwd, ";", socket_inside) : 0;
    return m < 0 ? -1 : n + m;
}

/* Permissions from the flags byte. */
enum { FILES_NONE, FILES_IN, FILES_ANY, FILES_NOT_DIR };

struct perm {
    int files;                   /* FILES_* */
    int exec;
};

/* CFG with the permissions P; a directory that is a file is refused and
** leaves CFG with none. */
static void allow(netbe_config *cfg, const struct perm *p)
{
    char err[NETBE_ERRMAX] = "", victim[PATH_MAX];
    unsigned bits = p->exec ? NETBE_ALLOW_EXEC : 0;
    const char *dir = p->files == FILES_IN ? in_dir : p->files == FILES_ANY ? "/" : NULL;
    if (p->files == FILES_NOT_DIR) {
        snprintf(victim, sizeof victim, "%s/victim", in_dir);
        int rc = netbe_config_allow(cfg, bits | NETBE_ALLOW_FILES, victim, err, sizeof err);
        FZ_ASSERT(rc == -ENOTDIR && err[0] && !strchr(err, '\n'), "a file as the allowed "
                  "directory: %d '%s'", rc, err);
    }
    FZ_ASSERT(netbe_config_allow(cfg, bits | (dir ? NETBE_ALLOW_FILES : 0), dir, err,
                                 sizeof err) == 0, "netbe_config_allow: %s", err);
}

static void check_message(const char *what, int rc, const char *err)
{
    FZ_ASSERT(rc < 0, "%s returned %d", what, rc);
    FZ_ASSERT(err[0] && !strchr(err, '\n'), "%s failed (%d) without a one-line message: "
              "'%s'", what, rc, err);
}

/* What an accepted (RC 0) or refused check of CFG says about the host
** resources it uses. */
static void check_permissions(const netbe_config *cfg, int rc, const struct perm *p)
{
    const char *type = netbe_config_get(cfg, "type");
    const char *tftp = netbe_config_get(cfg, "tftp");
    int slirp = type && strcmp(type, "slirp") == 0;
    int paths = unix_paths(cfg);
    unsigned needs = netbe_config_needs(cfg);
    if (rc == 0 || rc == -EPERM) {
        FZ_ASSERT(!paths || needs & NETBE_ALLOW_FILES, "UNIX paths, and needs 0x%x", needs);
        FZ_ASSERT(!(slirp && tftp) || needs & NETBE_ALLOW_FILES, "tftp=, and needs 0x%x",
                  needs);
        FZ_ASSERT(!(slirp && netbe_config_get(cfg, "guestfwd")) || needs & NETBE_ALLOW_EXEC,
                  "guestfwd=, and needs 0x%x", needs);
    }
    if (rc < 0 || p->files == FILES_ANY)
        return;
    FZ_ASSERT(paths == 0 || (p->files == FILES_IN && paths > 0), "a UNIX socket path "
              "outside %s is accepted", in_dir);
    if (slirp && tftp) {
        char real[PATH_MAX];
        FZ_ASSERT(p->files == FILES_IN && realpath(tftp, real) && below(real, in_dir),
                  "tftp=%s is accepted", tftp);
    }
    FZ_ASSERT(!slirp || !netbe_config_get(cfg, "guestfwd") || p->exec,
              "guestfwd= is accepted without exec");
}

/* A copy of CFG's keys and values, checked again, must come out the same. */
static void check_again(const netbe_config *cfg, const struct perm *p)
{
    char err[NETBE_ERRMAX] = "";
    netbe_config *again = netbe_config_new();
    allow(again, p);
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

/* ---- Opening ---- */

/* Run-time forwarding on an open slirp: each rule after the config (NUL
** separated) is added, or removed when it starts with '-'; then the list. */
static void try_rules(netbe *be, const char *rules, const char *end)
{
    char err[NETBE_ERRMAX], list[4096], tiny[8];
    for (const char *r = rules; r < end; r += strlen(r) + 1) {
        err[0] = '\0';
        int rc = r[0] == '-' ? netbe_slirp_hostfwd_remove(be, r + 1, err, sizeof err)
                             : netbe_slirp_hostfwd_add(be, r, err, sizeof err);
        if (rc < 0)
            check_message("run-time hostfwd", rc, err);
        else if (r[0] != '-')
            FZ_ASSERT(hostfwd_paths(r, "", socket_inside) >= 0, "run-time hostfwd '%s' outside "
                      "%s is accepted", r, in_dir);
    }
    ssize_t n = netbe_slirp_hostfwd_list(be, list, sizeof list);
    FZ_ASSERT(n >= 0 && (n >= (ssize_t)sizeof list || strlen(list) == (size_t)n),
              "hostfwd_list said %zd, wrote %zu", n, strlen(list));
    memset(tiny, 'x', sizeof tiny);
    FZ_ASSERT(netbe_slirp_hostfwd_list(be, tiny, sizeof tiny) == n &&
              memchr(tiny, '\0', sizeof tiny), "hostfwd_list into 8 bytes");
}

/* The backends a harness may open: nothing they do leaves this machine. */
static int may_open(const char *type)
{
    static const char *const ok[] = {"null", "pair", "stream", "dgram", "slirp", NULL};
    for (const char *const *t = ok; *t; t++)
        if (strcmp(type, *t) == 0)
            return 1;
    return 0;
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
        /* Sockets may fail to bind or connect; null and pair cannot fail. */
        FZ_ASSERT(strcmp(type, "null") != 0 && strcmp(type, "pair") != 0, "%s: open failed: "
                  "%s", type, err);
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

/* The input as strings (NUL separated, the config first), each "%D" and
** "%O" replaced with its directory. *END is set past the last. */
static char *expand(const uint8_t *data, size_t size, char **end)
{
    size_t dlen = strlen(in_dir) > strlen(out_dir) ? strlen(in_dir) : strlen(out_dir);
    char *s = malloc(size * dlen + 1), *o = s;
    for (size_t i = 0; i < size; i++) {
        const char *dir = NULL;
        if (data[i] == '%' && i + 1 < size)
            dir = data[i + 1] == 'D' ? in_dir : data[i + 1] == 'O' ? out_dir : NULL;
        if (dir) {
            memcpy(o, dir, strlen(dir));
            o += strlen(dir);
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
    struct perm p = {(data[0] >> 1) & 3, (data[0] >> 3) & 1};
    char *end, *legacy = expand(data + 1, size - 1, &end);
    const char *rules = legacy + strlen(legacy) + (legacy < end);
    netbe_config *cfg = netbe_config_new();
    allow(cfg, &p);
    int rc = netbe_config_parse(cfg, legacy, err, sizeof err);
    if (rc < 0) {
        check_message("netbe_config_parse", rc, err);
    } else {
        netbe_config *checked = netbe_config_new();
        allow(checked, &p);
        for (int i = 0; i < netbe_config_count(cfg); i++)
            netbe_config_set(checked, netbe_config_key(cfg, i), netbe_config_value(cfg, i));
        rc = netbe_config_check(checked, err, sizeof err);
        const char *mac = netbe_config_get(cfg, "mac");
        if (rc < 0) {
            check_message("netbe_config_check", rc, err);
        } else {
            check_again(checked, &p);
            if (mac)
                FZ_ASSERT(mac_form(mac), "mac '%s' accepted", mac);
        }
        check_permissions(checked, rc, &p);
        /* Files anywhere are only checked: an open could reach outside. */
        const char *type = netbe_config_get(checked, "type");
        if (open_it && p.files != FILES_ANY && (rc < 0 || may_open(type)))
            try_open(cfg, rc, type, rules, end);
        netbe_config_free(checked);
    }
    check_tree();
    netbe_config_free(cfg);
    free(legacy);
    return 0;
}
