-- Faults (issue 9): each one a clear error, with nothing leaked and nothing
-- left attached. Processes that need other limits, privileges or mounts
-- are children (the host, or plain luajit with the module).
local h = require "helper"
local bpf = require "bpfhost"

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- Ids of every BPF link the kernel holds whose program is one of prog_ids
-- (bpftool by ids: perf links show only their program id).
local function links_of(prog_ids)
  local set, found = {}, {}
  for _, id in ipairs(prog_ids) do set[id] = true end
  local out = h.sh("bpftool -j link show 2>/dev/null")
  for obj in out:gmatch("{[^{}]*}") do
    local lid, pid = tonumber(obj:match('"id":(%d+)')), tonumber(obj:match('"prog_id":(%d+)'))
    if pid and set[pid] then found[#found + 1] = lid end
  end
  return found
end

local function prog_exists(id)
  local _, st = h.sh(("bpftool prog show id %d >/dev/null 2>&1"):format(id))
  return st == 0
end

-- Run a Lua chunk in the host; returns stdout, stderr, status.
local function host(code, prefix)
  local tmp = os.tmpname()
  local out, st = h.sh(("%s%s -e %s 2>%s"):format(prefix or "", h.host, q(code), tmp))
  local err = read(tmp)
  os.remove(tmp)
  return out, err, st
end

describe("faults", function()
  describe("#root kernel", function()
    it("a full map: update raises E2BIG with a hint, and the map keeps what it had", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 2, name = "full"}
      assert.is_true(m:update(1, 10))
      assert.is_true(m:update(2, 20))
      local err = h.raises(m.update, m, 3, 30)
      assert.equal("E2BIG", err.code)
      assert.equal("update map 'full': map is full (E2BIG)", err.message)
      assert.matches("delete entries first", err.hint)
      assert.equal(2, m:count())
      assert.is_true(m:update(2, 21), "an existing key is still updated in place")
      assert.equal(21, m:lookup(2))
      m:close()
    end)

    it("a map the memory cgroup cannot hold: ENOMEM, without a misleading RLIMIT_MEMLOCK hint", function()
      -- kernel >= 5.11 charges BPF memory to the memory cgroup, not to RLIMIT_MEMLOCK
      local root = "/sys/fs/cgroup/memory"
      local v2 = false
      if not io.open(root .. "/memory.limit_in_bytes") then
        root = h.sh("mount -t cgroup2 | awk 'NR == 1 { print $3 }'"):match("%S+")
        v2 = true
      end
      local cg = ("%s/bhfaults-%d"):format(root, h.pid())
      assert.equal(0, select(2, h.sh("mkdir " .. cg)))
      local ok, e = pcall(function()
        assert.equal(0, select(2, h.sh(("echo 16M > %s/%s"):format(cg, v2 and "memory.max" or "memory.limit_in_bytes"))))
        local out, err, st = host([[
          local ok, e = pcall(bpf.map_create, {type = "array", key = "u32", value = 4096, max_entries = 16384})
          print(ok, e.code, e.message)
          print(e.hint)]], ("sh -c 'echo $$ > %s/cgroup.procs && exec \"$0\" \"$@\"' "):format(cg))
        assert.equal(0, st, err)
        local line1, hint = out:match("^([^\n]*)\n([^\n]*)\n$")
        assert.equal("false\tENOMEM\tmap_create map 'array': out of memory (ENOMEM)", line1)
        assert.not_matches("MEMLOCK", hint)
        assert.matches("memory cgroup", hint)
      end)
      h.sh("rmdir " .. cg)
      assert(ok, e)
    end)

    it("RLIMIT_MEMLOCK of 0 does not matter on this kernel: objects load, maps are made", function()
      local out, err, st = host(([[
        local o = bpf.load(%q)
        local m = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 1024}
        m:update(1, 2)
        print(o.loaded, m:lookup(1))
        o:close()]]):format(h.obj("test_maps")), "ulimit -l 0 && ")
      assert.equal(0, st, err)
      assert.equal("true\t2\n", out)
      assert.equal("", err)
    end)

    describe("bpffs", function()
      it("is mounted on demand when /sys/fs/bpf is not (a private mount namespace)", function()
        -- the namespace and its bpffs (and the pin in it) go when the child ends
        local code = [[
          local m = bpf.map_create{type = "hash", key = "u32", value = "u32", max_entries = 4}
          m:pin("/sys/fs/bpf/bhfaults-pin")
          print(bpf.open_pinned("/sys/fs/bpf/bhfaults-pin").id == m.id)]]
        local out, st = h.sh(("unshare -m --propagation private sh -c %s 2>&1"):format(q(
          "umount -l /sys/fs/bpf 2>/dev/null; mountpoint -q /sys/fs/bpf && echo still-mounted; " ..
          h.host .. " -e " .. q(code) .. " && mount -t bpf | grep -c ' /sys/fs/bpf '")))
        assert.equal(0, st, out)
        assert.equal("true\n1\n", out)
        assert.is_nil(io.open("/sys/fs/bpf/bhfaults-pin"), "nothing pinned outside the namespace")
      end)

      it("a pin path that exists, is not on bpffs, or has no directory: a clear error, nothing made", function()
        local dir, cleanup = h.tmp_bpffs()
        local m = bpf.map_create{type = "hash", key = "u32", value = "u32", max_entries = 4, name = "pinme"}
        local ok, e = pcall(function()
          assert.is_true(m:pin(dir .. "/a"))
          local err = h.raises(m.pin, m, dir .. "/a")
          assert.equal("EEXIST", err.code)
          assert.equal("pin map 'pinme': the path exists already (EEXIST)", err.message)
          local tmp = ("/tmp/bhfaults-%d"):format(h.pid())
          err = h.raises(m.pin, m, tmp)
          assert.equal("pin map 'pinme': '" .. tmp .. "' is not on bpffs (EINVAL)", err.message)
          assert.is_nil(io.open(tmp))
          err = h.raises(m.pin, m, dir .. "/no/such/dir/a")
          assert.equal("ENOENT", err.code)
          assert.matches("the directory of .* does not exist", err.message)
          assert.matches("relative", h.raises(m.pin, m, "relative/a"):gsub("must be absolute", "relative"))
        end)
        m:close()
        cleanup()
        assert(ok, e)
      end)
    end)

    describe("privileges", function()
      local drop = "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all "

      it("the host without CAP_BPF: one clear line, status 1, no traceback", function()
        local out, st = h.sh("cd /tmp && " .. drop .. h.host .. " -e 'print(1)' 2>&1")
        assert.equal(1, st)
        assert.equal("bpfhost: needs root, or CAP_BPF (with CAP_PERFMON for tracing, CAP_NET_ADMIN " ..
          "for XDP/tc): this process has neither CAP_BPF nor CAP_SYS_ADMIN\n", out)
      end)

      it("the module without CAP_BPF: error objects with a privilege hint", function()
        local script = ("/tmp/bhfaults-%d.lua"):format(h.pid())
        local cpath, objs, rm, luajit = h.nobody_copies("test_maps")
        finally(rm)
        h.write_file(script, ([[
          package.cpath = %q .. ";" .. package.cpath
          local bpf = require "bpfhost"
          local ok, e = pcall(bpf.map_create, {type = "hash", key = "u32", value = "u32", max_entries = 4})
          print(ok, e.code, e.hint)
          local o = bpf.open(%q)
          ok, e = pcall(o.load, o)
          print(ok, e.code, e.hint)
          print(o:close())]]):format(cpath, objs.test_maps))
        local out = h.sh("cd /tmp && " .. drop .. luajit .. " " .. script .. " 2>&1")
        os.remove(script)
        local lines = {}
        for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
        assert.equal(3, #lines, out)
        assert.matches("^false\tEPERM\t.*CAP_BPF", lines[1])
        assert.matches("^false\tEPERM\tneeds root, or CAP_BPF and CAP_PERFMON %(missing: CAP_BPF%)$", lines[2])
        assert.equal("true", lines[3])
      end)
    end)

    describe("object files", function()
      local image = read(h.obj("test_maps"))

      it("truncated, empty, not ELF, a directory: a clear error naming the file", function()
        local path = ("/tmp/bhfaults-%d.bpf.o"):format(h.pid())
        for _, case in ipairs{
          {image:sub(1, math.floor(#image / 2)), "not a valid BPF object file"},
          {image:sub(1, 64), "not a valid BPF object file"},
          {"", "not a valid BPF object file"},
          {("garbage\n"):rep(100), "not a valid BPF object file"},
        } do
          h.write_file(path, case[1])
          local err = h.raises(bpf.open, path)
          assert.equal("table", type(err))
          assert.matches("^open object '" .. path:gsub("%p", "%%%0") .. "': " .. case[2], err.message)
          assert.is_string(err.code)
          assert.not_equal("EUNKNOWN", err.code)
        end
        os.remove(path)
        local err = h.raises(bpf.open, "/tmp")
        assert.matches("^open object '/tmp': ", err.message)
        err = h.raises(bpf.open_mem, image:sub(1, 200))
        assert.equal("open object 'mem': not a valid BPF object file (LIBBPF_ERRNO__FORMAT)", err.message)
      end)

      it("a corrupt .BTF (type ids out of range) is refused before libbpf 1.1 crashes on it", function()
        -- found by spec/fuzz/object_fuzz: libbpf 1.1 dereferenced a type id beyond its BTF
        for _, f in ipairs{"spec/fuzz/corpus/object/crash-btf-type-id"} do
          local bytes = read(f)
          local err = h.raises(bpf.open_mem, bytes)
          assert.equal("EINVAL", err.code)
          assert.matches("^open object 'mem': not a valid BPF object file: %.BTF: type %d+ refers to a " ..
            "type or name that does not exist %(EINVAL%)$", err.message)
          local path = ("/tmp/bhfaults-btf-%d.bpf.o"):format(h.pid())
          h.write_file(path, bytes)
          err = h.raises(bpf.open, path)
          os.remove(path)
          assert.equal("EINVAL", err.code)
        end
      end)
    end)

    describe("a signal during every blocking call", function()
      -- The script sets up, attaches a program, says "ready", then blocks;
      -- the signal comes once "ready" is out (no timing involved).
      local setup = ([[
        local o = bpf.load(%q)
        local prog_id = o:program("ring_tp_getppid").id
        o:attach()
        local ring = bpf.ringbuf(o:get_map("ring"))
        local perf = bpf.perfbuf(o:get_map("perf"))
        local up = bpf.user_ringbuf(o:get_map("urb"))
        local ex = bpf.exporter{listen = "127.0.0.1:0"}
        local function ready() io.stderr:write("ready ", prog_id, "\n"); io.stderr:flush() end
      ]]):format(h.obj("test_ring"))
      local calls = {
        {"bpf.sleep", "ready(); bpf.sleep(60)", "sleep"},
        {"bpf.run", "ready(); print(bpf.run{sources = {{ring, print}}, timeout = 60})"},
        {"bpf.poll", "ready(); bpf.poll({ring, perf}, 60000)", "poll"},
        {"ring:poll", "ready(); ring:poll(60000, print)", "poll"},
        {"ring:records", "ready(); for r in ring:records(60000) do print(r) end", "records"},
        {"perf:poll", "ready(); perf:poll(60000, print)", "poll"},
        {"user_ringbuf submit with wait", [[
          local rec = ("x"):rep(32)
          for _ = 1, 100000 do if not up:submit(rec) then break end end
          assert(not up:submit(rec), "the user ring never filled")
          ready(); up:submit(rec, {wait = 60000})]], "submit"},
        {"exporter serve", "ready(); ex:serve(60000)", "serve exporter"},
      }
      for _, c in ipairs(calls) do
        for _, sig in ipairs{"INT", "TERM"} do
          it(c[1] .. " and SIG" .. sig .. ": it ends at once, cleanly, and the links go", function()
            local errf = os.tmpname()
            -- a background job of a shell starts with SIGINT ignored: give it back
            local out, st = h.sh(("(env --default-signal=INT,TERM %s -e %s 2>%s & pid=$!; " ..
              "while ! grep -q ready %s; do kill -0 $pid 2>/dev/null || break; sleep 0.02; done; " ..
              "kill -%s $pid; wait $pid; echo \"exit=$?\")"):format(h.host, q(setup .. c[2]), errf, errf, sig))
            local err = read(errf)
            os.remove(errf)
            local prog_id = tonumber(err:match("ready (%d+)"))
            assert.is_number(prog_id, err)
            if c[3] then
              assert.equal(sig == "INT" and "exit=130\n" or "exit=143\n", out, err)
              assert.matches("\nbpfhost: " .. c[3] .. ": interrupted by SIG" .. sig .. " %(EINTR%)\n", err)
              assert.not_matches("PANIC", err)
            else
              assert.equal("interrupted\nexit=0\n", out, err)
            end
            assert.same({}, links_of({prog_id}))
            assert.is_false(prog_exists(prog_id))
          end)
        end
      end
    end)

    describe("attaching several programs", function()
      it("obj:attach() failing half-way destroys the links it made (bpftool, by program ids)", function()
        local o = bpf.load(h.obj("test_prog"))
        local ids = {}
        for _, p in pairs(o:programs()) do ids[#ids + 1] = p.id end
        local err = h.raises(o.attach, o) -- tracepoint, raw_tp, tp_btf attach; the kprobe cannot
        assert.equal("EOPNOTSUPP", err.code)
        assert.same({}, links_of(ids))
        -- and the object still works: one program attached by hand
        local l = o:program("on_sys_enter"):attach()
        assert.equal(1, #links_of(ids))
        o:close()
        assert.is_false(l.attached)
        assert.same({}, links_of(ids))
      end)

      it("a script error after attaching some programs: the host destroys every link", function()
        local out, err, st = host(([[
          local o = bpf.load(%q)
          local ids = {}
          for _, n in ipairs{"on_openat", "on_sys_enter", "on_sys_enter_btf"} do
            local p = o:program(n)
            p:attach()
            ids[#ids + 1] = p.id
          end
          print(table.concat(ids, " "))
          io.stdout:flush()
          error("boom")]]):format(h.obj("test_prog")))
        assert.equal(1, st)
        assert.matches("boom", err)
        local ids = {}
        for id in out:gmatch("%d+") do ids[#ids + 1] = tonumber(id) end
        assert.equal(3, #ids)
        assert.same({}, links_of(ids))
        for _, id in ipairs(ids) do assert.is_false(prog_exists(id), "program " .. id) end
      end)
    end)
  end)
end)
