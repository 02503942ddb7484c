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
      assert.equal("lookup: unknown option 'rw' (known: raw, flags, into)", h.raises(m.lookup, m, 1, {rw = true}))
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

    it("lookup with into sets the value's fields in the caller's table, and returns it", function()
      assert.is_true(ns:update("eth0", {packets = 3, bytes = 4, flags = 1, comm = "bash"}))
      local t = {packets = 99, note = "kept"}
      local opts = {into = t}
      -- many times: under LuaJIT the compiled fast path, not only the first call's
      for _ = 1, 300 do assert.equal(t, ns:lookup("eth0", opts)) end
      assert.same({packets = 3, bytes = 4, flags = 1, comm = "bash", note = "kept"}, t)
      -- absent: nil, the table untouched
      t.packets = 7
      for _ = 1, 300 do assert.is_nil(ns:lookup("nope", opts)) end
      assert.equal(7, t.packets)
      -- per-CPU: element i for CPU i-1, the same table each time
      local pc = o:get_map("pcpu")
      assert.is_true(pc:update(1, 5))
      local a = {}
      for _ = 1, 300 do assert.equal(a, pc:lookup(1, {into = a})) end
      assert.same(pc:lookup(1), a)
      -- per-CPU structs: into the tables already at t[i], new ones elsewhere
      local bo = bpf.load(h.obj("bench_codec"))
      local ps = bo:get_map("pc_cpu")
      assert.is_true(ps:update(3, {packets = 4, drops = 2}))
      local first = {note = "kept"}
      local pt = {first}
      for _ = 1, 300 do assert.equal(pt, ps:lookup(3, {into = pt})) end
      assert.equal(first, pt[1])
      assert.same({packets = 4, bytes = 0, drops = 2, errors = 0, note = "kept"}, first)
      for i = 2, #pt do assert.same({packets = 4, bytes = 0, drops = 2, errors = 0}, pt[i]) end
      local kept = {}
      for i = 1, #pt do kept[i] = pt[i] end
      assert.is_true(ps:update(3, {packets = 5}))
      ps:lookup(3, {into = pt})
      for i = 1, #pt do
        assert.equal(kept[i], pt[i])
        assert.equal(5, pt[i].packets)
      end
      bo:close()
      -- lookup_and_delete too
      local d = {}
      assert.equal(d, ns:lookup_and_delete("eth0", {into = d}))
      assert.equal("bash", d.comm)
      assert.is_nil(ns:lookup("eth0"))
    end)

    it("into: not a table, with raw, on a scalar value, or on other ops is an error", function()
      assert.equal("lookup map 'name_stats': into: expected a table, got number",
        h.raises(ns.lookup, ns, "eth0", {into = 5}))
      assert.equal("lookup map 'name_stats': options 'into' and 'raw' exclude each other (raw values are strings)",
        h.raises(ns.lookup, ns, "eth0", {into = {}, raw = true}))
      assert.equal("lookup map 'u32_u64': option 'into' needs a value that decodes to a table (a struct, union, array or per-CPU value; this map's value is u64, which decodes to a number)",
        h.raises(m.lookup, m, 1, {into = {}}))
      assert.equal("lookup: unknown option 'inot' (known: raw, flags, into)",
        h.raises(ns.lookup, ns, "eth0", {inot = {}}))
      assert.equal("update: unknown option 'into' (known: raw, flags)",
        h.raises(ns.update, ns, "eth0", {}, {into = {}}))
    end)

    it("64-bit values beyond 2^53 are lossless", function()
      if h.luajit then require("ffi").new("uint64_t", 2) end -- warm ffi
      assert.is_true(m:update(1, "18446744073709551615"))
      local v = m:lookup(1)
      if h.luajit then
        assert.equal("cdata", type(v))
        assert.equal("18446744073709551615ULL", tostring(v))
      else
        assert.equal("integer", math.type(v)) -- Lua 5.4: the u64's 64 bits in an integer
        assert.equal(-1, v)
      end
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

-- Every operation on a plain hash (and what is the same for every type).
-- Per-type behaviour: maptypes_spec.lua; maps from outside an object and
-- pins: mapsys_spec.lua.
describe("map operations", function()
  local mh = require "maphelp"

  context("arguments", function()
    it("map_create checks its table before any syscall", function()
      local cases = {
        {{}, "map_create: type is required (\"hash\", \"array\", \"lru_hash\", ...)"},
        {{type = "hsah", key = 4, value = 4, max_entries = 1}, "map_create: unknown map type 'hsah'"},
        {{type = "hash", value = 4, max_entries = 1}, "map_create: key is required (a size, a type name or a Type)"},
        {{type = "hash", key = 4, max_entries = 1}, "map_create: value is required (a size, a type name or a Type)"},
        {{type = "hash", key = 4, value = 4}, "map_create: max_entries is required (and > 0)"},
        {{type = "hash", key = 4, value = 4, max_entries = -1}, "map_create: max_entries must be a non-negative integer"},
        {{type = "hash", key = -4, value = 4, max_entries = 1}, "map_create: key size must be an integer 0..2^30"},
        {{type = "hash", key = {}, value = 4, max_entries = 1}, "map_create: key must be a size, a type name or a Type, got table"},
        {{type = "hash", key = 4, value = 4, max_entries = 1, name = "with space"},
          "map_create: name 'with space': only letters, digits, '_' and '.' are allowed"},
        {{type = "hash", key = 4, value = 4, max_entries = 1, name = string.rep("n", 16)},
          "map_create: name 'nnnnnnnnnnnnnnnn' is longer than 15 characters"},
        {{type = "array", key = 8, value = 4, max_entries = 1}, "map_create: an array map's keys are u32 indexes (key = 4)"},
        {{type = "percpu_array", key = 2, value = 4, max_entries = 1}, "map_create: a percpu_array map's keys are u32 indexes (key = 4)"},
        {{type = "lpm_trie", key = 4, value = 4, max_entries = 1},
          "map_create: an lpm_trie key is u32 prefixlen + address bytes (key = 8 for IPv4, 20 for IPv6)"},
        {{type = "queue", key = 4, value = 4, max_entries = 1}, "map_create: a queue map has no keys (leave key out)"},
        {{type = "ringbuf", key = 4, max_entries = 4096},
          "map_create: a ringbuf map has no keys or values; max_entries is its size in bytes (a power of 2, a multiple of the page size)"},
        {{type = "array_of_maps", key = 4, max_entries = 1},
          "map_create: a array_of_maps map needs inner_map = <a map handle of the inner map's shape>"},
        {{type = "hash", key = 4, value = 4, max_entries = 1, inner_map = 3},
          "map_create: inner_map is only for array_of_maps and hash_of_maps"},
        {{type = "hash", key = 4, value = 4, max_entries = 1, flags = "no_prealloc|bogus"},
          "map_create: unknown flag 'bogus' (no_prealloc, no_common_lru, numa_node, rdonly, wronly, stack_build_id, zero_seed, rdonly_prog, wronly_prog, clone, mmapable, preserve_elems, inner_map)"},
        {{type = "hash", key = 4, value = 4, max_entries = 1, flags = {}},
          "map_create: flags must be a string like \"no_prealloc|mmapable\", got table"},
        {{type = "hash", key = "u33", value = 4, max_entries = 1}, nil},
      }
      for _, c in ipairs(cases) do
        local err = h.raises(bpf.map_create, c[1])
        if c[2] then
          assert.equal(c[2], tostring(err))
        else
          assert.matches("u33", tostring(err))
        end
      end
      assert.matches("unknown option 'kye'", h.raises(bpf.map_create, {type = "hash", kye = 4}))
      assert.matches("table expected, got string", h.raises(bpf.map_create, "hash"))
    end)

    it("lpm_key parses IPv4 and IPv6 prefixes, and says what is wrong", function()
      assert.same({prefixlen = 16, data = "\10\1\0\0"}, bpf.lpm_key("10.1.0.0/16"))
      assert.same({prefixlen = 32, data = "\192\168\1\1"}, bpf.lpm_key("192.168.1.1"))
      assert.same({prefixlen = 32, data = "\32\1\13\184" .. string.rep("\0", 12)}, bpf.lpm_key("2001:db8::/32"))
      assert.same({prefixlen = 0, data = string.rep("\0", 16)}, bpf.lpm_key("::/0"))
      assert.equal("lpm_key: '10.1.0.0/33' has a bad prefix length (0..32)", h.raises(bpf.lpm_key, "10.1.0.0/33"))
      assert.equal("lpm_key: '::/129' has a bad prefix length (0..128)", h.raises(bpf.lpm_key, "::/129"))
      assert.equal("lpm_key: '10.1.0.0/x' has a bad prefix length (0..32)", h.raises(bpf.lpm_key, "10.1.0.0/x"))
      assert.equal("lpm_key: 'example.com/8' is not an IPv4 or IPv6 address", h.raises(bpf.lpm_key, "example.com/8"))
      assert.equal("lpm_key: '/8' is not an address", h.raises(bpf.lpm_key, "/8"))
    end)

    it("map_by_id wants a positive integer", function()
      for _, bad in ipairs{0, -1, 1.5, 2^32} do
        assert.matches("a map id %(a positive integer%)", h.raises(bpf.map_by_id, bad))
      end
      assert.matches("number expected, got string", h.raises(bpf.map_by_id, "x"))
    end)

    it("#root flags, options and keys are checked before any syscall", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8, name = "args"}
      assert.equal("update map 'args': unknown flag 'exists' (any, noexist, exist, lock)",
        h.raises(m.update, m, 1, 1, "exists"))
      assert.equal("update map 'args': unknown flag '' (any, noexist, exist, lock)",
        h.raises(m.update, m, 1, 1, "any|"))
      assert.equal("update map 'args': flags must be a name or a non-negative integer",
        h.raises(m.update, m, 1, 1, -1))
      assert.equal("update map 'args': flags must be a string or an integer, got boolean",
        h.raises(m.update, m, 1, 1, true))
      assert.equal("update_batch map 'args': unknown flag 'nope' (any, noexist, exist, lock)",
        h.raises(m.update_batch, m, {{1, 1}}, "nope"))
      assert.equal("lookup: unknown option 'flag' (known: raw, flags, into)", h.raises(m.lookup, m, 1, {flag = "lock"}))
      assert.equal("iterate: unknown option 'chunks' (known: raw, chunk)", h.raises(m.iterate, m, {chunks = 8}))
      assert.equal("iterate map 'args': chunk must be an integer 1..65536", h.raises(m.iterate, m, {chunk = 0}))
      assert.equal("drain map 'args': chunk must be an integer 1..65536", h.raises(m.drain, m, {chunk = 1.5}))
      assert.equal("lookup map 'args': key: 5 bytes given, raw takes exactly 4",
        h.raises(m.lookup, m, "12345", {raw = true}))
      assert.equal("update map 'args': value: 4 bytes given, raw takes exactly 8",
        h.raises(m.update, m, "\1\0\0\0", "\1\0\0\0", {raw = true}))
      assert.equal("delete map 'args': key: expected an integer, got boolean", h.raises(m.delete, m, true))
      assert.equal("lookup_batch map 'args': expected a list of keys, got number", h.raises(m.lookup_batch, m, 1))
      assert.equal("delete_batch map 'args': expected a list of keys, got no value", h.raises(m.delete_batch, m))
      assert.equal("update_batch map 'args': element 2: expected {key, value}, got number",
        h.raises(m.update_batch, m, {{1, 1}, 2}))
      assert.equal("update_batch map 'args': element 1 has no value", h.raises(m.update_batch, m, {{1}}))
      assert.equal("update_batch map 'args': key: -1 is negative for an unsigned field",
        h.raises(m.update_batch, m, {{1, 1}, {-1, 1}}))
      -- nothing went in: a batch is encoded before it is written
      assert.equal(0, m:count())
      assert.equal("push map 'args': only queue, stack and bloom_filter maps have push (this is a hash map)",
        h.raises(m.push, m, 1))
      assert.equal("contains map 'args': only queue, stack and bloom_filter maps have contains (this is a hash map)",
        h.raises(m.contains, m, 1))
      assert.equal("mmap map 'args': only array maps made with the mmapable flag can be mapped (this is a hash map)",
        h.raises(m.mmap, m))
      assert.equal("set_types map 'args': key type u64 has 8 bytes, the map's keys have 4",
        h.raises(m.set_types, m, {key = "u64"}))
      assert.equal("set_types: unknown option 'val' (known: key, value)", h.raises(m.set_types, m, {val = "u64"}))
      assert.equal("pin map 'args': the path must be absolute, got 'relative/pin'", h.raises(m.pin, m, "relative/pin"))
      m:close()
    end)
  end)

  context("lifetime", function()
    it("#root a created map lives until its handle is closed or collected", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8, name = "life"}
      local id = m.id
      assert.equal("life", bpf.map_by_id(id).name)
      assert.is_true(m:close())
      assert.is_true(m:close())
      assert.equal("lookup map 'life': map is closed", h.raises(m.lookup, m, 1))
      assert.equal("map 'life' (closed)", tostring(m))
      collectgarbage(); collectgarbage()
      assert.equal("ENOENT", h.raises(bpf.map_by_id, id).code)

      m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8, name = "life"}
      id = m.id
      m = nil
      collectgarbage(); collectgarbage()
      assert.equal("ENOENT", h.raises(bpf.map_by_id, id).code)
    end)

    it("#root a proxy keeps its map alive, and fails cleanly once the map is closed", function()
      local p
      do
        local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8, name = "prox"}
        m:update(1, 10)
        p = m:proxy()
      end
      collectgarbage(); collectgarbage()
      assert.equal(10, p[1])
      p[2] = 20
      assert.equal(2, #p)

      local o = bpf.load(h.obj("test_maps"))
      local q = o:get_map("u32_u64"):proxy()
      q[1] = 1
      o:close()
      assert.matches("lookup map 'u32_u64': its object is closed$", h.raises(function() return q[1] end))
      assert.matches("update map 'u32_u64': its object is closed$", h.raises(function() q[1] = 2 end))
      assert.matches("delete map 'u32_u64': its object is closed$", h.raises(function() q[1] = nil end))
      assert.matches("count map 'u32_u64': its object is closed$", h.raises(function() return #q end))
      assert.equal("proxy of map 'u32_u64'", tostring(q))
      p, q = nil, nil
      collectgarbage(); collectgarbage()
    end)

    it("#root an iterator keeps its map alive; a finished one yields nothing more", function()
      local it, st
      do
        local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 64}
        for i = 1, 40 do m:update(i, i) end
        it, st = m:iterate{chunk = 8}
      end
      collectgarbage(); collectgarbage()
      local n = 0
      for _ in it, st do n = n + 1 end
      assert.equal(40, n)
      assert.is_true(st.complete)
      assert.is_nil(it(st))
      assert.matches("^iteration of map '%(no name%)': 40 seen, complete$", tostring(st))
      it, st = nil, nil
      collectgarbage(); collectgarbage()
    end)

    it("#root a closed map handle fails every method with the same message", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8, name = "shut"}
      m:close()
      for _, op in ipairs{"lookup", "update", "delete", "lookup_and_delete", "iterate", "drain", "count",
          "keys", "dump", "clear", "lookup_batch", "update_batch", "delete_batch", "freeze", "info",
          "pin", "unpin", "proxy", "key_type", "value_type", "push", "pop", "peek", "contains"} do
        assert.equal(op .. " map 'shut': map is closed", h.raises(m[op], m, 1, 1))
      end
      assert.equal("use map 'shut': map is closed", h.raises(m.mmap, m))
    end)
  end)

  context("#root kernel", function()
    local m
    before_each(function()
      m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 16, name = "ops"}
    end)
    after_each(function() m:close() end)

    it("update, lookup, delete: the kernel sees what the script wrote", function()
      assert.is_true(m:update(1, 100))
      assert.equal(100, m:lookup(1))
      -- another handle on the same kernel map sees the same entry, typed by
      -- the BTF map_create gave the map, and as bytes with raw
      local other = bpf.map_by_id(m.id)
      assert.equal(100, other:lookup(1))
      assert.equal("\100\0\0\0\0\0\0\0", other:lookup("\1\0\0\0", {raw = true}))
      other:update("\2\0\0\0", "\200\0\0\0\0\0\0\0", {raw = true})
      assert.equal(200, m:lookup(2))
      assert.is_true(m:delete(1))
      assert.is_nil(other:lookup(1))
      assert.is_false(m:delete(1))
      other:close()
    end)

    it("flags: any, noexist, exist (names, joined names, integers)", function()
      assert.is_true(m:update(1, 1, "noexist"))
      assert.is_false(m:update(1, 2, "noexist"))
      assert.is_false(m:update(1, 2, "any|noexist"))
      assert.equal(1, m:lookup(1))
      assert.is_true(m:update(1, 3, "exist"))
      assert.is_true(m:update(1, 4, " exist "))
      assert.is_false(m:update(9, 3, "exist"))
      assert.is_false(m:update(9, 3, 2))
      assert.is_true(m:update(9, 3, {flags = "noexist"}))
      assert.equal(4, m:lookup(1))
      assert.equal(3, m:lookup(9))
    end)

    it("a full map raises E2BIG with a hint, and keeps what it had", function()
      for i = 1, 16 do assert.is_true(m:update(i, i)) end
      local err = h.raises(m.update, m, 17, 17)
      assert.equal("update", err.op)
      assert.equal("ops", err.name)
      assert.equal("E2BIG", err.code)
      assert.equal(7, err.errno)
      assert.equal("update map 'ops': map is full (E2BIG)", err.message)
      assert.equal(err.message, tostring(err))
      assert.equal("max_entries is 16; delete entries first, or raise max_entries before load", err.hint)
      assert.equal(16, m:count())
      -- replacing an existing key still works on a full map
      assert.is_true(m:update(16, 160))
      assert.equal(160, m:lookup(16))
    end)

    it("lookup_and_delete gives the value and removes it", function()
      m:update(5, 55)
      assert.equal(55, m:lookup_and_delete(5))
      assert.is_nil(m:lookup(5))
      assert.is_nil(m:lookup_and_delete(5))
      m:update(6, 66)
      assert.equal("\66\0\0\0\0\0\0\0", m:lookup_and_delete("\6\0\0\0", {raw = true}))
      assert.equal(0, m:count())
    end)

    it("lookup_batch: values in key order, nil where absent, and how many were found", function()
      m:update(1, 10); m:update(3, 30)
      local values, found = m:lookup_batch{1, 2, 3, 4}
      assert.equal(2, found)
      assert.equal(10, values[1])
      assert.is_nil(values[2])
      assert.equal(30, values[3])
      assert.is_nil(values[4])
      local none, n = m:lookup_batch{}
      assert.same({}, none)
      assert.equal(0, n)
    end)

    it("update_batch takes pairs or a table, and reports noexist/exist skips per key", function()
      assert.equal(3, m:update_batch{{1, 10}, {2, 20}, {3, 30}})
      assert.equal(2, m:update_batch{[4] = 40, [5] = 50})
      assert.same({10, 20, 30, 40, 50}, {m:lookup(1), m:lookup(2), m:lookup(3), m:lookup(4), m:lookup(5)})
      local n, skipped = m:update_batch({{5, 51}, {6, 60}, {1, 11}, {7, 70}}, "noexist")
      assert.equal(2, n)
      assert.same({5, 1}, skipped)
      assert.equal(50, m:lookup(5))
      assert.equal(60, m:lookup(6))
      n, skipped = m:update_batch({{8, 80}, {2, 21}, {9, 90}}, "exist")
      assert.equal(1, n)
      assert.same({8, 9}, skipped)
      assert.equal(21, m:lookup(2))
      assert.is_nil(m:lookup(8))
      assert.equal(0, m:update_batch{})
    end)

    it("update_batch refuses a list of pairs with other keys beside, on both paths", function()
      local msg = "update_batch map 'ops': a list of {key, value} pairs (1) with 1 other keys: give one form, pairs or key = value"
      assert.equal(msg, h.raises(m.update_batch, m, {{1, 1}, [5] = 7}))
      assert.equal(msg, h.raises(m.update_batch, m, {{1, 1}, [5] = 7}, "any"))
      assert.is_nil(m:lookup(1))
      assert.is_nil(m:lookup(5))
    end)

    it("update_batch on a full map raises with err.done and err.key", function()
      for i = 1, 14 do m:update(i, i) end
      local err = h.raises(m.update_batch, m, {{100, 1}, {101, 1}, {102, 1}, {103, 1}})
      assert.equal("E2BIG", err.code)
      assert.equal("update_batch map 'ops': map is full (E2BIG)", err.message)
      assert.equal(2, err.done)
      assert.equal(102, err.key)
      assert.equal("2 elements before this one went through", err.hint)
      assert.equal(1, m:lookup(100))
      assert.equal(1, m:lookup(101))
      assert.is_nil(m:lookup(102))
    end)

    it("update_batch beyond one batch (1024) writes everything", function()
      local big = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 5000}
      local t = {}
      for i = 1, 3000 do t[i] = {i, i * 2} end
      assert.equal(3000, big:update_batch(t))
      assert.equal(3000, big:count())
      assert.equal(6000, big:lookup(3000))
      local keys = {}
      for i = 1, 3000, 2 do keys[#keys + 1] = i end
      keys[#keys + 1] = 99999
      local n, absent = big:delete_batch(keys)
      assert.equal(1500, n)
      assert.same({99999}, absent)
      assert.equal(1500, big:count())
      big:close()
    end)

    it("delete_batch reports the keys that were absent", function()
      m:update_batch{{1, 1}, {2, 2}, {3, 3}}
      local n, absent = m:delete_batch{1, 7, 3, 8}
      assert.equal(2, n)
      assert.same({7, 8}, absent)
      assert.equal(1, m:count())
      assert.equal(1, m:delete_batch{2})
      assert.equal(0, m:count())
    end)

    it("count, keys, dump and clear see what is in the kernel", function()
      assert.equal(0, m:count())
      assert.same({}, m:keys())
      assert.same({}, m:dump())
      for i = 1, 10 do m:update(i, i * i) end
      assert.equal(10, m:count())
      local keys = m:keys()
      table.sort(keys)
      assert.same({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, keys)
      local d = m:dump()
      assert.equal(10, #d)
      for _, e in ipairs(d) do assert.equal(e.key * e.key, e.value) end
      local raw = m:dump{raw = true}
      assert.equal(4, #raw[1].key)
      assert.equal(8, #raw[1].value)
      assert.equal(10, m:clear())
      assert.equal(0, m:count())
      -- bpftool agrees that it is empty
      assert.equal("[]", (h.sh("bpftool -j map dump id " .. m.id):gsub("%s", "")))
    end)

    it("drain yields every element once and leaves the map empty", function()
      for i = 1, 12 do m:update(i, i + 100) end
      local seen, n = {}, 0
      local it, st = m:drain{chunk = 5}
      for k, v in it, st do
        assert.is_nil(seen[k])
        seen[k] = true
        assert.equal(k + 100, v)
        n = n + 1
      end
      assert.equal(12, n)
      assert.is_true(st.complete)
      assert.equal(12, st.count)
      assert.equal(0, m:count())
      assert.matches("^drain of map 'ops': 12 seen, complete$", tostring(st))
    end)

    it("breaking out of a drain drops the rest of the chunk it had removed, nothing beyond", function()
      for i = 1, 16 do m:update(i, i) end
      local it, st = m:drain{chunk = 4}
      for _ in it, st do break end
      assert.equal(1, st.count)
      assert.is_false(st.done)
      local removed = 16 - m:count()
      -- whole hash buckets go per syscall: at least the one handed out, at most a (grown) chunk
      assert.is_true(removed >= 1 and removed <= 8, removed .. " removed")
    end)

    it("iterate with raw = true gives bytes, and deleting inside iterate is safe", function()
      for i = 1, 16 do m:update(i, i) end
      local n = 0
      for k, v in m:iterate{raw = true, chunk = 3} do
        assert.equal(4, #k)
        assert.equal(8, #v)
        if k:byte(1) % 2 == 0 then assert.is_true(m:delete(k:byte(1))) end
        n = n + 1
      end
      assert.equal(16, n)
      assert.equal(8, m:count())
      for k in m:iterate() do assert.equal(1, k % 2) end
    end)

    it("iterate holds constant memory on the Lua side", function()
      local big = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 100000}
      local t = {}
      for i = 1, 100000 do t[i] = {i, i} end
      big:update_batch(t)
      t = nil
      collectgarbage(); collectgarbage()
      collectgarbage("stop")
      local before = collectgarbage("count")
      local it, st = big:iterate()
      local sum = 0
      for k, v in it, st do sum = sum + v end
      local grew = collectgarbage("count") - before
      collectgarbage("restart")
      assert.equal(100000 * 100001 / 2, sum)
      assert.equal(100000, st.count)
      -- one iterator and one chunk (1024 keys and values), not 100000 of anything (KB)
      assert.is_true(grew < 64, "Lua heap grew by " .. grew .. " KB")
      big:close()
    end)

    it("info() has the kernel's view of the map", function()
      m:update(1, 1)
      local i = m:info()
      assert.equal(m.id, i.id)
      assert.equal("ops", i.name)
      assert.equal("hash", i.type)
      assert.equal(4, i.key_size)
      assert.equal(8, i.value_size)
      assert.equal(16, i.max_entries)
      assert.equal(0, i.flags)
      assert.is_false(i.frozen)
      assert.is_true(i.memlock > 0)
      assert.equal("u32", i.key_type)
      assert.equal("u64", i.value_type)
      assert.is_nil(i.pinned)
      -- bpftool reads the same from the kernel
      local out = h.sh("bpftool -j map show id " .. m.id)
      assert.matches('"name":"ops"', out)
      assert.matches('"bytes_memlock":' .. i.memlock, out)

      local o = bpf.load(h.obj("test_maps"))
      local ns = o:get_map("name_stats")
      local ni = ns:info()
      assert.is_true(ni.btf_id > 0)
      assert.is_true(ni.btf_key_type_id > 0)
      assert.is_true(ni.btf_value_type_id > 0)
      assert.equal("char[16]", ni.key_type)
      assert.equal("struct stats", ni.value_type)
      o:close()
    end)

    it("freeze: user-space writes then fail with a clear error, reads still work", function()
      m:update(1, 10)
      assert.is_true(m:freeze())
      assert.is_true(m:info().frozen)
      local err = h.raises(m.update, m, 1, 11)
      assert.equal("EPERM", err.code)
      assert.equal("update map 'ops': map is frozen (read-only for user space) (EPERM)", err.message)
      assert.matches("BPF programs can still write", err.hint)
      assert.equal("delete map 'ops': map is frozen (read-only for user space) (EPERM)",
        tostring(h.raises(m.delete, m, 1)))
      assert.equal("update_batch", h.raises(m.update_batch, m, {{2, 2}}).op)
      assert.equal(10, m:lookup(1))
      assert.equal(1, m:count())
      -- freezing twice: the kernel checks write access first
      assert.equal("freeze map 'ops': map is frozen (read-only for user space) (EPERM)",
        tostring(h.raises(m.freeze, m)))
      assert.matches("frozen", h.sh("bpftool map show id " .. m.id))
    end)

    it("proxy: p[k], p[k] = v, p[k] = nil, #p and pairs, kept apart from the methods", function()
      local p = m:proxy()
      p[1] = 10
      p[2] = 20
      assert.equal(10, m:lookup(1))
      assert.equal(20, p[2])
      assert.is_nil(p[3])
      assert.equal(2, #p)
      p[1] = nil
      assert.is_nil(m:lookup(1))
      p[1] = nil -- deleting an absent key is not an error
      local seen = {}
      for k, v in p:pairs() do seen[k] = v end
      assert.same({[2] = 20}, seen)
      seen = {}
      for k, v in p() do seen[k] = v end
      assert.same({[2] = 20}, seen)
      assert.is_function(p.pairs)
      assert.is_nil(rawget(getmetatable(p), "lookup"))
      assert.matches("update map 'ops': key: 'lookup' is not an integer$", h.raises(function() p.lookup = 1 end))
      assert.matches("update map 'ops': value: 1.5 is not an integer$", h.raises(function() p[1] = 1.5 end))
    end)

    it("integers at the edges of the scalar fast path give the codec's bytes and values", function()
      local s = bpf.map_create{type = "hash", key = "s32", value = "s64", max_entries = 16, name = "edges"}
      local cases = {
        {-2147483648, -2^53, "\0\0\0\128", "\0\0\0\0\0\0\224\255"},
        {2147483647, 2^53, "\255\255\255\127", "\0\0\0\0\0\0\32\0"},
        {-1, -1, "\255\255\255\255", "\255\255\255\255\255\255\255\255"},
        {0, -0.0, "\0\0\0\0", "\0\0\0\0\0\0\0\0"},
      }
      for _, c in ipairs(cases) do
        assert.is_true(s:update(c[1], c[2]))
        assert.equal(c[4], s:lookup(c[3], {raw = true}))
        assert.equal(c[2], s:lookup(c[1]))
        assert.equal("number", type(s:lookup(c[1])))
      end
      -- beyond 2^53: the codec's cdata, both ways
      assert.is_true(s:update(5, -2^53 - 2))
      assert.equal(h.luajit and "-9007199254740994LL" or "-9007199254740994", tostring(s:lookup(5)))
      assert.equal("update map 'edges': key: 2147483648 does not fit s32 (-2147483648..2147483647)",
        h.raises(s.update, s, 2^31, 1))
      assert.equal("update map 'edges': value: 0.5 is not an integer", h.raises(s.update, s, 1, 0.5))
      assert.equal("update map 'edges': key: nan is not an integer", h.raises(s.update, s, 0/0, 1))
      -- numeric strings are the codec's business, and still work
      assert.is_true(s:update("7", "-8"))
      assert.equal(-8, s:lookup(7))
      local u = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 4, name = "uedges"}
      if h.luajit then
        assert.equal("update map 'uedges': value: -1 is negative for an unsigned field", h.raises(u.update, u, 0, -1))
      else -- Lua 5.4 reads a u64 beyond 2^63 as a negative integer, and takes it back
        assert.is_true(u:update(0, -1))
        assert.equal("\255\255\255\255\255\255\255\255", u:lookup(0, {raw = true}))
      end
      assert.equal("update map 'uedges': key: index 4 is out of range (0..3)", h.raises(u.update, u, 4, 1))
      assert.is_true(u:update(3, 2^53 + 2))
      assert.equal(h.luajit and "9007199254740994ULL" or "9007199254740994", tostring(u:lookup(3)))
      s:close(); u:close()
    end)

    it("iterate and drain decode every integer size like lookup does (64-bit edges at 2^53 too)", function()
      local ffi = h.luajit and require "ffi"
      local specs = {
        {"u8", "s8", {0, 255}, {-128, 127}},
        {"u16", "s16", {0, 65535}, {-32768, 32767}},
        {"s32", "u32", {-2147483648, 2147483647}, {0, 4294967295}},
        ffi and {"u64", "s64", {0, 2^53, ffi.new("uint64_t", 2^53) + 1, ffi.new("uint64_t", -1)},
          {-2^53, 2^53, ffi.new("int64_t", -2^53) - 1, ffi.new("int64_t", 2^63 - 1024) + 1023}}
        -- Lua 5.4: native integers (a u64 beyond 2^63 reads as a negative one)
        or {"u64", "s64", {0, 9007199254740992, 9007199254740993, -1},
          {-9007199254740992, 9007199254740992, -9007199254740993, math.maxinteger}},
      }
      for _, s in ipairs(specs) do
        local kt, vt, keys, vals = s[1], s[2], s[3], s[4]
        local m = bpf.map_create{type = "hash", key = kt, value = vt, max_entries = 8, name = "it" .. kt}
        for i, k in ipairs(keys) do m:update(k, vals[i]) end
        local want = {}
        for i, k in ipairs(keys) do want[tostring(m:lookup(k) and k)] = tostring(m:lookup(k)) end
        for _, op in ipairs{"iterate", "drain"} do
          local got, n = {}, 0
          local it, st = m[op](m)
          for k, v in it, st do
            got[tostring(k)] = tostring(v)
            n = n + 1
            -- numbers where they fit in 2^53, the codec's cdata beyond
            assert.equal(type(m:lookup(k) or v), type(v))
          end
          assert.equal(#keys, n)
          assert.equal(#keys, st.count)
          assert.same(want, got, kt .. " -> " .. vt .. " " .. op)
          if op == "iterate" then
            local t = {}
            for _, e in ipairs(m:dump()) do t[tostring(e.key)] = tostring(e.value) end
            assert.same(want, t)
          end
        end
        assert.equal(0, m:count())
        m:close()
      end
    end)

    it("lookup, update and delete give the same through LuaJIT's fast path and through C", function()
      -- the C methods, as registered (each handle's own table may hold the Lua fast path)
      local C = getmetatable(m).__props_mt.__index
      assert.is_function(C.lookup)
      for _, spec in ipairs{{"u32", "u64"}, {"s32", "s64"}, {"u8", "s16"}, {"u64", "u32"}} do
        local t = bpf.map_create{type = "hash", key = spec[1], value = spec[2], max_entries = 8, name = "fp"}
        local a = bpf.map_create{type = "array", key = "u32", value = spec[2], max_entries = 4, name = "fpa"}
        local vals = spec[2] == "u64" and {0, 1, 2^53, 2^53 + 2, "18446744073709551615"}
          or spec[2] == "s64" and {-2^53, -2^53 - 2, 2^53, -1} or {0, 1, 100}
        for i, v in ipairs(vals) do
          assert.equal(C.update(t, i, v), t:update(i, v))
          assert.equal(tostring(C.lookup(t, i)), tostring(t:lookup(i)))
          assert.equal(type(C.lookup(t, i)), type(t:lookup(i)))
          assert.equal(tostring(C.lookup(a, i % 4)), tostring(a:lookup(i % 4)))
          a:update(i % 4, v)
          assert.equal(tostring(C.lookup(a, i % 4)), tostring(a:lookup(i % 4)))
        end
        assert.is_nil(t:lookup(7))
        assert.is_true(t:delete(1))
        assert.is_false(t:delete(1))
        assert.is_false(C.delete(t, 1))
        -- every refusal is C's own message
        for _, bad in ipairs{{1.5, 1}, {1, 0.5}, {2^64, 1}, {1, 2^64}, {"x", 1}, {0/0, 1}} do
          assert.equal(h.raises(C.update, t, bad[1], bad[2]), h.raises(t.update, t, bad[1], bad[2]))
        end
        assert.equal(h.raises(C.lookup, a, 4), h.raises(a.lookup, a, 4))
        assert.equal(h.raises(C.delete, a, 1), h.raises(a.delete, a, 1))
        assert.equal(h.raises(C.lookup, a, 9, {rw = 1}), h.raises(a.lookup, a, 9, {rw = 1}))
        assert.equal("lookup: unknown option 'x' (known: raw, flags, into)", h.raises(t.lookup, t, 1, {x = 1}))
        t:close(); a:close()
        assert.equal("lookup map 'fp': map is closed", h.raises(t.lookup, t, 2))
        assert.equal("update map 'fp': map is closed", h.raises(t.update, t, 2, 2))
        assert.equal("delete map 'fpa': map is closed", h.raises(a.delete, a, 2))
      end
      -- a map without BTF typed later takes the fast path from then on, and a full one still raises
      local raw = bpf.map_by_id(m.id)
      raw:set_types{key = "u32", value = "u64"}
      for i = 1, 16 do assert.is_true(raw:update(i, i)) end
      assert.equal(16, m:lookup(16))
      assert.equal("update map 'ops': map is full (E2BIG)", tostring(h.raises(raw.update, raw, 17, 1)))
      assert.equal("update map 'ops': value missing (use m:delete(key) to remove)", h.raises(raw.update, raw, 17))
      raw:close()
    end)

    it("update_batch keeps C's semantics on the fast path: chunks of 1024, errors, arrays", function()
      local big = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 4096, name = "ub"}
      local t = {}
      for i = 1, 2500 do t[i] = {i, i} end
      t[2000] = {2000, "x"}
      assert.equal("update_batch map 'ub': value: 'x' is not an integer", h.raises(big.update_batch, big, t))
      assert.equal(1024, big:count()) -- the first chunk went in, the second was refused as a whole
      t[2000] = {2000, 2000}
      assert.equal(2500, big:update_batch(t))
      local kv = {}
      for i = 3001, 3100 do kv[i] = i * 2 end
      assert.equal(100, big:update_batch(kv))
      assert.equal(6200, big:lookup(3100))
      -- a table with a metatable is read raw, as C reads it
      local proxied = setmetatable({}, {__index = function() return {1, 1} end})
      assert.equal(0, big:update_batch(proxied))
      local a = bpf.map_create{type = "array", key = "u32", value = "u32", max_entries = 4, name = "uba"}
      assert.equal(2, a:update_batch{{0, 7}, {3, 9}})
      assert.same({7, 0, 0, 9}, (a:lookup_batch{0, 1, 2, 3}))
      assert.equal("update_batch map 'uba': key: index 4 is out of range (0..3)", h.raises(a.update_batch, a, {{1, 1}, {4, 1}}))
      assert.equal(0, a:lookup(1))
      big:close(); a:close()
    end)

    it("state.count counts what was handed out, also when broken off mid-chunk", function()
      for i = 1, 16 do m:update(i, i) end
      for _, opts in ipairs{{chunk = 5}, {chunk = 5, raw = true}} do
        local it, st = m:iterate(opts)
        local n = 0
        for _ in it, st do
          n = n + 1
          if n == 7 then break end
        end
        assert.equal(7, st.count)
        assert.is_false(st.done)
        assert.is_false(st.complete)
        assert.equal("iteration of map 'ops': 7 seen", tostring(st))
      end
    end)

    it("key_type, value_type and set_types re-type a map by hand", function()
      -- made by sizes: no BTF in the kernel, raw bytes for every reader
      local sized = bpf.map_create{type = "hash", key = 4, value = 8, max_entries = 4}
      local raw = bpf.map_by_id(sized.id)
      assert.equal("4 bytes", raw:key_type().name)
      raw:set_types{key = "u32", value = "u64"}
      assert.equal("u32", tostring(raw:key_type()))
      raw:update(3, 33)
      assert.equal("\33\0\0\0\0\0\0\0", sized:lookup("\3\0\0\0"))
      assert.matches("u32%->u64", tostring(raw))
      raw:close()
      sized:close()
    end)
  end)
end)
