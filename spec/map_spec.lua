local h = require "helper"
local bpf = require "bpfhost"

describe("map", function()
  context("arguments", function()
    it("methods called on something else name the problem", function()
      local o = bpf.open(h.obj("test_maps"))
      local m = o:get_map("u32_u64")
      assert.matches("bad argument #1 to '%?' %(bpfhost.map expected, got table %(call it as m:lookup",
        h.raises(m.lookup, {}, 1))
      assert.matches("bpfhost.map expected, got no value", h.raises(m.update))
      o:close()
    end)
  end)

  context("#root kernel", function()
    local o, m, ns
    before_each(function()
      o = bpf.load(h.obj("test_maps"))
      m = o:get_map("u32_u64")
      ns = o:get_map("name_stats")
    end)
    after_each(function() o:close() end)

    it("has its properties as fields", function()
      assert.equal("u32_u64", m.name)
      assert.equal("hash", m.type)
      assert.equal(4, m.key_size)
      assert.equal(8, m.value_size)
      assert.equal(4096, m.max_entries)
      assert.equal(0, m.flags)
      assert.is_true(m.fd >= 0)
      assert.is_number(m.id)
      assert.matches("^map 'u32_u64' hash u32%->u64 max 4096 fd %d+$", tostring(m))
    end)

    it("update, lookup and delete", function()
      assert.is_true(m:update(7, 700))
      assert.equal(700, m:lookup(7))
      assert.is_true(m:update(7, 701))
      assert.equal(701, m:lookup(7))
      assert.is_true(m:delete(7))
      assert.is_nil(m:lookup(7))
    end)

    it("absent keys: lookup gives nil, delete gives false", function()
      assert.is_nil(m:lookup(12345))
      assert.is_false(m:delete(12345))
    end)

    it("noexist and exist return false when the condition is not met", function()
      assert.is_true(m:update(1, 10, "noexist"))
      assert.is_false(m:update(1, 11, "noexist"))
      assert.equal(10, m:lookup(1))
      assert.is_true(m:update(1, 12, "exist"))
      assert.equal(12, m:lookup(1))
      assert.is_false(m:update(2, 13, "exist"))
      assert.is_nil(m:lookup(2))
      assert.is_true(m:update(2, 14, "any"))
      assert.is_true(m:update(3, 1, 0))
      assert.is_false(m:update(3, 1, 1)) -- BPF_NOEXIST as an integer
    end)

    it("unknown or contradictory flags are errors, before any syscall", function()
      assert.equal("update map 'u32_u64': unknown flag 'bogus' (any, noexist, exist, lock)",
        h.raises(m.update, m, 1, 2, "bogus"))
      assert.equal("update map 'u32_u64': flags 'noexist' and 'exist' exclude each other",
        h.raises(m.update, m, 1, 2, "noexist|exist"))
      assert.is_nil(m:lookup(1))
    end)

    it("range-checks integer keys and values", function()
      assert.equal("update map 'u32_u64': key: -1 is negative for an unsigned field",
        h.raises(m.update, m, -1, 1))
      assert.equal("update map 'u32_u64': key: 4294967296 does not fit u32 (0..4294967295)",
        h.raises(m.update, m, 2^32, 1))
      assert.equal("update map 'u32_u64': value: 1.5 is not an integer",
        h.raises(m.update, m, 1, 1.5))
      assert.equal("update map 'u32_u64': key: expected an integer, got table",
        h.raises(m.update, m, {}, 1))
      assert.equal("update map 'u32_u64': value missing (use m:delete(key) to remove)",
        h.raises(m.update, m, 1))
      local small = o:get_map("small")
      assert.is_true(small:update(-32768, 255))
      assert.equal(255, small:lookup(-32768))
      assert.equal("update map 'small': key: 32768 does not fit s16 (-32768..32767)",
        h.raises(small.update, small, 32768, 1))
      assert.equal("update map 'small': value: 256 does not fit u8 (0..255)",
        h.raises(small.update, small, 1, 256))
    end)

    it("char[N] keys are strings, NUL-padded, too long is an error", function()
      assert.is_true(ns:update("eth0", {packets = 3, bytes = 4, comm = "bash"}))
      local v = ns:lookup("eth0")
      assert.same({packets = 3, bytes = 4, flags = 0, comm = "bash"}, v)
      assert.is_true(ns:update(string.rep("x", 16), {}))
      assert.same({packets = 0, bytes = 0, flags = 0, comm = ""}, ns:lookup(string.rep("x", 16)))
      assert.equal("update map 'name_stats': key: 17 bytes do not fit char[16]",
        h.raises(ns.update, ns, string.rep("x", 17), {}))
      assert.equal("lookup map 'name_stats': key: 20 bytes do not fit char[16]",
        h.raises(ns.lookup, ns, string.rep("y", 20)))
      assert.equal("update map 'name_stats': value: unknown field 'pakets' (struct stats has packets, bytes, flags, comm)",
        h.raises(ns.update, ns, "x", {pakets = 1}))
    end)

    it("maps without BTF take exact-size byte strings (or integers)", function()
      local s = o:get_map("sized")
      assert.is_true(s:update("abcdef", "\1\2\3\4"))
      assert.equal("\1\2\3\4", s:lookup("abcdef"))
      assert.is_true(s:update("abcdeg", 7))
      assert.equal("\7\0\0\0", s:lookup("abcdeg"))
      assert.equal("update map 'sized': key: 3 bytes given, this map takes exactly 6 (no BTF: give a byte string, or set_types)",
        h.raises(s.update, s, "abc", 1))
      assert.equal("update map 'sized': value: 5 bytes given, this map takes exactly 4 (no BTF: give a byte string, or set_types)",
        h.raises(s.update, s, "abcdef", "12345"))
    end)

    it("raw option gives and takes bytes", function()
      m:update(5, 0x0102)
      assert.equal("\2\1\0\0\0\0\0\0", m:lookup("\5\0\0\0", {raw = true}))
      assert.is_true(m:update("\6\0\0\0", "\9\0\0\0\0\0\0\0", {raw = true}))
      assert.equal(9, m:lookup(6))
      assert.equal("lookup: unknown option 'rw' (known: raw, flags)", h.raises(m.lookup, m, 1, {rw = true}))
    end)

    it("iterates over 1000+ entries, each once", function()
      for i = 1, 1500 do m:update(i, i * 3) end
      local seen, n = {}, 0
      local it, st = m:iterate()
      for k, v in it, st do
        assert.is_nil(seen[k], "key yielded twice: " .. k)
        seen[k] = true
        assert.equal(k * 3, v)
        n = n + 1
      end
      assert.equal(1500, n)
      assert.is_true(st.complete)
      assert.equal(1500, st.count)
    end)

    it("iterate works in a generic for, also with small chunks and deletes inside", function()
      for i = 1, 300 do m:update(i, i) end
      local n = 0
      for k in m:iterate{chunk = 7} do
        n = n + 1
        assert.is_true(m:delete(k))
      end
      assert.equal(300, n)
      assert.is_nil(m:lookup(1))
      local empty = 0
      for _ in m:iterate() do empty = empty + 1 end
      assert.equal(0, empty)
    end)

    it("iterate stops early with complete = false when broken off", function()
      for i = 1, 50 do m:update(i, i) end
      local it, st = m:iterate()
      for _ in it, st do break end
      assert.is_false(st.complete)
    end)

    it("per-CPU values are arrays, one per possible CPU", function()
      local pc = o:get_map("pcpu")
      local ncpu = tonumber((h.sh("nproc --all")))
      assert.is_true(pc:update(1, 5))
      local v = pc:lookup(1)
      assert.equal(ncpu, #v)
      for i = 1, #v do assert.equal(5, v[i]) end
      assert.equal(5 * ncpu, bpf.sum(v))
    end)

    it("64-bit values beyond 2^53 are lossless", function()
      local big = require("ffi").new("uint64_t", 2) ^ 0 -- warm ffi
      assert.is_true(m:update(1, "18446744073709551615"))
      local v = m:lookup(1)
      assert.equal("cdata", type(v))
      assert.equal("18446744073709551615ULL", tostring(v))
      assert.is_true(m:update(2, v))
      assert.equal(v, m:lookup(2))
      assert.equal(2^53, m:lookup(m:update(3, 2^53) and 3))
    end)

    it("key_type and value_type are Types", function()
      assert.equal("u32", tostring(m:key_type()))
      assert.equal("struct stats", ns:value_type().name)
      assert.matches("^struct stats {\n\tu64 packets;\n", tostring(ns:value_type()))
      assert.equal(40, ns:value_type().size)
    end)
  end)

  context("#root lifetime", function()
    it("use after close of the map raises, never crashes", function()
      local o = bpf.load(h.obj("test_maps"))
      local m = o:get_map("u32_u64")
      assert.is_true(m:close())
      assert.is_true(m:close())
      assert.equal("lookup map 'u32_u64': map is closed", h.raises(m.lookup, m, 1))
      assert.equal("map 'u32_u64' (closed)", tostring(m))
      assert.is_true(o:get_map("u32_u64"):update(1, 1))
      o:close()
    end)

    it("use after close of the object raises, never crashes", function()
      local o = bpf.load(h.obj("test_maps"))
      local m = o:get_map("u32_u64")
      m:update(1, 2)
      o:close()
      assert.equal("lookup map 'u32_u64': its object is closed", h.raises(m.lookup, m, 1))
      assert.equal("update map 'u32_u64': its object is closed", h.raises(m.update, m, 1, 1))
      assert.equal("delete map 'u32_u64': its object is closed", h.raises(m.delete, m, 1))
      assert.equal("map 'u32_u64' (object closed)", tostring(m))
    end)

    it("a map handle keeps its object alive after the object variable is dropped", function()
      local m
      do
        local o = bpf.load(h.obj("test_maps"))
        m = o:get_map("u32_u64")
      end
      collectgarbage(); collectgarbage()
      assert.is_true(m:update(9, 99))
      assert.equal(99, m:lookup(9))
      m = nil
      collectgarbage(); collectgarbage()
    end)

    it("closing the map during iteration is an error at the next chunk", function()
      local o = bpf.load(h.obj("test_maps"))
      local m = o:get_map("u32_u64")
      for i = 1, 100 do m:update(i, i) end
      local it, st = m:iterate{chunk = 10}
      it(st)
      o:close()
      local err
      for _ = 1, 20 do
        local ok, e = pcall(it, st)
        if not ok then err = e break end
      end
      assert.equal("iterate map 'u32_u64': map was closed during iteration", err)
    end)
  end)
end)
