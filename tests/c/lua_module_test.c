/*
** lua_module_test.c: the Lua module's C side (lua/netbe_lua.c, compiled in
** here) under AddressSanitizer and UBSan: policy_new's reading of rule
** tables, with a collector that frees every unreachable string at once,
** and the file runner's encoding, decoding and hook recovery.
*/
#include "../../lua/netbe_lua.c"

#include <lualib.h>

#include "check.h"

/* Run CODE in a state with the module; 0 or the error, printed. */
static int run(const char *code)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "netbe", luaopen_netbe, 1);
    lua_pop(L, 1);
    int rc = luaL_dostring(L, code);
    if (rc != LUA_OK)
        printf("%s\n", lua_tostring(L, -1));
    lua_close(L);
    return rc;
}

/* A number where policy_new wants a string: refused with its message.
** lua_tostring would convert it into a string that only the stack held;
** with the collector this eager, a pointer kept to it is read after free. */
static void test_policy_new_names(void)
{
    CHECK(run("collectgarbage('incremental', 1, 100000, 0)\n"
              "local rules = {}\n"
              "for i = 1, 5000 do rules[i] = { name = i + 0.5, action = 0 } end\n"
              "local p, err = netbe.policy_new{ rules = rules }\n"
              "assert(p == nil, 'a numeric name was taken')\n"
              "assert(err == \"rule 1: field 'name': expected a string, got number\", err)\n"
              "for i = 1, 5000 do rules[i].name = 'r' .. i end\n"
              "rules[5000].hook = 1\n"
              "p, err = netbe.policy_new{ rules = rules }\n"
              "assert(err == \"rule 'r5000': field 'hook': expected a string, got number\", err)\n"
              "rules[5000].hook = nil\n"
              "assert(netbe.policy_new{ rules = rules })\n") == 0, "numeric names");
    CHECK(run("local p, err = netbe.policy_new{ rules = { { name = 'a', action = 1, dport = 22 } } }\n"
              "assert(p == nil and err:find(\"^rule 'a': unknown field 'dport' %(expected one of: name,\"), err)\n"
              "p, err = netbe.policy_new{ rules = { { name = 'a', [1] = 2 } } }\n"
              "assert(err:find(\"^rule 'a': unknown field 1 %(expected\"), err)\n"
              "p, err = netbe.policy_new{ rulez = {} }\n"
              "assert(err:find(\"^policy_new: unknown field 'rulez'\"), err)\n") == 0,
          "unknown keys");
}

/* run_file and hook_source: what crosses, and hooks recovered exactly. */
static void test_files(void)
{
    char path[] = "/tmp/netbe-lua-module-XXXXXX";
    int fd = mkstemp(path);
    static const char text[] =
        "local C, T = 'captured', { 1.5, 'a\\nb', [true] = { n = math.mininteger } }\n"
        "settings { default = 'pass' }\n"
        "rule { name = 'h', action = 'lua', hook = function(pkt)\n"
        "  if pkt.len == 60 and T[1] == 1.5 and T[true].n == math.mininteger then\n"
        "    return C == 'captured' and 'drop' or nil end end }\n"
        "rule { name = 'n', action = 'lua', hook = function(pkt) return nil end }\n";
    CHECK(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1), "temp file");
    close(fd);
    char code[2048];
    snprintf(code, sizeof code,
             "local policy = require 'netbe.policy'\n"
             "local p = assert(policy.load('%s'))\n"
             "local frame = ('\\0'):rep(12) .. '\\8\\0' .. ('\\0'):rep(46)\n"
             "assert(p:eval('to_guest', frame) == 'drop' and p:stats().hook_errors == 0)\n"
             "local r = assert(netbe.run_file('%s', { collect = { 'rule', 'settings' }, hooks = true }))\n"
             "local h = r.calls.rule[1][1].hook\n"
             "local up = {}\n"
             "for _, u in ipairs(h.upvalues) do up[u.name] = u end\n"
             "assert(h.line == 3 and up.C.value == 'captured' and up._ENV.env)\n"
             "assert(up.T.value[1] == 1.5 and up.T.value[true].n == math.mininteger)\n"
             "local f = load('local x = 5\\nreturn function(pkt) return x end')()\n"
             "local d = assert(netbe.hook_source(f))\n"
             "assert(d.source == 'function(pkt) return x end' and d.upvalues[1].value == 5)\n"
             "assert(not netbe.run_file('%s', { memory = 100000 }))\n", path, path, path);
    char full[2304];
    snprintf(full, sizeof full, "package.path = 'lua/?.lua;' .. package.path\n%s", code);
    CHECK(run(full) == 0, "policy file, run_file, hook_source");
    unlink(path);
}

int main(void)
{
    RUN(test_policy_new_names());
    RUN(test_files());
    return check_summary();
}
