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
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>

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
** turns its match bit on. A policy given to a wire belongs to the wire;
** its Lua handle is emptied.
*/

#define LB_POLICY "netbe.policy"

typedef struct lb_policy {
    netbe_policy *p;
} lb_policy;

static lua_Integer lb_field_int(lua_State *L, int t, const char *k, int *present)
{
    lua_getfield(L, t, k);
    *present = !lua_isnil(L, -1);
    lua_Integer v = *present ? luaL_checkinteger(L, -1) : 0;
    lua_pop(L, 1);
    return v;
}

/* Copy a string field of exactly LEN bytes (LEN 0: 4 or 16) into OUT. */
static int lb_field_bytes(lua_State *L, int t, const char *k, uint8_t *out, size_t len)
{
    size_t n;
    lua_getfield(L, t, k);
    const char *s = lua_tolstring(L, -1, &n);
    int ok = s && (len ? n == len : (n == 4 || n == 16));
    if (ok)
        memcpy(out, s, n);
    lua_pop(L, 1);
    if (s && !ok)
        luaL_error(L, "policy_new: field %s has %d bytes", k, (int)n);
    return s != NULL;
}

/* Read the rule table at T into R; strings stay owned by the table. */
static void lb_torule(lua_State *L, int t, struct netbe_rule *r)
{
    int has;
    memset(r, 0, sizeof *r);
    lua_getfield(L, t, "name");
    r->name = lua_tostring(L, -1);
    lua_pop(L, 1);
    r->dir = (int)lb_field_int(L, t, "dir", &has);
    r->match |= has ? NETBE_M_DIR : 0;
    memset(r->src_mac_mask, 0xff, 6);
    memset(r->dst_mac_mask, 0xff, 6);
    if (lb_field_bytes(L, t, "src_mac", r->src_mac, 6)) {
        r->match |= NETBE_M_SRC_MAC;
        lb_field_bytes(L, t, "src_mac_mask", r->src_mac_mask, 6);
    }
    if (lb_field_bytes(L, t, "dst_mac", r->dst_mac, 6)) {
        r->match |= NETBE_M_DST_MAC;
        lb_field_bytes(L, t, "dst_mac_mask", r->dst_mac_mask, 6);
    }
    r->ethertype = (uint16_t)lb_field_int(L, t, "ethertype", &has);
    r->match |= has ? NETBE_M_ETHERTYPE : 0;
    r->vlan = (uint16_t)lb_field_int(L, t, "vlan", &has);
    r->match |= has ? NETBE_M_VLAN : 0;
    r->ip_family = (int)lb_field_int(L, t, "ip_family", &has);
    if (lb_field_bytes(L, t, "src_ip", r->src_ip, 0)) {
        r->match |= NETBE_M_SRC_IP;
        r->src_plen = (unsigned)lb_field_int(L, t, "src_plen", &has);
    }
    if (lb_field_bytes(L, t, "dst_ip", r->dst_ip, 0)) {
        r->match |= NETBE_M_DST_IP;
        r->dst_plen = (unsigned)lb_field_int(L, t, "dst_plen", &has);
    }
    r->proto = (uint8_t)lb_field_int(L, t, "proto", &has);
    r->match |= has ? NETBE_M_PROTO : 0;
    r->sport_lo = (uint16_t)lb_field_int(L, t, "sport_lo", &has);
    r->sport_hi = (uint16_t)lb_field_int(L, t, "sport_hi", &has);
    r->match |= has ? NETBE_M_SPORT : 0;
    r->dport_lo = (uint16_t)lb_field_int(L, t, "dport_lo", &has);
    r->dport_hi = (uint16_t)lb_field_int(L, t, "dport_hi", &has);
    r->match |= has ? NETBE_M_DPORT : 0;
    r->tcp_flags = (uint8_t)lb_field_int(L, t, "tcp_flags", &has);
    r->tcp_flags_mask = (uint8_t)lb_field_int(L, t, "tcp_flags_mask", &has);
    r->match |= has ? NETBE_M_TCP_FLAGS : 0;
    r->icmp_type = (uint8_t)lb_field_int(L, t, "icmp_type", &has);
    r->match |= has ? NETBE_M_ICMP_TYPE : 0;
    r->len_lo = (unsigned)lb_field_int(L, t, "len_lo", &has);
    r->len_hi = (unsigned)lb_field_int(L, t, "len_hi", &has);
    r->match |= has ? NETBE_M_LEN : 0;
    r->action = (enum netbe_action)lb_field_int(L, t, "action", &has);
    r->rate_unit = (int)lb_field_int(L, t, "rate_unit", &has);
    lua_getfield(L, t, "rate");
    r->rate = lua_tonumber(L, -1);
    lua_getfield(L, t, "burst");
    r->burst = lua_tonumber(L, -1);
    lua_getfield(L, t, "hook");
    r->hook = lua_tolstring(L, -1, &r->hook_len);
    lua_getfield(L, t, "hook_upvalues");
    r->hook_upvalues = lua_tostring(L, -1);
    lua_pop(L, 4);
}

/* netbe.policy_new(desc) -> policy | nil, message */
static int lb_policy_new(lua_State *L)
{
    char err[NETBE_ERRMAX];
    int has;
    luaL_checktype(L, 1, LUA_TTABLE);
    struct netbe_policy_desc d = {0};
    d.default_verdict = (int)lb_field_int(L, 1, "default", &has);
    d.fail_verdict = (int)lb_field_int(L, 1, "fail", &has);
    d.hook_budget = (unsigned)lb_field_int(L, 1, "hook_budget", &has);
    d.hook_memory = (size_t)lb_field_int(L, 1, "hook_memory", &has);
    lua_getfield(L, 1, "rules");
    luaL_checktype(L, -1, LUA_TTABLE);
    int rules = lua_gettop(L);
    d.nrules = (int)luaL_len(L, rules);
    struct netbe_rule *rv = lua_newuserdatauv(L, sizeof *rv * ((size_t)d.nrules + 1), 0);
    for (int i = 0; i < d.nrules; i++) {
        lua_geti(L, rules, i + 1);
        luaL_checktype(L, -1, LUA_TTABLE);
        lb_torule(L, lua_gettop(L), &rv[i]);
        lua_pop(L, 1);
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
    {"policy_stats", lb_wire_policy_stats}, {NULL, NULL}};

static const luaL_Reg lb_policy_methods[] = {
    {"eval", lb_policy_eval}, {"carry", lb_policy_carry}, {"stats", lb_policy_stats},
    {"free", lb_policy_gc}, {NULL, NULL}};

static const luaL_Reg lb_lock_methods[] = {{"unlock", lb_unlock}, {NULL, NULL}};

static const luaL_Reg lb_functions[] = {
    {"open", lb_open}, {"check", lb_check}, {"wire", lb_wire_new}, {"run", lb_run_loop},
    {"step", lb_step}, {"mac_generate", lb_mac_generate}, {"parse_mac", lb_parse_mac},
    {"parse_mtu", lb_parse_mtu}, {"frame_check", lb_frame_check},
    {"offload", lb_offload}, {"policy_new", lb_policy_new}, {"lock", lb_lock}, {NULL, NULL}};

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

int luaopen_netbe(lua_State *L)
{
    lb_newclass(L, LB_BACKEND, lb_backend_methods, lb_close);
    lb_newclass(L, LB_WIRE, lb_wire_methods, lb_wire_close);
    lb_newclass(L, LB_POLICY, lb_policy_methods, lb_policy_gc);
    lb_newclass(L, LB_LOCK, lb_lock_methods, lb_unlock);
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
    lua_pushinteger(L, NETBE_MAX_FRAME);
    lua_setfield(L, -2, "MAX_FRAME");
    return 1;
}
