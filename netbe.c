/*
** netbe.c: the netbe core. See netbe.h for the contract.
**
** Contents (each section opens with a "{====" fence and closes with
** "}===="; its prefix in brackets):
**   1. Utilities: errors, iovecs, counters, MD5, byte order, time [nb_]
**   2. Config: legacy strings, keys, MAC and MTU [nb_]
**   3. Frames: virtio-net headers; Ethernet, IP and transport headers parsed [nb_]
**   4. Offloads: checksums and segmentation in software [nb_]
**   5. Backend core: open, send, recv, events, counters [nb_]
**   6. Sockets, shared by pair, stream and dgram [nb_]
**   7. IP reassembly: whole datagrams from a guest's fragments [frag_]
**   8. Backend null: discards what it is sent, never receives [null_]
**   9. Backend pair: two in-process endpoints joined by name [pair_]
**  10. Backend tap (Linux tun, FreeBSD tap, vmnet, ngd) [tap_]
**  11. Backend stream: length-prefixed frames over a stream socket [stream_]
**  12. Backend dgram: one frame per datagram [dgram_]
**  13. Backend netgraph: an ng_socket node hooked into a netgraph graph [netgraph_]
**  14. Backends netmap and vale: a netmap port, one TX and one RX ring [nmb_]
**  15. Backend slirp: user-mode NAT through libslirp [sl_]
**  16. The backend table [nb_]
**  17. Lua sandboxes: untrusted Lua within bounds of memory and time [sbx_]
**  18. Policy: rules compiled into an index, matched per frame [pol_]
**  19. Wire: two backends joined both ways [wire_]
**  20. virtio: split virtqueues [vq_]
**
** Naming: netbe_ is the public API (netbe.h); nb_ names what several
** sections share; every other section names its own things with the
** one prefix shown above, its macros with the same in capitals. None
** is a library's: libslirp has slirp_, netmap netmap_ and nm_.
*/
#define _GNU_SOURCE
#include "netbe.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <event2/event.h>
#ifndef NETBE_OMIT_SLIRP
#include <glib.h>
#include <libslirp.h>
#endif
#ifndef NETBE_OMIT_LUA
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#else
/* Policies without Lua never make a state (hook rules are refused where
** they load, section 18); these stand in for the names the rest uses. */
typedef struct lua_State lua_State;
#define LUA_NOREF (-2)
#define lua_close(L) ((void)(L))
#endif

#ifdef __linux__
#include <linux/if_tun.h>
#endif

/* {===================================================================
** 1. Utilities: errors, iovecs, counters, MD5, byte order, time
** ==================================================================== */

/* Write a message into ERR (if any) and return -CODE. Messages quote what
** they refuse, and a config string may hold any byte: control characters
** become '?', so the message stays one line. */
static int nb_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int nb_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        for (char *c = err; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                *c = '?';
    }
    return -code;
}

#define NB_ERR(code, ...) nb_err(err, errlen, code, __VA_ARGS__)

/* Functions on the per-frame path of a policy that the compiler would
** call out of line, costing more than their work (scripts/bench policy). */
#define NB_INLINE static inline __attribute__((always_inline))

static size_t nb_iov_len(const struct iovec *iov, int iovcnt)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

/* Copy LEN bytes starting OFF bytes into IOV out to DST; returns bytes copied. */
static size_t nb_iov_to_buf(const struct iovec *iov, int iovcnt, size_t off,
                            void *dst, size_t len)
{
    size_t done = 0;
    for (int i = 0; i < iovcnt && done < len; i++) {
        size_t l = iov[i].iov_len;
        if (off >= l) {
            off -= l;
            continue;
        }
        size_t n = l - off < len - done ? l - off : len - done;
        memcpy((char *)dst + done, (char *)iov[i].iov_base + off, n);
        done += n;
        off = 0;
    }
    return done;
}

/* Copy LEN bytes of SRC into IOV starting OFF bytes in; returns bytes copied.
** Most copies land in the first buffer: one memcpy, no walk. */
static inline size_t nb_buf_to_iov(const void *src, size_t len, const struct iovec *iov,
                                   int iovcnt, size_t off)
{
    if (iovcnt > 0 && off <= iov[0].iov_len && len <= iov[0].iov_len - off) {
        memcpy((char *)iov[0].iov_base + off, src, len);
        return len;
    }
    size_t done = 0;
    for (int i = 0; i < iovcnt && done < len; i++) {
        size_t l = iov[i].iov_len;
        if (off >= l) {
            off -= l;
            continue;
        }
        size_t n = l - off < len - done ? l - off : len - done;
        memcpy((char *)iov[i].iov_base + off, (const char *)src + done, n);
        done += n;
        off = 0;
    }
    return done;
}

/* Fill OUT (room for iovcnt entries) with IOV minus its first SKIP bytes.
** Returns the new count. */
static int nb_iov_skip(const struct iovec *iov, int iovcnt, size_t skip,
                       struct iovec *out)
{
    int n = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        out[n].iov_base = (char *)iov[i].iov_base + skip;
        out[n].iov_len = iov[i].iov_len - skip;
        skip = 0;
        n++;
    }
    return n;
}

static void nb_count(uint64_t *counter, uint64_t n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

/* Add N to a counter only one thread writes, which others may read: a
** plain add. A locked add would also wait for every store before it (the
** frame just copied into guest memory) to leave the CPU. */
static void nb_count_own(uint64_t *counter, uint64_t n)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static uint64_t nb_load(const uint64_t *counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

#ifdef __FreeBSD__
/* For descriptors made by another library (netgraph's NgMkSockNode). */
static int nb_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -errno : fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}
#endif

/* MD5 (RFC 1321), only for bhyve-compatible MAC generation. */
struct nb_md5 {
    uint32_t h[4];
    uint64_t len;
    uint8_t buf[64];
};

static uint32_t nb_rol(uint32_t x, int c) { return (x << c) | (x >> (32 - c)); }

static void nb_md5_block(struct nb_md5 *m, const uint8_t *p)
{
    static const uint8_t r[64] = {
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
        5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
        4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
        6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};
    static const uint32_t k[64] = {
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
        0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
        0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
        0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
        0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
        0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
        0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
        0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
        0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
        0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
        0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
    uint32_t w[16], a = m->h[0], b = m->h[1], c = m->h[2], d = m->h[3];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[i * 4] | (uint32_t)p[i * 4 + 1] << 8 |
               (uint32_t)p[i * 4 + 2] << 16 | (uint32_t)p[i * 4 + 3] << 24;
    for (int i = 0; i < 64; i++) {
        uint32_t f;
        int g;
        if (i < 16) { f = (b & c) | (~b & d); g = i; }
        else if (i < 32) { f = (d & b) | (~d & c); g = (5 * i + 1) % 16; }
        else if (i < 48) { f = b ^ c ^ d; g = (3 * i + 5) % 16; }
        else { f = c ^ (b | ~d); g = (7 * i) % 16; }
        uint32_t t = d;
        d = c;
        c = b;
        b = b + nb_rol(a + f + k[i] + w[g], r[i]);
        a = t;
    }
    m->h[0] += a; m->h[1] += b; m->h[2] += c; m->h[3] += d;
}

static void nb_md5(const void *data, size_t len, uint8_t out[16])
{
    struct nb_md5 m = {{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}, 0, {0}};
    const uint8_t *p = data;
    size_t i;
    for (i = 0; i + 64 <= len; i += 64)
        nb_md5_block(&m, p + i);
    size_t rest = len - i;
    memcpy(m.buf, p + i, rest);
    m.buf[rest++] = 0x80;
    if (rest > 56) {
        memset(m.buf + rest, 0, 64 - rest);
        nb_md5_block(&m, m.buf);
        rest = 0;
    }
    memset(m.buf + rest, 0, 56 - rest);
    uint64_t bits = (uint64_t)len * 8;
    for (int j = 0; j < 8; j++)
        m.buf[56 + j] = (uint8_t)(bits >> (8 * j));
    nb_md5_block(&m, m.buf);
    for (int j = 0; j < 16; j++)
        out[j] = (uint8_t)(m.h[j / 4] >> (8 * (j % 4)));
}

static uint16_t nb_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static uint32_t nb_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void nb_put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* CLOCK_MONOTONIC in nanoseconds. */
static uint64_t nb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void nb_put32(uint8_t *p, uint32_t v)
{
    nb_put16(p, v >> 16);
    nb_put16(p + 2, v & 0xffff);
}

/* }================================================================ */

/* {===================================================================
** 2. Config: legacy strings, keys, MAC and MTU
** ==================================================================== */

/* What the embedder lets a config do on the host (netbe_config_allow). */
struct nb_allow {
    unsigned flags;              /* NETBE_ALLOW_* */
    char *dir;                   /* the files directory, resolved; owned */
};

struct netbe_config {
    int n, cap;
    char **key, **val;
    struct nb_allow allow;
    unsigned needs;              /* NETBE_ALLOW_* the last check found used */
    char refused[NETBE_ERRMAX];  /* what the last check refused, "" if nothing */
};

netbe_config *netbe_config_new(void)
{
    return calloc(1, sizeof(netbe_config));
}

void netbe_config_free(netbe_config *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; i < cfg->n; i++) {
        free(cfg->key[i]);
        free(cfg->val[i]);
    }
    free(cfg->key);
    free(cfg->val);
    free(cfg->allow.dir);
    free(cfg);
}

static int nb_config_find(const netbe_config *cfg, const char *key)
{
    for (int i = 0; i < cfg->n; i++)
        if (strcmp(cfg->key[i], key) == 0)
            return i;
    return -1;
}

int netbe_config_set(netbe_config *cfg, const char *key, const char *value)
{
    if (!key || !*key)
        return -EINVAL;
    char *v = strdup(value ? value : "true");
    if (!v)
        return -ENOMEM;
    int i = nb_config_find(cfg, key);
    if (i >= 0) {
        free(cfg->val[i]);
        cfg->val[i] = v;
        return 0;
    }
    if (cfg->n == cfg->cap) {
        int cap = cfg->cap ? cfg->cap * 2 : 8;
        char **k = realloc(cfg->key, cap * sizeof(char *));
        if (k)
            cfg->key = k;
        char **vv = k ? realloc(cfg->val, cap * sizeof(char *)) : NULL;
        if (!vv) {
            free(v);
            return -ENOMEM;
        }
        cfg->val = vv;
        cfg->cap = cap;
    }
    cfg->key[cfg->n] = strdup(key);
    if (!cfg->key[cfg->n]) {
        free(v);
        return -ENOMEM;
    }
    cfg->val[cfg->n++] = v;
    return 0;
}

const char *netbe_config_get(const netbe_config *cfg, const char *key)
{
    int i = nb_config_find(cfg, key);
    return i < 0 ? NULL : cfg->val[i];
}

int netbe_config_count(const netbe_config *cfg) { return cfg->n; }

const char *netbe_config_key(const netbe_config *cfg, int i)
{
    return i >= 0 && i < cfg->n ? cfg->key[i] : NULL;
}

const char *netbe_config_value(const netbe_config *cfg, int i)
{
    return i >= 0 && i < cfg->n ? cfg->val[i] : NULL;
}

/* One field of a legacy string: "key", "key=value"; the first is the backend. */
static int nb_config_field(netbe_config *cfg, char *field, int first,
                           const char *legacy, char *err, size_t errlen)
{
    if (!*field)
        return NB_ERR(EINVAL, "config '%s': empty field (expected BACKEND[,key[=value]]...)",
                      legacy);
    if (first)
        return netbe_config_set(cfg, "backend", field);
    char *eq = strchr(field, '=');
    if (eq)
        *eq = '\0';
    if (!*field)
        return NB_ERR(EINVAL, "config '%s': field '=%s' has no key", legacy, eq + 1);
    return netbe_config_set(cfg, field, eq ? eq + 1 : NULL);
}

int netbe_config_parse(netbe_config *cfg, const char *legacy, char *err, size_t errlen)
{
    if (!legacy || !*legacy)
        return NB_ERR(EINVAL, "empty backend config (expected BACKEND[,key[=value]]...)");
    char *copy = strdup(legacy);
    if (!copy)
        return NB_ERR(ENOMEM, "out of memory");
    int rc = 0, first = 1;
    char *s = copy;
    for (;;) {
        char *comma = strchr(s, ',');
        if (comma)
            *comma = '\0';
        rc = nb_config_field(cfg, s, first, legacy, err, errlen);
        if (rc < 0 || !comma)
            break;
        s = comma + 1;
        first = 0;
    }
    free(copy);
    return rc;
}

/* The value of hex digit C, or -1. */
static int nb_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int netbe_parse_mac(const char *text, uint8_t mac[6], char *err, size_t errlen)
{
    /* Exactly xx:xx:xx:xx:xx:xx: sscanf's %x would also take signs,
    ** spaces and single digits. */
    uint8_t b[6];
    int ok = strlen(text) == 17;
    for (int i = 0; ok && i < 6; i++) {
        int hi = nb_hex_digit(text[i * 3]), lo = nb_hex_digit(text[i * 3 + 1]);
        ok = hi >= 0 && lo >= 0 && (i == 5 || text[i * 3 + 2] == ':');
        b[i] = ok ? (uint8_t)(hi << 4 | lo) : 0;
    }
    if (!ok)
        return NB_ERR(EINVAL, "mac '%s': expected six hex bytes like 00:a0:98:12:34:56",
                      text);
    memcpy(mac, b, 6);
    if (mac[0] & 1)
        return NB_ERR(EINVAL, "mac '%s': multicast address (expected a unicast MAC)", text);
    if (!(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]))
        return NB_ERR(EINVAL, "mac '%s': all-zero address (expected a unicast MAC)", text);
    return 0;
}

/* Decimal unsigned in [lo, hi] with nothing after it. */
static int nb_parse_uint(const char *text, unsigned long lo, unsigned long hi,
                         unsigned long *out)
{
    char *end;
    if (!text || *text < '0' || *text > '9')
        return -EINVAL;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

int netbe_parse_mtu(const char *text, unsigned *mtu, char *err, size_t errlen)
{
    unsigned long v;
    if (nb_parse_uint(text, 46, 65535, &v) < 0)
        return NB_ERR(EINVAL, "mtu '%s': expected a whole number from 46 to 65535", text);
    *mtu = (unsigned)v;
    return 0;
}

void netbe_mac_generate(int slot, int func, const char *vmname, uint8_t mac[6])
{
    char text[300];
    uint8_t digest[16];
    int n = snprintf(text, sizeof text, "%d-%d-%s", slot, func, vmname ? vmname : "");
    nb_md5(text, n < (int)sizeof text ? (size_t)n : sizeof text - 1, digest);
    mac[0] = 0x00;
    mac[1] = 0xa0;
    mac[2] = 0x98;
    mac[3] = digest[0];
    mac[4] = digest[1];
    mac[5] = digest[2];
}

/* ---- What a config may do on the host ----
** Options that run host commands or name host paths are refused unless the
** embedder allowed them (netbe.h explains why UNIX socket paths count). */

int netbe_config_allow(netbe_config *cfg, unsigned allow, const char *dir,
                       char *err, size_t errlen)
{
    unsigned known = NETBE_ALLOW_EXEC | NETBE_ALLOW_FILES;
    if (allow & ~known)
        return NB_ERR(EINVAL, "netbe_config_allow: unknown permission bits 0x%x",
                      allow & ~known);
    char *real = NULL;
    if (allow & NETBE_ALLOW_FILES) {
        struct stat st;
        if (!dir || !*dir)
            return NB_ERR(EINVAL, "netbe_config_allow: NETBE_ALLOW_FILES needs a directory");
        real = realpath(dir, NULL);
        int e = !real ? errno : stat(real, &st) < 0 ? errno : !S_ISDIR(st.st_mode) ? ENOTDIR : 0;
        if (e) {
            free(real);
            return NB_ERR(e, "allowed files directory '%s': %s", dir, strerror(e));
        }
    }
    free(cfg->allow.dir);
    cfg->allow.flags = allow;
    cfg->allow.dir = real;
    return 0;
}

unsigned netbe_config_needs(const netbe_config *cfg) { return cfg->needs; }

/* DST becomes a copy of SRC. Returns 0 or -ENOMEM. */
static int nb_allow_copy(struct nb_allow *dst, const struct nb_allow *src)
{
    dst->flags = src->flags;
    dst->dir = src->dir ? strdup(src->dir) : NULL;
    return src->dir && !dst->dir ? -ENOMEM : 0;
}

static int nb_allow_exec(const struct nb_allow *a, const char *key, char *err, size_t errlen)
{
    if (a->flags & NETBE_ALLOW_EXEC)
        return 0;
    return NB_ERR(EPERM, "%s runs a host command (needs exec)", key);
}

/* 0 when A lets a config use host PATH (option KEY), else -EPERM with ERR
** saying why. PATH must lie in the allowed directory once '..' and symbolic
** links are resolved. WHOLE: PATH is a directory netbe serves (tftp=) and
** is resolved whole. Otherwise PATH names a socket that need not exist yet:
** its directory is resolved, and PATH itself may not be a symbolic link
** (connect() would follow it out of the directory). */
static int nb_allow_path(const struct nb_allow *a, const char *key, const char *path,
                         int whole, char *err, size_t errlen)
{
    if (!(a->flags & NETBE_ALLOW_FILES))
        return NB_ERR(EPERM, "%s '%s' is a host path (needs files)", key, path);
    if (strcmp(a->dir, "/") == 0)
        return 0;                /* every path lies below "/" */
    char dir[PATH_MAX], *real;
    const char *slash = strrchr(path, '/'), *leaf = slash ? slash + 1 : path;
    if (whole) {
        real = realpath(path, NULL);
    } else {
        if (!*leaf || strcmp(leaf, ".") == 0 || strcmp(leaf, "..") == 0)
            return NB_ERR(EPERM, "%s '%s': expected a socket name after the last '/'",
                          key, path);
        size_t n = slash ? (size_t)(slash - path) : 0;
        if (n >= sizeof dir)
            return NB_ERR(EPERM, "%s '%s': path too long", key, path);
        memcpy(dir, path, n);
        strcpy(dir + n, !slash ? "." : n ? "" : "/");
        real = realpath(dir, NULL);
    }
    if (!real)
        return NB_ERR(EPERM, "%s '%s': cannot resolve %s: %s", key, path,
                      whole ? "it" : "its directory", strerror(errno));
    size_t dl = strlen(a->dir);
    int inside = strncmp(real, a->dir, dl) == 0 && (real[dl] == '\0' || real[dl] == '/');
    int rc = inside ? 0 : NB_ERR(EPERM, "%s '%s' lies in %s, outside the allowed %s", key,
                                 path, real, a->dir);
    free(real);
    struct stat st;
    if (rc == 0 && !whole && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
        rc = NB_ERR(EPERM, "%s '%s' is a symbolic link (a socket path may not be one)",
                    key, path);
    return rc;
}

/* Note that option KEY of CFG uses host resource PERM (NETBE_ALLOW_EXEC, or
** NETBE_ALLOW_FILES for PATH, WHOLE as in nb_allow_path), and add why to
** cfg->refused when the embedder did not allow it: the check reports every
** refusal at once. */
static void nb_config_use(netbe_config *cfg, unsigned perm, const char *key,
                          const char *path, int whole)
{
    char why[NETBE_ERRMAX];
    int rc = perm == NETBE_ALLOW_EXEC ? nb_allow_exec(&cfg->allow, key, why, sizeof why) :
             nb_allow_path(&cfg->allow, key, path, whole, why, sizeof why);
    size_t n = strlen(cfg->refused);
    cfg->needs |= perm;
    if (rc < 0)
        snprintf(cfg->refused + n, sizeof cfg->refused - n, "%s%s", n ? "; " : "", why);
}

/* }================================================================ */

/* {===================================================================
** 3. Frames: virtio-net headers; Ethernet, IP and transport headers parsed
** ==================================================================== */

/* The virtio-net header, little-endian as VERSION_1 defines it (we only
** support little-endian hosts, as bhyve does). num_buffers exists only in the
** 12-byte form. */
struct nb_vnet_hdr {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
};
/* Headers are copied in and out of it as they are on the wire. */
_Static_assert(sizeof(struct nb_vnet_hdr) == 12, "nb_vnet_hdr is the wire layout");

#define NB_HDR_F_NEEDS_CSUM  1
#define NB_HDR_GSO_NONE      0

/* Walk up to two VLAN tags (802.1ad outer, 802.1Q inner) of Ethernet
** frame F of LEN >= 14 bytes. Stores the ethertype after them in *TYPE and
** the outer VLAN id (0xffff untagged) in *VLAN; returns the offset past
** that ethertype, 0 when a tag runs past LEN. */
NB_INLINE size_t nb_eth_walk(const uint8_t *f, size_t len, uint16_t *type, uint16_t *vlan)
{
    size_t off = 12;
    *type = nb_get16(f + off);
    *vlan = 0xffff;
    for (int tags = 0; tags < 2 && (*type == 0x8100 || *type == 0x88a8); tags++) {
        if (off + 6 > len)
            return 0;
        if (tags == 0)
            *vlan = nb_get16(f + off + 2) & 0x0fff;
        off += 4;
        *type = nb_get16(f + off);
    }
    return off + 2;
}

/* Where the headers of an Ethernet frame are. A layer is filled in only
** when the one below it was whole, every length checked against LEN. */
struct nb_pkt {
    uint16_t type, vlan;         /* ethertype after the tags; outer VLAN id, 0xffff none */
    unsigned l3;                 /* offset of what TYPE names; 0: LEN is too short */
    size_t end;                  /* end of the IP packet (Ethernet padding follows); 0:
                                 ** no whole IPv4 or IPv6 header at l3 */
    int v6;
    int frag;                    /* a fragment (IPv4, or an IPv6 fragment header) */
    int ext;                     /* IPv6 extension headers come before l4 */
    int proto;                   /* IPv4 protocol, IPv6 last next header; -1 unknown */
    unsigned l4;                 /* offset of the transport header; 0: not in this packet */
    unsigned hdrs;               /* end of a whole TCP or UDP header; 0: none */
};

/* IPv6 extension headers walked to the transport header. */
NB_INLINE int nb_ip6_ext(unsigned nh)
{
    return nh == 0 || nh == 43 || nh == 60 || nh == 44 || nh == 51;
}

/* The end of a whole TCP or UDP header of protocol PROTO at L4 (0: not in
** this packet) in a packet that ends at END; else 0. */
NB_INLINE unsigned nb_pkt_hdrs(const uint8_t *f, size_t cap, int proto, unsigned l4,
                               size_t end)
{
    if (!l4)
        return 0;
    if (proto == IPPROTO_TCP && l4 + 20 <= end && l4 + 20 <= cap) {
        unsigned doff = (f[l4 + 12] >> 4) * 4u;
        return doff >= 20 && l4 + doff <= end ? l4 + doff : 0;
    }
    return proto == IPPROTO_UDP && l4 + 8 <= end ? l4 + 8 : 0;
}

/* The IPv4 packet at F + P->l3. Fields are stored once all is read, so
** no read of F waits for a store to *P (bytes may alias it). */
NB_INLINE void nb_pkt_ip4(const uint8_t *f, size_t len, size_t cap, struct nb_pkt *p)
{
    unsigned l3 = p->l3;
    const uint8_t *ip = f + l3;
    if (l3 + 20 > len || ip[0] >> 4 != 4)
        return;
    unsigned ihl = (ip[0] & 15u) * 4, frag = nb_get16(ip + 6), tot = nb_get16(ip + 2);
    if (ihl < 20 || tot < ihl || l3 + tot > len)
        return;
    int proto = ip[9];
    /* A later fragment carries no transport header. */
    unsigned l4 = frag & 0x1fff ? 0 : l3 + ihl;
    unsigned hdrs = nb_pkt_hdrs(f, cap, proto, l4, l3 + tot);
    p->end = l3 + tot;
    p->proto = proto;
    p->frag = (frag & 0x3fff) != 0;
    p->l4 = l4;
    p->hdrs = hdrs;
}

/* The IPv6 packet at F + P->l3 and its extension headers, at most 8, each
** whole within the packet and within the first CAP bytes of F. */
NB_INLINE void nb_pkt_ip6(const uint8_t *f, size_t len, size_t cap, struct nb_pkt *p)
{
    unsigned l3 = p->l3;
    const uint8_t *ip = f + l3;
    if (l3 + 40 > len || ip[0] >> 4 != 6)
        return;
    size_t end = l3 + 40 + (size_t)nb_get16(ip + 4), off = l3 + 40;
    if (end > len)
        return;
    unsigned nh = ip[6];
    int frag = 0, ext = 0, proto = -1;
    for (int n = 0; n < 8 && nb_ip6_ext(nh); n++) {
        const uint8_t *h = f + off;
        if (off + 8 > end || off + 8 > cap)
            break;
        size_t hl = nh == 44 ? 8 : nh == 51 ? ((size_t)h[1] + 2) * 4 :
                                              ((size_t)h[1] + 1) * 8;
        if (off + hl > end)
            break;
        ext = 1;
        frag |= nh == 44;
        if (nh == 44 && nb_get16(h + 2) & 0xfff8) {
            proto = h[0];                /* a later fragment: no transport header */
            break;
        }
        off += hl;
        nh = h[0];
    }
    unsigned l4 = 0;
    if (proto < 0 && !nb_ip6_ext(nh)) {
        proto = (int)nh;
        l4 = (unsigned)off;
    }
    unsigned hdrs = nb_pkt_hdrs(f, cap, proto, l4, end);
    p->end = end;
    p->v6 = 1;
    p->frag = frag;
    p->ext = ext;
    p->proto = proto;
    p->l4 = l4;
    p->hdrs = hdrs;
}

/* Parse Ethernet (up to two VLAN tags), IPv4 or IPv6 (extension headers
** walked) and a TCP or UDP header in frame F of LEN bytes, reading only
** its first CAP bytes: IPv4 and TCP headers fit in NB_HEAD_MAX, and what
** an IPv6 extension chain puts past CAP counts as missing. The one parser
** of these headers: offloads and policies alike start here, and ask P
** for more. Returns 0 when F is TCP or UDP right after its IP header,
** every length in place (what offloads take; they check frag too), else
** -1; either way P holds every layer found whole. */
NB_INLINE int nb_pkt_parse(const uint8_t *f, size_t len, size_t cap, struct nb_pkt *p)
{
    uint16_t type = 0, vlan = 0xffff;
    unsigned l3 = len < 14 ? 0 : (unsigned)nb_eth_walk(f, len, &type, &vlan);
    *p = (struct nb_pkt){.type = type, .vlan = vlan, .l3 = l3, .proto = -1};
    if (l3 && type == 0x0800)
        nb_pkt_ip4(f, len, cap, p);
    else if (l3 && type == 0x86dd)
        nb_pkt_ip6(f, len, cap, p);
    return p->hdrs && !p->ext ? 0 : -1;
}

/* True when the first N bytes of P's transport header are in the packet. */
static int nb_pkt_has_l4(const struct nb_pkt *p, size_t n)
{
    return p->l4 && p->l4 + n <= p->end;
}

/* }================================================================ */

/* {===================================================================
** 4. Offloads: checksums and segmentation in software
** ====================================================================
** What a NIC without offloads does when a header asks for one: complete a
** partial checksum, cut a TSO frame into TCP segments, a USO frame into
** UDP datagrams, a UFO frame into IPv4 fragments. The segments are the
** ones Linux's GSO sends (tcp_gso_segment, inet_gso_segment), so a peer
** cannot tell who cut them. Headers are checked against the frame before
** any offset in them is used: a header that lies is refused, not followed.
*/

#define NB_HDR_F_DATA_VALID  2
#define NB_HDR_GSO_TCPV4     1
#define NB_HDR_GSO_UDP       3
#define NB_HDR_GSO_TCPV6     4
#define NB_HDR_GSO_UDP_L4    5
#define NB_HDR_GSO_ECN       0x80

/* A GSO frame cut into more pieces than this is an attack, not traffic
** (Linux's smallest MSS, 88 bytes, makes 745 of a 64 KiB frame). */
#define NB_SEG_MAX 1024
/* Bytes of a frame the header parser may look at: Ethernet with two VLAN
** tags (22), the largest IPv4 header (60) and TCP header (60). */
#define NB_HEAD_MAX 160

#define NB_TCP_FIN 0x01
#define NB_TCP_PSH 0x08
#define NB_TCP_CWR 0x80

/* Segments a GSO frame of payload PAYLOAD makes with MSS bytes each. */
static size_t nb_seg_count(size_t payload, unsigned mss)
{
    return payload ? (payload + mss - 1) / mss : 1;
}

/* The payload size of one piece: UFO fragments carry multiples of 8. */
static unsigned nb_hdr_mss(const struct nb_vnet_hdr *h)
{
    return (h->gso_type & ~NB_HDR_GSO_ECN) == NB_HDR_GSO_UDP ? h->gso_size & ~7u
                                                             : h->gso_size;
}

/* 0 when header H tells the truth about Ethernet frame F of LEN bytes (F
** holds at least min(LEN, NB_HEAD_MAX) bytes), else -EINVAL. P is filled
** for a GSO frame. See netbe_frame_check for the rules. */
static int nb_hdr_check(const struct nb_vnet_hdr *h, const uint8_t *f, size_t len,
                        struct nb_pkt *p)
{
    if (h->flags & ~(NB_HDR_F_NEEDS_CSUM | NB_HDR_F_DATA_VALID) || h->hdr_len > len)
        return -EINVAL;
    if (h->flags & NB_HDR_F_NEEDS_CSUM &&
        (h->csum_start < 14 || (size_t)h->csum_start + h->csum_offset + 2 > len))
        return -EINVAL;
    unsigned gso = h->gso_type & ~NB_HDR_GSO_ECN;
    if (gso == NB_HDR_GSO_NONE)
        return h->gso_type & NB_HDR_GSO_ECN ? -EINVAL : 0;
    int tcp = gso == NB_HDR_GSO_TCPV4 || gso == NB_HDR_GSO_TCPV6;
    if (!tcp && gso != NB_HDR_GSO_UDP && gso != NB_HDR_GSO_UDP_L4)
        return -EINVAL;
    if (!tcp && h->gso_type & NB_HDR_GSO_ECN)
        return -EINVAL;
    if (nb_pkt_parse(f, len, len < NB_HEAD_MAX ? len : NB_HEAD_MAX, p) < 0 || p->frag)
        return -EINVAL;
    if (p->proto != (tcp ? IPPROTO_TCP : IPPROTO_UDP) ||
        (gso == NB_HDR_GSO_TCPV4 && p->v6) || (gso == NB_HDR_GSO_TCPV6 && !p->v6))
        return -EINVAL;
    if (h->hdr_len && h->hdr_len < p->hdrs)
        return -EINVAL;
    if (h->flags & NB_HDR_F_NEEDS_CSUM &&
        (h->csum_start != p->l4 || h->csum_offset != (tcp ? 16 : 6)))
        return -EINVAL;
    unsigned mss = nb_hdr_mss(h);
    size_t payload = p->end - (gso == NB_HDR_GSO_UDP ? p->l4 : p->hdrs);
    if (!mss || nb_seg_count(payload, mss) > NB_SEG_MAX)
        return -EINVAL;
    return 0;
}

/* S + W with the carry wrapped around: one's complement addition. */
static uint64_t nb_sum_add(uint64_t s, uint64_t w)
{
    s += w;
    return s + (s < w);
}

/* Internet checksum: sums are kept in host byte order words, which RFC
** 1071 shows gives the right bytes when stored back the same way. Four
** sums run side by side: each add waits for the carry of the one before,
** so one sum alone goes at half the speed. */
static uint64_t nb_sum(uint64_t s, const uint8_t *p, size_t len)
{
    uint64_t t = 0, u = 0, v = 0;
    for (; len >= 32; p += 32, len -= 32) {
        uint64_t w[4];
        memcpy(w, p, 32);
        s = nb_sum_add(s, w[0]);
        t = nb_sum_add(t, w[1]);
        u = nb_sum_add(u, w[2]);
        v = nb_sum_add(v, w[3]);
    }
    s = nb_sum_add(nb_sum_add(s, t), nb_sum_add(u, v));
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        s = nb_sum_add(s, w);
    }
    uint64_t w = 0;
    memcpy(&w, p, len);          /* the tail, zero padded: an odd last byte too */
    return nb_sum_add(s, w);
}

static uint16_t nb_sum_fold(uint64_t s)
{
    s = (s & 0xffffffff) + (s >> 32);
    s = (s & 0xffffffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

/* Store the checksum of sum S at P; ZERO_IS_FFFF for UDP, where 0 means none. */
static void nb_csum_store(uint8_t *p, uint64_t s, int zero_is_ffff)
{
    uint16_t c = (uint16_t)~nb_sum_fold(s);
    if (c == 0 && zero_is_ffff)
        c = 0xffff;
    memcpy(p, &c, 2);
}

/* The sum of the TCP/UDP pseudo header for an L4 length of L4LEN. */
static uint64_t nb_pseudo_sum(const uint8_t *ip, int v6, unsigned proto, size_t l4len)
{
    uint8_t ph[40];
    if (v6) {
        memcpy(ph, ip + 8, 32);
        return nb_sum(nb_sum(0, ph, 32), (uint8_t[8]){(uint8_t)(l4len >> 24),
                      (uint8_t)(l4len >> 16), (uint8_t)(l4len >> 8), (uint8_t)l4len,
                      0, 0, 0, (uint8_t)proto}, 8);
    }
    memcpy(ph, ip + 12, 8);
    ph[8] = 0;
    ph[9] = (uint8_t)proto;
    nb_put16(ph + 10, (unsigned)l4len);
    return nb_sum(0, ph, 12);
}

static void nb_ipv4_csum(uint8_t *ip)
{
    ip[10] = ip[11] = 0;
    nb_csum_store(ip + 10, nb_sum(0, ip, (ip[0] & 15u) * 4), 0);
}

/* A frame being cut into segments, one at a time, so that a send that
** has to wait can resume where it stopped. */
struct nb_seg {
    uint8_t *f;                  /* the Ethernet frame; owned by the caller */
    size_t len;
    struct nb_pkt p;
    unsigned gso;                /* NB_HDR_GSO_*, ECN bit cleared */
    unsigned mss;
    size_t start;                /* where the payload cut into pieces starts */
    size_t off;                  /* payload bytes already sent */
    unsigned n;                  /* segments already sent */
    int left;                    /* a segment remains to be sent */
    uint8_t hdr[NB_HEAD_MAX];    /* the current segment's headers */
};

/* Start cutting frame F (LEN bytes) as header H asks, with P what
** nb_hdr_check found in F. A frame that needs only its checksum becomes
** one segment. Returns 0 or -EOPNOTSUPP (UFO over IPv6). */
static int nb_seg_start(struct nb_seg *s, uint8_t *f, size_t len,
                        const struct nb_vnet_hdr *h, const struct nb_pkt *p)
{
    memset(s, 0, offsetof(struct nb_seg, hdr));
    s->f = f;
    s->len = len;
    s->left = 1;
    s->gso = h->gso_type & ~NB_HDR_GSO_ECN;
    if (s->gso != NB_HDR_GSO_NONE) {
        s->p = *p;
        s->mss = nb_hdr_mss(h);
        s->start = s->gso == NB_HDR_GSO_UDP ? s->p.l4 : s->p.hdrs;
        /* What fits in one piece is not really GSO: Linux sends it as it
        ** is, with only its checksum completed. */
        if (s->p.end - s->start <= s->mss)
            s->gso = NB_HDR_GSO_NONE;
    }
    if (s->gso == NB_HDR_GSO_NONE) {
        if (h->flags & NB_HDR_F_NEEDS_CSUM) {
            uint8_t *field = f + h->csum_start + h->csum_offset;
            nb_csum_store(field, nb_sum(0, f + h->csum_start, len - h->csum_start), 1);
        }
        return 0;
    }
    if (s->gso == NB_HDR_GSO_UDP) {
        if (s->p.v6)
            return -EOPNOTSUPP;
        /* UFO: checksum the whole datagram, then fragment it at IP level. */
        uint8_t *uh = f + s->p.l4;
        size_t ulen = s->p.end - s->p.l4;
        if (h->flags & NB_HDR_F_NEEDS_CSUM) {
            uh[6] = uh[7] = 0;
            nb_csum_store(uh + 6, nb_sum(nb_pseudo_sum(f + s->p.l3, 0, IPPROTO_UDP, ulen),
                                         uh, ulen), 1);
        }
    }
    return 0;
}

/* Build the next segment into V (headers, payload); returns the iovec
** count, 0 when none is left. Does not advance: see nb_seg_advance. */
static int nb_seg_build(struct nb_seg *s, struct iovec v[2])
{
    if (!s->left)
        return 0;
    if (s->gso == NB_HDR_GSO_NONE) {
        v[0].iov_base = s->f;
        v[0].iov_len = s->len;
        return 1;
    }
    const struct nb_pkt *p = &s->p;
    size_t rest = p->end - s->start - s->off;
    size_t chunk = rest < s->mss ? rest : s->mss;
    int last = chunk == rest;
    uint8_t *hd = s->hdr, *ip = hd + p->l3, *l4 = hd + p->l4;
    size_t hl = s->start;
    memcpy(hd, s->f, hl);
    if (s->gso == NB_HDR_GSO_UDP) {
        /* An IPv4 fragment: same id, offset in 8-byte units, MF but last. */
        nb_put16(ip + 2, (unsigned)(p->l4 - p->l3 + chunk));
        nb_put16(ip + 6, (unsigned)(s->off >> 3) | (last ? 0 : 0x2000));
        nb_ipv4_csum(ip);
    } else {
        size_t l4len = p->hdrs - p->l4 + chunk;
        if (p->v6) {
            nb_put16(ip + 4, (unsigned)(p->hdrs - p->l3 - 40 + chunk));
        } else {
            nb_put16(ip + 2, (unsigned)(p->hdrs - p->l3 + chunk));
            nb_put16(ip + 4, (nb_get16(s->f + p->l3 + 4) + s->n) & 0xffff);
            nb_ipv4_csum(ip);
        }
        int tcp = p->proto == IPPROTO_TCP;
        if (tcp) {
            nb_put32(l4 + 4, nb_get32(s->f + p->l4 + 4) + (uint32_t)s->off);
            if (s->n > 0)
                l4[13] &= (uint8_t)~NB_TCP_CWR;
            if (!last)
                l4[13] &= (uint8_t)~(NB_TCP_FIN | NB_TCP_PSH);
            l4[16] = l4[17] = 0;
        } else {
            nb_put16(l4 + 4, (unsigned)l4len);
            l4[6] = l4[7] = 0;
        }
        uint64_t sum = nb_pseudo_sum(ip, p->v6, p->proto, l4len);
        sum = nb_sum(sum, l4, p->hdrs - p->l4);
        sum = nb_sum(sum, s->f + p->hdrs + s->off, chunk);
        nb_csum_store(l4 + (tcp ? 16 : 6), sum, !tcp);
    }
    v[0].iov_base = hd;
    v[0].iov_len = hl;
    v[1].iov_base = s->f + s->start + s->off;
    v[1].iov_len = chunk;
    return 2;
}

/* The segment built last was sent: move to the next. */
static void nb_seg_advance(struct nb_seg *s)
{
    if (s->gso == NB_HDR_GSO_NONE) {
        s->left = 0;
        return;
    }
    size_t rest = s->p.end - s->start - s->off;
    size_t chunk = rest < s->mss ? rest : s->mss;
    s->off += chunk;
    s->n++;
    s->left = s->off < s->p.end - s->start;
}

/* ---- Joining: TCP segments into one TSO frame, as GRO does ----
** A receiver that negotiated TSO takes one frame, one write and one pass
** through its stack where it would take dozens of MTU-sized segments.
** The rules are those of Linux's GRO (inet_gro_receive, tcp_gro_receive):
** segments join when they are of one connection and in order, with the
** same headers but for the lengths, the IPv4 id (which counts up, or stays
** with DF) and the checksums; TCP options byte for byte equal; every
** segment as long as the first but the last, which may be shorter and
** ends the frame, as a PSH does; at most 64 KiB of IP packet and
** NB_SEG_MAX segments. Only untagged Ethernet, IPv4 without options and
** IPv6 without extension headers join. */

#define NB_TCP_ACK 0x10

/* A TSO frame being joined: the first segment's headers, then payloads. */
struct nb_join {
    struct nb_pkt p;             /* the first segment's; end follows nb_join_finish */
    size_t pay;                  /* payload bytes joined so far */
    unsigned mss;                /* the first segment's payload: no later one is longer */
    unsigned segs;
    int sealed;                  /* a PSH or a short segment ended it */
    uint8_t flags;               /* the last segment's TCP flags */
};

/* Parse frame F of LEN bytes into P; true when it is TCP in untagged
** Ethernet over IPv4 without options or fragments, or over IPv6 without
** extension headers. */
static int nb_tcp_plain(const uint8_t *f, size_t len, struct nb_pkt *p)
{
    return nb_pkt_parse(f, len, len, p) == 0 && p->proto == IPPROTO_TCP && p->l3 == 14 &&
           (p->v6 || (p->l4 == 34 && !p->frag));
}

/* The payload length of F (LEN bytes, nb_tcp_plain into P) when it is a
** segment that may join: flags ACK or ACK|PSH, some data, nothing after
** the IP packet. Else 0. */
static size_t nb_join_seg(const uint8_t *f, size_t len, const struct nb_pkt *p)
{
    if (p->end != len || (f[p->l4 + 13] & ~NB_TCP_PSH) != NB_TCP_ACK)
        return 0;
    return len - p->hdrs;
}

/* Start J at segment F (P, PAY bytes of payload; nb_join_seg). GSO_SIZE,
** when not 0, says F is a frame joined before from segments that long. */
static void nb_join_start(struct nb_join *j, const uint8_t *f, const struct nb_pkt *p,
                          size_t pay, unsigned gso_size)
{
    j->p = *p;
    j->pay = pay;
    j->mss = gso_size ? gso_size : (unsigned)pay;
    j->segs = (unsigned)nb_seg_count(pay, j->mss);
    j->flags = f[p->l4 + 13];
    j->sealed = (j->flags & NB_TCP_PSH) || pay % j->mss != 0;
}

/* True when F's IP header agrees with HEAD's, J's first segment's: IPv4
** TOS, DF, TTL and addresses, the id counting up (or fixed under DF);
** IPv6 class, flow label, hop limit and addresses. */
static int nb_join_same_ip(const struct nb_join *j, const uint8_t *head, const uint8_t *f)
{
    const uint8_t *a = head + j->p.l3, *b = f + j->p.l3;
    if (j->p.v6)
        return memcmp(a, b, 4) == 0 && a[7] == b[7] && memcmp(a + 8, b + 8, 32) == 0;
    uint16_t id = nb_get16(b + 4), first = nb_get16(a + 4);
    return a[1] == b[1] && a[6] == b[6] && a[8] == b[8] && memcmp(a + 12, b + 12, 8) == 0 &&
           (id == (uint16_t)(first + j->segs) || (b[6] & 0x40 && id == first));
}

/* True when segment F (P, PAY bytes of payload; nb_join_seg) continues J,
** whose headers are at HEAD. */
static int nb_join_fits(const struct nb_join *j, const uint8_t *head, const uint8_t *f,
                        const struct nb_pkt *p, size_t pay)
{
    const struct nb_pkt *h = &j->p;
    size_t tcp = h->l4;
    if (j->sealed || pay > j->mss || j->segs >= NB_SEG_MAX || p->v6 != h->v6 ||
        p->hdrs != h->hdrs || h->hdrs - h->l3 + j->pay + pay > 65535)
        return 0;
    return memcmp(head, f, h->l3) == 0 && nb_join_same_ip(j, head, f) &&
           memcmp(head + tcp, f + tcp, 4) == 0 &&                  /* ports */
           nb_get32(f + tcp + 4) == nb_get32(head + tcp + 4) + (uint32_t)j->pay &&
           memcmp(head + tcp + 8, f + tcp + 8, 5) == 0 &&          /* ACK number, offset */
           memcmp(head + tcp + 14, f + tcp + 14, 2) == 0 &&        /* window */
           memcmp(head + tcp + 20, f + tcp + 20, h->hdrs - tcp - 20) == 0;
}

/* The payload of segment F (P, PAY bytes) was put after J's: count it. */
static void nb_join_add(struct nb_join *j, const uint8_t *f, const struct nb_pkt *p,
                        size_t pay)
{
    j->pay += pay;
    j->segs++;
    j->flags = f[p->l4 + 13];
    j->sealed = (j->flags & NB_TCP_PSH) || pay < j->mss;
}

/* Make HEAD, the first segment's headers (in place, or a copy), those
** of J's joined frame: its lengths and IPv4 header checksum, and the
** last segment's flags. */
static void nb_join_finish(struct nb_join *j, uint8_t *head)
{
    struct nb_pkt *p = &j->p;
    p->end = p->hdrs + j->pay;
    if (p->v6) {
        nb_put16(head + p->l3 + 4, (unsigned)(p->end - p->l4));
    } else {
        nb_put16(head + p->l3 + 2, (unsigned)(p->end - p->l3));
        nb_ipv4_csum(head + p->l3);
    }
    head[p->l4 + 13] = j->flags;
}

/* The virtio-net header for TCP frame F (nb_tcp_plain into P): its checksum
** partial, the field holding the pseudo-header sum as virtio asks, and
** with GSO_SIZE a TSO frame of segments that long. */
static struct nb_vnet_hdr nb_tcp_partial(uint8_t *f, const struct nb_pkt *p,
                                         unsigned gso_size)
{
    struct nb_vnet_hdr h = {0};
    uint16_t sum = nb_sum_fold(nb_pseudo_sum(f + p->l3, p->v6, IPPROTO_TCP,
                                             p->end - p->l4));
    memcpy(f + p->l4 + 16, &sum, 2);
    h.flags = NB_HDR_F_NEEDS_CSUM;
    h.csum_start = (uint16_t)p->l4;
    h.csum_offset = 16;
    if (gso_size) {
        h.gso_type = p->v6 ? NB_HDR_GSO_TCPV6 : NB_HDR_GSO_TCPV4;
        h.hdr_len = (uint16_t)p->hdrs;
        h.gso_size = (uint16_t)gso_size;
    }
    return h;
}

/* True when segment F's (nb_tcp_plain into P) IPv4 header and TCP
** checksums are right. A joined frame gets new ones: a segment damaged on
** the way must not come out whole (GRO checks them too). */
static int nb_join_csum_ok(const uint8_t *f, const struct nb_pkt *p)
{
    size_t l4len = p->end - p->l4;
    if (!p->v6 && nb_sum_fold(nb_sum(0, f + p->l3, 20)) != 0xffff)
        return 0;
    return nb_sum_fold(nb_sum(nb_pseudo_sum(f + p->l3, p->v6, IPPROTO_TCP, l4len),
                              f + p->l4, l4len)) == 0xffff;
}

/* Segments from a receive buffer joined straight into the frontend's
** buffer IOV, behind a virtio-net header of HL bytes: the backends whose
** peer sends MTU-sized frames and no header (stream, dgram). The peer is
** not trusted: each segment's checksums are checked before it joins. */
struct nb_join_out {
    struct nb_join j;
    const uint8_t *head;         /* the first segment, in the receive buffer */
    const struct iovec *iov;
    int iovcnt;
    size_t room;
    unsigned hl;
};

/* Start O at frame F (LEN bytes) for IOV; TSO4 and TSO6 say which the
** frontend takes. Returns 1 when F may begin a joined frame. */
static int nb_join_begin(struct nb_join_out *o, const uint8_t *f, size_t len, int tso4,
                         int tso6, const struct iovec *iov, int iovcnt, unsigned hl)
{
    struct nb_pkt p;
    size_t pay;
    if (!nb_tcp_plain(f, len, &p) || !(p.v6 ? tso6 : tso4) || !(pay = nb_join_seg(f, len, &p)))
        return 0;
    nb_join_start(&o->j, f, &p, pay, 0);
    o->head = f;
    o->iov = iov;
    o->iovcnt = iovcnt;
    o->room = nb_iov_len(iov, iovcnt);
    o->hl = hl;
    return o->room >= hl + len;
}

/* Join frame G (LEN bytes) to O when it continues it and fits in IOV,
** copying its payload there; returns 1 when it joined. The first
** segment's checks and copy wait for a second one. */
static int nb_join_more(struct nb_join_out *o, const uint8_t *g, size_t len)
{
    struct nb_join *j = &o->j;
    struct nb_pkt p;
    size_t pay, at = o->hl + j->p.hdrs;
    if (!nb_tcp_plain(g, len, &p) || !(pay = nb_join_seg(g, len, &p)) ||
        !nb_join_fits(j, o->head, g, &p, pay) || at + j->pay + pay > o->room ||
        !nb_join_csum_ok(g, &p))
        return 0;
    if (j->segs == 1) {
        if (!nb_join_csum_ok(o->head, &j->p)) {
            j->sealed = 1;
            return 0;
        }
        nb_buf_to_iov(o->head + j->p.hdrs, j->pay, o->iov, o->iovcnt, at);
    }
    nb_buf_to_iov(g + p.hdrs, pay, o->iov, o->iovcnt, at + j->pay);
    nb_join_add(j, g, &p, pay);
    return 1;
}

/* Write the joined frame's headers into IOV; returns its length with the
** virtio-net header. Only once a segment joined (j.segs > 1). */
static size_t nb_join_end(struct nb_join_out *o)
{
    uint8_t head[NB_HEAD_MAX];
    struct nb_join *j = &o->j;
    memcpy(head, o->head, j->p.hdrs);
    nb_join_finish(j, head);
    struct nb_vnet_hdr h = nb_tcp_partial(head, &j->p, j->mss);
    nb_buf_to_iov(&h, o->hl, o->iov, o->iovcnt, 0);
    nb_buf_to_iov(head, j->p.hdrs, o->iov, o->iovcnt, o->hl);
    return o->hl + j->p.end;
}

/* True when header H asks for work: a checksum or segmentation. */
static int nb_hdr_needs_offload(const struct nb_vnet_hdr *h)
{
    return (h->flags & NB_HDR_F_NEEDS_CSUM) || h->gso_type != NB_HDR_GSO_NONE;
}

/* The feature bits a frame with header H needs from whoever takes it:
** SEND for a sender (CSUM, HOST_*), else for a receiver (GUEST_*). */
static uint64_t nb_hdr_features(const struct nb_vnet_hdr *h, int send)
{
    uint64_t f = 0;
    unsigned gso = h->gso_type & ~NB_HDR_GSO_ECN;
    if (h->flags & NB_HDR_F_NEEDS_CSUM)
        f |= send ? NETBE_F_CSUM : NETBE_F_GUEST_CSUM;
    if (h->gso_type & NB_HDR_GSO_ECN)
        f |= send ? NETBE_F_HOST_ECN : NETBE_F_GUEST_ECN;
    if (gso == NB_HDR_GSO_TCPV4)
        f |= send ? NETBE_F_HOST_TSO4 : NETBE_F_GUEST_TSO4;
    else if (gso == NB_HDR_GSO_TCPV6)
        f |= send ? NETBE_F_HOST_TSO6 : NETBE_F_GUEST_TSO6;
    else if (gso == NB_HDR_GSO_UDP)
        f |= send ? NETBE_F_HOST_UFO : NETBE_F_GUEST_UFO;
    else if (gso == NB_HDR_GSO_UDP_L4)
        f |= send ? NETBE_F_HOST_USO : NETBE_F_GUEST_USO4 | NETBE_F_GUEST_USO6;
    return f;
}

/* Read the header of FRAME into H and check it, filling P. */
static int nb_frame_check(const void *frame, size_t len, unsigned hdr_len,
                          struct nb_vnet_hdr *h, struct nb_pkt *p)
{
    if ((hdr_len != 10 && hdr_len != 12) || len < hdr_len)
        return -EINVAL;
    memset(h, 0, sizeof *h);
    memcpy(h, frame, hdr_len);
    return nb_hdr_check(h, (const uint8_t *)frame + hdr_len, len - hdr_len, p);
}

int netbe_frame_check(const void *frame, size_t len, unsigned hdr_len)
{
    struct nb_vnet_hdr h;
    struct nb_pkt p;
    return nb_frame_check(frame, len, hdr_len, &h, &p);
}

int netbe_frame_offload(void *frame, size_t len, unsigned hdr_len,
                        netbe_frame_cb cb, void *arg)
{
    struct nb_vnet_hdr h;
    struct nb_pkt p;
    struct nb_seg s;
    struct iovec v[2];
    int rc = nb_frame_check(frame, len, hdr_len, &h, &p), n = 0, cnt;
    if (rc < 0)
        return rc;
    if ((rc = nb_seg_start(&s, (uint8_t *)frame + hdr_len, len - hdr_len, &h, &p)) < 0)
        return rc;
    while ((cnt = nb_seg_build(&s, v)) > 0) {
        if ((rc = cb(v, cnt, arg)) < 0)
            return rc;
        nb_seg_advance(&s);
        n++;
    }
    return n;
}

int netbe_rx_merge(const struct iovec *frame, int framecnt,
                   const struct iovec *bufs, int nbufs, uint32_t *lens)
{
    size_t len = nb_iov_len(frame, framecnt), off = 0;
    if (len < 12 || nbufs < 1 || bufs[0].iov_len < 12)
        return -EINVAL;
    int used = 0;
    while (off < len) {
        /* num_buffers is 16 bits: a frame cannot span more buffers. */
        if (used == nbufs || used == UINT16_MAX)
            return -EMSGSIZE;
        size_t n = bufs[used].iov_len < len - off ? bufs[used].iov_len : len - off;
        nb_iov_to_buf(frame, framecnt, off, bufs[used].iov_base, n);
        lens[used++] = (uint32_t)n;
        off += n;
    }
    uint8_t *hdr = bufs[0].iov_base;
    hdr[10] = (uint8_t)used;
    hdr[11] = (uint8_t)(used >> 8);
    return used;
}

/* }================================================================ */

/* {===================================================================
** 5. Backend core: open, send, recv, events, counters
** ==================================================================== */

/* One row of the backend table. A backend sees frames at its own header
** length be->be_hdr_len; the core converts to the frontend's. */
struct nb_ops {
    const char *prefix;          /* matched against "backend", or equal to "type" */
    const char *const *keys;     /* keys beyond the common ones, NULL-terminated */
    size_t priv_size;            /* private state allocated after the netbe */
    /* Validate and normalize backend keys; may be NULL. */
    int (*check)(netbe_config *cfg, char *err, size_t errlen);
    int (*open)(netbe *be, const netbe_config *cfg, char *err, size_t errlen);
    void (*close)(netbe *be);
    /* Returns bytes taken, -EAGAIN (arm TX readiness first), or -errno.
    ** A backend may queue a frame when nb_may_batch says so. */
    ssize_t (*send)(netbe *be, const struct iovec *iov, int iovcnt);
    /* Write out what send queued: 0 when all went, -EAGAIN when the
    ** descriptor is full (the core waits for TX readiness and calls it
    ** again before it reports NETBE_EV_TX). May be NULL. */
    int (*flush)(netbe *be);
    /* Returns frame length, 0 when nothing is waiting, or -errno. */
    ssize_t (*recv)(netbe *be, const struct iovec *iov, int iovcnt);
    uint64_t (*get_cap)(netbe *be);
    /* Called with the negotiated features; may change be->be_hdr_len. */
    int (*set_cap)(netbe *be, uint64_t features, unsigned fe_hdr_len);
    /* For backends whose frames wait in memory, not behind a descriptor:
    ** true when some wait, so enabling receive reports them. May be NULL. */
    int (*rx_pending)(netbe *be);
    /* Also for those: lend the next frame without a copy (its backend
    ** header into *H, its bytes at *FRAME) until rx_done frees it.
    ** Returns its length, 0 when none waits. Both may be NULL. */
    size_t (*rx_lend)(netbe *be, struct nb_vnet_hdr *h, const uint8_t **frame);
    void (*rx_done)(netbe *be);
    /* The link has no MTU of its own (no kernel interface checks it): netbe
    ** drops frames over mtu=, when given. Such backends ask no offload of
    ** their header, when they take one (stream and dgram join on receive). */
    int mtu_drop;
    /* Its GUEST_TSO bits are in-order TCP segments joined in software
    ** (nb_join_*): worth it to a wire only when the other side sends TSO
    ** frames itself, not when it cuts them again in software. */
    int rx_joins;
    /* Backends with queues (a multiqueue tap): make Q queue INDEX of FIRST,
    ** and attach or detach BE's queue. May be NULL. */
    int (*open_queue)(netbe *q, netbe *first, int index, char *err, size_t errlen);
    int (*attach)(netbe *be, int on);
};

struct net_backend {
    const struct nb_ops *ops;
    char *name;
    struct event_base *base;
    netbe_cb cb;
    void *cb_arg;
    struct event *rx_ev;         /* readiness of the receive descriptor */
    struct event *tx_ev;         /* one-shot: the send descriptor is writable */
    pthread_mutex_t ev_lock;     /* rx_ev, tx_ev, rx_enabled: vCPU threads enable receive */
    int rx_enabled;
    int drop_full;               /* drop what -EAGAIN would refuse (netbe_set_drop_when_full) */
    int down;                    /* 0, or the error that ended the backend */
    unsigned fe_hdr_len, be_hdr_len;
    uint64_t features;
    unsigned mtu;
    unsigned tx_mtu;             /* longer IP packets are dropped on send; 0: no check */
    int have_mac;
    uint8_t mac[6];
    int nqueues;                 /* queues of the backend (netbe_queues); 0: one */
    uint8_t *bounce;             /* a frame read ahead by netbe_peek_recvlen */
    ssize_t bounce_len;
    struct nb_sw_tx *sw_tx;      /* software offloads on send, once headers are on */
    struct nb_sw_rx *sw_rx;      /* and on receive, made when first needed */
    struct netbe_stats st;
    /* Frames sent, each pair with one writer (nb_count_own): the sending
    ** thread, and whoever holds sw_tx's lock. st.tx_frames and tx_bytes
    ** stay 0; netbe_get_stats adds these. */
    struct nb_sent { uint64_t frames, bytes; } sent, sw_sent;
    void *priv;                  /* the backend's private state, same allocation */
};

/* These read the backend table, which lists the backends defined after
** this section; they are defined with it. */
static const struct nb_ops *nb_find_ops(const netbe_config *cfg);
static void nb_list_types(char *out, size_t len);

static const char *const nb_common_keys[] = {"backend", "type", "mac", "mtu", NULL};

/* What netbe offers any backend on the sending side, doing in software
** what the backend cannot. */
#define NB_SW_CAPS (NETBE_F_CSUM | NETBE_F_HOST_TSO4 | NETBE_F_HOST_TSO6 | \
    NETBE_F_HOST_ECN | NETBE_F_HOST_UFO | NETBE_F_HOST_USO)

/* Frames with lying headers one receive call may skip before giving up. */
#define NB_RX_TRIES 64

/* A frame accepted from the frontend and being sent in software-made
** segments. Senders and the TX event both drain it, under the lock. */
struct nb_sw_tx {
    pthread_mutex_t lock;
    int busy;                    /* segments wait; set by the sender only */
    uint64_t native;             /* the offloads the backend does itself */
    struct nb_seg seg;
    uint8_t frame[NETBE_MAX_FRAME];
};

/* A received frame being handed to the frontend one segment at a time.
** Only the event_base's thread receives, so no lock. */
struct nb_sw_rx {
    int busy;
    struct nb_seg seg;
    uint8_t frame[NETBE_MAX_FRAME];
};

static const uint8_t nb_zero_hdr[12];

#define NB_PRIV(be, T) ((T *)(be)->priv)
/* Private state starts at this offset of the netbe allocation. */
#define NB_PRIV_OFF ((sizeof(netbe) + 15) & ~(size_t)15)

static int nb_key_in(const char *key, const char *const *list)
{
    for (; list && *list; list++)
        if (strcmp(key, *list) == 0)
            return 1;
    return 0;
}

/* "backend, type, mac, mtu, path, peerhook" for error messages. */
static void nb_list_keys(const struct nb_ops *o, char *out, size_t len)
{
    const char *const *lists[2] = {nb_common_keys, o->keys};
    size_t used = 0;
    out[0] = '\0';
    for (int l = 0; l < 2; l++)
        for (const char *const *k = lists[l]; k && *k; k++)
            used += snprintf(out + used, used < len ? len - used : 0, "%s%s",
                             used ? ", " : "", *k);
}

static int nb_check_common(netbe_config *cfg, const struct nb_ops *o,
                           char *err, size_t errlen)
{
    for (int i = 0; i < cfg->n; i++) {
        if (!nb_key_in(cfg->key[i], nb_common_keys) && !nb_key_in(cfg->key[i], o->keys)) {
            char keys[200];
            nb_list_keys(o, keys, sizeof keys);
            return NB_ERR(EINVAL, "%s: unknown key '%s' (accepted keys: %s)", o->prefix,
                          cfg->key[i], keys);
        }
        /* A value set key by key could otherwise smuggle keys into the
        ** legacy string it is written back as. */
        const char *v = cfg->val[i];
        for (size_t j = 0; v[j]; j++)
            if (v[j] == ',' || (unsigned char)v[j] < 0x20 || v[j] == 0x7f)
                return NB_ERR(EINVAL, "%s: key '%s': a ',' or control character at "
                              "offset %zu of its value (expected one field of "
                              "BACKEND[,key[=value]]...)", o->prefix, cfg->key[i], j);
    }
    const char *mac = netbe_config_get(cfg, "mac");
    if (mac) {
        uint8_t m[6];
        char text[18];
        int rc = netbe_parse_mac(mac, m, err, errlen);
        if (rc < 0)
            return rc;
        snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2],
                 m[3], m[4], m[5]);
        netbe_config_set(cfg, "mac", text);
    }
    const char *mtu = netbe_config_get(cfg, "mtu");
    unsigned v;
    if (mtu && netbe_parse_mtu(mtu, &v, err, errlen) < 0)
        return -EINVAL;
    return 0;
}

int netbe_config_check(netbe_config *cfg, char *err, size_t errlen)
{
    const struct nb_ops *o = nb_find_ops(cfg);
    if (!o) {
        char types[200];
        const char *type = netbe_config_get(cfg, "type");
        const char *name = netbe_config_get(cfg, "backend");
        nb_list_types(types, sizeof types);
        if (type)
            return NB_ERR(EINVAL, "unknown backend type '%s' (expected one of: %s)", type,
                          types);
        return NB_ERR(EINVAL, "backend '%s' matches no backend (expected a name starting "
                      "with one of: %s; or type=)", name ? name : "", types);
    }
    if (!netbe_config_get(cfg, "backend"))
        netbe_config_set(cfg, "backend", o->prefix);
    cfg->needs = 0;
    cfg->refused[0] = '\0';
    int rc = nb_check_common(cfg, o, err, errlen);
    if (rc == 0 && o->check)
        rc = o->check(cfg, err, errlen);
    if (rc == 0 && cfg->refused[0])
        rc = NB_ERR(EPERM, "%s: not allowed by the embedder: %s (netbe_config_allow; "
                    "netbe --allow-exec, --allow-files DIR)", o->prefix, cfg->refused);
    if (rc == 0)
        rc = netbe_config_set(cfg, "type", o->prefix);
    return rc;
}

/* The event base whose netbe callback this thread runs, or NULL. While it
** is a backend's own base, the loop runs on this thread and reaches the
** backend's flush event before it waits again, so a send may wait in a
** batch until then. Anywhere else (another thread, a caller running no
** loop) a send goes out at once. */
static _Thread_local struct event_base *nb_turn_base;

/* True when a frame sent to BE now may wait for the end of the loop turn. */
static int nb_may_batch(netbe *be)
{
    return nb_turn_base == be->base;
}

static void nb_fire(netbe *be, int events)
{
    if (!be->cb)
        return;
    struct event_base *outer = nb_turn_base;
    nb_turn_base = be->base;
    be->cb(be, events, be->cb_arg);
    nb_turn_base = outer;
}

static void nb_on_rx(evutil_socket_t fd, short what, void *arg)
{
    nb_fire(arg, NETBE_EV_RX);
}

static int nb_sw_tx_drain(netbe *be, struct nb_sw_tx *tx);
static void nb_want_tx(netbe *be);

/* Frames the backend queued, then segments left waiting, go first; the
** frontend hears only once they went. */
static void nb_on_tx(evutil_socket_t fd, short what, void *arg)
{
    netbe *be = arg;
    if (be->ops->flush && be->ops->flush(be) == -EAGAIN) {
        nb_want_tx(be);
        return;
    }
    if (be->sw_tx && nb_sw_tx_drain(be, be->sw_tx) < 0)
        return;
    nb_fire(be, NETBE_EV_TX);
}

static int nb_watch_fd_locked(netbe *be, int fd)
{
    if (be->rx_ev) {
        event_free(be->rx_ev);
        be->rx_ev = NULL;
    }
    if (be->tx_ev) {
        event_free(be->tx_ev);
        be->tx_ev = NULL;
    }
    if (fd < 0)
        return 0;
    be->rx_ev = event_new(be->base, fd, EV_READ | EV_PERSIST, nb_on_rx, be);
    be->tx_ev = event_new(be->base, fd, EV_WRITE, nb_on_tx, be);
    if (!be->rx_ev || !be->tx_ev)
        return -ENOMEM;
    if (be->rx_enabled)
        event_add(be->rx_ev, NULL);
    return 0;
}

/* Watch FD for receive and send readiness (FD -1 stops watching). Backends
** call this when their descriptor changes; the enabled state is kept. */
static int nb_watch_fd(netbe *be, int fd)
{
    pthread_mutex_lock(&be->ev_lock);
    int rc = nb_watch_fd_locked(be, fd);
    pthread_mutex_unlock(&be->ev_lock);
    return rc;
}

/* Ask for NETBE_EV_TX once the descriptor can take more. */
static void nb_want_tx(netbe *be)
{
    pthread_mutex_lock(&be->ev_lock);
    if (be->tx_ev)
        event_add(be->tx_ev, NULL);
    pthread_mutex_unlock(&be->ev_lock);
}

/* A handle of backend O named NAME, reporting to CB(ARG) on BASE, with
** nothing open yet; NULL when out of memory. */
static netbe *nb_new(const struct nb_ops *o, const char *name, struct event_base *base,
                     netbe_cb cb, void *arg)
{
    netbe *be = calloc(1, NB_PRIV_OFF + o->priv_size);
    if (!be)
        return NULL;
    be->priv = (char *)be + NB_PRIV_OFF;
    if (!(be->name = strdup(name))) {
        free(be);
        return NULL;
    }
    pthread_mutex_init(&be->ev_lock, NULL);
    be->ops = o;
    be->base = base;
    be->cb = cb;
    be->cb_arg = arg;
    be->mtu = 1500;
    return be;
}

/* Free a handle whose open failed. */
static void nb_free(netbe *be)
{
    nb_watch_fd(be, -1);
    pthread_mutex_destroy(&be->ev_lock);
    free(be->name);
    free(be);
}

/* A backend queued a frame. BATCH (nb_may_batch): its FLUSH event runs
** at the end of this loop turn, made active once a turn (*ARMED, which
** the flush clears). Otherwise the frame waits behind frames the socket
** had no room for, until TX readiness. Called with the backend's lock. */
static void nb_queued(netbe *be, int batch, struct event *flush, int *armed)
{
    if (!batch) {
        nb_want_tx(be);
    } else if (!*armed) {
        *armed = 1;
        event_active(flush, 0, 0);
    }
}

int netbe_open(netbe **bep, const netbe_config *cfg_in, struct event_base *base,
               netbe_cb cb, void *arg, char *err, size_t errlen)
{
    *bep = NULL;
    if (!base)
        return NB_ERR(EINVAL, "netbe_open: no event_base given");
    netbe_config *cfg = netbe_config_new();
    if (!cfg)
        return NB_ERR(ENOMEM, "out of memory");
    for (int i = 0; i < cfg_in->n; i++)
        netbe_config_set(cfg, cfg_in->key[i], cfg_in->val[i]);
    int rc = nb_allow_copy(&cfg->allow, &cfg_in->allow);
    if (rc < 0) {
        netbe_config_free(cfg);
        return NB_ERR(ENOMEM, "out of memory");
    }
    rc = netbe_config_check(cfg, err, errlen);
    if (rc < 0) {
        netbe_config_free(cfg);
        return rc;
    }
    const struct nb_ops *o = nb_find_ops(cfg);
    netbe *be = nb_new(o, netbe_config_get(cfg, "backend"), base, cb, arg);
    if (!be) {
        netbe_config_free(cfg);
        return NB_ERR(ENOMEM, "out of memory");
    }
    const char *v;
    if ((v = netbe_config_get(cfg, "mtu")))
        netbe_parse_mtu(v, &be->mtu, NULL, 0);
    if (v && o->mtu_drop)
        be->tx_mtu = be->mtu;
    if ((v = netbe_config_get(cfg, "mac")))
        be->have_mac = netbe_parse_mac(v, be->mac, NULL, 0) == 0;
    rc = o->open(be, cfg, err, errlen);
    netbe_config_free(cfg);
    if (rc < 0) {
        nb_free(be);
        return rc;
    }
    *bep = be;
    return 0;
}

int netbe_queues(netbe *be)
{
    return be->nqueues > 1 ? be->nqueues : 1;
}

int netbe_open_queue(netbe **qp, netbe *be, int index, struct event_base *base,
                     netbe_cb cb, void *arg, char *err, size_t errlen)
{
    *qp = NULL;
    if (!base)
        return NB_ERR(EINVAL, "netbe_open_queue: no event_base given");
    if (index < 1 || index >= netbe_queues(be) || !be->ops->open_queue)
        return NB_ERR(EINVAL, "%s: no queue %d: the backend has %d (netbe_open gave "
                      "queue 0; queues=N gives a tap more)", be->name, index,
                      netbe_queues(be));
    netbe *q = nb_new(be->ops, be->name, base, cb, arg);
    if (!q)
        return NB_ERR(ENOMEM, "out of memory");
    q->mtu = be->mtu;
    q->tx_mtu = be->tx_mtu;
    q->have_mac = be->have_mac;
    memcpy(q->mac, be->mac, 6);
    q->nqueues = be->nqueues;
    int rc = be->ops->open_queue(q, be, index, err, errlen);
    if (rc < 0) {
        nb_free(q);
        return rc;
    }
    *qp = q;
    return 0;
}

int netbe_queue_attach(netbe *be, int on)
{
    if (netbe_queues(be) < 2 || !be->ops->attach)
        return -ENOTSUP;
    if (!on)
        netbe_rx_disable(be);
    return be->ops->attach(be, on);
}

int netbe_open_str(netbe **bep, const char *legacy, struct event_base *base,
                   netbe_cb cb, void *arg, char *err, size_t errlen)
{
    netbe_config *cfg = netbe_config_new();
    if (!cfg)
        return NB_ERR(ENOMEM, "out of memory");
    int rc = netbe_config_parse(cfg, legacy, err, errlen);
    if (rc == 0)
        rc = netbe_open(bep, cfg, base, cb, arg, err, errlen);
    netbe_config_free(cfg);
    return rc;
}

void netbe_close(netbe *be)
{
    if (!be)
        return;
    if (be->ops->flush)
        be->ops->flush(be);
    nb_watch_fd(be, -1);
    be->ops->close(be);
    if (be->sw_tx)
        pthread_mutex_destroy(&be->sw_tx->lock);
    free(be->sw_tx);
    free(be->sw_rx);
    free(be->bounce);
    pthread_mutex_destroy(&be->ev_lock);
    free(be->name);
    free(be);
}

void netbe_set_callback(netbe *be, netbe_cb cb, void *arg)
{
    be->cb = cb;
    be->cb_arg = arg;
}

/* True when the Ethernet frame in IOV, behind the backend's header,
** carries more than tx_mtu bytes after its VLAN tags: a giant, which a
** NIC drops. */
static int nb_over_mtu(netbe *be, const struct iovec *iov, int iovcnt)
{
    uint8_t head[22];
    uint16_t type, vlan;
    if (!be->tx_mtu)
        return 0;
    size_t hl = be->be_hdr_len, len = nb_iov_len(iov, iovcnt) - hl;
    if (len <= be->tx_mtu + 14)
        return 0;
    nb_iov_to_buf(iov, iovcnt, hl, head, sizeof head);
    size_t l2 = nb_eth_walk(head, sizeof head, &type, &vlan);
    return len - (l2 ? l2 : 14) > be->tx_mtu;
}

/* Send with the frontend's header already converted to the backend's,
** counting what went in SENT. */
static ssize_t nb_send_raw(netbe *be, const struct iovec *iov, int iovcnt,
                           struct nb_sent *sent)
{
    ssize_t n = nb_over_mtu(be, iov, iovcnt) ? -EMSGSIZE : be->ops->send(be, iov, iovcnt);
    if (n == -EAGAIN && be->drop_full)
        n = -ENOBUFS;
    if (n >= 0) {
        nb_count_own(&sent->frames, 1);
        nb_count_own(&sent->bytes, (uint64_t)n);
    } else if (n == -EAGAIN) {
        nb_want_tx(be);
    } else if (n == -EMSGSIZE || n == -ENOTCONN || n == -ENOBUFS) {
        nb_count(&be->st.tx_drops, 1);
    } else {
        nb_count(&be->st.tx_errors, 1);
    }
    return n;
}

/* Read the frontend header at the start of IOV into H (missing bytes zero). */
static void nb_hdr_read(const struct iovec *iov, int iovcnt, unsigned len,
                        struct nb_vnet_hdr *h)
{
    memset(h, 0, sizeof *h);
    nb_iov_to_buf(iov, iovcnt, 0, h, len);
}

/* nb_hdr_check for header H of the FLEN-byte frame at offset FE of IOV. */
static int nb_hdr_check_iov(const struct nb_vnet_hdr *h, const struct iovec *iov,
                            int iovcnt, unsigned fe, size_t flen, struct nb_pkt *p)
{
    uint8_t head[NB_HEAD_MAX];
    nb_iov_to_buf(iov, iovcnt, fe, head, flen < sizeof head ? flen : sizeof head);
    return nb_hdr_check(h, head, flen, p);
}

/* Send the segments left in TX; 0 when all went, -EAGAIN when the backend
** is full (TX readiness is armed). A segment refused for another reason
** is counted and skipped, as a NIC drops a frame. Lock held. */
static int nb_sw_flush(netbe *be, struct nb_sw_tx *tx)
{
    struct iovec v[3] = {{(void *)nb_zero_hdr, be->be_hdr_len}};
    int cnt;
    while ((cnt = nb_seg_build(&tx->seg, v + 1)) > 0) {
        ssize_t r = be->be_hdr_len ? nb_send_raw(be, v, cnt + 1, &be->sw_sent)
                                   : nb_send_raw(be, v + 1, cnt, &be->sw_sent);
        if (r == -EAGAIN)
            return -EAGAIN;
        nb_seg_advance(&tx->seg);
    }
    __atomic_store_n(&tx->busy, 0, __ATOMIC_RELEASE);
    return 0;
}

static int nb_sw_tx_drain(netbe *be, struct nb_sw_tx *tx)
{
    if (!__atomic_load_n(&tx->busy, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&tx->lock);
    int rc = tx->busy ? nb_sw_flush(be, tx) : 0;
    pthread_mutex_unlock(&tx->lock);
    return rc;
}

/* Do what header H of the LEN-byte frame in IOV asks, in software. The
** frame is taken once its first segment is out; the rest wait for TX
** readiness if the backend fills up. */
static ssize_t nb_sw_send(netbe *be, const struct iovec *iov, int iovcnt, size_t len,
                          const struct nb_vnet_hdr *h, const struct nb_pkt *p)
{
    struct nb_sw_tx *tx = be->sw_tx;
    unsigned fe = be->fe_hdr_len;
    pthread_mutex_lock(&tx->lock);
    if (tx->busy && nb_sw_flush(be, tx) < 0) {
        pthread_mutex_unlock(&tx->lock);
        return -EAGAIN;
    }
    nb_iov_to_buf(iov, iovcnt, fe, tx->frame, len - fe);
    int rc = nb_seg_start(&tx->seg, tx->frame, len - fe, h, p);
    if (rc < 0) {
        pthread_mutex_unlock(&tx->lock);
        nb_count(&be->st.tx_drops, 1);
        return rc;
    }
    __atomic_store_n(&tx->busy, 1, __ATOMIC_RELEASE);
    if (nb_sw_flush(be, tx) < 0 && tx->seg.n == 0 && tx->seg.left) {
        /* Nothing went out: the frame is not taken, the frontend retries. */
        __atomic_store_n(&tx->busy, 0, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&tx->lock);
        return -EAGAIN;
    }
    pthread_mutex_unlock(&tx->lock);
    nb_count(&be->st.tx_sw_frames, 1);
    return (ssize_t)len;
}

/* Check header H of the LEN-byte frame in IOV (frontend header first),
** filling P. Returns 0 when the backend can take the frame as it is, 1
** when netbe must do the offload, -EINVAL (counted) when the header lies. */
static int nb_tx_classify(netbe *be, const struct iovec *iov, int iovcnt, size_t len,
                          const struct nb_vnet_hdr *h, struct nb_pkt *p)
{
    unsigned fe = be->fe_hdr_len;
    if (nb_hdr_check_iov(h, iov, iovcnt, fe, len - fe, p) < 0) {
        nb_count(&be->st.tx_drops, 1);
        nb_count(&be->st.tx_bad_hdr, 1);
        return -EINVAL;
    }
    if (!nb_hdr_needs_offload(h))
        return 0;
    uint64_t need = nb_hdr_features(h, 1);
    return be->be_hdr_len && !(need & ~be->sw_tx->native) ? 0 : 1;
}

ssize_t netbe_send(netbe *be, const struct iovec *iov, int iovcnt)
{
    unsigned fe = be->fe_hdr_len, bl = be->be_hdr_len;
    size_t len = iovcnt < 0 || iovcnt > IOV_MAX - 1 ? 0 : nb_iov_len(iov, iovcnt);
    if (len < fe + 14) {
        nb_count(&be->st.tx_drops, 1);
        return -EINVAL;
    }
    if (len > NETBE_MAX_FRAME + fe) {
        /* No frame is longer: refused before a byte of it is copied. */
        nb_count(&be->st.tx_drops, 1);
        return -EMSGSIZE;
    }
    struct nb_vnet_hdr h;
    nb_hdr_read(iov, iovcnt, fe, &h);
    if (fe) {
        /* Segments of an earlier frame go before this one. */
        if (nb_sw_tx_drain(be, be->sw_tx) < 0)
            return -EAGAIN;
        if (h.flags | h.gso_type | h.hdr_len) {
            struct nb_pkt p;
            int sw = nb_tx_classify(be, iov, iovcnt, len, &h, &p);
            if (sw < 0)
                return sw;
            if (sw)
                return nb_sw_send(be, iov, iovcnt, len, &h, &p);
        }
    }
    if (fe == bl)
        return nb_send_raw(be, iov, iovcnt, &be->sent);
    struct iovec v[iovcnt + 1];
    int n = nb_iov_skip(iov, iovcnt, fe, v + 1);
    h.num_buffers = 0;
    v[0].iov_base = &h;
    v[0].iov_len = bl;
    ssize_t r = bl ? nb_send_raw(be, v, n + 1, &be->sent) : nb_send_raw(be, v + 1, n, &be->sent);
    return r < 0 ? r : r - (ssize_t)bl + (ssize_t)fe;
}

/* Receive one frame from the backend into IOV behind a frontend header of
** fe_hdr_len bytes (left for the caller to fill); its header goes to H. */
static ssize_t nb_recv_one(netbe *be, const struct iovec *iov, int iovcnt,
                           struct nb_vnet_hdr *h)
{
    unsigned fe = be->fe_hdr_len, bl = be->be_hdr_len;
    memset(h, 0, sizeof *h);
    if (fe == bl) {
        ssize_t r = be->ops->recv(be, iov, iovcnt);
        if (r > 0 && fe)
            nb_hdr_read(iov, iovcnt, fe, h);
        return r;
    }
    struct iovec v[iovcnt + 1];
    int n = nb_iov_skip(iov, iovcnt, fe, v + 1);
    v[0].iov_base = h;
    v[0].iov_len = bl;
    ssize_t r = bl ? be->ops->recv(be, v, n + 1) : be->ops->recv(be, v + 1, n);
    return r <= 0 ? r : r - (ssize_t)bl + (ssize_t)fe;
}

/* Hand the frontend the next software-made segment. */
static ssize_t nb_sw_recv_next(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct nb_sw_rx *rx = be->sw_rx;
    unsigned fe = be->fe_hdr_len;
    struct iovec v[2];
    int cnt = nb_seg_build(&rx->seg, v);
    uint8_t hdr[12] = {0};
    hdr[10] = fe == 12;
    size_t off = nb_buf_to_iov(hdr, fe, iov, iovcnt, 0), total = fe;
    for (int i = 0; i < cnt; i++) {
        off += nb_buf_to_iov(v[i].iov_base, v[i].iov_len, iov, iovcnt, off);
        total += v[i].iov_len;
    }
    nb_seg_advance(&rx->seg);
    rx->busy = rx->seg.left;
    return (ssize_t)total;
}

/* True when the frontend of BE takes a frame with header H as it is
** (V6: the frame is IPv6, which matters for USO). */
static int nb_rx_accepts(netbe *be, const struct nb_vnet_hdr *h, int v6)
{
    uint64_t need = nb_hdr_features(h, 0), accept = be->fe_hdr_len ? be->features : 0;
    if ((h->gso_type & ~NB_HDR_GSO_ECN) == NB_HDR_GSO_UDP_L4)
        need &= v6 ? ~NETBE_F_GUEST_USO4 : ~NETBE_F_GUEST_USO6;
    return !(need & ~accept);
}

/* The frame of R bytes in IOV came with header H. Returns 0 when the
** frontend can take it as it is, the length of its first segment when
** netbe did the offload, or a negative value when it was dropped. */
static ssize_t nb_rx_offload(netbe *be, const struct iovec *iov, int iovcnt, ssize_t r,
                             const struct nb_vnet_hdr *h)
{
    unsigned fe = be->fe_hdr_len;
    size_t flen = (size_t)r - fe;
    struct nb_pkt p;
    if ((size_t)r > nb_iov_len(iov, iovcnt))
        return 0;                /* truncated: counted as such by the caller */
    if (nb_hdr_check_iov(h, iov, iovcnt, fe, flen, &p) < 0) {
        nb_count(&be->st.rx_drops, 1);
        nb_count(&be->st.rx_bad_hdr, 1);
        return -EINVAL;
    }
    if (nb_rx_accepts(be, h, p.v6))
        return 0;
    if (!be->sw_rx && !(be->sw_rx = malloc(sizeof *be->sw_rx))) {
        nb_count(&be->st.rx_drops, 1);
        return -ENOMEM;
    }
    struct nb_sw_rx *rx = be->sw_rx;
    nb_iov_to_buf(iov, iovcnt, fe, rx->frame, flen);
    int rc = nb_seg_start(&rx->seg, rx->frame, flen, h, &p);
    if (rc < 0) {
        nb_count(&be->st.rx_drops, 1);
        return rc;
    }
    nb_count(&be->st.rx_sw_frames, 1);
    rx->busy = 1;
    return nb_sw_recv_next(be, iov, iovcnt);
}

/* Make received header H what the frontend of BE negotiated: one buffer,
** and no DATA_VALID unless it takes checksum offload. */
static void nb_hdr_for_fe(netbe *be, struct nb_vnet_hdr *h)
{
    if (!(be->features & NETBE_F_GUEST_CSUM))
        h->flags &= (uint8_t)~NB_HDR_F_DATA_VALID;
    h->num_buffers = be->fe_hdr_len == 12;
}

/* Report receive readiness again: frames may wait behind the ones a call
** gave up on, and no new readiness would announce them (a stream's
** buffer, slirp's ring). Only the event_base's thread receives. */
static void nb_rx_again(netbe *be)
{
    if (be->rx_enabled && be->rx_ev)
        event_active(be->rx_ev, EV_READ, 0);
}

/* Receive from the backend, converting its header to the frontend's and
** doing in software the offloads the frontend did not negotiate. Frames
** longer than any frame or with lying headers are dropped and the next
** one read. */
static ssize_t nb_recv_convert(netbe *be, const struct iovec *iov, int iovcnt)
{
    unsigned fe = be->fe_hdr_len;
    if (be->sw_rx && be->sw_rx->busy)
        return nb_sw_recv_next(be, iov, iovcnt);
    for (int tries = 0; tries < NB_RX_TRIES; tries++) {
        struct nb_vnet_hdr h;
        ssize_t r = nb_recv_one(be, iov, iovcnt, &h);
        if (r > (ssize_t)(NETBE_MAX_FRAME + fe)) {
            nb_count(&be->st.rx_drops, 1);
            continue;
        }
        if (r <= 0 || (fe == 0 && be->be_hdr_len == 0))
            return r;
        if (h.flags | h.gso_type) {
            ssize_t s = nb_rx_offload(be, iov, iovcnt, r, &h);
            if (s < 0)
                continue;
            if (s > 0)
                return s;
        }
        if (fe) {
            nb_hdr_for_fe(be, &h);
            nb_buf_to_iov(&h, fe, iov, iovcnt, 0);
        }
        return r;
    }
    nb_rx_again(be);
    return 0;
}

/* Receive errors after which a backend never works again. EBADFD is
** Linux's (a tun whose interface was deleted); other systems lack it. */
static int nb_is_fatal(ssize_t r)
{
#ifdef EBADFD
    if (r == -EBADFD)
        return 1;
#endif
    return r == -EBADF || r == -ENODEV || r == -ENXIO || r == -ENOTCONN;
}

static void nb_go_down(netbe *be, int error)
{
    be->down = error;
    netbe_rx_disable(be);
    nb_fire(be, NETBE_EV_DOWN);
}

/* Receive one frame, counting it; the bounce buffer goes first. */
static ssize_t nb_recv_counted(netbe *be, const struct iovec *iov, int iovcnt)
{
    size_t room = nb_iov_len(iov, iovcnt);
    ssize_t r;
    if (be->bounce_len > 0) {
        r = be->bounce_len;
        nb_buf_to_iov(be->bounce, (size_t)r < room ? (size_t)r : room, iov, iovcnt, 0);
        be->bounce_len = 0;
    } else {
        if (be->down)
            return be->down;
        r = nb_recv_convert(be, iov, iovcnt);
        if (r == -EAGAIN || r == 0)
            return 0;
        if (r < 0) {
            nb_count(&be->st.rx_errors, 1);
            if (nb_is_fatal(r))
                nb_go_down(be, (int)r);
            return r;
        }
    }
    if ((size_t)r > room) {
        nb_count(&be->st.rx_drops, 1);
        nb_rx_again(be);
        return -EMSGSIZE;
    }
    nb_count_own(&be->st.rx_frames, 1);
    nb_count_own(&be->st.rx_bytes, (uint64_t)r);
    return r;
}

ssize_t netbe_recv(netbe *be, const struct iovec *iov, int iovcnt)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX - 1)
        return -EINVAL;
    return nb_recv_counted(be, iov, iovcnt);
}

ssize_t netbe_peek_recvlen(netbe *be)
{
    if (be->bounce_len > 0)
        return be->bounce_len;
    size_t size = NETBE_MAX_FRAME + 12;
    if (!be->bounce && !(be->bounce = malloc(size)))
        return -ENOMEM;
    struct iovec v = {be->bounce, size};
    ssize_t r = nb_recv_convert(be, &v, 1);
    if (r <= 0)
        return r == -EAGAIN ? 0 : r;
    be->bounce_len = r;
    return r;
}

ssize_t netbe_rx_discard(netbe *be)
{
    ssize_t r = netbe_peek_recvlen(be);
    if (r > 0) {
        be->bounce_len = 0;
        nb_count(&be->st.rx_drops, 1);
    }
    return r;
}

void netbe_rx_enable(netbe *be)
{
    if (be->down)
        return;
    pthread_mutex_lock(&be->ev_lock);
    be->rx_enabled = 1;
    if (be->rx_ev)
        event_add(be->rx_ev, NULL);
    /* A frame already read ahead, or segments made of one, produce no new
    ** readiness: report them. */
    if ((be->bounce_len > 0 || (be->sw_rx && be->sw_rx->busy) ||
         (be->ops->rx_pending && be->ops->rx_pending(be))) && be->rx_ev)
        event_active(be->rx_ev, EV_READ, 0);
    pthread_mutex_unlock(&be->ev_lock);
}

/* Without waiting for a receive callback running on the loop's thread:
** bhyve disables under the lock its callback takes. */
void netbe_rx_disable(netbe *be)
{
    pthread_mutex_lock(&be->ev_lock);
    be->rx_enabled = 0;
    if (be->rx_ev)
        event_del_noblock(be->rx_ev);
    pthread_mutex_unlock(&be->ev_lock);
}

void netbe_set_drop_when_full(netbe *be, int on)
{
    be->drop_full = on != 0;
}

int netbe_down(netbe *be)
{
    return be->down;
}

static uint64_t nb_backend_cap(netbe *be)
{
    return be->ops->get_cap ? be->ops->get_cap(be) : 0;
}

uint64_t netbe_get_cap(netbe *be)
{
    return nb_backend_cap(be) | NB_SW_CAPS;
}

/* Software offload state for a frontend that uses headers. */
static int nb_sw_setup(netbe *be)
{
    if (!be->sw_tx) {
        if (!(be->sw_tx = malloc(sizeof *be->sw_tx)))
            return -ENOMEM;
        pthread_mutex_init(&be->sw_tx->lock, NULL);
    }
    be->sw_tx->busy = 0;
    be->sw_tx->native = be->be_hdr_len ? nb_backend_cap(be) : 0;
    if (be->sw_rx)
        be->sw_rx->busy = 0;
    return 0;
}

/* Bits other than offloads (MAC, STATUS, MRG_RXBUF, CTRL_VQ, ring and
** transport bits) are the frontend's business: kept, never refused. */
int netbe_set_cap(netbe *be, uint64_t features, unsigned vnet_hdr_len)
{
    uint64_t offloads = features & NETBE_F_OFFLOADS;
    if (vnet_hdr_len != 0 && vnet_hdr_len != 10 && vnet_hdr_len != 12)
        return -EINVAL;
    if (offloads & ~netbe_get_cap(be))
        return -EINVAL;
    if (offloads && vnet_hdr_len == 0)
        return -EINVAL;
    if (be->ops->set_cap) {
        int rc = be->ops->set_cap(be, offloads & nb_backend_cap(be), vnet_hdr_len);
        if (rc < 0)
            return rc;
    }
    if (vnet_hdr_len && nb_sw_setup(be) < 0)
        return -ENOMEM;
    be->features = features;
    be->fe_hdr_len = vnet_hdr_len;
    be->bounce_len = 0;
    return 0;
}

uint64_t netbe_get_features(netbe *be) { return be->features; }

size_t netbe_get_vnet_hdr_len(netbe *be) { return be->fe_hdr_len; }
const char *netbe_libversion(void) { return NETBE_VERSION; }
const char *netbe_name(netbe *be) { return be->name; }
const char *netbe_type(netbe *be) { return be->ops->prefix; }
unsigned netbe_get_mtu(netbe *be) { return be->mtu; }

int netbe_get_mac(netbe *be, uint8_t mac[6])
{
    if (!be->have_mac)
        return -ENOENT;
    memcpy(mac, be->mac, 6);
    return 0;
}

void netbe_get_stats(netbe *be, struct netbe_stats *st)
{
    const uint64_t *src = (const uint64_t *)&be->st;
    uint64_t *dst = (uint64_t *)st;
    for (size_t i = 0; i < sizeof *st / sizeof(uint64_t); i++)
        dst[i] = nb_load(&src[i]);
    st->tx_frames = nb_load(&be->sent.frames) + nb_load(&be->sw_sent.frames);
    st->tx_bytes = nb_load(&be->sent.bytes) + nb_load(&be->sw_sent.bytes);
}

/* }================================================================ */

/* {===================================================================
** 6. Sockets, shared by pair, stream and dgram: addresses, buffers, frame I/O
** ====================================================================
** Forms: "unix:/path", "/path", "HOST:PORT", "[V6]:PORT". HOST may be
** empty for a listener (any address).
*/

struct nb_addr {
    struct sockaddr_storage sa;
    socklen_t len;
    int family;
    char text[112];              /* the address as configured, for messages */
};

static int nb_parse_addr(const char *key, const char *text, int passive,
                         struct nb_addr *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    snprintf(a->text, sizeof a->text, "%s", text ? text : "");
    const char *path = strncmp(text, "unix:", 5) == 0 ? text + 5 :
                       text[0] == '/' ? text : NULL;
    if (path) {
        struct sockaddr_un *un = (struct sockaddr_un *)&a->sa;
        if (!*path || strlen(path) >= sizeof un->sun_path)
            return NB_ERR(EINVAL, "%s '%s': a UNIX socket path of 1 to %zu characters",
                          key, text, sizeof un->sun_path - 1);
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, path);
        a->len = sizeof *un;
        a->family = AF_UNIX;
        return 0;
    }
    char host[256];
    const char *colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof host)
        return NB_ERR(EINVAL, "%s '%s': expected unix:/path, HOST:PORT or [IPV6]:PORT",
                      key, text);
    memcpy(host, text, colon - text);
    host[colon - text] = '\0';
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    unsigned long port;
    if (nb_parse_uint(colon + 1, passive ? 0 : 1, 65535, &port) < 0)
        return NB_ERR(EINVAL, "%s '%s': port '%s' is not a number from %d to 65535", key,
                      text, colon + 1, passive ? 0 : 1);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&a->sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->sa;
    if (!*h && passive) {
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_any;
    } else if (inet_pton(AF_INET, h, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
    } else {
        return NB_ERR(EINVAL, "%s '%s': '%s' is not a numeric IPv4 or IPv6 address", key,
                      text, h);
    }
    a->family = a->sa.ss_family;
    if (a->family == AF_INET) {
        in4->sin_port = htons((uint16_t)port);
        a->len = sizeof *in4;
    } else {
        in6->sin6_port = htons((uint16_t)port);
        a->len = sizeof *in6;
    }
    return 0;
}

/* A UNIX socket path is a host path: note it for the permission check. */
static void nb_addr_use(netbe_config *cfg, const char *key, const struct nb_addr *a)
{
    if (a->family == AF_UNIX)
        nb_config_use(cfg, NETBE_ALLOW_FILES, key,
                      ((const struct sockaddr_un *)&a->sa)->sun_path, 0);
}

static int nb_check_addr_key(netbe_config *cfg, const char *key, int passive,
                             char *err, size_t errlen)
{
    struct nb_addr a;
    const char *v = netbe_config_get(cfg, key);
    int rc = v ? nb_parse_addr(key, v, passive, &a, err, errlen) : 0;
    if (v && rc == 0)
        nb_addr_use(cfg, key, &a);
    return rc;
}

/* ---- UNIX socket paths: remove only stale sockets (netbe.h) ---- */

/* Whether a process listens on (has bound) the socket at PATH: 0 when
** connect() is refused (a stale socket), 1 when it listens, or -errno
** when that cannot be told. Non-blocking, so a full backlog cannot stall
** us; any socket type is refused alike when nothing is bound there. */
static int nb_unix_listened(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 ? 1 :
             errno == ECONNREFUSED ? 0 :
             errno == EAGAIN || errno == EINPROGRESS || errno == EPROTOTYPE ? 1 : -errno;
    close(fd);
    return rc;
}

static const char *nb_file_kind(mode_t m)
{
    return S_ISREG(m) ? "a regular file" : S_ISDIR(m) ? "a directory" :
           S_ISLNK(m) ? "a symbolic link" : "not a socket";
}

int netbe_unix_clear(const char *path, char *err, size_t errlen)
{
    struct stat st, again;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : NB_ERR(errno, "%s: %s", path, strerror(errno));
    if (!S_ISSOCK(st.st_mode))
        return NB_ERR(EEXIST, "%s exists and is %s (netbe removes only stale UNIX "
                      "sockets)", path, nb_file_kind(st.st_mode));
    int live = nb_unix_listened(path);
    if (live == -ENOENT)
        return 0;                /* gone meanwhile */
    if (live < 0)
        return NB_ERR(-live, "%s: cannot tell whether a process listens on it: %s", path,
                      strerror(-live));
    if (live)
        return NB_ERR(EADDRINUSE, "%s is the socket of a running process (it accepts "
                      "connections)", path);
    /* Still the stale socket probed, not something put there meanwhile. */
    if (lstat(path, &again) < 0 || again.st_dev != st.st_dev || again.st_ino != st.st_ino)
        return NB_ERR(EADDRINUSE, "%s changed while it was checked", path);
    if (unlink(path) < 0 && errno != ENOENT)
        return NB_ERR(errno, "%s: cannot remove the stale socket: %s", path,
                      strerror(errno));
    return 0;
}

int netbe_unix_mark(const char *path, struct netbe_unix_id *id)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return -errno;
    if (!S_ISSOCK(st.st_mode))
        return -ENOTSOCK;
    id->dev = (uint64_t)st.st_dev;
    id->ino = (uint64_t)st.st_ino;
    return 0;
}

int netbe_unix_release(const char *path, const struct netbe_unix_id *id)
{
    struct stat st;
    if (!id->ino || lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode) ||
        (uint64_t)st.st_dev != id->dev ||
        (uint64_t)st.st_ino != id->ino || nb_unix_listened(path) != 0)
        return 0;
    return unlink(path) == 0;
}

/* A socket of TYPE for A; listeners and binders get SO_REUSEADDR. */
static int nb_socket_for(const struct nb_addr *a, int type)
{
    int fd = socket(a->family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && a->family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    return fd;
}

/* ---- Headers: stream and dgram peers send none ----
** QEMU's record formats carry plain frames. For a frontend that takes TSO
** (and checksum offload with it), these backends take a virtio-net header
** of NB_SOCK_HDR bytes. A frame sent comes with one that asks for nothing
** (they offer receive offloads only, so netbe does the rest in software
** first), and it is left out; a frame received gets a zero one, or one
** saying that TCP segments waiting behind one another came out as one TSO
** frame (nb_join_begin). */

#define NB_SOCK_HDR 10
#define NB_SOCK_CAPS (NETBE_F_GUEST_CSUM | NETBE_F_GUEST_TSO4 | NETBE_F_GUEST_TSO6)

static uint64_t nb_sock_get_cap(netbe *be)
{
    return NB_SOCK_CAPS;
}

/* Joining needs checksum offload and TSO; without it no header is worth
** its bytes. */
static int nb_sock_set_cap(netbe *be, uint64_t features, unsigned fe_hdr_len)
{
    int join = features & NETBE_F_GUEST_CSUM &&
               features & (NETBE_F_GUEST_TSO4 | NETBE_F_GUEST_TSO6);
    be->be_hdr_len = join ? NB_SOCK_HDR : 0;
    return 0;
}

/* IOV without BE's header into OUT (room for IOVCNT); returns the count. */
static int nb_sock_skip_hdr(netbe *be, const struct iovec *iov, int iovcnt, struct iovec *out)
{
    if (!be->be_hdr_len) {
        memcpy(out, iov, (size_t)iovcnt * sizeof *iov);
        return iovcnt;
    }
    return nb_iov_skip(iov, iovcnt, be->be_hdr_len, out);
}

/* Start joining at frame F (LEN bytes) for IOV, when BE's frontend takes
** TSO of F's kind; see nb_join_begin. */
static int nb_sock_join_begin(netbe *be, struct nb_join_out *o, const uint8_t *f, size_t len,
                              const struct iovec *iov, int iovcnt)
{
    return be->be_hdr_len &&
           nb_join_begin(o, f, len, (be->features & NETBE_F_GUEST_TSO4) != 0,
                         (be->features & NETBE_F_GUEST_TSO6) != 0, iov, iovcnt,
                         be->be_hdr_len);
}

/* Hand frame F (LEN bytes) to IOV as it is, behind BE's zero header;
** returns its length with the header (the core drops a truncated one). */
static ssize_t nb_sock_rx_plain(netbe *be, const uint8_t *f, size_t len,
                                const struct iovec *iov, int iovcnt)
{
    size_t room = nb_iov_len(iov, iovcnt), hl = be->be_hdr_len;
    nb_buf_to_iov(nb_zero_hdr, hl < room ? hl : room, iov, iovcnt, 0);
    nb_buf_to_iov(f, len + hl <= room ? len : room > hl ? room - hl : 0, iov, iovcnt, hl);
    return (ssize_t)(len + hl);
}

/* ---- Socket buffers; message sockets (pair, dgram), a frame each ---- */

static int nb_sock_grow(int fd, int bytes)
{
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    return 0;
}

/* Send and receive on a connected message socket: the pair and dgram
** backends, one frame per message. Their private state starts with the
** socket's descriptor. */
static ssize_t nb_sock_send(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = iovcnt};
    ssize_t n = sendmsg(*NB_PRIV(be, int), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0)
        return n;
    return errno == EWOULDBLOCK ? -EAGAIN : errno == ECONNREFUSED ? -ENOTCONN : -errno;
}

static ssize_t nb_sock_recv(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = iovcnt};
    for (;;) {
        ssize_t n = recvmsg(*NB_PRIV(be, int), &m, MSG_DONTWAIT | MSG_TRUNC);
        if (n >= 0)
            return n;
        if (errno == EWOULDBLOCK)
            return -EAGAIN;
        /* A connected UDP socket reports a past ICMP unreachable here. */
        if (errno != ECONNREFUSED && errno != EINTR)
            return -errno;
    }
}

/* }================================================================ */

/* {===================================================================
** 7. IP reassembly: whole datagrams from a guest's fragments
** ====================================================================
** libslirp 4.7 must never see a fragment: its IPv4 ip_reass takes a lone
** last fragment (MF clear, offset not 0) for a whole datagram and writes
** through pointers read from its payload, and its IPv6 input drops every
** packet with a fragment header. Guests fragment large UDP datagrams
** (DNS with big EDNS answers, NFS over UDP), so the slirp backend hands
** fragments to this table and libslirp gets only whole datagrams.
**
** The rules are Linux's. A datagram is keyed by addresses, id and (IPv4)
** protocol. Fragments that overlap drop the whole datagram (RFC 5722; Linux
** does the same for IPv4); an exact duplicate is dropped alone. A datagram
** that would pass 65,535 bytes is dropped. Limits as the kernel's
** ipfrag_time, ipfrag_high_thresh and ipfrag_max_dist: a datagram still
** incomplete after 30 s is dropped; at most FRAG_MAX_DGRAMS datagrams and
** FRAG_MEM_MAX bytes are held, the oldest going first; a datagram that has
** seen no fragment while FRAG_MAX_DIST others came is stale (its id has
** likely wrapped) and is dropped. Only a fragment header right behind the
** fixed IPv6 header is reassembled: libslirp 4.7 drops a packet with any
** other extension header anyway. Every fragment counts in tx_frags, every
** one given up also in tx_frag_drops and tx_drops, every datagram given
** up in one of tx_frag_overlap, _oversize, _timeout or _evicted.
** The table is used under its owner's lock.
*/

#ifndef NETBE_OMIT_SLIRP

#define FRAG_MEM_MAX    (4u << 20)          /* bytes held, as ipfrag_high_thresh */
#define FRAG_MAX_DGRAMS 256                 /* datagrams in progress */
#define FRAG_TIME_NS    (30ull * 1000000000u)   /* as ipfrag_time */
#define FRAG_MAX_DIST   64                  /* as ipfrag_max_dist */
#define FRAG_COST       64                  /* bytes charged per allocation beyond its data */
#define FRAG_KEY        37                  /* family, two IPv6 addresses, a 32-bit id */
#define FRAG_HEAD_MAX   (14 + 60)           /* Ethernet and the largest IPv4 header */

struct frag_piece {
    struct frag_piece *next;
    uint32_t off, len;           /* where the data goes in the datagram's payload */
    uint8_t data[];
};

/* A datagram being put together. */
struct frag_dgram {
    struct frag_dgram *next;     /* the table's list, oldest first */
    uint64_t born;               /* when its first fragment came, ns */
    uint64_t seen;               /* the table's fragment count at its latest fragment */
    uint8_t key[FRAG_KEY];
    uint32_t total;              /* payload length once the last fragment came, else 0 */
    uint32_t have, end;          /* payload bytes held; the end of the furthest piece */
    size_t cost;
    unsigned npieces;
    uint8_t nexthdr;             /* IPv6: the next header the first fragment names */
    uint16_t head_len;           /* 0 until the first fragment came */
    uint8_t head[FRAG_HEAD_MAX]; /* its Ethernet and IP headers */
    struct frag_piece *pieces;   /* sorted by offset, never overlapping */
};

struct frag_table {
    struct frag_dgram *first, *last;
    unsigned count;
    size_t cost;
    uint64_t seq;                /* fragments taken so far */
    size_t v6_max;               /* the largest IPv6 packet the owner passes on */
    struct netbe_stats *st;
    uint8_t *out;                /* the datagram made whole, 14 + 65535 bytes */
};

/* What a fragment is. */
struct frag_info {
    int v6;
    int more;                    /* more fragments follow */
    unsigned head_len;           /* Ethernet and IP header (IPv6: without the fragment header) */
    unsigned data;               /* where its data starts in the frame */
    uint32_t off, len;
    uint8_t nexthdr;
    uint8_t key[FRAG_KEY];
};

static void frag_init(struct frag_table *t, struct netbe_stats *st, size_t v6_max)
{
    memset(t, 0, sizeof *t);
    t->st = st;
    t->v6_max = v6_max;
}

/* Classify Ethernet frame F of LEN bytes: 0 when it is no fragment, 1 for
** a fragment (*FI filled), 2 for an IPv6 atomic fragment (offset 0, no
** more: RFC 6946 has it taken alone), -1 for a fragment whose headers lie. */
static int frag_parse(const uint8_t *f, size_t len, struct frag_info *fi)
{
    memset(fi, 0, sizeof *fi);
    if (len >= 34 && nb_get16(f + 12) == 0x0800 && (f[14] >> 4) == 4) {
        unsigned fo = nb_get16(f + 20), ihl = (f[14] & 15u) * 4, tot = nb_get16(f + 16);
        if (!(fo & 0x3fff))
            return 0;
        if (ihl < 20 || tot <= ihl || 14 + (size_t)tot > len ||
            nb_sum_fold(nb_sum(0, f + 14, ihl)) != 0xffff)
            return -1;
        fi->more = (fo & 0x2000) != 0;
        fi->head_len = fi->data = 14 + ihl;
        fi->off = (fo & 0x1fff) * 8u;
        fi->len = tot - ihl;
        fi->key[0] = 4;
        memcpy(fi->key + 1, f + 26, 8);          /* source, destination */
        memcpy(fi->key + 9, f + 18, 2);          /* id */
        fi->key[11] = f[23];                     /* protocol */
    } else if (len >= 54 && nb_get16(f + 12) == 0x86dd && (f[14] >> 4) == 6 && f[20] == 44) {
        unsigned pl = nb_get16(f + 18), fo;
        if (pl < 8 || 54 + (size_t)pl > len)
            return -1;
        fo = nb_get16(f + 56);
        fi->v6 = 1;
        fi->more = fo & 1;
        fi->head_len = 54;
        fi->data = 62;
        fi->off = fo & 0xfff8;
        fi->len = pl - 8;
        fi->nexthdr = f[54];
        fi->key[0] = 6;
        memcpy(fi->key + 1, f + 22, 32);         /* source, destination */
        memcpy(fi->key + 33, f + 58, 4);         /* id */
        if (!fi->off && !fi->more)
            return 2;
    } else {
        return 0;
    }
    if (!fi->len || (fi->more && fi->len % 8))
        return -1;               /* only the last fragment may end off the 8-byte grid */
    return 1;
}

/* True when Ethernet frame F of LEN bytes is an IP fragment. */
static int frag_is_fragment(const uint8_t *f, size_t len)
{
    struct frag_info fi;
    return frag_parse(f, len, &fi) != 0;
}

static void frag_drop_count(struct frag_table *t, uint64_t fragments)
{
    nb_count(&t->st->tx_frag_drops, fragments);
    nb_count(&t->st->tx_drops, fragments);
}

/* Give up datagram D, counting it in REASON. */
static void frag_kill(struct frag_table *t, struct frag_dgram *d, uint64_t *reason)
{
    struct frag_dgram **pp = &t->first, *prev = NULL;
    while (*pp != d) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    *pp = d->next;
    if (t->last == d)
        t->last = prev;
    t->count--;
    t->cost -= d->cost;
    if (reason) {
        frag_drop_count(t, d->npieces);
        nb_count(reason, 1);
    }
    while (d->pieces) {
        struct frag_piece *p = d->pieces;
        d->pieces = p->next;
        free(p);
    }
    free(d);
}

/* Drop the datagrams that ran out of time at NOW. */
static void frag_expire(struct frag_table *t, uint64_t now)
{
    while (t->first && now - t->first->born >= FRAG_TIME_NS)
        frag_kill(t, t->first, &t->st->tx_frag_timeout);
}

/* When the oldest datagram runs out of time, or 0 when none is held. */
static uint64_t frag_deadline(const struct frag_table *t)
{
    return t->first ? t->first->born + FRAG_TIME_NS : 0;
}

static void frag_free(struct frag_table *t)
{
    while (t->first)
        frag_kill(t, t->first, NULL);
    free(t->out);
    t->out = NULL;
}

static struct frag_dgram *frag_find(struct frag_table *t, const uint8_t *key)
{
    for (struct frag_dgram *d = t->first; d; d = d->next)
        if (memcmp(d->key, key, FRAG_KEY) == 0)
            return d;
    return NULL;
}

/* A new, empty datagram at the end of the list, after making room for
** it; NULL when out of memory. */
static struct frag_dgram *frag_new(struct frag_table *t, const uint8_t *key, uint64_t now)
{
    if (t->count >= FRAG_MAX_DGRAMS)
        frag_kill(t, t->first, &t->st->tx_frag_evicted);
    struct frag_dgram *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    memcpy(d->key, key, FRAG_KEY);
    d->born = now;
    d->cost = sizeof *d + FRAG_COST;
    if (t->last)
        t->last->next = d;
    else
        t->first = d;
    t->last = d;
    t->count++;
    t->cost += d->cost;
    return d;
}

/* Put fragment FI of frame F into D. Returns 0 when it went in, 1 when it
** repeats a piece exactly (dropped alone), -1 when it overlaps or
** contradicts what D holds (D must go), -ENOMEM. */
static int frag_insert(struct frag_table *t, struct frag_dgram *d, const uint8_t *f,
                       const struct frag_info *fi)
{
    uint32_t end = fi->off + fi->len;
    if (!fi->more && (d->total ? end != d->total : end < d->end))
        return -1;               /* a second, different last fragment, or one short of the data */
    if (fi->more && d->total && end > d->total)
        return -1;
    struct frag_piece **pp = &d->pieces;
    while (*pp && (*pp)->off + (*pp)->len <= fi->off)
        pp = &(*pp)->next;
    if (*pp && (*pp)->off < end)
        return (*pp)->off == fi->off && (*pp)->len == fi->len ? 1 : -1;
    size_t cost = sizeof(struct frag_piece) + fi->len + FRAG_COST;
    while (t->cost + cost > FRAG_MEM_MAX && t->first != d)
        frag_kill(t, t->first, &t->st->tx_frag_evicted);
    struct frag_piece *p = malloc(sizeof *p + fi->len);
    if (!p)
        return -ENOMEM;
    p->off = fi->off;
    p->len = fi->len;
    memcpy(p->data, f + fi->data, fi->len);
    p->next = *pp;
    *pp = p;
    d->npieces++;
    d->have += fi->len;
    d->end = end > d->end ? end : d->end;
    d->cost += cost;
    t->cost += cost;
    if (!fi->more)
        d->total = end;
    if (fi->off == 0) {
        memcpy(d->head, f, fi->head_len);
        d->head_len = (uint16_t)fi->head_len;
        d->nexthdr = fi->nexthdr;
    }
    return 0;
}

/* The largest IP packet, header included, a datagram may become. */
static size_t frag_max(const struct frag_table *t, int v6)
{
    return v6 ? (t->v6_max < 40 + 65535 ? t->v6_max : 40 + 65535) : 65535;
}

/* The buffer whole datagrams are written to; NULL when out of memory. */
static uint8_t *frag_out(struct frag_table *t)
{
    if (!t->out)
        t->out = malloc(14 + 40 + 65535);
    return t->out;
}

/* Set the lengths in the headers of datagram O (IP header at 14) with
** TOTAL payload bytes, and take out what said it was a fragment. Returns
** the frame length. */
static size_t frag_seal(uint8_t *o, int v6, unsigned head_len, uint32_t total,
                        uint8_t nexthdr)
{
    size_t ip_len = head_len - 14u + total;
    if (v6) {
        nb_put16(o + 18, total);
        o[20] = nexthdr;
    } else {
        nb_put16(o + 16, (unsigned)ip_len);
        nb_put16(o + 20, 0);
        nb_ipv4_csum(o + 14);
    }
    return 14 + ip_len;
}

/* Hand out the whole datagram in t->out. */
static int frag_ready(struct frag_table *t, size_t n, const uint8_t **out, size_t *outlen)
{
    nb_count(&t->st->tx_frag_whole, 1);
    *out = t->out;
    *outlen = n;
    return 1;
}

/* An IPv6 atomic fragment is the whole datagram behind a fragment header. */
static int frag_atomic(struct frag_table *t, const uint8_t *f, const struct frag_info *fi,
                       const uint8_t **out, size_t *outlen)
{
    if (!frag_out(t)) {
        frag_drop_count(t, 1);
        return -1;
    }
    memcpy(t->out, f, fi->head_len);
    memcpy(t->out + fi->head_len, f + fi->data, fi->len);
    return frag_ready(t, frag_seal(t->out, 1, fi->head_len, fi->len, fi->nexthdr), out,
                      outlen);
}

/* D is complete when its last and first fragments came and nothing is
** missing between (pieces never overlap, so the bytes held tell). Then it
** is written to t->out and freed. */
static int frag_complete(struct frag_table *t, struct frag_dgram *d, const uint8_t **out,
                         size_t *outlen)
{
    if (!d->total || d->have != d->total || !d->head_len)
        return -1;
    int v6 = d->key[0] == 6;
    if (d->head_len - 14u + d->total > frag_max(t, v6) || !frag_out(t)) {
        frag_kill(t, d, &t->st->tx_frag_oversize);
        return -1;
    }
    memcpy(t->out, d->head, d->head_len);
    for (const struct frag_piece *p = d->pieces; p; p = p->next)
        memcpy(t->out + d->head_len + p->off, p->data, p->len);
    size_t n = frag_seal(t->out, v6, d->head_len, d->total, d->nexthdr);
    frag_kill(t, d, NULL);
    return frag_ready(t, n, out, outlen);
}

/* Take Ethernet frame F of LEN bytes from the guest at time NOW. Returns 0
** when it is no fragment (pass F on as it is), 1 when a whole datagram is
** ready (*OUT, *OUTLEN: valid until the next call), -1 when the fragment
** was kept or dropped (nothing to pass on; counted). */
static int frag_input(struct frag_table *t, const uint8_t *f, size_t len, uint64_t now,
                      const uint8_t **out, size_t *outlen)
{
    struct frag_info fi;
    int kind = frag_parse(f, len, &fi);
    if (kind == 0)
        return 0;
    nb_count(&t->st->tx_frags, 1);
    frag_expire(t, now);
    if (kind == 2)
        return frag_atomic(t, f, &fi, out, outlen);
    if (kind < 0) {
        frag_drop_count(t, 1);
        return -1;
    }
    struct frag_dgram *d = frag_find(t, fi.key);
    uint64_t *why = NULL;        /* set when the datagram must go */
    t->seq++;
    if (d && t->seq - d->seen > FRAG_MAX_DIST) {
        frag_kill(t, d, &t->st->tx_frag_evicted);
        d = NULL;
    }
    if (fi.head_len - 14u + fi.off + fi.len > frag_max(t, fi.v6)) {
        why = &t->st->tx_frag_oversize;
    } else if (!d && !(d = frag_new(t, fi.key, now))) {
        frag_drop_count(t, 1);
        return -1;
    } else {
        d->seen = t->seq;
        int rc = frag_insert(t, d, f, &fi);
        if (rc == 1) {
            frag_drop_count(t, 1);
            return -1;
        }
        if (rc < 0)
            why = rc == -1 ? &t->st->tx_frag_overlap : &t->st->tx_frag_evicted;
    }
    if (why) {
        frag_drop_count(t, 1);
        if (d)
            frag_kill(t, d, why);
        else
            nb_count(why, 1);
        return -1;
    }
    return frag_complete(t, d, out, outlen);
}

#endif /* NETBE_OMIT_SLIRP */

/* }================================================================ */

/* {===================================================================
** 8. Backend null: discards what it is sent, never receives
** ==================================================================== */

static int null_open(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    return 0;
}

static void null_close(netbe *be) {}

static ssize_t null_send(netbe *be, const struct iovec *iov, int iovcnt)
{
    return (ssize_t)nb_iov_len(iov, iovcnt);
}

static ssize_t null_recv(netbe *be, const struct iovec *iov, int iovcnt)
{
    return 0;
}

static const struct nb_ops nb_null = {
    .prefix = "null", .open = null_open, .close = null_close,
    .send = null_send, .recv = null_recv,
};

/* }================================================================ */

/* {===================================================================
** 9. Backend pair: two in-process endpoints joined by name
** ====================================================================
** "pair,name=X" opened twice gives the two ends of one link. The ends are
** a SOCK_SEQPACKET socketpair: the kernel keeps frame boundaries, queues,
** flow control (EAGAIN, then writable) and thread safety for us.
*/

static const char *const pair_keys[] = {"name", NULL};

struct pair_waiting {
    struct pair_waiting *next;
    char *name;
    int fd;                      /* the end for the second opener */
    const netbe *owner;          /* the first end, which holds the other one */
};

static pthread_mutex_t pair_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pair_waiting *pair_list;

struct pair_priv {
    int fd;                      /* first: nb_sock_send reads it */
};

/* Take the end waiting under NAME into *MINE, or leave the other end of a
** new socket pair there for the next opener, owned by BE. */
static int pair_take_or_leave(netbe *be, const char *name, int *mine, char *err,
                              size_t errlen)
{
    pthread_mutex_lock(&pair_lock);
    for (struct pair_waiting **pp = &pair_list; *pp; pp = &(*pp)->next) {
        struct pair_waiting *w = *pp;
        if (strcmp(w->name, name) == 0) {
            *mine = w->fd;
            *pp = w->next;
            pthread_mutex_unlock(&pair_lock);
            free(w->name);
            free(w);
            return 0;
        }
    }
    int sv[2];
    struct pair_waiting *w = calloc(1, sizeof *w);
    if (!w || !(w->name = strdup(name)) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        int e = errno ? errno : ENOMEM;
        pthread_mutex_unlock(&pair_lock);
        if (w)
            free(w->name);
        free(w);
        return NB_ERR(e, "pair '%s': socketpair: %s", name, strerror(e));
    }
    nb_sock_grow(sv[0], 1 << 20);
    nb_sock_grow(sv[1], 1 << 20);
    w->fd = sv[1];
    w->owner = be;
    w->next = pair_list;
    pair_list = w;
    *mine = sv[0];
    pthread_mutex_unlock(&pair_lock);
    return 0;
}

static int pair_open(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    struct pair_priv *p = NB_PRIV(be, struct pair_priv);
    const char *name = netbe_config_get(cfg, "name");
    int rc = pair_take_or_leave(be, name ? name : "", &p->fd, err, errlen);
    return rc < 0 ? rc : nb_watch_fd(be, p->fd);
}

/* A first end closed before a second came takes its waiting end along, so
** the next two opens of the name join each other. */
static void pair_close(netbe *be)
{
    pthread_mutex_lock(&pair_lock);
    for (struct pair_waiting **pp = &pair_list; *pp; pp = &(*pp)->next) {
        struct pair_waiting *w = *pp;
        if (w->owner == be) {
            *pp = w->next;
            close(w->fd);
            free(w->name);
            free(w);
            break;
        }
    }
    pthread_mutex_unlock(&pair_lock);
    close(NB_PRIV(be, struct pair_priv)->fd);
}

/* An empty read is the other end closing (netbe sends no empty frame):
** this end is down, instead of readable for ever. */
static ssize_t pair_recv(netbe *be, const struct iovec *iov, int iovcnt)
{
    ssize_t n = nb_sock_recv(be, iov, iovcnt);
    return n == 0 ? -ENOTCONN : n;
}

static const struct nb_ops nb_pair = {
    .prefix = "pair", .keys = pair_keys, .priv_size = sizeof(struct pair_priv),
    .open = pair_open, .close = pair_close, .send = nb_sock_send, .recv = pair_recv,
    .mtu_drop = 1,
};

/* }================================================================ */

/* {===================================================================
** 10. Backend tap (Linux tun, FreeBSD tap, vmnet, ngd)
** ====================================================================
** On Linux the interface is opened with IFF_VNET_HDR, so the kernel can hand
** us TSO frames and accept them; with no offloads negotiated the header is
** all zero and the core strips it. On FreeBSD, /dev/tapN, /dev/vmnetN and
** /dev/ngdN are plain frame devices; the link of a tap or vmnet is brought
** up through its descriptor, as bhyve does; ngd is an ng_device node, not an
** interface, so the link-up step is skipped (bhyve does the same).
** A Linux tap with queues=N is one IFF_MULTI_QUEUE interface opened N
** times: queue 0 is the handle netbe_open returns, the others wait
** detached (the kernel steers no frame to them) until netbe_open_queue
** makes each a handle of its own.
**
** A Linux tap may live in another network namespace (netns=PATH, and
** userns=PATH to join that namespace's user namespace first, as
** slirp4netns does). The kernel puts a tun interface in the namespace of
** whoever opened /dev/net/tun, and an ioctl socket acts in the namespace
** it was made in; after that both work from any namespace. So a forked
** child enters the namespaces, opens the two descriptors and passes them
** back over a socketpair (SCM_RIGHTS); the embedder's threads never change
** namespace. A child rather than a short-lived thread because a process
** with more than one thread may not join a user namespace, and the child
** runs nothing but system calls, which is what a child of a threaded
** process may safely do.
*/

/* Keys a tap takes beyond the common ones. */
static const char *const tap_keys[] = {"queues", "netns", "userns", NULL};

struct tap_priv {
    int fd;
    uint64_t caps;               /* Linux: offloads this kernel's tun has */
    int detached;                /* a queue taken off its interface */
    int *spare;                  /* queue I's descriptor at [I - 1], -1 once opened */
};

static void tap_close(netbe *be)
{
    struct tap_priv *p = NB_PRIV(be, struct tap_priv);
    close(p->fd);
    for (int i = 1; p->spare && i < be->nqueues; i++)
        if (p->spare[i - 1] >= 0)
            close(p->spare[i - 1]);
    free(p->spare);
}

/* What a failed write to a tap device means, as a netbe_send result.
** Linux's tun says EIO while the link is down: the peer is not there.
** FreeBSD's tap and ng_device say EIO for a frame above their MRU. */
static ssize_t tap_send_error(int e)
{
#ifdef __linux__
    const int eio = ENOTCONN;
#else
    const int eio = EMSGSIZE;
#endif
    return e == EWOULDBLOCK ? -EAGAIN : e == EIO ? -eio : -e;
}

static ssize_t tap_send(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct tap_priv *p = NB_PRIV(be, struct tap_priv);
    if (p->detached)
        return -ENOTCONN;
    ssize_t n = writev(p->fd, iov, iovcnt);
    if (n < 0)
        return tap_send_error(errno);
    /* FreeBSD's tap takes a write while its link is down and drops it. */
    return n == 0 ? -ENOTCONN : n;
}

static ssize_t tap_recv(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct tap_priv *p = NB_PRIV(be, struct tap_priv);
    /* A detached queue has nothing to read. Linux's tun says EAGAIN or,
    ** in some versions, EBADFD, which would take the backend down. */
    if (p->detached)
        return 0;
    /* Linux's tun cuts a frame longer than the buffers and returns what it
    ** wrote: a byte of room more tells a cut frame, which the core drops. */
    uint8_t over;
    struct iovec v[iovcnt + 1];
    if (iovcnt > 0)
        memcpy(v, iov, sizeof *v * (size_t)iovcnt);
    v[iovcnt] = (struct iovec){&over, 1};
    ssize_t n = readv(p->fd, v, iovcnt < IOV_MAX ? iovcnt + 1 : iovcnt);
    if (n >= 0)
        return n;
    return errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
}

/* Take IFNAME, the kernel's name for BE's interface, as BE's name: a bare
** "tap" becomes the name the kernel chose. */
static int tap_take_name(netbe *be, const char *ifname, char *err, size_t errlen)
{
    if (strcmp(ifname, be->name) == 0)
        return 0;
    char *n = strdup(ifname);
    if (!n)
        return NB_ERR(ENOMEM, "%s: out of memory", be->name);
    free(be->name);
    be->name = n;
    return 0;
}

#ifdef __linux__

#include <sched.h>
#include <sys/wait.h>

/* What the namespace child reports: the step that failed and its errno,
** or {0, 0} with the two descriptors attached. */
struct tap_ns_reply {
    int step, err;
};
enum { TAP_NS_USERNS = 1, TAP_NS_NETNS, TAP_NS_TUN, TAP_NS_SOCKET, TAP_NS_SEND };

/* In the child: only system calls, then _exit. */
static void tap_ns_child(int sock, int userfd, int netfd)
{
    struct tap_ns_reply r = {0, 0};
    int fds[2] = {-1, -1};
    if (userfd >= 0 && setns(userfd, CLONE_NEWUSER) < 0)
        r.step = TAP_NS_USERNS;
    else if (setns(netfd, CLONE_NEWNET) < 0)
        r.step = TAP_NS_NETNS;
    else if ((fds[0] = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)) < 0)
        r.step = TAP_NS_TUN;
    else if ((fds[1] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        r.step = TAP_NS_SOCKET;
    if (r.step)
        r.err = errno;
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof fds)];
    } ctl;
    struct iovec v = {&r, sizeof r};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    if (!r.step) {
        memset(&ctl, 0, sizeof ctl);
        m.msg_control = ctl.buf;
        m.msg_controllen = sizeof ctl.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof fds);
        memcpy(CMSG_DATA(c), fds, sizeof fds);
    }
    _exit(sendmsg(sock, &m, MSG_NOSIGNAL) == (ssize_t)sizeof r ? 0 : 1);
}

/* Read the child's reply from SOCK into FDS (both -1 unless it succeeded). */
static int tap_ns_receive(netbe *be, int sock, int fds[2], char *err, size_t errlen)
{
    static const char *const what[] = {"", "cannot join the user namespace",
                                       "cannot join the network namespace",
                                       "cannot open /dev/net/tun in the namespace",
                                       "cannot make a socket in the namespace"};
    struct tap_ns_reply r;
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(2 * sizeof(int))];
    } ctl;
    struct iovec v = {&r, sizeof r};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
    ssize_t n;
    do
        n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    struct cmsghdr *c = n == (ssize_t)sizeof r ? CMSG_FIRSTHDR(&m) : NULL;
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(2 * sizeof(int)) && r.step == 0) {
        memcpy(fds, CMSG_DATA(c), 2 * sizeof(int));
        return 0;
    }
    if (n != (ssize_t)sizeof r || r.step < TAP_NS_USERNS || r.step > TAP_NS_SOCKET)
        return NB_ERR(EIO, "tap %s: the namespace helper process gave no answer", be->name);
    const char *why = what[r.step];
    if (r.step <= TAP_NS_NETNS && r.err == EINVAL)
        return NB_ERR(EINVAL, "tap %s: %s: the %s= file is not one (expected a %s "
                      "namespace file like /run/netns/NAME or /proc/PID/ns/%s)", be->name, why,
                      r.step == TAP_NS_USERNS ? "userns" : "netns",
                      r.step == TAP_NS_USERNS ? "user" : "network",
                      r.step == TAP_NS_USERNS ? "user" : "net");
    return NB_ERR(r.err, "tap %s: %s: %s", be->name, why, strerror(r.err));
}

/* Open the namespace files NETNS (and USERNS, may be NULL) and have a
** child make FDS[0], /dev/net/tun, and FDS[1], an ioctl socket, in them.
** Signals stay blocked in the child: the embedder's handlers must not run
** there. */
static int tap_ns_open(netbe *be, const char *netns, const char *userns, int fds[2],
                       char *err, size_t errlen)
{
    int netfd = open(netns, O_RDONLY | O_CLOEXEC);
    if (netfd < 0)
        return NB_ERR(errno, "tap %s: netns '%s': %s", be->name, netns, strerror(errno));
    int userfd = userns ? open(userns, O_RDONLY | O_CLOEXEC) : -1;
    if (userns && userfd < 0) {
        int e = errno;
        close(netfd);
        return NB_ERR(e, "tap %s: userns '%s': %s", be->name, userns, strerror(e));
    }
    /* setns refuses the caller's own user namespace: already in it. */
    struct stat mine, theirs;
    if (userfd >= 0 && fstat(userfd, &theirs) == 0 && stat("/proc/self/ns/user", &mine) == 0 &&
        mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino) {
        close(userfd);
        userfd = -1;
    }
    int sv[2], rc = 0;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        rc = NB_ERR(errno, "tap %s: socketpair: %s", be->name, strerror(errno));
    sigset_t all, old;
    sigfillset(&all);
    pid_t pid = -1;
    if (rc == 0) {
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pid = fork();
        if (pid == 0)
            tap_ns_child(sv[1], userfd, netfd);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (pid < 0)
            rc = NB_ERR(errno, "tap %s: fork: %s", be->name, strerror(errno));
        close(sv[1]);
        if (rc == 0)
            rc = tap_ns_receive(be, sv[0], fds, err, errlen);
        close(sv[0]);
    }
    /* ECHILD when the embedder reaps every child itself: the reply said
    ** all there is to say. */
    while (pid > 0 && waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    close(netfd);
    if (userfd >= 0)
        close(userfd);
    return rc;
}

/* Bring interface NAME up and set its MTU when one was configured. CTL is
** a socket in the interface's namespace, or -1 for one made here. */
static int tap_link_up(netbe *be, const char *ifname, int set_mtu, int ctl,
                       char *err, size_t errlen)
{
    struct ifreq ifr;
    int s = ctl >= 0 ? ctl : socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return NB_ERR(errno, "tap %s: socket: %s", ifname, strerror(errno));
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    int rc = 0;
    if (set_mtu) {
        ifr.ifr_mtu = (int)be->mtu;
        if (ioctl(s, SIOCSIFMTU, &ifr) < 0)
            rc = NB_ERR(errno, "tap %s: cannot set mtu %u: %s", ifname, be->mtu,
                        strerror(errno));
    }
    if (rc == 0 && ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        rc = NB_ERR(errno, "tap %s: cannot read the interface flags: %s", ifname,
                    strerror(errno));
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            rc = NB_ERR(errno, "tap %s: cannot bring the link up: %s", ifname,
                        strerror(errno));
    }
    if (s != ctl)
        close(s);
    return rc;
}

/* Offloads every tun driver since Linux 2.6.27 has, in VIRTIO_NET_F terms:
** it takes checksum, TSO and UFO frames, and delivers them when asked by
** TUNSETOFFLOAD. USO (Linux 6.2) is probed. */
#define TAP_CAPS (NETBE_F_CSUM | NETBE_F_GUEST_CSUM | NETBE_F_GUEST_TSO4 | \
    NETBE_F_GUEST_TSO6 | NETBE_F_GUEST_ECN | NETBE_F_HOST_TSO4 | \
    NETBE_F_HOST_TSO6 | NETBE_F_HOST_ECN | NETBE_F_HOST_UFO)

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

/* Ask the kernel which offloads it takes: TUNSETOFFLOAD refuses flags it
** does not know. Leaves offloads off. */
static uint64_t tap_probe_caps(int fd)
{
    uint64_t caps = 0;
    if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN) == 0)
        caps |= TAP_CAPS;
    /* Linux 4.14 and later accept TUN_F_UFO but never deliver UFO frames. */
    if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6) == 0)
        caps |= NETBE_F_GUEST_USO4 | NETBE_F_GUEST_USO6 | NETBE_F_HOST_USO;
    ioctl(fd, TUNSETOFFLOAD, 0);
    return caps;
}

/* Linux caps the queues of one tun interface (MAX_TAP_QUEUES). */
#define TAP_MAX_QUEUES 256

/* netns= and userns= are host paths: they need the files permission, and
** are resolved whole (an ip-netns file in /run/netns resolves; a
** /proc/PID/ns link does not, so it needs the directory "/"). */
static int tap_check(netbe_config *cfg, char *err, size_t errlen)
{
    const char *q = netbe_config_get(cfg, "queues");
    const char *netns = netbe_config_get(cfg, "netns");
    const char *userns = netbe_config_get(cfg, "userns");
    unsigned long n = 1;
    if (q && nb_parse_uint(q, 1, TAP_MAX_QUEUES, &n) < 0)
        return NB_ERR(EINVAL, "tap: queues='%s': expected a count from 1 to %d", q,
                      TAP_MAX_QUEUES);
    if (userns && !netns)
        return NB_ERR(EINVAL, "tap: userns= needs netns= (the user namespace is joined "
                      "to enter the network namespace)");
    if (netns && n > 1)
        return NB_ERR(EINVAL, "tap: netns= opens one queue; queues='%s' expected 1", q);
    if (netns)
        nb_config_use(cfg, NETBE_ALLOW_FILES, "netns", netns, 1);
    if (userns)
        nb_config_use(cfg, NETBE_ALLOW_FILES, "userns", userns, 1);
    return 0;
}

/* Attach FD, a /dev/net/tun descriptor (-1: open one here), to interface
** IFR's name (empty: a new one the kernel names) with FLAGS beyond a tap's
** own. Returns the descriptor, or a negative errno value with ERR set; FD
** is closed on failure. */
static int tap_attach_fd(netbe *be, int fd, struct ifreq *ifr, short flags, char *err,
                         size_t errlen)
{
    if (fd < 0)
        fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return NB_ERR(errno, "tap %s: cannot open /dev/net/tun: %s", be->name,
                      strerror(errno));
    ifr->ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | flags;
    int hdr = 10;
    if (ioctl(fd, TUNSETIFF, ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0 ||
        ioctl(fd, TUNSETOFFLOAD, 0) < 0) {
        int e = errno;
        close(fd);
        return NB_ERR(e, "tap %s: cannot attach to the interface%s: %s", be->name,
                      flags & IFF_MULTI_QUEUE ? " as a multiqueue tap" : "", strerror(e));
    }
    return fd;
}

/* Attach (ON) or detach queue descriptor FD of a multiqueue interface. */
static int tap_set_queue(int fd, int on)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = on ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
    return ioctl(fd, TUNSETQUEUE, &ifr) < 0 ? -errno : 0;
}

/* The queues after the first, opened on the interface it made and left
** detached. */
static int tap_open_spares(netbe *be, struct ifreq *ifr, char *err, size_t errlen)
{
    struct tap_priv *p = NB_PRIV(be, struct tap_priv);
    if (!(p->spare = malloc(sizeof *p->spare * (size_t)(be->nqueues - 1))))
        return NB_ERR(ENOMEM, "tap %s: out of memory", be->name);
    for (int i = 1; i < be->nqueues; i++)
        p->spare[i - 1] = -1;
    for (int i = 1; i < be->nqueues; i++) {
        int fd = tap_attach_fd(be, -1, ifr, IFF_MULTI_QUEUE, err, errlen);
        if (fd < 0)
            return fd;
        p->spare[i - 1] = fd;
        int rc = tap_set_queue(fd, 0);
        if (rc < 0)
            return NB_ERR(-rc, "tap %s: cannot detach queue %d: %s", be->name, i,
                          strerror(-rc));
    }
    return 0;
}

static int tap_open(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    struct tap_priv *p = NB_PRIV(be, struct tap_priv);
    struct ifreq ifr;
    const char *name = be->name, *q = netbe_config_get(cfg, "queues");
    if (strlen(name) >= IFNAMSIZ)
        return NB_ERR(EINVAL, "tap '%s': interface names are at most %d characters",
                      name, IFNAMSIZ - 1);
    unsigned long queues = 1;
    if (q)
        nb_parse_uint(q, 1, TAP_MAX_QUEUES, &queues);
    be->nqueues = (int)queues;
    const char *netns = netbe_config_get(cfg, "netns");
    int fds[2] = {-1, -1};
    if (netns) {
        int rc = tap_ns_open(be, netns, netbe_config_get(cfg, "userns"), fds, err, errlen);
        if (rc < 0)
            return rc;
    }
    memset(&ifr, 0, sizeof ifr);
    /* A bare "tap" lets the kernel choose the name. */
    if (strcmp(name, "tap") != 0)
        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    p->fd = tap_attach_fd(be, fds[0], &ifr, be->nqueues > 1 ? IFF_MULTI_QUEUE : 0, err, errlen);
    if (p->fd < 0) {
        if (fds[1] >= 0)
            close(fds[1]);
        return p->fd;
    }
    be->be_hdr_len = 10;
    p->caps = tap_probe_caps(p->fd);
    int rc = tap_take_name(be, ifr.ifr_name, err, errlen);
    if (rc == 0 && be->nqueues > 1)
        rc = tap_open_spares(be, &ifr, err, errlen);
    if (rc == 0)
        rc = tap_link_up(be, be->name, netbe_config_get(cfg, "mtu") != NULL, fds[1],
                         err, errlen);
    if (fds[1] >= 0)
        close(fds[1]);
    if (rc == 0)
        rc = nb_watch_fd(be, p->fd);
    if (rc < 0)
        tap_close(be);
    return rc;
}

/* Take queue INDEX of FIRST into Q and attach it. */
static int tap_open_queue(netbe *q, netbe *first, int index, char *err, size_t errlen)
{
    struct tap_priv *fp = NB_PRIV(first, struct tap_priv), *p = NB_PRIV(q, struct tap_priv);
    if (fp->spare[index - 1] < 0)
        return NB_ERR(EBUSY, "%s: queue %d is open already", first->name, index);
    int rc = tap_set_queue(fp->spare[index - 1], 1);
    if (rc < 0)
        return NB_ERR(-rc, "%s: cannot attach queue %d: %s", first->name, index,
                      strerror(-rc));
    p->fd = fp->spare[index - 1];
    p->caps = fp->caps;
    q->be_hdr_len = 10;
    if ((rc = nb_watch_fd(q, p->fd)) < 0) {
        tap_set_queue(p->fd, 0);
        return NB_ERR(-rc, "%s: out of memory", first->name);
    }
    fp->spare[index - 1] = -1;
    return 0;
}

static int tap_attach(netbe *be, int on)
{
    struct tap_priv *p = NB_PRIV(be, struct tap_priv);
    if (p->detached == !on)
        return 0;
    int rc = tap_set_queue(p->fd, on);
    if (rc == 0)
        p->detached = !on;
    return rc;
}

static uint64_t tap_get_cap(netbe *be)
{
    return NB_PRIV(be, struct tap_priv)->caps;
}

/* The kernel's TUN_F_* flags for what we agreed to receive. */
static unsigned tap_offload_flags(uint64_t f)
{
    unsigned t = 0;
    if (f & NETBE_F_GUEST_CSUM) {
        t |= TUN_F_CSUM;
        if (f & NETBE_F_GUEST_TSO4) t |= TUN_F_TSO4;
        if (f & NETBE_F_GUEST_TSO6) t |= TUN_F_TSO6;
        if (f & NETBE_F_GUEST_ECN) t |= TUN_F_TSO_ECN;
        if (f & NETBE_F_GUEST_UFO) t |= TUN_F_UFO;
        if (f & NETBE_F_GUEST_USO4) t |= TUN_F_USO4;
        if (f & NETBE_F_GUEST_USO6) t |= TUN_F_USO6;
    }
    return t;
}

static int tap_set_cap(netbe *be, uint64_t features, unsigned fe_hdr_len)
{
    int fd = NB_PRIV(be, struct tap_priv)->fd;
    int hdr = fe_hdr_len ? (int)fe_hdr_len : 10;
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0 ||
        ioctl(fd, TUNSETOFFLOAD, tap_offload_flags(features)) < 0)
        return -errno;
    be->be_hdr_len = (unsigned)hdr;
    return 0;
}

static const struct nb_ops nb_tap = {
    .prefix = "tap", .keys = tap_keys, .priv_size = sizeof(struct tap_priv),
    .check = tap_check, .open = tap_open, .close = tap_close, .send = tap_send,
    .recv = tap_recv, .get_cap = tap_get_cap, .set_cap = tap_set_cap,
    .open_queue = tap_open_queue, .attach = tap_attach,
};

static int tap_needs_freebsd(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    return NB_ERR(ENOTSUP, "%s: the %s backend needs FreeBSD", be->name, be->ops->prefix);
}

static const struct nb_ops nb_vmnet = {
    .prefix = "vmnet", .open = tap_needs_freebsd, .close = tap_close,
};

static const struct nb_ops nb_ngd = {
    .prefix = "ngd", .open = tap_needs_freebsd, .close = tap_close,
};

#endif /* __linux__ */

#ifdef __FreeBSD__

#include <sys/event.h>
#include <net/if_tap.h>

/* ng_device has a kqueue filter only from FreeBSD 15 on. Without one,
** libevent's kqueue method cannot watch the device (and its loop fails on
** the first kevent), so say so now. poll(2) works on every ng_device. */
static int tap_check_kqueue(netbe *be, int fd, char *err, size_t errlen)
{
    if (strcmp(event_base_get_method(be->base), "kqueue") != 0)
        return 0;
    struct kevent kev;
    int kq = kqueue(), rc = 0;
    if (kq < 0)
        return NB_ERR(errno, "%s: kqueue: %s", be->name, strerror(errno));
    EV_SET(&kev, fd, EVFILT_READ, EV_ADD, 0, 0, NULL);
    if (kevent(kq, &kev, 1, NULL, 0, NULL) < 0)
        rc = NB_ERR(ENOTSUP, "%s: this ng_device cannot be watched with kqueue, which "
                    "the event_base uses (%s); ng_device has a kqueue filter from "
                    "FreeBSD 15 on: use FreeBSD 15 or later, or an event_base that "
                    "avoids the kqueue method", be->name, strerror(errno));
    close(kq);
    return rc;
}

/* Open /dev/NAME non-blocking from the start: ng_device has no ioctl
** handler before FreeBSD 15, so FIONBIO fails on it. A tap or vmnet
** (INTERFACE set) may be the clone device ("tap" makes a new tapN): its
** name comes from the descriptor, and so does link-up, as in bhyve; a
** tap whose link is down takes every write and drops it. */
static int tap_open_dev(netbe *be, int interface, char *err, size_t errlen)
{
    struct tap_priv *p = NB_PRIV(be, struct tap_priv);
    struct ifreq ifr;
    char path[64];
    int rc = 0;
    snprintf(path, sizeof path, "/dev/%s", be->name);
    p->fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (p->fd < 0)
        return NB_ERR(errno, "%s: cannot open %s: %s", be->name, path, strerror(errno));
    memset(&ifr, 0, sizeof ifr);
    if (interface && ioctl(p->fd, TAPGIFNAME, &ifr) < 0)
        rc = NB_ERR(errno, "%s: cannot learn the interface name: %s", be->name,
                    strerror(errno));
    if (rc == 0 && interface)
        rc = tap_take_name(be, ifr.ifr_name, err, errlen);
    if (rc == 0 && interface && ioctl(p->fd, VMIO_SIOCSIFFLAGS, IFF_UP) < 0)
        rc = NB_ERR(errno, "%s: cannot bring the link up: %s", be->name, strerror(errno));
    if (rc == 0 && !interface)
        rc = tap_check_kqueue(be, p->fd, err, errlen);
    if (rc == 0)
        rc = nb_watch_fd(be, p->fd);
    if (rc < 0)
        close(p->fd);
    return rc;
}

/* Network namespaces are Linux's; a FreeBSD tap moves into a vnet jail
** with ifconfig's vnet instead. FreeBSD's tap has one queue. */
static int tap_check(netbe_config *cfg, char *err, size_t errlen)
{
    const char *q = netbe_config_get(cfg, "queues");
    const char *key = netbe_config_get(cfg, "netns") ? "netns" :
                      netbe_config_get(cfg, "userns") ? "userns" : NULL;
    if (q && strcmp(q, "1") != 0)
        return NB_ERR(ENOTSUP, "tap: queues='%s': FreeBSD's tap has one queue "
                      "(expected queues=1)", q);
    if (key)
        return NB_ERR(ENOTSUP, "tap: %s= names a Linux namespace, which FreeBSD does not "
                      "have (move the tap into a vnet jail with ifconfig vnet)", key);
    return 0;
}

static int tap_open(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    return tap_open_dev(be, 1, err, errlen);
}

static int tap_ngd_open(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    return tap_open_dev(be, 0, err, errlen);
}

static const struct nb_ops nb_tap = {
    .prefix = "tap", .keys = tap_keys, .priv_size = sizeof(struct tap_priv),
    .check = tap_check, .open = tap_open, .close = tap_close, .send = tap_send,
    .recv = tap_recv,
};

static const struct nb_ops nb_vmnet = {
    .prefix = "vmnet", .priv_size = sizeof(struct tap_priv),
    .open = tap_open, .close = tap_close, .send = tap_send, .recv = tap_recv,
};

static const struct nb_ops nb_ngd = {
    .prefix = "ngd", .priv_size = sizeof(struct tap_priv),
    .open = tap_ngd_open, .close = tap_close, .send = tap_send, .recv = tap_recv,
};

#endif /* __FreeBSD__ */

/* }================================================================ */

/* {===================================================================
** 11. Backend stream: length-prefixed frames over a stream socket
** ====================================================================
** QEMU's -netdev stream and passt put a 4-byte big-endian length before
** each frame, with no virtio header. We are either the listener (one peer
** at a time, later peers wait in the backlog) or the client, which may
** reconnect every "reconnect" seconds after the peer goes away.
** The client never waits in connect(): the socket is non-blocking and the
** event loop hears when the handshake ends. A connect that has not
** succeeded after STREAM_CONNECT_TIMEOUT seconds gives up: the client
** tries again after "reconnect" seconds, or without it goes down.
*/

static const char *const stream_keys[] = {"listen", "connect", "reconnect", NULL};

#define STREAM_RXBUF (4 * (NETBE_MAX_FRAME + 4))
/* Sending, records wait in a queue while a netbe callback runs on the
** loop's thread (nb_may_batch) and go out in one write at the end of its
** turn, or before a record that would take the queue past STREAM_TXBATCH
** bytes. The queue holds a batch and one more record of any length. */
#define STREAM_TXBATCH (64 * 1024)
#define STREAM_TXQ (STREAM_TXBATCH + NETBE_MAX_FRAME + 4)
/* Loopback and UNIX peers answer at once; a host that has answered
** neither a SYN nor its resends 1, 3 and 7 s later is not there. */
#define STREAM_CONNECT_TIMEOUT 10
/* A UNIX listener whose backlog is full refuses at once (EAGAIN): asked
** again this often, until the timeout. */
#define STREAM_BUSY_RETRY_US 100000

struct stream_priv {
    int listen_fd, fd;
    int conn_fd;                 /* a connect in progress, or -1 */
    uint64_t conn_deadline;      /* when it gives up, ns */
    struct nb_addr addr;
    struct netbe_unix_id bound;  /* the listener's UNIX socket, once bound */
    struct event *accept_ev, *retry_ev, *conn_ev;
    unsigned reconnect;          /* seconds, 0 = never */
    pthread_mutex_t tx_lock;     /* serializes senders and the queue */
    uint8_t *txq;                /* records not yet written, whole or in part */
    size_t tx_rec;               /* where the first record not wholly written starts */
    size_t tx_off, tx_len;       /* bytes written up to tx_off, queued up to tx_len */
    struct event *flush_ev;      /* the end of the loop turn: write the queue */
    int flush_armed;             /* flush_ev is active */
    uint8_t *rxbuf;
    size_t rx_head, rx_tail;
};

static int stream_check(netbe_config *cfg, char *err, size_t errlen)
{
    const char *l = netbe_config_get(cfg, "listen"), *c = netbe_config_get(cfg, "connect");
    if (!l == !c)
        return NB_ERR(EINVAL, "stream: give exactly one of listen=ADDR or connect=ADDR "
                      "(ADDR is unix:/path, HOST:PORT or [IPV6]:PORT)");
    const char *r = netbe_config_get(cfg, "reconnect");
    unsigned long secs;
    if (r && (l || nb_parse_uint(r, 0, 86400, &secs) < 0))
        return NB_ERR(EINVAL, "stream: reconnect='%s': expected seconds from 0 to 86400, "
                      "with connect= only", r);
    int rc = nb_check_addr_key(cfg, "listen", 1, err, errlen);
    return rc < 0 ? rc : nb_check_addr_key(cfg, "connect", 0, err, errlen);
}

static void stream_connect_later(netbe *be);

/* Records from OFF to END of the queue. */
static uint64_t stream_txq_records(const struct stream_priv *p, size_t off, size_t end)
{
    uint64_t n = 0;
    for (uint32_t be32; off + 4 <= end; n++) {
        memcpy(&be32, p->txq + off, 4);
        off += 4 + ntohl(be32);
    }
    return n;
}

/* Empty the queue; the records not wholly written count as dropped.
** Called with tx_lock held. */
static void stream_txq_drop(netbe *be, struct stream_priv *p)
{
    nb_count(&be->st.tx_drops, stream_txq_records(p, p->tx_rec, p->tx_len));
    p->tx_rec = p->tx_off = p->tx_len = 0;
}

/* The peer is gone: drop the connection and wait for the next. */
static void stream_drop_peer(netbe *be)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    pthread_mutex_lock(&p->tx_lock);
    nb_watch_fd(be, -1);
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    stream_txq_drop(be, p);
    p->rx_head = p->rx_tail = 0;
    pthread_mutex_unlock(&p->tx_lock);
    if (p->accept_ev)
        event_add(p->accept_ev, NULL);
    else
        stream_connect_later(be);
}

/* Move tx_rec past the records written whole. */
static void stream_txq_written(struct stream_priv *p)
{
    uint32_t be32;
    while (p->tx_rec + 4 <= p->tx_off) {
        memcpy(&be32, p->txq + p->tx_rec, 4);
        size_t end = p->tx_rec + 4 + ntohl(be32);
        if (end > p->tx_off)
            break;
        p->tx_rec = end;
    }
}

/* Room for NEED more bytes at the queue's end, once the records not
** written whole move to its start. */
static int stream_txq_room(struct stream_priv *p, size_t need)
{
    if (p->tx_len + need <= STREAM_TXQ)
        return 1;
    stream_txq_written(p);
    memmove(p->txq, p->txq + p->tx_rec, p->tx_len - p->tx_rec);
    p->tx_off -= p->tx_rec;
    p->tx_len -= p->tx_rec;
    p->tx_rec = 0;
    return p->tx_len + need <= STREAM_TXQ;
}

/* Queue the record of the LEN-byte frame in IOV; there is room. */
static void stream_txq_add(struct stream_priv *p, const struct iovec *iov, int iovcnt,
                           size_t len)
{
    uint32_t be32 = htonl((uint32_t)len);
    memcpy(p->txq + p->tx_len, &be32, 4);
    nb_iov_to_buf(iov, iovcnt, 0, p->txq + p->tx_len + 4, len);
    p->tx_len += len + 4;
}

/* Write the queue: one send() for all its records. Returns 0 when all
** went, -EAGAIN when the socket is full (the rest waits, cut anywhere:
** the bytes stay in order, so records stay whole in the stream), or
** -ENOTCONN when the peer is gone (what waited is dropped and counted).
** Called with tx_lock held. */
static int stream_txq_write(netbe *be, struct stream_priv *p)
{
    while (p->tx_off < p->tx_len) {
        ssize_t n = send(p->fd, p->txq + p->tx_off, p->tx_len - p->tx_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EWOULDBLOCK)
            return -EAGAIN;
        if (n < 0) {
            stream_txq_drop(be, p);
            return -ENOTCONN;
        }
        p->tx_off += (size_t)n;
    }
    p->tx_rec = p->tx_off = p->tx_len = 0;
    return 0;
}

/* The ops' flush, at the end of a loop turn and on TX readiness. */
static int stream_flush(netbe *be)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    pthread_mutex_lock(&p->tx_lock);
    p->flush_armed = 0;
    int rc = p->fd >= 0 ? stream_txq_write(be, p) : 0;
    pthread_mutex_unlock(&p->tx_lock);
    return rc == -EAGAIN ? rc : 0;
}

static void stream_on_flush(evutil_socket_t fd, short what, void *arg)
{
    if (stream_flush(arg) == -EAGAIN)
        nb_want_tx(arg);
}

static void stream_use_fd(netbe *be, int fd)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    int one = 1;
    if (p->addr.family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    nb_sock_grow(fd, 1 << 20);
    pthread_mutex_lock(&p->tx_lock);
    p->fd = fd;
    nb_watch_fd(be, fd);
    pthread_mutex_unlock(&p->tx_lock);
    nb_fire(be, NETBE_EV_TX);
}

static void stream_on_accept(evutil_socket_t lfd, short what, void *arg)
{
    netbe *be = arg;
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    event_del(p->accept_ev);
    stream_use_fd(be, fd);
}

static void stream_on_connect(evutil_socket_t fd, short what, void *arg);

/* Wait, on the event loop, for the connect on conn_fd to end (its socket
** turns writable) or, BUSY, for the moment to ask a full UNIX listener
** again; never past the deadline. Returns 0, or -ETIMEDOUT. */
static int stream_connect_wait(netbe *be, int busy)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    uint64_t now = nb_now_ns();
    if (now >= p->conn_deadline)
        return -ETIMEDOUT;
    uint64_t us = (p->conn_deadline - now + 999) / 1000;
    if (busy && us > STREAM_BUSY_RETRY_US)
        us = STREAM_BUSY_RETRY_US;
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    event_del(p->conn_ev);
    event_assign(p->conn_ev, be->base, busy ? -1 : p->conn_fd, busy ? 0 : EV_WRITE,
                 stream_on_connect, be);
    event_add(p->conn_ev, &tv);
    return 0;
}

/* The connect on conn_fd answered E (an errno value, 0 for success).
** Returns 0 once connected or while waiting, else -errno with the
** attempt over. A loopback peer has answered before connect() returns,
** so a handshake in progress is looked at once before waiting. */
static int stream_connect_result(netbe *be, int e)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    struct pollfd pfd = {p->conn_fd, POLLOUT, 0};
    socklen_t len = sizeof e;
    if (e == EINPROGRESS && poll(&pfd, 1, 0) == 1 &&
        getsockopt(p->conn_fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
        e = errno;
    if (e == EINPROGRESS || e == EAGAIN) {
        int rc = stream_connect_wait(be, e == EAGAIN);
        if (rc == 0)
            return 0;
        e = -rc;
    }
    int fd = p->conn_fd;
    p->conn_fd = -1;
    event_del(p->conn_ev);
    if (e) {
        close(fd);
        return -e;
    }
    stream_use_fd(be, fd);
    return 0;
}

/* Start connecting. Returns 0 when connected or on the way, else -errno. */
static int stream_connect(netbe *be, char *err, size_t errlen)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    p->conn_fd = socket(p->addr.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->conn_fd < 0)
        return NB_ERR(errno, "stream: socket: %s", strerror(errno));
    p->conn_deadline = nb_now_ns() + STREAM_CONNECT_TIMEOUT * 1000000000ull;
    int e = connect(p->conn_fd, (struct sockaddr *)&p->addr.sa, p->addr.len) < 0 ? errno : 0;
    int rc = stream_connect_result(be, e);
    return rc < 0 ? NB_ERR(-rc, "stream: cannot connect to %s: %s", p->addr.text,
                           strerror(-rc)) : 0;
}

/* The handshake ended (FD writable), the deadline passed, or (FD -1) it
** is time to ask a full UNIX listener again. A client that failed retries
** after reconnect= seconds, or without it goes down with the reason. */
static void stream_on_connect(evutil_socket_t fd, short what, void *arg)
{
    netbe *be = arg;
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    int e = 0;
    socklen_t len = sizeof e;
    if (what & EV_WRITE) {
        if (getsockopt(p->conn_fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
            e = errno;
    } else if (fd >= 0 || nb_now_ns() >= p->conn_deadline) {
        e = ETIMEDOUT;
    } else if (connect(p->conn_fd, (struct sockaddr *)&p->addr.sa, p->addr.len) < 0) {
        e = errno;
    }
    int rc = stream_connect_result(be, e);
    if (rc < 0 && p->reconnect)
        stream_connect_later(be);
    else if (rc < 0)
        nb_go_down(be, rc);
}

static void stream_on_retry(evutil_socket_t fd, short what, void *arg)
{
    if (stream_connect(arg, NULL, 0) < 0)
        stream_connect_later(arg);
}

static void stream_connect_later(netbe *be)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    struct timeval tv = {p->reconnect, 0};
    if (p->reconnect)
        evtimer_add(p->retry_ev, &tv);
}

static int stream_listen(netbe *be, char *err, size_t errlen)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    const char *path = ((struct sockaddr_un *)&p->addr.sa)->sun_path;
    char why[NETBE_ERRMAX];
    int rc = p->addr.family == AF_UNIX ? netbe_unix_clear(path, why, sizeof why) : 0;
    if (rc < 0)
        return NB_ERR(-rc, "stream: cannot listen on %s: %s", p->addr.text, why);
    p->listen_fd = nb_socket_for(&p->addr, SOCK_STREAM);
    if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&p->addr.sa,
                                 p->addr.len) < 0)
        return NB_ERR(errno, "stream: cannot listen on %s: %s", p->addr.text,
                      strerror(errno));
    if (p->addr.family == AF_UNIX)
        netbe_unix_mark(path, &p->bound);
    if (listen(p->listen_fd, 4) < 0)
        return NB_ERR(errno, "stream: cannot listen on %s: %s", p->addr.text,
                      strerror(errno));
    p->accept_ev = event_new(be->base, p->listen_fd, EV_READ | EV_PERSIST,
                             stream_on_accept, be);
    if (!p->accept_ev)
        return NB_ERR(ENOMEM, "out of memory");
    event_add(p->accept_ev, NULL);
    return 0;
}

static void stream_close(netbe *be)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    if (p->accept_ev)
        event_free(p->accept_ev);
    if (p->retry_ev)
        event_free(p->retry_ev);
    if (p->conn_ev)
        event_free(p->conn_ev);
    if (p->conn_fd >= 0)
        close(p->conn_fd);
    if (p->fd >= 0)
        close(p->fd);
    if (p->listen_fd >= 0) {
        close(p->listen_fd);
        if (p->addr.family == AF_UNIX)
            netbe_unix_release(((struct sockaddr_un *)&p->addr.sa)->sun_path, &p->bound);
    }
    if (p->flush_ev)
        event_free(p->flush_ev);
    stream_txq_drop(be, p);
    pthread_mutex_destroy(&p->tx_lock);
    free(p->txq);
    free(p->rxbuf);
}

static int stream_open(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    const char *l = netbe_config_get(cfg, "listen"), *c = netbe_config_get(cfg, "connect");
    const char *r = netbe_config_get(cfg, "reconnect");
    unsigned long secs = 0;
    p->fd = p->listen_fd = p->conn_fd = -1;
    pthread_mutex_init(&p->tx_lock, NULL);
    if (r)
        nb_parse_uint(r, 0, 86400, &secs);
    p->reconnect = (unsigned)secs;
    p->txq = malloc(STREAM_TXQ);
    p->rxbuf = malloc(STREAM_RXBUF);
    p->retry_ev = evtimer_new(be->base, stream_on_retry, be);
    p->conn_ev = evtimer_new(be->base, stream_on_connect, be);
    p->flush_ev = event_new(be->base, -1, 0, stream_on_flush, be);
    int rc = !p->txq || !p->rxbuf || !p->retry_ev || !p->conn_ev || !p->flush_ev ?
             NB_ERR(ENOMEM, "out of memory") :
             nb_parse_addr(l ? "listen" : "connect", l ? l : c, l != NULL, &p->addr,
                           err, errlen);
    if (rc == 0)
        rc = l ? stream_listen(be, err, errlen) : stream_connect(be, err, errlen);
    if (rc == -ECONNREFUSED || rc == -ENOENT) {
        /* A client with reconnect= waits for its server to appear. */
        if (p->reconnect) {
            stream_connect_later(be);
            rc = 0;
        }
    }
    if (rc < 0)
        stream_close(be);
    return rc;
}

/* Send the record of the LEN-byte frame in IOV at once, without a copy;
** a short write queues the rest for TX readiness. Queue empty. */
static ssize_t stream_send_now(netbe *be, struct stream_priv *p, const struct iovec *iov,
                               int iovcnt, size_t len)
{
    uint32_t be32 = htonl((uint32_t)len);
    struct iovec v[iovcnt + 1];
    v[0].iov_base = &be32;
    v[0].iov_len = 4;
    memcpy(v + 1, iov, iovcnt * sizeof *iov);
    struct msghdr m = {.msg_iov = v, .msg_iovlen = iovcnt + 1};
    ssize_t n = sendmsg(p->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EWOULDBLOCK)
            return -EAGAIN;
        return errno == EPIPE || errno == ECONNRESET ? -ENOTCONN : -errno;
    }
    if ((size_t)n < len + 4) {
        stream_txq_add(p, iov, iovcnt, len);
        p->tx_off = (size_t)n;
        nb_want_tx(be);
    }
    return (ssize_t)len;
}

/* Queue the frame's record when batching (nb_may_batch), writing the
** queue first when the record would take it past STREAM_TXBATCH; else
** write what waits, then the frame. A frame that finds no room is not
** taken (-EAGAIN). Called with tx_lock held. */
static ssize_t stream_send_locked(netbe *be, struct stream_priv *p,
                                  const struct iovec *iov, int iovcnt)
{
    if (p->fd < 0)
        return -ENOTCONN;
    size_t len = nb_iov_len(iov, iovcnt);
    if (len > NETBE_MAX_FRAME)
        return -EMSGSIZE;
    int batch = nb_may_batch(be);
    if (p->tx_off < p->tx_len &&
        (!batch || p->tx_len - p->tx_off + len + 4 > STREAM_TXBATCH) &&
        stream_txq_write(be, p) == -ENOTCONN)
        return -ENOTCONN;
    if (!batch && p->tx_off == p->tx_len)
        return stream_send_now(be, p, iov, iovcnt, len);
    if (!stream_txq_room(p, len + 4))
        return -EAGAIN;
    stream_txq_add(p, iov, iovcnt, len);
    nb_queued(be, batch, p->flush_ev, &p->flush_armed);
    return (ssize_t)len;
}

static ssize_t stream_send(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    struct iovec v[iovcnt];
    int n = nb_sock_skip_hdr(be, iov, iovcnt, v);
    pthread_mutex_lock(&p->tx_lock);
    ssize_t r = stream_send_locked(be, p, v, n);
    pthread_mutex_unlock(&p->tx_lock);
    return r < 0 ? r : r + (ssize_t)be->be_hdr_len;
}

/* Pull more bytes from the socket. Returns >0 bytes, 0 nothing now, <0 gone. */
static ssize_t stream_fill(struct stream_priv *p)
{
    if (p->rx_head > 0 && p->rx_head == p->rx_tail)
        p->rx_head = p->rx_tail = 0;
    if (p->rx_tail > STREAM_RXBUF / 2) {
        memmove(p->rxbuf, p->rxbuf + p->rx_head, p->rx_tail - p->rx_head);
        p->rx_tail -= p->rx_head;
        p->rx_head = 0;
    }
    ssize_t n = recv(p->fd, p->rxbuf + p->rx_tail, STREAM_RXBUF - p->rx_tail, MSG_DONTWAIT);
    if (n > 0)
        p->rx_tail += (size_t)n;
    else if (n < 0 && (errno == EWOULDBLOCK || errno == EINTR))
        n = 0;
    else
        n = -1;
    return n;
}

/* The record at OFF of the receive buffer, when it is all there and
** holds a frame: the frame, its length in *LEN. Else NULL. */
static const uint8_t *stream_rx_at(const struct stream_priv *p, size_t off, size_t *len)
{
    uint32_t be32;
    if (p->rx_tail - off < 4)
        return NULL;
    memcpy(&be32, p->rxbuf + off, 4);
    *len = ntohl(be32);
    if (*len == 0 || *len > NETBE_MAX_FRAME || p->rx_tail - off - 4 < *len)
        return NULL;
    return p->rxbuf + off + 4;
}

/* Hand out the frame of the record at the buffer's head (LEN bytes, all
** there), joined with the records behind it that continue it. */
static ssize_t stream_rx_frame(netbe *be, struct stream_priv *p, size_t len,
                               const struct iovec *iov, int iovcnt)
{
    const uint8_t *f = p->rxbuf + p->rx_head + 4, *g;
    size_t off = p->rx_head + 4 + len, glen;
    struct nb_join_out o;
    if (nb_sock_join_begin(be, &o, f, len, iov, iovcnt)) {
        while ((g = stream_rx_at(p, off, &glen)) && nb_join_more(&o, g, glen))
            off += 4 + glen;
        if (o.j.segs > 1) {
            p->rx_head = off;
            return (ssize_t)nb_join_end(&o);
        }
    }
    p->rx_head += 4 + len;
    return nb_sock_rx_plain(be, f, len, iov, iovcnt);
}

static ssize_t stream_recv(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct stream_priv *p = NB_PRIV(be, struct stream_priv);
    for (;;) {
        if (p->fd < 0)
            return 0;
        size_t have = p->rx_tail - p->rx_head;
        if (have >= 4) {
            uint32_t be32;
            memcpy(&be32, p->rxbuf + p->rx_head, 4);
            size_t len = ntohl(be32);
            if (len > NETBE_MAX_FRAME) {
                /* A length no frame can have: the stream is out of step. */
                nb_count(&be->st.rx_errors, 1);
                stream_drop_peer(be);
                return 0;
            }
            if (len == 0) {
                /* An empty record carries no frame: skip it, so the frames
                ** behind it need not wait for the peer's next write. */
                nb_count(&be->st.rx_errors, 1);
                p->rx_head += 4;
                continue;
            }
            if (have >= len + 4)
                return stream_rx_frame(be, p, len, iov, iovcnt);
        }
        ssize_t n = stream_fill(p);
        if (n == 0)
            return 0;
        if (n < 0) {
            stream_drop_peer(be);
            /* A client that will not reconnect has nothing left to do. */
            return p->accept_ev || p->reconnect ? 0 : -ENOTCONN;
        }
    }
}

static const struct nb_ops nb_stream = {
    .prefix = "stream", .keys = stream_keys, .priv_size = sizeof(struct stream_priv),
    .check = stream_check, .open = stream_open, .close = stream_close,
    .send = stream_send, .flush = stream_flush, .recv = stream_recv,
    .get_cap = nb_sock_get_cap, .set_cap = nb_sock_set_cap, .mtu_drop = 1, .rx_joins = 1,
};

/* }================================================================ */

/* {===================================================================
** 12. Backend dgram: one frame per datagram
** ====================================================================
** Compatible with QEMU's -netdev dgram: UDP or UNIX datagram sockets, no
** length prefix and no virtio header. With remote= the socket is connected,
** so the kernel drops datagrams from anyone else. A UNIX remote not bound
** yet, or gone, is connected again when a send finds it there.
*/

static const char *const dgram_keys[] = {"local", "remote", NULL};

/* Datagrams move DGRAM_BATCH at a time: sendmmsg writes the ones queued
** while a netbe callback runs on the loop's thread (nb_may_batch) at the
** end of its turn, or once DGRAM_BATCH of them or DGRAM_TXBATCH bytes
** wait; recvmmsg reads up to DGRAM_BATCH into slots of the largest
** datagram a frame fits in, handed out one per receive. */
#define DGRAM_BATCH 32
#define DGRAM_TXBATCH (64 * 1024)
#define DGRAM_TXQ (DGRAM_TXBATCH + NETBE_MAX_FRAME)
#define DGRAM_SLOT (NETBE_MAX_FRAME + 1)

struct dgram_priv {
    int fd;                      /* first: nb_sock_send reads it */
    struct netbe_unix_id bound;  /* a UNIX local= socket, once bound */
    int connected;               /* to remote; a UNIX peer may bind after us */
    struct nb_addr local, remote;
    pthread_mutex_t tx_lock;     /* serializes senders and the queue */
    uint8_t *txq;                /* queued datagrams, back to back */
    size_t tx_bytes;
    int tx_first, tx_n;          /* datagrams written, queued */
    struct iovec tx_iov[DGRAM_BATCH];
    struct mmsghdr tx_msg[DGRAM_BATCH];
    struct event *flush_ev;      /* the end of the loop turn: write the queue */
    int flush_armed;
    uint8_t *rx_slots;           /* DGRAM_BATCH slots of DGRAM_SLOT bytes */
    int rx_next, rx_n;           /* the next datagram to hand out, read */
    struct iovec rx_iov[DGRAM_BATCH];
    struct mmsghdr rx_msg[DGRAM_BATCH];
};

static int dgram_check(netbe_config *cfg, char *err, size_t errlen)
{
    const char *l = netbe_config_get(cfg, "local"), *r = netbe_config_get(cfg, "remote");
    if (!l || !r)
        return NB_ERR(EINVAL, "dgram: needs local=ADDR and remote=ADDR "
                      "(unix:/path or HOST:PORT)");
    struct nb_addr la, ra;
    int rc = nb_parse_addr("local", l, 1, &la, err, errlen);
    if (rc == 0)
        rc = nb_parse_addr("remote", r, 0, &ra, err, errlen);
    if (rc == 0 && la.family != ra.family)
        rc = NB_ERR(EINVAL, "dgram: local '%s' and remote '%s' are of different families",
                    l, r);
    if (rc == 0) {
        nb_addr_use(cfg, "local", &la);
        nb_addr_use(cfg, "remote", &ra);
    }
    return rc;
}

#ifdef __FreeBSD__
#include <sys/sysctl.h>
#endif

/* The largest UNIX datagram this system carries whatever the socket
** buffers, or 0 when it has no such limit (Linux). FreeBSD's is the sysctl
** net.local.dgram.maxdgram, 8 KiB by default: past it sendmsg fails with
** EMSGSIZE, so every larger frame would be lost. */
static size_t dgram_unix_max(void)
{
#ifdef __FreeBSD__
    unsigned long max;
    size_t len = sizeof max;
    if (sysctlbyname("net.local.dgram.maxdgram", &max, &len, NULL, 0) == 0)
        return max;
#endif
    return 0;
}

/* Refuse an MTU whose frames (Ethernet header and a VLAN tag on top) do not
** fit in a datagram of LIMIT bytes (0: no limit). */
static int dgram_check_size(unsigned mtu, size_t limit, char *err, size_t errlen)
{
    size_t frame = (size_t)mtu + 14 + 4;
    if (limit == 0 || frame <= limit)
        return 0;
    return NB_ERR(EINVAL, "dgram: mtu %u needs UNIX datagrams of %zu bytes, but this "
                  "system carries at most %zu (net.local.dgram.maxdgram): use mtu=%zu "
                  "or less, or raise the sysctl", mtu, frame, limit,
                  limit > 18 ? limit - 18 : 0);
}

/* Connect to the remote address; 0 or -errno. */
static int dgram_connect(struct dgram_priv *p)
{
    int ok = connect(p->fd, (struct sockaddr *)&p->remote.sa, p->remote.len) == 0;
    int e = errno;
    __atomic_store_n(&p->connected, ok, __ATOMIC_RELEASE);
    return ok ? 0 : -e;
}

/* What is still queued counts as dropped (netbe_close flushed first). */
static void dgram_close(netbe *be)
{
    struct dgram_priv *p = NB_PRIV(be, struct dgram_priv);
    close(p->fd);
    if (p->local.family == AF_UNIX)
        netbe_unix_release(((struct sockaddr_un *)&p->local.sa)->sun_path, &p->bound);
    nb_count(&be->st.tx_drops, (uint64_t)(p->tx_n - p->tx_first));
    if (p->flush_ev)
        event_free(p->flush_ev);
    pthread_mutex_destroy(&p->tx_lock);
    free(p->txq);
    free(p->rx_slots);
}

/* Whether a send failing with E drops the datagram as a single send's
** drop would be counted: a peer that is not there, or refused for size. */
static int dgram_refused(int e)
{
    return e == ENOTCONN || e == ECONNREFUSED || e == EDESTADDRREQ || e == EMSGSIZE ||
           e == ENOENT || e == ENOBUFS;
}

/* Write the queue with sendmmsg. Returns 0 when all went, or -EAGAIN
** when the socket is full (the rest waits). A datagram the peer is not
** there for, or too large for the socket, is dropped and counted, as a
** single send would have been; a UNIX peer that went is connected again
** once first. Called with tx_lock held. */
static int dgram_txq_write(netbe *be, struct dgram_priv *p)
{
    int reconnected = 0;
    while (p->tx_first < p->tx_n) {
        int n = sendmmsg(p->fd, p->tx_msg + p->tx_first, (unsigned)(p->tx_n - p->tx_first),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p->tx_first += n;
            continue;
        }
        int e = n < 0 ? errno : EIO;
        if (e == EINTR)
            continue;
        if (e == EWOULDBLOCK)
            return -EAGAIN;
        if (!reconnected && p->remote.family == AF_UNIX && dgram_refused(e) &&
            dgram_connect(p) == 0) {
            reconnected = 1;
            continue;
        }
        nb_count(dgram_refused(e) ? &be->st.tx_drops : &be->st.tx_errors, 1);
        p->tx_first++;
    }
    p->tx_first = p->tx_n = 0;
    p->tx_bytes = 0;
    return 0;
}

/* Queue the LEN-byte frame in IOV; there is room. */
static void dgram_txq_add(struct dgram_priv *p, const struct iovec *iov, int iovcnt,
                          size_t len)
{
    uint8_t *d = p->txq + p->tx_bytes;
    nb_iov_to_buf(iov, iovcnt, 0, d, len);
    p->tx_iov[p->tx_n] = (struct iovec){d, len};
    memset(&p->tx_msg[p->tx_n], 0, sizeof p->tx_msg[0]);
    p->tx_msg[p->tx_n].msg_hdr.msg_iov = &p->tx_iov[p->tx_n];
    p->tx_msg[p->tx_n].msg_hdr.msg_iovlen = 1;
    p->tx_n++;
    p->tx_bytes += len;
}

/* The ops' flush, at the end of a loop turn and on TX readiness. */
static int dgram_flush(netbe *be)
{
    struct dgram_priv *p = NB_PRIV(be, struct dgram_priv);
    pthread_mutex_lock(&p->tx_lock);
    p->flush_armed = 0;
    int rc = dgram_txq_write(be, p);
    pthread_mutex_unlock(&p->tx_lock);
    return rc;
}

static void dgram_on_flush(evutil_socket_t fd, short what, void *arg)
{
    if (dgram_flush(arg) == -EAGAIN)
        nb_want_tx(arg);
}

static int dgram_open(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    struct dgram_priv *p = NB_PRIV(be, struct dgram_priv);
    struct nb_addr *ra = &p->remote;
    nb_parse_addr("local", netbe_config_get(cfg, "local"), 1, &p->local, NULL, 0);
    nb_parse_addr("remote", netbe_config_get(cfg, "remote"), 0, ra, NULL, 0);
    int rc = p->local.family == AF_UNIX ?
        dgram_check_size(be->mtu, dgram_unix_max(), err, errlen) : 0;
    if (rc < 0)
        return rc;
    const char *path = ((struct sockaddr_un *)&p->local.sa)->sun_path;
    char why[NETBE_ERRMAX];
    rc = p->local.family == AF_UNIX ? netbe_unix_clear(path, why, sizeof why) : 0;
    if (rc < 0)
        return NB_ERR(-rc, "dgram: cannot bind local=%s: %s", p->local.text, why);
    p->fd = nb_socket_for(&p->local, SOCK_DGRAM);
    if (p->fd < 0)
        return NB_ERR(errno, "dgram: socket: %s", strerror(errno));
    if (bind(p->fd, (struct sockaddr *)&p->local.sa, p->local.len) < 0) {
        int e = errno;
        close(p->fd);
        return NB_ERR(e, "dgram: cannot bind local=%s: %s", p->local.text, strerror(e));
    }
    if (p->local.family == AF_UNIX)
        netbe_unix_mark(path, &p->bound);
    pthread_mutex_init(&p->tx_lock, NULL);
    p->txq = malloc(DGRAM_TXQ);
    p->rx_slots = malloc((size_t)DGRAM_BATCH * DGRAM_SLOT);
    p->flush_ev = event_new(be->base, -1, 0, dgram_on_flush, be);
    if (!p->txq || !p->rx_slots || !p->flush_ev) {
        dgram_close(be);
        return NB_ERR(ENOMEM, "out of memory");
    }
    for (int i = 0; i < DGRAM_BATCH; i++) {
        p->rx_iov[i] = (struct iovec){p->rx_slots + (size_t)i * DGRAM_SLOT, DGRAM_SLOT};
        p->rx_msg[i].msg_hdr.msg_iov = &p->rx_iov[i];
        p->rx_msg[i].msg_hdr.msg_iovlen = 1;
    }
    /* A UNIX peer may bind after us; dgram_send connects then. */
    rc = dgram_connect(p);
    if (rc < 0 && ra->family != AF_UNIX) {
        dgram_close(be);
        return NB_ERR(-rc, "dgram: cannot use remote=%s: %s", ra->text, strerror(-rc));
    }
    nb_sock_grow(p->fd, 4 << 20);
    return nb_watch_fd(be, p->fd);
}

/* One datagram at once. A UNIX peer absent at open, or gone and maybe
** back (a new socket at its path), is connected when a send finds it
** gone; frames sent while nobody is there are dropped (-ENOTCONN). */
static ssize_t dgram_send_now(netbe *be, struct dgram_priv *p, const struct iovec *iov,
                              int iovcnt)
{
    if (!__atomic_load_n(&p->connected, __ATOMIC_ACQUIRE) && dgram_connect(p) < 0)
        return -ENOTCONN;
    ssize_t n = nb_sock_send(be, iov, iovcnt);
    if (n == -ENOTCONN && p->remote.family == AF_UNIX && dgram_connect(p) == 0)
        n = nb_sock_send(be, iov, iovcnt);
    return n;
}

/* Queue the frame when batching (nb_may_batch), writing the queue first
** when it is full; else write what waits, then the frame. A frame that
** finds no room is not taken (-EAGAIN). */
static ssize_t dgram_send_frame(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct dgram_priv *p = NB_PRIV(be, struct dgram_priv);
    size_t len = nb_iov_len(iov, iovcnt);
    int batch = nb_may_batch(be);
    ssize_t rc = (ssize_t)len;
    pthread_mutex_lock(&p->tx_lock);
    if (p->tx_first < p->tx_n &&
        (!batch || p->tx_n == DGRAM_BATCH || p->tx_bytes + len > DGRAM_TXBATCH))
        dgram_txq_write(be, p);
    if (!batch && p->tx_first == p->tx_n)
        rc = dgram_send_now(be, p, iov, iovcnt);
    else if (p->tx_n == DGRAM_BATCH || p->tx_bytes + len > DGRAM_TXQ)
        rc = -EAGAIN;
    else {
        dgram_txq_add(p, iov, iovcnt, len);
        nb_queued(be, batch, p->flush_ev, &p->flush_armed);
    }
    pthread_mutex_unlock(&p->tx_lock);
    return rc;
}

static ssize_t dgram_send(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct iovec v[iovcnt];
    ssize_t r = dgram_send_frame(be, v, nb_sock_skip_hdr(be, iov, iovcnt, v));
    return r < 0 ? r : r + (ssize_t)be->be_hdr_len;
}

/* Hand out the next datagram read, reading up to DGRAM_BATCH with one
** recvmmsg when none is left, joined with the datagrams of the batch
** behind it that continue it. Returns its real length (MSG_TRUNC: a
** longer one than a slot is dropped by the core as oversize). */
static ssize_t dgram_recv(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct dgram_priv *p = NB_PRIV(be, struct dgram_priv);
    while (p->rx_next == p->rx_n) {
        int n = recvmmsg(p->fd, p->rx_msg, DGRAM_BATCH, MSG_DONTWAIT | MSG_TRUNC, NULL);
        if (n > 0) {
            p->rx_next = 0;
            p->rx_n = n;
        } else if (n == 0 || errno == EWOULDBLOCK) {
            return -EAGAIN;
        } else if (errno != ECONNREFUSED && errno != EINTR) {
            /* A connected UDP socket reports a past ICMP unreachable. */
            return -errno;
        }
    }
    int i = p->rx_next++;
    size_t len = p->rx_msg[i].msg_len;
    const uint8_t *f = p->rx_iov[i].iov_base;
    struct nb_join_out o;
    if (len > NETBE_MAX_FRAME)
        return (ssize_t)(len + be->be_hdr_len);     /* cut short: the core drops it */
    if (nb_sock_join_begin(be, &o, f, len, iov, iovcnt)) {
        while (p->rx_next < p->rx_n && p->rx_msg[p->rx_next].msg_len <= NETBE_MAX_FRAME &&
               nb_join_more(&o, p->rx_iov[p->rx_next].iov_base,
                            p->rx_msg[p->rx_next].msg_len))
            p->rx_next++;
        if (o.j.segs > 1)
            return (ssize_t)nb_join_end(&o);
    }
    return nb_sock_rx_plain(be, f, len, iov, iovcnt);
}

static int dgram_rx_pending(netbe *be)
{
    struct dgram_priv *p = NB_PRIV(be, struct dgram_priv);
    return p->rx_next < p->rx_n;
}

static const struct nb_ops nb_dgram = {
    .prefix = "dgram", .keys = dgram_keys, .priv_size = sizeof(struct dgram_priv),
    .check = dgram_check, .open = dgram_open, .close = dgram_close,
    .send = dgram_send, .flush = dgram_flush, .recv = dgram_recv,
    .rx_pending = dgram_rx_pending, .get_cap = nb_sock_get_cap, .set_cap = nb_sock_set_cap,
    .mtu_drop = 1, .rx_joins = 1,
};

/* }================================================================ */

/* {===================================================================
** 13. Backend netgraph: an ng_socket node hooked into a netgraph graph
** ====================================================================
** bhyve's netgraph backend. We make an ng_socket(4) node (named "socket"
** when given), connect its hook "hook" (vmlink by default) to hook
** "peerhook" of the node at "path" (an ng_bridge's link2, an ng_eiface's
** ether), and close the control socket. The data socket carries one frame
** per datagram and, while exactly one hook is connected, takes plain
** writes: from then on it is used exactly like a tap descriptor.
** The config is checked on every OS; only opening needs FreeBSD.
*/

static const char *const netgraph_keys[] = {"path", "peerhook", "hook", "socket", NULL};

/* Limits from <netgraph/ng_message.h> (NG_NODESIZ, NG_HOOKSIZ, NG_PATHSIZ,
** each counting the NUL), spelled out so configs check on every OS. */
#define NETGRAPH_NODESIZ 32
#define NETGRAPH_HOOKSIZ 32
#define NETGRAPH_PATHSIZ 512

/* A node or hook name by netgraph(4): 1 to SIZE-1 characters, no '.' or ':'. */
static int netgraph_name_ok(const char *s, size_t size)
{
    size_t n = strcspn(s, ".:");
    return n > 0 && s[n] == '\0' && n < size;
}

static int netgraph_check_hook(const netbe_config *cfg, const char *key,
                               char *err, size_t errlen)
{
    const char *v = netbe_config_get(cfg, key);
    if (!netgraph_name_ok(v, NETGRAPH_HOOKSIZ))
        return NB_ERR(EINVAL, "netgraph: %s '%s': expected a hook name of 1 to %d "
                      "characters without '.' or ':'", key, v, NETGRAPH_HOOKSIZ - 1);
    return 0;
}

/* PATH must be absolute: a connect message is sent from a fresh node that
** has no hooks, so a relative address could never resolve. */
static int netgraph_check_path(const char *path, char *err, size_t errlen)
{
    const char *colon = strchr(path, ':');
    size_t node = colon ? (size_t)(colon - path) : 0;
    if (strlen(path) >= NETGRAPH_PATHSIZ)
        return NB_ERR(EINVAL, "netgraph: path of %zu characters: expected at most %d",
                      strlen(path), NETGRAPH_PATHSIZ - 1);
    if (node == 0 || memchr(path, '.', node) || node >= NETGRAPH_NODESIZ)
        return NB_ERR(EINVAL, "netgraph: path '%s': expected an absolute netgraph "
                      "address: a node name or [ID] of 1 to %d characters, then ':', "
                      "then optional hook names joined by '.' (like bnet0:)",
                      path, NETGRAPH_NODESIZ - 1);
    return 0;
}

static int netgraph_check(netbe_config *cfg, char *err, size_t errlen)
{
    const char *path = netbe_config_get(cfg, "path");
    const char *sock = netbe_config_get(cfg, "socket");
    if (!path)
        return NB_ERR(EINVAL, "netgraph: path=ADDRESS is required (the node to "
                      "connect to, like path=bnet0:)");
    if (!netbe_config_get(cfg, "peerhook"))
        return NB_ERR(EINVAL, "netgraph: peerhook=HOOK is required (the hook of the "
                      "node at path, like peerhook=link2)");
    if (!netbe_config_get(cfg, "hook") && netbe_config_set(cfg, "hook", "vmlink") < 0)
        return NB_ERR(ENOMEM, "out of memory");
    int rc = netgraph_check_path(path, err, errlen);
    if (rc == 0)
        rc = netgraph_check_hook(cfg, "peerhook", err, errlen);
    if (rc == 0)
        rc = netgraph_check_hook(cfg, "hook", err, errlen);
    if (rc < 0)
        return rc;
    /* An empty name leaves the node unnamed, as NgMkSockNode() does; a name
    ** in the [ID] form would shadow node IDs and the kernel refuses it. */
    size_t n = sock ? strlen(sock) : 0;
    if (n && (!netgraph_name_ok(sock, NETGRAPH_NODESIZ) ||
              (sock[0] == '[' && sock[n - 1] == ']')))
        return NB_ERR(EINVAL, "netgraph: socket '%s': expected a node name of 1 to %d "
                      "characters without '.' or ':', not in the [ID] form",
                      sock, NETGRAPH_NODESIZ - 1);
    return 0;
}

#ifdef __FreeBSD__

#include <sys/param.h>
#include <sys/sysctl.h>
#include <netgraph.h>

_Static_assert(NETGRAPH_NODESIZ == NG_NODESIZ && NETGRAPH_HOOKSIZ == NG_HOOKSIZ &&
               NETGRAPH_PATHSIZ == NG_PATHSIZ, "netgraph limits differ from ng_message.h");

/* The ng_socket default buffers hold a handful of frames; bhyve asks for
** 4 MiB, or what kern.ipc.maxsockbuf allows once mbuf overhead is taken off. */
#define NETGRAPH_SOCKBUF (4 * 1024 * 1024)

static int netgraph_grow_buffers(int fd)
{
    unsigned long max;
    size_t len = sizeof max;
    if (sysctlbyname("kern.ipc.maxsockbuf", &max, &len, NULL, 0) < 0)
        return -errno;
    max = max / (MSIZE + MCLBYTES) * MCLBYTES;
    int size = max < NETGRAPH_SOCKBUF ? (int)max : NETGRAPH_SOCKBUF;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) < 0)
        return -errno;
    return 0;
}

static int netgraph_open(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    struct tap_priv *p = NB_PRIV(be, struct tap_priv);
    const char *path = netbe_config_get(cfg, "path");
    const char *sock = netbe_config_get(cfg, "socket");
    struct ngm_connect c;
    int ctrl, rc;

    memset(&c, 0, sizeof c);
    snprintf(c.path, sizeof c.path, "%s", path);
    snprintf(c.ourhook, sizeof c.ourhook, "%s", netbe_config_get(cfg, "hook"));
    snprintf(c.peerhook, sizeof c.peerhook, "%s", netbe_config_get(cfg, "peerhook"));
    if (NgMkSockNode(sock, &ctrl, &p->fd) < 0) {
        int e = errno;
        return NB_ERR(e, "netgraph: cannot make an ng_socket node %s: %s",
                      sock && *sock ? sock : "(unnamed)", strerror(e));
    }
    if (NgSendMsg(ctrl, ".", NGM_GENERIC_COOKIE, NGM_CONNECT, &c, sizeof c) < 0) {
        int e = errno;
        close(ctrl);
        close(p->fd);
        return NB_ERR(e, "netgraph: cannot connect hook '%s' to hook '%s' of node '%s': %s",
                      c.ourhook, c.peerhook, path, strerror(e));
    }
    /* The node lives on while its data socket is open. */
    close(ctrl);
    if ((rc = nb_set_nonblock(p->fd)) < 0 || (rc = netgraph_grow_buffers(p->fd)) < 0 ||
        (rc = nb_watch_fd(be, p->fd)) < 0) {
        close(p->fd);
        return NB_ERR(-rc, "netgraph: data socket of the hook to node '%s': %s", path,
                      strerror(-rc));
    }
    return 0;
}

static const struct nb_ops nb_netgraph = {
    .prefix = "netgraph", .keys = netgraph_keys, .priv_size = sizeof(struct tap_priv),
    .check = netgraph_check, .open = netgraph_open, .close = tap_close,
    .send = tap_send, .recv = tap_recv,
};

#else

static const struct nb_ops nb_netgraph = {
    .prefix = "netgraph", .keys = netgraph_keys, .check = netgraph_check,
    .open = tap_needs_freebsd, .close = tap_close,
};

#endif /* __FreeBSD__ */

/* }================================================================ */

/* {===================================================================
** 14. Backends netmap and vale: a netmap port, one TX and one RX ring
** ====================================================================
** bhyve's netmap and vale backends, one implementation under two
** prefixes: "netmap:IF" is a NIC in netmap mode, "valeSWITCH:PORT" a port
** of a VALE software switch. The name goes to nm_open() as bhyve passes
** it, so its suffixes work too (IF-N one ring pair, IF^ host rings, {N }N
** pipe ends, /x exclusive, @N memory region). We serve the first TX and
** RX ring bound; a frame spans several slots chained with NS_MOREFRAG.
** VALE ports take a virtio-net header and then exchange TSO and
** checksum-offloaded frames; NICs do not, and get_cap() says so.
** The name is checked on every OS; only opening needs FreeBSD.
*/

/* The largest base name (struct nmreq's nr_name holds IFNAMSIZ with the
** NUL) and ring number (below NETMAP_RING_MASK) netmap takes. */
#define NMB_NAMESIZ    IFNAMSIZ
#define NMB_RINGS      0x0fff

static int nmb_is_id(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '_' || (s[i] >= '0' && s[i] <= '9') ||
              ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z')))
            return 0;
    return n > 0;
}

/* Decimal number in [LO, HI) at *P; advances *P past it. */
static int nmb_number(const char **p, unsigned long lo, unsigned long hi)
{
    char *end;
    if (**p < '0' || **p > '9')
        return 0;
    unsigned long v = strtoul(*p, &end, 10);
    *p = end;
    return v >= lo && v < hi;
}

/* The suffix grammar of nm_open(): [^ | * | -N | {N | }N] then "/FLAGS"
** and "@MEMID" groups. Of the flags only x (exclusive) is taken: R and T
** bind one direction and t, r, z make a monitor, none of which is a NIC. */
static const char *nmb_suffix_error(const char *p)
{
    static const char flags[] = "flags after '/': only x (exclusive) can serve a NIC";
    int memid = 0, after_flags = 0;
    if (*p == '^' || *p == '*') {
        p++;
    } else if (*p == '-' || *p == '{' || *p == '}') {
        p++;
        if (!nmb_number(&p, 0, NMB_RINGS))
            return "a ring or pipe number from 0 to 4094 after '-', '{' or '}'";
    }
    while (*p) {
        if (*p == '/' && !after_flags) {
            if (*++p != 'x')
                return flags;
            while (*p == 'x')
                p++;
            if (*p && strchr("zrtRT", *p))
                return flags;
            after_flags = 1;
        } else if (*p == '@' && !memid) {
            p++;
            memid = 1;
            after_flags = 0;
            if (!nmb_number(&p, 1, 65536))
                return "a memory region number from 1 to 65535 after '@'";
        } else {
            return "one of the suffixes ^ * -N {N }N /x @N, in that order";
        }
    }
    return NULL;
}

static int nmb_check(netbe_config *cfg, char *err, size_t errlen)
{
    const char *name = netbe_config_get(cfg, "backend");
    const char *base, *end, *why = NULL;
    if (strncmp(name, "netmap:", 7) == 0) {
        base = name + 7;
        end = base + strcspn(base, "-*^{}/@");
        if (end == base)
            why = "an interface name after 'netmap:'";
    } else if (strncmp(name, "vale", 4) == 0) {
        /* vale(4): valeSSS:PPP, both [0-9a-zA-Z_]+. */
        const char *colon = strchr(name, ':');
        base = name;
        end = colon ? colon + 1 + strcspn(colon + 1, "-*^{}/@") : name + strlen(name);
        if (!colon)
            why = "valeSWITCH:PORT, with a ':' between switch and port";
        else if (!nmb_is_id(name + 4, colon - name - 4))
            why = "a switch name of letters, digits and '_' between 'vale' and ':'";
        else if (!nmb_is_id(colon + 1, end - colon - 1))
            why = "a port name of letters, digits and '_' after ':'";
    } else {
        return NB_ERR(EINVAL, "%s: expected a netmap port: netmap:IFNAME or "
                      "valeSWITCH:PORT", name);
    }
    if (!why && end - base >= NMB_NAMESIZ)
        why = "a port name of at most 15 characters, not counting 'netmap:' or suffixes";
    if (!why)
        why = nmb_suffix_error(end);
    if (why)
        return NB_ERR(EINVAL, "%s: bad netmap port name (expected %s)", name, why);
    return 0;
}

#ifdef __FreeBSD__

/* netmap_user.h reports nm_open() failures on stderr through D() unless the
** includer defines ND and D itself; a library does not print, errno says
** what failed. */
#define ND(...) do { } while (0)
#define D(...) do { } while (0)
#define NETMAP_WITH_LIBS
#include <net/netmap_user.h>
#undef D
#undef ND

_Static_assert(sizeof(((struct nmreq *)0)->nr_name) == NMB_NAMESIZ &&
               NETMAP_RING_MASK == NMB_RINGS, "netmap limits differ from netmap.h");

/* What bhyve offers on a port that takes a virtio-net header. */
#define NMB_CAPS    (NETBE_F_CSUM | NETBE_F_HOST_TSO4 | NETBE_F_HOST_TSO6 | \
    NETBE_F_HOST_UFO | NETBE_F_GUEST_CSUM | NETBE_F_GUEST_TSO4 | NETBE_F_GUEST_TSO6 | \
    NETBE_F_GUEST_UFO)

struct nmb_priv {
    struct nm_desc *nmd;
    struct netmap_ring *tx, *rx;
    int hdr_ok;                  /* the port takes a virtio-net header */
    pthread_mutex_t tx_lock;     /* one writer of the TX ring at a time */
};

/* The virtio-net header length every frame of the port carries, set as
** bhyve does (NIOCREGIF with NETMAP_BDG_VNET_HDR). Only VALE ports agree. */
static int nmb_set_hdr_len(struct nmb_priv *p, unsigned len)
{
    struct nmreq req;
    memset(&req, 0, sizeof req);
    memcpy(req.nr_name, p->nmd->req.nr_name, sizeof req.nr_name);
    req.nr_version = NETMAP_API;
    req.nr_cmd = NETMAP_BDG_VNET_HDR;
    req.nr_arg1 = (uint16_t)len;
    return ioctl(p->nmd->fd, NIOCREGIF, &req) < 0 ? -errno : 0;
}

static int nmb_open(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    struct nmb_priv *p = NB_PRIV(be, struct nmb_priv);
    int rc = -pthread_mutex_init(&p->tx_lock, NULL);
    if (rc < 0)
        return NB_ERR(-rc, "%s: %s", be->name, strerror(-rc));
    errno = 0;
    p->nmd = nm_open(be->name, NULL, NETMAP_NO_TX_POLL, NULL);
    if (!p->nmd) {
        int e = errno ? errno : EINVAL;
        pthread_mutex_destroy(&p->tx_lock);
        return NB_ERR(e, "%s: cannot open the netmap port: %s", be->name, strerror(e));
    }
    p->tx = NETMAP_TXRING(p->nmd->nifp, p->nmd->first_tx_ring);
    p->rx = NETMAP_RXRING(p->nmd->nifp, p->nmd->first_rx_ring);
    /* Probe for the header, then run without one until a frontend
    ** negotiates offloads: a header-less port gets frames the switch has
    ** already segmented and checksummed. */
    p->hdr_ok = nmb_set_hdr_len(p, 12) == 0;
    if (p->hdr_ok)
        rc = nmb_set_hdr_len(p, 0);
    if (rc == 0)
        rc = nb_watch_fd(be, p->nmd->fd);
    if (rc < 0) {
        nm_close(p->nmd);
        pthread_mutex_destroy(&p->tx_lock);
        return NB_ERR(-rc, "%s: cannot set up the netmap port: %s", be->name,
                      strerror(-rc));
    }
    return 0;
}

static void nmb_close(netbe *be)
{
    struct nmb_priv *p = NB_PRIV(be, struct nmb_priv);
    nm_close(p->nmd);
    pthread_mutex_destroy(&p->tx_lock);
}

/* Copy the frame into as many TX slots as it needs, all but the last
** flagged NS_MOREFRAG, and push them out. A ring without room even after
** a sync drops the frame (-ENOBUFS, a counted drop), as bhyve does. */
static ssize_t nmb_send(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct nmb_priv *p = NB_PRIV(be, struct nmb_priv);
    struct netmap_ring *r = p->tx;
    size_t len = nb_iov_len(iov, iovcnt), off = 0;
    uint32_t need = (uint32_t)((len + r->nr_buf_size - 1) / r->nr_buf_size);

    pthread_mutex_lock(&p->tx_lock);
    if (nm_ring_space(r) < need)
        ioctl(p->nmd->fd, NIOCTXSYNC, NULL);
    if (nm_ring_space(r) < need) {
        pthread_mutex_unlock(&p->tx_lock);
        return -ENOBUFS;
    }
    uint32_t i = r->head;
    while (off < len) {
        struct netmap_slot *s = &r->slot[i];
        size_t n = len - off < r->nr_buf_size ? len - off : r->nr_buf_size;
        nb_iov_to_buf(iov, iovcnt, off, NETMAP_BUF(r, s->buf_idx), n);
        off += n;
        s->len = (uint16_t)n;
        s->flags = off < len ? NS_MOREFRAG : 0;
        i = nm_ring_next(r, i);
    }
    r->head = r->cur = i;
    ioctl(p->nmd->fd, NIOCTXSYNC, NULL);
    pthread_mutex_unlock(&p->tx_lock);
    return (ssize_t)len;
}

/* Find the slot after the next complete frame. Returns 0 when the ring
** holds no complete frame. */
static int nmb_frame_end(struct netmap_ring *r, uint32_t *end)
{
    for (uint32_t i = r->head; i != r->tail; i = nm_ring_next(r, i)) {
        if (!(r->slot[i].flags & NS_MOREFRAG)) {
            *end = nm_ring_next(r, i);
            return 1;
        }
    }
    return 0;
}

/* Gather the next frame's slots into IOV and hand them back. Returns the
** whole frame's length even when IOV was shorter (the core counts that
** as a drop). An empty ring is synced once: that returns the slots we
** consumed and fetches new ones. */
static ssize_t nmb_recv(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct nmb_priv *p = NB_PRIV(be, struct nmb_priv);
    struct netmap_ring *r = p->rx;
    uint32_t end;
    if (!nmb_frame_end(r, &end)) {
        if (ioctl(p->nmd->fd, NIOCRXSYNC, NULL) < 0)
            return -errno;
        if (!nmb_frame_end(r, &end))
            return 0;
    }
    size_t total = 0;
    for (uint32_t i = r->head; i != end; i = nm_ring_next(r, i)) {
        struct netmap_slot *s = &r->slot[i];
        nb_buf_to_iov(NETMAP_BUF(r, s->buf_idx), s->len, iov, iovcnt, total);
        total += s->len;
    }
    r->head = r->cur = end;
    return (ssize_t)total;
}

static uint64_t nmb_get_cap(netbe *be)
{
    return NB_PRIV(be, struct nmb_priv)->hdr_ok ? NMB_CAPS : 0;
}

/* With offloads the port carries the frontend's header as is; without,
** it stays header-less and the core adds an all-zero header. */
static int nmb_set_cap(netbe *be, uint64_t features, unsigned fe_hdr_len)
{
    unsigned len = features ? fe_hdr_len : 0;
    if (len != be->be_hdr_len) {
        int rc = nmb_set_hdr_len(NB_PRIV(be, struct nmb_priv), len);
        if (rc < 0)
            return rc;
        be->be_hdr_len = len;
    }
    return 0;
}

static const struct nb_ops nb_netmap = {
    .prefix = "netmap", .priv_size = sizeof(struct nmb_priv),
    .check = nmb_check, .open = nmb_open, .close = nmb_close,
    .send = nmb_send, .recv = nmb_recv,
    .get_cap = nmb_get_cap, .set_cap = nmb_set_cap,
};

static const struct nb_ops nb_vale = {
    .prefix = "vale", .priv_size = sizeof(struct nmb_priv),
    .check = nmb_check, .open = nmb_open, .close = nmb_close,
    .send = nmb_send, .recv = nmb_recv,
    .get_cap = nmb_get_cap, .set_cap = nmb_set_cap,
};

#else

static const struct nb_ops nb_netmap = {
    .prefix = "netmap", .check = nmb_check, .open = tap_needs_freebsd,
    .close = tap_close,
};

static const struct nb_ops nb_vale = {
    .prefix = "vale", .check = nmb_check, .open = tap_needs_freebsd,
    .close = tap_close,
};

#endif /* __FreeBSD__ */

/* }================================================================ */

/* {===================================================================
** 15. Backend slirp: user-mode NAT through libslirp
** ====================================================================
** libslirp is a TCP/IP stack that terminates the guest's connections and
** re-opens them as ordinary host sockets. It has no loop of its own: it
** names the descriptors it wants watched (slirp_pollfds_fill), is told
** which are ready (slirp_pollfds_poll), and wants timers. We map that onto
** the embedder's event_base: edge-triggered read and write events per
** descriptor, registered once and kept while slirp names it; a timer for
** the timeout slirp asks for; and one "run" event that does a round
** (slirp_pollfds_poll, slirp_pollfds_fill, then poll() of what slirp now
** wants, without waiting) after a descriptor fired or the guest sent
** something.
**
** Frames slirp emits for the guest go into a ring under the same mutex
** that serializes every call into libslirp. The receive event has no
** descriptor: it is activated when a round (or a send) leaves frames in
** the ring, in the same loop pass, without an eventfd's two system calls.
*/

/* ---- Log: libslirp's glib messages go to the embedder ---- */

#ifndef NETBE_OMIT_SLIRP

static pthread_mutex_t sl_log_lock = PTHREAD_MUTEX_INITIALIZER;
static netbe_log_fn sl_log_fn;
static void *sl_log_arg;
static pthread_once_t sl_log_once = PTHREAD_ONCE_INIT;

static int sl_log_level(GLogLevelFlags flags)
{
    return flags & G_LOG_LEVEL_ERROR ? NETBE_LOG_ERR :
           flags & G_LOG_LEVEL_CRITICAL ? NETBE_LOG_CRIT :
           flags & G_LOG_LEVEL_WARNING ? NETBE_LOG_WARNING :
           flags & G_LOG_LEVEL_MESSAGE ? NETBE_LOG_NOTICE :
           flags & G_LOG_LEVEL_INFO ? NETBE_LOG_INFO : NETBE_LOG_DEBUG;
}

static void sl_on_log(const gchar *domain, GLogLevelFlags flags, const gchar *msg,
                      gpointer unused)
{
    pthread_mutex_lock(&sl_log_lock);
    netbe_log_fn fn = sl_log_fn;
    void *arg = sl_log_arg;
    pthread_mutex_unlock(&sl_log_lock);
    if (fn) {
        char line[512];
        snprintf(line, sizeof line, "slirp: %s", msg ? msg : "");
        fn(sl_log_level(flags), line, arg);
    }
}

/* libslirp logs through glib in its own domain, "Slirp" (its G_LOG_DOMAIN);
** the handler takes that domain only, before the first slirp opens. */
static void sl_log_install(void)
{
    g_log_set_handler("Slirp", G_LOG_LEVEL_MASK | G_LOG_FLAG_FATAL | G_LOG_FLAG_RECURSION,
                      sl_on_log, NULL);
}

void netbe_set_log(netbe_log_fn fn, void *arg)
{
    pthread_mutex_lock(&sl_log_lock);
    sl_log_fn = fn;
    sl_log_arg = arg;
    pthread_mutex_unlock(&sl_log_lock);
    pthread_once(&sl_log_once, sl_log_install);
}

#endif /* NETBE_OMIT_SLIRP */

/* ---- Options: parsing and checking ---- */

static const char *const sl_keys[] = {
    "hostfwd", "open", "restrict", "net", "host", "dhcpstart", "dns", "dnssearch",
    "domainname", "hostname", "ipv6", "ipv6-net", "ipv6-host", "ipv6-dns", "tftp",
    "tftp-server-name", "bootfile", "guestfwd", NULL};

#ifndef NETBE_OMIT_SLIRP

#define SL_MTU_MIN      68       /* libslirp's IF_MTU_MIN */
#define SL_MTU_MAX      65521    /* libslirp's IF_MTU_MAX */
#define SL_RULE_MAX     300      /* a rule in normal form */

enum { SL_TCP, SL_UDP, SL_UNIX };

/* One host forwarding rule. */
struct sl_rule {
    struct sl_rule *next;
    int proto;
    struct sockaddr_storage host, guest;
    socklen_t host_len, guest_len;
    struct netbe_unix_id bound;  /* a UNIX host side, once libslirp bound it */
    char text[SL_RULE_MAX];      /* normal form, for listing */
};

/* Everything the options say, checked. */
struct sl_opts {
    int restricted, ipv6;
    struct in_addr net, mask, host, dhcp, dns;
    struct in6_addr net6, host6, dns6;
    unsigned prefix6;
    unsigned mtu;
    int have_mac;
    uint8_t mac[6];              /* the guest's, for its EUI-64 IPv6 address */
    const char *hostname, *domainname, *tftp, *tftp_name, *bootfile;
    char **dnssearch;            /* NULL-terminated, owned */
    struct in_addr gfwd_addr;
    unsigned gfwd_port;
    char *gfwd_cmd;              /* owned */
    struct sl_rule *rules;       /* owned */
};

static void sl_opts_free(struct sl_opts *o)
{
    if (o->dnssearch)
        for (char **d = o->dnssearch; *d; d++)
            free(*d);
    free(o->dnssearch);
    free(o->gfwd_cmd);
    while (o->rules) {
        struct sl_rule *r = o->rules;
        o->rules = r->next;
        free(r);
    }
    memset(o, 0, sizeof *o);
}

/* on/off, yes/no, true/false, 1/0; -1 for anything else. */
static int sl_bool(const char *v)
{
    static const char *const yes[] = {"on", "yes", "true", "1"}, *const no[] = {
        "off", "no", "false", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0)
            return 1;
        if (strcmp(v, no[i]) == 0)
            return 0;
    }
    return -1;
}

static int sl_opt_bool(const netbe_config *cfg, const char *key, int def, int *out,
                       char *err, size_t errlen)
{
    const char *v = netbe_config_get(cfg, key);
    *out = v ? sl_bool(v) : def;
    if (*out < 0)
        return NB_ERR(EINVAL, "slirp: %s='%s': expected on or off", key, v);
    return 0;
}

static int sl_opt_ip4(const netbe_config *cfg, const char *key, struct in_addr def,
                      struct in_addr *out, char *err, size_t errlen)
{
    const char *v = netbe_config_get(cfg, key);
    *out = def;
    if (v && inet_pton(AF_INET, v, out) != 1)
        return NB_ERR(EINVAL, "slirp: %s='%s': expected an IPv4 address like 10.0.2.2",
                      key, v);
    return 0;
}

static int sl_opt_ip6(const netbe_config *cfg, const char *key, struct in6_addr def,
                      struct in6_addr *out, char *err, size_t errlen)
{
    const char *v = netbe_config_get(cfg, key);
    *out = def;
    if (v && inet_pton(AF_INET6, v, out) != 1)
        return NB_ERR(EINVAL, "slirp: %s='%s': expected an IPv6 address like fec0::2",
                      key, v);
    return 0;
}

/* net=ADDR[/LEN|/MASK], QEMU's form. */
static int sl_parse_net(const char *v, struct in_addr *net, struct in_addr *mask,
                        char *err, size_t errlen)
{
    char addr[64];
    const char *slash = strchr(v, '/');
    size_t n = slash ? (size_t)(slash - v) : strlen(v);
    unsigned long len = 24;
    int ok = n < sizeof addr;
    if (ok) {
        memcpy(addr, v, n);
        addr[n] = '\0';
        ok = inet_pton(AF_INET, addr, net) == 1;
    }
    if (ok && slash) {
        if (inet_pton(AF_INET, slash + 1, mask) == 1) {
            uint32_t m = ntohl(mask->s_addr);
            ok = m != 0 && (~m & (~m + 1)) == 0;     /* contiguous ones */
            for (len = 0; ok && len < 32 && (m & (0x80000000u >> len)); len++)
                ;
        } else {
            ok = nb_parse_uint(slash + 1, 0, 32, &len) == 0;
        }
    }
    if (ok && len > 30)
        ok = 0;
    if (!ok)
        return NB_ERR(EINVAL, "slirp: net='%s': expected an IPv4 network like "
                      "10.0.2.0/24 or 10.0.2.0/255.255.255.0 (prefix 0 to 30)", v);
    mask->s_addr = htonl(len ? 0xffffffffu << (32 - len) : 0);
    if (net->s_addr & ~mask->s_addr)
        return NB_ERR(EINVAL, "slirp: net='%s': host bits are set (expected the network "
                      "address, e.g. %s)", v,
                      inet_ntop(AF_INET, &(struct in_addr){net->s_addr & mask->s_addr},
                                addr, sizeof addr));
    return 0;
}

/* ADDR must be a host address inside NET/MASK. */
static int sl_in_net(const char *key, struct in_addr a, const struct sl_opts *o,
                     char *err, size_t errlen)
{
    uint32_t h = ntohl(a.s_addr), m = ntohl(o->mask.s_addr), n = ntohl(o->net.s_addr);
    char as[INET_ADDRSTRLEN], ns[INET_ADDRSTRLEN];
    if ((h & m) == n && (h & ~m) != 0 && (h & ~m) != ~m)
        return 0;
    inet_ntop(AF_INET, &a, as, sizeof as);
    inet_ntop(AF_INET, &o->net, ns, sizeof ns);
    int len = 0;
    while (len < 32 && (m & (0x80000000u >> len)))
        len++;
    return NB_ERR(EINVAL, "slirp: %s=%s: expected a host address inside net=%s/%d", key,
                  as, ns, len);
}

/* ipv6-net=PREFIX/LEN */
static int sl_parse_net6(const char *v, struct in6_addr *net, unsigned *len,
                         char *err, size_t errlen)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(v, '/');
    unsigned long l = 64;
    size_t n = slash ? (size_t)(slash - v) : strlen(v);
    int ok = n < sizeof addr;
    if (ok) {
        memcpy(addr, v, n);
        addr[n] = '\0';
        ok = inet_pton(AF_INET6, addr, net) == 1 &&
             (!slash || nb_parse_uint(slash + 1, 1, 126, &l) == 0);
    }
    if (!ok)
        return NB_ERR(EINVAL, "slirp: ipv6-net='%s': expected an IPv6 prefix like "
                      "fec0::/64 (length 1 to 126)", v);
    *len = (unsigned)l;
    return 0;
}

static int sl_in_net6(const char *key, const struct in6_addr *a,
                      const struct sl_opts *o, char *err, size_t errlen)
{
    for (unsigned i = 0; i < o->prefix6; i++) {
        unsigned bit = 0x80u >> (i % 8);
        if ((a->s6_addr[i / 8] & bit) != (o->net6.s6_addr[i / 8] & bit)) {
            char as[INET6_ADDRSTRLEN], ns[INET6_ADDRSTRLEN];
            inet_ntop(AF_INET6, a, as, sizeof as);
            inet_ntop(AF_INET6, &o->net6, ns, sizeof ns);
            return NB_ERR(EINVAL, "slirp: %s=%s: expected an address inside "
                          "ipv6-net=%s/%u", key, as, ns, o->prefix6);
        }
    }
    return 0;
}

/* PREFIX with its host part replaced by the low bits of SUFFIX (::2, ::3). */
static struct in6_addr sl_in6_host(const struct in6_addr *prefix, unsigned len,
                                   uint8_t low)
{
    struct in6_addr a = *prefix;
    for (unsigned i = len; i < 128; i++)
        a.s6_addr[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
    a.s6_addr[15] |= low;
    return a;
}

/* "1.2.3.4", "[::1]" or "" into SA with PORT. EMPTY is used for "". */
static int sl_sockaddr(const char *text, unsigned port, struct in_addr empty,
                       struct sockaddr_storage *sa, socklen_t *len)
{
    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(text);
    memset(sa, 0, sizeof *sa);
    if (n >= 2 && text[0] == '[' && text[n - 1] == ']' && n - 2 < sizeof buf) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
        memcpy(buf, text + 1, n - 2);
        buf[n - 2] = '\0';
        if (inet_pton(AF_INET6, buf, &s6->sin6_addr) != 1)
            return -1;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof *s6;
        return 0;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
    if (n == 0)
        s4->sin_addr = empty;
    else if (inet_pton(AF_INET, text, &s4->sin_addr) != 1)
        return -1;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof *s4;
    return 0;
}

/* "1.2.3.4:22" or "[::1]:22" for a sockaddr (port 0 omitted). */
static void sl_sockaddr_text(const struct sockaddr_storage *sa, char *out, size_t len)
{
    char a[INET6_ADDRSTRLEN];
    if (sa->ss_family == AF_UNIX) {
        snprintf(out, len, "%s", ((const struct sockaddr_un *)sa)->sun_path);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof a);
        snprintf(out, len, "[%s]:%u", a, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, a, sizeof a);
        snprintf(out, len, "%s:%u", a, ntohs(s4->sin_port));
    }
}

/* Split "ADDR:PORT" at its last colon (ADDR may be [v6] or empty). */
static int sl_split_port(char *s, unsigned long lo, char **addr, unsigned long *port)
{
    char *colon = strrchr(s, ':');
    if (!colon)
        return -1;
    *colon = '\0';
    *addr = s;
    return nb_parse_uint(colon + 1, lo, 65535, port);
}

#define SL_RULE_FORM    "PROTO:HADDR:HPORT-GADDR:GPORT (PROTO tcp, udp or empty; " \
    "HADDR IPv4, [IPv6] or empty) or unix:/PATH-GADDR:GPORT"

/* The address a Linux guest with MAC forms from PREFIX by EUI-64. */
static struct in6_addr sl_eui64(const struct in6_addr *prefix, const uint8_t mac[6])
{
    struct in6_addr a = *prefix;
    uint8_t id[8] = {mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]};
    memcpy(a.s6_addr + 8, id, 8);
    return a;
}

/* The guest side of a rule: "ADDR:PORT", "[V6]:PORT" or ":PORT". An empty
** address is the DHCP start address, or for an IPv6 host side the guest's
** EUI-64 address (from mac=): libslirp does not translate between IPv4
** and IPv6, and a UNIX host side reaches the guest over IPv4. */
static int sl_parse_guest(const char *text, char *g, const struct sl_opts *o,
                          struct sl_rule *r, char *err, size_t errlen)
{
    char *ga;
    unsigned long port;
    int want6 = r->host.ss_family == AF_INET6;
    if (sl_split_port(g, 1, &ga, &port) < 0 ||
        sl_sockaddr(ga, (unsigned)port, o->dhcp, &r->guest, &r->guest_len) < 0)
        return NB_ERR(EINVAL, "slirp: hostfwd '%s': expected " SL_RULE_FORM, text);
    if (!*ga && want6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&r->guest;
        if (!o->have_mac)
            return NB_ERR(EINVAL, "slirp: hostfwd '%s': an IPv6 host address needs an "
                          "IPv6 guest address ([ADDR]:PORT) or mac= (the guest's EUI-64 "
                          "address is derived from it)", text);
        memset(&r->guest, 0, sizeof r->guest);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        s6->sin6_addr = sl_eui64(&o->net6, o->mac);
        r->guest_len = sizeof *s6;
    }
    if ((r->guest.ss_family == AF_INET6) != want6)
        return NB_ERR(EINVAL, "slirp: hostfwd '%s': expected host and guest addresses of "
                      "one IP version (libslirp does not translate; a UNIX socket "
                      "forwards to IPv4)", text);
    return 0;
}

/* Parse one hostfwd rule. With HOST_ONLY the guest part may be missing
** (for removal). */
static int sl_parse_rule(const char *text, int host_only, const struct sl_opts *o,
                         struct sl_rule *r, char *err, size_t errlen)
{
    char buf[SL_RULE_MAX], *s = buf, *haddr, *gaddr = NULL;
    unsigned long hport = 0;
    memset(r, 0, sizeof *r);
    if (strlen(text) >= sizeof buf)
        return NB_ERR(EINVAL, "slirp: hostfwd rule too long (at most %zu characters)",
                      sizeof buf - 1);
    strcpy(buf, text);
    char *colon = strchr(s, ':');
    if (!colon)
        goto bad;
    *colon = '\0';
    if (!*s || strcmp(s, "tcp") == 0)
        r->proto = SL_TCP;
    else if (strcmp(s, "udp") == 0)
        r->proto = SL_UDP;
    else if (strcmp(s, "unix") == 0)
        r->proto = SL_UNIX;
    else
        return NB_ERR(EINVAL, "slirp: hostfwd '%s': protocol '%s' (expected tcp, udp, "
                      "unix or empty)", text, s);
    s = colon + 1;
    /* The guest part follows the last '-' (a UNIX path may contain '-'). */
    char *dash = strrchr(s, '-');
    if (dash && (r->proto != SL_UNIX || strchr(dash, ':'))) {
        *dash = '\0';
        gaddr = dash + 1;
    }
    if (!gaddr && !host_only)
        goto bad;
    if (r->proto == SL_UNIX) {
        struct sockaddr_un *un = (struct sockaddr_un *)&r->host;
        if (s[0] != '/' || strlen(s) >= sizeof un->sun_path)
            return NB_ERR(EINVAL, "slirp: hostfwd '%s': expected an absolute UNIX socket "
                          "path of at most %zu characters after unix:", text,
                          sizeof un->sun_path - 1);
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, s);
        r->host_len = sizeof *un;
    } else if (sl_split_port(s, 1, &haddr, &hport) < 0 ||
               sl_sockaddr(haddr, (unsigned)hport, (struct in_addr){INADDR_ANY},
                           &r->host, &r->host_len) < 0) {
        goto bad;
    }
    if (gaddr && sl_parse_guest(text, gaddr, o, r, err, errlen) < 0)
        return -EINVAL;
    char h[INET6_ADDRSTRLEN + 80], g[INET6_ADDRSTRLEN + 8] = "";
    static const char *const names[] = {"tcp", "udp", "unix"};
    sl_sockaddr_text(&r->host, h, sizeof h);
    if (gaddr)
        sl_sockaddr_text(&r->guest, g, sizeof g);
    snprintf(r->text, sizeof r->text, "%s:%s%s%s", names[r->proto], h, gaddr ? "-" : "",
             g);
    return 0;
bad:
    return NB_ERR(EINVAL, "slirp: hostfwd '%s': expected " SL_RULE_FORM, text);
}

/* hostfwd=RULE[;RULE...] into O->rules, in order. */
static int sl_parse_rules(const char *v, struct sl_opts *o, char *err, size_t errlen)
{
    struct sl_rule **tail = &o->rules;
    char *copy = strdup(v), *save = NULL;
    if (!copy)
        return NB_ERR(ENOMEM, "out of memory");
    int rc = 0;
    for (char *t = strtok_r(copy, ";", &save); t && rc == 0; t = strtok_r(NULL, ";", &save)) {
        struct sl_rule *r = malloc(sizeof *r);
        if (!r) {
            rc = NB_ERR(ENOMEM, "out of memory");
            break;
        }
        rc = sl_parse_rule(t, 0, o, r, err, errlen);
        if (rc < 0) {
            free(r);
            break;
        }
        *tail = r;
        tail = &r->next;
    }
    free(copy);
    if (rc == 0 && !o->rules)
        rc = NB_ERR(EINVAL, "slirp: hostfwd='%s': expected one or more rules separated "
                    "by ';', each " SL_RULE_FORM, v);
    return rc;
}

/* guestfwd=tcp:ADDR:PORT-cmd:COMMAND */
static int sl_parse_guestfwd(const char *v, struct sl_opts *o, char *err, size_t errlen)
{
    const char *cmd = strstr(v, "-cmd:");
    char addr[64];
    unsigned long port;
    size_t n = cmd ? (size_t)(cmd - v) : 0;
    int ok = cmd && strncmp(v, "tcp:", 4) == 0 && n > 4 && n - 4 < sizeof addr &&
             cmd[5] != '\0';
    if (ok) {
        char *a;
        memcpy(addr, v + 4, n - 4);
        addr[n - 4] = '\0';
        ok = sl_split_port(addr, 1, &a, &port) == 0 &&
             inet_pton(AF_INET, a, &o->gfwd_addr) == 1;
    }
    if (!ok)
        return NB_ERR(EINVAL, "slirp: guestfwd='%s': expected tcp:ADDR:PORT-cmd:COMMAND "
                      "with ADDR an IPv4 address in the guest network", v);
    if (sl_in_net("guestfwd", o->gfwd_addr, o, err, errlen) < 0)
        return -EINVAL;
    if (o->gfwd_addr.s_addr == o->host.s_addr || o->gfwd_addr.s_addr == o->dns.s_addr)
        return NB_ERR(EINVAL, "slirp: guestfwd='%s': the address is the host's or the DNS "
                      "server's (expected another address in the guest network)", v);
    o->gfwd_port = (unsigned)port;
    o->gfwd_cmd = strdup(cmd + 5);
    return o->gfwd_cmd ? 0 : NB_ERR(ENOMEM, "out of memory");
}

/* dnssearch=DOMAIN[;DOMAIN...] */
static int sl_parse_dnssearch(const char *v, struct sl_opts *o, char *err,
                              size_t errlen)
{
    size_t n = 2;
    for (const char *c = v; *c; c++)
        n += *c == ';';
    o->dnssearch = calloc(n, sizeof(char *));
    char *copy = strdup(v), *save = NULL;
    int i = 0, rc = 0;
    if (!o->dnssearch || !copy)
        rc = NB_ERR(ENOMEM, "out of memory");
    for (char *t = rc ? NULL : strtok_r(copy, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
        for (const char *c = t; *c && rc == 0; c++)
            if (!(*c == '.' || *c == '-' || (*c >= '0' && *c <= '9') ||
                  ((*c | 0x20) >= 'a' && (*c | 0x20) <= 'z')))
                rc = NB_ERR(EINVAL, "slirp: dnssearch='%s': '%s' is not a domain name "
                            "(letters, digits, '-' and '.'; several separated by ';')",
                            v, t);
        if (rc == 0 && !(o->dnssearch[i++] = strdup(t)))
            rc = NB_ERR(ENOMEM, "out of memory");
        if (rc)
            break;
    }
    free(copy);
    if (rc == 0 && i == 0)
        rc = NB_ERR(EINVAL, "slirp: dnssearch='%s': expected domain names separated by ';'",
                    v);
    return rc;
}

/* Read and check every option of CFG into O (zeroed first). */
static int sl_opts_parse(const netbe_config *cfg, struct sl_opts *o,
                         char *err, size_t errlen)
{
    const char *v;
    int open_, restrict_;
    memset(o, 0, sizeof *o);
    o->mtu = 1500;
    if ((v = netbe_config_get(cfg, "mtu"))) {
        unsigned long m;
        if (nb_parse_uint(v, SL_MTU_MIN, SL_MTU_MAX, &m) < 0)
            return NB_ERR(EINVAL, "slirp: mtu '%s': expected a whole number from %d to %d "
                          "(libslirp's limits)", v, SL_MTU_MIN, SL_MTU_MAX);
        o->mtu = (unsigned)m;
    }
    /* bhyve: restricted unless "open"; QEMU's restrict= may say it too. */
    if (sl_opt_bool(cfg, "open", 0, &open_, err, errlen) < 0 ||
        sl_opt_bool(cfg, "restrict", !open_, &restrict_, err, errlen) < 0 ||
        sl_opt_bool(cfg, "ipv6", 1, &o->ipv6, err, errlen) < 0)
        return -EINVAL;
    if (open_ && restrict_)
        return NB_ERR(EINVAL, "slirp: 'open' and 'restrict=on' contradict each other "
                      "(expected one of them)");
    o->restricted = restrict_;
    o->net.s_addr = htonl(0x0a000200);
    o->mask.s_addr = htonl(0xffffff00);
    if ((v = netbe_config_get(cfg, "net")) && sl_parse_net(v, &o->net, &o->mask, err,
                                                           errlen) < 0)
        return -EINVAL;
    uint32_t n = ntohl(o->net.s_addr);
    if (sl_opt_ip4(cfg, "host", (struct in_addr){htonl(n | 2)}, &o->host, err, errlen) ||
        sl_opt_ip4(cfg, "dhcpstart", (struct in_addr){htonl(n | 15)}, &o->dhcp, err,
                   errlen) ||
        sl_opt_ip4(cfg, "dns", (struct in_addr){htonl(n | 3)}, &o->dns, err, errlen) ||
        sl_in_net("host", o->host, o, err, errlen) ||
        sl_in_net("dhcpstart", o->dhcp, o, err, errlen) ||
        sl_in_net("dns", o->dns, o, err, errlen))
        return -EINVAL;
    if (o->host.s_addr == o->dhcp.s_addr || o->dns.s_addr == o->dhcp.s_addr)
        return NB_ERR(EINVAL, "slirp: dhcpstart is the host's or the DNS server's address "
                      "(expected a free address in the guest network)");
    struct in6_addr fec0 = {{{0xfe, 0xc0}}};
    o->net6 = fec0;
    o->prefix6 = 64;
    if ((v = netbe_config_get(cfg, "ipv6-net")) &&
        sl_parse_net6(v, &o->net6, &o->prefix6, err, errlen) < 0)
        return -EINVAL;
    o->net6 = sl_in6_host(&o->net6, o->prefix6, 0);
    if (sl_opt_ip6(cfg, "ipv6-host", sl_in6_host(&o->net6, o->prefix6, 2), &o->host6,
                   err, errlen) ||
        sl_opt_ip6(cfg, "ipv6-dns", sl_in6_host(&o->net6, o->prefix6, 3), &o->dns6,
                   err, errlen) ||
        sl_in_net6("ipv6-host", &o->host6, o, err, errlen) ||
        sl_in_net6("ipv6-dns", &o->dns6, o, err, errlen))
        return -EINVAL;
    static const char *const names[] = {"hostname", "domainname", "tftp-server-name",
                                        "bootfile", "tftp"};
    for (int i = 0; i < 5; i++) {
        v = netbe_config_get(cfg, names[i]);
        if (v && (!*v || strlen(v) > 255))
            return NB_ERR(EINVAL, "slirp: %s='%s': expected 1 to 255 characters",
                          names[i], v);
    }
    o->hostname = netbe_config_get(cfg, "hostname");
    o->domainname = netbe_config_get(cfg, "domainname");
    o->tftp_name = netbe_config_get(cfg, "tftp-server-name");
    o->bootfile = netbe_config_get(cfg, "bootfile");
    o->tftp = netbe_config_get(cfg, "tftp");
    if ((v = netbe_config_get(cfg, "dnssearch")) &&
        sl_parse_dnssearch(v, o, err, errlen) < 0)
        return -EINVAL;
    if ((v = netbe_config_get(cfg, "guestfwd")) &&
        sl_parse_guestfwd(v, o, err, errlen) < 0)
        return -EINVAL;
    if ((v = netbe_config_get(cfg, "mac")))
        o->have_mac = netbe_parse_mac(v, o->mac, NULL, 0) == 0;
    if ((v = netbe_config_get(cfg, "hostfwd")) && sl_parse_rules(v, o, err, errlen) < 0)
        return -EINVAL;
    return 0;
}

/* The options of O that reach the host, for the permission check. */
static void sl_uses(netbe_config *cfg, const struct sl_opts *o)
{
    if (o->gfwd_cmd)
        nb_config_use(cfg, NETBE_ALLOW_EXEC, "guestfwd", NULL, 0);
    if (o->tftp)
        nb_config_use(cfg, NETBE_ALLOW_FILES, "tftp", o->tftp, 1);
    for (const struct sl_rule *r = o->rules; r; r = r->next)
        if (r->proto == SL_UNIX)
            nb_config_use(cfg, NETBE_ALLOW_FILES, "hostfwd",
                          ((const struct sockaddr_un *)&r->host)->sun_path, 0);
}

/* The check hook: every option, then the rules written in normal form. */
static int sl_check(netbe_config *cfg, char *err, size_t errlen)
{
    struct sl_opts o;
    int rc = sl_opts_parse(cfg, &o, err, errlen);
    if (rc == 0)
        sl_uses(cfg, &o);
    if (rc == 0 && o.rules) {
        size_t len = 0;
        for (struct sl_rule *r = o.rules; r; r = r->next)
            len += strlen(r->text) + 1;
        char *all = malloc(len), *p = all;
        if (!all) {
            sl_opts_free(&o);
            return NB_ERR(ENOMEM, "out of memory");
        }
        for (struct sl_rule *r = o.rules; r; r = r->next)
            p += sprintf(p, "%s%s", p == all ? "" : ";", r->text);
        rc = netbe_config_set(cfg, "hostfwd", all);
        free(all);
    }
    sl_opts_free(&o);
    return rc;
}

/* ---- The backend: state, the receive ring, the event loop mapping ---- */

#define SL_RING         (8u << 20)         /* bytes of frames waiting for the guest */
#define SL_THROTTLE     (SL_RING / 2)      /* stop reading host sockets above this */
#define SL_WRAP         0xffffffffu        /* ring record: continue at offset 0 */
#define SL_HDR          10                 /* our virtio-net header with offloads on */

/* A record in the ring: the frame's length and, once segments have
** joined into one TSO frame, their size (sl_join). */
struct sl_rec {
    uint32_t len;
    uint16_t gso_size;           /* 0: a plain frame */
    uint16_t pad;                /* 0: records stay 4-byte aligned */
};

/* What we keep per host descriptor libslirp watches. */
struct sl_fdw {
    struct event *rd, *wr;
    int want;                    /* SLIRP_POLL_IN/OUT currently registered */
    int wanted;                  /* what slirp asked for in the last round */
    int revents;                 /* what fired since the last round */
    int acted;                   /* what slirp acted on in this round */
    unsigned round;              /* the last fill round that asked for it */
};

struct sl_timer {
    struct sl_timer *next;
    netbe *be;
    struct event *ev;
    SlirpTimerId id;
    void *cb_opaque;
    int64_t expire_ms;           /* -1: not armed */
};

struct sl_priv {
    Slirp *slirp;
    pthread_mutex_t lock;        /* libslirp, the ring, the rules, the fd table */
    struct sl_opts opts;
    struct nb_allow allow;       /* what rules added at run time may use */
    /* frames for the guest: records of [struct sl_rec][frame] */
    uint8_t *ring;
    size_t head, tail, used;
    size_t last;                 /* offset of the newest record, or SIZE_MAX once read */
    int throttled;
    int rx_first;                /* the loop thread let receive go before this round */
    /* the loop mapping */
    struct sl_fdw *fdw;
    int nfdw;
    struct pollfd *pfd;          /* poll index -> descriptor, from the last fill */
    int npoll, cappoll;
    unsigned round;
    int gained;                  /* the last fill asked for something new */
    struct event *run_ev, *timeout_ev;
    int run_pending;             /* run_ev is active: no need to activate it again */
    struct sl_timer *timers;
    uint8_t *txbuf;              /* gathers a scattered frame for slirp_input */
    struct frag_table frag;      /* the guest's IP fragments, made whole for libslirp */
    struct event *frag_ev;       /* drops datagrams that ran out of time */
};


/* Ask for a poll-and-fill round soon. From another thread this needs a
** thread-aware base, as netbe_send from another thread always does. */
static void sl_kick(struct sl_priv *p)
{
    if (!__atomic_exchange_n(&p->run_pending, 1, __ATOMIC_ACQ_REL))
        event_active(p->run_ev, 0, 0);
}

#define SL_TH_ACK     0x10

/* True when F, TCP (nb_tcp_plain into P), is a pure ACK: no data, no
** SYN, FIN, RST or URG. */
static int sl_pure_ack(const uint8_t *f, const struct nb_pkt *p)
{
    return p->end == p->hdrs && (f[p->l4 + 13] & 0x3f) == SL_TH_ACK;
}

/* The ring's newest record, while the frontend has not taken it. */
static uint8_t *sl_newest(struct sl_priv *p, struct sl_rec *rec)
{
    if (p->last == SIZE_MAX)
        return NULL;
    memcpy(rec, p->ring + p->last, sizeof *rec);
    return p->ring + p->last + sizeof *rec;
}

/* The ring's oldest record into REC, past a wrap mark, and its frame.
** Lock held; the ring is not empty. */
static uint8_t *sl_oldest(struct sl_priv *p, struct sl_rec *rec)
{
    memcpy(rec, p->ring + p->head, sizeof *rec);
    if (rec->len == SL_WRAP) {
        p->used -= SL_RING - p->head;
        p->head = 0;
        memcpy(rec, p->ring, sizeof *rec);
    }
    return p->ring + p->head + sizeof *rec;
}

/* Free the ring's oldest record. Lock held. Returns 1 when reading host
** sockets, stopped while the ring was filling, may resume. */
static int sl_free_oldest(struct sl_priv *p)
{
    if (p->used) {
        struct sl_rec rec;
        sl_oldest(p, &rec);
        size_t need = sizeof rec + ((rec.len + 3) & ~(size_t)3);
        p->head += need;
        p->used -= need;
    }
    if (!p->used)
        p->head = p->tail = 0;
    if (p->throttled && p->used < SL_THROTTLE / 2) {
        p->throttled = 0;
        return 1;
    }
    if (!p->throttled && p->used > SL_THROTTLE)
        p->throttled = 1;
    return 0;
}

/* True when ACK (LEN bytes, a pure ACK parsed into AP) makes the ring's
** newest record, a pure ACK of the same connection with an older
** acknowledgement number, pointless: the guest learns nothing from it
** that the newer one does not say. Equal numbers stay apart: duplicate
** ACKs drive the guest's fast retransmit. */
static int sl_ack_supersedes(struct sl_priv *p, const uint8_t *ack, size_t len,
                                const struct nb_pkt *ap)
{
    struct sl_rec rec;
    struct nb_pkt op;
    const uint8_t *old = sl_newest(p, &rec);
    if (!old || rec.len != len || !nb_tcp_plain(old, rec.len, &op) || op.l4 != ap->l4 ||
        !sl_pure_ack(old, &op))
        return 0;
    /* Same addresses and ports: IPv4 12..19 or IPv6 8..39 of the IP header. */
    size_t a0 = ap->l3 + (ap->v6 ? 8 : 12), a1 = ap->l4 + 4;
    if (memcmp(old, ack, 14) != 0 || memcmp(old + a0, ack + a0, a1 - a0) != 0)
        return 0;
    return (int32_t)(nb_get32(ack + ap->l4 + 8) - nb_get32(old + ap->l4 + 8)) > 0;
}

/* Room for GROW more bytes at the ring's tail, in one piece. At the end of
** the ring a record header's worth stays free, for the wrap mark. */
static int sl_room(const struct sl_priv *p, size_t grow)
{
    return p->tail >= p->head ? SL_RING - p->tail >= grow + sizeof(struct sl_rec)
                              : p->head - p->tail > grow;
}

/* Append data segment F (parsed into FP, PAY payload bytes; nb_join_seg)
** to the ring's newest record when it continues it (nb_join_fits), making
** that record one TSO frame. libslirp sends a window's worth of segments
** in one burst; the guest then takes one frame, one write and one pass
** through its stack for the burst instead of one per segment, and answers
** with one ACK. libslirp made the segments: their checksums are not
** checked again. Returns 1 when F was joined. Lock held. */
static int sl_join(netbe *be, struct sl_priv *p, const uint8_t *f,
                      const struct nb_pkt *fp, size_t pay)
{
    struct sl_rec rec;
    struct nb_pkt op;
    struct nb_join j;
    size_t opay;
    uint64_t tso = fp->v6 ? NETBE_F_GUEST_TSO6 : NETBE_F_GUEST_TSO4;
    uint8_t *old = be->features & tso && be->features & NETBE_F_GUEST_CSUM
                   ? sl_newest(p, &rec) : NULL;
    if (!old || !nb_tcp_plain(old, rec.len, &op) || !(opay = nb_join_seg(old, rec.len, &op)))
        return 0;
    nb_join_start(&j, old, &op, opay, rec.gso_size);
    size_t grow = ((rec.len + pay + 3) & ~(size_t)3) - ((rec.len + 3) & ~(size_t)3);
    if (!nb_join_fits(&j, old, f, fp, pay) || !sl_room(p, grow))
        return 0;
    memcpy(old + rec.len, f + fp->hdrs, pay);
    nb_join_add(&j, f, fp, pay);
    nb_join_finish(&j, old);
    rec.len = (uint32_t)j.p.end;
    rec.gso_size = (uint16_t)j.mss;
    memcpy(p->ring + p->last, &rec, sizeof rec);
    p->tail += grow;
    p->used += grow;
    return 1;
}

/* libslirp hands us a frame for the guest (lock held). A full ring drops
** it, as a NIC with no buffers would; TCP resends. */
static ssize_t sl_cb_send(const void *buf, size_t len, void *opaque)
{
    netbe *be = opaque;
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    size_t need = sizeof(struct sl_rec) + ((len + 3) & ~(size_t)3), pay;
    struct nb_pkt pk;
    int tcp = nb_tcp_plain(buf, len, &pk);
    if (tcp && sl_pure_ack(buf, &pk) && sl_ack_supersedes(p, buf, len, &pk)) {
        /* A burst of guest segments is answered by one ACK, not one each. */
        memcpy(p->ring + p->last + sizeof(struct sl_rec), buf, len);
        return (ssize_t)len;
    }
    if (tcp && (pay = nb_join_seg(buf, len, &pk)) && sl_join(be, p, buf, &pk, pay))
        return (ssize_t)len;
    if (!p->used)
        p->head = p->tail = 0;
    if (len <= NETBE_MAX_FRAME && p->tail >= p->head && !sl_room(p, need) &&
        p->head > need) {
        /* Not enough room before the end (room stays for this mark). */
        uint32_t wrap = SL_WRAP;
        memcpy(p->ring + p->tail, &wrap, 4);
        p->used += SL_RING - p->tail;
        p->tail = 0;
        p->last = SIZE_MAX;      /* the newest record no longer ends at the tail */
    }
    if (len > NETBE_MAX_FRAME || !sl_room(p, need)) {
        nb_count(&be->st.rx_drops, 1);
        return (ssize_t)len;
    }
    struct sl_rec rec = {(uint32_t)len, 0, 0};
    memcpy(p->ring + p->tail, &rec, sizeof rec);
    memcpy(p->ring + p->tail + sizeof rec, buf, len);
    p->last = p->tail;
    p->tail += need;
    p->used += need;
    return (ssize_t)len;
}

static void sl_cb_guest_error(const char *msg, void *opaque)
{
    nb_count(&((netbe *)opaque)->st.tx_errors, 1);
}

static int64_t sl_cb_clock(void *opaque)
{
    return (int64_t)nb_now_ns();
}

static void sl_timer_arm(struct sl_timer *t)
{
    if (t->expire_ms < 0) {
        evtimer_del(t->ev);
        return;
    }
    int64_t d = t->expire_ms - (int64_t)nb_now_ns() / 1000000;
    struct timeval tv = {d > 0 ? d / 1000 : 0, d > 0 ? (d % 1000) * 1000 : 0};
    evtimer_add(t->ev, &tv);
}

static void sl_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sl_timer *t = arg;
    struct sl_priv *p = NB_PRIV(t->be, struct sl_priv);
    pthread_mutex_lock(&p->lock);
    t->expire_ms = -1;
    slirp_handle_timer(p->slirp, t->id, t->cb_opaque);
    pthread_mutex_unlock(&p->lock);
    sl_kick(p);
}

static void *sl_cb_timer_new(SlirpTimerId id, void *cb_opaque, void *opaque)
{
    netbe *be = opaque;
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    struct sl_timer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->be = be;
    t->id = id;
    t->cb_opaque = cb_opaque;
    t->expire_ms = -1;
    t->ev = evtimer_new(be->base, sl_on_timer, t);
    if (!t->ev) {
        free(t);
        return NULL;
    }
    t->next = p->timers;
    p->timers = t;
    return t;
}

static void sl_cb_timer_free(void *timer, void *opaque)
{
    struct sl_priv *p = NB_PRIV((netbe *)opaque, struct sl_priv);
    for (struct sl_timer **tp = &p->timers; *tp; tp = &(*tp)->next) {
        if (*tp == timer) {
            *tp = (*tp)->next;
            event_free(((struct sl_timer *)timer)->ev);
            free(timer);
            return;
        }
    }
}

static void sl_cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
    struct sl_timer *t = timer;
    t->expire_ms = expire_ms;
    sl_timer_arm(t);
}

/* libslirp writes to its sockets without MSG_NOSIGNAL: where the OS lets
** a socket say so, a peer that went away gives EPIPE, not SIGPIPE. */
static void sl_cb_register(int fd, void *opaque)
{
#ifdef SO_NOSIGPIPE
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
}

/* The descriptor is about to be closed. libevent must forget it first:
** its number may come back for another socket. */
static void sl_cb_unregister(int fd, void *opaque)
{
    struct sl_priv *p = NB_PRIV((netbe *)opaque, struct sl_priv);
    if (fd < 0 || fd >= p->nfdw)
        return;
    struct sl_fdw *w = &p->fdw[fd];
    if (w->rd)
        event_del(w->rd);
    if (w->wr)
        event_del(w->wr);
    w->want = w->wanted = 0;
    w->revents = 0;
}

static void sl_cb_notify(void *opaque)
{
    sl_kick(NB_PRIV((netbe *)opaque, struct sl_priv));
}

static const SlirpCb sl_callbacks = {
    .send_packet = sl_cb_send,
    .guest_error = sl_cb_guest_error,
    .clock_get_ns = sl_cb_clock,
    .timer_free = sl_cb_timer_free,
    .timer_mod = sl_cb_timer_mod,
    .register_poll_fd = sl_cb_register,
    .unregister_poll_fd = sl_cb_unregister,
    .notify = sl_cb_notify,
    .timer_new_opaque = sl_cb_timer_new,
};

static void sl_on_fd(evutil_socket_t fd, short what, void *arg)
{
    netbe *be = arg;
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    pthread_mutex_lock(&p->lock);    /* a send on another thread may close fds */
    if (fd < p->nfdw)
        p->fdw[fd].revents |= (what & EV_READ ? SLIRP_POLL_IN : 0) |
                              (what & EV_WRITE ? SLIRP_POLL_OUT : 0);
    pthread_mutex_unlock(&p->lock);
    /* Every descriptor that fired in this loop pass is recorded before the
    ** run event, activated after them, does one round for all. */
    sl_kick(p);
}

static int sl_fdw_grow(struct sl_priv *p, int fd)
{
    if (fd < p->nfdw)
        return 0;
    int n = p->nfdw ? p->nfdw : 64;
    while (n <= fd)
        n *= 2;
    struct sl_fdw *w = realloc(p->fdw, n * sizeof *w);
    if (!w)
        return -1;
    memset(w + p->nfdw, 0, (n - p->nfdw) * sizeof *w);
    p->fdw = w;
    p->nfdw = n;
    return 0;
}

/* Bring the read and write events of FD to WANT. They are edge-triggered
** and stay registered while slirp names the descriptor, whatever it wants
** this round: each round polls what it wants at once (sl_round), so no
** epoll_ctl pair per ACK when a socket's interest flips. */
static void sl_fdw_set(netbe *be, int fd, int want)
{
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    struct sl_fdw *w = &p->fdw[fd];
    if (!w->rd) {
        w->rd = event_new(be->base, fd, EV_READ | EV_PERSIST | EV_ET, sl_on_fd, be);
        w->wr = event_new(be->base, fd, EV_WRITE | EV_PERSIST | EV_ET, sl_on_fd, be);
        if (!w->rd || !w->wr)
            return;
    }
    int change = want ^ w->want;
    if (change & SLIRP_POLL_IN)
        (want & SLIRP_POLL_IN) ? event_add(w->rd, NULL) : event_del(w->rd);
    if (change & SLIRP_POLL_OUT)
        (want & SLIRP_POLL_OUT) ? event_add(w->wr, NULL) : event_del(w->wr);
    w->want = want;
}

/* slirp_pollfds_fill's add_poll: note what FD wants; events change after. */
static int sl_add_poll(int fd, int events, void *opaque)
{
    netbe *be = opaque;
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    if (fd < 0 || sl_fdw_grow(p, fd) < 0)
        return -1;
    if (p->npoll == p->cappoll) {
        int cap = p->cappoll ? p->cappoll * 2 : 64;
        struct pollfd *n = realloc(p->pfd, cap * sizeof *n);
        if (!n)
            return -1;
        p->pfd = n;
        p->cappoll = cap;
    }
    int want = events & (SLIRP_POLL_IN | SLIRP_POLL_OUT);
    /* Guest-bound frames pile up: stop reading host sockets for now. */
    if (p->throttled)
        want &= ~SLIRP_POLL_IN;
    struct sl_fdw *w = &p->fdw[fd];
    /* Readiness that came while slirp did not care produced its edge
    ** already: only a new interest needs a look without waiting. */
    if (want & ~w->wanted)
        p->gained = 1;
    w->wanted = w->round == p->round ? w->wanted | want : want;
    w->round = p->round;
    sl_fdw_set(be, fd, w->want | want);
    p->pfd[p->npoll].fd = fd;
    p->pfd[p->npoll].events = (short)((want & SLIRP_POLL_IN ? POLLIN : 0) |
                                      (want & SLIRP_POLL_OUT ? POLLOUT : 0));
    return p->npoll++;
}

static int sl_get_revents(int idx, void *opaque)
{
    struct sl_priv *p = NB_PRIV((netbe *)opaque, struct sl_priv);
    if (idx < 0 || idx >= p->npoll)
        return 0;
    int fd = p->pfd[idx].fd;
    return fd < p->nfdw ? p->fdw[fd].revents : 0;
}

/* Rounds in a row while descriptors are ready at once: a guest ACK that
** makes room lets slirp read its host socket in the same loop pass
** instead of one epoll wakeup later. */
#define SL_ROUNDS    4

/* Poll what slirp asked for without waiting; note what is ready in the
** descriptor table. Returns how many are ready. */
static int sl_poll_now(struct sl_priv *p)
{
    int ready = 0;
    if (poll(p->pfd, (nfds_t)p->npoll, 0) <= 0)
        return 0;
    for (int i = 0; i < p->npoll; i++) {
        short ev = p->pfd[i].events, re = p->pfd[i].revents;
        if (!ev || !re)
            continue;        /* a hangup slirp is not waiting for must not spin */
        p->fdw[p->pfd[i].fd].revents |=
            (ev & POLLIN && re & (POLLIN | POLLHUP | POLLERR) ? SLIRP_POLL_IN : 0) |
            (ev & POLLOUT && re & (POLLOUT | POLLERR) ? SLIRP_POLL_OUT : 0);
        ready++;
    }
    return ready;
}

/* One round: let slirp handle what fired and its timeouts, then learn
** what it wants next and arm the timeout it asks for; again while some of
** that is ready at once. Lock held. */
static void sl_round(netbe *be)
{
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    uint32_t timeout;
    for (int r = 0;; r++) {
        for (int i = 0; i < p->npoll; i++) {
            struct sl_fdw *w = &p->fdw[p->pfd[i].fd];
            w->acted = w->revents;
        }
        slirp_pollfds_poll(p->slirp, 0, sl_get_revents, be);
        for (int i = 0; i < p->npoll; i++)
            p->fdw[p->pfd[i].fd].revents = 0;
        p->round++;
        p->npoll = 0;
        p->gained = 0;
        timeout = UINT32_MAX;
        slirp_pollfds_fill(p->slirp, &timeout, sl_add_poll, be);
        /* libslirp reads or writes once per readiness: a descriptor it
        ** acted on and still wants may still be ready (an EOF behind the
        ** data), and its edge has passed, so it is polled again. One it
        ** no longer wants is looked at when it wants it again (gained). */
        int recheck = 0;
        for (int fd = 0; fd < p->nfdw; fd++) {
            struct sl_fdw *w = &p->fdw[fd];
            if (w->round != p->round)
                w->wanted = 0;
            recheck |= w->acted & w->wanted;
            w->acted = 0;
        }
        if (!(p->gained || recheck) || !sl_poll_now(p))
            break;
        if (r + 1 == SL_ROUNDS) {
            sl_kick(p);      /* edge-triggered events will not repeat it */
            break;
        }
    }
    /* Descriptors slirp no longer names stop being watched. */
    for (int fd = 0; fd < p->nfdw; fd++)
        if (p->fdw[fd].round != p->round && p->fdw[fd].want)
            sl_fdw_set(be, fd, 0);
    if (timeout != UINT32_MAX) {
        struct timeval tv = {timeout / 1000, (timeout % 1000) * 1000};
        evtimer_add(p->timeout_ev, &tv);
    } else {
        evtimer_del(p->timeout_ev);
    }
}

static int sl_rx_pending(netbe *be);

static void sl_on_run(evutil_socket_t fd, short what, void *arg)
{
    netbe *be = arg;
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    __atomic_store_n(&p->run_pending, 0, __ATOMIC_RELEASE);
    /* Frames waiting for the guest go first. The round may read host
    ** sockets, and those reads then overlap with the guest taking the
    ** frames, instead of delaying them (the ACK the guest sends back is
    ** what lets libslirp send more). libevent runs active events in the
    ** order they became active, so the receive event runs before this
    ** one runs again. */
    if (!p->rx_first && be->rx_enabled && sl_rx_pending(be)) {
        p->rx_first = 1;
        event_active(be->rx_ev, EV_READ, 0);
        sl_kick(p);
        return;
    }
    p->rx_first = 0;
    pthread_mutex_lock(&p->lock);
    sl_round(be);
    int ready = p->used > 0;
    pthread_mutex_unlock(&p->lock);
    /* Hand the frames over in this loop pass; netbe_rx_enable asks
    ** sl_rx_pending when receive was off. */
    if (ready && be->rx_enabled)
        event_active(be->rx_ev, EV_READ, 0);
}

/* Arm the timer that drops the oldest held datagram when it runs out of
** time, so it goes even when the guest sends nothing more (lock held). */
static void sl_frag_arm(struct sl_priv *p)
{
    uint64_t when = frag_deadline(&p->frag), now = nb_now_ns();
    if (!when || evtimer_pending(p->frag_ev, NULL))
        return;
    uint64_t us = when > now ? (when - now + 999) / 1000 : 0;
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    evtimer_add(p->frag_ev, &tv);
}

static void sl_on_frag_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sl_priv *p = NB_PRIV((netbe *)arg, struct sl_priv);
    pthread_mutex_lock(&p->lock);
    frag_expire(&p->frag, nb_now_ns());
    sl_frag_arm(p);
    pthread_mutex_unlock(&p->lock);
}

/* Install RULE in libslirp (lock held). */
static int sl_rule_install(struct sl_priv *p, struct sl_rule *r,
                           char *err, size_t errlen)
{
    int flags = r->proto == SL_UDP ? SLIRP_HOSTFWD_UDP : 0;
    const char *path = ((struct sockaddr_un *)&r->host)->sun_path;
    char why[NETBE_ERRMAX];
    int rc = r->host.ss_family == AF_UNIX ? netbe_unix_clear(path, why, sizeof why) : 0;
    if (rc < 0)
        return NB_ERR(-rc, "slirp: hostfwd '%s': %s", r->text, why);
    errno = 0;
    if (slirp_add_hostxfwd(p->slirp, (struct sockaddr *)&r->host, r->host_len,
                           (struct sockaddr *)&r->guest, r->guest_len, flags) < 0) {
        int e = errno ? errno : EADDRINUSE;
        return NB_ERR(e, "slirp: hostfwd '%s': cannot listen on the host side: %s",
                      r->text, strerror(e));
    }
    if (r->host.ss_family == AF_UNIX)
        netbe_unix_mark(path, &r->bound);
    return 0;
}

/* Remove R's UNIX socket once nothing listens on it, if libslirp bound it. */
static void sl_rule_release(struct sl_rule *r)
{
    if (r->host.ss_family == AF_UNIX)
        netbe_unix_release(((struct sockaddr_un *)&r->host)->sun_path, &r->bound);
}

static void sl_rule_uninstall(struct sl_priv *p, struct sl_rule *r)
{
    slirp_remove_hostxfwd(p->slirp, (struct sockaddr *)&r->host, r->host_len,
                          r->proto == SL_UDP ? SLIRP_HOSTFWD_UDP : 0);
    sl_rule_release(r);
}

static void sl_close(netbe *be)
{
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    if (p->slirp)
        slirp_cleanup(p->slirp);
    for (struct sl_rule *r = p->opts.rules; r; r = r->next)
        sl_rule_release(r);
    free(p->allow.dir);
    for (int fd = 0; fd < p->nfdw; fd++) {
        if (p->fdw[fd].rd)
            event_free(p->fdw[fd].rd);
        if (p->fdw[fd].wr)
            event_free(p->fdw[fd].wr);
    }
    while (p->timers)
        sl_cb_timer_free(p->timers, be);
    if (p->run_ev)
        event_free(p->run_ev);
    if (p->timeout_ev)
        event_free(p->timeout_ev);
    if (p->frag_ev)
        event_free(p->frag_ev);
    frag_free(&p->frag);
    free(p->fdw);
    free(p->pfd);
    free(p->ring);
    free(p->txbuf);
    sl_opts_free(&p->opts);
    pthread_mutex_destroy(&p->lock);
}

static int sl_start(netbe *be, char *err, size_t errlen)
{
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    struct sl_opts *o = &p->opts;
    SlirpConfig c;
    memset(&c, 0, sizeof c);
    c.version = 4;
    c.restricted = o->restricted;
    c.in_enabled = true;
    c.vnetwork = o->net;
    c.vnetmask = o->mask;
    c.vhost = o->host;
    c.in6_enabled = o->ipv6;
    c.vprefix_addr6 = o->net6;
    c.vprefix_len = (uint8_t)o->prefix6;
    c.vhost6 = o->host6;
    c.vhostname = o->hostname;
    c.tftp_server_name = o->tftp_name;
    c.tftp_path = o->tftp;
    c.bootfile = o->bootfile;
    c.vdhcp_start = o->dhcp;
    c.vnameserver = o->dns;
    c.vnameserver6 = o->dns6;
    c.vdnssearch = (const char **)o->dnssearch;
    c.vdomainname = o->domainname;
    c.if_mtu = o->mtu;
    c.if_mru = o->mtu;
    p->slirp = slirp_new(&c, &sl_callbacks, be);
    if (!p->slirp)
        return NB_ERR(EINVAL, "slirp: libslirp refused the configuration");
    if (o->gfwd_cmd && slirp_add_exec(p->slirp, o->gfwd_cmd, &o->gfwd_addr,
                                      (int)o->gfwd_port) < 0)
        return NB_ERR(EINVAL, "slirp: guestfwd to %s: libslirp refused it (is the address "
                      "already forwarded?)", inet_ntoa(o->gfwd_addr));
    for (struct sl_rule *r = o->rules; r; r = r->next) {
        int rc = sl_rule_install(p, r, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int sl_open(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    pthread_once(&sl_log_once, sl_log_install);
    pthread_mutex_init(&p->lock, NULL);
    p->last = SIZE_MAX;
    int rc = nb_allow_copy(&p->allow, &cfg->allow) < 0 ? NB_ERR(ENOMEM, "out of memory") :
             sl_opts_parse(cfg, &p->opts, err, errlen);
    if (rc < 0) {
        sl_close(be);
        return rc;
    }
#ifndef SO_NOSIGPIPE
    /* Nothing per socket here (Linux): the process-wide fallback. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
#endif
    p->ring = malloc(SL_RING);
    p->txbuf = malloc(NETBE_MAX_FRAME + SL_HDR);
    p->run_ev = event_new(be->base, -1, 0, sl_on_run, be);
    p->timeout_ev = evtimer_new(be->base, sl_on_run, be);
    p->frag_ev = evtimer_new(be->base, sl_on_frag_timer, be);
    frag_init(&p->frag, &be->st, p->opts.mtu);
    be->rx_ev = event_new(be->base, -1, EV_PERSIST, nb_on_rx, be);
    if (!p->ring || !p->txbuf || !be->rx_ev || !p->run_ev || !p->timeout_ev || !p->frag_ev)
        rc = NB_ERR(ENOMEM, "slirp: out of memory or descriptors");
    if (rc == 0) {
        pthread_mutex_lock(&p->lock);
        rc = sl_start(be, err, errlen);
        if (rc == 0)
            sl_round(be);
        pthread_mutex_unlock(&p->lock);
    }
    if (rc < 0)
        sl_close(be);
    return rc;
}

/* ---- Offloads: the guest's IPv4 TSO frames go to libslirp whole ----
** libslirp's TCP takes a segment of any length that fits the window it
** advertised, so a 64 KiB TSO frame from the guest is one slirp_input and
** one send() on the host socket instead of 45 of each, with one ACK back.
** It verifies every checksum, so the ones the guest left partial are
** completed here. Not IPv6: libslirp 4.7 answers an IPv6 packet longer
** than its MTU with "packet too big" and drops it, so netbe cuts IPv6 TSO
** frames in software first. */

#define SL_CAPS     (NETBE_F_CSUM | NETBE_F_HOST_TSO4 | NETBE_F_HOST_ECN | \
                     NETBE_F_GUEST_CSUM | NETBE_F_GUEST_TSO4 | NETBE_F_GUEST_TSO6)

static uint64_t sl_get_cap(netbe *be)
{
    return SL_CAPS;
}

/* New features are a device reset: frames queued under the old ones
** (joined into TSO frames, or with a checksum to be completed) are
** dropped, as a NIC drops its queue. */
static int sl_set_cap(netbe *be, uint64_t features, unsigned fe_hdr_len)
{
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    uint64_t dropped = 0;
    pthread_mutex_lock(&p->lock);
    for (; p->used; dropped++)
        sl_free_oldest(p);
    p->last = SIZE_MAX;
    be->be_hdr_len = features ? SL_HDR : 0;
    pthread_mutex_unlock(&p->lock);
    nb_count(&be->st.rx_drops, dropped);
    sl_kick(p);
    return 0;
}

/* Make F (an Ethernet frame of LEN bytes with header H) one libslirp takes:
** lengths set for a TSO frame, the IPv4 header checksum and the partial
** transport checksum computed. Returns 0, or -EINVAL for a frame whose
** header lies about it. A fragment is never repaired: its transport
** checksum covers the whole datagram, so a header asking to complete it
** lies, and rewriting its IP header would make a forged fragment pass the
** checks the reassembly makes. */
static int sl_complete(uint8_t *f, size_t len, const struct nb_vnet_hdr *h)
{
    int v4 = len >= 34 && f[12] == 0x08 && f[13] == 0x00 && (f[14] >> 4) == 4;
    int v6 = len >= 54 && f[12] == 0x86 && f[13] == 0xdd;
    size_t l4 = v4 ? 14 + (size_t)(f[14] & 15) * 4 : 54;
    if (!(h->flags & NB_HDR_F_NEEDS_CSUM))
        return h->gso_type == NB_HDR_GSO_NONE ? 0 : -EINVAL;
    if (frag_is_fragment(f, len))
        return -EINVAL;
    if ((!v4 && !v6) || h->csum_start != l4 || l4 + 8 > len ||
        (size_t)h->csum_start + h->csum_offset + 2 > len || len - 14 > 65535)
        return -EINVAL;
    uint8_t proto = v4 ? f[23] : f[20];
    size_t l4len = len - l4;
    if (v4) {
        nb_put16(f + 16, (unsigned)(len - 14));
        nb_ipv4_csum(f + 14);
    } else {
        nb_put16(f + 18, (unsigned)l4len);
    }
    /* From scratch: a TSO frame's partial sum may leave the length out. */
    uint8_t *ck = f + h->csum_start + h->csum_offset;
    ck[0] = ck[1] = 0;
    nb_csum_store(ck, nb_sum(nb_pseudo_sum(f + 14, v6, proto, l4len), f + l4, l4len),
                  proto == 17);
    return 0;
}

/* The guest sent a frame: into libslirp, which answers through
** sl_cb_send and may open or close host sockets; a round follows. IP
** fragments go through the reassembly table first: libslirp gets only
** whole datagrams (section 7). */
static ssize_t sl_send(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    size_t len = nb_iov_len(iov, iovcnt), hl = be->be_hdr_len, flen = len - hl;
    if (len > NETBE_MAX_FRAME + hl || len < hl + 14)
        return -EMSGSIZE;
    struct nb_vnet_hdr h;
    nb_hdr_read(iov, iovcnt, (unsigned)hl, &h);
    int whole = iovcnt == 1 && !nb_hdr_needs_offload(&h);
    pthread_mutex_lock(&p->lock);
    const uint8_t *frame = (const uint8_t *)iov[0].iov_base + hl;
    if (!whole) {
        nb_iov_to_buf(iov, iovcnt, hl, p->txbuf, flen);
        frame = p->txbuf;
        if (sl_complete(p->txbuf, flen, &h) < 0) {
            pthread_mutex_unlock(&p->lock);
            nb_count(&be->st.tx_bad_hdr, 1);
            return -EMSGSIZE;    /* counted as a drop: a header that lies */
        }
    }
    if (frag_input(&p->frag, frame, flen, nb_now_ns(), &frame, &flen) >= 0)
        slirp_input(p->slirp, frame, (int)flen);
    sl_frag_arm(p);
    pthread_mutex_unlock(&p->lock);
    sl_kick(p);
    return (ssize_t)len;
}

/* The header for record REC, frame F. With GUEST_CSUM a TCP segment goes
** with its checksum marked partial (the field holding the pseudo-header
** sum, as virtio asks): libslirp has summed it already, and so the guest
** need not verify it, which for a tap is work in our own write(). Joined
** segments go as one TSO frame. */
static struct nb_vnet_hdr sl_rec_hdr(netbe *be, const struct sl_rec *rec, uint8_t *f)
{
    struct nb_vnet_hdr h = {0};
    struct nb_pkt p;
    if (!(be->features & NETBE_F_GUEST_CSUM) || !nb_tcp_plain(f, rec->len, &p))
        return h;
    return nb_tcp_partial(f, &p, rec->gso_size);
}

/* Lend the ring's oldest frame: its header into *H, its bytes at *FRAME,
** kept until sl_rx_done. Returns its length, or 0 when none waits. */
static size_t sl_rx_lend(netbe *be, struct nb_vnet_hdr *h, const uint8_t **frame)
{
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    size_t len = 0;
    pthread_mutex_lock(&p->lock);
    if (p->used) {
        struct sl_rec rec;
        uint8_t *f = sl_oldest(p, &rec);
        if (p->head == p->last)
            p->last = SIZE_MAX;      /* nothing joins a frame out on loan */
        *h = sl_rec_hdr(be, &rec, f);
        *frame = f;
        len = rec.len;
    }
    pthread_mutex_unlock(&p->lock);
    return len;
}

/* The lent frame is gone: free its record. */
static void sl_rx_done(netbe *be)
{
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    pthread_mutex_lock(&p->lock);
    int resume = sl_free_oldest(p);
    pthread_mutex_unlock(&p->lock);
    if (resume)
        sl_kick(p);
}

static ssize_t sl_recv(netbe *be, const struct iovec *iov, int iovcnt)
{
    struct nb_vnet_hdr h;
    const uint8_t *f;
    size_t len = sl_rx_lend(be, &h, &f);
    if (!len)
        return 0;
    size_t room = nb_iov_len(iov, iovcnt), hl = be->be_hdr_len;
    nb_buf_to_iov(&h, hl < room ? hl : room, iov, iovcnt, 0);
    nb_buf_to_iov(f, len + hl <= room ? len : room > hl ? room - hl : 0, iov, iovcnt, hl);
    sl_rx_done(be);
    return (ssize_t)(len + hl);
}

static int sl_rx_pending(netbe *be)
{
    struct sl_priv *p = NB_PRIV(be, struct sl_priv);
    pthread_mutex_lock(&p->lock);
    int n = p->used > 0;
    pthread_mutex_unlock(&p->lock);
    return n;
}

static const struct nb_ops nb_slirp = {
    .prefix = "slirp", .keys = sl_keys, .priv_size = sizeof(struct sl_priv),
    .check = sl_check, .open = sl_open, .close = sl_close,
    .send = sl_send, .recv = sl_recv, .rx_pending = sl_rx_pending,
    .rx_lend = sl_rx_lend, .rx_done = sl_rx_done,
    .get_cap = sl_get_cap, .set_cap = sl_set_cap, .rx_joins = 1,
};

/* ---- Run-time host forwarding ---- */

static struct sl_priv *sl_priv_of(netbe *be)
{
    return be && be->ops == &nb_slirp ? NB_PRIV(be, struct sl_priv) : NULL;
}

static int sl_same_host(const struct sl_rule *a, const struct sl_rule *b)
{
    return a->proto == b->proto && a->host_len == b->host_len &&
           memcmp(&a->host, &b->host, a->host_len) == 0;
}

int netbe_slirp_hostfwd_add(netbe *be, const char *rule, char *err, size_t errlen)
{
    struct sl_priv *p = sl_priv_of(be);
    if (!p)
        return NB_ERR(ENOTSUP, "hostfwd: '%s' is not a slirp backend",
                      be ? be->name : "(null)");
    struct sl_rule *r = malloc(sizeof *r);
    if (!r)
        return NB_ERR(ENOMEM, "out of memory");
    int rc = sl_parse_rule(rule ? rule : "", 0, &p->opts, r, err, errlen);
    char why[NETBE_ERRMAX];
    if (rc == 0 && r->proto == SL_UNIX &&
        (rc = nb_allow_path(&p->allow, "hostfwd", ((struct sockaddr_un *)&r->host)->sun_path,
                            0, why, sizeof why)) < 0)
        NB_ERR(-rc, "slirp: not allowed by the embedder: %s", why);
    pthread_mutex_lock(&p->lock);
    for (struct sl_rule *o = p->opts.rules; rc == 0 && o; o = o->next)
        if (sl_same_host(o, r))
            rc = NB_ERR(EEXIST, "slirp: hostfwd '%s': the host side is already forwarded "
                        "by '%s'", rule, o->text);
    if (rc == 0)
        rc = sl_rule_install(p, r, err, errlen);
    if (rc == 0) {
        struct sl_rule **tail = &p->opts.rules;
        while (*tail)
            tail = &(*tail)->next;
        r->next = NULL;
        *tail = r;
    } else {
        free(r);
    }
    pthread_mutex_unlock(&p->lock);
    if (rc == 0)
        sl_kick(p);
    return rc;
}

int netbe_slirp_hostfwd_remove(netbe *be, const char *rule, char *err, size_t errlen)
{
    struct sl_priv *p = sl_priv_of(be);
    struct sl_rule key;
    if (!p)
        return NB_ERR(ENOTSUP, "hostfwd: '%s' is not a slirp backend",
                      be ? be->name : "(null)");
    int rc = sl_parse_rule(rule ? rule : "", 1, &p->opts, &key, err, errlen);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&p->lock);
    rc = NB_ERR(ENOENT, "slirp: hostfwd '%s': no forwarding from that host address "
                "and port", rule);
    for (struct sl_rule **rp = &p->opts.rules; *rp; rp = &(*rp)->next) {
        struct sl_rule *r = *rp;
        if (sl_same_host(r, &key)) {
            sl_rule_uninstall(p, r);
            *rp = r->next;
            free(r);
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&p->lock);
    if (rc == 0)
        sl_kick(p);
    return rc;
}

ssize_t netbe_slirp_hostfwd_list(netbe *be, char *buf, size_t len)
{
    struct sl_priv *p = sl_priv_of(be);
    if (!p)
        return -ENOTSUP;
    size_t used = 0;
    if (buf && len)
        buf[0] = '\0';
    pthread_mutex_lock(&p->lock);
    for (struct sl_rule *r = p->opts.rules; r; r = r->next)
        used += snprintf(buf ? buf + (used < len ? used : len) : NULL,
                         buf && used < len ? len - used : 0, "%s\n", r->text);
    pthread_mutex_unlock(&p->lock);
    return (ssize_t)used;
}

#else

/* Built with NETBE_OMIT_SLIRP: the backend is known, so its configs get
** this message rather than "unknown backend", and nothing opens. */
static int sl_omitted(char *err, size_t errlen)
{
    return NB_ERR(ENOTSUP, "slirp: this netbe was built without libslirp "
                  "(NETBE_OMIT_SLIRP)");
}

static int sl_check(netbe_config *cfg, char *err, size_t errlen)
{
    return sl_omitted(err, errlen);
}

static int sl_open(netbe *be, const netbe_config *cfg, char *err, size_t errlen)
{
    return sl_omitted(err, errlen);
}

static void sl_close(netbe *be) {}

static const struct nb_ops nb_slirp = {
    .prefix = "slirp", .keys = sl_keys, .check = sl_check, .open = sl_open,
    .close = sl_close,
};

int netbe_slirp_hostfwd_add(netbe *be, const char *rule, char *err, size_t errlen)
{
    return sl_omitted(err, errlen);
}

int netbe_slirp_hostfwd_remove(netbe *be, const char *rule, char *err, size_t errlen)
{
    return sl_omitted(err, errlen);
}

ssize_t netbe_slirp_hostfwd_list(netbe *be, char *buf, size_t len)
{
    return -ENOTSUP;
}

/* libslirp is the only library that logs, so there is nothing to hand on. */
void netbe_set_log(netbe_log_fn fn, void *arg) {}

#endif /* NETBE_OMIT_SLIRP */

/* }================================================================ */

/* {===================================================================
** 16. The backend table
** ==================================================================== */

/* The backend table: one row per backend (struct nb_ops), ended by NULL,
** complete here, where it is declared. What a row and the core promise
** each other, besides what struct nb_ops says of each member:
** - type= names a row by its prefix exactly; backend= picks the row whose
**   prefix is the longest that starts the name.
** - check (when there) runs on every config before open, and also alone
**   (netbe_config_check, netbe.check) on any system: it checks and
**   normalizes keys and opens nothing.
** - open gets the checked config and priv_size bytes of private state,
**   zeroed, in the netbe's own allocation. An open (or open_queue) that
**   fails undoes its own work: close is never called after it.
** - close is called once, after flush and after the core stopped watching
**   the descriptor.
** - The socket backends that share nb_sock_send and nb_sock_recv (pair,
**   dgram) keep the descriptor as the first field of their private
**   state: those read it from there.
** - send returns the bytes taken or -EAGAIN, after which the core waits for
**   TX readiness; it may queue a frame only when nb_may_batch says so, and
**   then flush writes it out.
*/
static const struct nb_ops *const nb_backends[] = {
    &nb_tap, &nb_vmnet, &nb_ngd, &nb_stream, &nb_dgram, &nb_null, &nb_pair,
    &nb_netgraph, &nb_netmap, &nb_vale, &nb_slirp, NULL,
};

static const struct nb_ops *nb_find_ops(const netbe_config *cfg)
{
    const char *type = netbe_config_get(cfg, "type");
    const char *name = netbe_config_get(cfg, "backend");
    const struct nb_ops *best = NULL;
    for (int i = 0; nb_backends[i]; i++) {
        const struct nb_ops *o = nb_backends[i];
        if (type) {
            if (strcmp(type, o->prefix) == 0)
                return o;
        } else if (name && strncmp(name, o->prefix, strlen(o->prefix)) == 0 &&
                   (!best || strlen(o->prefix) > strlen(best->prefix))) {
            best = o;
        }
    }
    return best;
}

static void nb_list_types(char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; nb_backends[i]; i++)
        used += snprintf(out + used, used < len ? len - used : 0, "%s%s",
                         used ? ", " : "", nb_backends[i]->prefix);
}

/* }================================================================ */

/* {===================================================================
** 17. Lua sandboxes: untrusted Lua within bounds of memory and time
** ====================================================================
** Lua code netbe does not trust: policy hooks, and, through the Lua
** module, policy and topology files (netbe.h, "Lua sandboxes"). Without
** Lua (NETBE_OMIT_LUA) every call fails, naming why.
*/

#ifndef NETBE_OMIT_LUA

/* A sandbox is a lua_State with its own allocator, whose userdata is the
** struct sbx below: the memory bound, and the account of the call that
** runs in it. The time bound is CPU time, read lazily: the monotonic clock
** is cheap and is read at checks; only when it says the deadline passed is
** the thread's CPU clock read, to tell this call's time from time the
** thread spent preempted. Checks come from the count hook, from the
** allocator every SBX_WORK bytes, and from the library functions whose
** work does not follow from the size of what they touch. A call whose
** work stays below one check reads no clock at all. */
enum { SBX_RUNNING = 1, SBX_TIME, SBX_BUDGET };

#define SBX_WORK       (1u << 20)    /* work units (about a byte each) between checks */
#define SBX_STEP_BYTES (16u << 20)   /* bytes one run of the count hook may touch */
#define SBX_STEP_MIN   1             /* instructions between count hooks, at least */
#define SBX_STEP_MAX   1000          /* and at most */

struct sbx {
    lua_State *L;                /* the state (sandboxes have no coroutines) */
    size_t mem_used, mem_limit;
    size_t mem_base;             /* what the libraries hold */
    size_t *pool_used;           /* shared with other states, or NULL */
    size_t pool_limit;
    uint64_t time_limit;         /* CPU nanoseconds per call */
    uint64_t budget;             /* instructions per call; 0: no count */
    /* The call running now. */
    int state;                   /* 0 idle, SBX_RUNNING, or the bound it passed */
    int step;                    /* the count hook's interval */
    size_t move_at;              /* mem_used from which that is too long */
    int mark_half;               /* sbx_mark's last HALF, and its move_at */
    size_t mark_at;
    uint64_t left;               /* instructions left */
    uint64_t deadline;           /* monotonic; 0 until the first check */
    uint64_t cpu_start;          /* the thread's CPU clock at the first check */
    size_t work;                 /* units since the last check */
};

static struct sbx *sbx_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

static uint64_t sbx_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* 1 once the running call has used its time; the first check starts it. */
static int sbx_expired(struct sbx *sb)
{
    if (sb->state == SBX_TIME)
        return 1;
    uint64_t now = nb_now_ns();
    if (!sb->deadline) {
        sb->deadline = now + sb->time_limit;
        sb->cpu_start = sbx_cpu_ns();
        return 0;
    }
    if (now < sb->deadline)
        return 0;
    uint64_t used = sbx_cpu_ns() - sb->cpu_start;
    if (used < sb->time_limit) {
        sb->deadline = now + (sb->time_limit - used);
        return 0;
    }
    sb->state = SBX_TIME;
    return 1;
}

/* Count UNITS of work; 1 when a check finds the time used. */
static int sbx_spend(struct sbx *sb, size_t units)
{
    sb->work += units;
    if (sb->work < SBX_WORK)
        return 0;
    sb->work = 0;
    return sbx_expired(sb);
}

static void sbx_count(lua_State *L, lua_Debug *ar);
static void sbx_move(struct sbx *sb);

/* Refuses what would pass the memory bound (or the pool's). When a check
** here finds the time used, the count hook is set to run at the next
** instruction and raise the error there, where it can name the line; when
** the state grows past move_at, the hook is moved up (sbx_move). */
static void *sbx_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct sbx *sb = ud;
    if (!ptr)
        osize = 0;
    if (nsize > osize) {
        size_t grow = nsize - osize;
        if (grow > sb->mem_limit - sb->mem_used ||
            (sb->pool_used && grow > sb->pool_limit - *sb->pool_used))
            return NULL;
        if (sb->state == SBX_RUNNING && sbx_spend(sb, grow))
            lua_sethook(sb->L, sbx_count, LUA_MASKCOUNT, 1);
    }
    void *q = NULL;
    if (nsize == 0)
        free(ptr);
    else if (!(q = realloc(ptr, nsize)))
        return NULL;
    sb->mem_used = sb->mem_used - osize + nsize;
    if (sb->pool_used)
        *sb->pool_used = *sb->pool_used - osize + nsize;
    if (sb->mem_used >= sb->move_at && sb->state == SBX_RUNNING)
        sbx_move(sb);
    return q;
}

static void sbx_fmt_time(char *buf, size_t len, uint64_t ns)
{
    static const struct { uint64_t div; const char *unit; } u[] = {
        {1000000000u, "s"}, {1000000u, "ms"}, {1000u, "us"}, {1, "ns"}};
    size_t i = 0;
    while (ns % u[i].div)
        i++;
    snprintf(buf, len, "%llu %s", (unsigned long long)(ns / u[i].div), u[i].unit);
}

static void sbx_fmt_bytes(char *buf, size_t len, size_t n)
{
    if (n % (1u << 20) == 0)
        snprintf(buf, len, "%zu MiB", n >> 20);
    else if (n % 1024 == 0)
        snprintf(buf, len, "%zu KiB", n >> 10);
    else
        snprintf(buf, len, "%zu bytes", n);
}

/* "time bound of 1 ms", for the bound the call passed. */
static void sbx_bound(const struct sbx *sb, int status, char *buf, size_t len)
{
    char v[32];
    if (status == SBX_BUDGET) {
        snprintf(buf, len, "instruction budget of %llu", (unsigned long long)sb->budget);
    } else if (status == SBX_TIME) {
        sbx_fmt_time(v, sizeof v, sb->time_limit);
        snprintf(buf, len, "time bound of %s", v);
    } else {
        sbx_fmt_bytes(v, sizeof v, sb->mem_limit);
        snprintf(buf, len, "memory bound of %s", v);
    }
}

/* Raise "FILE:LINE: ran past its BOUND", at the innermost Lua line. */
static int sbx_raise(lua_State *L, struct sbx *sb)
{
    char what[64];
    lua_Debug ar;
    sbx_bound(sb, sb->state, what, sizeof what);
    for (int level = 0; lua_getstack(L, level, &ar); level++) {
        lua_getinfo(L, "Sl", &ar);
        if (ar.currentline > 0) {
            lua_pushfstring(L, "%s:%d: ran past its %s", ar.short_src, ar.currentline, what);
            return lua_error(L);
        }
    }
    lua_pushfstring(L, "ran past its %s", what);
    return lua_error(L);
}

/* For library functions: count UNITS of work, raise once the time is up. */
static void sbx_charge(lua_State *L, size_t units)
{
    struct sbx *sb = sbx_of(L);
    if (sbx_spend(sb, units))
        sbx_raise(L, sb);
}

/* The count hook's interval: shorter as the state holds more, since one
** instruction (a string comparison, a vararg copy, next() over a sparse
** table) may touch all of it. */
static int sbx_step(const struct sbx *sb)
{
    size_t extra = sb->mem_used > sb->mem_base ? sb->mem_used - sb->mem_base : 0;
    /* The longest step without a division, which costs a hook call much. */
    uint64_t step = extra < SBX_STEP_BYTES / SBX_STEP_MAX ? SBX_STEP_MAX
                                                         : SBX_STEP_BYTES / (extra + 1);
    step = step < SBX_STEP_MIN ? SBX_STEP_MIN : step > SBX_STEP_MAX ? SBX_STEP_MAX : step;
    return (int)(step > sb->left ? sb->left : step);
}

/* Set move_at to where sbx_step() falls to HALF or below: extra bytes of
** SBX_STEP_BYTES / (HALF + 1) or more. The last is kept: a hook's calls
** all ask for the same HALF, and the division would cost a call much. */
static void sbx_mark(struct sbx *sb, int half)
{
    if (half != sb->mark_half) {
        sb->mark_half = half;
        sb->mark_at = half < SBX_STEP_MIN ? SIZE_MAX
                                          : sb->mem_base + SBX_STEP_BYTES / ((size_t)half + 1);
    }
    sb->move_at = sb->mark_at;
}

/* Set the count hook to run every STEP instructions from now. */
static void sbx_hook(lua_State *L, struct sbx *sb, int step)
{
    sb->step = step;
    sbx_mark(sb, step / 2);
    lua_sethook(L, sbx_count, LUA_MASKCOUNT, step);
}

static void sbx_set_step(lua_State *L, struct sbx *sb)
{
    int step = sbx_step(sb);
    if (step != sb->step)
        sbx_hook(L, sb, step);
}

/* The state grew within a step so much that the step is at least twice
** what it should be now (or, unhooked, no shorter than the call): one
** instruction may now touch many times what one was allowed to, so the
** hook is set to the new step at once. Lua restarts its count then and
** does not tell how far it was: the part step goes uncounted, so a call
** may run up to a step past its budget for each move, rather than fail
** one that fits (charged whole, a budget of a step would be spent at the
** first move). The halving bounds the moves between two runs of the hook;
** each needs the state to grow, which the time bound meters. */
static void sbx_move(struct sbx *sb)
{
    sbx_hook(sb->L, sb, sbx_step(sb));
}

static void sbx_count(lua_State *L, lua_Debug *ar)
{
    struct sbx *sb = sbx_of(L);
    if (sb->state == SBX_RUNNING) {
        sb->left -= (uint64_t)sb->step;
        sb->work = 0;
        if (sb->left == 0)
            sb->state = SBX_BUDGET;
        else
            sbx_expired(sb);
    }
    if (sb->state != SBX_RUNNING)
        sbx_raise(L, sb);
    sbx_set_step(L, sb);
}

/* Start a call's account. A call that runs at most MOST instructions (0:
** not known) fewer than one step never reaches its count hook, so none is
** set: Lua sends every instruction of hooked code through luaG_traceexec,
** which costs a one-line policy hook more than its own code. The allocator
** still sets the hook when a check finds the time used, or when the state
** grows until a step would be no longer than the call; what ran before
** goes uncounted, as the call is shorter than its budget (at least a step). */
NB_INLINE void sbx_begin(lua_State *L, struct sbx *sb, int most)
{
    sb->state = SBX_RUNNING;
    sb->deadline = 0;
    sb->work = 0;
    sb->left = sb->budget ? sb->budget : UINT64_MAX;
    int step = sbx_step(sb);
    if (most > 0 && most < step) {
        sb->step = step;
        sbx_mark(sb, most);
        if (lua_gethookmask(L))
            lua_sethook(L, NULL, 0, 0);
    } else {
        sbx_hook(L, sb, step);
    }
}

/* ---- Lua sandbox: patterns ---- */

/* Lua 5.4's patterns (string.find, match, gmatch, gsub) with Lua's
** semantics and messages, matched by this matcher rather than Lua's so
** that every step is counted: backtracking (".-.-.-x" on a long subject)
** takes time that grows as a power of the subject's length. */
#define SBX_CAPTURES   32            /* LUA_MAXCAPTURES */
#define SBX_PAT_DEPTH  200           /* recursion, as Lua's MAXCCALLS */
#define SBX_PAT_STEP   32            /* work units one matcher step costs */
#define SBX_CAP_OPEN     (-1)
#define SBX_CAP_POSITION (-2)

struct sbx_pat {
    lua_State *L;
    const char *s0, *s_end;      /* the subject */
    const char *p_end;           /* the end of the pattern */
    int depth;                   /* recursion left */
    int ncap;
    struct { const char *at; ptrdiff_t len; } cap[SBX_CAPTURES];
    size_t work;                 /* units not yet charged */
};

static void sbx_pat_init(struct sbx_pat *m, lua_State *L, const char *s, size_t ls,
                         const char *p, size_t lp)
{
    m->L = L;
    m->s0 = s;
    m->s_end = s + ls;
    m->p_end = p + lp;
    m->work = 0;
}

static void sbx_pat_reset(struct sbx_pat *m)
{
    m->depth = SBX_PAT_DEPTH;
    m->ncap = 0;
}

static void sbx_pat_tick(struct sbx_pat *m, size_t units)
{
    m->work += units;
    if (m->work >= SBX_WORK / 16) {
        sbx_charge(m->L, m->work);
        m->work = 0;
    }
}

/* Does character C belong to class %CL? */
static int sbx_pat_class(int c, int cl)
{
    int r;
    switch (tolower(cl)) {
    case 'a': r = isalpha(c); break;
    case 'c': r = iscntrl(c); break;
    case 'd': r = isdigit(c); break;
    case 'g': r = isgraph(c); break;
    case 'l': r = islower(c); break;
    case 'p': r = ispunct(c); break;
    case 's': r = isspace(c); break;
    case 'u': r = isupper(c); break;
    case 'w': r = isalnum(c); break;
    case 'x': r = isxdigit(c); break;
    case 'z': r = c == 0; break;      /* deprecated in Lua 5.2, still accepted */
    default: return cl == c;
    }
    return isupper(cl) ? !r : r != 0;
}

/* Past the single-character class that starts at P. */
static const char *sbx_pat_class_end(struct sbx_pat *m, const char *p)
{
    switch (*p++) {
    case '%':
        if (p == m->p_end)
            luaL_error(m->L, "malformed pattern (ends with '%%')");
        return p + 1;
    case '[':
        if (*p == '^')
            p++;
        do {                     /* the first ']' after '[' is a member */
            if (p == m->p_end)
                luaL_error(m->L, "malformed pattern (missing ']')");
            if (*p++ == '%' && p < m->p_end)
                p++;
        } while (*p != ']');
        return p + 1;
    default:
        return p;
    }
}

/* Does C belong to the set from P ('[') to END (its ']')? */
static int sbx_pat_set(int c, const char *p, const char *end)
{
    int in = 1;
    if (p[1] == '^') {
        in = 0;
        p++;
    }
    while (++p < end) {
        if (*p == '%') {
            p++;
            if (sbx_pat_class(c, (unsigned char)*p))
                return in;
        } else if (p[1] == '-' && p + 2 < end) {
            p += 2;
            if ((unsigned char)p[-2] <= c && c <= (unsigned char)*p)
                return in;
        } else if ((unsigned char)*p == c) {
            return in;
        }
    }
    return !in;
}

/* Does the subject character at S match the class from P to EP? */
static int sbx_pat_single(struct sbx_pat *m, const char *s, const char *p, const char *ep)
{
    if (s >= m->s_end)
        return 0;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.': return 1;
    case '%': return sbx_pat_class(c, (unsigned char)p[1]);
    case '[': return sbx_pat_set(c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

static const char *sbx_pat_match(struct sbx_pat *m, const char *s, const char *p);

/* %bxy at S, with x and y at P. */
static const char *sbx_pat_balance(struct sbx_pat *m, const char *s, const char *p)
{
    if (p >= m->p_end - 1)
        luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= m->s_end || *s != *p)
        return NULL;
    int depth = 1;
    while (++s < m->s_end) {
        sbx_pat_tick(m, 1);
        if (*s == p[1]) {
            if (--depth == 0)
                return s + 1;
        } else if (*s == *p) {
            depth++;
        }
    }
    return NULL;
}

/* The class P..EP repeated greedily (* and +), then the rest. */
static const char *sbx_pat_max(struct sbx_pat *m, const char *s, const char *p, const char *ep)
{
    ptrdiff_t i = 0;
    while (sbx_pat_single(m, s + i, p, ep)) {
        i++;
        sbx_pat_tick(m, 1);
    }
    for (; i >= 0; i--) {
        const char *r = sbx_pat_match(m, s + i, ep + 1);
        if (r)
            return r;
    }
    return NULL;
}

/* The class P..EP repeated lazily (-), then the rest. */
static const char *sbx_pat_min(struct sbx_pat *m, const char *s, const char *p, const char *ep)
{
    for (;; s++) {
        const char *r = sbx_pat_match(m, s, ep + 1);
        if (r || !sbx_pat_single(m, s, p, ep))
            return r;
    }
}

static const char *sbx_pat_open(struct sbx_pat *m, const char *s, const char *p,
                                ptrdiff_t what)
{
    if (m->ncap >= SBX_CAPTURES)
        luaL_error(m->L, "too many captures");
    m->cap[m->ncap].at = s;
    m->cap[m->ncap].len = what;
    m->ncap++;
    const char *r = sbx_pat_match(m, s, p);
    if (!r)
        m->ncap--;
    return r;
}

static const char *sbx_pat_close(struct sbx_pat *m, const char *s, const char *p)
{
    int l = m->ncap - 1;
    while (l >= 0 && m->cap[l].len != SBX_CAP_OPEN)
        l--;
    if (l < 0)
        luaL_error(m->L, "invalid pattern capture");
    m->cap[l].len = s - m->cap[l].at;
    const char *r = sbx_pat_match(m, s, p);
    if (!r)
        m->cap[l].len = SBX_CAP_OPEN;
    return r;
}

/* %1-%9 at S: the text capture C ('1'...) matched before. */
static const char *sbx_pat_backref(struct sbx_pat *m, const char *s, int c)
{
    int l = c - '1';
    if (l < 0 || l >= m->ncap || m->cap[l].len == SBX_CAP_OPEN)
        luaL_error(m->L, "invalid capture index %%%d", l + 1);
    size_t len = (size_t)m->cap[l].len;
    if ((size_t)(m->s_end - s) < len)
        return NULL;
    sbx_pat_tick(m, len);
    return memcmp(m->cap[l].at, s, len) == 0 ? s + len : NULL;
}

/* Match pattern P at subject S: the end of the match, or NULL. */
static const char *sbx_pat_match(struct sbx_pat *m, const char *s, const char *p)
{
    if (m->depth-- == 0)
        luaL_error(m->L, "pattern too complex");
    for (sbx_pat_tick(m, SBX_PAT_STEP); p != m->p_end && s; sbx_pat_tick(m, SBX_PAT_STEP)) {
        const char *ep;
        switch (*p) {
        case '(':
            if (p[1] == ')')
                s = sbx_pat_open(m, s, p + 2, SBX_CAP_POSITION);
            else
                s = sbx_pat_open(m, s, p + 1, SBX_CAP_OPEN);
            goto done;
        case ')':
            s = sbx_pat_close(m, s, p + 1);
            goto done;
        case '$':
            if (p + 1 != m->p_end)
                break;
            s = s == m->s_end ? s : NULL;
            goto done;
        case '%':
            if (p[1] == 'b') {
                s = sbx_pat_balance(m, s, p + 2);
                p += 4;
                continue;
            }
            if (p[1] == 'f') {
                p += 2;
                if (*p != '[')
                    luaL_error(m->L, "missing '[' after '%%f' in pattern");
                ep = sbx_pat_class_end(m, p);
                int prev = s == m->s0 ? 0 : (unsigned char)s[-1];
                int cur = s < m->s_end ? (unsigned char)*s : 0;
                if (sbx_pat_set(prev, p, ep - 1) || !sbx_pat_set(cur, p, ep - 1))
                    s = NULL;
                p = ep;
                continue;
            }
            if (isdigit((unsigned char)p[1])) {
                s = sbx_pat_backref(m, s, (unsigned char)p[1]);
                p += 2;
                continue;
            }
            break;
        }
        /* A single-character class, maybe with a repetition. */
        ep = sbx_pat_class_end(m, p);
        if (!sbx_pat_single(m, s, p, ep)) {
            if (*ep == '*' || *ep == '?' || *ep == '-')
                p = ep + 1;      /* zero repetitions */
            else
                s = NULL;
            continue;
        }
        switch (*ep) {
        case '?': {
            const char *r = sbx_pat_match(m, s + 1, ep + 1);
            if (r) {
                s = r;
                goto done;
            }
            p = ep + 1;
            continue;
        }
        case '+': s = sbx_pat_max(m, s + 1, p, ep); goto done;
        case '*': s = sbx_pat_max(m, s, p, ep); goto done;
        case '-': s = sbx_pat_min(m, s, p, ep); goto done;
        default: s++; p = ep; continue;
        }
    }
done:
    m->depth++;
    return s;
}

/* Capture I of the match S..E (the whole match when there are none): its
** text in *AT, and its length; a position capture is pushed instead and
** SBX_CAP_POSITION returned. */
static ptrdiff_t sbx_pat_capture(struct sbx_pat *m, int i, const char *s, const char *e,
                                 const char **at)
{
    if (i >= m->ncap) {
        if (i != 0)
            luaL_error(m->L, "invalid capture index %%%d", i + 1);
        *at = s;
        return e - s;
    }
    ptrdiff_t len = m->cap[i].len;
    *at = m->cap[i].at;
    if (len == SBX_CAP_OPEN)
        luaL_error(m->L, "unfinished capture");
    if (len == SBX_CAP_POSITION)
        lua_pushinteger(m->L, m->cap[i].at - m->s0 + 1);
    return len;
}

static void sbx_pat_push(struct sbx_pat *m, int i, const char *s, const char *e)
{
    const char *at;
    ptrdiff_t len = sbx_pat_capture(m, i, s, e, &at);
    if (len != SBX_CAP_POSITION)
        lua_pushlstring(m->L, at, (size_t)len);
}

/* Push the captures of the match S..E (S NULL: none for a capture-less
** pattern); returns how many. */
static int sbx_pat_push_all(struct sbx_pat *m, const char *s, const char *e)
{
    int n = m->ncap == 0 && s ? 1 : m->ncap;
    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        sbx_pat_push(m, i, s, e);
    return n;
}

/* Lua's relative start position: negative counts from the end. */
static size_t sbx_posrelat(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos;
    if (pos == 0 || pos < -(lua_Integer)len)
        return 1;
    return len + (size_t)pos + 1;
}

static int sbx_pat_plain(const char *p, size_t lp)
{
    for (size_t i = 0; i < lp; i++)
        if (p[i] && strchr("^$*+?.([%-", p[i]))
            return 0;
    return 1;
}

/* string.find (FIND) and string.match. */
static int sbx_find(lua_State *L, int find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = sbx_posrelat(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || sbx_pat_plain(p, lp))) {
        sbx_charge(L, ls - init + lp);   /* memmem is linear */
        const char *at = lp ? memmem(s + init, ls - init, p, lp) : s + init;
        if (!at) {
            luaL_pushfail(L);
            return 1;
        }
        lua_pushinteger(L, at - s + 1);
        lua_pushinteger(L, at - s + (lua_Integer)lp);
        return 2;
    }
    struct sbx_pat m;
    int anchor = *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    sbx_pat_init(&m, L, s, ls, p, lp);
    const char *s1 = s + init;
    do {
        sbx_pat_reset(&m);
        const char *e = sbx_pat_match(&m, s1, p);
        if (e) {
            if (!find)
                return sbx_pat_push_all(&m, s1, e);
            lua_pushinteger(L, s1 - s + 1);
            lua_pushinteger(L, e - s);
            return sbx_pat_push_all(&m, NULL, NULL) + 2;
        }
    } while (s1++ < m.s_end && !anchor);
    luaL_pushfail(L);
    return 1;
}

static int sbx_str_find(lua_State *L) { return sbx_find(L, 1); }
static int sbx_str_match(lua_State *L) { return sbx_find(L, 0); }

struct sbx_gmatch {
    const char *src, *p, *last;  /* where to go on; the end of the last match */
    struct sbx_pat m;
};

static int sbx_gmatch_next(lua_State *L)
{
    struct sbx_gmatch *g = lua_touserdata(L, lua_upvalueindex(3));
    g->m.L = L;
    for (const char *src = g->src; src <= g->m.s_end; src++) {
        sbx_pat_reset(&g->m);
        const char *e = sbx_pat_match(&g->m, src, g->p);
        if (e && e != g->last) {
            g->src = g->last = e;
            return sbx_pat_push_all(&g->m, src, e);
        }
    }
    return 0;
}

/* string.gmatch(s, pattern [, init]): the closure keeps S and the pattern
** as upvalues, so the pointers in its state stay valid. */
static int sbx_str_gmatch(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = sbx_posrelat(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls)
        init = ls + 1;
    lua_settop(L, 2);
    struct sbx_gmatch *g = lua_newuserdatauv(L, sizeof *g, 0);
    sbx_pat_init(&g->m, L, s, ls, p, lp);
    g->src = s + init;
    g->p = p;
    g->last = NULL;
    lua_pushcclosure(L, sbx_gmatch_next, 3);
    return 1;
}

/* gsub's replacement string (argument 3) for the match S..E. */
static void sbx_gsub_string(struct sbx_pat *m, luaL_Buffer *b, const char *s, const char *e)
{
    size_t l;
    const char *r = lua_tolstring(m->L, 3, &l), *pc;
    while ((pc = memchr(r, '%', l)) != NULL) {
        luaL_addlstring(b, r, (size_t)(pc - r));
        pc++;
        if (*pc == '%') {
            luaL_addchar(b, '%');
        } else if (*pc == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (isdigit((unsigned char)*pc)) {
            const char *at;
            ptrdiff_t len = sbx_pat_capture(m, *pc - '1', s, e, &at);
            if (len == SBX_CAP_POSITION)
                luaL_addvalue(b);
            else
                luaL_addlstring(b, at, (size_t)len);
        } else {
            luaL_error(m->L, "invalid use of '%%' in replacement string");
        }
        l -= (size_t)(pc + 1 - r);
        r = pc + 1;
    }
    luaL_addlstring(b, r, l);
}

/* Add the replacement for the match S..E; 1 when it changed the text. */
static int sbx_gsub_add(struct sbx_pat *m, luaL_Buffer *b, const char *s, const char *e, int tr)
{
    lua_State *L = m->L;
    if (tr == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        lua_call(L, sbx_pat_push_all(m, s, e), 1);
    } else if (tr == LUA_TTABLE) {
        sbx_pat_push(m, 0, s, e);
        lua_gettable(L, 3);
    } else {
        sbx_gsub_string(m, b, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1))
        return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return 1;
}

static int sbx_str_gsub(lua_State *L)
{
    size_t ls, lp;
    const char *src = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *last = NULL;
    int tr = lua_type(L, 3);
    lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1), n = 0;
    int anchor = *p == '^', changed = 0;
    luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION ||
                     tr == LUA_TTABLE, 3, "string/function/table");
    struct sbx_pat m;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (anchor) {
        p++;
        lp--;
    }
    sbx_pat_init(&m, L, src, ls, p, lp);
    while (n < max) {
        sbx_pat_reset(&m);
        const char *e = sbx_pat_match(&m, src, p);
        if (e && e != last) {
            n++;
            changed |= sbx_gsub_add(&m, &b, src, e, tr);
            src = last = e;
        } else if (src < m.s_end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor)
            break;
    }
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, src, (size_t)(m.s_end - src));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

/* ---- Lua sandbox: libraries ---- */

/* string.rep without Lua's endless loop over empty pieces: the first piece
** and separator are written, then what is written is copied after itself. */
static int sbx_str_rep(lua_State *L)
{
    size_t l, lsep;
    const char *s = luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0 || l + lsep == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (l + lsep < l || l + lsep > (size_t)LUA_MAXINTEGER / (size_t)n)
        return luaL_error(L, "resulting string too large");
    size_t total = (size_t)n * (l + lsep) - lsep, done = l < total ? l : total;
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, total);
    memcpy(out, s, done);
    if (done < total) {
        memcpy(out + done, sep, lsep);
        done += lsep;
    }
    while (done < total) {
        size_t chunk = done < total - done ? done : total - done;
        memcpy(out + done, out, chunk);
        done += chunk;
        sbx_charge(L, chunk);
    }
    luaL_pushresultsize(&b, total);
    return 1;
}

/* t2[to + k] = t1[from + k] for k = 0..n-1 (tables at T1 and T2), from the
** top when the ranges overlap that way; counts every element. */
static void sbx_table_shift(lua_State *L, int t1, lua_Integer from, int t2, lua_Integer to,
                            lua_Integer n, int down)
{
    for (lua_Integer k = 0; k < n; k++) {
        lua_Integer i = down ? n - 1 - k : k;
        lua_geti(L, t1, from + i);
        lua_seti(L, t2, to + i);
        if ((k & 1023) == 1023)
            sbx_charge(L, 1024 * 64);
    }
}

/* table.move(a1, f, e, t [, a2]), as Lua's with its checks. */
static int sbx_tab_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int tt = !lua_isnoneornil(L, 5) ? 5 : 1;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, tt, LUA_TTABLE);
    if (e >= f) {
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        lua_Integer n = e - f + 1;
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
        int down = !(t > e || t <= f || (tt != 1 && !lua_rawequal(L, 1, tt)));
        sbx_table_shift(L, 1, f, tt, t, n, down);
    }
    lua_pushvalue(L, tt);
    return 1;
}

/* table.insert(t, [pos,] v). */
static int sbx_tab_insert(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer e = luaL_len(L, 1), pos;
    e = (lua_Integer)((lua_Unsigned)e + 1u);
    switch (lua_gettop(L)) {
    case 2:
        pos = e;
        break;
    case 3:
        pos = luaL_checkinteger(L, 2);
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
        sbx_table_shift(L, 1, pos, 1, pos + 1, e - pos, 1);
        break;
    default:
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos);
    return 0;
}

/* table.remove(t [, pos]). */
static int sbx_tab_remove(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer size = luaL_len(L, 1);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    if (pos != size)
        luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2,
                      "position out of bounds");
    lua_geti(L, 1, pos);
    if (pos < size) {
        sbx_table_shift(L, 1, pos + 1, 1, pos, size - pos, 0);
        pos = size;
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos);
    return 1;
}

/* table.sort's default order, counted: a comparison of strings reads them. */
static int sbx_tab_less(lua_State *L)
{
    size_t la = 0, lb = 0;
    if (lua_type(L, 1) == LUA_TSTRING)
        lua_tolstring(L, 1, &la);
    if (lua_type(L, 2) == LUA_TSTRING)
        lua_tolstring(L, 2, &lb);
    sbx_charge(L, 64 + la + lb);
    lua_pushboolean(L, lua_compare(L, 1, 2, LUA_OPLT));
    return 1;
}

/* table.sort(t [, comp]): Lua's sort (upvalue 1) with a counted order. */
static int sbx_tab_sort(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_pushcfunction(L, sbx_tab_less);
    }
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 2, 0);
    return 0;
}

/* Open the libraries in a new sandbox and take out or bound what the
** header lists. Runs protected: any allocation may fail. */
static int sbx_setup(lua_State *L)
{
    static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},
        {LUA_STRLIBNAME, luaopen_string}, {LUA_TABLIBNAME, luaopen_table},
        {LUA_MATHLIBNAME, luaopen_math}, {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL}};
    static const char *const removed[] = {"dofile", "loadfile", "load", "collectgarbage",
        "print", "warn", "pcall", "xpcall", "setmetatable", "getmetatable", NULL};
    static const luaL_Reg strings[] = {{"find", sbx_str_find}, {"match", sbx_str_match},
        {"gmatch", sbx_str_gmatch}, {"gsub", sbx_str_gsub}, {"rep", sbx_str_rep},
        {NULL, NULL}};
    static const luaL_Reg tables[] = {{"move", sbx_tab_move}, {"insert", sbx_tab_insert},
        {"remove", sbx_tab_remove}, {NULL, NULL}};
    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    lua_pushglobaltable(L);
    for (const char *const *r = removed; *r; r++) {
        lua_pushnil(L);
        lua_setfield(L, -2, *r);
    }
    lua_getfield(L, -1, LUA_STRLIBNAME);
    luaL_setfuncs(L, strings, 0);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_getfield(L, -2, LUA_TABLIBNAME);
    luaL_setfuncs(L, tables, 0);
    lua_getfield(L, -1, "sort");
    lua_pushcclosure(L, sbx_tab_sort, 1);
    lua_setfield(L, -2, "sort");
    /* A seed from the clock, not from the state's address as luaopen_math's. */
    lua_getfield(L, -3, LUA_MATHLIBNAME);
    lua_getfield(L, -1, "randomseed");
    lua_pushinteger(L, (lua_Integer)nb_now_ns());
    lua_call(L, 1, 0);
    lua_pushnil(L);
    lua_setfield(L, -2, "randomseed");
    return 0;
}

static struct lua_State *sbx_new(const struct netbe_sandbox_limits *lim, size_t *pool,
                                 size_t pool_limit, char *err, size_t errlen)
{
    struct sbx *sb = calloc(1, sizeof *sb);
    char mem[32];
    if (!sb) {
        NB_ERR(ENOMEM, "out of memory");
        return NULL;
    }
    sb->mem_limit = lim && lim->memory ? lim->memory : 64u << 20;
    sb->time_limit = lim && lim->time_ns ? lim->time_ns : 1000000000u;
    sb->budget = lim ? lim->instructions : 0;
    sb->pool_used = pool;
    sb->pool_limit = pool_limit;
    sb->mark_half = -1;
    lua_State *L = sb->L = lua_newstate(sbx_alloc, sb);
    if (L) {
        lua_pushcfunction(L, sbx_setup);
        if (lua_pcall(L, 0, 0, 0) == LUA_OK) {
            sb->mem_base = sb->mem_used;
            return L;
        }
        lua_close(L);
    }
    free(sb);
    sbx_fmt_bytes(mem, sizeof mem, lim && lim->memory ? lim->memory : 64u << 20);
    NB_ERR(ENOMEM, "the Lua sandbox's libraries do not fit in %s", mem);
    return NULL;
}

struct lua_State *netbe_sandbox_new(const struct netbe_sandbox_limits *lim, char *err,
                                    size_t errlen)
{
    return sbx_new(lim, NULL, 0, err, errlen);
}

/* After a call that failed with RC, having ended in STATUS: the message in
** ERR and the error object popped. */
static int sbx_failed(lua_State *L, struct sbx *sb, int status, int rc, char *err,
                      size_t errlen)
{
    char what[64];
    if (rc == LUA_ERRMEM) {
        sbx_bound(sb, 0, what, sizeof what);
        rc = NB_ERR(ENOMEM, "went over its %s", what);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        rc = NB_ERR(status == SBX_RUNNING ? EINVAL : ETIMEDOUT, "%s", lua_tostring(L, -1));
    } else {
        rc = NB_ERR(EINVAL, "(error object is a %s value)", luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return rc;
}

int netbe_sandbox_call(struct lua_State *L, int nargs, int nresults, char *err,
                       size_t errlen)
{
    char what[64];
    struct sbx *sb = sbx_of(L);
    int base = lua_gettop(L) - nargs - 1;
    sbx_begin(L, sb, 0);
    int rc = lua_pcall(L, nargs, nresults, 0), status = sb->state;
    sb->state = 0;
    if (rc != LUA_OK)
        return sbx_failed(L, sb, status, rc, err, errlen);
    if (status == SBX_RUNNING)
        return 0;
    /* The time ran out in C code that ran no instruction after. */
    lua_settop(L, base);
    sbx_bound(sb, status, what, sizeof what);
    return NB_ERR(ETIMEDOUT, "ran past its %s", what);
}

struct sbx_chunk {
    const char *src, *name;
    size_t len;
};

/* Lua's parser reports nesting past its C stack as a bare "C stack
** overflow", with no place: name the chunk and say what is wrong. */
static int sbx_load_chunk(lua_State *L)
{
    const struct sbx_chunk *c = lua_touserdata(L, 1);
    if (luaL_loadbufferx(L, c->src, c->len, c->name, "t") == LUA_OK)
        return 1;
    if (strcmp(lua_tostring(L, -1), "C stack overflow") == 0)
        luaL_error(L, "%s: nested too deeply for Lua's parser (C stack overflow): use fewer "
                   "levels of brackets, parentheses, calls or blocks",
                   c->name[0] == '@' || c->name[0] == '=' ? c->name + 1 : c->name);
    return lua_error(L);
}

int netbe_sandbox_load(struct lua_State *L, const char *src, size_t len,
                       const char *chunkname, char *err, size_t errlen)
{
    struct sbx_chunk c = {src, chunkname, len};
    if (!lua_checkstack(L, 2))
        return NB_ERR(ENOMEM, "out of memory");
    lua_pushcfunction(L, sbx_load_chunk);
    lua_pushlightuserdata(L, &c);
    return netbe_sandbox_call(L, 1, 1, err, errlen);
}

void netbe_sandbox_close(struct lua_State *L)
{
    if (!L)
        return;
    struct sbx *sb = sbx_of(L);
    lua_close(L);
    free(sb);
}

#else

static int sbx_omitted(char *err, size_t errlen)
{
    return NB_ERR(ENOTSUP, "Lua sandboxes need Lua, and this netbe was built without it "
                  "(NETBE_OMIT_LUA)");
}

struct lua_State *netbe_sandbox_new(const struct netbe_sandbox_limits *lim, char *err,
                                    size_t errlen)
{
    sbx_omitted(err, errlen);
    return NULL;
}

int netbe_sandbox_load(struct lua_State *L, const char *src, size_t len,
                       const char *chunkname, char *err, size_t errlen)
{
    return sbx_omitted(err, errlen);
}

int netbe_sandbox_call(struct lua_State *L, int nargs, int nresults, char *err,
                       size_t errlen)
{
    return sbx_omitted(err, errlen);
}

void netbe_sandbox_close(struct lua_State *L) {}

#endif /* NETBE_OMIT_LUA */

/* }================================================================ */

/* {===================================================================
** 18. Policy: rules compiled into an index, matched per frame
** ====================================================================
** A frame is parsed once (nb_pkt_parse, every header read checked against
** the frame's and the packet's lengths) into a pol_pkt, which selects one
** candidate list: the rules that can match its direction, ethertype class,
** IP protocol class and destination port bucket, in their original order.
** Rules on one host address (a /32 or /128) that no port narrows are
** listed under that address instead, so a long host list costs a hash
** lookup; the frame's slot list and the lists under its source and
** destination addresses are merged in rule order. Only those candidates
** are tested. Counters have one writer (the thread evaluating) and readers
** anywhere, so they are bumped with relaxed load and store, not a locked
** add.
*/

/* ---- Fields ---- */

/* The match fields, one row per NETBE_M_* bit, in bit order. ORDER
** NETBE_M: netbe.h spells the bits out for embedders, and an assertion
** per row holds the table to them. A row gives the bit; the field as
** policy files and the packet view name it, which also names its members
** in struct netbe_rule; its kind; the largest number a policy file may
** give it; the names a policy file may give its values; and a PREFIX's
** prefix length member. pol_read finds each field in a frame; the kind
** does the rest:
**
**   kind    members             a frame's V matches   the view shows
**   NAME    F                   V == F                its name
**   ENUM    F                   V == F                V
**   TAG     F                   V == F                V, nil when untagged
**   RANGE   F_lo, F_hi          F_lo <= V <= F_hi     V
**   FLAGS   F, F_mask           (V & F_mask) == F     V
**   MAC     F, F_mask           (V & F_mask) == F     "xx:xx:xx:xx:xx:xx"
**   PREFIX  ip_family, F, PLEN  V is in F/PLEN        the address
*/
#define POL_FIELDS(X) \
    X(DIR,       dir,       NAME,   1,          "to_guest=0 from_guest=1", ) \
    X(SRC_MAC,   src_mac,   MAC,    0,          "", ) \
    X(DST_MAC,   dst_mac,   MAC,    0,          "", ) \
    X(ETHERTYPE, ethertype, ENUM,   0xffff,     "ipv4=0x0800 ipv6=0x86dd arp=0x0806 " \
                                                "vlan=0x8100 qinq=0x88a8 lldp=0x88cc", ) \
    X(VLAN,      vlan,      TAG,    4095,       "none=0xffff", ) \
    X(SRC_IP,    src_ip,    PREFIX, 128,        "", src_plen) \
    X(DST_IP,    dst_ip,    PREFIX, 128,        "", dst_plen) \
    X(PROTO,     proto,     ENUM,   255,        "icmp=1 tcp=6 udp=17 icmpv6=58 sctp=132 " \
                                                "udplite=136", ) \
    X(SPORT,     sport,     RANGE,  65535,      "", ) \
    X(DPORT,     dport,     RANGE,  65535,      "", ) \
    X(TCP_FLAGS, tcp_flags, FLAGS,  255,        "fin=1 syn=2 rst=4 psh=8 ack=16 urg=32 " \
                                                "ece=64 cwr=128", ) \
    X(ICMP_TYPE, icmp_type, ENUM,   255,        "echo-reply=0 unreachable=3 redirect=5 " \
                                                "echo-request=8 time-exceeded=11 " \
                                                "echo-request-v6=128 echo-reply-v6=129 " \
                                                "router-solicit=133 router-advert=134 " \
                                                "neighbor-solicit=135 " \
                                                "neighbor-advert=136", ) \
    X(LEN,       len,       RANGE,  65535 + 18, "", )

/* POL_F_DIR ...: a field's row, and its bit's number. */
enum {
#define POL_INDEX(BIT, ...) POL_F_##BIT,
    POL_FIELDS(POL_INDEX)
#undef POL_INDEX
    POL_NF
};

#define POL_ORDER(BIT, f, ...) _Static_assert(NETBE_M_##BIT == 1u << POL_F_##BIT, \
    "ORDER NETBE_M: row " #f " is not at the place of its bit in netbe.h");
POL_FIELDS(POL_ORDER)
#undef POL_ORDER

#define POL_M_ALL   ((1u << POL_NF) - 1)
/* The PREFIX rows, which share ip_family. */
#define POL_M_IP    (NETBE_M_SRC_IP | NETBE_M_DST_IP)

/* The members of struct netbe_rule each kind fills, for netbe_match_field. */
#define POL_SIZE(m) sizeof(((struct netbe_rule *)0)->m)
#define POL_MEMBER(m, bytes, lo, hi, bit) \
    {#m, offsetof(struct netbe_rule, m), POL_SIZE(m), bytes, lo, hi, bit}
#define POL_INT(m, lo, hi, bit)   POL_MEMBER(m, 0, lo, hi, bit)
#define POL_UINT(m, bit)          POL_INT(m, 0, (1ll << 8 * POL_SIZE(m)) - 1, bit)
#define POL_BYTES(m, lo, hi, bit) POL_MEMBER(m, 1, lo, hi, bit)
#define POL_MEMBERS_NAME(f, max, aux, bit)  1, {POL_INT(f, 0, max, bit)}
#define POL_MEMBERS_ENUM(f, max, aux, bit)  1, {POL_UINT(f, bit)}
#define POL_MEMBERS_TAG                     POL_MEMBERS_ENUM
#define POL_MEMBERS_RANGE(f, max, aux, bit) \
    2, {POL_UINT(f##_lo, bit), POL_UINT(f##_hi, bit)}
#define POL_MEMBERS_FLAGS(f, max, aux, bit) 2, {POL_UINT(f, bit), POL_UINT(f##_mask, bit)}
#define POL_MEMBERS_MAC(f, max, aux, bit) \
    2, {POL_BYTES(f, 6, 6, bit), POL_BYTES(f##_mask, 6, 6, 0)}
#define POL_MEMBERS_PREFIX(f, max, aux, bit) \
    3, {POL_INT(ip_family, 4, 6, 0), POL_BYTES(f, 4, 16, bit), POL_INT(aux, 0, max, 0)}

static const struct netbe_match_field pol_fields[POL_NF] = {
#define POL_DESCRIBE(BIT, f, KIND, max, names, aux) \
    {#f, NETBE_M_##BIT, #KIND, max, names, POL_MEMBERS_##KIND(f, max, aux, NETBE_M_##BIT)},
    POL_FIELDS(POL_DESCRIBE)
#undef POL_DESCRIBE
};

const struct netbe_match_field *netbe_match_field(int i)
{
    return i >= 0 && i < POL_NF ? &pol_fields[i] : NULL;
}

/* Ethertype classes and L4 classes that select a candidate list. */
enum { POL_L3_OTHER, POL_L3_ARP, POL_L3_IP4, POL_L3_IP6, POL_L3_N };
enum { POL_L4_NONE, POL_L4_TCP, POL_L4_UDP, POL_L4_ICMP, POL_L4_N };
#define POL_BUCKETS 256          /* destination port buckets for TCP and UDP */
#define POL_SLOTS   (2 * POL_L3_N * POL_L4_N * POL_BUCKETS)
#define POL_MAX_RULES 65535

/* What a frame carries, read once. Pointers point into the frame. */
struct pol_pkt {
    const uint8_t *p;
    size_t len;
    unsigned have;               /* NETBE_M_* bits the frame can be tested on */
    int l3class, l4class;
    int family;                  /* of the addresses, with NETBE_M_SRC_IP */
    union {
        size_t n;                /* a number */
        const uint8_t *at;       /* MAC, PREFIX: where in the frame */
    } v[POL_NF];                 /* by POL_F_*, where HAVE has the bit */
};

/* A compiled rule: the description with its values masked. */
struct pol_rule {
    struct netbe_rule d;         /* no pointers kept: name is below, the hook compiled */
    uint8_t src_ip_mask[16], dst_ip_mask[16];  /* one per PREFIX row */
    double rate_per_ns;
    int hook;                    /* LUA: its index in the policy's hooks */
    char name[64];
};

/* The mutable part of a rule; carried over by name on reload. */
struct pol_state {
    uint64_t hits, bytes, drops;
    double tokens;
    uint64_t last_ns;
};

/* The rules listed under one host address. */
struct pol_host {
    uint8_t key[20];             /* side (0 source, 1 destination), family, 0, 0, address */
    uint32_t off, n;             /* its rules: host_list[off .. off + n) */
};

struct netbe_policy {
    struct pol_rule *rules;
    struct pol_state *state;
    int nrules;
    int def, fail;
    uint32_t *list_off;          /* POL_SLOTS + 1 offsets into list */
    uint16_t *list;              /* rule indices, grouped by slot */
    int *byname;                 /* open-addressing table of rule indices */
    unsigned byname_mask;
    struct pol_host *hosts;      /* open-addressing table, NULL without host rules */
    unsigned host_mask;
    uint16_t *host_list;
    struct netbe_policy_stats st;
    struct pol_hook *hooks;      /* one per LUA rule */
    int nhooks;
    size_t hooks_mem;            /* what all hook states hold */
    struct netbe_sandbox_limits hook_limits;
};

static void pol_add(uint64_t *c, uint64_t n)
{
    nb_count_own(c, n);
}

/* ---- Reading a frame ---- */

static int pol_has_ports(uint8_t proto)
{
    return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == 132 || proto == 136;
}

int netbe_proto_has_ports(int proto)
{
    return proto >= 0 && proto <= 255 && pol_has_ports((uint8_t)proto);
}

/* The L4 class of protocol PROTO. */
static int pol_l4class(int proto)
{
    switch (proto) {
    case IPPROTO_TCP: return POL_L4_TCP;
    case IPPROTO_UDP: return POL_L4_UDP;
    case IPPROTO_ICMP: case IPPROTO_ICMPV6: return POL_L4_ICMP;
    default: return POL_L4_NONE;
    }
}

/* The fields of the IP packet nb_pkt_parse found in frame F as H; returns
** their bits. */
static unsigned pol_read_ip(struct pol_pkt *pk, const uint8_t *f, const struct nb_pkt *h)
{
    const uint8_t *ip = f + h->l3, *l4 = f + h->l4;
    int proto = h->proto, v6 = h->v6 != 0;
    /* IPv4's addresses are at 12 and 16, IPv6's at 8 and 24. */
    pk->family = 4 + 2 * v6;
    pk->v[POL_F_SRC_IP].at = ip + 12 - 4 * v6;
    pk->v[POL_F_DST_IP].at = ip + 16 + 8 * v6;
    if (proto < 0)
        return NETBE_M_SRC_IP | NETBE_M_DST_IP;
    int l4class = pol_l4class(proto);
    pk->v[POL_F_PROTO].n = (size_t)proto;
    pk->l4class = l4class;
    /* Fields come from a whole fixed header (TCP's and UDP's checked by
    ** nb_pkt_parse): SCTP's is 12 bytes, UDP-Lite's 8, ICMP's 4. */
    int whole = h->hdrs != 0;
    if (proto == 132)
        whole = nb_pkt_has_l4(h, 12);
    else if (proto == 136)
        whole = nb_pkt_has_l4(h, 8);
    else if (l4class == POL_L4_ICMP)
        whole = nb_pkt_has_l4(h, 4);
    unsigned have = NETBE_M_SRC_IP | NETBE_M_DST_IP | NETBE_M_PROTO;
    if (!whole)
        return have;
    if (pol_has_ports((uint8_t)proto)) {
        pk->v[POL_F_SPORT].n = nb_get16(l4);
        pk->v[POL_F_DPORT].n = nb_get16(l4 + 2);
        have |= NETBE_M_SPORT | NETBE_M_DPORT;
    }
    if (proto == IPPROTO_TCP) {
        pk->v[POL_F_TCP_FLAGS].n = l4[13];
        have |= NETBE_M_TCP_FLAGS;
    }
    if (l4class == POL_L4_ICMP) {
        pk->v[POL_F_ICMP_TYPE].n = l4[0];
        have |= NETBE_M_ICMP_TYPE;
    }
    return have;
}

/* ARP's sender and target protocol addresses, in A of LEN bytes; returns
** their bits. */
static unsigned pol_read_arp(struct pol_pkt *pk, const uint8_t *a, size_t len)
{
    if (len < 28 || nb_get16(a) != 1 || nb_get16(a + 2) != 0x0800 || a[4] != 6 || a[5] != 4)
        return 0;
    pk->family = 4;
    pk->v[POL_F_SRC_IP].at = a + 14;
    pk->v[POL_F_DST_IP].at = a + 24;
    return NETBE_M_SRC_IP | NETBE_M_DST_IP;
}

/* What frame F of LEN bytes going DIR carries: its headers as
** nb_pkt_parse finds them, the fields rules test read from there. */
static void pol_read(struct pol_pkt *pk, const uint8_t *f, size_t len, unsigned dir)
{
    struct nb_pkt h;
    unsigned have = NETBE_M_DIR | NETBE_M_LEN;
    pk->p = f;
    pk->len = len;
    pk->l3class = POL_L3_OTHER;
    pk->l4class = POL_L4_NONE;
    pk->v[POL_F_DIR].n = dir;
    pk->v[POL_F_LEN].n = len;
    if (len >= 14) {
        nb_pkt_parse(f, len, len, &h);
        have |= NETBE_M_SRC_MAC | NETBE_M_DST_MAC | NETBE_M_ETHERTYPE | NETBE_M_VLAN;
        pk->v[POL_F_DST_MAC].at = f;
        pk->v[POL_F_SRC_MAC].at = f + 6;
        pk->v[POL_F_ETHERTYPE].n = h.type;
        pk->v[POL_F_VLAN].n = h.vlan;
        if (h.l3 && h.type == 0x0800) {
            pk->l3class = POL_L3_IP4;
        } else if (h.l3 && h.type == 0x86dd) {
            pk->l3class = POL_L3_IP6;
        } else if (h.l3 && h.type == 0x0806) {
            pk->l3class = POL_L3_ARP;
            have |= pol_read_arp(pk, f + h.l3, len - h.l3);
        }
        if (h.end)
            have |= pol_read_ip(pk, f, &h);
    }
    pk->have = have;
}

/* ---- Matching ---- */

static int pol_mac_eq(const uint8_t *a, const uint8_t *want, const uint8_t *mask)
{
    for (int i = 0; i < 6; i++)
        if ((a[i] & mask[i]) != want[i])
            return 0;
    return 1;
}

static int pol_ip_eq(const uint8_t *a, const uint8_t *net, const uint8_t *mask, int family)
{
    if (family == 4) {
        uint32_t x, n, m;
        memcpy(&x, a, 4), memcpy(&n, net, 4), memcpy(&m, mask, 4);
        return (x & m) == n;
    }
    uint64_t x[2], n[2], m[2];
    memcpy(x, a, 16), memcpy(n, net, 16), memcpy(m, mask, 16);
    return ((x[0] & m[0]) == n[0]) & ((x[1] & m[1]) == n[1]);
}

/* The test of each kind: does field I of PK, F in the rule, match R? */
#define POL_TEST_NAME(f, i)   (pk->v[i].n == (size_t)r->d.f)
#define POL_TEST_ENUM         POL_TEST_NAME
#define POL_TEST_TAG          POL_TEST_NAME
#define POL_TEST_RANGE(f, i)  (pk->v[i].n >= r->d.f##_lo && pk->v[i].n <= r->d.f##_hi)
#define POL_TEST_FLAGS(f, i)  ((pk->v[i].n & r->d.f##_mask) == r->d.f)
#define POL_TEST_MAC(f, i)    pol_mac_eq(pk->v[i].at, r->d.f, r->d.f##_mask)
#define POL_TEST_PREFIX(f, i) (pk->family == r->d.ip_family && \
                               pol_ip_eq(pk->v[i].at, r->d.f, r->f##_mask, pk->family))

/* Numbers are tested first, then masked bytes. This runs for every
** candidate rule: a cheap mismatch early is what saves time. */
#define POL_COST_NAME   0
#define POL_COST_ENUM   0
#define POL_COST_TAG    0
#define POL_COST_RANGE  0
#define POL_COST_FLAGS  0
#define POL_COST_MAC    1
#define POL_COST_PREFIX 1

/* The tests of cost COST (a constant once inlined) of the fields in M. */
NB_INLINE int
pol_match_cost(const struct pol_rule *r, const struct pol_pkt *pk, unsigned m, int cost)
{
#define POL_MATCH(BIT, f, KIND, ...) \
    if (POL_COST_##KIND == cost && (m & NETBE_M_##BIT) && \
        !POL_TEST_##KIND(f, POL_F_##BIT)) \
        return 0;
    POL_FIELDS(POL_MATCH)
#undef POL_MATCH
    return 1;
}

NB_INLINE int
pol_match(const struct pol_rule *r, const struct pol_pkt *pk)
{
    unsigned m = r->d.match;
    return !(m & ~pk->have) && pol_match_cost(r, pk, m, 0) && pol_match_cost(r, pk, m, 1);
}

static unsigned pol_slot(int dir, int l3, int l4, unsigned bucket)
{
    return (((unsigned)dir * POL_L3_N + (unsigned)l3) * POL_L4_N + (unsigned)l4) *
           POL_BUCKETS + bucket;
}

static unsigned pol_pkt_slot(const struct pol_pkt *pk)
{
    int ports = pk->l4class == POL_L4_TCP || pk->l4class == POL_L4_UDP;
    unsigned bucket = ports && (pk->have & NETBE_M_DPORT) ?
                      (unsigned)(pk->v[POL_F_DPORT].n % POL_BUCKETS) : 0;
    return pol_slot((int)pk->v[POL_F_DIR].n, pk->l3class, pk->l4class, bucket);
}

/* ---- Token buckets ---- */

/* Take the frame's cost from the bucket of rule I; 0 when it does not fit. */
static int pol_bucket_take(netbe_policy *p, int i, size_t len, uint64_t *now)
{
    const struct pol_rule *r = &p->rules[i];
    struct pol_state *s = &p->state[i];
    if (!*now)
        *now = nb_now_ns();
    if (*now > s->last_ns) {
        s->tokens += (double)(*now - s->last_ns) * r->rate_per_ns;
        if (s->tokens > r->d.burst)
            s->tokens = r->d.burst;
        s->last_ns = *now;
    }
    double cost = r->d.rate_unit == NETBE_RATE_BITS ? (double)len * 8 : 1;
    if (s->tokens < cost)
        return 0;
    s->tokens -= cost;
    return 1;
}

/* ---- Lua hooks ---- */

#ifndef NETBE_OMIT_LUA


/* The packet view, a userdata: the frame only during a hook call, and the
** view's field names and the verdicts by the address of their strings.
** Lua keeps one string of each short text, so a key is found by address,
** with no string compared; the view's user value holds these strings,
** which keeps each address theirs. */
#define POL_VIEW_SLOTS 64        /* a power of 2, over twice the names */

struct pol_view {
    const struct pol_pkt *pk;
    const void *pass, *drop;
    const void *key[POL_VIEW_SLOTS];       /* open addressing; NULL: free */
    unsigned char field[POL_VIEW_SLOTS];   /* POL_F_* or POL_V_* of KEY */
};

/* Each hook has a sandbox of its own, whose extra space points at its
** view. Stack index 1 holds the view, 2 the hook function, 3 the result
** of the last call. */
struct pol_hook {
    lua_State *L;
    struct sbx *sb;
    struct pol_view *view;
    int straight;                /* its instructions when it runs each at most once; or 0 */
};

/* The view functions are closures over the view (upvalue 1): comparing
** identities is cheaper than luaL_checkudata's registry lookup. */
static struct pol_view *pol_view_check(lua_State *L)
{
    struct pol_view *v = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_touserdata(L, 1) != v)
        luaL_error(L, "expected the packet view as first argument (pkt:byte(i))");
    if (!v->pk)
        luaL_error(L, "packet view used outside its hook call");
    return v;
}
/* pkt:byte(off), pkt:u16(off), pkt:u32(off): big-endian, 0-based offsets
** into the Ethernet frame; nil past its end. */
static int pol_view_bytes(lua_State *L, unsigned n)
{
    const struct pol_pkt *pk = pol_view_check(L)->pk;
    lua_Integer off = luaL_checkinteger(L, 2);
    if (off < 0 || (uint64_t)off + n > pk->len) {
        lua_pushnil(L);
        return 1;
    }
    uint32_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | pk->p[off + i];
    lua_pushinteger(L, v);
    return 1;
}

static int pol_view_byte(lua_State *L) { return pol_view_bytes(L, 1); }
static int pol_view_u16(lua_State *L) { return pol_view_bytes(L, 2); }
static int pol_view_u32(lua_State *L) { return pol_view_bytes(L, 4); }

static void pol_push_mac(lua_State *L, const uint8_t *m)
{
    char text[18];
    snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3],
             m[4], m[5]);
    lua_pushstring(L, text);
}

static void pol_push_ip(lua_State *L, int family, const uint8_t *ip)
{
    char text[INET6_ADDRSTRLEN];
    inet_ntop(family == 4 ? AF_INET : AF_INET6, ip, text, sizeof text);
    lua_pushstring(L, text);
}

/* Push the name NAMES ("a=0 b=1") gives V, or V when it gives none. */
static void pol_push_name(lua_State *L, const char *names, size_t v)
{
    for (const char *s = names; *s;) {
        const char *eq = strchr(s, '=');
        char *end;
        if (strtoul(eq + 1, &end, 0) == v) {
            lua_pushlstring(L, s, (size_t)(eq - s));
            return;
        }
        s = *end ? end + 1 : end;
    }
    lua_pushinteger(L, (lua_Integer)v);
}

/* The view's fields: the match fields, then these. */
enum { POL_V_FAMILY = POL_NF, POL_V_BYTE, POL_V_U16, POL_V_U32, POL_V_N };
static const char *const pol_view_extra[] = {"family", "byte", "u16", "u32"};
_Static_assert(POL_V_N <= POL_VIEW_SLOTS / 2, "POL_VIEW_SLOTS: room for twice the fields");

static unsigned pol_view_slot(const void *key)
{
    return (unsigned)((uintptr_t)key >> 4) & (POL_VIEW_SLOTS - 1);
}

/* The field whose name is the string at KEY (lua_topointer), or -1. */
static int pol_view_field(const struct pol_view *v, const void *key)
{
    if (!key)
        return -1;
    for (unsigned i = pol_view_slot(key); v->key[i]; i = (i + 1) & (POL_VIEW_SLOTS - 1))
        if (v->key[i] == key)
            return v->field[i];
    return -1;
}

/* How each kind shows field I of PK. */
#define POL_VIEW_NAME(i, names) pol_push_name(L, names, pk->v[i].n)
#define POL_VIEW_ENUM(i, names) lua_pushinteger(L, (lua_Integer)pk->v[i].n)
#define POL_VIEW_TAG(i, names) \
    (pk->v[i].n != 0xffff ? POL_VIEW_ENUM(i, names) : lua_pushnil(L))
#define POL_VIEW_RANGE          POL_VIEW_ENUM
#define POL_VIEW_FLAGS          POL_VIEW_ENUM
#define POL_VIEW_MAC(i, names)  pol_push_mac(L, pk->v[i].at)
#define POL_VIEW_PREFIX(i, names) pol_push_ip(L, pk->family, pk->v[i].at)

/* Push field KEY of the packet, or nil when the frame does not carry it.
** Lua calls __index with the view itself, the only value with this
** metatable (sandboxes have no getmetatable), so no check of it is due. */
static int pol_view_index(lua_State *L)
{
    const struct pol_view *v = *(struct pol_view **)lua_getextraspace(L);
    const struct pol_pkt *pk = v->pk;
    if (!pk)
        luaL_error(L, "packet view used outside its hook call");
    int f = pol_view_field(v, lua_topointer(L, 2));
    if (f >= 0 && f < POL_NF && !(pk->have & 1u << f)) {
        lua_pushnil(L);
        return 1;
    }
    switch (f) {
#define POL_VIEW(BIT, f, KIND, max, names, ...) \
    case POL_F_##BIT: POL_VIEW_##KIND(POL_F_##BIT, names); break;
    POL_FIELDS(POL_VIEW)
#undef POL_VIEW
    case POL_V_FAMILY:
        pk->have & NETBE_M_SRC_IP ? lua_pushinteger(L, pk->family) : lua_pushnil(L);
        break;
    case POL_V_BYTE: lua_pushvalue(L, lua_upvalueindex(2)); break;
    case POL_V_U16: lua_pushvalue(L, lua_upvalueindex(3)); break;
    case POL_V_U32: lua_pushvalue(L, lua_upvalueindex(4)); break;
    default: lua_pushnil(L);
    }
    return 1;
}

/* Push the string S, keep it at I in the table below it and return its
** address. */
static const void *pol_view_keep(lua_State *L, const char *s, int i)
{
    lua_pushstring(L, s);
    const void *at = lua_topointer(L, -1);
    lua_rawseti(L, -2, i);
    return at;
}

/* Push the packet view, and point the state's extra space at it (run
** protected: any allocation may fail). */
static int pol_view_new(lua_State *L)
{
    static const lua_CFunction methods[] = {pol_view_byte, pol_view_u16, pol_view_u32};
    struct pol_view *v = lua_newuserdatauv(L, sizeof *v, 1);
    memset(v, 0, sizeof *v);
    lua_createtable(L, POL_V_N + 2, 0);
    for (int f = 0; f < POL_V_N; f++) {
        const void *key = pol_view_keep(L, f < POL_NF ? pol_fields[f].name
                                                      : pol_view_extra[f - POL_NF], f + 1);
        unsigned i = pol_view_slot(key);
        while (v->key[i])
            i = (i + 1) & (POL_VIEW_SLOTS - 1);
        v->key[i] = key;
        v->field[i] = (unsigned char)f;
    }
    v->pass = pol_view_keep(L, "pass", POL_V_N + 1);
    v->drop = pol_view_keep(L, "drop", POL_V_N + 2);
    lua_setiuservalue(L, -2, 1);
    *(struct pol_view **)lua_getextraspace(L) = v;
    lua_newtable(L);
    lua_pushvalue(L, -2);
    for (int i = 0; i < 3; i++) {
        lua_pushvalue(L, -3 - i);
        lua_pushcclosure(L, methods[i], 1);
    }
    lua_pushcclosure(L, pol_view_index, 4);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    return 1;
}

/* What of Lua 5.4's bytecode (lopcodes.h and ldump.c, the same from 5.4.0
** to 5.4.8) shows whether a function runs each of its instructions at most
** once and calls none: the opcodes that call, those of loops (FORLOOP to
** TFORLOOP), and the jump, whose offset is 25 bits from bit 7 in excess
** of 2^24 - 1. */
enum { POL_OP_JMP = 56, POL_OP_CALL = 68, POL_OP_TAILCALL = 69, POL_OP_FORLOOP = 73,
       POL_OP_TFORLOOP = 77 };

struct pol_dump {
    unsigned char b[64 + 4 * SBX_STEP_MAX];
    size_t n;
};

static int pol_dump_write(lua_State *L, const void *p, size_t n, void *ud)
{
    struct pol_dump *d = ud;
    if (n > sizeof d->b - d->n)
        return 1;                /* longer than a straight hook can be */
    memcpy(d->b + d->n, p, n);
    d->n += n;
    return 0;
}

/* A size in the dump format at *AT; SIZE_MAX when END cuts it short. */
static size_t pol_dump_size(const unsigned char **at, const unsigned char *end)
{
    size_t x = 0;
    while (*at < end && x <= SIZE_MAX >> 8) {
        unsigned b = *(*at)++;
        x = x << 7 | (b & 0x7f);
        if (b & 0x80)
            return x;
    }
    return SIZE_MAX;
}

/* The number of instructions of the hook on top of L's stack when it runs
** each at most once and calls no function, and is shorter than the longest
** count hook step; else 0. No loop, no jump back and no call is enough: no
** value in a hook's sandbox has a metatable whose methods run Lua code. */
static int pol_hook_straight(lua_State *L)
{
#if LUA_VERSION_NUM == 504
    struct pol_dump d;
    d.n = 0;
    lua_dump(L, pol_dump_write, &d, 1);
    /* The header, with the size of an instruction; then the sizes of
    ** LUAC_INT and LUAC_NUM, the count of upvalues, an empty source name
    ** (stripped), the first and last lines, 3 bytes, the code. */
    if (d.n < 15 || memcmp(d.b, LUA_SIGNATURE "\x54\x00\x19\x93\r\n\x1a\n\x04", 13) != 0)
        return 0;
    const unsigned char *at = d.b + 15 + d.b[13] + d.b[14] + 1, *end = d.b + d.n;
    if (pol_dump_size(&at, end) != 0)
        return 0;
    pol_dump_size(&at, end);
    pol_dump_size(&at, end);
    at += 3;
    size_t n = at < end ? pol_dump_size(&at, end) : SIZE_MAX;
    if (n == 0 || n >= SBX_STEP_MAX || (size_t)(end - at) < 4 * n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t ins;
        memcpy(&ins, at + 4 * i, 4);
        unsigned op = ins & 0x7f;
        if (op == POL_OP_CALL || op == POL_OP_TAILCALL ||
            (op >= POL_OP_FORLOOP && op <= POL_OP_TFORLOOP) ||
            (op == POL_OP_JMP && ins >> 7 < (1u << 24) - 1))
            return 0;
    }
    return (int)n;
#else
    return 0;
#endif
}

/* Make the sandbox of the hook of rule R, described by D, and run its chunk
** there to get the hook. */
static int pol_hook_new(netbe_policy *p, struct pol_rule *r, const struct netbe_rule *d,
                        char *err, size_t errlen)
{
    char why[NETBE_ERRMAX], mem[32];
    if (!d->hook || !d->hook_len)
        return NB_ERR(EINVAL, "rule '%s': action lua needs a hook", r->name);
    struct pol_hook *h = &p->hooks[p->nhooks];
    h->L = sbx_new(&p->hook_limits, &p->hooks_mem, NETBE_POLICY_HOOKS_MEMORY, why, sizeof why);
    if (!h->L) {
        sbx_fmt_bytes(mem, sizeof mem, p->hook_limits.memory);
        return NB_ERR(ENOMEM, "rule '%s': hook_memory %s (all hooks: %u MiB): %s", r->name,
                      mem, NETBE_POLICY_HOOKS_MEMORY >> 20, why);
    }
    p->nhooks++;
    h->sb = sbx_of(h->L);
    lua_pushcfunction(h->L, pol_view_new);
    int rc = netbe_sandbox_call(h->L, 0, 1, why, sizeof why);
    if (rc == 0)
        rc = netbe_sandbox_load(h->L, d->hook, d->hook_len, d->hook_name ? d->hook_name : "=hook",
                                why, sizeof why);
    if (rc == 0)
        rc = netbe_sandbox_call(h->L, 0, 1, why, sizeof why);
    if (rc < 0)
        return NB_ERR(-rc, "rule '%s': %s", r->name, why);
    h->view = lua_touserdata(h->L, 1);
    if (lua_type(h->L, 2) != LUA_TFUNCTION)
        return NB_ERR(EINVAL, "rule '%s': the hook's chunk returned %s (expected the hook "
                      "function: \"return function(pkt) ... end\")", r->name,
                      luaL_typename(h->L, 2));
    h->straight = pol_hook_straight(h->L);
    lua_settop(h->L, 3);
    r->hook = p->nhooks - 1;
    return 0;
}

/* Run the hook of rule R on PK. Returns a verdict, or -1 to continue. The
** result stays at index 3 until the next call, where the hook replaces it:
** no stack is trimmed. */
static int pol_lua_call(netbe_policy *p, const struct pol_rule *r, const struct pol_pkt *pk)
{
    struct pol_hook *h = &p->hooks[r->hook];
    struct pol_view *v = h->view;
    lua_State *L = h->L;
    int verdict = p->fail;
    lua_copy(L, 2, 3);
    lua_pushvalue(L, 1);
    v->pk = pk;
    sbx_begin(L, h->sb, h->straight);
    int rc = lua_pcall(L, 1, 1, 0);
    if (rc == LUA_OK && h->sb->state != SBX_RUNNING)
        rc = LUA_ERRRUN;         /* the time ran out in its last C call */
    h->sb->state = 0;
    v->pk = NULL;
    if (rc == LUA_OK) {
        /* Verdicts by address; a number is no verdict. */
        const void *s = lua_topointer(L, 3);
        if (s == v->pass)
            verdict = NETBE_PASS;
        else if (s == v->drop)
            verdict = NETBE_DROP;
        else if (lua_isnil(L, 3))
            verdict = -1;
        else
            rc = LUA_ERRRUN;
    }
    if (rc != LUA_OK)
        pol_add(&p->st.hook_errors, 1);
    return verdict;
}

#else

/* Built with NETBE_OMIT_LUA: every hook rule is refused where it would
** load, so none is ever called. */
struct pol_hook {
    struct lua_State *L;
};

static int pol_hook_new(netbe_policy *p, struct pol_rule *r, const struct netbe_rule *d,
                        char *err, size_t errlen)
{
    return NB_ERR(ENOTSUP, "rule '%s': action lua needs Lua, and this netbe was built "
                  "without it (NETBE_OMIT_LUA): use compiled rules only", r->name);
}

static int pol_lua_call(netbe_policy *p, const struct pol_rule *r, const struct pol_pkt *pk)
{
    pol_add(&p->st.hook_errors, 1);
    return p->fail;
}

#endif /* NETBE_OMIT_LUA */

/* ---- Building ---- */

static uint32_t pol_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Index of the rule named NAME, or -1. */
static int pol_find(const netbe_policy *p, const char *name)
{
    for (unsigned h = pol_hash(name) & p->byname_mask;; h = (h + 1) & p->byname_mask) {
        int i = p->byname[h];
        if (i < 0 || strcmp(p->rules[i].name, name) == 0)
            return i;
    }
}

static void pol_prefix_mask(uint8_t mask[16], unsigned plen)
{
    memset(mask, 0, 16);
    for (unsigned i = 0; i < 16 && plen; i++) {
        unsigned b = plen > 8 ? 8 : plen;
        mask[i] = (uint8_t)(0xff << (8 - b));
        plen -= b;
    }
}

/* Check a PREFIX field ADDR/PLEN of rule R, which shares ip_family with
** the other, and mask it: its mask goes to MASK. */
static int pol_compile_prefix(struct pol_rule *r, uint8_t addr[16], unsigned plen,
                              uint8_t mask[16], char *err, size_t errlen)
{
    int family = r->d.ip_family;
    unsigned max = family == 4 ? 32 : family == 6 ? 128 : 0;
    if (!(r->d.match & POL_M_IP))
        return 0;
    if (!max)
        return NB_ERR(EINVAL, "rule '%s': ip family %d (expected 4 or 6)", r->name, family);
    if (plen > max)
        return NB_ERR(EINVAL, "rule '%s': prefix length over %u", r->name, max);
    pol_prefix_mask(mask, plen);
    for (int k = 0; k < 16; k++)
        addr[k] &= mask[k];
    return 0;
}

/* How each kind is checked and masked, field F of rule R. */
#define POL_COMPILE_NAME(f, bit, max, names, aux) \
    if ((r->d.match & bit) && ((long long)r->d.f < 0 || (long long)r->d.f > (max))) \
        return NB_ERR(EINVAL, "rule '%s': %s %lld (expected one of %s)", r->name, #f, \
                      (long long)r->d.f, names);
#define POL_COMPILE_ENUM(f, bit, max, names, aux)
#define POL_COMPILE_TAG(f, bit, max, names, aux)
#define POL_COMPILE_RANGE(f, bit, max, names, aux) \
    if (r->d.f##_lo > r->d.f##_hi) \
        return NB_ERR(EINVAL, "rule '%s': %s range low end above high end", r->name, #f);
#define POL_COMPILE_FLAGS(f, bit, max, names, aux) r->d.f &= r->d.f##_mask;
#define POL_COMPILE_MAC(f, bit, max, names, aux) \
    for (int k = 0; k < 6; k++) \
        r->d.f[k] &= r->d.f##_mask[k];
#define POL_COMPILE_PREFIX(f, bit, max, names, aux) \
    if ((rc = pol_compile_prefix(r, r->d.f, r->d.aux, r->f##_mask, err, errlen)) < 0) \
        return rc;

/* Check rule D and compile it into R. */
static int pol_compile_rule(struct pol_rule *r, const struct netbe_rule *d, int i,
                            char *err, size_t errlen)
{
    int rc;
    if (!d->name || !d->name[0] || strlen(d->name) >= sizeof r->name)
        return NB_ERR(EINVAL, "rule %d: name must be 1 to %zu characters", i + 1,
                      sizeof r->name - 1);
    snprintf(r->name, sizeof r->name, "%s", d->name);
    const char *n = r->name;
    if (d->match & ~POL_M_ALL)
        return NB_ERR(EINVAL, "rule '%s': unknown match bits 0x%x", n, d->match & ~POL_M_ALL);
    r->d = *d;
    r->d.name = r->d.hook = r->d.hook_name = NULL;
    r->d.hook_len = 0;
#define POL_COMPILE(BIT, f, KIND, max, names, aux) \
    POL_COMPILE_##KIND(f, NETBE_M_##BIT, max, names, aux)
    POL_FIELDS(POL_COMPILE)
#undef POL_COMPILE
    /* Such a rule could never match: say so rather than keep it. */
    if ((d->match & (NETBE_M_SPORT | NETBE_M_DPORT)) && (d->match & NETBE_M_PROTO) &&
        !pol_has_ports(d->proto))
        return NB_ERR(EINVAL, "rule '%s': ports need proto tcp, udp, sctp or udplite, not %u",
                      n, d->proto);
    r->hook = -1;
    if ((unsigned)d->action > NETBE_ACT_LUA)
        return NB_ERR(EINVAL, "rule '%s': unknown action %d", n, (int)d->action);
    if (d->action != NETBE_ACT_RATE) {
        r->d.rate = r->d.burst = 0;
        return 0;
    }
    if (!(d->rate > 0) || !(d->burst > 0) ||
        (d->rate_unit != NETBE_RATE_BITS && d->rate_unit != NETBE_RATE_FRAMES))
        return NB_ERR(EINVAL, "rule '%s': rate and burst must be positive", n);
    r->rate_per_ns = d->rate / 1e9;
    return 0;
}

/* The ethertype classes rule R can match, as bits. */
static unsigned pol_rule_l3(const struct pol_rule *r)
{
    if (r->d.match & NETBE_M_ETHERTYPE) {
        switch (r->d.ethertype) {
        case 0x0800: return 1u << POL_L3_IP4;
        case 0x86dd: return 1u << POL_L3_IP6;
        case 0x0806: return 1u << POL_L3_ARP;
        default: return 1u << POL_L3_OTHER;
        }
    }
    if (r->d.match & POL_M_IP)
        return r->d.ip_family == 4 ? (1u << POL_L3_IP4 | 1u << POL_L3_ARP) : 1u << POL_L3_IP6;
    if (r->d.match & (NETBE_M_PROTO | NETBE_M_SPORT | NETBE_M_DPORT | NETBE_M_TCP_FLAGS |
                    NETBE_M_ICMP_TYPE))
        return 1u << POL_L3_IP4 | 1u << POL_L3_IP6;
    return (1u << POL_L3_N) - 1;
}

/* The L4 classes rule R can match within an IP class. */
static unsigned pol_rule_l4(const struct pol_rule *r)
{
    if (r->d.match & NETBE_M_PROTO) {
        switch (r->d.proto) {
        case IPPROTO_TCP: return 1u << POL_L4_TCP;
        case IPPROTO_UDP: return 1u << POL_L4_UDP;
        case IPPROTO_ICMP: case IPPROTO_ICMPV6: return 1u << POL_L4_ICMP;
        default: return 1u << POL_L4_NONE;
        }
    }
    if (r->d.match & NETBE_M_TCP_FLAGS)
        return 1u << POL_L4_TCP;
    if (r->d.match & NETBE_M_ICMP_TYPE)
        return 1u << POL_L4_ICMP;
    if (r->d.match & (NETBE_M_SPORT | NETBE_M_DPORT))
        return 1u << POL_L4_TCP | 1u << POL_L4_UDP | 1u << POL_L4_NONE;
    return (1u << POL_L4_N) - 1;
}

static int pol_narrow_port(const struct pol_rule *r)
{
    return (r->d.match & NETBE_M_DPORT) && r->d.dport_hi - r->d.dport_lo < POL_BUCKETS;
}

/* 0 when rule R is listed under its source host, 1 under its destination
** host, -1 when it goes into slots. */
static int pol_host_side(const struct pol_rule *r)
{
    unsigned full = r->d.ip_family == 4 ? 32 : 128;
    if (pol_narrow_port(r))
        return -1;
    if ((r->d.match & NETBE_M_SRC_IP) && r->d.src_plen == full)
        return 0;
    if ((r->d.match & NETBE_M_DST_IP) && r->d.dst_plen == full)
        return 1;
    return -1;
}

static void pol_host_key(uint8_t key[20], int side, int family, const uint8_t *addr)
{
    memset(key, 0, 20);
    key[0] = (uint8_t)side;
    key[1] = (uint8_t)family;
    memcpy(key + 4, addr, family == 4 ? 4 : 16);
}

/* A word-at-a-time hash: this runs per frame, FNV's byte chain is too slow. */
static uint32_t pol_host_hash(const uint8_t key[20])
{
    uint32_t h = 0, w;
    for (int i = 0; i < 20; i += 4) {
        memcpy(&w, key + i, 4);
        h = (h ^ w) * 0x9e3779b1u;
        h ^= h >> 15;
    }
    return h;
}

/* The entry for KEY: found, or the empty one where it would go. */
static struct pol_host *pol_host_slot(const netbe_policy *p, const uint8_t key[20])
{
    for (unsigned h = pol_host_hash(key) & p->host_mask;; h = (h + 1) & p->host_mask) {
        struct pol_host *e = &p->hosts[h];
        if (e->n == 0 || memcmp(e->key, key, 20) == 0)
            return e;
    }
}

/* The entry of host rule I, claimed for its key if it was empty. */
static struct pol_host *pol_host_of_rule(netbe_policy *p, int i)
{
    const struct pol_rule *r = &p->rules[i];
    uint8_t key[20];
    int side = pol_host_side(r);
    pol_host_key(key, side, r->d.ip_family, side == 0 ? r->d.src_ip : r->d.dst_ip);
    struct pol_host *e = pol_host_slot(p, key);
    memcpy(e->key, key, 20);
    return e;
}

/* Candidates listed under the frame's host address on SIDE. */
static void pol_host_lookup(const netbe_policy *p, const struct pol_pkt *pk, int side,
                            const uint16_t **it, const uint16_t **end)
{
    *it = *end = NULL;
    if (!(pk->have & (side ? NETBE_M_DST_IP : NETBE_M_SRC_IP)))
        return;
    uint8_t key[20];
    pol_host_key(key, side, pk->family, pk->v[side ? POL_F_DST_IP : POL_F_SRC_IP].at);
    const struct pol_host *e = pol_host_slot(p, key);
    if (e->n) {
        *it = p->host_list + e->off;
        *end = *it + e->n;
    }
}

/* Build the host table: count each host's rules, lay the lists out, fill
** them in rule order. A separate cursor fills: n == 0 marks a free entry. */
static int pol_build_hosts(netbe_policy *p)
{
    int nhost = 0;
    for (int i = 0; i < p->nrules; i++)
        nhost += pol_host_side(&p->rules[i]) >= 0;
    if (!nhost)
        return 0;
    unsigned size = 16;
    while (size < 2u * (unsigned)nhost)
        size *= 2;
    p->hosts = calloc(size, sizeof *p->hosts);
    p->host_list = malloc((size_t)nhost * sizeof *p->host_list);
    if (!p->hosts || !p->host_list)
        return -ENOMEM;
    p->host_mask = size - 1;
    for (int i = 0; i < p->nrules; i++)
        if (pol_host_side(&p->rules[i]) >= 0)
            pol_host_of_rule(p, i)->n++;
    uint32_t off = 0;
    for (unsigned k = 0; k < size; k++) {
        p->hosts[k].off = off;
        off += p->hosts[k].n;
    }
    uint32_t *fill = calloc(size, sizeof *fill);
    if (!fill)
        return -ENOMEM;
    for (int i = 0; i < p->nrules; i++) {
        if (pol_host_side(&p->rules[i]) < 0)
            continue;
        struct pol_host *e = pol_host_of_rule(p, i);
        size_t k = (size_t)(e - p->hosts);
        p->host_list[e->off + fill[k]++] = (uint16_t)i;
    }
    free(fill);
    return 0;
}

/* Call FN(p, slot, rule) for every slot rule I belongs to. */
static void pol_each_slot(netbe_policy *p, int i, void (*fn)(netbe_policy *, unsigned, int))
{
    const struct pol_rule *r = &p->rules[i];
    unsigned l3s = pol_rule_l3(r), l4s = pol_rule_l4(r);
    int narrow = pol_narrow_port(r);
    if (pol_host_side(r) >= 0)
        return;
    for (int dir = 0; dir < 2; dir++) {
        if ((r->d.match & NETBE_M_DIR) && r->d.dir != dir)
            continue;
        for (int l3 = 0; l3 < POL_L3_N; l3++) {
            if (!(l3s & 1u << l3))
                continue;
            int ip = l3 == POL_L3_IP4 || l3 == POL_L3_IP6;
            for (int l4 = 0; l4 < POL_L4_N; l4++) {
                if (!(l4s & 1u << l4) || (!ip && l4 != POL_L4_NONE))
                    continue;
                if (l4 != POL_L4_TCP && l4 != POL_L4_UDP) {
                    fn(p, pol_slot(dir, l3, l4, 0), i);
                } else if (narrow) {
                    for (unsigned port = r->d.dport_lo; port <= r->d.dport_hi; port++)
                        fn(p, pol_slot(dir, l3, l4, port % POL_BUCKETS), i);
                } else {
                    for (unsigned b = 0; b < POL_BUCKETS; b++)
                        fn(p, pol_slot(dir, l3, l4, b), i);
                }
            }
        }
    }
}

static void pol_count_slot(netbe_policy *p, unsigned slot, int i)
{
    p->list_off[slot + 1]++;
}

/* list_off[slot] is used as the fill cursor while filling. */
static void pol_fill_slot(netbe_policy *p, unsigned slot, int i)
{
    p->list[p->list_off[slot]++] = (uint16_t)i;
}

static int pol_build_index(netbe_policy *p)
{
    p->list_off = calloc(POL_SLOTS + 1, sizeof *p->list_off);
    if (!p->list_off)
        return -ENOMEM;
    for (int i = 0; i < p->nrules; i++)
        pol_each_slot(p, i, pol_count_slot);
    for (unsigned s = 0; s < POL_SLOTS; s++)
        p->list_off[s + 1] += p->list_off[s];
    p->list = malloc((p->list_off[POL_SLOTS] + 1) * sizeof *p->list);
    if (!p->list)
        return -ENOMEM;
    for (int i = 0; i < p->nrules; i++)
        pol_each_slot(p, i, pol_fill_slot);
    /* Filling moved each start to the next slot's start: shift back. */
    memmove(p->list_off + 1, p->list_off, POL_SLOTS * sizeof *p->list_off);
    p->list_off[0] = 0;
    return 0;
}

static int pol_build_names(netbe_policy *p, char *err, size_t errlen)
{
    unsigned size = 16;
    while (size < 2u * (unsigned)p->nrules)
        size *= 2;
    p->byname = malloc(size * sizeof *p->byname);
    if (!p->byname)
        return NB_ERR(ENOMEM, "out of memory");
    p->byname_mask = size - 1;
    for (unsigned k = 0; k < size; k++)
        p->byname[k] = -1;
    for (int i = 0; i < p->nrules; i++) {
        unsigned h = pol_hash(p->rules[i].name) & p->byname_mask;
        for (; p->byname[h] >= 0; h = (h + 1) & p->byname_mask)
            if (strcmp(p->rules[p->byname[h]].name, p->rules[i].name) == 0)
                return NB_ERR(EINVAL, "rule %d: name '%s' is already used by rule %d",
                              i + 1, p->rules[i].name, p->byname[h] + 1);
        p->byname[h] = i;
    }
    return 0;
}

int netbe_policy_new(netbe_policy **pp, const struct netbe_policy_desc *desc,
                     char *err, size_t errlen)
{
    *pp = NULL;
    if (desc->nrules < 0 || desc->nrules > POL_MAX_RULES || (desc->nrules && !desc->rules))
        return NB_ERR(EINVAL, "policy: %d rules (expected 0 to %d)", desc->nrules,
                      POL_MAX_RULES);
    if ((desc->default_verdict != NETBE_PASS && desc->default_verdict != NETBE_DROP) ||
        (desc->fail_verdict != NETBE_PASS && desc->fail_verdict != NETBE_DROP))
        return NB_ERR(EINVAL, "policy: default and fail verdicts must be pass or drop");
    /* Lua counts the budget in an int: past INT_MAX it would go negative
    ** and count down for billions of instructions before the hook stops. */
    if (desc->hook_budget > INT_MAX)
        return NB_ERR(EINVAL, "policy: hook_budget %u: expected at most %d instructions",
                      desc->hook_budget, INT_MAX);
    netbe_policy *p = calloc(1, sizeof *p);
    if (!p)
        return NB_ERR(ENOMEM, "out of memory");
    p->nrules = desc->nrules;
    p->def = desc->default_verdict;
    p->fail = desc->fail_verdict;
    p->hook_limits.instructions = desc->hook_budget ? desc->hook_budget : 10000;
    p->hook_limits.memory = desc->hook_memory ? desc->hook_memory : 4u << 20;
    p->hook_limits.time_ns = desc->hook_time_ns ? desc->hook_time_ns : 1000000;
    p->rules = calloc((size_t)p->nrules + 1, sizeof *p->rules);
    p->state = calloc((size_t)p->nrules + 1, sizeof *p->state);
    p->hooks = calloc((size_t)p->nrules + 1, sizeof *p->hooks);
    int rc = p->rules && p->state && p->hooks ? 0 : NB_ERR(ENOMEM, "out of memory");
    for (int i = 0; rc == 0 && i < p->nrules; i++) {
        rc = pol_compile_rule(&p->rules[i], &desc->rules[i], i, err, errlen);
        p->state[i].tokens = p->rules[i].d.burst;
        if (rc == 0 && p->rules[i].d.action == NETBE_ACT_LUA)
            rc = pol_hook_new(p, &p->rules[i], &desc->rules[i], err, errlen);
    }
    if (rc == 0)
        rc = pol_build_names(p, err, errlen);
    if (rc == 0 && (pol_build_index(p) < 0 || pol_build_hosts(p) < 0))
        rc = NB_ERR(ENOMEM, "out of memory");
    if (rc < 0) {
        netbe_policy_free(p);
        return rc;
    }
    *pp = p;
    return 0;
}

void netbe_policy_free(netbe_policy *p)
{
    if (!p)
        return;
    for (int i = 0; p->hooks && i < p->nhooks; i++)
        netbe_sandbox_close(p->hooks[i].L);
    free(p->hooks);
    free(p->rules);
    free(p->state);
    free(p->list_off);
    free(p->list);
    free(p->byname);
    free(p->hosts);
    free(p->host_list);
    free(p);
}

/* ---- Evaluating ---- */

/* Apply rule I, which matched PK: count it and return its verdict, or -1
** when evaluation goes on. */
static int pol_apply(netbe_policy *p, unsigned i, const struct pol_pkt *pk, uint64_t *now)
{
    const struct pol_rule *r = &p->rules[i];
    struct pol_state *s = &p->state[i];
    int v = -1;
    pol_add(&s->hits, 1);
    pol_add(&s->bytes, pk->len);
    switch (r->d.action) {
    case NETBE_ACT_PASS: v = NETBE_PASS; break;
    case NETBE_ACT_DROP: v = NETBE_DROP; break;
    case NETBE_ACT_COUNT: break;
    case NETBE_ACT_RATE:
        if (!pol_bucket_take(p, (int)i, pk->len, now))
            v = NETBE_DROP;
        break;
    case NETBE_ACT_LUA: v = pol_lua_call(p, r, pk); break;
    }
    if (v == NETBE_DROP)
        pol_add(&s->drops, 1);
    return v;
}

/* Walk the slot list and the two host lists in rule order. */
static int pol_eval_merged(netbe_policy *p, const struct pol_pkt *pk, const uint16_t *it,
                           const uint16_t *end, uint64_t *now)
{
    const uint16_t *at[3] = {it, NULL, NULL}, *stop[3] = {end, NULL, NULL};
    pol_host_lookup(p, pk, 0, &at[1], &stop[1]);
    pol_host_lookup(p, pk, 1, &at[2], &stop[2]);
    for (;;) {
        int best = -1;
        for (int k = 0; k < 3; k++)
            if (at[k] < stop[k] && (best < 0 || *at[k] < *at[best]))
                best = k;
        if (best < 0)
            return -1;
        unsigned i = *at[best]++;
        if (pol_match(&p->rules[i], pk)) {
            int v = pol_apply(p, i, pk, now);
            if (v >= 0)
                return v;
        }
    }
}

int netbe_policy_eval(netbe_policy *p, int dir, const void *frame, size_t len,
                      uint64_t now_ns)
{
    struct pol_pkt pk;
    dir &= 1;
    pol_read(&pk, frame, len, (unsigned)dir);
    unsigned slot = pol_pkt_slot(&pk);
    const uint16_t *it = p->list + p->list_off[slot], *end = p->list + p->list_off[slot + 1];
    int verdict = -1;
    if (p->hosts) {
        verdict = pol_eval_merged(p, &pk, it, end, &now_ns);
    } else {
        for (; it < end && verdict < 0; it++)
            if (pol_match(&p->rules[*it], &pk))
                verdict = pol_apply(p, *it, &pk, &now_ns);
    }
    if (verdict < 0)
        verdict = p->def;
    if (verdict == NETBE_PASS) {
        pol_add(&p->st.pass_frames[dir], 1);
        pol_add(&p->st.pass_bytes[dir], len);
    } else {
        pol_add(&p->st.drop_frames[dir], 1);
        pol_add(&p->st.drop_bytes[dir], len);
    }
    return verdict;
}

/* ---- Counters and carrying over ---- */

void netbe_policy_carry(netbe_policy *newp, const netbe_policy *old)
{
    if (!old)
        return;
    for (int i = 0; i < newp->nrules; i++) {
        int j = pol_find(old, newp->rules[i].name);
        if (j < 0)
            continue;
        newp->state[i] = old->state[j];
        if (newp->state[i].tokens > newp->rules[i].d.burst)
            newp->state[i].tokens = newp->rules[i].d.burst;
    }
    newp->st = old->st;          /* nrules is read from the policy itself */
}

void netbe_policy_get_stats(const netbe_policy *p, struct netbe_policy_stats *st)
{
    const uint64_t *src = (const uint64_t *)&p->st;
    uint64_t *dst = (uint64_t *)st;
    for (size_t i = 0; i < offsetof(struct netbe_policy_stats, nrules) / sizeof(uint64_t); i++)
        dst[i] = nb_load(&src[i]);
    st->nrules = p->nrules;
}

int netbe_policy_rule_stats(const netbe_policy *p, int i, struct netbe_rule_stats *rs)
{
    if (i < 0 || i >= p->nrules)
        return -ENOENT;
    snprintf(rs->name, sizeof rs->name, "%s", p->rules[i].name);
    rs->hits = nb_load(&p->state[i].hits);
    rs->bytes = nb_load(&p->state[i].bytes);
    rs->drops = nb_load(&p->state[i].drops);
    return 0;
}

/* }================================================================ */

/* {===================================================================
** 19. Wire: two backends joined both ways
** ==================================================================== */

/* Frames moved per readiness event before the other side gets a turn. */
#define WIRE_BUDGET 64

struct wire_dir {
    struct netbe_wire *wire;
    netbe *from, *to;
    struct event *resume;        /* continues a pump cut short by the budget */
    uint8_t *buf;
    size_t held;                 /* length of a frame the other side refused with EAGAIN */
    int lent_held;               /* the other side refused a lent frame with EAGAIN */
};

struct netbe_wire {
    struct wire_dir dir[2];      /* a->b (to the guest), b->a (from it) */
    uint64_t drops;
    int link_down;               /* the cable is pulled: netbe_wire_set_link */
    uint64_t link_drops[2];      /* frames dropped meanwhile, per direction */
    /* The policy is used by the loop thread only; a new one waits in
    ** pending until a batch boundary. The lock orders the swap against
    ** netbe_wire_set_policy and counter readers on other threads. */
    netbe_policy *policy, *pending;
    int swap_pending;            /* pending is meant, even when NULL (removal) */
    pthread_mutex_t policy_lock;
    struct event *swap;          /* takes a pending policy when no frames flow */
};

/* At a batch boundary: put a pending policy in force, carrying counters. */
static void wire_take_policy(struct netbe_wire *w)
{
    if (!__atomic_load_n(&w->swap_pending, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&w->policy_lock);
    netbe_policy *old = w->policy, *np = w->pending;
    if (np) {
        netbe_policy_carry(np, old);
        if (old)
            np->st.reloads++;
    }
    w->policy = np;
    w->pending = NULL;
    __atomic_store_n(&w->swap_pending, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&w->policy_lock);
    netbe_policy_free(old);
}

static void wire_on_swap(evutil_socket_t fd, short what, void *arg)
{
    wire_take_policy(arg);
}

/* The policy's verdict on FRAME, LEN bytes without a header, going D. */
static int wire_judge(struct netbe_wire *w, struct wire_dir *d, const uint8_t *frame,
                      size_t len)
{
    if (__atomic_load_n(&w->link_down, __ATOMIC_RELAXED)) {
        nb_count(&w->link_drops[d - w->dir], 1);
        return NETBE_DROP;
    }
    if (!w->policy)
        return NETBE_PASS;
    return netbe_policy_eval(w->policy, d == &w->dir[0] ? NETBE_DIR_TO_GUEST :
                             NETBE_DIR_FROM_GUEST, frame, len, 0);
}

/* Send D's next frame straight from the memory of a backend that lends
** frames (slirp's ring into a tap's write, without the copy through the
** wire's buffer). Returns 1 when a frame went or was dropped, 0 when none
** waits, -EAGAIN when the other side is full (the frame stays lent), and
** -ENOTSUP when the frame must be received the usual way: the backend
** lends none, or the frontend does not take its header as it is. */
static int wire_lend(struct netbe_wire *w, struct wire_dir *d)
{
    netbe *from = d->from;
    struct nb_vnet_hdr h;
    const uint8_t *frame;
    unsigned fe = from->fe_hdr_len;
    if (!from->ops->rx_lend || from->bounce_len > 0 || (from->sw_rx && from->sw_rx->busy))
        return -ENOTSUP;
    size_t len = from->ops->rx_lend(from, &h, &frame);
    if (!len)
        return 0;
    if ((h.flags | h.gso_type) && !nb_rx_accepts(from, &h, frame[12] == 0x86))
        return -ENOTSUP;
    /* A frame the other side refused was judged before: once is all. */
    if (d->lent_held || wire_judge(w, d, frame, len) != NETBE_DROP) {
        nb_hdr_for_fe(from, &h);
        struct iovec v[2] = {{&h, fe}, {(void *)frame, len}};
        ssize_t r = netbe_send(d->to, fe ? v : v + 1, fe ? 2 : 1);
        if (r == -EAGAIN)
            return -EAGAIN;
        if (r < 0)
            w->drops++;
    }
    from->ops->rx_done(from);
    nb_count_own(&from->st.rx_frames, 1);
    nb_count_own(&from->st.rx_bytes, len + fe);
    return 1;
}

static void wire_pump(struct netbe_wire *w, struct wire_dir *d)
{
    struct iovec v = {d->buf, NETBE_MAX_FRAME + 12};
    wire_take_policy(w);
    for (int i = 0; i < WIRE_BUDGET; i++) {
        if (!d->held) {
            int lent = wire_lend(w, d);
            d->lent_held = lent == -EAGAIN;
            if (lent == -EAGAIN) {
                netbe_rx_disable(d->from);
                return;
            }
            if (lent == 0)
                return;
            if (lent == 1)
                continue;
            ssize_t n = netbe_recv(d->from, &v, 1);
            if (n == -EMSGSIZE)
                continue;
            if (n <= 0)
                return;
            size_t hl = netbe_get_vnet_hdr_len(d->from);
            if (wire_judge(w, d, d->buf + hl, (size_t)n > hl ? (size_t)n - hl : 0) == NETBE_DROP)
                continue;
            d->held = (size_t)n;
        }
        struct iovec out = {d->buf, d->held};
        ssize_t r = netbe_send(d->to, &out, 1);
        if (r == -EAGAIN) {
            netbe_rx_disable(d->from);
            return;
        }
        if (r < 0)
            w->drops++;
        d->held = 0;
    }
    event_active(d->resume, 0, 0);
}

/* A turn of the loop as nb_fire's: what the pump sends may be batched. */
static void wire_resume(evutil_socket_t fd, short what, void *arg)
{
    struct wire_dir *d = arg;
    struct event_base *outer = nb_turn_base;
    nb_turn_base = d->from->base;
    wire_pump(d->wire, d);
    nb_turn_base = outer;
}

static void wire_on_event(netbe *be, int events, void *arg)
{
    struct netbe_wire *w = arg;
    struct wire_dir *out = &w->dir[be == w->dir[0].from ? 0 : 1];
    struct wire_dir *in = &w->dir[be == w->dir[0].from ? 1 : 0];
    if (events & NETBE_EV_TX && (in->held || in->lent_held)) {
        /* The side that refused a frame can take more: resume its source. */
        wire_pump(w, in);
        if (!in->held && !in->lent_held)
            netbe_rx_enable(in->from);
    }
    if (events & NETBE_EV_RX)
        wire_pump(w, out);
}

/* The header length both sides can carry without conversion, else 0. */
static unsigned wire_hdr_len(netbe *a, netbe *b)
{
    return a->be_hdr_len == b->be_hdr_len ? a->be_hdr_len : 0;
}

/* Each kind of offloaded frame a receiver may deliver, and what the
** sender on the other side needs to pass it on. */
static const uint64_t wire_offloads[][2] = {
    {NETBE_F_GUEST_CSUM, NETBE_F_CSUM}, {NETBE_F_GUEST_TSO4, NETBE_F_HOST_TSO4},
    {NETBE_F_GUEST_TSO6, NETBE_F_HOST_TSO6}, {NETBE_F_GUEST_ECN, NETBE_F_HOST_ECN},
    {NETBE_F_GUEST_UFO, NETBE_F_HOST_UFO}, {NETBE_F_GUEST_USO4, NETBE_F_HOST_USO},
    {NETBE_F_GUEST_USO6, NETBE_F_HOST_USO},
};

/* What FROM may deliver (its GUEST_* bits) that TO can send; offloads
** need the partial checksum under them. Segments FROM joins in software
** go only to a TO that sends them whole: cutting them again would spend
** the CPU the join saved. */
static uint64_t wire_rx_features(netbe *from, netbe *to)
{
    uint64_t cf = netbe_get_cap(from), ct = netbe_get_cap(to), native = nb_backend_cap(to);
    uint64_t f = 0;
    for (size_t i = 0; i < sizeof wire_offloads / sizeof wire_offloads[0]; i++) {
        uint64_t rx = wire_offloads[i][0], tx = wire_offloads[i][1];
        if ((cf & rx) && (ct & tx) &&
            (rx == NETBE_F_GUEST_CSUM || !from->ops->rx_joins || (native & tx)))
            f |= rx;
    }
    return f & NETBE_F_GUEST_CSUM ? f : 0;
}

/* The sending bits matching receive features RX. */
static uint64_t wire_tx_features(uint64_t rx)
{
    uint64_t f = 0;
    for (size_t i = 0; i < sizeof wire_offloads / sizeof wire_offloads[0]; i++)
        if (rx & wire_offloads[i][0])
            f |= wire_offloads[i][1];
    return f;
}

/* Turn offloads on both ways when a direction gains from them; else, or
** when a backend refuses, plain frames (headers only where both have them). */
static void wire_negotiate(netbe *a, netbe *b, unsigned flags)
{
    uint64_t ra = wire_rx_features(a, b), rb = wire_rx_features(b, a);
    if (!(flags & NETBE_WIRE_NO_OFFLOAD) && (ra | rb) &&
        netbe_set_cap(a, ra | wire_tx_features(rb), 12) == 0 &&
        netbe_set_cap(b, rb | wire_tx_features(ra), 12) == 0)
        return;
    unsigned hl = wire_hdr_len(a, b);
    netbe_set_cap(a, 0, hl);
    netbe_set_cap(b, 0, hl);
}

int netbe_wire_new(netbe_wire **wp, netbe *a, netbe *b, char *err, size_t errlen)
{
    return netbe_wire_new_flags(wp, a, b, 0, err, errlen);
}

int netbe_wire_new_flags(netbe_wire **wp, netbe *a, netbe *b, unsigned flags,
                         char *err, size_t errlen)
{
    *wp = NULL;
    if (a == b || a->base != b->base)
        return NB_ERR(EINVAL, "wire: the two backends must differ and share one event base");
    if (flags & ~NETBE_WIRE_NO_OFFLOAD)
        return NB_ERR(EINVAL, "wire: unknown flags 0x%x (expected NETBE_WIRE_NO_OFFLOAD)",
                      flags);
    struct netbe_wire *w = calloc(1, sizeof *w);
    if (!w)
        return NB_ERR(ENOMEM, "out of memory");
    pthread_mutex_init(&w->policy_lock, NULL);
    if (!(w->swap = event_new(a->base, -1, 0, wire_on_swap, w))) {
        netbe_wire_free(w);
        return NB_ERR(ENOMEM, "out of memory");
    }
    wire_negotiate(a, b, flags);
    netbe *ends[2][2] = {{a, b}, {b, a}};
    for (int i = 0; i < 2; i++) {
        struct wire_dir *d = &w->dir[i];
        d->wire = w;
        d->from = ends[i][0];
        d->to = ends[i][1];
        d->buf = malloc(NETBE_MAX_FRAME + 12);
        d->resume = event_new(a->base, -1, 0, wire_resume, d);
        if (!d->buf || !d->resume) {
            netbe_wire_free(w);
            return NB_ERR(ENOMEM, "out of memory");
        }
    }
    netbe_set_callback(a, wire_on_event, w);
    netbe_set_callback(b, wire_on_event, w);
    netbe_rx_enable(a);
    netbe_rx_enable(b);
    *wp = w;
    return 0;
}

void netbe_wire_free(netbe_wire *w)
{
    if (!w)
        return;
    for (int i = 0; i < 2; i++) {
        struct wire_dir *d = &w->dir[i];
        if (d->from && d->from->cb_arg == w) {
            netbe_rx_disable(d->from);
            netbe_set_callback(d->from, NULL, NULL);
        }
        if (d->resume)
            event_free(d->resume);
        free(d->buf);
    }
    if (w->swap)
        event_free(w->swap);
    netbe_policy_free(w->policy);
    netbe_policy_free(w->pending);
    pthread_mutex_destroy(&w->policy_lock);
    free(w);
}

uint64_t netbe_wire_drops(netbe_wire *w)
{
    return w->drops;
}

void netbe_wire_set_link(netbe_wire *w, int up)
{
    __atomic_store_n(&w->link_down, !up, __ATOMIC_RELAXED);
}

void netbe_wire_get_stats(netbe_wire *w, struct netbe_wire_stats *st)
{
    st->drops = w->drops;
    st->link_up = !__atomic_load_n(&w->link_down, __ATOMIC_RELAXED);
    for (int i = 0; i < 2; i++)
        st->link_drops[i] = nb_load(&w->link_drops[i]);
}

int netbe_wire_set_policy(netbe_wire *w, netbe_policy *p)
{
    pthread_mutex_lock(&w->policy_lock);
    netbe_policy *displaced = w->pending;
    w->pending = p;
    __atomic_store_n(&w->swap_pending, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&w->policy_lock);
    netbe_policy_free(displaced);
    event_active(w->swap, 0, 0);
    return 0;
}

/* The policy whose counters readers see: the one in force, else the one
** waiting. Called with the lock held. */
static const netbe_policy *wire_visible_policy(struct netbe_wire *w)
{
    return w->policy ? w->policy : w->pending;
}

int netbe_wire_policy_stats(netbe_wire *w, struct netbe_policy_stats *st)
{
    pthread_mutex_lock(&w->policy_lock);
    const netbe_policy *p = wire_visible_policy(w);
    if (p)
        netbe_policy_get_stats(p, st);
    pthread_mutex_unlock(&w->policy_lock);
    return p ? 0 : -ENOENT;
}

int netbe_wire_rule_stats(netbe_wire *w, int i, struct netbe_rule_stats *rs)
{
    pthread_mutex_lock(&w->policy_lock);
    const netbe_policy *p = wire_visible_policy(w);
    int rc = p ? netbe_policy_rule_stats(p, i, rs) : -ENOENT;
    pthread_mutex_unlock(&w->policy_lock);
    return rc;
}

/* }================================================================ */

/* {===================================================================
** 20. virtio: split virtqueues
** ====================================================================
** The layout is virtio 1.x section 2.7. The guest may rewrite its rings
** at any moment, so each descriptor and ring entry is read exactly once
** into a local copy, indices are taken modulo the queue size, and walks
** are bounded by counts, never by what the guest says comes next.
*/

#define VQ_DESC_F_NEXT      1
#define VQ_DESC_F_WRITE     2
#define VQ_DESC_F_INDIRECT  4
#define VQ_AVAIL_F_NO_INTERRUPT 1
#define VQ_USED_F_NO_NOTIFY     1

struct vq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

/* Entries of one indirect table: a guest cannot ask for more. */
#define VQ_MAX_INDIRECT NETBE_VQ_MAX_SIZE

struct netbe_vq {
    netbe_vq_map_fn map;
    void *map_arg;
    unsigned size;               /* 0 while not set up */
    int event_idx, indirect;
    uint8_t *desc;               /* size * 16 bytes */
    uint16_t *avail;             /* flags, idx, ring[size], used_event */
    uint16_t *used;              /* flags, idx, then {u32 id, u32 len}[size], avail_event */
    uint16_t last_avail;         /* next available entry to take */
    uint16_t avail_idx;          /* the driver's available index, as last read */
    uint16_t used_idx;           /* next used entry to fill */
    uint16_t published;          /* used index at the last publish */
    int can_unpop;
    uint64_t dropped;            /* chains given back unread: longer than a frame */
    char error[160];
};

int netbe_vq_new(netbe_vq **vqp, netbe_vq_map_fn map, void *arg)
{
    netbe_vq *vq = calloc(1, sizeof *vq);
    *vqp = vq;
    if (!vq)
        return -ENOMEM;
    vq->map = map;
    vq->map_arg = arg;
    return 0;
}

void netbe_vq_free(netbe_vq *vq)
{
    free(vq);
}

/* Mark VQ broken with a message; returns -CODE. */
static int vq_fail(netbe_vq *vq, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int vq_fail(netbe_vq *vq, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vq->error, sizeof vq->error, fmt, ap);
    va_end(ap);
    return -code;
}

static int vq_usable(const netbe_vq *vq)
{
    return vq->size && !vq->error[0];
}

/* The ring entry of free-running index I: the size is a power of 2, and
** a mask is a division the compiler cannot see to drop. */
static unsigned vq_slot(const netbe_vq *vq, uint16_t i)
{
    return i & (vq->size - 1);
}

/* Ring fields shared with the guest: indices need ordering, not locks. */
static uint16_t vq_load16(const uint16_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void vq_store16(uint16_t *p, uint16_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Map one ring area; it must be aligned as the spec says so that the
** index fields can be accessed atomically. */
static void *vq_map_area(netbe_vq *vq, const char *what, uint64_t gpa, uint64_t len,
                         unsigned align, char *err, size_t errlen, int *rc)
{
    if (*rc < 0)
        return NULL;
    void *p = gpa % align ? NULL : vq->map(vq->map_arg, gpa, len);
    if (!p || (uintptr_t)p % align)
        *rc = NB_ERR(EINVAL, "virtqueue %s at 0x%llx (%llu bytes): expected a %u-byte "
                     "aligned area inside guest memory", what, (unsigned long long)gpa,
                     (unsigned long long)len, align);
    return p;
}

int netbe_vq_setup(netbe_vq *vq, unsigned size, uint64_t desc, uint64_t avail,
                   uint64_t used, uint64_t features, char *err, size_t errlen)
{
    netbe_vq_reset(vq);
    if (size == 0 || size > NETBE_VQ_MAX_SIZE || (size & (size - 1)))
        return NB_ERR(EINVAL, "virtqueue size %u: expected a power of 2 from 1 to %d",
                      size, NETBE_VQ_MAX_SIZE);
    int rc = 0;
    uint8_t *d = vq_map_area(vq, "descriptor table", desc, 16ULL * size, 16, err, errlen, &rc);
    uint16_t *a = vq_map_area(vq, "available ring", avail, 6 + 2ULL * size, 2, err, errlen, &rc);
    uint16_t *u = vq_map_area(vq, "used ring", used, 6 + 8ULL * size, 4, err, errlen, &rc);
    if (rc < 0)
        return rc;
    vq->desc = d;
    vq->avail = a;
    vq->used = u;
    vq->event_idx = (features & NETBE_F_RING_EVENT_IDX) != 0;
    vq->indirect = (features & NETBE_F_RING_INDIRECT_DESC) != 0;
    vq->used_idx = vq->published = vq_load16(&u[1]);
    vq->avail_idx = vq->last_avail;
    vq->error[0] = '\0';
    vq->size = size;
    return 0;
}

void netbe_vq_reset(netbe_vq *vq)
{
    vq->size = 0;
    vq->desc = NULL;
    vq->avail = vq->used = NULL;
    vq->can_unpop = 0;
    vq->error[0] = '\0';
}

int netbe_vq_ready(const netbe_vq *vq) { return vq_usable(vq); }
uint16_t netbe_vq_get_base(const netbe_vq *vq) { return vq->last_avail; }

void netbe_vq_set_base(netbe_vq *vq, uint16_t base)
{
    vq->last_avail = vq->avail_idx = base;
    vq->can_unpop = 0;
}

const char *netbe_vq_error(const netbe_vq *vq) { return vq->error; }

int netbe_vq_pending(netbe_vq *vq)
{
    if (!vq_usable(vq))
        return -EIO;
    uint16_t idx = vq_load16(&vq->avail[1]);
    uint16_t n = (uint16_t)(idx - vq->last_avail);
    if (n > vq->size)
        return vq_fail(vq, EINVAL, "available index jumped from %u to %u, more than "
                       "the queue size %u", vq->last_avail, idx, vq->size);
    vq->avail_idx = idx;
    return n;
}

/* The descriptor of the chain AHEAD available entries past the next one
** (0: the next), or NULL when the driver has not made it available. */
static const uint8_t *vq_peek_desc(netbe_vq *vq, uint16_t ahead)
{
    if ((uint16_t)(vq->avail_idx - vq->last_avail) <= ahead)
        return NULL;
    uint16_t head = vq_load16(&vq->avail[2 + vq_slot(vq, (uint16_t)(vq->last_avail + ahead))]);
    return head < vq->size ? vq->desc + 16 * (size_t)head : NULL;
}

/* Ask for the line at P to be written soon. x86 compilers emit PREFETCHW
** only when told the CPU has it; every x86-64 CPU runs it (those before
** it as a no-op), and a read prefetch would fetch the line only to fetch
** it again for writing. */
static void vq_prefetch_write(const uint8_t *p)
{
#ifdef __x86_64__
    __asm__ volatile("prefetchw %0" : : "m"(*p));
#else
    __builtin_prefetch(p, 1);
#endif
}

/* Chains whose first buffer is warmed ahead of the one taken; their
** descriptors are warmed twice as far ahead. */
#define VQ_AHEAD 4

/* Warm the caches for the chains after the one just taken, while the
** caller works on it, so that the lines the driver's CPU wrote last come
** over several at a time: the descriptor of the chain 2 * VQ_AHEAD on,
** and the first buffer (or indirect table) of the chain VQ_AHEAD on,
** whose descriptor an earlier pop warmed; for writing when the device
** writes it (the driver's CPU read it last). Only addresses come from
** what the guest wrote here; nothing is read through them. */
static void vq_prefetch(netbe_vq *vq)
{
    const uint8_t *d = vq_peek_desc(vq, 2 * VQ_AHEAD - 1);
    if (d)
        __builtin_prefetch(d);
    if (!(d = vq_peek_desc(vq, VQ_AHEAD - 1)))
        return;
    struct vq_desc next;
    memcpy(&next, d, sizeof next);
    uint32_t len = next.len < 128 ? next.len : 128;
    const uint8_t *p = vq->map(vq->map_arg, next.addr, len);
    if (!p)
        return;
    if (next.flags & VQ_DESC_F_WRITE) {
        vq_prefetch_write(p);
        if (len > 64)
            vq_prefetch_write(p + 64);
    } else {
        __builtin_prefetch(p);
        if (len > 64)
            __builtin_prefetch(p + 64);
    }
}

/* Chains available: those up to the index read last, and only when it is
** used up the driver's index again. The driver writes that index with
** every chain it adds, so reading it per chain would wait each time for
** its cache line to come over from the driver's CPU. */
static int vq_available(netbe_vq *vq)
{
    uint16_t n = (uint16_t)(vq->avail_idx - vq->last_avail);
    if (n && vq_usable(vq))
        return n;
    int fresh = netbe_vq_pending(vq);
    /* A new batch: warm the descriptors vq_prefetch will not. */
    for (int i = 0; i < fresh && i < 2 * VQ_AHEAD; i++) {
        const uint8_t *d = vq_peek_desc(vq, (uint16_t)i);
        if (d)
            __builtin_prefetch(d);
    }
    return fresh;
}

/* The walk through one chain: where descriptors come from, and the limits. */
struct vq_walk {
    const uint8_t *table;        /* the ring's table or an indirect one */
    unsigned entries;            /* entries in TABLE */
    unsigned seen;               /* descriptors read from TABLE so far */
    int in_indirect;
};

/* Enter the indirect table D points to. */
static int vq_enter_indirect(netbe_vq *vq, struct vq_walk *w, const struct vq_desc *d)
{
    if (!vq->indirect)
        return vq_fail(vq, EINVAL, "indirect descriptor without INDIRECT_DESC negotiated");
    if (w->in_indirect)
        return vq_fail(vq, EINVAL, "indirect descriptor inside an indirect table");
    if (d->flags & VQ_DESC_F_NEXT)
        return vq_fail(vq, EINVAL, "indirect descriptor with NEXT set");
    if (d->len == 0 || d->len % 16 || d->len / 16 > VQ_MAX_INDIRECT)
        return vq_fail(vq, EINVAL, "indirect table of %u bytes: expected a multiple of "
                       "16 from 16 to %d", d->len, VQ_MAX_INDIRECT * 16);
    const uint8_t *t = vq->map(vq->map_arg, d->addr, d->len);
    if (!t)
        return vq_fail(vq, EFAULT, "indirect table at 0x%llx (%u bytes) is outside "
                       "guest memory", (unsigned long long)d->addr, d->len);
    w->table = t;
    w->entries = d->len / 16;
    w->seen = 0;
    w->in_indirect = 1;
    return 0;
}

/* Add the buffer of descriptor D to the chain. */
static int vq_add_buffer(netbe_vq *vq, const struct vq_desc *d, struct iovec *iov,
                         int iovmax, int allow, struct netbe_vq_chain *ch)
{
    int writable = (d->flags & VQ_DESC_F_WRITE) != 0;
    if (!(allow & (writable ? NETBE_VQ_WRITE : NETBE_VQ_READ)))
        return vq_fail(vq, EINVAL, "device-%s buffer on a queue that takes only "
                       "device-%s ones", writable ? "writable" : "readable",
                       writable ? "readable" : "writable");
    if (!writable && ch->nwrite)
        return vq_fail(vq, EINVAL, "device-readable buffer after a writable one");
    if (d->len == 0)
        return 0;
    if (ch->nread + ch->nwrite >= iovmax)
        return vq_fail(vq, E2BIG, "chain has more than %d buffers", iovmax);
    if (ch->read_len + ch->write_len + d->len > UINT32_MAX)
        return vq_fail(vq, EINVAL, "chain longer than 4 GiB");
    void *p = vq->map(vq->map_arg, d->addr, d->len);
    if (!p)
        return vq_fail(vq, EFAULT, "buffer at 0x%llx (%u bytes) is outside guest memory",
                       (unsigned long long)d->addr, d->len);
    struct iovec *v = &iov[ch->nread + ch->nwrite];
    v->iov_base = p;
    v->iov_len = d->len;
    if (writable) {
        ch->nwrite++;
        ch->write_len += d->len;
    } else {
        ch->nread++;
        ch->read_len += d->len;
    }
    return 0;
}

/* Follow the chain starting at HEAD. */
static int vq_walk_chain(netbe_vq *vq, uint16_t head, struct iovec *iov, int iovmax,
                         int allow, struct netbe_vq_chain *ch)
{
    struct vq_walk w = {vq->desc, vq->size, 0, 0};
    unsigned i = head;
    for (;;) {
        if (w.seen++ >= w.entries)
            return vq_fail(vq, ELOOP, "chain from head %u has more descriptors than its "
                           "table (%u): a loop", head, w.entries);
        struct vq_desc d;
        memcpy(&d, w.table + 16 * (size_t)i, sizeof d);
        int rc = d.flags & VQ_DESC_F_INDIRECT ? vq_enter_indirect(vq, &w, &d) :
                 vq_add_buffer(vq, &d, iov, iovmax, allow, ch);
        if (rc < 0)
            return rc;
        if (d.flags & VQ_DESC_F_INDIRECT) {
            i = 0;
            continue;
        }
        if (!(d.flags & VQ_DESC_F_NEXT))
            return 0;
        i = d.next;
        if (i >= w.entries)
            return vq_fail(vq, EINVAL, "descriptor next %u is outside its table (%u entries)",
                           i, w.entries);
    }
}

/* Fill the next used entry: chain HEAD, LEN bytes written. */
static void vq_put_used(netbe_vq *vq, uint16_t head, uint32_t len)
{
    uint8_t *ring = (uint8_t *)vq->used + 4;
    uint32_t elem[2] = {head, len};
    memcpy(ring + 8 * (size_t)vq_slot(vq, vq->used_idx), elem, sizeof elem);
    vq->used_idx++;
    /* The driver reads these lines: ask for the one after this for writing. */
    vq_prefetch_write(ring + 8 * (size_t)vq_slot(vq, (uint16_t)(vq->used_idx + 8)));
}

int netbe_vq_pop(netbe_vq *vq, struct iovec *iov, int iovmax, int allow,
                 struct netbe_vq_chain *ch)
{
    /* The chains available now, and no more: a guest that keeps adding
    ** chains too long to take cannot keep the call going. */
    int n = vq_available(vq);
    for (; n > 0; n--) {
        uint16_t head = vq_load16(&vq->avail[2 + vq_slot(vq, vq->last_avail)]);
        if (head >= vq->size)
            return vq_fail(vq, EINVAL, "available entry %u names head %u, outside the "
                           "queue (%u entries)", vq->last_avail, head, vq->size);
        memset(ch, 0, sizeof *ch);
        ch->head = head;
        int rc = vq_walk_chain(vq, head, iov, iovmax, allow, ch);
        if (rc < 0)
            return rc;
        vq->last_avail++;
        if (ch->read_len <= NETBE_VQ_MAX_READ) {
            vq->can_unpop = 1;
            vq_prefetch(vq);
            return 1;
        }
        /* Longer than any frame: back to the driver unread, and counted. */
        vq_put_used(vq, head, 0);
        vq->dropped++;
        vq->can_unpop = 0;
    }
    return n;
}

uint64_t netbe_vq_dropped(const netbe_vq *vq) { return vq->dropped; }

void netbe_vq_unpop(netbe_vq *vq)
{
    if (vq->can_unpop)
        vq->last_avail--;
    vq->can_unpop = 0;
}

int netbe_vq_push(netbe_vq *vq, uint16_t head, uint32_t len)
{
    if (!vq_usable(vq))
        return -EIO;
    if (head >= vq->size)
        return -EINVAL;
    vq_put_used(vq, head, len);
    vq->can_unpop = 0;
    return 0;
}

/* virtio's vring_need_event: has the index moved from OLD to NEW past EVENT? */
static int vq_need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

int netbe_vq_publish(netbe_vq *vq)
{
    if (!vq_usable(vq))
        return -EIO;
    uint16_t old = vq->published, now = vq->used_idx;
    if (old == now)
        return 0;
    vq_store16(&vq->used[1], now);
    vq->published = now;
    /* The driver's suppression fields must be read after it can see idx. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (vq->event_idx)
        return vq_need_event(vq_load16(&vq->avail[2 + vq->size]), now, old);
    return !(vq_load16(&vq->avail[0]) & VQ_AVAIL_F_NO_INTERRUPT);
}

int netbe_vq_notify_enable(netbe_vq *vq)
{
    if (!vq_usable(vq))
        return -EIO;
    if (vq->event_idx)
        vq_store16((uint16_t *)((uint8_t *)vq->used + 4 + 8 * (size_t)vq->size),
                   vq->last_avail);
    else
        vq_store16(&vq->used[0], 0);
    /* A chain made available before the driver saw the request gets no kick. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    int n = netbe_vq_pending(vq);
    return n < 0 ? n : n > 0;
}

void netbe_vq_notify_disable(netbe_vq *vq)
{
    /* Only the device writes the flags: a store that changes nothing would
    ** still take the cache line from the driver, which reads it per kick. */
    if (vq_usable(vq) && !vq->event_idx && vq_load16(&vq->used[0]) != VQ_USED_F_NO_NOTIFY)
        vq_store16(&vq->used[0], VQ_USED_F_NO_NOTIFY);
}

/* }================================================================ */
