-- Maps from outside an object: map_create, what the kernel holds (maps,
-- programs, links, by id and by name), pins (by hand, by name with pin_root,
-- across processes, after SIGKILL), and bpftool on the same maps.
local h = require "helper"
local mh = require "maphelp"
local bpf = require "bpfhost"

local function uniq(prefix)
  return ("%s%d"):format(prefix, math.random(1, 1e6))
end

-- Run a bpfhost script in a child process; returns its output and exit status.
local function host(code)
  return mh.finish(mh.spawn(("%s -e %q"):format(h.host, code)))
end

describe("maps from outside an object", function()
  context("arguments", function()
    it("open_pinned and map_by_name want a string", function()
      assert.matches("string expected, got no value", h.raises(bpf.open_pinned))
      assert.matches("string expected, got table", h.raises(bpf.map_by_name, {}))
    end)
  end)

  context("lifetime", function()
    it("#root a pin keeps a map alive after every handle is gone", function()
      local dir, rm = h.tmp_bpffs()
      finally(rm)
      local id
      do
        local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 4}
        m:update(1, 5)
        m:pin(dir .. "/kept")
        id = m.id
      end
      collectgarbage(); collectgarbage()
      local again = bpf.open_pinned(dir .. "/kept")
      assert.equal(id, again.id)
      assert.equal(5, again:lookup(1)) -- typed: map_create gave it BTF
      assert.is_true(again:unpin(dir .. "/kept"))
      again:close()
      collectgarbage(); collectgarbage()
      assert.equal("ENOENT", h.raises(bpf.map_by_id, id).code)
    end)

    it("#root handles from the kernel (by id, by name, pinned) own their fd", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 4, name = uniq("own")}
      local a, b = bpf.map_by_id(m.id), bpf.map_by_name(m.name)
      assert.are_not.equal(m.fd, a.fd)
      assert.are_not.equal(a.fd, b.fd)
      local fd = a.fd
      a:close()
      assert.is_nil(io.open("/proc/self/fd/" .. fd)) -- closed with its handle
      assert.equal(m.id, b.id)
      b = nil
      collectgarbage(); collectgarbage()
      assert.equal(m.name, bpf.map_by_id(m.id).name) -- m still holds it
      m:close()
    end)
  end)

  context("#root kernel", function()
    local same = h.same_value

    it("map_create with Types gives the map BTF: another reader sees it typed, and decodes alike", function()
      local o = bpf.load(h.obj("test_codec"))
      local seen, typed, untyped = {}, {}, {}
      local types = {}
      for _, name in ipairs{"ints8", "ints64", "enums", "wides", "bools", "floats", "names",
        "scalars", "flows", "shapes", "unions", "variants", "paddeds", "grids", "pc_grid"} do
        local d = o:get_map(name)
        for _, T in ipairs{d:key_type(), d:value_type()} do
          if not seen[T.name] then seen[T.name] = true types[#types + 1] = T end
        end
      end
      for _, n in ipairs{"struct iphdr", "struct tcphdr", "struct in6_addr", "struct bpf_map_info",
        "struct __sk_buff", "union bpf_attr"} do
        types[#types + 1] = bpf.kernel_type(n)
      end
      local R = 12345
      local function rnd()
        R = (R * 1103515245 + 12345) % 2147483648
        return math.floor(R / 65536) % 256
      end
      for _, T in ipairs(types) do
        local m = bpf.map_create{type = "hash", key = "u32", value = T, max_entries = 32, name = "mc_btf"}
        local m2 = bpf.map_by_id(m.id)
        local V2 = m2:value_type()
        assert.equal(T.size, V2.size)
        if V2.name == T.size .. " bytes" then
          untyped[#untyped + 1] = T.name
        else
          typed[#typed + 1] = T.name
          -- (a 64-bit enum that clang 14 cut to 32 bits goes as the integer it decodes to)
          if T.name ~= "enum wide" then assert.equal(T.name, V2.name) end
          assert.equal("u32", m2:key_type().name)
          -- the same bytes decode to the same value through either Type
          for k = 1, 20 do
            local b = {}
            for i = 1, T.size do b[i] = string.char(rnd()) end
            local v = T:decode(table.concat(b))
            m:update(k, v)
            local a, c = m:lookup(k), m2:lookup(k)
            if not same(a, c) then
              local fmt = require("bpfhost.pp").format
              error(("%s: key %d: creator %s, reader %s"):format(T.name, k, fmt(a), fmt(c)))
            end
          end
        end
        m:close()
        m2:close()
      end
      o:close()
      -- plain shapes are typed; structs with anonymous unions are left to raw bytes
      for _, want in ipairs{"struct tcphdr", "struct in6_addr", "struct bpf_map_info", "struct flow_key",
        "union val", "enum color", "s32[2][3]", "char[16]", "u8[6]", "bool", "double"} do
        local found = false
        for _, n in ipairs(typed) do if n == want then found = true end end
        assert(found, want .. " should be typed; typed: " .. table.concat(typed, ", "))
      end
      assert(#typed >= 12, "typed: " .. table.concat(typed, ", "))
      if os.getenv("BPFHOST_SHOW") then print("typed: " .. table.concat(typed, ", "), "untyped: " .. table.concat(untyped, ", ")) end
      for _, n in ipairs(untyped) do
        -- anonymous unions, which the plan flattens
        assert(n:match("^struct") or n:match("^union"), n)
      end
    end)

    it("a map of an object has one pin: a second path says where the first is", function()
      local dir, rm = h.tmp_bpffs()
      local o = bpf.load(h.obj("test_maps"))
      -- one finally: busted keeps only the last one given
      finally(function() o:close() rm() end)
      local m = o:get_map("u32_u64")
      assert.is_true(m:pin(dir .. "/a"))
      local e = h.raises(m.pin, m, dir .. "/b")
      assert.equal("pin map 'u32_u64': it is pinned at '" .. dir .. "/a' already (EINVAL)", tostring(e))
      assert.equal("a map of an object has one pin: m:unpin() first", e.hint)
      assert.is_true(m:pin(dir .. "/a")) -- the same path again is fine
      e = h.raises(m.unpin, m, dir .. "/b")
      assert.equal("unpin map 'u32_u64': it is pinned at '" .. dir .. "/a', not at '" .. dir .. "/b' (EINVAL)", tostring(e))
      assert.is_true(m:unpin())
      assert.is_true(m:pin(dir .. "/b"))
      assert.is_true(m:unpin())
    end)

    it("a map created with Types is typed for bpftool and for another bpfhost process", function()
      local T = bpf.open(h.obj("test_maps")):type("struct stats")
      local m = bpf.map_create{type = "hash", key = "u32", value = T, max_entries = 4, name = "mc_typed"}
      local a = bpf.map_create{type = "array", value = "char[16]", max_entries = 2, name = "mc_tarr"}
      finally(function() m:close() a:close() end)
      m:update(7, {packets = 3, bytes = 4, flags = 1, comm = "bash"})
      a:update(1, "hello")
      local dump = h.sh("bpftool -j map dump id " .. m.id)
      assert.matches('"formatted"', dump)
      assert.matches('"comm":"bash"', dump)
      assert.matches('"packets":3', dump)
      assert.matches('"hello"', h.sh("bpftool -j map dump id " .. a.id))
      local out, status = host(([[
        local m = bpf.map_by_id(%d)
        local v = m:lookup(7)
        print(m:value_type().name, v.comm, v.packets, bpf.map_by_id(%d):lookup(1))]]):format(m.id, a.id))
      assert.equal(0, status)
      assert.equal("struct stats\tbash\t3\thello\n", out)
    end)

    it("map_create makes every type; key/value by size, scalar name or Type", function()
      local T = bpf.open(h.obj("test_maps")):type("struct stats")
      local inner = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 2}
      local cases = {
        {{type = "hash", key = 4, value = 8}, 4, 8},
        {{type = "hash", key = "char[16]", value = T}, 16, 40},
        {{type = "array", key = "u32", value = "u64"}, 4, 8},
        {{type = "array", value = T}, 4, 40}, -- arrays get their u32 key by themselves
        {{type = "percpu_hash", key = "u64", value = "u32"}, 8, 4},
        {{type = "percpu_array", key = 4, value = 8}, 4, 8},
        {{type = "lru_hash", key = "s16", value = "u8"}, 2, 1},
        {{type = "lru_percpu_hash", key = 4, value = 8}, 4, 8},
        {{type = "lpm_trie", key = 8, value = "u32"}, 8, 4},
        {{type = "lpm_trie", key = 20, value = 1}, 20, 1},
        {{type = "queue", value = "u32"}, 0, 4},
        {{type = "stack", value = T}, 0, 40},
        {{type = "bloom_filter", value = "u64"}, 0, 8},
        {{type = "array_of_maps", key = "u32", inner_map = inner}, 4, 4},
        {{type = "hash_of_maps", key = 8, inner_map = inner}, 8, 4},
        {{type = "prog_array"}, 4, 4},
        {{type = "perf_event_array"}, 4, 4},
        {{type = "ringbuf", max_entries = 4096}, 0, 0},
        {{type = "user_ringbuf", max_entries = 4096}, 0, 0},
      }
      for _, c in ipairs(cases) do
        local spec = c[1]
        spec.max_entries = spec.max_entries or 4
        spec.name = "mc_" .. spec.type:sub(1, 12)
        local ok, m = pcall(bpf.map_create, spec)
        assert(ok, spec.type .. ": " .. tostring(m))
        assert.equal(spec.type, m.type)
        assert.equal(c[2], m.key_size)
        assert.equal(c[3], m.value_size)
        local i = m:info()
        assert.equal(spec.type, i.type)
        assert.equal(spec.name, i.name)
        assert.equal(c[2], i.key_size)
        assert.equal(c[3], i.value_size)
        assert.equal(spec.max_entries, i.max_entries)
        -- the kernel's own view, through bpftool
        local shown = h.sh("bpftool -j map show id " .. m.id)
        assert.matches('"name":"' .. spec.name .. '"', shown)
        assert.matches('"bytes_key":' .. c[2] .. ',', shown)
        m:close()
      end
      inner:close()
      -- typed sides work as types
      local m = bpf.map_create{type = "hash", key = "char[16]", value = T, max_entries = 4}
      m:update("eth0", {packets = 1, comm = "x"})
      assert.same({packets = 1, bytes = 0, flags = 0, comm = "x"}, m:lookup("eth0"))
      assert.equal("struct stats", m:value_type().name)
      m:close()
    end)

    it("map_create flags by name reach the kernel", function()
      local cases = {
        {{type = "hash", flags = "no_prealloc"}, 1},
        {{type = "hash", flags = "no_prealloc | zero_seed"}, 1 + 64},
        {{type = "lru_hash", flags = "no_common_lru"}, 2},
        {{type = "array", flags = "mmapable"}, 1024},
        {{type = "array", flags = "rdonly_prog"}, 128},
        {{type = "hash", flags = "wronly_prog"}, 256},
        -- rdonly and wronly set the access mode of the fd; the map keeps no trace of them
        {{type = "hash", flags = "rdonly"}, 0},
        {{type = "hash", flags = "wronly"}, 0},
        {{type = "hash", flags = 1}, 1},
        {{type = "lpm_trie", key = 8, flags = nil}, 1},
      }
      for _, c in ipairs(cases) do
        local spec = c[1]
        spec.key, spec.value, spec.max_entries = spec.key or "u32", "u32", 4
        local m = bpf.map_create(spec)
        assert.equal(c[2], m.flags)
        assert.equal(c[2], m:info().flags)
        m:close()
      end
      local ro = bpf.map_create{type = "hash", key = "u32", value = "u32", max_entries = 4, flags = "rdonly", name = "ro"}
      assert.equal("update map 'ro': this handle is read-only (the map was made or opened rdonly) (EPERM)",
        tostring(h.raises(ro.update, ro, 1, 1)))
      assert.is_nil(ro:lookup(1))
      ro:close()
      local wo = bpf.map_create{type = "hash", key = "u32", value = "u32", max_entries = 4, flags = "wronly", name = "wo"}
      assert.is_true(wo:update(1, 1))
      assert.equal("lookup map 'wo': this handle is write-only (the map was made or opened wronly) (EPERM)",
        tostring(h.raises(wo.lookup, wo, 1)))
      wo:close()
      -- the kernel's refusal of a flag that does not fit the type is an error object with a hint
      local err = h.raises(bpf.map_create, {type = "hash", key = 4, value = 4, max_entries = 4, flags = "mmapable"})
      assert.equal("EINVAL", err.code)
      assert.equal("check the sizes and flags against this map type's rules", err.hint)
    end)

    it("map_by_id and map_by_name find maps the script did not make, typed by their BTF", function()
      local o = bpf.load(h.obj("test_maps"))
      finally(function() o:close() end)
      local ns = o:get_map("name_stats")
      ns:update("lo", {packets = 7})
      local byid = bpf.map_by_id(ns.id)
      assert.equal("name_stats", byid.name)
      assert.equal("struct stats", byid:value_type().name)
      assert.equal(7, byid:lookup("lo").packets)
      local byname = bpf.map_by_name("name_stats")
      assert.equal(ns.id, byname.id)
      byname:update("eth1", {bytes = 9})
      assert.equal(9, ns:lookup("eth1").bytes)

      local name = uniq("twin")
      local a = bpf.map_create{type = "hash", key = 4, value = 4, max_entries = 1, name = name}
      local b = bpf.map_create{type = "hash", key = 4, value = 4, max_entries = 1, name = name}
      assert.equal(("map_by_name: 2 maps are named '%s' (ids %d, %d): use bpf.map_by_id(id)"):format(name,
        math.min(a.id, b.id), math.max(a.id, b.id)), h.raises(bpf.map_by_name, name))
      b:close()
      assert.equal(a.id, bpf.map_by_name(name).id)
      a:close()
      collectgarbage(); collectgarbage() -- the handle map_by_name gave above holds the map too
      local err = h.raises(bpf.map_by_name, name)
      assert.equal(("map_by_name: no map named '%s' (ENOENT)"):format(name), tostring(err))
      assert.equal("bpf.maps() lists the maps there are", err.hint)
      assert.equal("the kernel keeps only the first 15 characters of a map name",
        h.raises(bpf.map_by_name, "a_very_long_map_name").hint)
      assert.equal("ENOENT", h.raises(bpf.map_by_id, 4000000000).code)
    end)

    it("bpf.maps(), bpf.programs() and bpf.links() list what the kernel holds", function()
      local dir, rm = h.tmp_bpffs()
      local o = bpf.load(h.obj("test_maps"))
      finally(function() rm(); o:close() end)
      local m = o:get_map("u32_u64")
      for i = 1, 5 do m:update(i, i) end
      m:pin(dir .. "/counts")
      local link = o:program("touch"):attach()

      local mi = mh.find(bpf.maps(), "id", m.id)
      assert.is_table(mi)
      assert.equal("u32_u64", mi.name)
      assert.equal("hash", mi.type)
      assert.equal(4, mi.key_size)
      assert.equal(8, mi.value_size)
      assert.equal(4096, mi.max_entries)
      assert.equal(5, mi.entries)
      assert.equal("u32", mi.key_type)
      assert.equal("u64", mi.value_type)
      assert.is_false(mi.frozen)
      assert.is_true(mi.memlock > 0)
      assert.same({dir .. "/counts"}, mi.pinned)
      local arr = mh.find(bpf.maps(), "id", o:get_map("arr").id)
      assert.equal(16, arr.entries)
      assert.is_nil(arr.pinned)

      local li = link:info()
      local pi = mh.find(bpf.programs(), "id", li.prog_id)
      assert.is_table(pi)
      assert.equal("touch", pi.name)
      assert.equal("raw_tracepoint", pi.type)
      assert.matches("^%x+$", pi.tag)
      assert.equal(16, #pi.tag)
      assert.is_table(pi.map_ids)
      local uses_arr = false
      for _, id in ipairs(pi.map_ids) do if id == o:get_map("arr").id then uses_arr = true end end
      assert.is_true(uses_arr)
      -- bpftool agrees on the tag
      assert.matches('"tag":"' .. pi.tag .. '"', h.sh("bpftool -j prog show id " .. pi.id))

      local ki = mh.find(bpf.links(), "id", li.id)
      assert.is_table(ki)
      assert.equal("raw_tracepoint", ki.type)
      assert.equal(li.prog_id, ki.prog_id)
      assert.equal("sys_enter", ki.target)
      assert.is_nil(ki.pinned)
      link:pin(dir .. "/link")
      assert.same({dir .. "/link"}, mh.find(bpf.links(), "id", li.id).pinned)
    end)

    it("open_pinned gives the map or link pinned at a path; clear errors elsewhere", function()
      local dir, rm = h.tmp_bpffs()
      local o = bpf.load(h.obj("test_maps"))
      finally(function() rm(); o:close() end)
      local m = o:get_map("name_stats")
      m:pin(dir .. "/stats")
      m:update("a", {packets = 1})
      local pm = bpf.open_pinned(dir .. "/stats")
      assert.equal(m.id, pm.id)
      assert.equal(dir .. "/stats", pm:info().pinned)
      assert.equal(1, pm:lookup("a").packets) -- typed by the BTF the kernel holds
      local link = o:program("touch"):attach()
      link:pin(dir .. "/touch")
      local pl = bpf.open_pinned(dir .. "/touch")
      assert.equal(link:info().id, pl:info().id)
      assert.equal(link:info().prog_id, pl:info().prog_id)

      local err = h.raises(bpf.open_pinned, dir .. "/nothing")
      assert.equal(("open_pinned: nothing is pinned at '%s/nothing' (ENOENT)"):format(dir), tostring(err))
      err = h.raises(bpf.open_pinned, "/tmp")
      assert.equal("open_pinned: '/tmp' is not on bpffs (EACCES)", tostring(err))
      assert.equal("pins live on bpffs (/sys/fs/bpf); bpf.maps() lists pinned maps", err.hint)
      h.sh("mkdir " .. dir .. "/sub")
      err = h.raises(bpf.open_pinned, dir .. "/sub")
      assert.equal(("open_pinned: '%s/sub' is not a pinned map, program or link (EACCES)"):format(dir), tostring(err))
    end)

    it("pin and unpin: a path that exists or is not on bpffs is a clear error", function()
      local dir, rm = h.tmp_bpffs()
      finally(rm)
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 4, name = "pinme"}
      assert.is_true(m:pin(dir .. "/a"))
      assert.equal(dir .. "/a", m:info().pinned)
      local err = h.raises(m.pin, m, dir .. "/a")
      assert.equal("pin map 'pinme': the path exists already (EEXIST)", tostring(err))
      assert.equal("unpin or remove the old pin first", err.hint)
      err = h.raises(m.pin, m, "/tmp/bpfhost-not-bpffs")
      assert.equal("pin map 'pinme': '/tmp/bpfhost-not-bpffs' is not on bpffs (EINVAL)", tostring(err))
      assert.equal("pins go under /sys/fs/bpf (mount -t bpf bpf DIR)", err.hint)
      err = h.raises(m.pin, m, dir .. "/no/such/dir")
      assert.equal("pin map 'pinme': the directory of '" .. dir .. "/no/such/dir' does not exist (ENOENT)", tostring(err))
      -- pin_root and set_pin_path say the same at once, not a bare EINVAL at load
      local e = h.raises(bpf.open, h.obj("test_mappin"), {pin_root = "/tmp"})
      assert.equal("open object '" .. h.obj("test_mappin") .. "': '/tmp' is not on bpffs (EINVAL)", tostring(e))
      local o = bpf.open(h.obj("test_mappin"))
      local pm = o:get_map("persist")
      e = h.raises(pm.set_pin_path, pm, "/tmp/bpfhost-not-bpffs")
      assert.equal("set_pin_path map 'persist': '/tmp/bpfhost-not-bpffs' is not on bpffs (EINVAL)", tostring(e))
      o:close()
      local shown = h.sh("bpftool -f -j map show id " .. m.id)
      assert.is_truthy(shown:find('"pinned":["' .. dir .. '/a"]', 1, true), shown)
      assert.is_true(m:unpin())
      assert.is_nil(io.open(dir .. "/a"))
      assert.is_nil(m:info().pinned)
      assert.equal("unpin map 'pinme': not pinned by this handle (give the path)", h.raises(m.unpin, m))
      err = h.raises(m.unpin, m, dir .. "/a")
      assert.equal(("unpin map 'pinme': nothing is pinned at '%s/a' (ENOENT)"):format(dir), tostring(err))
      m:close()

      -- an object's map: pin, info().pinned, unpin, and unpin again
      local o = bpf.load(h.obj("test_maps"))
      local om = o:get_map("small")
      assert.is_true(om:pin(dir .. "/small"))
      assert.equal(dir .. "/small", om:info().pinned)
      assert.is_true(om:unpin())
      assert.is_nil(io.open(dir .. "/small"))
      assert.is_nil(om:info().pinned)
      assert.equal("unpin map 'small': the map is not pinned", h.raises(om.unpin, om))
      o:close()
    end)

    it("pin_root: a LIBBPF_PIN_BY_NAME map is pinned, reused on the next open, and survives restarts", function()
      local dir, rm = h.tmp_bpffs()
      finally(rm)
      local o1 = bpf.open(h.obj("test_mappin"), {pin_root = dir})
      o1:load()
      local p1 = o1:get_map("persist")
      assert.equal(dir .. "/persist", p1:info().pinned)
      assert.is_nil(io.open(dir .. "/scratch")) -- not pinned by name
      p1:update(1, 111)
      o1:get_map("scratch"):update(1, 1)
      local id = p1.id
      o1:close()

      local o2 = bpf.load(h.obj("test_mappin"), {pin_root = dir})
      local p2 = o2:get_map("persist")
      assert.equal(id, p2.id)             -- the same kernel map
      assert.equal(111, p2:lookup(1))     -- with its state
      assert.is_nil(o2:get_map("scratch"):lookup(1)) -- a fresh one
      p2:update(2, 222)
      o2:close()

      -- another process: it reads what this one wrote, and writes for the next
      local out, code = host(("local o = bpf.load(%q, {pin_root = %q}) local p = o:get_map('persist') " ..
        "print(p:lookup(1), p:lookup(2)) p:update(3, 333)"):format(h.obj("test_mappin"), dir))
      assert.equal(0, code, out)
      assert.equal("111\t222\n", out)
      local o3 = bpf.load(h.obj("test_mappin"), {pin_root = dir})
      assert.equal(333, o3:get_map("persist"):lookup(3))
      assert.equal(id, o3:get_map("persist").id)
      o3:close()
    end)

    it("a pinned map written by one process is read by the next, also after the writer got SIGKILL", function()
      local dir, rm = h.tmp_bpffs()
      finally(rm)
      local writer = mh.spawn(("%s -e %q"):format(h.host, ([[
        local o = bpf.load(%q, {pin_root = %q})
        o:get_map("persist"):update(7, 777)
        local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 4, name = "killed"}
        m:update(1, 11)
        m:pin(%q)
        print("ready")
        io.stdout:flush()
        bpf.sleep(60)
        print("not killed")]]):format(h.obj("test_mappin"), dir, dir .. "/made")))
      assert.equal("ready", mh.line(writer))
      assert.is_true(mh.running(writer))
      local out, code = mh.finish(writer, "KILL")
      assert.equal(128 + 9, code)
      assert.equal("", out)
      local p = bpf.open_pinned(dir .. "/persist")
      assert.equal(777, p:lookup(7)) -- typed by the object's BTF, held by the kernel
      local made = bpf.open_pinned(dir .. "/made")
      assert.equal("killed", made.name)
      assert.equal(11, made:lookup(1)) -- typed: map_create gave it BTF
      made:update(2, 22)
      -- and the next process reads what we wrote
      local rout, rcode = host(("local m = bpf.open_pinned(%q) print(m:lookup(1), m:lookup(2))")
        :format(dir .. "/made"))
      assert.equal(0, rcode, rout)
      assert.equal("11\t22\n", rout)
      p:close(); made:close()
    end)

    it("bpftool interop: a map made and filled by bpftool is read and updated, and bpftool sees the writes", function()
      local dir, rm = h.tmp_bpffs()
      finally(rm)
      local pin = dir .. "/stats_map"
      local _, st = h.sh(("bpftool map create %s type hash key 2 value 2 entries 8 name stats_map"):format(pin))
      assert.equal(0, st)
      _, st = h.sh(("bpftool map update pinned %s key 0xc1 0xc2 value 0xa1 0xa2"):format(pin))
      assert.equal(0, st)
      local m = bpf.open_pinned(pin)
      assert.equal("stats_map", m.name)
      assert.equal("hash", m.type)
      assert.equal(2, m.key_size)
      assert.equal(2, m.value_size)
      assert.equal(8, m.max_entries)
      assert.equal("\xa1\xa2", m:lookup("\xc1\xc2"))
      assert.equal(1, m:count())
      assert.is_true(m:update("\x01\x02", "\x03\x04"))
      assert.is_true(m:update(0x0605, 0x0807)) -- integers for 2-byte sizes: little endian
      assert.is_true(m:update("\xc1\xc2", "\xb1\xb2", "exist"))
      local dump = h.sh(("bpftool -j map dump pinned %s"):format(pin))
      assert.matches('{"key":%["0x01","0x02"%],"value":%["0x03","0x04"%]}', dump)
      assert.matches('{"key":%["0x05","0x06"%],"value":%["0x07","0x08"%]}', dump)
      assert.matches('{"key":%["0xc1","0xc2"%],"value":%["0xb1","0xb2"%]}', dump)
      assert.matches("Found 3 elements", h.sh(("bpftool map dump pinned %s"):format(pin)))
      m:set_types{key = "u16", value = "u16"}
      assert.equal(0xb2b1, m:lookup(0xc2c1))
      assert.is_true(m:delete(0x0201))
      assert.matches("Found 2 elements", h.sh(("bpftool map dump pinned %s"):format(pin)))
      -- and what bpftool writes after we opened it
      h.sh(("bpftool map update pinned %s key 0x10 0x00 value 0x20 0x00"):format(pin))
      assert.equal(0x20, m:lookup(0x10))
      m:close()
    end)
  end)
end)
