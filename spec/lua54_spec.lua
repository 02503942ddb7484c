-- Lua 5.4: what differs from LuaJIT (README, "Lua 5.4"), in a Lua 5.4
-- process: 64-bit values as native integers (the codec checked against
-- string.pack, where codec_spec has LuaJIT's FFI as its oracle), <close>,
-- __pairs, __name in messages, and errors leaving C waits (no unwinding in
-- 5.4: what they must undo is closed by to-be-closed slots, BH_SCOPE).
-- It is 5.4 code (<close>, integer division): make test runs it under Lua
-- 5.4 only.
local h = require "helper"
local r = require "ringhelp"
local bpf = require "bpfhost"


-- eventpoll fds this process holds (bpf.poll, bpf.run and every wait make one)
local function epoll_fds()
  return select(2, h.sh("ls -l /proc/" .. h.pid() .. "/fd"):gsub("%[eventpoll%]", ""))
end

-- Whether the kernel holds the link with this id (other runs may hold links
-- of the same program: look at this one only).
local function has_link(id)
  for _, e in ipairs(bpf.links()) do
    if e.id == id then return true end
  end
  return false
end

describe("lua 5.4", function()
  context("arguments", function()
    it("is Lua 5.4, with the module built for it", function()
      assert.equal("Lua 5.4", _VERSION)
      assert.is_nil(jit)
      assert.matches("5%.4/bpfhost%.so$", package.searchpath("bpfhost", package.cpath))
      assert.matches("^%d+%.%d+%.%d+$", bpf._VERSION)
    end)

    it("names values by their __name in argument errors", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "u32", max_entries = 2}
      finally(function() m:close() end)
      -- lauxlib's own checks use __name under 5.4, and so do bpfhost's
      assert.equal("bad argument #1 to 'bpfhost.map_by_id' (number expected, got bpfhost.map)",
        h.raises(bpf.map_by_id, m))
      assert.equal("bad argument #1 to 'bpfhost.ringbuf' (bpfhost.map expected, got bpfhost.type)",
        h.raises(bpf.ringbuf, m:key_type()))
      assert.matches("bpfhost.map expected, got bpfhost.type %(call it as m:lookup", h.raises(m.lookup, m:key_type(), 1))
    end)

    it("has no FFI halves: their modules give nothing", function()
      for _, name in ipairs{"mapops", "ringview", "mmapview"} do
        assert.is_true(require("bpfhost." .. name), name) -- the loader returned nil
      end
      assert.is_table(require("bpfhost.pretty")) -- the others load
    end)

    it("codec errors show integers as integers", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "s64", max_entries = 2, name = "e"}
      finally(function() m:close() end)
      assert.equal("update map 'e': value: 9223372036854775808 does not fit s64 " ..
        "(-9223372036854775808..9223372036854775807)", h.raises(m.update, m, 1, "9223372036854775808"))
      assert.equal("update map 'e': key: 4294967296 does not fit u32 (0..4294967295)",
        h.raises(m.update, m, 1 << 32, 1))
      assert.equal("update map 'e': value: 1.5 is not an integer", h.raises(m.update, m, 1, 1.5))
      assert.equal("update map 'e': value: 1e+300 does not fit s64", h.raises(m.update, m, 1, 1e300))
    end)
  end)

  context("#root kernel", function()
    local o
    before_each(function() o = bpf.load(h.obj("test_codec")) end)
    after_each(function() o:close() end)

    it("64-bit keys and values are integers over the whole range, both ways", function()
      local m = o:get_map("ints64") -- s64 -> u64
      local rows = {
        {math.mininteger, 0}, {math.maxinteger, -1}, {-1, math.mininteger}, {0, math.maxinteger},
        {9007199254740993, 9007199254740993}, -- 2^53 + 1: beyond a double
      }
      for _, row in ipairs(rows) do
        local k, v = row[1], row[2]
        assert.is_true(m:update(k, v))
        local got = m:lookup(k)
        assert.equal("integer", math.type(got))
        assert.equal(v, got)
        assert.equal(string.pack("<I8", v), m:lookup(string.pack("<i8", k), {raw = true}))
      end
      -- a u64 beyond 2^63 is the integer with the same 64 bits: -1 is 2^64 - 1
      assert.is_true(m:update(1, "18446744073709551615"))
      assert.equal(-1, m:lookup(1))
      assert.equal("0xffffffffffffffff", ("0x%x"):format(m:lookup(1)))
      assert.is_true(math.ult(math.maxinteger, m:lookup(1)))
      -- whole floats are taken; what comes back is an integer
      assert.is_true(m:update(2, 2.0 ^ 40))
      assert.equal("integer", math.type(m:lookup(2)))
      assert.equal(1 << 40, m:lookup(2))
      local seen = 0
      for k, v in m:iterate() do
        assert.equal("integer", math.type(k))
        assert.equal("integer", math.type(v))
        seen = seen + 1
      end
      assert.equal(#rows + 2, seen)
    end)

    it("a 64-bit unsigned enum beyond 2^63 reads as a negative integer and is taken back so", function()
      local T = o:type("enum wide")
      assert.equal(8, T.size)
      local bytes = string.pack("<I8", -1 << 4)
      local v = T:decode(bytes)
      assert.equal(-16, v)
      assert.equal(bytes, T:encode(v))
    end)

    it("a struct of every scalar kind has the bytes string.pack lays out", function()
      local m, T = o:get_map("scalars"), o:type("struct scalars")
      local v = {i8 = -128, u8v = 255, i16 = -32768, u16v = 65535, i32 = -2147483648, u32v = 4294967295,
        i64 = math.mininteger, u64v = -1, flag = true, f32 = 1.5, f64 = -0.25, color = 300, delta = 7,
        tiny = 200, wide = 1, ptr = 0x1000, cstr = 0xffff800000000000, cv = 3, td = 4, rp = 8}
      -- natural alignment ("!8"), then the struct's own to 8
      local fmt = "<!8 i1 I1 i2 I2 i4 I4 i8 I8 B f d I4 I4 B I8 I8 I8 I4 I4 I8 Xi8"
      local want = string.pack(fmt, v.i8, v.u8v, v.i16, v.u16v, v.i32, v.u32v, v.i64, v.u64v, 1, v.f32,
        v.f64, v.color, v.delta, v.tiny, v.wide, v.ptr, v.cstr, v.cv, v.td, v.rp)
      assert.equal(T.size, #want)
      assert.equal(want, T:encode(v))
      assert.is_true(m:update(1, v))
      assert.equal(want, m:lookup(string.pack("<I4", 1), {raw = true}))
      local got = m:lookup(1)
      for k, x in pairs(v) do
        assert.equal(x, got[k], k)
        if math.type(x) == "integer" then assert.equal("integer", math.type(got[k]), k) end
      end
      assert.equal("float", math.type(got.f32))
      assert.same(got, T:decode(want))
    end)

    it("unions and padding: the bytes string.pack gives, read back as integers", function()
      local u = o:get_map("unions")
      assert.is_true(u:update(1, {u = -1}))
      local got = u:lookup(1)
      assert.same({-1, -1, string.rep("\255", 8), 4294967295, 4294967295},
        {got.u, got.s, got.bytes, got.parts.lo32, got.parts.hi32})
      assert.is_true(u:update(2, {parts = {lo32 = 1, hi32 = 2}}))
      assert.equal(0x200000001, u:lookup(2).u)
      assert.equal(string.pack("<I4I4", 1, 2), u:lookup(string.pack("<I4", 2), {raw = true}))
      local p = o:get_map("paddeds")
      assert.is_true(p:update({a = 1, b = 2, c = 3}, {a = 4, b = -1, c = 5, d = true}))
      assert.equal(string.pack("<!8 I1 I8 I2 B Xi8", 4, -1, 5, 1),
        p:lookup(string.pack("<!4 I1 I4 I2 Xi4", 1, 2, 3), {raw = true}))
    end)

    it("per-CPU values and bpf.sum stay integers", function()
      local m, n = o:get_map("pc_u64"), h.possible_cpus()
      assert.is_true(m:update(1, 1 << 40))
      local v = m:lookup(1)
      assert.equal(n, #v)
      for i = 1, n do assert.equal("integer", math.type(v[i])) end
      assert.equal(n << 40, bpf.sum(v))
      assert.equal("integer", math.type(bpf.sum(v)))
    end)

    it("pairs(proxy) and pairs(globals) go through __pairs", function()
      local m = o:get_map("ints32")
      m:update(-5, 5)
      m:update(7, 70)
      local t = {}
      for k, v in pairs(m:proxy()) do t[k] = v end
      assert.same({[-5] = 5, [7] = 70}, t)
      local g = bpf.load(h.obj("test_globals"))
      finally(function() g:close() end)
      local names = {}
      for k, val in pairs(g.data) do names[k] = val end
      assert.equal(5, names.total)
      assert.equal("extra", g:globals(".data.extra").extra_name)
    end)
  end)

  context("#root lifetime", function()
    it("local x <close> closes objects, maps, buffers and links when the block ends", function()
      local keep = {}
      do
        local obj <close> = bpf.load(h.obj("test_ring"))
        local ring <close> = bpf.ringbuf(obj:get_map("ring"))
        local m <close> = bpf.map_create{type = "hash", key = "u32", value = "u32", max_entries = 2, name = "cl"}
        local link <close> = obj:program("ring_tp_getppid"):attach()
        assert.is_true(has_link(link:info().id))
        keep = {obj = obj, ring = ring, m = m, link = link, id = link:info().id}
      end
      assert.is_false(has_link(keep.id))
      assert.matches("%(closed%)", tostring(keep.ring))
      assert.matches("%(closed%)", tostring(keep.m))
      assert.equal("lookup map 'cl': map is closed", h.raises(keep.m.lookup, keep.m, 1))
      assert.matches("closed", h.raises(keep.obj.get_map, keep.obj, "ring"))
      assert.is_true(keep.obj:close()) -- and close stays idempotent
    end)

    it("<close> runs when an error leaves the block", function()
      local obj
      local ok, err = pcall(function()
        local o <close> = bpf.load(h.obj("test_ring"))
        obj = o
        error("boom", 0)
      end)
      assert.is_false(ok)
      assert.equal("boom", err)
      assert.matches("closed", h.raises(obj.get_map, obj, "ring"))
    end)

    it("an error out of a handler leaves nothing behind in the wait it left", function()
      local o <close> = bpf.load(h.obj("test_ring"))
      local rb <close> = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
      local before = epoll_fds()
      for _, wait in ipairs{
        function(fn) return rb:poll(0, fn) end,
        function(fn) return bpf.poll({{rb, fn}}, 0) end,
        function(fn) return bpf.run{sources = {{rb, fn}}, timeout = 1} end,
      } do
        r.emit(o, "emit", 3)
        local err = h.raises(wait, function() error("boom", 0) end)
        assert.equal("boom", err)
        -- the buffer is no longer being polled, the object no longer busy
        local rest = {}
        assert.equal(2, rb:poll(0, function(e) rest[#rest + 1] = e.seq end))
        assert.equal(0, #r.drain(rb))
      end
      assert.equal(before, epoll_fds())
      -- and closing the object is allowed again
      local o2 = bpf.load(h.obj("test_ring"))
      local rb2 = bpf.ringbuf(o2:get_map("ring"))
      r.emit(o2, "emit", 1)
      assert(not pcall(rb2.poll, rb2, 0, function() error("x") end))
      assert.is_true(o2:close())
      rb2:close()
    end)

    it("a ring whose adding fails half-way leaves the consumer as it was", function()
      local o <close> = bpf.load(h.obj("test_ring"))
      local rb <close> = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
      assert.matches("no type 'struct nope'", h.raises(rb.add, rb, o:get_map("ring2"), {type = "struct nope"}))
      r.emit(o, "emit", 2)
      r.emit(o, "emit2", 2)
      assert.equal(2, #r.drain(rb))
      assert.same({ring = {records = 2, lost = 0, lost_map = "ring_lost"}}, rb:stats())
      assert.equal(rb, rb:add(o:get_map("ring2")))
      assert.equal(2, #r.drain(rb))
    end)
  end)

  context("#root signals", function()
    it("after bpf.run raised, lua5.4's own SIGINT handling is back", function()
      local pid, path = r.start(([[
        package.cpath = %q .. package.cpath
        local bpf = require "bpfhost"
        assert(not pcall(bpf.run, {every = 0.001, tick = function() error("boom") end}))
        print("ready"); io.stdout:flush()
        local t = os.time()
        while os.time() - t < 20 do end
        print("not interrupted")]]):format(h.lib .. "/?.so;"), "lua5.4")
      finally(function() r.kill(pid) end)
      r.wait_for(path, "ready")
      local rc, ms, out = r.signal_and_wait(pid, path, "INT")
      assert.equal(1, rc, out) -- lua.c: "interrupted!" is an error
      assert.is_true(ms < 1000, ms)
      assert.not_matches("not interrupted", out)
      assert.matches("interrupted!", out)
    end)

    it("SIGINT ends bpf.run as \"interrupted\"", function()
      local pid, path = r.start(([[
        package.cpath = %q .. package.cpath
        local bpf = require "bpfhost"
        local n = 0
        local why = bpf.run{every = 0.01, tick = function()
          n = n + 1
          if n == 2 then print("ready"); io.stdout:flush() end
        end}
        print(why)]]):format(h.lib .. "/?.so;"), "lua5.4")
      finally(function() r.kill(pid) end)
      r.wait_for(path, "ready")
      local rc, ms, out = r.signal_and_wait(pid, path, "INT")
      assert.equal(0, rc, out)
      assert.is_true(ms < 1000, ms)
      assert.matches("interrupted", out)
    end)
  end)
end)
