/*
** netbe_lua.c: the `netbe` Lua 5.4 module.
**
** One libevent event_base per Lua state drives every backend opened from it.
** Library errors become Lua errors carrying netbe's message. Lua callbacks
** run under lua_pcall from libevent callbacks; an error there stops the loop
** and is raised by netbe.run, so no Lua error ever longjmps through libevent
** or the netbe C API.
*/
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <time.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "netbe.h"

#define LB_BACKEND "netbe.backend"
#define LB_WIRE    "netbe.wire"
#define LB_LOCK    "netbe.lock"

/* ====================================================================
** Loop state: one per Lua state, kept in the registry
** ==================================================================== */

typedef struct lb_loop {
    struct event_base *base;
    lua_State *L;                /* the main thread, for callbacks */
    int error_ref;               /* a callback's error, raised by run */
} lb_loop;

static int lb_loop_gc(lua_State *L)
{
    lb_loop *lp = lua_touserdata(L, 1);
    if (lp->base)
        event_base_free(lp->base);
    lp->base = NULL;
    return 0;
}

static lb_loop *lb_getloop(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "netbe.loop");
    lb_loop *lp = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return lp;
}

static void lb_newloop(lua_State *L)
{
    lb_loop *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    memset(lp, 0, sizeof *lp);
    lp->error_ref = LUA_NOREF;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lp->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    lp->base = event_base_new();
    if (!lp->base)
        luaL_error(L, "netbe: cannot create an event base");
    lua_newtable(L);
    lua_pushcfunction(L, lb_loop_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "netbe.loop");
}

/* Call the function below NARGS arguments on LP->L's stack, keeping
** NRESULTS results. An error is kept, the loop stopped and 0 returned. */
static int lb_protected_call(lb_loop *lp, int nargs, int nresults)
{
    lua_State *L = lp->L;
    if (lua_pcall(L, nargs, nresults, 0) == LUA_OK)
        return 1;
    if (lp->error_ref == LUA_NOREF)
        lp->error_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_pop(L, 1);
    event_base_loopbreak(lp->base);
    return 0;
}

/* ====================================================================
** Configs: strings or tables
** ==================================================================== */

/* A config from a legacy string or a {key = value} table at IDX. */
static netbe_config *lb_toconfig(lua_State *L, int idx)
{
    char err[NETBE_ERRMAX];
    netbe_config *cfg = netbe_config_new();
    if (!cfg)
        luaL_error(L, "netbe: out of memory");
    if (lua_type(L, idx) == LUA_TSTRING) {
        if (netbe_config_parse(cfg, lua_tostring(L, idx), err, sizeof err) < 0) {
            netbe_config_free(cfg);
            luaL_error(L, "%s", err);
        }
        return cfg;
    }
    if (!lua_istable(L, idx)) {
        netbe_config_free(cfg);
        luaL_typeerror(L, idx, "backend config string or table");
    }
    /* Positional [1] is the backend name, as in the legacy string. */
    lua_geti(L, idx, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
        netbe_config_set(cfg, "backend", lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *v = lua_type(L, -1) == LUA_TBOOLEAN ?
                (lua_toboolean(L, -1) ? "true" : "false") : lua_tostring(L, -1);
            if (!v) {
                const char *k = lua_tostring(L, -2);
                netbe_config_free(cfg);
                luaL_error(L, "config key '%s': expected a string, number or boolean", k);
            }
            netbe_config_set(cfg, lua_tostring(L, -2), v);
        }
        lua_pop(L, 1);
    }
    return cfg;
}

/* The permissions table at IDX ({allow_exec = true, allow_files = DIR}, or
** none) given to CFG; raises the problem after freeing CFG. */
static void lb_allow(lua_State *L, int idx, netbe_config *cfg)
{
    char err[NETBE_ERRMAX];
    unsigned allow = 0;
    const char *dir = NULL;
    if (lua_isnoneornil(L, idx))
        return;
    if (!lua_istable(L, idx)) {
        netbe_config_free(cfg);
        luaL_typeerror(L, idx, "table of permissions {allow_exec=, allow_files=}");
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        if (strcmp(k, "allow_exec") == 0 && lua_type(L, -1) == LUA_TBOOLEAN) {
            allow |= lua_toboolean(L, -1) ? NETBE_ALLOW_EXEC : 0;
        } else if (strcmp(k, "allow_files") == 0 && lua_type(L, -1) == LUA_TSTRING) {
            allow |= NETBE_ALLOW_FILES;
            dir = lua_tostring(L, -1);
        } else {
            netbe_config_free(cfg);
            luaL_error(L, "netbe: permission '%s': expected allow_exec = true|false or "
                       "allow_files = DIRECTORY", k);
        }
        lua_pop(L, 1);
    }
    if (netbe_config_allow(cfg, allow, dir, err, sizeof err) < 0) {
        netbe_config_free(cfg);
        luaL_error(L, "%s", err);
    }
}

/* netbe.check(spec [, permissions]) -> normalized {key = value}, ordered
** key list, list of the permissions used ("exec", "files"); or nil, message */
static int lb_check(lua_State *L)
{
    char err[NETBE_ERRMAX];
    netbe_config *cfg = lb_toconfig(L, 1);
    lb_allow(L, 2, cfg);
    if (netbe_config_check(cfg, err, sizeof err) < 0) {
        netbe_config_free(cfg);
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    int n = netbe_config_count(cfg);
    lua_createtable(L, 0, n);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, netbe_config_value(cfg, i));
        lua_setfield(L, -3, netbe_config_key(cfg, i));
        lua_pushstring(L, netbe_config_key(cfg, i));
        lua_rawseti(L, -2, i + 1);
    }
    unsigned needs = netbe_config_needs(cfg);
    lua_createtable(L, 2, 0);
    if (needs & NETBE_ALLOW_EXEC) {
        lua_pushliteral(L, "exec");
        lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
    }
    if (needs & NETBE_ALLOW_FILES) {
        lua_pushliteral(L, "files");
        lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
    }
    netbe_config_free(cfg);
    return 3;
}

/* ====================================================================
** Backends
** ==================================================================== */

typedef struct lb_backend {
    netbe *be;
    lb_loop *loop;
    int cb_ref;                  /* Lua function(events) or LUA_NOREF */
    struct lb_wire *wire;        /* the wire using this backend, if any */
} lb_backend;

typedef struct lb_wire {
    netbe_wire *w;
    lb_backend *ends[2];
} lb_wire;

static void lb_wire_release(lb_wire *lw)
{
    if (!lw->w)
        return;
    netbe_wire_free(lw->w);
    lw->w = NULL;
    for (int i = 0; i < 2; i++)
        lw->ends[i]->wire = NULL;
}

static lb_backend *lb_checkbe(lua_State *L, int idx)
{
    lb_backend *b = luaL_checkudata(L, idx, LB_BACKEND);
    if (!b->be)
        luaL_error(L, "netbe: backend is closed");
    return b;
}

static void lb_on_event(netbe *be, int events, void *arg)
{
    lb_backend *b = arg;
    lua_State *L = b->loop->L;
    if (b->cb_ref == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->cb_ref);
    lua_pushstring(L, events & NETBE_EV_DOWN ? "down" :
                      events & NETBE_EV_RX ? (events & NETBE_EV_TX ? "rxtx" : "rx") : "tx");
    lb_protected_call(b->loop, 1, 0);
}

/* netbe.open(spec [, permissions]) -> backend */
static int lb_open(lua_State *L)
{
    char err[NETBE_ERRMAX];
    lb_loop *lp = lb_getloop(L);
    netbe_config *cfg = lb_toconfig(L, 1);
    lb_allow(L, 2, cfg);
    lb_backend *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    b->loop = lp;
    b->cb_ref = LUA_NOREF;
    luaL_setmetatable(L, LB_BACKEND);
    int rc = netbe_open(&b->be, cfg, lp->base, lb_on_event, b, err, sizeof err);
    netbe_config_free(cfg);
    if (rc < 0)
        luaL_error(L, "%s", err);
    return 1;
}

static int lb_close(lua_State *L)
{
    lb_backend *b = luaL_checkudata(L, 1, LB_BACKEND);
    if (b->wire)
        lb_wire_release(b->wire);
    if (b->be)
        netbe_close(b->be);
    b->be = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, b->cb_ref);
    b->cb_ref = LUA_NOREF;
    return 0;
}

/* Replace the message at IDX with a copy whose control characters are
** '?', as netbe.c's own messages have them: a message stays one line,
** whatever values it quotes. */
static void lb_one_line(lua_State *L, int idx)
{
    size_t len;
    luaL_Buffer b;
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TSTRING)
        return;
    const char *s = lua_tolstring(L, idx, &len);
    char *d = luaL_buffinitsize(L, &b, len);
    for (size_t i = 0; i < len; i++)
        d[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    luaL_pushresultsize(&b, len);
    lua_replace(L, idx);
}

/* netbe.one_line(message) -> the message as netbe writes its own */
static int lb_one_line_fn(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lb_one_line(L, 1);
    return 1;
}

/* Push nil, message, errno name for a failed call. */
static int lb_fail(lua_State *L, ssize_t rc)
{
    luaL_pushfail(L);
    lua_pushstring(L, rc == -EAGAIN ? "again" : strerror((int)-rc));
    lua_pushinteger(L, -rc);
    return 3;
}

/* be:send(frame) -> bytes | nil, message, errno */
static int lb_send(lua_State *L)
{
    lb_backend *b = lb_checkbe(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    struct iovec v = {(void *)s, len};
    ssize_t n = netbe_send(b->be, &v, 1);
    if (n < 0)
        return lb_fail(L, n);
    lua_pushinteger(L, n);
    return 1;
}

/* be:recv() -> frame | nil when nothing waits | nil, message, errno */
static int lb_recv(lua_State *L)
{
    lb_backend *b = lb_checkbe(L, 1);
    luaL_Buffer buf;
    char *p = luaL_buffinitsize(L, &buf, NETBE_MAX_FRAME + 12);
    struct iovec v = {p, NETBE_MAX_FRAME + 12};
    ssize_t n = netbe_recv(b->be, &v, 1);
    if (n < 0)
        return lb_fail(L, n);
    if (n == 0) {
        lua_pushnil(L);
        return 1;
    }
    luaL_pushresultsize(&buf, (size_t)n);
    return 1;
}

static int lb_peek(lua_State *L)
{
    ssize_t n = netbe_peek_recvlen(lb_checkbe(L, 1)->be);
    if (n < 0)
        return lb_fail(L, n);
    lua_pushinteger(L, n);
    return 1;
}

static int lb_discard(lua_State *L)
{
    lua_pushinteger(L, netbe_rx_discard(lb_checkbe(L, 1)->be));
    return 1;
}

/* be:on(function(events) ... end | nil): receive notifications. A function
** enables receive; nil disables it. */
static int lb_on(lua_State *L)
{
    lb_backend *b = lb_checkbe(L, 1);
    if (b->wire)
        return luaL_error(L, "netbe: backend %s is wired; unwire it first",
                          netbe_name(b->be));
    luaL_unref(L, LUA_REGISTRYINDEX, b->cb_ref);
    b->cb_ref = LUA_NOREF;
    if (lua_isnoneornil(L, 2)) {
        netbe_rx_disable(b->be);
        return 0;
    }
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    b->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    netbe_rx_enable(b->be);
    return 0;
}

/* be:down() -> nil while the backend works, else why it stopped */
static int lb_down(lua_State *L)
{
    int e = netbe_down(lb_checkbe(L, 1)->be);
    if (!e)
        return 0;
    lua_pushstring(L, strerror(-e));
    return 1;
}

static int lb_stats(lua_State *L)
{
    struct netbe_stats st;
    netbe_get_stats(lb_checkbe(L, 1)->be, &st);
    lua_createtable(L, 0, 19);
#define F(name) (lua_pushinteger(L, (lua_Integer)st.name), lua_setfield(L, -2, #name))
    F(tx_frames); F(tx_bytes); F(tx_drops); F(tx_errors);
    F(rx_frames); F(rx_bytes); F(rx_drops); F(rx_errors);
    F(tx_bad_hdr); F(rx_bad_hdr); F(tx_sw_frames); F(rx_sw_frames);
    F(tx_frags); F(tx_frag_whole); F(tx_frag_drops);
    F(tx_frag_overlap); F(tx_frag_oversize); F(tx_frag_timeout); F(tx_frag_evicted);
#undef F
    return 1;
}

static int lb_name(lua_State *L)
{
    lua_pushstring(L, netbe_name(lb_checkbe(L, 1)->be));
    return 1;
}

static int lb_type(lua_State *L)
{
    lua_pushstring(L, netbe_type(lb_checkbe(L, 1)->be));
    return 1;
}

static int lb_mtu(lua_State *L)
{
    lua_pushinteger(L, netbe_get_mtu(lb_checkbe(L, 1)->be));
    return 1;
}

static void lb_pushmac(lua_State *L, const uint8_t m[6])
{
    char text[18];
    snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3],
             m[4], m[5]);
    lua_pushstring(L, text);
}

static int lb_mac(lua_State *L)
{
    uint8_t m[6];
    if (netbe_get_mac(lb_checkbe(L, 1)->be, m) < 0)
        lua_pushnil(L);
    else
        lb_pushmac(L, m);
    return 1;
}

static int lb_get_cap(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)netbe_get_cap(lb_checkbe(L, 1)->be));
    return 1;
}

/* be:set_cap(features, hdr_len) -> true | nil, message */
static int lb_set_cap(lua_State *L)
{
    lb_backend *b = lb_checkbe(L, 1);
    int rc = netbe_set_cap(b->be, (uint64_t)luaL_checkinteger(L, 2),
                           (unsigned)luaL_optinteger(L, 3, 0));
    if (rc < 0)
        return lb_fail(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

static int lb_get_features(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)netbe_get_features(lb_checkbe(L, 1)->be));
    return 1;
}

static int lb_hdr_len(lua_State *L)
{
    lua_pushinteger(L, netbe_get_vnet_hdr_len(lb_checkbe(L, 1)->be));
    return 1;
}

static int lb_tostring(lua_State *L)
{
    lb_backend *b = luaL_checkudata(L, 1, LB_BACKEND);
    if (b->be)
        lua_pushfstring(L, "netbe.backend(%s: %s)", netbe_type(b->be), netbe_name(b->be));
    else
        lua_pushstring(L, "netbe.backend(closed)");
    return 1;
}

/* ====================================================================
** Policies: the C side of lua/netbe/policy.lua
** ====================================================================
** netbe.policy_new(desc) builds a netbe_policy from the normalized table
** that policy.lua produces: every rule field present in a rule's table
** turns its match bit on. Every key must be one netbe knows and every
** value of the type and range its C field takes; a description that is
** not returns nil and a message naming the rule and the field. A policy
** given to a wire belongs to the wire; its Lua handle is emptied.
*/

#define LB_POLICY "netbe.policy"

typedef struct lb_policy {
    netbe_policy *p;
} lb_policy;

/* How a rule field is read: an integer in [lo, hi] into a C integer of its
** size, a string of exactly LO bytes (LO 0: 4 or 16), a number, a string
** pointer (with its length at LEN_OFF when that is not 0). */
enum lb_kind { LB_INT, LB_BYTES, LB_NUM, LB_STR };

struct lb_field {
    const char *name;
    enum lb_kind kind;
    lua_Integer lo, hi;
    size_t off, size, len_off;
    unsigned match;              /* the match bit the field turns on */
};

/* The keys of a rule table: name, the members of each match field in
** bit order (netbe_match_field: netbe.c's table of fields), then the
** rest. At most a field per bit of an unsigned, three members each. */
#define LB_RULE_MAX (1 + 32 * 3 + 7)

/* Member M of a match field as a field of a rule table. */
static struct lb_field lb_member(const struct netbe_rule_member *m)
{
    struct lb_field f = {m->name, m->bytes ? LB_BYTES : LB_INT, m->lo, m->hi, m->off, m->size,
                         0, m->match};
    if (m->bytes)
        f.lo = m->lo == m->hi ? m->lo : 0;
    return f;
}

static int lb_listed(const struct lb_field *f, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0)
            return 1;
    return 0;
}

/* Fill OUT (LB_RULE_MAX entries) with the keys of a rule table. Fields
** that share a member (ip_family) list it once. */
static void lb_rule_fields(struct lb_field *out)
{
    static const struct lb_field tail[] = {
        {"action", LB_INT, NETBE_ACT_PASS, NETBE_ACT_LUA, offsetof(struct netbe_rule, action),
         sizeof(enum netbe_action), 0, 0},
        {"rate_unit", LB_INT, NETBE_RATE_BITS, NETBE_RATE_FRAMES,
         offsetof(struct netbe_rule, rate_unit), sizeof(int), 0, 0},
        {"rate", LB_NUM, 0, 0, offsetof(struct netbe_rule, rate), sizeof(double), 0, 0},
        {"burst", LB_NUM, 0, 0, offsetof(struct netbe_rule, burst), sizeof(double), 0, 0},
        {"hook", LB_STR, 0, 0, offsetof(struct netbe_rule, hook), sizeof(char *),
         offsetof(struct netbe_rule, hook_len), 0},
        {"hook_name", LB_STR, 0, 0, offsetof(struct netbe_rule, hook_name), sizeof(char *), 0, 0},
        {NULL, LB_INT, 0, 0, 0, 0, 0, 0}
    };
    const struct netbe_match_field *mf;
    int n = 0;
    out[n++] = (struct lb_field){"name", LB_STR, 0, 0, offsetof(struct netbe_rule, name),
                                 sizeof(char *), 0, 0};
    for (int i = 0; (mf = netbe_match_field(i)); i++)
        for (int k = 0; k < mf->nmembers; k++)
            if (!lb_listed(out, n, mf->members[k].name))
                out[n++] = lb_member(&mf->members[k]);
    for (size_t k = 0; k < sizeof tail / sizeof tail[0]; k++)
        out[n++] = tail[k];
}

#define LB_D(field, lo, hi) {#field, LB_INT, lo, hi, offsetof(struct netbe_policy_desc, field), \
    sizeof(((struct netbe_policy_desc *)0)->field), 0, 0}

static const struct lb_field lb_desc_fields[] = {
    {"default", LB_INT, NETBE_PASS, NETBE_DROP, offsetof(struct netbe_policy_desc, default_verdict),
     sizeof(int), 0, 0},
    {"fail", LB_INT, NETBE_PASS, NETBE_DROP, offsetof(struct netbe_policy_desc, fail_verdict),
     sizeof(int), 0, 0},
    LB_D(hook_budget, 0, UINT_MAX),
    LB_D(hook_memory, 0, LUA_MAXINTEGER),
    LB_D(hook_time_ns, 0, LUA_MAXINTEGER),
    {"rules", LB_NUM, 0, 0, 0, 0, 0, 0},   /* read apart */
    {NULL, LB_INT, 0, 0, 0, 0, 0, 0}
};

/* "name, dir, ..." for messages. */
static const char *lb_field_names(lua_State *L, const struct lb_field *f)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (; f->name; f++) {
        luaL_addstring(&b, f->name);
        if (f[1].name)
            luaL_addstring(&b, ", ");
    }
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

/* Store the value on top of the stack into field F of OUT; WHO names the
** rule for messages. Strings stay in the table they came from, which the
** caller keeps on its stack until netbe_policy_new has copied them. */
static void lb_store_field(lua_State *L, const struct lb_field *f, void *out, const char *who)
{
    char *at = (char *)out + f->off;
    int t = lua_type(L, -1), isint;
    size_t len;
    if (f->kind == LB_INT) {
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint || v < f->lo || v > f->hi)
            luaL_error(L, "%sfield '%s': expected an integer %I-%I, got %s", who, f->name,
                       f->lo, f->hi, t == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
        uint8_t v8 = (uint8_t)v;
        uint16_t v16 = (uint16_t)v;
        uint32_t v32 = (uint32_t)v;
        uint64_t v64 = (uint64_t)v;
        memcpy(at, f->size == 1 ? (void *)&v8 : f->size == 2 ? (void *)&v16 :
                   f->size == 4 ? (void *)&v32 : (void *)&v64, f->size);
    } else if (f->kind == LB_NUM) {
        if (t != LUA_TNUMBER)
            luaL_error(L, "%sfield '%s': expected a number, got %s", who, f->name,
                       luaL_typename(L, -1));
        *(double *)at = lua_tonumber(L, -1);
    } else if (t != LUA_TSTRING) {
        luaL_error(L, "%sfield '%s': expected a string, got %s", who, f->name, luaL_typename(L, -1));
    } else if (f->kind == LB_STR) {
        *(const char **)at = lua_tolstring(L, -1, &len);
        if (f->len_off)
            *(size_t *)((char *)out + f->len_off) = len;
    } else {
        const char *s = lua_tolstring(L, -1, &len);
        if (f->lo ? len != (size_t)f->lo : len != 4 && len != 16)
            luaL_error(L, "%sfield '%s': expected %s bytes, got %d", who, f->name,
                       f->lo ? lua_pushfstring(L, "%I", f->lo) : "4 or 16", (int)len);
        memcpy(at, s, len);
    }
}

/* Read every key of the table at T through FIELDS into OUT; returns the
** match bits of the fields present. Unknown keys are an error. */
static unsigned lb_read_fields(lua_State *L, int t, const struct lb_field *fields, void *out,
                               const char *who)
{
    unsigned match = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        const struct lb_field *f = fields;
        while (f->name && (lua_type(L, -2) != LUA_TSTRING ||
                           strcmp(f->name, lua_tostring(L, -2)) != 0))
            f++;
        if (!f->name) {
            const char *q = lua_type(L, -2) == LUA_TSTRING ? "'" : "";
            const char *key = luaL_tolstring(L, -2, NULL);
            luaL_error(L, "%sunknown field %s%s%s (expected one of: %s)", who, q, key, q,
                       lb_field_names(L, fields));
        }
        if (f->size)
            lb_store_field(L, f, out, who);
        match |= f->match;
        lua_pop(L, 1);
    }
    return match;
}

/* Read the rule table at T (the Ith) into R through FIELDS. */
static void lb_torule(lua_State *L, int t, int i, struct netbe_rule *r,
                      const struct lb_field *fields)
{
    char who[96];
    memset(r, 0, sizeof *r);
    memset(r->src_mac_mask, 0xff, 6);
    memset(r->dst_mac_mask, 0xff, 6);
    lua_getfield(L, t, "name");
    if (lua_type(L, -1) == LUA_TSTRING)
        snprintf(who, sizeof who, "rule '%s': ", lua_tostring(L, -1));
    else
        snprintf(who, sizeof who, "rule %d: ", i);
    lua_pop(L, 1);
    r->match = lb_read_fields(L, t, fields, r, who);
}

/* Protected part of policy_new: read the description (argument 1) into
** the desc and rule array passed as light userdata (arguments 2 and 3). */
static int lb_policy_read(lua_State *L)
{
    struct netbe_policy_desc *d = lua_touserdata(L, 2);
    struct netbe_rule *rv = lua_touserdata(L, 3);
    struct lb_field fields[LB_RULE_MAX];
    lb_rule_fields(fields);
    lb_read_fields(L, 1, lb_desc_fields, d, "policy_new: ");
    lua_getfield(L, 1, "rules");
    if (!lua_istable(L, -1))
        return luaL_error(L, "policy_new: rules: expected a list of rule tables, got %s",
                          luaL_typename(L, -1));
    for (int i = 0; i < d->nrules; i++) {
        lua_rawgeti(L, -1, i + 1);
        if (!lua_istable(L, -1))
            return luaL_error(L, "rule %d: expected a table, got %s", i + 1,
                              luaL_typename(L, -1));
        lb_torule(L, lua_gettop(L), i + 1, &rv[i], fields);
        lua_pop(L, 1);
    }
    return 0;
}

/* netbe.policy_new(desc) -> policy | nil, message */
/* netbe.proto_has_ports(n): whether rules may match ports with proto N. */
static int lb_proto_has_ports(lua_State *L)
{
    lua_Integer proto = luaL_checkinteger(L, 1);
    lua_pushboolean(L, proto >= 0 && proto <= 255 && netbe_proto_has_ports((int)proto));
    return 1;
}

static int lb_policy_new(lua_State *L)
{
    char err[NETBE_ERRMAX];
    struct netbe_policy_desc d = {0};
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "rules");
    lua_Integer n = lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0;
    lua_pop(L, 1);
    if (n > 65535)
        n = 65536;               /* netbe_policy_new names the limit */
    d.nrules = (int)n;
    struct netbe_rule *rv = lua_newuserdatauv(L, sizeof *rv * ((size_t)n + 1), 0);
    lua_pushcfunction(L, lb_policy_read);
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, &d);
    lua_pushlightuserdata(L, rv);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
        lb_one_line(L, -1);
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    d.rules = rv;
    lb_policy *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    lp->p = NULL;
    luaL_setmetatable(L, LB_POLICY);
    if (netbe_policy_new(&lp->p, &d, err, sizeof err) < 0) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

static lb_policy *lb_checkpolicy(lua_State *L, int idx)
{
    lb_policy *lp = luaL_checkudata(L, idx, LB_POLICY);
    if (!lp->p)
        luaL_error(L, "netbe: this policy was given to a wire; read wire:policy_stats()");
    return lp;
}

static int lb_policy_gc(lua_State *L)
{
    lb_policy *lp = luaL_checkudata(L, 1, LB_POLICY);
    netbe_policy_free(lp->p);
    lp->p = NULL;
    return 0;
}

static int lb_dir_arg(lua_State *L, int idx)
{
    static const char *const dirs[] = {"to_guest", "from_guest", NULL};
    return luaL_checkoption(L, idx, NULL, dirs);
}

/* policy:eval(dir, frame [, now_ns]) -> "pass" | "drop" */
static int lb_policy_eval(lua_State *L)
{
    lb_policy *lp = lb_checkpolicy(L, 1);
    int dir = lb_dir_arg(L, 2);
    size_t len;
    const char *f = luaL_checklstring(L, 3, &len);
    uint64_t now = (uint64_t)luaL_optinteger(L, 4, 0);
    lua_pushstring(L, netbe_policy_eval(lp->p, dir, f, len, now) == NETBE_PASS ?
                   "pass" : "drop");
    return 1;
}

/* policy:carry(old): counters and buckets from OLD, by rule name. */
static int lb_policy_carry(lua_State *L)
{
    netbe_policy_carry(lb_checkpolicy(L, 1)->p, lb_checkpolicy(L, 2)->p);
    return 0;
}

/* Push the counters table; RULE(i, rs) reads rule I. */
static void lb_push_policy_stats(lua_State *L, const struct netbe_policy_stats *st,
                                 int (*rule)(void *, int, struct netbe_rule_stats *),
                                 void *arg)
{
    static const char *const dirs[] = {"to_guest", "from_guest"};
    lua_createtable(L, 0, 6);
    for (int d = 0; d < 2; d++) {
        lua_createtable(L, 0, 4);
#define F(name) (lua_pushinteger(L, (lua_Integer)st->name[d]), lua_setfield(L, -2, #name))
        F(pass_frames); F(pass_bytes); F(drop_frames); F(drop_bytes);
#undef F
        lua_setfield(L, -2, dirs[d]);
    }
    lua_pushinteger(L, (lua_Integer)st->hook_errors);
    lua_setfield(L, -2, "hook_errors");
    lua_pushinteger(L, (lua_Integer)st->reloads);
    lua_setfield(L, -2, "reloads");
    lua_createtable(L, st->nrules, 0);
    struct netbe_rule_stats rs;
    for (int i = 0; i < st->nrules && rule(arg, i, &rs) == 0; i++) {
        lua_createtable(L, 0, 4);
        lua_pushstring(L, rs.name);
        lua_setfield(L, -2, "name");
        lua_pushinteger(L, (lua_Integer)rs.hits);
        lua_setfield(L, -2, "hits");
        lua_pushinteger(L, (lua_Integer)rs.bytes);
        lua_setfield(L, -2, "bytes");
        lua_pushinteger(L, (lua_Integer)rs.drops);
        lua_setfield(L, -2, "drops");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "rules");
}

static int lb_policy_rule(void *arg, int i, struct netbe_rule_stats *rs)
{
    return netbe_policy_rule_stats(arg, i, rs);
}

static int lb_wire_rule(void *arg, int i, struct netbe_rule_stats *rs)
{
    return netbe_wire_rule_stats(arg, i, rs);
}

/* policy:stats() -> {to_guest = {...}, from_guest = {...}, hook_errors,
** reloads, rules = {{name, hits, bytes, drops}, ...}} */
static int lb_policy_stats(lua_State *L)
{
    netbe_policy *p = lb_checkpolicy(L, 1)->p;
    struct netbe_policy_stats st;
    netbe_policy_get_stats(p, &st);
    lb_push_policy_stats(L, &st, lb_policy_rule, p);
    return 1;
}

/* ====================================================================
** Files: policy and topology files, each in a sandbox of its own
** ====================================================================
** netbe.run_file(path, opts) reads PATH and runs it in a new sandbox
** (netbe_sandbox_new) with the bounds OPTS gives. What the file produced
** crosses back as plain data only: strings, numbers, booleans and tables
** of them, copied through a byte buffer (encoded in the sandbox, decoded
** here) with a bound on depth and size, so nothing the file made (no
** function, no metatable) reaches the caller's state. With opts.hooks a
** function becomes a hook description: its own source text, found in the
** file and checked to compile to exactly the function the file made, and
** the values it captured.
*/

#define LB_FILE "netbe.file"
#define LB_DEPTH 32              /* tables nested in a result */
#define LB_CANDIDATES 64         /* source spans tried for one hook */

/* A run's resources, owned by a userdata of the caller's state so that an
** error anywhere frees them. */
typedef struct lb_file {
    lua_State *S;                /* the sandbox */
    char *text;                  /* the file's text */
    size_t len;
    const char *chunkname;       /* "@PATH", in the caller's state */
    char *out;                   /* the encoded result */
    size_t out_len, out_cap, out_limit;
    size_t *lines;               /* offsets where lines start, made on demand */
    int nlines;
    int hooks;                   /* functions become hook descriptions */
    int any_env;                 /* every _ENV upvalue is the hook's globals */
    int env;                     /* stack index of the file's globals in S */
} lb_file;

static void lb_file_free(lb_file *f)
{
    netbe_sandbox_close(f->S);
    free(f->text);
    free(f->out);
    free(f->lines);
    memset(f, 0, sizeof *f);
}

static int lb_file_gc(lua_State *L)
{
    lb_file_free(lua_touserdata(L, 1));
    return 0;
}

static lb_file *lb_file_new(lua_State *L)
{
    lb_file *f = lua_newuserdatauv(L, sizeof *f, 0);
    memset(f, 0, sizeof *f);
    if (luaL_newmetatable(L, LB_FILE)) {
        lua_pushcfunction(L, lb_file_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return f;
}

/* Read PATH (a regular file of at most MAX bytes) into F; 0, or -1 with
** the reason in WHY. A FIFO or device is refused before it is read. */
static int lb_read_file(lb_file *f, const char *path, size_t max, char *why, size_t whylen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(why, whylen, "%s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "%s", S_ISDIR(st.st_mode) ? "it is a directory" :
                 "it is not a regular file");
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size < max ? (size_t)st.st_size + 1 : max + 1;
    ssize_t n = 1;
    char *q;
    while (n > 0 && f->len <= max) {
        if (f->len == cap)
            cap = cap < max / 2 ? cap * 2 : max + 1;
        if (!(q = realloc(f->text, cap)))
            break;
        f->text = q;
        while (f->len < cap && (n = read(fd, f->text + f->len, cap - f->len)) > 0)
            f->len += (size_t)n;
    }
    close(fd);
    if (n < 0 || (n > 0 && f->len <= max)) {
        snprintf(why, whylen, "%s", strerror(n < 0 ? errno : ENOMEM));
        return -1;
    }
    if (f->len > max) {
        snprintf(why, whylen, "it is over %zu bytes, the memory bound", max);
        return -1;
    }
    return 0;
}

/* ---- Encoding: plain data, with a path for messages ---- */

struct lb_pack {
    lb_file *f;
    lua_State *S;
    int depth;
    int no_functions;            /* inside a hook's captured values */
    const char *where;           /* "FILE:LINE" of the call being packed */
    char path[160];              /* the value's place in it: "rules[2].hook" */
};

static void lb_put(struct lb_pack *k, const void *p, size_t n)
{
    lb_file *f = k->f;
    if (n > f->out_limit - f->out_len)
        luaL_error(k->S, "the result is over %zu bytes", f->out_limit);
    if (n > f->out_cap - f->out_len) {
        size_t cap = f->out_cap ? f->out_cap : 256;
        while (cap - f->out_len < n)
            cap *= 2;
        char *q = realloc(f->out, cap);
        if (!q)
            luaL_error(k->S, "out of memory");
        f->out = q;
        f->out_cap = cap;
    }
    memcpy(f->out + f->out_len, p, n);
    f->out_len += n;
}

static void lb_put_tag(struct lb_pack *k, char tag) { lb_put(k, &tag, 1); }

static void lb_put_string(struct lb_pack *k, const char *s, size_t n)
{
    lb_put_tag(k, 's');
    lb_put(k, &n, sizeof n);
    lb_put(k, s, n);
}

static void lb_put_key(struct lb_pack *k, const char *key)
{
    lb_put_string(k, key, strlen(key));
}

static void lb_put_int(struct lb_pack *k, lua_Integer v)
{
    lb_put_tag(k, 'i');
    lb_put(k, &v, sizeof v);
}

static void lb_pack_value(struct lb_pack *k, int idx);

/* Append a key to the path: ".name" or "[1]"; returns the old length. */
static size_t lb_path_push(struct lb_pack *k, int key)
{
    size_t at = strlen(k->path);
    lua_State *S = k->S;
    const char *s = lua_type(S, key) == LUA_TSTRING ? lua_tostring(S, key) : NULL;
    if (s && (isalpha((unsigned char)*s) || *s == '_') && strspn(s, "abcdefghijklmnopqrstuvwxyz"
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == strlen(s))
        snprintf(k->path + at, sizeof k->path - at, "%s%s", at ? "." : "", s);
    else if (lua_isinteger(S, key))
        snprintf(k->path + at, sizeof k->path - at, "[%lld]", (long long)lua_tointeger(S, key));
    else
        snprintf(k->path + at, sizeof k->path - at, "[...]");
    return at;
}

static int lb_pack_error(struct lb_pack *k, const char *what)
{
    return luaL_error(k->S, "%s%s%s%s%s", k->where ? k->where : "", k->where ? ": " : "",
                      k->path, k->path[0] ? ": " : "", what);
}

static void lb_pack_table(struct lb_pack *k, int idx)
{
    lua_State *S = k->S;
    if (++k->depth > LB_DEPTH)
        lb_pack_error(k, "tables nested deeper than 32 (a table that holds itself?)");
    luaL_checkstack(S, 4, NULL);
    lb_put_tag(k, '{');
    lua_pushnil(S);
    while (lua_next(S, idx)) {
        int t = lua_type(S, -2);
        size_t at = lb_path_push(k, lua_gettop(S) - 1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
            lb_pack_error(k, "a key that is not a string, number or boolean");
        lua_pushvalue(S, -2);    /* a copy: lua_tolstring must not touch the key */
        lb_pack_value(k, lua_gettop(S));
        lua_pop(S, 1);
        lb_pack_value(k, lua_gettop(S));
        k->path[at] = '\0';
        lua_pop(S, 1);
    }
    lb_put_tag(k, '}');
    k->depth--;
}

static void lb_pack_hook(struct lb_pack *k, int idx);

static void lb_pack_value(struct lb_pack *k, int idx)
{
    lua_State *S = k->S;
    size_t n;
    switch (lua_type(S, idx)) {
    case LUA_TNIL: lb_put_tag(k, 'n'); break;
    case LUA_TBOOLEAN: lb_put_tag(k, lua_toboolean(S, idx) ? 't' : 'f'); break;
    case LUA_TNUMBER:
        if (lua_isinteger(S, idx)) {
            lb_put_int(k, lua_tointeger(S, idx));
        } else {
            lua_Number v = lua_tonumber(S, idx);
            lb_put_tag(k, 'd');
            lb_put(k, &v, sizeof v);
        }
        break;
    case LUA_TSTRING: {
        const char *s = lua_tolstring(S, idx, &n);
        lb_put_string(k, s, n);
        break;
    }
    case LUA_TTABLE: lb_pack_table(k, idx); break;
    case LUA_TFUNCTION:
        if (k->f->hooks && !k->no_functions) {
            lb_pack_hook(k, idx);
            break;
        }
        /* fall through */
    default:
        lua_pushfstring(S, "a %s (expected strings, numbers, booleans and tables of them)",
                        luaL_typename(S, idx));
        lb_pack_error(k, lua_tostring(S, -1));
    }
}

/* ---- Hooks: a function's own source text ---- */

/* Offsets of the starts of lines 1..N+1 of F's text, counting line ends as
** Lua's lexer does ("\n", "\r", "\r\n", "\n\r"). */
static void lb_index_lines(lua_State *S, lb_file *f)
{
    size_t n = 1;
    for (size_t i = 0; i < f->len; i++)
        n += f->text[i] == '\n' || f->text[i] == '\r';
    f->lines = malloc((n + 1) * sizeof *f->lines);
    if (!f->lines)
        luaL_error(S, "out of memory");
    f->nlines = 0;
    f->lines[f->nlines++] = 0;
    for (size_t i = 0; i < f->len; i++) {
        char c = f->text[i];
        if (c != '\n' && c != '\r')
            continue;
        if (i + 1 < f->len && (f->text[i + 1] == '\n' || f->text[i + 1] == '\r') &&
            f->text[i + 1] != c)
            i++;
        f->lines[f->nlines++] = i + 1;
    }
    f->lines[f->nlines] = f->len;
}

/* Offsets in line LINE of the word WORD (not part of a longer name), at
** most MAX of them in AT; returns how many. */
static int lb_find_words(const lb_file *f, int line, const char *word, size_t *at, int max)
{
    size_t from = f->lines[line - 1], to = f->lines[line], wl = strlen(word);
    int n = 0;
    for (size_t i = from; i + wl <= to && n < max; i++) {
        const char *p = f->text + i;
        if (memcmp(p, word, wl) != 0)
            continue;
        if (i > 0 && (isalnum((unsigned char)p[-1]) || p[-1] == '_'))
            continue;
        if (i + wl < f->len && (isalnum((unsigned char)p[wl]) || p[wl] == '_'))
            continue;
        at[n++] = i;
    }
    return n;
}

/* Push lua_dump(function at IDX) as a string. */
static void lb_dump(lua_State *S, int idx);

struct lb_dumper {
    int init;
    luaL_Buffer b;
};

static int lb_dump_write(lua_State *S, const void *p, size_t n, void *ud)
{
    struct lb_dumper *d = ud;
    if (!d->init) {
        d->init = 1;
        luaL_buffinit(S, &d->b);
    }
    luaL_addlstring(&d->b, p, n);
    return 0;
}

static void lb_dump(lua_State *S, int idx)
{
    struct lb_dumper d = {0};
    lua_pushvalue(S, idx);
    lua_dump(S, lb_dump_write, &d, 0);
    if (!d.init)
        luaL_buffinit(S, &d.b);
    luaL_pushresult(&d.b);
    lua_remove(S, -2);
}

/* A reader of Lua 5.4's dump format (ldump.c), to compare two functions'
** code, constants, nested functions and debug information while skipping
** what depends on where a function sits: its source name and its upvalue
** descriptors (which registers of the enclosing function it captures). */
struct lb_reader {
    const unsigned char *p, *end;
    int ok;
    size_t isize, nsize;         /* sizes of an instruction and a lua_Number */
};

static size_t lb_rd_size(struct lb_reader *r)
{
    size_t x = 0;
    int b;
    do {
        if (r->p >= r->end || x > SIZE_MAX >> 8) {
            r->ok = 0;
            return 0;
        }
        b = *r->p++;
        x = x << 7 | (b & 0x7f);
    } while (!(b & 0x80));
    return x;
}

static void lb_rd_skip(struct lb_reader *r, size_t n)
{
    if (!r->ok || (size_t)(r->end - r->p) < n) {
        r->ok = 0;
        r->p = r->end;
    } else {
        r->p += n;
    }
}

static void lb_rd_string(struct lb_reader *r)
{
    size_t n = lb_rd_size(r);
    if (n)
        lb_rd_skip(r, n - 1);
}

static void lb_rd_header(struct lb_reader *r)
{
    if (r->end - r->p < 15 || memcmp(r->p, LUA_SIGNATURE "\x54\x00", 6) != 0) {
        r->ok = 0;
        return;
    }
    r->isize = r->p[12];
    r->nsize = r->p[14];
    lb_rd_skip(r, 15 + r->p[13] + r->nsize + 1);   /* LUAC_INT, LUAC_NUM, nupvalues */
}

/* Read one function; SPAN gets [after its source, its upvalues) and
** [after its upvalues, its end). */
static void lb_rd_function(struct lb_reader *r, const unsigned char *span[4], int depth)
{
    if (depth > 200) {
        r->ok = 0;
        return;
    }
    lb_rd_string(r);
    if (span)
        span[0] = r->p;
    lb_rd_size(r);               /* linedefined */
    lb_rd_size(r);               /* lastlinedefined */
    lb_rd_skip(r, 3);            /* numparams, is_vararg, maxstacksize */
    size_t n = lb_rd_size(r);
    lb_rd_skip(r, n > SIZE_MAX / 8 ? SIZE_MAX : n * r->isize);
    for (n = lb_rd_size(r); r->ok && n > 0; n--) {
        int tag = r->p < r->end ? *r->p++ : -1;
        if (tag == 0x03 || tag == 0x13)             /* integer, float */
            lb_rd_skip(r, tag == 0x03 ? sizeof(lua_Integer) : r->nsize);
        else if (tag == 0x04 || tag == 0x14)        /* short, long string */
            lb_rd_string(r);
        else if (tag != 0x00 && tag != 0x01 && tag != 0x11)   /* nil, false, true */
            r->ok = 0;
    }
    if (span)
        span[1] = r->p;
    n = lb_rd_size(r);
    lb_rd_skip(r, n > SIZE_MAX / 8 ? SIZE_MAX : n * 3);
    if (span)
        span[2] = r->p;
    for (n = lb_rd_size(r); r->ok && n > 0; n--)
        lb_rd_function(r, NULL, depth + 1);
    lb_rd_skip(r, lb_rd_size(r));                   /* lineinfo */
    for (n = lb_rd_size(r); r->ok && n > 0; n--) {  /* abslineinfo */
        lb_rd_size(r);
        lb_rd_size(r);
    }
    for (n = lb_rd_size(r); r->ok && n > 0; n--) {  /* local variables */
        lb_rd_string(r);
        lb_rd_size(r);
        lb_rd_size(r);
    }
    for (n = lb_rd_size(r); r->ok && n > 0; n--)    /* upvalue names */
        lb_rd_string(r);
    if (span)
        span[3] = r->p;
}

/* The spans of the function of dump D (NESTED: of the only function inside
** the dumped main chunk); 0 when D is not such a dump. */
static int lb_function_spans(const char *d, size_t len, int nested, const unsigned char *span[4])
{
    struct lb_reader r = {(const unsigned char *)d, (const unsigned char *)d + len, 1, 0, 0};
    lb_rd_header(&r);
    if (nested) {
        const unsigned char *main[4];
        lb_rd_function(&r, main, 0);
        r.p = main[2];
        if (lb_rd_size(&r) != 1)
            return 0;
    }
    lb_rd_function(&r, span, 0);
    return r.ok;
}

/* Do dumps A (a function) and B (a chunk holding one function) show the
** same function, apart from its source name and upvalue descriptors? */
static int lb_same_function(const char *a, size_t la, const char *b, size_t lb)
{
    const unsigned char *x[4], *y[4];
    if (!lb_function_spans(a, la, 0, x) || !lb_function_spans(b, lb, 1, y))
        return 0;
    struct lb_reader ux = {x[1], x[2], 1, 0, 0}, uy = {y[1], y[2], 1, 0, 0};
    return x[1] - x[0] == y[1] - y[0] && memcmp(x[0], y[0], (size_t)(x[1] - x[0])) == 0 &&
           lb_rd_size(&ux) == lb_rd_size(&uy) &&
           x[3] - x[2] == y[3] - y[2] && memcmp(x[2], y[2], (size_t)(x[3] - x[2])) == 0;
}

/* Compile "local U1, ... = ...; return" + (LINE - 1) newlines + TEXT (an
** anonymous function's source) and compare it with DUMP, the function's
** own dump. 1 when they are the same function. */
static int lb_try_span(lua_State *S, lb_file *f, int line, const char *text, size_t len,
                       int names, const char *dump, size_t dlen)
{
    luaL_Buffer b;
    luaL_buffinit(S, &b);
    luaL_addstring(&b, lua_tostring(S, names));
    for (int i = 1; i < line; i++)
        luaL_addchar(&b, '\n');
    luaL_addlstring(&b, text, len);
    luaL_pushresult(&b);
    size_t n;
    const char *chunk = lua_tolstring(S, -1, &n);
    int rc = luaL_loadbufferx(S, chunk, n, f->chunkname, "t");
    if (rc == LUA_ERRMEM)
        lua_error(S);
    int same = 0;
    if (rc == LUA_OK) {
        lb_dump(S, -1);
        size_t cl;
        const char *cd = lua_tolstring(S, -1, &cl);
        same = lb_same_function(dump, dlen, cd, cl);
        lua_pop(S, 1);
    }
    lua_pop(S, 2);
    return same;
}

/* Find the source text of the Lua function at IDX in F's text: the span
** from a "function" on its first line to an "end" on its last that
** compiles to the same function. Pushes the text as an anonymous function
** ("function NAME(" becomes "function("). NAMES: the prefix declaring its
** upvalues. */
static void lb_hook_text(struct lb_pack *k, int idx, const lua_Debug *ar, int names)
{
    lua_State *S = k->S;
    lb_file *f = k->f;
    size_t starts[8], ends[8];
    if (!f->lines)
        lb_index_lines(S, f);
    int first = ar->linedefined, last = ar->lastlinedefined;
    if (first < 1 || last < first || last > f->nlines)
        lb_pack_error(k, "its source text is not at hand");
    lb_dump(S, idx);
    size_t dlen;
    const char *dump = lua_tolstring(S, -1, &dlen);
    int ns = lb_find_words(f, first, "function", starts, 8);
    int ne = lb_find_words(f, last, "end", ends, 8), tries = 0;
    for (int i = 0; i < ns; i++) {
        for (int j = ne - 1; j >= 0 && tries < LB_CANDIDATES; j--) {
            if (ends[j] < starts[i])
                continue;
            const char *p = f->text + starts[i] + 8, *stop = f->text + ends[j] + 3;
            while (*p == ' ' || *p == '\t')
                p++;
            const char *open = p;
            while (isalnum((unsigned char)*open) || *open == '_' || *open == '.' ||
                   *open == ':')
                open++;
            while (*open == ' ' || *open == '\t')
                open++;
            if (open > p && *open == '(')
                p = open;
            luaL_Buffer b;
            luaL_buffinit(S, &b);
            luaL_addstring(&b, "function");
            if (p != open)
                luaL_addchar(&b, ' ');
            luaL_addlstring(&b, p, (size_t)(stop - p));
            luaL_pushresult(&b);
            size_t tl;
            const char *text = lua_tolstring(S, -1, &tl);
            tries++;
            if (lb_try_span(S, f, first, text, tl, names, dump, dlen)) {
                lua_remove(S, -2);
                return;
            }
            lua_pop(S, 1);
        }
    }
    lb_pack_error(k, "netbe cannot find this hook's source text exactly (write it as "
                  "function(pkt) ... end, on lines no other function shares, capturing "
                  "only strings, numbers, booleans and tables of them)");
}

/* Is upvalue I of the function at IDX, pushed on top, the hook's globals? */
static int lb_is_env(struct lb_pack *k, const char *name)
{
    return strcmp(name, "_ENV") == 0 &&
           (k->f->any_env || lua_rawequal(k->S, -1, k->f->env));
}

/* A Lua function of the file as a hook description:
** {source = TEXT, line = N, name = CHUNKNAME, upvalues = {{name =, value =
** | env = true}, ...}}. */
static void lb_pack_hook(struct lb_pack *k, int idx)
{
    lua_State *S = k->S;
    lua_Debug ar;
    luaL_checkstack(S, 8, NULL);
    lua_pushvalue(S, idx);
    lua_getinfo(S, ">Su", &ar);
    if (strcmp(ar.what, "Lua") != 0 || strcmp(ar.source, k->f->chunkname) != 0)
        lb_pack_error(k, "only a Lua function written in this file can be a hook");
    luaL_Buffer b;
    int declared = 0;
    luaL_buffinit(S, &b);
    for (int i = 1; i <= ar.nups; i++) {
        const char *name = lua_getupvalue(S, idx, i);
        int env = lb_is_env(k, name);
        lua_pop(S, 1);
        if (!env) {
            luaL_addstring(&b, declared++ ? ", " : "local ");
            luaL_addstring(&b, name);
        }
    }
    luaL_addstring(&b, declared ? " = ...; return " : "return ");
    luaL_pushresult(&b);
    lb_hook_text(k, idx, &ar, lua_gettop(S));
    size_t tl, at = strlen(k->path);
    const char *text = lua_tolstring(S, -1, &tl);
    lua_Integer line = ar.linedefined;
    lb_put_tag(k, '{');
    lb_put_key(k, "source");
    lb_put_string(k, text, tl);
    lb_put_key(k, "line");
    lb_put_int(k, line);
    lb_put_key(k, "name");
    lb_put_string(k, k->f->chunkname, strlen(k->f->chunkname));
    lb_put_key(k, "upvalues");
    lb_put_tag(k, '{');
    for (lua_Integer i = 1; i <= ar.nups; i++) {
        const char *name = lua_getupvalue(S, idx, (int)i);
        lb_put_int(k, i);
        lb_put_tag(k, '{');
        lb_put_key(k, "name");
        lb_put_string(k, name, strlen(name));
        if (lb_is_env(k, name)) {
            lb_put_key(k, "env");
            lb_put_tag(k, 't');
        } else {
            lb_put_key(k, "value");
            snprintf(k->path + at, sizeof k->path - at, "%scaptured '%s'", at ? ": " : "", name);
            k->no_functions++;
            lb_pack_value(k, lua_gettop(S));
            k->no_functions--;
            k->path[at] = '\0';
        }
        lb_put_tag(k, '}');
        lua_pop(S, 1);
    }
    lb_put_tag(k, '}');
    lb_put_tag(k, '}');
    lua_pop(S, 2);
}

/* ---- Decoding, in the caller's state ---- */

struct lb_unpack {
    const char *p, *end;
};

static void lb_get(lua_State *L, struct lb_unpack *u, void *out, size_t n)
{
    if ((size_t)(u->end - u->p) < n)
        luaL_error(L, "netbe: a truncated result");
    memcpy(out, u->p, n);
    u->p += n;
}

/* Push the next value; returns 0 at the end of a table. */
static int lb_unpack_value(lua_State *L, struct lb_unpack *u, int depth)
{
    char tag;
    lb_get(L, u, &tag, 1);
    luaL_checkstack(L, 3, NULL);
    switch (tag) {
    case 'n': lua_pushnil(L); return 1;
    case 't': case 'f': lua_pushboolean(L, tag == 't'); return 1;
    case 'i': {
        lua_Integer v;
        lb_get(L, u, &v, sizeof v);
        lua_pushinteger(L, v);
        return 1;
    }
    case 'd': {
        lua_Number v;
        lb_get(L, u, &v, sizeof v);
        lua_pushnumber(L, v);
        return 1;
    }
    case 's': {
        size_t n;
        lb_get(L, u, &n, sizeof n);
        if ((size_t)(u->end - u->p) < n)
            luaL_error(L, "netbe: a truncated result");
        lua_pushlstring(L, u->p, n);
        u->p += n;
        return 1;
    }
    case '{':
        if (depth > LB_DEPTH + 16)
            luaL_error(L, "netbe: a result nested too deep");
        lua_newtable(L);
        while (lb_unpack_value(L, u, depth + 1)) {
            lb_unpack_value(L, u, depth + 1);
            lua_rawset(L, -3);
        }
        return 1;
    case '}':
        return 0;
    default:
        return luaL_error(L, "netbe: a corrupt result");
    }
}

/* ---- Running a file ---- */

/* In the sandbox: record a call of a collector (rule, settings): its
** argument and the file and line it came from, in the list (upvalue 1). */
static int lb_collect(lua_State *S)
{
    lua_Debug ar;
    lua_settop(S, 1);
    lua_createtable(S, 2, 0);
    lua_pushvalue(S, 1);
    lua_rawseti(S, -2, 1);
    if (lua_getstack(S, 1, &ar) && lua_getinfo(S, "Sl", &ar) && ar.currentline > 0)
        lua_pushfstring(S, "%s:%d", ar.short_src, ar.currentline);
    else
        lua_pushliteral(S, "?");
    lua_rawseti(S, -2, 2);
    lua_rawseti(S, lua_upvalueindex(1), (lua_Integer)lua_rawlen(S, lua_upvalueindex(1)) + 1);
    return 1;
}

/* In the sandbox: set up the file's globals (a table of its own over the
** libraries) with the collectors named in the list (light userdata 1),
** and run the file's chunk (2). Returns its globals, the calls, its
** result. */
static int lb_file_main(lua_State *S)
{
    const char *const *collect = lua_touserdata(S, 1);
    lua_newtable(S);                                     /* 3: globals */
    lua_createtable(S, 0, 1);
    lua_pushglobaltable(S);
    lua_setfield(S, -2, "__index");
    lua_setmetatable(S, 3);
    lua_newtable(S);                                     /* 4: calls */
    for (; collect && *collect; collect++) {
        lua_newtable(S);
        lua_pushvalue(S, -1);
        lua_setfield(S, 4, *collect);
        lua_pushcclosure(S, lb_collect, 1);
        lua_setfield(S, 3, *collect);
    }
    lua_pushvalue(S, 2);
    lua_pushvalue(S, 3);
    lua_setupvalue(S, -2, 1);
    lua_call(S, 0, 1);
    return 3;
}

/* In the sandbox, on what lb_file_main left (globals, calls, result):
** encode {value = ..., calls = ...}. The value is the result when it is a
** table, else the globals when GLOBALS (light userdata 2 non-NULL), else
** nothing. */
static int lb_file_pack(lua_State *S)
{
    lb_file *f = lua_touserdata(S, 1);
    int globals = lua_touserdata(S, 2) != NULL;
    struct lb_pack k = {f, S, 0, 0, NULL, ""};
    f->env = 3;
    int value = 5;
    if (!lua_istable(S, 5) && globals)
        value = 3;
    else if (!lua_istable(S, 5) && !lua_isnil(S, 5))
        return luaL_error(S, "the file returned a %s (expected nothing, or a table)",
                          luaL_typename(S, 5));
    lb_put_tag(&k, '{');
    lb_put_key(&k, "value");
    lb_pack_value(&k, value);
    lb_put_key(&k, "calls");
    lb_put_tag(&k, '{');
    lua_pushnil(S);
    while (lua_next(S, 4)) {     /* name -> list of {argument, "FILE:LINE"} */
        lb_pack_value(&k, lua_gettop(S) - 1);
        lb_put_tag(&k, '{');
        for (lua_Integer i = 1; lua_rawgeti(S, -1, i) == LUA_TTABLE; i++) {
            int rec = lua_gettop(S);
            lua_rawgeti(S, rec, 1);
            lua_rawgeti(S, rec, 2);
            k.where = lua_tostring(S, rec + 2);
            lb_put_int(&k, i);
            lb_put_tag(&k, '{');
            lb_put_int(&k, 1);
            lb_pack_value(&k, rec + 1);
            lb_put_int(&k, 2);
            lb_pack_value(&k, rec + 2);
            lb_put_tag(&k, '}');
            k.where = NULL;
            lua_pop(S, 3);
        }
        lua_pop(S, 2);
        lb_put_tag(&k, '}');
    }
    lb_put_tag(&k, '}');
    lb_put_tag(&k, '}');
    return 0;
}

static lua_Integer lb_opt_int(lua_State *L, int t, const char *k, lua_Integer def)
{
    int isint = 1;
    lua_getfield(L, t, k);
    lua_Integer v = lua_isnil(L, -1) ? def : lua_tointegerx(L, -1, &isint);
    if (!isint || v <= 0)
        luaL_error(L, "netbe.run_file: option %s: expected a positive integer", k);
    lua_pop(L, 1);
    return v;
}

/* Push the message of a run of F (PATH) that failed with WHY: named by
** the file unless it already starts so. */
static int lb_file_fail(lua_State *L, const char *path, const char *why)
{
    luaL_pushfail(L);
    if (strncmp(why, path, strlen(path)) == 0)
        lua_pushstring(L, why);
    else
        lua_pushfstring(L, "%s: %s", path, why);
    lb_one_line(L, -1);
    return 2;
}

/* Decode F's result, free what the run held; pushes the result. */
static void lb_file_result(lua_State *L, lb_file *f)
{
    struct lb_unpack u = {f->out, f->out + f->out_len};
    lb_unpack_value(L, &u, 0);
    lb_file_free(f);
}

/* netbe.run_file(path, {what=, memory=, time=, globals=, collect={...},
** hooks=}) -> {value =, calls = {NAME = {{arg, "FILE:LINE"}, ...}}} | nil,
** message */
static int lb_run_file(lua_State *L)
{
    char why[NETBE_ERRMAX];
    const char *path = luaL_checkstring(L, 1), *collect[8] = {NULL};
    if (lua_isnoneornil(L, 2))
        lua_newtable(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    struct netbe_sandbox_limits lim = {(size_t)lb_opt_int(L, 2, "memory", 64 << 20), 0, 0};
    lua_getfield(L, 2, "time");
    double secs = luaL_optnumber(L, -1, 1);
    if (!(secs > 0 && secs <= 1e6))
        return luaL_error(L, "netbe.run_file: option time: expected seconds, more than 0");
    lim.time_ns = (uint64_t)(secs * 1e9);
    lua_getfield(L, 2, "what");
    const char *what = luaL_optstring(L, -1, "file");
    lua_getfield(L, 2, "globals");
    int globals = lua_toboolean(L, -1);
    lua_getfield(L, 2, "hooks");
    int hooks = lua_toboolean(L, -1);
    lua_getfield(L, 2, "collect");  /* its strings stay alive on the stack */
    for (int i = 0; lua_istable(L, 7) && i < 7; i++) {
        lua_rawgeti(L, 7, i + 1);
        if (!(collect[i] = lua_tostring(L, -1)))
            break;
    }
    lb_file *f = lb_file_new(L);
    f->hooks = hooks;
    f->chunkname = lua_pushfstring(L, "@%s", path);
    f->out_limit = lim.memory;
    if (lb_read_file(f, path, lim.memory, why, sizeof why) < 0)
        return lb_file_fail(L, path, lua_pushfstring(L, "cannot read the %s: %s", what, why));
    if (!(f->S = netbe_sandbox_new(&lim, why, sizeof why)))
        return lb_file_fail(L, path, why);
    lua_pushcfunction(f->S, lb_file_main);
    lua_pushlightuserdata(f->S, collect);
    if (netbe_sandbox_load(f->S, f->text, f->len, f->chunkname, why, sizeof why) < 0 ||
        netbe_sandbox_call(f->S, 2, 3, why, sizeof why) < 0)
        return lb_file_fail(L, path, why);
    lua_pushcfunction(f->S, lb_file_pack);
    lua_pushlightuserdata(f->S, f);
    lua_pushlightuserdata(f->S, globals ? f : NULL);
    lua_rotate(f->S, 1, 3);
    if (netbe_sandbox_call(f->S, 5, 0, why, sizeof why) < 0)
        return lb_file_fail(L, path, why);
    lb_file_result(L, f);
    return 1;
}

/* Protected, in the caller's own state: pack function 2 as a hook. */
static int lb_hook_pack(lua_State *L)
{
    struct lb_pack k = {lua_touserdata(L, 1), L, 0, 0, NULL, ""};
    lb_pack_hook(&k, 2);
    return 0;
}

/* netbe.hook_source(f) -> hook description | nil, message: what run_file
** makes of a file's function, for a Lua function of this state (its _ENV
** becomes the hook's globals). policy.compile turns closures into hooks
** with it. */
static int lb_hook_source(lua_State *L)
{
    char why[NETBE_ERRMAX];
    lua_Debug ar;
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_pushvalue(L, 1);
    lua_getinfo(L, ">S", &ar);
    lb_file *f = lb_file_new(L);
    f->hooks = f->any_env = 1;
    f->chunkname = ar.source;    /* held by the function, argument 1 */
    f->out_limit = 64 << 20;
    if (ar.source[0] == '@') {
        if (lb_read_file(f, ar.source + 1, f->out_limit, why, sizeof why) < 0) {
            luaL_pushfail(L);
            lua_pushfstring(L, "hook: cannot read its source %s: %s", ar.source + 1, why);
            lb_one_line(L, -1);
            return 2;
        }
    } else if (ar.source[0] == '=' || !(f->text = malloc(ar.srclen + 1))) {
        luaL_pushfail(L);
        lua_pushfstring(L, "hook: its source text is not at hand (chunk %s)", ar.short_src);
        lb_one_line(L, -1);
        return 2;
    } else {
        memcpy(f->text, ar.source, ar.srclen);
        f->len = ar.srclen;
    }
    lua_pushcfunction(L, lb_hook_pack);
    lua_pushlightuserdata(L, f);
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        luaL_pushfail(L);
        lua_pushfstring(L, "hook: %s", lua_tostring(L, -2));
        lb_one_line(L, -1);
        return 2;
    }
    lb_file_result(L, f);
    return 1;
}

/* ====================================================================
** Slirp: run-time host forwarding
** ==================================================================== */

/* be:hostfwd_add(rule) / be:hostfwd_remove(rule) -> true | nil, message */
static int lb_hostfwd_call(lua_State *L,
                           int (*fn)(netbe *, const char *, char *, size_t))
{
    char err[NETBE_ERRMAX];
    lb_backend *b = lb_checkbe(L, 1);
    if (fn(b->be, luaL_checkstring(L, 2), err, sizeof err) < 0) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int lb_hostfwd_add(lua_State *L)
{
    return lb_hostfwd_call(L, netbe_slirp_hostfwd_add);
}

static int lb_hostfwd_remove(lua_State *L)
{
    return lb_hostfwd_call(L, netbe_slirp_hostfwd_remove);
}

/* be:hostfwd_list() -> {rule, ...} | nil, message */
static int lb_hostfwd_list(lua_State *L)
{
    lb_backend *b = lb_checkbe(L, 1);
    ssize_t need = netbe_slirp_hostfwd_list(b->be, NULL, 0);
    if (need < 0) {
        luaL_pushfail(L);
        lua_pushfstring(L, "hostfwd: '%s' is not a slirp backend", netbe_name(b->be));
        return 2;
    }
    char *text = malloc((size_t)need + 1);
    if (!text)
        return luaL_error(L, "netbe: out of memory");
    netbe_slirp_hostfwd_list(b->be, text, (size_t)need + 1);
    lua_newtable(L);
    int n = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        lua_pushlstring(L, line, (size_t)(nl - line));
        lua_rawseti(L, -2, ++n);
    }
    free(text);
    return 1;
}

/* ====================================================================
** Wires
** ==================================================================== */

/* netbe.wire(a, b [, {offload = false}]) -> wire. The wire keeps both
** backends alive; offloads are negotiated unless offload is false. */
static int lb_wire_new(lua_State *L)
{
    char err[NETBE_ERRMAX];
    lb_backend *a = lb_checkbe(L, 1), *b = lb_checkbe(L, 2);
    unsigned flags = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "offload");
        if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
            return luaL_error(L, "netbe.wire: option offload: expected a boolean, got %s",
                              luaL_typename(L, -1));
        if (lua_isboolean(L, -1) && !lua_toboolean(L, -1))
            flags |= NETBE_WIRE_NO_OFFLOAD;
        lua_pop(L, 1);
    }
    lua_settop(L, 2);
    if (a->wire || b->wire)
        return luaL_error(L, "netbe: backend %s is already wired",
                          netbe_name((a->wire ? a : b)->be));
    lb_wire *lw = lua_newuserdatauv(L, sizeof *lw, 2);
    memset(lw, 0, sizeof *lw);
    luaL_setmetatable(L, LB_WIRE);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 2);
    if (netbe_wire_new_flags(&lw->w, a->be, b->be, flags, err, sizeof err) < 0)
        return luaL_error(L, "%s", err);
    lw->ends[0] = a;
    lw->ends[1] = b;
    a->wire = b->wire = lw;
    return 1;
}

static int lb_wire_close(lua_State *L)
{
    lb_wire *lw = luaL_checkudata(L, 1, LB_WIRE);
    lb_wire_release(lw);
    return 0;
}

static int lb_wire_drops(lua_State *L)
{
    lb_wire *lw = luaL_checkudata(L, 1, LB_WIRE);
    lua_pushinteger(L, lw->w ? (lua_Integer)netbe_wire_drops(lw->w) : 0);
    return 1;
}

/* wire:set_policy(policy | nil): the wire takes the policy at its next
** batch boundary, carrying counters over by rule name. */
static int lb_wire_set_policy(lua_State *L)
{
    lb_wire *lw = luaL_checkudata(L, 1, LB_WIRE);
    if (!lw->w)
        return luaL_error(L, "netbe: wire is closed");
    netbe_policy *p = NULL;
    if (!lua_isnoneornil(L, 2)) {
        lb_policy *lp = lb_checkpolicy(L, 2);
        p = lp->p;
        lp->p = NULL;
    }
    netbe_wire_set_policy(lw->w, p);
    return 0;
}

/* wire:policy_stats() -> counters as policy:stats(), or nil without a policy */
static int lb_wire_policy_stats(lua_State *L)
{
    lb_wire *lw = luaL_checkudata(L, 1, LB_WIRE);
    struct netbe_policy_stats st;
    if (!lw->w || netbe_wire_policy_stats(lw->w, &st) < 0) {
        lua_pushnil(L);
        return 1;
    }
    lb_push_policy_stats(L, &st, lb_wire_rule, lw->w);
    return 1;
}

/* wire:set_link(up): a cable pull (false) or plug (true); see
** netbe_wire_set_link. */
static int lb_wire_set_link(lua_State *L)
{
    lb_wire *lw = luaL_checkudata(L, 1, LB_WIRE);
    if (!lw->w)
        return luaL_error(L, "netbe: wire is closed");
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    netbe_wire_set_link(lw->w, lua_toboolean(L, 2));
    return 0;
}

/* wire:stats() -> {drops=, link_up=, link_drops_to_guest=, link_drops_from_guest=} */
static int lb_wire_stats(lua_State *L)
{
    lb_wire *lw = luaL_checkudata(L, 1, LB_WIRE);
    if (!lw->w)
        return luaL_error(L, "netbe: wire is closed");
    struct netbe_wire_stats st;
    netbe_wire_get_stats(lw->w, &st);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)st.drops);
    lua_setfield(L, -2, "drops");
    lua_pushboolean(L, st.link_up);
    lua_setfield(L, -2, "link_up");
    lua_pushinteger(L, (lua_Integer)st.link_drops[NETBE_DIR_TO_GUEST]);
    lua_setfield(L, -2, "link_drops_to_guest");
    lua_pushinteger(L, (lua_Integer)st.link_drops[NETBE_DIR_FROM_GUEST]);
    lua_setfield(L, -2, "link_drops_from_guest");
    return 1;
}

/* ====================================================================
** The loop
** ==================================================================== */

typedef struct lb_run {
    lb_loop *lp;
    int tick_ref, signal_ref;
    const char *reason;
    char why[160];               /* a reason a tick returned */
} lb_run;

static void lb_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    lb_run *r = arg;
    r->reason = "timeout";
    event_base_loopbreak(r->lp->base);
}

/* A tick that returns a string ends the run with that string as reason. */
static void lb_on_tick(evutil_socket_t fd, short what, void *arg)
{
    lb_run *r = arg;
    lua_State *L = r->lp->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->tick_ref);
    if (!lb_protected_call(r->lp, 0, 1))
        return;
    if (lua_type(L, -1) == LUA_TSTRING) {
        snprintf(r->why, sizeof r->why, "%s", lua_tostring(L, -1));
        r->reason = r->why;
        event_base_loopbreak(r->lp->base);
    }
    lua_pop(L, 1);
}

/* SIGINT and SIGTERM stop the loop; other signals go to on_signal. */
static void lb_on_signal(evutil_socket_t sig, short what, void *arg)
{
    lb_run *r = arg;
    if ((sig == SIGINT || sig == SIGTERM) || r->signal_ref == LUA_NOREF) {
        r->reason = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal";
        event_base_loopbreak(r->lp->base);
        return;
    }
    lua_rawgeti(r->lp->L, LUA_REGISTRYINDEX, r->signal_ref);
    lua_pushstring(r->lp->L, sig == SIGHUP ? "SIGHUP" : "signal");
    lb_protected_call(r->lp, 1, 0);
}

static int lb_optref(lua_State *L, int t, const char *field)
{
    lua_getfield(L, t, field);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return LUA_NOREF;
    }
    luaL_checktype(L, -1, LUA_TFUNCTION);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static double lb_optnumber(lua_State *L, int t, const char *field, double def)
{
    lua_getfield(L, t, field);
    double v = luaL_optnumber(L, -1, def);
    lua_pop(L, 1);
    return v;
}

static struct timeval lb_tv(double s)
{
    struct timeval tv = {(time_t)s, (suseconds_t)((s - (time_t)s) * 1e6)};
    return tv;
}

/* netbe.run{timeout=S, signals=true, every=S, tick=f, on_signal=f} -> reason
** Runs until the timeout, SIGINT/SIGTERM (with signals), or a callback
** error, which is raised. */
static int lb_run_loop(lua_State *L)
{
    lb_loop *lp = lb_getloop(L);
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lb_run r = {lp, lb_optref(L, 1, "tick"), lb_optref(L, 1, "on_signal"), "done", ""};
    double timeout = lb_optnumber(L, 1, "timeout", -1), every = lb_optnumber(L, 1, "every", 0);
    lua_getfield(L, 1, "signals");
    int signals = lua_toboolean(L, -1);
    lua_pop(L, 1);
    struct event *evs[6] = {0};
    int nev = 0;
    if (timeout >= 0) {
        struct timeval tv = lb_tv(timeout);
        evs[nev] = evtimer_new(lp->base, lb_on_timeout, &r);
        evtimer_add(evs[nev++], &tv);
    }
    if (every > 0 && r.tick_ref != LUA_NOREF) {
        struct timeval tv = lb_tv(every);
        evs[nev] = event_new(lp->base, -1, EV_PERSIST, lb_on_tick, &r);
        event_add(evs[nev++], &tv);
    }
    if (signals) {
        int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
        for (int i = 0; i < 3; i++) {
            evs[nev] = evsignal_new(lp->base, sigs[i], lb_on_signal, &r);
            event_add(evs[nev++], NULL);
        }
    }
    event_base_loop(lp->base, EVLOOP_NO_EXIT_ON_EMPTY);
    for (int i = 0; i < nev; i++)
        event_free(evs[i]);
    luaL_unref(L, LUA_REGISTRYINDEX, r.tick_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, r.signal_ref);
    if (lp->error_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lp->error_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, lp->error_ref);
        lp->error_ref = LUA_NOREF;
        return lua_error(L);
    }
    lua_pushstring(L, r.reason);
    return 1;
}

/* netbe.step(seconds): run the loop for at most SECONDS (default 0: only
** what is ready now). */
static int lb_step(lua_State *L)
{
    lua_settop(L, 1);
    double s = luaL_optnumber(L, 1, 0);
    lua_newtable(L);
    lua_pushnumber(L, s);
    lua_setfield(L, -2, "timeout");
    lua_replace(L, 1);
    return lb_run_loop(L);
}

/* ====================================================================
** Control sockets: requests as lines on a UNIX stream socket
** ====================================================================
** netbe.control_listen serves a control socket on the loop: it accepts
** up to LB_CTL_CLIENTS clients at once, reads requests of one line each
** (several per connection; the last may end at the client's EOF instead,
** as slirp4netns's clients send it), hands each to a Lua handler and
** writes the string the handler returns, and a newline, back. Nothing
** blocks: a client that sends slowly holds only its own buffer, one that
** does not read its answers is dropped once LB_CTL_PENDING bytes wait. */

#define LB_LISTENER     "netbe.listener"
#define LB_CTL_CLIENTS  16
#define LB_CTL_REQUEST  (64 * 1024)     /* longest request line */
#define LB_CTL_PENDING  (16 << 20)      /* unsent answer bytes per client */

typedef struct lb_client {
    struct lb_listener *ls;
    int fd;
    struct event *rd, *wr;
    char in[LB_CTL_REQUEST];
    size_t inlen;
    int skipping;                /* dropping the rest of an oversize line */
    int eof;                     /* the client sent all it will */
    char *out;
    size_t outlen, outcap;
} lb_client;

typedef struct lb_listener {
    lb_loop *loop;
    int fd;
    struct event *ev;
    char *path;
    struct netbe_unix_id id;
    int handler_ref;
    lb_client *clients[LB_CTL_CLIENTS];
} lb_listener;

static void lb_client_free(lb_client *c)
{
    lb_listener *ls = c->ls;
    for (int i = 0; i < LB_CTL_CLIENTS; i++)
        if (ls->clients[i] == c)
            ls->clients[i] = NULL;
    if (c->rd)
        event_free(c->rd);
    if (c->wr)
        event_free(c->wr);
    close(c->fd);
    free(c->out);
    free(c);
}

/* The handler's answer to REQ (LEN bytes), or to the problem WHY when REQ
** is NULL, appended to C's output with a newline. Returns 0, or -1 when
** the client must go (its output is full, or the handler failed). */
static int lb_client_answer(lb_client *c, const char *req, size_t len, const char *why)
{
    lua_State *L = c->ls->loop->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ls->handler_ref);
    if (req)
        lua_pushlstring(L, req, len), lua_pushnil(L);
    else
        lua_pushnil(L), lua_pushstring(L, why);
    if (!lb_protected_call(c->ls->loop, 2, 1))
        return -1;
    size_t n;
    const char *ans = lua_tolstring(L, -1, &n);
    int rc = -1;
    if (ans && c->outlen + n + 1 <= LB_CTL_PENDING) {
        if (c->outlen + n + 1 > c->outcap) {
            size_t cap = (c->outlen + n + 1) * 2;
            char *o = realloc(c->out, cap);
            if (o)
                c->out = o, c->outcap = cap;
        }
        if (c->outlen + n + 1 <= c->outcap) {
            memcpy(c->out + c->outlen, ans, n);
            c->out[c->outlen + n] = '\n';
            c->outlen += n + 1;
            rc = 0;
        }
    }
    lua_pop(L, 1);
    return rc;
}

/* Write what C's output holds. Returns 1 when all went, 0 when the
** socket is full, -1 on an error. */
static int lb_client_flush(lb_client *c)
{
    size_t done = 0;
    while (done < c->outlen) {
        ssize_t n = send(c->fd, c->out + done, c->outlen - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    memmove(c->out, c->out + done, c->outlen - done);
    c->outlen -= done;
    return c->outlen == 0;
}

/* Answer every whole line in C's input. Returns 0 or -1 as lb_client_answer. */
static int lb_client_lines(lb_client *c)
{
    char *start = c->in, *end = c->in + c->inlen, *nl;
    while ((nl = memchr(start, '\n', (size_t)(end - start)))) {
        size_t len = (size_t)(nl - start);
        if (len && start[len - 1] == '\r')
            len--;
        if (!c->skipping && len && lb_client_answer(c, start, len, NULL) < 0)
            return -1;
        c->skipping = 0;
        start = nl + 1;
    }
    c->inlen = (size_t)(end - start);
    memmove(c->in, start, c->inlen);
    if (c->inlen == sizeof c->in) {
        c->inlen = 0;
        if (!c->skipping && lb_client_answer(c, NULL, 0, "request longer than 65536 bytes "
                                             "(the most one line may hold)") < 0)
            return -1;
        c->skipping = 1;
    }
    return 0;
}

/* After reading or writing: close C once it is done or broken, else wait
** for what it still needs. */
static void lb_client_settle(lb_client *c, int broken)
{
    int flushed = broken ? -1 : lb_client_flush(c);
    if (flushed < 0 || (flushed == 1 && c->eof)) {
        lb_client_free(c);
        return;
    }
    if (flushed == 0)
        event_add(c->wr, NULL);
    if (c->eof)
        event_del(c->rd);
}

static void lb_client_on_read(evutil_socket_t fd, short what, void *arg)
{
    lb_client *c = arg;
    ssize_t n = recv(fd, c->in + c->inlen, sizeof c->in - c->inlen, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    int broken = n < 0;
    if (n > 0) {
        c->inlen += (size_t)n;
        broken = lb_client_lines(c) < 0;
    } else if (n == 0) {
        c->eof = 1;
        if (c->inlen && !c->skipping)
            broken = lb_client_answer(c, c->in, c->inlen, NULL) < 0;
        c->inlen = 0;
    }
    lb_client_settle(c, broken);
}

static void lb_client_on_write(evutil_socket_t fd, short what, void *arg)
{
    lb_client_settle(arg, 0);
}

static void lb_listener_on_accept(evutil_socket_t fd, short what, void *arg)
{
    lb_listener *ls = arg;
    int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0)
        return;
    int slot = -1;
    for (int i = 0; i < LB_CTL_CLIENTS && slot < 0; i++)
        if (!ls->clients[i])
            slot = i;
    lb_client *c = calloc(1, sizeof *c);
    if (!c) {
        close(cfd);
        return;
    }
    c->ls = ls;
    c->fd = cfd;
    c->rd = event_new(ls->loop->base, cfd, EV_READ | EV_PERSIST, lb_client_on_read, c);
    c->wr = event_new(ls->loop->base, cfd, EV_WRITE, lb_client_on_write, c);
    if (slot < 0) {
        /* Told why as far as the socket takes it at once, then closed. */
        if (lb_client_answer(c, NULL, 0, "too many clients (16 at once)") == 0)
            lb_client_flush(c);
        lb_client_free(c);
        return;
    }
    ls->clients[slot] = c;
    if (!c->rd || !c->wr || event_add(c->rd, NULL) < 0)
        lb_client_free(c);
}

static int lb_listener_close(lua_State *L)
{
    lb_listener *ls = luaL_checkudata(L, 1, LB_LISTENER);
    for (int i = 0; i < LB_CTL_CLIENTS; i++)
        if (ls->clients[i])
            lb_client_free(ls->clients[i]);
    if (ls->ev)
        event_free(ls->ev);
    ls->ev = NULL;
    if (ls->fd >= 0) {
        close(ls->fd);
        netbe_unix_release(ls->path, &ls->id);
    }
    ls->fd = -1;
    free(ls->path);
    ls->path = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, ls->handler_ref);
    ls->handler_ref = LUA_NOREF;
    return 0;
}

/* Bind a listening UNIX socket at PATH created with MODE. Returns the
** descriptor, or -1 with ERR set. */
static int lb_bind_unix(const char *path, unsigned mode, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "control socket '%s': path longer than %zu bytes", path,
                 sizeof sa.sun_path - 1);
        return -1;
    }
    strcpy(sa.sun_path, path);
    if (netbe_unix_clear(path, err, errlen) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* The umask makes the socket MODE from the start: no moment at 0777. */
    mode_t old = umask(0777 & ~mode);
    int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0 || listen(fd, LB_CTL_CLIENTS) < 0) {
        snprintf(err, errlen, "control socket '%s': %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* netbe.control_listen(path, mode, handler) -> listener | nil, message.
** HANDLER(request) returns the answer to one request line (without its
** newline); HANDLER(nil, why) the answer to a request that could not be
** read whole (why says what was wrong). The listener serves until
** listener:close() or its collection, which removes PATH when it still is
** the socket bound there (netbe_unix_release). Do not close it from
** inside HANDLER. */
static int lb_control_listen(lua_State *L)
{
    char err[NETBE_ERRMAX];
    const char *path = luaL_checkstring(L, 1);
    lua_Integer mode = luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    luaL_argcheck(L, mode >= 0 && mode <= 0777, 2, "expected a mode from 0 to 0777");
    lb_listener *ls = lua_newuserdatauv(L, sizeof *ls, 0);
    memset(ls, 0, sizeof *ls);
    ls->fd = -1;
    ls->handler_ref = LUA_NOREF;
    luaL_setmetatable(L, LB_LISTENER);
    ls->loop = lb_getloop(L);
    if (!(ls->path = strdup(path)))
        return luaL_error(L, "netbe: out of memory");
    if ((ls->fd = lb_bind_unix(path, (unsigned)mode, err, sizeof err)) < 0) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    netbe_unix_mark(path, &ls->id);
    lua_pushvalue(L, 3);
    ls->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ls->ev = event_new(ls->loop->base, ls->fd, EV_READ | EV_PERSIST, lb_listener_on_accept, ls);
    if (!ls->ev || event_add(ls->ev, NULL) < 0)
        return luaL_error(L, "netbe: cannot watch control socket '%s'", path);
    return 1;
}

/* Wait up to DEADLINE (CLOCK_MONOTONIC seconds) for FD to be ready for
** EVENTS. Returns 0, or a negative errno value (-ETIMEDOUT). */
static int lb_wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = deadline - (double)now.tv_sec - now.tv_nsec / 1e9;
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {fd, events, 0};
        int n = poll(&p, 1, (int)(left * 1000) + 1);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

/* netbe.control_call(path, request, timeout) -> answer | nil, message.
** Sends REQUEST (one line) to the control socket at PATH, ends its side of
** the connection, and returns everything the server writes back before it
** closes, waiting at most TIMEOUT seconds (default 10) in all. */
static int lb_control_call(lua_State *L)
{
    size_t len;
    const char *path = luaL_checkstring(L, 1);
    const char *req = luaL_checklstring(L, 2, &len);
    double timeout = luaL_optnumber(L, 3, 10);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double deadline = (double)now.tv_sec + now.tv_nsec / 1e9 + timeout;
    if (strlen(path) >= sizeof sa.sun_path)
        return luaL_pushfail(L), lua_pushfstring(L, "%s: path too long", path), 2;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ? -errno : 0;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t done = 0; rc == 0 && done < len;) {
        rc = lb_wait_fd(fd, POLLOUT, deadline);
        ssize_t n = rc ? 0 : send(fd, req + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            rc = -errno;
        done += n > 0 ? (size_t)n : 0;
    }
    if (rc == 0)
        shutdown(fd, SHUT_WR);
    while (rc == 0 && (rc = lb_wait_fd(fd, POLLIN, deadline)) == 0) {
        char *p = luaL_prepbuffer(&b);
        ssize_t n = recv(fd, p, LUAL_BUFFERSIZE, MSG_DONTWAIT);
        if (n == 0)
            break;
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            rc = -errno;
        if (n > 0)
            luaL_addsize(&b, (size_t)n);
    }
    if (fd >= 0)
        close(fd);
    luaL_pushresult(&b);
    if (rc < 0)
        return luaL_pushfail(L), lua_pushfstring(L, "%s: %s", path, strerror(-rc)), 2;
    return 1;
}

/* netbe.path_inside(path, dir) -> the real path of PATH | nil, message:
** PATH must resolve ('..' and symbolic links followed) to DIR or below. */
static int lb_path_inside(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1), *dir = luaL_checkstring(L, 2);
    char *rp = realpath(path, NULL), *rd = realpath(dir, NULL);
    size_t dl = rd ? strlen(rd) : 0;
    int inside = rp && rd && strncmp(rp, rd, dl) == 0 &&
                 (rp[dl] == '\0' || rp[dl] == '/' || strcmp(rd, "/") == 0);
    if (inside)
        lua_pushstring(L, rp);
    else if (!rp || !rd)
        luaL_pushfail(L), lua_pushfstring(L, "cannot resolve '%s': %s", rp ? dir : path,
                                          strerror(errno));
    else
        luaL_pushfail(L), lua_pushfstring(L, "'%s' lies in %s, outside the allowed %s",
                                          path, rp, rd);
    free(rp);
    free(rd);
    return inside ? 1 : 2;
}

/* ====================================================================
** Frames: software offloads
** ==================================================================== */

#define LB_BAD_HDR "the virtio-net header does not match the frame"

/* The (frame, hdr_len) arguments of FN; hdr_len is 10 or 12. */
static const char *lb_checkframe(lua_State *L, const char *fn, size_t *len, unsigned *hl)
{
    const char *f = luaL_checklstring(L, 1, len);
    lua_Integer n = luaL_checkinteger(L, 2);
    if (n != 10 && n != 12)
        luaL_error(L, "%s: header length %d (expected 10 or 12)", fn, (int)n);
    *hl = (unsigned)n;
    return f;
}

/* netbe.frame_check(frame, hdr_len) -> true | nil, message */
static int lb_frame_check(lua_State *L)
{
    size_t len;
    unsigned hl;
    const char *f = lb_checkframe(L, "netbe.frame_check", &len, &hl);
    if (netbe_frame_check(f, len, hl) < 0) {
        luaL_pushfail(L);
        lua_pushstring(L, LB_BAD_HDR);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int lb_offload_one(const struct iovec *iov, int iovcnt, void *arg)
{
    lua_State *L = arg;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; i < iovcnt; i++)
        luaL_addlstring(&b, iov[i].iov_base, iov[i].iov_len);
    luaL_pushresult(&b);
    lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
    return 0;
}

/* netbe.offload(frame, hdr_len) -> {plain frames} | nil, message
** What a NIC without offloads sends for FRAME (header first). */
static int lb_offload(lua_State *L)
{
    size_t len;
    unsigned hl;
    const char *f = lb_checkframe(L, "netbe.offload", &len, &hl);
    char *copy = lua_newuserdatauv(L, len ? len : 1, 0);
    memcpy(copy, f, len);
    lua_newtable(L);
    int rc = netbe_frame_offload(copy, len, hl, lb_offload_one, L);
    if (rc < 0) {
        luaL_pushfail(L);
        lua_pushstring(L, rc == -EINVAL ? LB_BAD_HDR : strerror(-rc));
        return 2;
    }
    return 1;
}

/* ====================================================================
** Helpers: MACs and MTUs
** ==================================================================== */

static int lb_mac_generate(lua_State *L)
{
    uint8_t m[6];
    netbe_mac_generate((int)luaL_checkinteger(L, 1), (int)luaL_checkinteger(L, 2),
                       luaL_checkstring(L, 3), m);
    lb_pushmac(L, m);
    return 1;
}

static int lb_parse_mac(lua_State *L)
{
    char err[NETBE_ERRMAX];
    uint8_t m[6];
    if (netbe_parse_mac(luaL_checkstring(L, 1), m, err, sizeof err) < 0) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    lb_pushmac(L, m);
    return 1;
}

static int lb_parse_mtu(lua_State *L)
{
    char err[NETBE_ERRMAX];
    unsigned mtu;
    if (netbe_parse_mtu(luaL_checkstring(L, 1), &mtu, err, sizeof err) < 0) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushinteger(L, mtu);
    return 1;
}

/* ====================================================================
** File locks, for the topology state several netbe processes share
** ==================================================================== */

/* netbe.lock(path) -> a lock held until lock:unlock(), collection or the
** end of its <close> scope; or nil, message. Takes flock(2) LOCK_EX on
** PATH (created 0600 if missing), waiting while another process holds
** it; the kernel drops it when the process dies. */
static int lb_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int *fdp = lua_newuserdatauv(L, sizeof *fdp, 0);
    *fdp = -1;
    luaL_setmetatable(L, LB_LOCK);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        luaL_pushfail(L);
        lua_pushfstring(L, "cannot lock %s: %s", path, strerror(e));
        return 2;
    }
    *fdp = fd;
    return 1;
}

static int lb_unlock(lua_State *L)
{
    int *fdp = luaL_checkudata(L, 1, LB_LOCK);
    if (*fdp >= 0)
        close(*fdp);
    *fdp = -1;
    return 0;
}

/* ====================================================================
** Inherited descriptors (slirp4netns's ready-fd and exit-fd)
** ==================================================================== */

/* A descriptor number from argument 1: open, and not one of stdin,
** stdout, stderr. */
static int lb_checkfd(lua_State *L)
{
    lua_Integer fd = luaL_checkinteger(L, 1);
    if (fd < 3 || fd > INT_MAX || fcntl((int)fd, F_GETFD) < 0)
        luaL_error(L, "descriptor %I is not open (expected an inherited descriptor above 2)",
                   fd);
    return (int)fd;
}

/* netbe.fd_signal(fd, text): write TEXT to FD and close it. Raises an
** error naming the descriptor when it cannot. */
static int lb_fd_signal(lua_State *L)
{
    int fd = lb_checkfd(L);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    ssize_t n;
    do
        n = write(fd, text, len);
    while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (n != (ssize_t)len)
        return luaL_error(L, "descriptor %d: write failed: %s", fd,
                          n < 0 ? strerror(e) : "short write");
    return 0;
}

/* netbe.fd_readable(fd) -> true when FD has data, an end of file or an
** error waiting (its writer closed it), else false. Does not wait. */
static int lb_fd_readable(lua_State *L)
{
    struct pollfd p = {lb_checkfd(L), POLLIN, 0};
    int n;
    do
        n = poll(&p, 1, 0);
    while (n < 0 && errno == EINTR);
    lua_pushboolean(L, n > 0);
    return 1;
}

/* ====================================================================
** Module
** ==================================================================== */

static const luaL_Reg lb_backend_methods[] = {
    {"send", lb_send}, {"recv", lb_recv}, {"peek", lb_peek}, {"discard", lb_discard},
    {"on", lb_on}, {"down", lb_down}, {"stats", lb_stats}, {"name", lb_name}, {"type", lb_type},
    {"mtu", lb_mtu}, {"mac", lb_mac}, {"get_cap", lb_get_cap}, {"set_cap", lb_set_cap},
    {"hdr_len", lb_hdr_len}, {"features", lb_get_features}, {"close", lb_close},
    {"hostfwd_add", lb_hostfwd_add}, {"hostfwd_remove", lb_hostfwd_remove},
    {"hostfwd_list", lb_hostfwd_list}, {NULL, NULL}};

static const luaL_Reg lb_wire_methods[] = {
    {"drops", lb_wire_drops}, {"close", lb_wire_close}, {"set_policy", lb_wire_set_policy},
    {"policy_stats", lb_wire_policy_stats}, {"set_link", lb_wire_set_link},
    {"stats", lb_wire_stats}, {NULL, NULL}};

static const luaL_Reg lb_listener_methods[] = {{"close", lb_listener_close}, {NULL, NULL}};

static const luaL_Reg lb_policy_methods[] = {
    {"eval", lb_policy_eval}, {"carry", lb_policy_carry}, {"stats", lb_policy_stats},
    {"free", lb_policy_gc}, {NULL, NULL}};

static const luaL_Reg lb_lock_methods[] = {{"unlock", lb_unlock}, {NULL, NULL}};

static const luaL_Reg lb_functions[] = {
    {"open", lb_open}, {"check", lb_check}, {"wire", lb_wire_new}, {"run", lb_run_loop},
    {"step", lb_step}, {"mac_generate", lb_mac_generate}, {"parse_mac", lb_parse_mac},
    {"parse_mtu", lb_parse_mtu}, {"frame_check", lb_frame_check},
    {"offload", lb_offload}, {"policy_new", lb_policy_new}, {"lock", lb_lock},
    {"proto_has_ports", lb_proto_has_ports},
    {"run_file", lb_run_file}, {"hook_source", lb_hook_source}, {"one_line", lb_one_line_fn},
    {"control_listen", lb_control_listen}, {"control_call", lb_control_call},
    {"path_inside", lb_path_inside}, {"fd_signal", lb_fd_signal}, {"fd_readable", lb_fd_readable},
    {NULL, NULL}};

static void lb_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                        lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
}

static void lb_features(lua_State *L)
{
    static const struct { const char *name; uint64_t bit; } f[] = {
        {"F_CSUM", NETBE_F_CSUM}, {"F_GUEST_CSUM", NETBE_F_GUEST_CSUM},
        {"F_GUEST_TSO4", NETBE_F_GUEST_TSO4}, {"F_GUEST_TSO6", NETBE_F_GUEST_TSO6},
        {"F_GUEST_ECN", NETBE_F_GUEST_ECN}, {"F_GUEST_UFO", NETBE_F_GUEST_UFO},
        {"F_HOST_TSO4", NETBE_F_HOST_TSO4}, {"F_HOST_TSO6", NETBE_F_HOST_TSO6},
        {"F_HOST_ECN", NETBE_F_HOST_ECN}, {"F_HOST_UFO", NETBE_F_HOST_UFO},
        {"F_MRG_RXBUF", NETBE_F_MRG_RXBUF}, {"F_OFFLOADS", NETBE_F_OFFLOADS},
        {"F_GUEST_USO4", NETBE_F_GUEST_USO4}, {"F_GUEST_USO6", NETBE_F_GUEST_USO6},
        {"F_HOST_USO", NETBE_F_HOST_USO}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        lua_pushinteger(L, (lua_Integer)f[i].bit);
        lua_setfield(L, -2, f[i].name);
    }
}

/* Push NAMES ("tcp=6 udp=17") as a table of names to values. */
static void lb_push_names(lua_State *L, const char *names)
{
    lua_newtable(L);
    for (const char *s = names; *s;) {
        const char *eq = strchr(s, '=');
        char *end;
        lua_pushlstring(L, s, (size_t)(eq - s));
        lua_pushinteger(L, (lua_Integer)strtoul(eq + 1, &end, 0));
        lua_rawset(L, -3);
        s = *end ? end + 1 : end;
    }
}

/* netbe.policy_fields: the match fields in bit order, each {name=, bit=,
** kind=, max=, names = {NAME = value}, members = {...}}, from netbe.c's
** table; policy.lua compiles rules by it. */
static void lb_policy_fields(lua_State *L)
{
    const struct netbe_match_field *f;
    lua_newtable(L);
    for (int i = 0; (f = netbe_match_field(i)); i++) {
        lua_createtable(L, 0, 6);
        lua_pushstring(L, f->name);
        lua_setfield(L, -2, "name");
        lua_pushinteger(L, f->bit);
        lua_setfield(L, -2, "bit");
        lua_pushstring(L, f->kind);
        lua_setfield(L, -2, "kind");
        lua_pushinteger(L, f->max);
        lua_setfield(L, -2, "max");
        lb_push_names(L, f->names);
        lua_setfield(L, -2, "names");
        lua_createtable(L, f->nmembers, 0);
        for (int k = 0; k < f->nmembers; k++) {
            lua_pushstring(L, f->members[k].name);
            lua_rawseti(L, -2, k + 1);
        }
        lua_setfield(L, -2, "members");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "policy_fields");
}

int luaopen_netbe(lua_State *L)
{
    lb_newclass(L, LB_BACKEND, lb_backend_methods, lb_close);
    lb_newclass(L, LB_WIRE, lb_wire_methods, lb_wire_close);
    lb_newclass(L, LB_POLICY, lb_policy_methods, lb_policy_gc);
    lb_newclass(L, LB_LOCK, lb_lock_methods, lb_unlock);
    lb_newclass(L, LB_LISTENER, lb_listener_methods, lb_listener_close);
    luaL_getmetatable(L, LB_BACKEND);
    lua_pushcfunction(L, lb_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "netbe.loop");
    int have_loop = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!have_loop)
        lb_newloop(L);
    luaL_newlib(L, lb_functions);
    lb_features(L);
    lb_policy_fields(L);
    lua_pushinteger(L, NETBE_MAX_FRAME);
    lua_setfield(L, -2, "MAX_FRAME");
    lua_pushstring(L, netbe_libversion());
    lua_setfield(L, -2, "VERSION");
    return 1;
}
