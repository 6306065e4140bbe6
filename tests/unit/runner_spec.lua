-- scripts/run-tests cannot report success that did not happen. Each case
-- runs the real script on a throwaway tree: its tests/ files, and a small
-- Makefile with the two targets the script asks for the C tests.
local ns = require("ns")

local STUB_MAKEFILE = [[
.PHONY: ctests-list ctests-skipped
CTESTS := $(patsubst tests/c/%.c,build/tests/%,$(wildcard tests/c/*.c))
ctests-list:
	@echo $(CTESTS)
ctests-skipped:
	@cat skipped.txt 2>/dev/null || :
build/tests/%: tests/c/%.c tests/c/check.h
	@mkdir -p build/tests
	cc -o $@ $<
]]

local PASSING_C = [[
#include "check.h"
static void test_one(void) { CHECK(1 + 1 == 2, "arithmetic"); }
int main(void) { RUN(test_one()); return check_summary(); }
]]

-- A tree at a fresh directory with FILES ({path = text}) and the script.
local function tree(files)
  local dir = ns.tmpdir()
  assert(ns.sh(string.format("mkdir -p %s/scripts %s/tests/c && cp %s %s/scripts/ && cp %s %s/tests/c/",
                             dir, dir, ns.quote(ns.root .. "/scripts/run-tests"), dir,
                             ns.quote(ns.root .. "/tests/c/check.h"), dir)))
  ns.write(dir .. "/Makefile", STUB_MAKEFILE)
  for path, text in pairs(files) do
    assert(ns.sh("mkdir -p " .. ns.quote(dir .. "/" .. (path:match("^(.*)/") or "."))))
    ns.write(dir .. "/" .. path, text)
  end
  return dir
end

-- Runs the tree's run-tests on TARGETS (PREFIX before it: env, setpriv);
-- returns its exit status and its last two lines.
local function run(dir, targets, prefix)
  local p = io.popen(string.format("cd %s && %s scripts/run-tests %s 2>&1; echo \"exit $?\"",
                                   ns.quote(dir), prefix or "env -u CI", targets))
  local out = p:read("a")
  p:close()
  local status = tonumber(out:match("exit (%d+)\n$"))
  local lines = {}
  for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return status, lines[#lines - 2], lines[#lines - 1], out
end

describe("scripts/run-tests", function()
  teardown(ns.cleanup)

  it("runs the C tests of tests/c, each built from its source, and no stale binary", function()
    local dir = tree({ ["tests/c/one_test.c"] = PASSING_C })
    -- A binary of a deleted test, and one older than its changed source.
    assert(ns.sh("mkdir -p " .. dir .. "/build/tests"))
    ns.write(dir .. "/build/tests/gone_test", "#!/bin/sh\necho '7 passed, 0 failed'\n")
    ns.write(dir .. "/build/tests/one_test", "#!/bin/sh\necho '0 passed, 3 failed'\n")
    assert(ns.sh("chmod +x " .. dir .. "/build/tests/* && touch -d 2000-01-01 " .. dir .. "/build/tests/one_test"))
    local status, skips, closing, out = run(dir, "tests/c")
    assert.equal("1 passed, 0 failed, 0 skipped", closing, out)
    assert.equal("skipped: nothing", skips)
    assert.equal(0, status)
    assert.is_nil(out:find("gone_test", 1, true), out)
  end)

  it("counts a C test that does not build as a failure, not its old binary", function()
    local dir = tree({ ["tests/c/one_test.c"] = PASSING_C })
    assert(ns.sh(string.format("cd %s && make -s build/tests/one_test", dir)))
    assert(ns.sh("sleep 1"))
    ns.write(dir .. "/tests/c/one_test.c", PASSING_C .. "this does not compile\n")
    local status, _, closing, out = run(dir, "tests/c")
    assert.equal("0 passed, 1 failed, 0 skipped", closing, out)
    assert.matches("does not build", out, 1, true)
    assert.equal(1, status)
  end)

  it("fails a test file that runs no test", function()
    local dir = tree({
      ["tests/c/empty_test.c"] = '#include "check.h"\nint main(void) { return check_summary(); }\n',
      ["tests/unit/empty_spec.lua"] = 'describe("nothing yet", function() end)\n',
    })
    local status, _, closing, out = run(dir, "tests/c tests/unit")
    assert.equal("0 passed, 2 failed, 0 skipped", closing, out)
    assert.matches("build/tests/empty_test ran no test", out, 1, true)
    assert.matches("tests/unit/empty_spec.lua ran no test", out, 1, true)
    assert.equal(1, status)
  end)

  it("names each skip and why on the line before the closing line", function()
    local dir = tree({
      ["skipped.txt"] = "tests/c/bsd_test.c: no FreeBSD sysroot here\n",
      ["tests/unit/some_spec.lua"] = [[
describe("some", function()
  it("works", function() assert.is_true(true) end)
  it("needs a frobnicator", function() pending("no frobnicator on this host") end)
end)
]],
    })
    local status, skips, closing, out = run(dir, "tests/c tests/unit")
    assert.equal("1 passed, 0 failed, 2 skipped", closing, out)
    assert.equal("skipped: tests/c/bsd_test.c: no FreeBSD sysroot here; "
                 .. "tests/unit/some_spec.lua: some needs a frobnicator: no frobnicator on this host", skips)
    assert.equal(0, status)
  end)

  it("fails the tiers that need root under CI=true without root, and skips them without CI", function()
    local dir = tree({ ["tests/ns/up_spec.lua"] = 'it("runs", function() assert.is_true(true) end)\n' })
    local unprivileged = ""
    local _, uid = ns.sh("id -u")
    if uid:match("%d+") == "0" then
      local status, _, closing = run(dir, "tests/ns", "env CI=true")
      assert.equal("1 passed, 0 failed, 0 skipped", closing)
      assert.equal(0, status)
      -- Then as nobody, on a tree nobody may write.
      assert(ns.sh("chmod -R a+rwX " .. dir))
      unprivileged = "setpriv --reuid=65534 --regid=65534 --clear-groups "
    end
    local status, skips, closing, out = run(dir, "tests/ns", unprivileged .. "env CI=true")
    assert.equal("0 passed, 1 failed, 0 skipped", closing, out)
    assert.matches("tests/ns: FAILED: needs root, and CI runs as root", out, 1, true)
    assert.equal("skipped: nothing", skips)
    assert.equal(1, status)
    status, _, closing, out = run(dir, "tests/ns/up_spec.lua", unprivileged .. "env CI=true")
    assert.equal("0 passed, 1 failed, 0 skipped", closing, out)
    assert.equal(1, status)
    status, skips, closing, out = run(dir, "tests/ns", unprivileged .. "env -u CI")
    assert.equal("0 passed, 0 failed, 1 skipped", closing, out)
    assert.equal("skipped: tests/ns: needs root", skips)
    assert.equal(0, status)
  end)

  it("is given by the Makefile every C test of tests/c, built or named as skipped", function()
    local p = io.popen("cd " .. ns.quote(ns.root) .. " && make -s --no-print-directory ctests-list ctests-skipped")
    local out = p:read("a")
    p:close()
    local listed = {}
    for name in out:gmatch("build/tests/([%w_]+)") do listed[#listed + 1] = name end
    for name in out:gmatch("tests/c/([%w_]+)%.c: ") do listed[#listed + 1] = name end
    table.sort(listed)
    local _, ls = ns.sh("cd " .. ns.quote(ns.root) .. " && ls tests/c/*.c")
    local sources = {}
    for name in ls:gmatch("tests/c/([%w_]+)%.c") do sources[#sources + 1] = name end
    assert.same(sources, listed)
  end)
end)
