-- Installing (README, "Installing"): from a copy of the source tree (what
-- git tracks, plus new files it does not ignore: a fresh clone in CI),
-- luarocks builds and installs into an empty tree for LuaJIT and for Lua
-- 5.4, and plain luajit and lua5.4 then load what it installed and do a real
-- map operation; make install into a DESTDIR gives a bpfhost that runs an
-- example from share/bpfhost with nothing but its own files, and uninstall
-- takes every file back. It builds the project again (-j2): slow, so it runs
-- once, in the LuaJIT suite (it starts both Luas itself); `--tags=install`
-- selects it alone.
local h = require "helper"

if not h.luajit then
  describe("install", function()
    pending("runs in the LuaJIT suite only: it installs for both Luas and runs each in a process of its own")
  end)
  return
end

local bpf = require "bpfhost"

-- Run a shell command; fail with its output unless it exits 0.
local function run(cmd)
  local out, status = h.sh(cmd .. " 2>&1")
  assert(status == 0, ("exit %s: %s\n%s"):format(tostring(status), cmd, out))
  return out
end

-- A copy of the source tree: tracked files as they are now, and untracked
-- ones git does not ignore (no build output).
local function copy_tree(dst)
  run("mkdir -p " .. dst)
  if select(2, h.sh("git rev-parse --is-inside-work-tree >/dev/null 2>&1")) == 0 then
    run(("git ls-files -z --cached --others --exclude-standard | " ..
      "tar --null -T - --ignore-failed-read -cf - | tar -C %s -xf -"):format(dst))
  else
    run(("tar --exclude=./build -cf - . | tar -C %s -xf -"):format(dst))
  end
end

-- What plain <interp> prints after loading the module from cpath only and
-- doing a map operation.
local function map_op(interp, cpath)
  local code = ([[
package.cpath = %q
local bpf = require "bpfhost"
local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8, name = "inst"}
assert(m:update(7, 4242))
print(package.searchpath("bpfhost", package.cpath), bpf._VERSION, m:lookup(7), m:lookup(8))
m:close()]]):format(cpath)
  return run(("cd / && %s -e %q"):format(interp, code))
end

local function luajit_incdir()
  return run("pkg-config --cflags-only-I luajit"):match("%-I(%S+)")
end

describe("install #root #install", function()
  local tmp

  setup(function()
    tmp = run("mktemp -d /tmp/bpfhost-install-XXXXXX"):match("%S+")
  end)

  teardown(function()
    if tmp then h.sh("rm -rf " .. tmp) end
  end)

  it("luarocks make installs the module and bpfhost into an empty tree, for LuaJIT", function()
    local src, tree = tmp .. "/src51", tmp .. "/t51"
    copy_tree(src)
    run(("cd %s && MAKEFLAGS=-j2 luarocks --lua-version=5.1 make rockspec/bpfhost-scm-1.rockspec " ..
      "--tree %s LUA=%s LUA_INCDIR=%s"):format(src, tree, run("command -v luajit"):match("%S+"),
      luajit_incdir()))
    h.sh("rm -rf " .. src .. "/build") -- the tree needs nothing from the build
    local out = map_op("luajit", tree .. "/lib/lua/5.1/?.so")
    assert.equal(("%s/lib/lua/5.1/bpfhost.so\t%s\t4242\tnil\n"):format(tree, bpf._VERSION), out)
    assert.equal("bpfhost " .. bpf._VERSION, run(tree .. "/bin/bpfhost -v"):match("^[^\n]+"))
    assert.equal("ok\n", run(tree .. "/bin/bpfhost -e 'print(bpf.map_create{type = [[array]], " ..
      "key = [[u32]], value = [[u32]], max_entries = 1}:lookup(0) == 0 and [[ok]])'"))
  end)

  it("luarocks make installs the module and bpfhost into an empty tree, for Lua 5.4", function()
    local src, tree = tmp .. "/src54", tmp .. "/t54"
    copy_tree(src)
    run(("cd %s && MAKEFLAGS=-j2 luarocks --lua-version=5.4 make rockspec/bpfhost-scm-1.rockspec --tree %s")
      :format(src, tree))
    h.sh("rm -rf " .. src)
    local out = map_op("lua5.4", tree .. "/lib/lua/5.4/?.so")
    assert.equal(("%s/lib/lua/5.4/bpfhost.so\t%s\t4242\tnil\n"):format(tree, bpf._VERSION), out)
    assert.equal("bpfhost " .. bpf._VERSION, run(tree .. "/bin/bpfhost -v"):match("^[^\n]+"))
  end)

  it("a missing external dependency stops luarocks with its own message", function()
    local src = tmp .. "/srcdep"
    copy_tree(src)
    local out, status = h.sh(("cd %s && luarocks --lua-version=5.4 make rockspec/bpfhost-scm-1.rockspec " ..
      "--tree %s/tdep LIBBPF_DIR=%s/nowhere 2>&1"):format(src, tmp, tmp))
    assert.is_not.equal(0, status)
    assert.matches("Could not find header file for LIBBPF", out)
    assert.matches("No file bpf/libbpf.h in " .. tmp:gsub("%p", "%%%0") .. "/nowhere/include", out)
  end)

  it("make install puts host, modules, man page and examples under DESTDIR; uninstall takes them back", function()
    local src, dest = tmp .. "/srcmk", tmp .. "/dest"
    copy_tree(src)
    local make = ("make -C %s -j2 --no-print-directory LUA=lua5.4 PREFIX=/usr/local DESTDIR=%s")
      :format(src, dest)
    run(make .. " install")
    h.sh("rm -rf " .. src .. "/build") -- the installed files stand alone
    local root = dest .. "/usr/local"
    for _, f in ipairs{"bin/bpfhost", "lib/lua/5.1/bpfhost.so", "lib/lua/5.4/bpfhost.so",
        "share/man/man1/bpfhost.1", "share/bpfhost/scripts/execve_counter.lua",
        "share/bpfhost/bpf/execve_counter.bpf.o", "share/bpfhost/scripts/xdp_count.lua",
        "share/bpfhost/bpf/test_net.bpf.o"} do
      assert.equal(0, select(2, h.sh("test -f " .. root .. "/" .. f)), f)
    end
    assert.equal(1, select(2, h.sh("test -e " .. root .. "/share/bpfhost/scripts/bench.lua")))
    -- both modules, from plain interpreters
    assert.matches("\t4242\tnil\n$", map_op("luajit", root .. "/lib/lua/5.1/?.so"))
    assert.matches("\t4242\tnil\n$", map_op("lua5.4", root .. "/lib/lua/5.4/?.so"))
    -- one version: the man page says the one the module and bpfhost -v say
    assert.equal("bpfhost " .. bpf._VERSION, run(root .. "/bin/bpfhost -v"):match("^[^\n]+"))
    local man = run("head -1 " .. root .. "/share/man/man1/bpfhost.1")
    assert.equal(('.TH BPFHOST 1 "2026" "bpfhost %s" "User Commands"\n'):format(bpf._VERSION), man)
    assert.matches("/usr/local/share/bpfhost/scripts", run("cat " .. root .. "/share/man/man1/bpfhost.1"))

    -- the installed host runs the installed example, which finds its object
    -- beside it (no build, no environment), counts execve() calls and stops
    -- on SIGINT
    local log = tmp .. "/counter.log"
    local pid = tonumber(run(("cd / && (env -u BPFHOST_BUILD -u BPFHOST_OBJ_DIR --default-signal=INT " ..
      "%s/bin/bpfhost %s/share/bpfhost/scripts/execve_counter.lua 1 > %s 2>&1 & echo $! > %s.pid; " ..
      "wait $!; echo $? > %s.rc) > /dev/null 2>&1 & sleep 0.3; cat %s.pid"):format(root, root, log, log, log, log)))
    assert.is_number(pid)
    finally(function() h.sh("kill -9 " .. pid .. " 2>/dev/null") end)
    local out
    for _ = 1, 100 do
      h.spawn(5)
      h.sh("sleep 0.1")
      out = run("cat " .. log)
      if out:match("execve_counter [1-9]") then break end
    end
    assert.matches("^counting execve%(%) every 1s; Ctrl%-C to stop\n", out)
    assert.matches("execve_counter [1-9]%d*\n", out)
    run("kill -INT " .. pid)
    local rc
    for _ = 1, 100 do
      rc = h.sh("cat " .. log .. ".rc 2>/dev/null"):match("%d+")
      if rc then break end
      h.sh("sleep 0.05")
    end
    assert.equal("0", rc, run("cat " .. log))
    assert.matches("stopped %(interrupted%)\n$", run("cat " .. log))

    -- uninstall: not one file left, nor share/bpfhost
    copy_tree(src) -- a fresh tree: uninstall builds nothing
    run(make .. " uninstall")
    assert.equal("", run("find " .. dest .. " ! -type d"))
    assert.equal(1, select(2, h.sh("test -e " .. root .. "/share/bpfhost")))
  end)
end)
