/*
** sandbox_test.c: Lua sandboxes (netbe_sandbox_*) and hooks in them. Every
** long C library call of the issue's list ends within its time bound with a
** message naming the bound; memory and instruction bounds hold; bytecode
** never loads; each sandbox's libraries are its own.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "check.h"
#include "netbe.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Run SRC in a fresh sandbox with LIM; 0 or the error code, message in ERR,
** seconds taken in *SECS. */
static int run(const char *src, const struct netbe_sandbox_limits *lim, char *err,
               double *secs)
{
    lua_State *L = netbe_sandbox_new(lim, err, NETBE_ERRMAX);
    if (!L)
        return -ENOMEM;
    double t0 = now_s();
    int rc = netbe_sandbox_load(L, src, strlen(src), "=t", err, NETBE_ERRMAX);
    if (rc == 0)
        rc = netbe_sandbox_call(L, 0, 0, err, NETBE_ERRMAX);
    if (secs)
        *secs = now_s() - t0;
    netbe_sandbox_close(L);
    return rc;
}

/* A table whose length (#t) is 2^62: 1-4 in its array part, 5, 8, 16, ...
** 2^62 in its hash part, where the border search doubles. */
#define HUGE_BORDER "{1, 2, 3, 4, [5] = 5, [1 << 3] = 0, [1 << 4] = 0, [1 << 5] = 0, " \
    "[1 << 6] = 0, [1 << 7] = 0, [1 << 8] = 0, [1 << 9] = 0, [1 << 10] = 0, [1 << 11] = 0, " \
    "[1 << 12] = 0, [1 << 13] = 0, [1 << 14] = 0, [1 << 15] = 0, [1 << 16] = 0, " \
    "[1 << 17] = 0, [1 << 18] = 0, [1 << 19] = 0, [1 << 20] = 0, [1 << 21] = 0, " \
    "[1 << 22] = 0, [1 << 23] = 0, [1 << 24] = 0, [1 << 25] = 0, [1 << 26] = 0, " \
    "[1 << 27] = 0, [1 << 28] = 0, [1 << 29] = 0, [1 << 30] = 0, [1 << 31] = 0, " \
    "[1 << 32] = 0, [1 << 33] = 0, [1 << 34] = 0, [1 << 35] = 0, [1 << 36] = 0, " \
    "[1 << 37] = 0, [1 << 38] = 0, [1 << 39] = 0, [1 << 40] = 0, [1 << 41] = 0, " \
    "[1 << 42] = 0, [1 << 43] = 0, [1 << 44] = 0, [1 << 45] = 0, [1 << 46] = 0, " \
    "[1 << 47] = 0, [1 << 48] = 0, [1 << 49] = 0, [1 << 50] = 0, [1 << 51] = 0, " \
    "[1 << 52] = 0, [1 << 53] = 0, [1 << 54] = 0, [1 << 55] = 0, [1 << 56] = 0, " \
    "[1 << 57] = 0, [1 << 58] = 0, [1 << 59] = 0, [1 << 60] = 0, [1 << 61] = 0, " \
    "[1 << 62] = 0}"

/* Each long C call stops at a 50 ms bound, promptly, naming the bound. */
static void test_time_bound(void)
{
    static const struct { const char *src, *why; } slow[] = {
        {"('a'):rep(40):find('.-.-.-.-.-.-.-b')", "a backtracking find"},
        {"('a'):rep(5000):match('(.-)%1(.-)%2b')", "a backtracking match with captures"},
        {"for _ in ('a'):rep(3000):gmatch('a-a-a-b') do end", "a backtracking gmatch"},
        {"('a'):rep(3000):gsub('.-.-b', '')", "a backtracking gsub"},
        {"local s = ('x'):rep(100000) for i = 1, 1e9 do s:gsub('', '') end", "gsub of empty matches"},
        {"table.move({}, 1, math.maxinteger - 1, 2)", "table.move of nils"},
        {"table.insert(" HUGE_BORDER ", 1, 0)", "table.insert below a border at 2^62"},
        {"table.remove(" HUGE_BORDER ", 1)", "table.remove below a border at 2^62"},
        {"local t = {} for i = 1, 200000 do t[i] = ('k'):rep(50) .. (i % 977) end "
         "for i = 1, 100 do table.sort(t) end", "table.sort of long strings"},
        {"local s = ('x'):rep(1 << 20) for i = 1, 1e9 do local t = s .. i end", "big concatenations"},
        {"while true do end", "a plain loop"},
    };
    struct netbe_sandbox_limits lim = {0, 50000000, 0};
    char err[NETBE_ERRMAX];
    for (size_t i = 0; i < sizeof slow / sizeof slow[0]; i++) {
        double secs;
        int rc = run(slow[i].src, &lim, err, &secs);
        CHECK(rc == -ETIMEDOUT && strcmp(err, "t:1: ran past its time bound of 50 ms") == 0,
              "%s: rc %d: %s", slow[i].why, rc, err);
        CHECK(secs < 2.0, "%s: stopped after %.3f s", slow[i].why, secs);
    }
    /* Lua's string.rep loops once per piece even when the pieces are empty. */
    double secs;
    int rc = run("assert(#string.rep('', math.maxinteger) == 0)\n"
                 "assert(#string.rep('', math.maxinteger, '') == 0)\n"
                 "assert(('ab'):rep(3, ',') == 'ab,ab,ab' and ('x'):rep(0) == '')\n"
                 "assert(#" HUGE_BORDER " == 1 << 62)", &lim, err, &secs);
    CHECK(rc == 0 && secs < 0.5, "empty pieces cost nothing: %d %s, %.3f s", rc, err, secs);
}

static void test_memory_and_budget(void)
{
    char err[NETBE_ERRMAX];
    struct netbe_sandbox_limits lim = {1 << 20, 0, 0};
    int rc = run("local t = {} for i = 1, 1e9 do t[i] = i end", &lim, err, NULL);
    CHECK(rc == -ENOMEM && strcmp(err, "went over its memory bound of 1 MiB") == 0,
          "a growing table: %d %s", rc, err);
    rc = run("local a = string.rep('a', 1 << 28) local b = string.rep('b', 1 << 28)", NULL,
             err, NULL);
    CHECK(rc == -ENOMEM && strcmp(err, "went over its memory bound of 64 MiB") == 0,
          "256 MiB strings against the default bound: %s", err);
    struct netbe_sandbox_limits budget = {0, 0, 1000};
    rc = run("local n = 0\nwhile true do n = n + 1 end", &budget, err, NULL);
    CHECK(rc == -ETIMEDOUT && strcmp(err, "t:2: ran past its instruction budget of 1000") == 0,
          "instruction budget: %s", err);
    rc = run("for i = 1, 100 do end", &budget, err, NULL);
    CHECK(rc == 0, "a short loop fits the budget: %s", err);
    lim.memory = 1000;
    CHECK(netbe_sandbox_new(&lim, err, sizeof err) == NULL &&
          strstr(err, "libraries do not fit in 1000 bytes"), "tiny memory: %s", err);
}

struct dump {
    char b[4096];
    size_t len;
};

static int dump_write(lua_State *L, const void *p, size_t n, void *ud)
{
    struct dump *d = ud;
    if (n > sizeof d->b - d->len)
        return 1;
    memcpy(d->b + d->len, p, n);
    d->len += n;
    return 0;
}

/* Only source loads; what the header lists is there, the rest is not. */
static void test_surface(void)
{
    char err[NETBE_ERRMAX];
    struct dump bc = {{0}, 0};
    lua_State *plain = luaL_newstate();
    luaL_loadstring(plain, "return 'bytecode'");
    lua_dump(plain, dump_write, &bc, 0);
    lua_close(plain);

    lua_State *L = netbe_sandbox_new(NULL, err, sizeof err);
    CHECK(L != NULL, "%s", err);
    if (!L)
        return;
    CHECK(bc.len > 4 && netbe_sandbox_load(L, bc.b, bc.len, "=bin", err, sizeof err) < 0 &&
          strstr(err, "attempt to load a binary chunk (mode is 't')"), "bytecode: %s", err);
    static const char probe[] =
        "local have = {}\n"
        "for _, lib in ipairs{'_G', 'string', 'table', 'math', 'utf8'} do\n"
        "  for k in pairs(lib == '_G' and _G or _G[lib]) do have[#have + 1] = lib .. '.' .. k end\n"
        "end\n"
        "table.sort(have)\n"
        "return table.concat(have, ' ')\n";
    const char *list = NULL;
    if (netbe_sandbox_load(L, probe, sizeof probe - 1, "=probe", err, sizeof err) == 0 &&
        netbe_sandbox_call(L, 0, 1, err, sizeof err) == 0)
        list = lua_tostring(L, -1);
    CHECK(list != NULL, "probe: %s", err);
    static const char *const absent[] = {"_G.load", "_G.loadfile", "_G.dofile", "_G.require",
        "_G.pcall", "_G.xpcall", "_G.print", "_G.warn", "_G.setmetatable", "_G.getmetatable",
        "_G.collectgarbage", "_G.io", "_G.os", "_G.debug", "_G.package", "_G.coroutine",
        "string.dump", "math.randomseed", NULL};
    static const char *const present[] = {"_G.assert", "_G.next", "_G.rawset", "_G.select",
        "_G.tostring", "string.find", "string.gsub", "string.pack", "table.move", "table.sort",
        "math.random", "utf8.len", NULL};
    char word[64];
    for (const char *const *a = absent; list && *a; a++) {
        snprintf(word, sizeof word, " %s ", *a);
        char padded[4096];
        snprintf(padded, sizeof padded, " %s ", list);
        CHECK(strstr(padded, word) == NULL, "%s is not in the sandbox", *a);
    }
    for (const char *const *a = present; list && *a; a++) {
        snprintf(word, sizeof word, " %s ", *a);
        char padded[4096];
        snprintf(padded, sizeof padded, " %s ", list);
        CHECK(strstr(padded, word) != NULL, "%s is in the sandbox", *a);
    }
    netbe_sandbox_close(L);
}

/* What one sandbox replaces, it replaces for itself; after a failure the
** sandbox works on. */
static void test_own_libraries(void)
{
    char err[NETBE_ERRMAX];
    lua_State *a = netbe_sandbox_new(NULL, err, sizeof err);
    lua_State *b = netbe_sandbox_new(NULL, err, sizeof err);
    static const char evil[] = "string.match = function() while true do end end\n"
                               "string.rep = nil\nX = 1\nerror('after')";
    static const char good[] = "return ('ab'):match('a(.)') .. ('x'):rep(2) .. tostring(X)";
    CHECK(netbe_sandbox_load(a, evil, sizeof evil - 1, "=evil", err, sizeof err) == 0 &&
          netbe_sandbox_call(a, 0, 0, err, sizeof err) == -EINVAL &&
          strcmp(err, "evil:4: after") == 0, "evil: %s", err);
    CHECK(netbe_sandbox_load(b, good, sizeof good - 1, "=good", err, sizeof err) == 0 &&
          netbe_sandbox_call(b, 0, 1, err, sizeof err) == 0 &&
          strcmp(lua_tostring(b, -1), "bxxnil") == 0, "the other sandbox is untouched: %s", err);
    static const char again[] = "return X + 1";
    CHECK(netbe_sandbox_load(a, again, sizeof again - 1, "=again", err, sizeof err) == 0 &&
          netbe_sandbox_call(a, 0, 1, err, sizeof err) == 0 && lua_tointeger(a, -1) == 2,
          "the failed sandbox runs again: %s", err);
    netbe_sandbox_close(a);
    netbe_sandbox_close(b);
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Evaluate a frame with a policy of one hook SRC (MEMORY and TIME_NS its
** bounds, 0 the defaults); checks that the hook failed (the fail verdict,
** one hook error) and returns the seconds it took by CLOCK, or -1 when the
** policy was refused. */
static double hook_fail_secs(const char *src, size_t memory, uint64_t time_ns,
                             double (*clock)(void), int i)
{
    char err[NETBE_ERRMAX] = "";
    uint8_t frame[60] = {0};
    frame[12] = 8;
    struct netbe_rule r = {.name = "h", .action = NETBE_ACT_LUA, .hook = src,
                           .hook_len = strlen(src)};
    struct netbe_policy_desc d = {&r, 1, NETBE_PASS, NETBE_DROP, 0, memory, time_ns};
    netbe_policy *p;
    CHECK(netbe_policy_new(&p, &d, err, sizeof err) == 0, "hook %d: %s", i, err);
    if (!p)
        return -1;
    double t0 = clock();
    int v = netbe_policy_eval(p, 0, frame, sizeof frame, 0);
    double secs = clock() - t0;
    struct netbe_policy_stats st;
    netbe_policy_get_stats(p, &st);
    CHECK(v == NETBE_DROP && st.hook_errors == 1, "hook %d: fail verdict, one error", i);
    netbe_policy_free(p);
    return secs;
}

/* A hook's bounds: a long C call in a hook takes the fail verdict within
** its 1 ms; hook_time_ns changes the bound. */
static void test_hook_bounds(void)
{
    static const struct { const char *src; uint64_t time_ns; double at_least; } c[] = {
        {"return function() return ('a'):rep(30):find('.-.-.-.-.-.-b') end", 0, 0},
        {"return function() table.move({}, 1, math.maxinteger - 1, 2) end", 0, 0},
        {"return function() table.move({}, 1, math.maxinteger - 1, 2) end", 30000000, 0.025},
    };
    for (int i = 0; i < (int)(sizeof c / sizeof c[0]); i++) {
        double secs = hook_fail_secs(c[i].src, 0, c[i].time_ns, now_s, i);
        CHECK(secs < 1.0 && secs >= c[i].at_least, "hook %d took %.4f s", i, secs);
    }
}

/* Append N copies of PIECE to the string in SRC, of SIZE bytes. */
static void append(char *src, size_t size, int n, const char *piece)
{
    size_t len = strlen(src);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(src + len, size - len, "%s", piece);
}

/* Lua that grows the state from a few KiB by up to 6 MiB within a few
** instructions: B, a numeric string of 2 MiB (spaces, then 1), by
** concatenation from U, 4 KiB of spaces. */
#define GROW "local a = u a = a .. a a = a .. a a = a .. a a = a .. a a = a .. a " \
    "a = a .. a a = a .. a a = a .. a a = a .. a b = a .. '1' a = nil "

/* Lua that turns B into a number 1600 times: each reads all of B. Each
** of its 800 instructions converts B twice, as the string's __unm is
** called with B as both operands; all fit in one step of the count hook
** for a small state. */
static void coerce(char *src, size_t size)
{
    append(src, size, 800, "x = -b ");
}

/* Code that grows its state within one step of the count hook, then runs
** instructions that each read much of it: the count hook must come as
** soon as the state grows, at the step for the state it is now, or the
** call runs hundreds of those past its bound. Here each converts a 2 MiB
** numeric string twice (about 1 s of CPU in all against a bound of 40 ms,
** when the hook came late). In a hook that runs straight (unhooked), in
** one with a loop that runs cheaply first, and in a chunk run by
** netbe_sandbox_call, as policy and topology files are. */
static void test_growth(void)
{
    static char src[3][8192];
    snprintf(src[0], sizeof src[0], "local u = (' '):rep(4096)\n"
             "return function() local b, x " GROW);
    coerce(src[0], sizeof src[0]);
    append(src[0], sizeof src[0], 1, "return 'pass' end");
    snprintf(src[1], sizeof src[1], "local u = (' '):rep(4096)\n"
             "return function() local b, x = '1' for i = 1, 1e9 do "
             "if i == 31 then " GROW "end ");
    append(src[1], sizeof src[1], 100, "x = -b ");
    append(src[1], sizeof src[1], 1, "end end");
    snprintf(src[2], sizeof src[2], "local u, b, x = (' '):rep(4096) " GROW);
    coerce(src[2], sizeof src[2]);
    const double bound = 0.04;
    for (int i = 0; i < 2; i++) {
        double secs = hook_fail_secs(src[i], 16u << 20, (uint64_t)(bound * 1e9), cpu_s, i);
        CHECK(secs < 3 * bound, "hook %d took %.3f s of CPU", i, secs);
    }
    char err[NETBE_ERRMAX] = "";
    struct netbe_sandbox_limits lim = {16u << 20, (uint64_t)(bound * 1e9), 0};
    lua_State *L = netbe_sandbox_new(&lim, err, sizeof err);
    CHECK(L && netbe_sandbox_load(L, src[2], strlen(src[2]), "=t", err, sizeof err) == 0,
          "%s", err);
    if (!L)
        return;
    double t0 = cpu_s();
    int rc = netbe_sandbox_call(L, 0, 0, err, sizeof err);
    double secs = cpu_s() - t0;
    CHECK(rc == -ETIMEDOUT && strcmp(err, "t:1: ran past its time bound of 40 ms") == 0,
          "a chunk: %d %s", rc, err);
    CHECK(secs < 3 * bound, "the chunk took %.3f s of CPU", secs);
    netbe_sandbox_close(L);
}

/* A state that holds 16 MiB runs its count hook at every instruction, as
** one may read all of it: here each converts a 16 MiB numeric string twice
** (10 ms or more), so an interval of 16 would pass a bound of 20 ms many
** times over before the first check. */
static void test_big_state(void)
{
    char err[NETBE_ERRMAX] = "";
    struct netbe_sandbox_limits lim = {64u << 20, 20000000, 0};
    static const char src[] =
        "local s, x = ... while true do x = -s x = -s x = -s x = -s x = -s x = -s end";
    size_t n = 16u << 20;
    char *big = malloc(n);
    lua_State *L = netbe_sandbox_new(&lim, err, sizeof err);
    CHECK(big && L && netbe_sandbox_load(L, src, sizeof src - 1, "=t", err, sizeof err) == 0,
          "%s", err);
    if (big && L) {
        memset(big, ' ', n - 1);
        big[n - 1] = '1';
        lua_pushlstring(L, big, n);
        double t0 = cpu_s();
        int rc = netbe_sandbox_call(L, 1, 0, err, sizeof err);
        double secs = cpu_s() - t0;
        CHECK(rc == -ETIMEDOUT && strcmp(err, "t:1: ran past its time bound of 20 ms") == 0,
              "%d %s", rc, err);
        CHECK(secs < 0.1, "took %.3f s of CPU", secs);
    }
    free(big);
    netbe_sandbox_close(L);
}

int main(void)
{
    RUN(test_time_bound());
    RUN(test_memory_and_budget());
    RUN(test_surface());
    RUN(test_own_libraries());
    RUN(test_hook_bounds());
    RUN(test_growth());
    RUN(test_big_state());
    return check_summary();
}
