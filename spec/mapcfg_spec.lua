local h = require "helper"
local bpf = require "bpfhost"
local pkt = require "bpfhost.packet"

-- What the kernel says about a map, from bpftool.
local function kernel_map(id)
  return h.sh("bpftool map show id " .. id)
end

describe("map settings before load", function()
  context("arguments", function()
    local o
    before_each(function() o = bpf.open(h.obj("test_mapcfg")) end)
    after_each(function() o:close() end)

    it("change the map's definition and its fields at once", function()
      local m = o:get_map("plain")
      assert.equal(m, m:set_max_entries(3))
      assert.equal(3, m.max_entries)
      assert.equal(m, m:set_type("lru_hash"))
      assert.equal("lru_hash", m.type)
      assert.equal(m, m:set_flags("no_common_lru"))
      assert.equal(2, m.flags)
      m:set_flags(0)
      assert.equal(0, m.flags)
      assert.equal(m, m:set_pin_path(nil))
    end)

    it("reject bad values before anything else", function()
      local m = o:get_map("plain")
      local cases = {
        {m.set_max_entries, m, 0, "set_max_entries: max_entries must be an integer in [1, 4294967295], got 0"},
        {m.set_max_entries, m, 1.5, "set_max_entries: max_entries must be an integer in [1, 4294967295], got 1.5"},
        {m.set_type, m, "hashy", "set_type map 'plain': unknown map type 'hashy' (e.g. \"hash\", \"lru_hash\", \"percpu_array\")"},
        {m.set_type, m, 9999, "set_type map 'plain': unknown map type 9999"},
        {m.set_flags, m, "no_prealloc|fast", "set_flags map 'plain': unknown flag 'fast' (no_prealloc, no_common_lru, numa_node, rdonly, wronly, stack_build_id, zero_seed, rdonly_prog, wronly_prog, clone, mmapable, preserve_elems, inner_map)"},
        {m.set_pin_path, m, "relative/path", "set_pin_path map 'plain': 'relative/path' is not an absolute path on bpffs"},
        {m.set_max_entries, 42, 1, "bad argument #1 to '?' (bpfhost.map expected, got number (call it as m:set_max_entries(...)))"},
      }
      for _, c in ipairs(cases) do
        local err = h.raises(c[1], c[2], c[3])
        assert.equal(c[4], (err:gsub("to '[^']*'", "to '?'")))
      end
      assert.equal(64, m.max_entries)
      assert.equal("hash", m.type)
    end)

    it("set_inner_map is for maps of maps only", function()
      local m = o:get_map("plain")
      local other = o:get_map("outer")
      -- the argument must be a live map: one of a loaded object, or made by bpf.map_create
      assert.matches("not loaded yet", h.raises(m.set_inner_map, m, other))
    end)
  end)

  context("lifetime", function()
    it("are refused once the object is closed", function()
      local o = bpf.open(h.obj("test_mapcfg"))
      local m = o:get_map("plain")
      o:close()
      assert.equal("set_max_entries map 'plain': its object is closed", h.raises(m.set_max_entries, m, 4))
    end)
  end)

  context("#root kernel", function()
    it("are refused after load, and on maps without an object", function()
      local o = bpf.open(h.obj("test_mapcfg"))
      o:get_map("outer"):set_inner_map(bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 1})
      o:load()
      local m = o:get_map("plain")
      assert.equal("set_max_entries map 'plain': the object is already loaded (map settings apply before obj:load())",
        h.raises(m.set_max_entries, m, 4))
      assert.equal("reuse map 'plain': the object is already loaded (map settings apply before obj:load())",
        h.raises(m.reuse, m, m))
      o:close()
      local lone = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 4}
      assert.equal("set_type map '" .. lone.name .. "': only maps of an object that is open and not yet loaded can be configured",
        h.raises(lone.set_type, lone, "array"))
      lone:close()
    end)

    it("max_entries, type and flags reach the kernel", function()
      local o = bpf.open(h.obj("test_mapcfg"))
      local m = o:get_map("plain")
      m:set_max_entries(3)
      m:set_type("lru_hash")
      o:get_map("outer"):set_inner_map(bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 1})
      o:load()
      local shown = kernel_map(m.id)
      assert.matches("lru_hash", shown)
      assert.matches("max_entries 3", shown)
      o:close()

      o = bpf.open(h.obj("test_mapcfg"))
      m = o:get_map("plain")
      m:set_max_entries(2)
      m:set_flags("no_prealloc")
      o:get_map("outer"):set_inner_map(bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 1})
      o:load()
      assert.matches("flags 0x1", kernel_map(m.id))
      assert.is_true(m:update(1, 1))
      assert.is_true(m:update(2, 2))
      local err = h.raises(m.update, m, 3, 3)
      assert.equal("E2BIG", err.code) -- full at 2
      o:close()
    end)

    it("set_inner_map gives a map of maps its inner map; the program uses it", function()
      local inner = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 1, name = "bh_inner"}
      local o = bpf.open(h.obj("test_mapcfg"))
      local outer = o:get_map("outer")
      local err = h.raises(o:get_map("plain").set_inner_map, o:get_map("plain"), inner)
      assert.equal("set_inner_map map 'plain': a hash map holds no maps (array_of_maps and hash_of_maps do)", err)
      outer:set_inner_map(inner)
      o:load()
      assert.is_true(outer:update(0, inner))
      o:program("bump"):test_run{data = pkt.udp{}, ["repeat"] = 4}
      assert.equal(4, inner:lookup(0))
      assert.equal(4, o:get_map("plain"):lookup(1))
      o:close()
      inner:close()
    end)

    it("without its inner map, a map of maps fails to load with a clear error", function()
      local o = bpf.open(h.obj("test_mapcfg"))
      local err = h.raises(o.load, o)
      assert.equal("load", err.op)
      assert.matches("outer", err.message)
      o:close()
    end)

    it("reuse shares a map with another object, by handle or by pin", function()
      local dir, cleanup = h.tmp_bpffs()
      local ok, e = pcall(function()
        local inner = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 1}
        local a = bpf.open(h.obj("test_mapcfg"))
        a:get_map("outer"):set_inner_map(inner)
        a:get_map("plain"):set_pin_path(dir .. "/plain")
        a:load()
        assert.equal(0, select(2, h.sh("test -e " .. dir .. "/plain")))
        local b = bpf.open(h.obj("test_mapcfg"))
        b:get_map("outer"):set_inner_map(inner)
        b:get_map("plain"):reuse(a:get_map("plain"))
        b:load()
        local c = bpf.open(h.obj("test_mapcfg"))
        c:get_map("outer"):set_inner_map(inner)
        c:get_map("plain"):reuse(dir .. "/plain")
        c:load()
        a:get_map("plain"):update(7, 70)
        assert.equal(70, b:get_map("plain"):lookup(7))
        assert.equal(70, c:get_map("plain"):lookup(7))
        b:program("bump"):test_run{data = pkt.udp{}}
        c:program("bump"):test_run{data = pkt.udp{}}
        assert.equal(2, a:get_map("plain"):lookup(1))
        assert.equal(a:get_map("plain").id, b:get_map("plain").id)
        -- a set_pin_path map that exists already is reused too
        local d = bpf.open(h.obj("test_mapcfg"))
        d:get_map("outer"):set_inner_map(inner)
        d:get_map("plain"):set_pin_path(dir .. "/plain")
        d:load()
        assert.equal(a:get_map("plain").id, d:get_map("plain").id)
        local err = h.raises(d:get_map("plain").reuse, bpf.open(h.obj("test_mapcfg")):get_map("plain"), dir .. "/none")
        assert.equal("reuse map 'plain': nothing pinned at '" .. dir .. "/none' (ENOENT)", err.message)
        for _, x in ipairs{a, b, c, d} do x:close() end
        inner:close()
      end)
      cleanup()
      assert(ok, e)
    end)
  end)
end)
