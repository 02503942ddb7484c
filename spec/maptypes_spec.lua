-- Every map type, on the real kernel: what each one does with each operation,
-- and the programs of bpf/test_mapops.bpf.c writing maps while we read them.
local h = require "helper"
local mh = require "maphelp"
local bpf = require "bpfhost"
local ffi = h.luajit and require "ffi" -- Lua 5.4: nil, and the views' writes instead

local CFG_COUNT, CFG_CHURN, CFG_TAIL, CFG_MMAP = 0, 1, 2, 3

-- Assert that every call of op on m raises msg (after "<op> map '<name>': ").
local function refuses(m, ops, msg)
  for _, op in ipairs(ops) do
    local err = h.raises(m[op], m, 1, 1)
    assert.equal(("%s map '%s': %s"):format(op, m.name, msg), tostring(err))
  end
end

-- Lines of /proc/self/maps that are BPF map mappings.
local function bpf_mappings()
  local n = 0
  for line in io.lines("/proc/self/maps") do
    if line:find("bpf-map", 1, true) or line:find("anon_inode:bpf", 1, true) then n = n + 1 end
  end
  return n
end

describe("map types", function()
  context("arguments", function()
    it("#root keys of the wrong shape are refused per type, before any syscall", function()
      local a = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 4, name = "arr"}
      assert.equal("update map 'arr': key: index 4 is out of range (0..3)", h.raises(a.update, a, 4, 1))
      assert.equal("lookup map 'arr': key: index 4 is out of range (0..3)", h.raises(a.lookup, a, 4))
      assert.equal("lookup map 'arr': key: index 4 is out of range (0..3)",
        h.raises(a.lookup, a, "\4\0\0\0", {raw = true}))
      assert.equal("lookup map 'arr': key: -1 is negative for an unsigned field", h.raises(a.lookup, a, -1))
      local l = bpf.map_create{type = "lpm_trie", key = 8, value = "u32", max_entries = 4, name = "lpm"}
      assert.equal("update map 'lpm': key: '2001:db8::/32' is an IPv6 prefix, the map's keys hold 4 address bytes",
        h.raises(l.update, l, "2001:db8::/32", 1))
      assert.equal("update map 'lpm': key: '10.0.0.0/40' has a bad prefix length (0..32)",
        h.raises(l.update, l, "10.0.0.0/40", 1))
      assert.equal("update map 'lpm': key.data: 3 bytes given, the map's keys hold 4",
        h.raises(l.update, l, {prefixlen = 8, data = "\10\0\0"}, 1))
      assert.equal("update map 'lpm': key.prefixlen: must be an integer 0..32",
        h.raises(l.update, l, {prefixlen = 33, data = "\10\0\0\0"}, 1))
      assert.equal("update map 'lpm': key: an LPM key is {prefixlen = n, data = bytes} or a string like \"10.0.0.0/8\"",
        h.raises(l.update, l, {prefix = 8}, 1))
      local q = bpf.map_create{type = "queue", value = "u32", max_entries = 2, name = "q"}
      assert.equal("push map 'q': value missing", h.raises(q.push, q))
      assert.equal("push map 'q': flags are \"any\" or \"exist\" (overwrite the oldest)", h.raises(q.push, q, 1, "noexist"))
      assert.equal("push map 'q': unknown flag 'oldest' (any, noexist, exist, lock)", h.raises(q.push, q, 1, "oldest"))
      assert.equal("push map 'q': value: 4294967296 does not fit u32 (0..4294967295)", h.raises(q.push, q, 2^32))
      local inner = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 2}
      local aom = bpf.map_create{type = "array_of_maps", key = "u32", max_entries = 2, inner_map = inner, name = "aom"}
      assert.equal("update map 'aom': value: expected a map handle or an fd, got string", h.raises(aom.update, aom, 0, "x"))
      assert.equal("update map 'aom': value: -1 is not a file descriptor", h.raises(aom.update, aom, 0, -1))
      local pa = bpf.map_create{type = "prog_array", key = "u32", value = "u32", max_entries = 2, name = "pa"}
      assert.equal("update map 'pa': value: expected a program handle or an fd, got table", h.raises(pa.update, pa, 0, {}))
      for _, m in ipairs{a, l, q, inner, aom, pa} do m:close() end
    end)
  end)

  context("lifetime", function()
    it("#root an mmap view outlives its map handle and object, and unmaps on close and GC", function()
      local base = bpf_mappings()
      local o = bpf.load(h.obj("test_mapops"))
      local v = o:get_map("shared"):mmap()
      assert.equal(base + 1, bpf_mappings())
      v[2] = 5
      o:close()
      assert.equal(5, v[2]) -- the mapping holds the kernel map
      assert.is_true(v:close())
      assert.is_true(v:close())
      assert.equal(base, bpf_mappings())
      assert.matches("read mmap of map 'shared': view is closed$", h.raises(function() return v[2] end))
      assert.matches("write mmap of map 'shared': view is closed$", h.raises(function() v[2] = 1 end))
      assert.equal("ptr mmap of map 'shared': view is closed", h.raises(v.ptr, v))
      assert.equal("mmap of map 'shared' (closed)", tostring(v))

      local m = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 4, flags = "mmapable"}
      local w = m:mmap()
      local id = m.id
      m:close()
      w[1] = 7
      assert.equal(7, bpf.map_by_id(id):lookup(1)) -- typed by the BTF map_create gave it
      w = nil
      collectgarbage(); collectgarbage()
      assert.equal(base, bpf_mappings())
      collectgarbage(); collectgarbage()
      assert.equal("ENOENT", h.raises(bpf.map_by_id, id).code)
    end)

    it("#root handles of every type are collected without leaking their maps", function()
      local ids = {}
      do
        local inner = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 2}
        for _, spec in ipairs{
          {type = "hash", key = 4, value = 8, max_entries = 4},
          {type = "percpu_array", key = 4, value = 8, max_entries = 4},
          {type = "lpm_trie", key = 8, value = 4, max_entries = 4},
          {type = "queue", value = 4, max_entries = 4},
          {type = "bloom_filter", value = 4, max_entries = 4},
          {type = "hash_of_maps", key = 4, max_entries = 4, inner_map = inner},
          {type = "ringbuf", max_entries = 4096},
        } do
          local m = bpf.map_create(spec)
          ids[#ids + 1] = m.id
          m:proxy()
          if spec.type ~= "queue" and spec.type ~= "bloom_filter" and spec.type ~= "ringbuf" then
            m:iterate()
          end
        end
        ids[#ids + 1] = inner.id
      end
      collectgarbage(); collectgarbage()
      for _, id in ipairs(ids) do
        assert.equal("ENOENT", h.raises(bpf.map_by_id, id).code)
      end
    end)
  end)

  context("#root kernel", function()
    local o, cfg
    before_each(function()
      o = bpf.load(h.obj("test_mapops"))
      cfg = o:get_map("cfg")
    end)
    after_each(function() o:close() end)

    it("array: every index exists, delete is an error, clear zeroes", function()
      local a = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 8, name = "arr"}
      assert.equal(0, a:lookup(7))
      assert.is_true(a:update(3, 33))
      assert.equal(33, a:lookup(3))
      assert.is_false(a:update(3, 1, "noexist")) -- array elements always exist
      assert.is_true(a:update(3, 34, "exist"))
      local err = h.raises(a.delete, a, 3)
      assert.equal("delete map 'arr': array elements cannot be deleted (update them to zero, or m:clear() them all)", err)
      assert.equal("lookup_and_delete map 'arr': array elements cannot be deleted", h.raises(a.lookup_and_delete, a, 3))
      assert.equal("delete_batch map 'arr': array elements cannot be deleted", h.raises(a.delete_batch, a, {3}))
      assert.equal("drain map 'arr': array elements cannot be deleted (m:clear() zeroes them)", h.raises(a.drain, a))
      assert.equal(8, a:count())
      local keys = {}
      for k, v in a:iterate() do keys[#keys + 1] = k; assert.equal(k == 3 and 34 or 0, v) end
      assert.same({0, 1, 2, 3, 4, 5, 6, 7}, keys)
      assert.equal(2, a:update_batch{{0, 10}, {7, 70}})
      local vals = a:lookup_batch{0, 7}
      assert.same({10, 70}, vals)
      assert.equal(8, a:clear())
      for _, v in a:iterate() do assert.equal(0, v) end
      a:close()
    end)

    it("percpu_hash and percpu_array: one element per possible CPU, or one value for all", function()
      local ncpu = tonumber((h.sh("nproc --all")))
      local ph = bpf.map_create{type = "percpu_hash", key = "u32", value = "u64", max_entries = 8}
      assert.is_true(ph:update(1, 5))
      local v = ph:lookup(1)
      assert.equal(ncpu, #v)
      for i = 1, ncpu do assert.equal(5, v[i]) end
      local per = {}
      for i = 1, ncpu do per[i] = i * 10 end
      assert.is_true(ph:update(2, per))
      assert.same(per, ph:lookup(2))
      assert.equal(bpf.sum(per), bpf.sum(ph:lookup(2)))
      assert.equal(2, ph:update_batch{{3, 1}, {4, per}})
      assert.same(per, ph:lookup(4))
      local n = 0
      for k, vals in ph:iterate() do n = n + 1; assert.equal(ncpu, #vals) end
      assert.equal(4, n)
      assert.equal(8 * ncpu, #ph:lookup(1, {raw = true}))
      local seen = 0
      for _, vals in ph:drain() do seen = seen + bpf.sum(vals) end
      assert.equal(5 * ncpu + bpf.sum(per) + ncpu + bpf.sum(per), seen)
      assert.equal(0, ph:count())
      assert.equal(("update map '(no name)': value: %d per-CPU values given, this map has %d possible CPUs (give one value for all, or one per CPU)"):format(ncpu + 1, ncpu),
        h.raises(ph.update, ph, 1, (function() local t = {} for i = 1, ncpu + 1 do t[i] = 1 end return t end)()))
      ph:close()

      local pp = o:get_map("pcpu_points") -- percpu_array of struct point, from BTF
      local pts = {}
      for i = 1, ncpu do pts[i] = {x = i, y = -i} end
      assert.is_true(pp:update(2, pts))
      assert.same(pts, pp:lookup(2))
      assert.same({x = 0, y = 0}, pp:lookup(0)[1])
      assert.same({x = ncpu * (ncpu + 1) / 2, y = -ncpu * (ncpu + 1) / 2}, bpf.sum(pp:lookup(2)))
      assert.equal(4, pp:count())
    end)

    it("lru_hash and lru_percpu_hash evict instead of filling up", function()
      local lru = bpf.map_create{type = "lru_hash", key = "u32", value = "u32", max_entries = 128}
      for i = 1, 1000 do assert.is_true(lru:update(i, i)) end
      local n = lru:count()
      assert.is_true(n > 0 and n <= 128, n)
      assert.equal(1000, lru:lookup(1000)) -- the newest stays
      assert.is_nil(lru:lookup(1))        -- the oldest went
      assert.equal(1000, lru:lookup_and_delete(1000))
      lru:close()
      local lp = o:get_map("lru_pcpu")
      for i = 1, 500 do lp:update(i, i) end
      assert.is_true(lp:count() <= 64)
      local v = lp:lookup(500)
      assert.equal(tonumber((h.sh("nproc --all"))), #v)
      assert.equal(500, v[1])
      local drained = 0
      for _ in lp:drain() do drained = drained + 1 end
      assert.is_true(drained > 0)
      assert.equal(0, lp:count())
    end)

    it("lpm_trie with BTF keys: longest-prefix match, {prefixlen, data}, lpm_key, IPv4 and IPv6", function()
      local l4 = o:get_map("lpm4")
      assert.equal("struct lpm_v4", l4:key_type().name)
      assert.is_true(l4:update("10.0.0.0/8", 8))
      assert.is_true(l4:update({prefixlen = 16, data = "\10\1\0\0"}, 16))
      assert.is_true(l4:update(bpf.lpm_key("10.1.2.0/24"), 24))
      assert.equal(24, l4:lookup("10.1.2.3"))
      assert.equal(16, l4:lookup("10.1.3.3"))
      assert.equal(8, l4:lookup("10.200.0.1"))
      assert.is_nil(l4:lookup("11.0.0.1"))
      assert.equal(24, l4:lookup({prefixlen = 32, data = "\10\1\2\9"}))
      assert.equal(16, l4:lookup("10.1.2.3/23")) -- a lookup key with a shorter prefix
      local seen = {}
      for k, v in l4:iterate() do
        seen[#seen + 1] = k.prefixlen
        assert.equal(k.prefixlen, v)
        assert.equal(4, #k.data)
      end
      table.sort(seen)
      assert.same({8, 16, 24}, seen)
      assert.is_true(l4:delete("10.1.0.0/16"))
      assert.is_false(l4:delete("10.1.0.0/16"))
      assert.equal(8, l4:lookup("10.1.3.3"))
      assert.equal(2, l4:count())

      local l6 = o:get_map("lpm6")
      assert.is_true(l6:update("2001:db8::/32", 32))
      assert.is_true(l6:update("2001:db8:1::/48", 48))
      assert.is_true(l6:update(bpf.lpm_key("::/0"), 0))
      assert.equal(48, l6:lookup("2001:db8:1::5"))
      assert.equal(32, l6:lookup("2001:db8:2::5"))
      assert.equal(0, l6:lookup("2001:db9::1"))
      assert.equal(3, #l6:keys())
    end)

    it("lpm_trie without BTF: raw keys decode to {prefixlen, data}; drain, clear", function()
      local l = bpf.map_create{type = "lpm_trie", key = 8, value = "u32", max_entries = 16}
      assert.equal(1, l:info().flags) -- no_prealloc, added for it
      for i = 1, 5 do assert.is_true(l:update(("10.%d.0.0/16"):format(i), i)) end
      assert.equal(3, l:lookup("10.3.9.9"))
      local k = l:keys()[1]
      assert.equal(16, k.prefixlen)
      assert.equal(4, #k.data)
      assert.equal(5, l:count())
      local n = 0
      local it, st = l:drain()
      for key, v in it, st do n = n + 1; assert.equal(key.data:byte(2), v) end
      assert.equal(5, n)
      assert.is_true(st.complete)
      assert.equal(0, l:count())
      for i = 1, 3 do l:update(("10.%d.0.0/16"):format(i), i) end
      assert.equal(3, l:clear())
      -- no atomic lookup_and_delete for a trie: the error says what to do instead
      l:update("10.9.0.0/16", 9)
      local err = h.raises(l.lookup_and_delete, l, "10.9.0.0/16")
      assert.equal("lookup_and_delete map '(no name)': a lpm_trie map has no atomic lookup_and_delete (ENOTSUPP)", tostring(err))
      assert.equal("m:lookup(key) then m:delete(key), or m:drain()", err.hint)
      l:close()
    end)

    it("queue: push, pop, peek in FIFO order, typed by BTF; full is E2BIG; 'exist' overwrites the oldest", function()
      local q = o:get_map("fifo") -- struct point values: libbpf drops their BTF at creation
      assert.equal("struct point", q:value_type().name)
      assert.is_nil(q:pop())
      assert.is_nil(q:peek())
      for i = 1, 4 do assert.is_true(q:push{x = i, y = -i}) end
      local err = h.raises(q.push, q, {x = 5})
      assert.equal("push map 'fifo': map is full (E2BIG)", tostring(err))
      assert.equal("push(v, \"exist\") overwrites the oldest element", err.hint)
      assert.is_true(q:push({x = 5, y = -5}, "exist"))
      assert.same({x = 2, y = -2}, q:peek())
      assert.same({x = 2, y = -2}, q:pop())
      assert.same({x = 3, y = -3}, q:pop())
      assert.equal(2, q:clear())
      assert.is_nil(q:pop())
      refuses(q, {"lookup", "update", "delete", "iterate", "count", "keys", "dump", "drain"},
        "a queue map has no keys (use m:push(v), m:pop(), m:peek())")
      assert.equal("contains map 'fifo': a queue map has no keys (use m:push(v), m:pop(), m:peek())",
        h.raises(q.contains, q, 1))
      -- bpftool sees what we pushed
      q:push{x = 7, y = 8}
      assert.matches("07 00 00 00 08 00 00 00", h.sh("bpftool map peek id " .. q.id))
    end)

    it("stack: LIFO order; created from outside an object too", function()
      local s = o:get_map("lifo")
      assert.equal("u32", tostring(s:value_type()))
      for i = 1, 3 do s:push(i) end
      assert.equal(3, s:peek())
      assert.equal(3, s:pop())
      assert.equal(2, s:pop())
      s:push(4); s:push(5); s:push(6)
      assert.equal("E2BIG", h.raises(s.push, s, 7).code)
      assert.is_true(s:push(7, "exist"))
      assert.equal(7, s:pop())
      local t = bpf.map_create{type = "stack", value = "u64", max_entries = 2}
      t:push(1); t:push(2)
      assert.same({2, 1}, {t:pop(), t:pop()})
      assert.is_nil(t:pop())
      t:close()
    end)

    it("bloom_filter: push and contains, no false negatives; no keys, no pop", function()
      local b = o:get_map("bloom")
      for i = 1, 40 do assert.is_true(b:push(i * 1000003)) end
      for i = 1, 40 do assert.is_true(b:contains(i * 1000003)) end
      local fp = 0
      for i = 1, 100 do if b:contains(i) then fp = fp + 1 end end
      assert.is_true(fp < 50, fp .. " false positives in 100")
      refuses(b, {"pop", "peek", "lookup", "iterate"}, "a bloom_filter map has no keys (use m:push(v), m:contains(v))")
      assert.equal("clear map 'bloom': a bloom_filter cannot be cleared (create a new one)", h.raises(b.clear, b))
      local raw = bpf.map_create{type = "bloom_filter", value = 8, max_entries = 16}
      raw:push("abcdefgh")
      assert.is_true(raw:contains("abcdefgh"))
      raw:close()
    end)

    it("array_of_maps and hash_of_maps: Map handles or fds in, map ids out", function()
      local outer = o:get_map("outer")
      local a, b = o:get_map("inner_a"), o:get_map("inner_b")
      assert.equal(a.id, outer:lookup(0)) -- set in the object's source
      assert.is_nil(outer:lookup(1))
      assert.is_true(outer:update(1, b))
      assert.equal(b.id, outer:lookup(1))
      assert.is_true(outer:update(1, a.fd))
      assert.equal(a.id, outer:lookup(1))
      local ids = {}
      for k, v in outer:iterate() do ids[k] = v end
      assert.same({[0] = a.id, [1] = a.id}, ids)
      assert.is_true(outer:delete(1))
      assert.is_nil(outer:lookup(1))
      assert.equal(1, outer:count())
      local err = h.raises(outer.update, outer, 1, cfg) -- u32 values, not u64: another shape
      assert.equal("update map 'outer': the map does not match the inner map's definition (EINVAL)", tostring(err))

      local inner = bpf.map_create{type = "hash", key = "u32", value = "u32", max_entries = 4}
      local hom = bpf.map_create{type = "hash_of_maps", key = "u32", max_entries = 8, inner_map = inner, name = "hom"}
      assert.equal(4, hom.value_size)
      local other = bpf.map_create{type = "hash", key = "u32", value = "u32", max_entries = 4}
      assert.is_true(hom:update(7, inner))
      assert.is_true(hom:update(8, other.fd))
      assert.equal(inner.id, hom:lookup(7))
      assert.equal(other.id, hom:lookup(8))
      -- the kernel really holds the inner map: bpftool shows its id as the value
      local le = ("%02x %02x %02x %02x"):format(other.id % 256, math.floor(other.id / 256) % 256,
        math.floor(other.id / 65536) % 256, math.floor(other.id / 16777216))
      assert.matches("value: " .. le, h.sh("bpftool map lookup id " .. hom.id .. " key 8 0 0 0"))
      local n = 0
      for k, id in hom:drain() do n = n + 1; assert.equal(k == 7 and inner.id or other.id, id) end
      assert.equal(2, n)
      assert.equal(2, hom:update_batch{{1, inner}, {2, other}})
      assert.same({inner.id, other.id}, (hom:lookup_batch{1, 2}))
      -- the inner map lives on in the outer map after its handle is closed
      local oid = other.id
      other:close()
      collectgarbage(); collectgarbage()
      assert.equal(oid, hom:lookup(2))
      assert.equal("hash", bpf.map_by_id(oid).type)
      local aom = bpf.map_create{type = "array_of_maps", key = "u32", max_entries = 2, inner_map = inner}
      assert.is_true(aom:update(0, inner))
      assert.equal(inner.id, aom:lookup(0))
      for _, m in ipairs{inner, hom, aom} do m:close() end
    end)

    it("prog_array: Program handles or fds in, program ids out; the tail call follows it", function()
      local jmp, hits = o:get_map("jmp"), o:get_map("hits")
      o:program("tail_entry"):attach()
      cfg:update(CFG_TAIL, mh.caller())
      mh.getpgid()
      assert.equal(1, hits:lookup(3)) -- empty slot: the tail call falls through
      assert.is_true(jmp:update(0, o:program("tail_one")))
      local id = jmp:lookup(0)
      local info = mh.find(bpf.programs(), "id", id)
      assert.equal("tail_one", info.name)
      mh.getpgid(2)
      assert.equal(2, hits:lookup(1))
      assert.is_true(jmp:update(0, o:program("tail_two").fd))
      assert.equal("tail_two", mh.find(bpf.programs(), "id", jmp:lookup(0)).name)
      mh.getpgid()
      assert.equal(1, hits:lookup(2))
      assert.equal(2, hits:lookup(1))
      -- iterate skips empty slots and goes on past them
      assert.is_true(jmp:update(3, o:program("tail_one")))
      local slots = {}
      local it, st = jmp:iterate()
      for k, v in it, st do slots[#slots + 1] = k; assert.is_number(v) end
      assert.same({0, 3}, slots)
      assert.is_true(st.complete)
      assert.equal(2, jmp:count())
      assert.is_true(jmp:delete(0))
      assert.is_false(jmp:delete(0))
      mh.getpgid()
      assert.equal(2, hits:lookup(3))
      assert.equal("update map 'jmp': key: index 4 is out of range (0..3)", h.raises(jmp.update, jmp, 4, o:program("tail_one")))
    end)

    it("ringbuf, user_ringbuf and perf_event_array: map operations point at the event API", function()
      local ops = {"lookup", "update", "delete", "lookup_and_delete", "iterate", "drain", "count", "keys",
        "dump", "clear", "lookup_batch", "update_batch", "delete_batch", "push", "pop", "peek", "contains"}
      refuses(o:get_map("events"), ops, "a ringbuf map is read with bpf.ringbuf(map), not with map operations")
      refuses(o:get_map("perf"), ops, "a perf_event_array map is read with bpf.perfbuf(map), not with map operations")
      local u = bpf.map_create{type = "user_ringbuf", max_entries = 4096, name = "urb"}
      refuses(u, ops, "a user_ringbuf map is read with bpf.user_ringbuf(map), not with map operations")
      u:close()
    end)

    it("flag 'lock': update and lookup copy a value holding a bpf_spin_lock under its lock", function()
      local lo = bpf.load(h.obj("test_maplock"))
      local rm -- the pin directory's, once made: one finally (busted keeps only the last one given)
      finally(function() lo:close() if rm then rm() end end)
      local pairs_ = lo:get_map("pairs")
      assert.is_true(pairs_:update(0, {a = 1, b = 1}, "lock"))
      assert.same({a = 1, b = 1}, pairs_:lookup(0, {flags = "lock"}))
      assert.same({a = 1, b = 1}, pairs_:lookup(0, "lock"))
      assert.is_true(pairs_:update(0, {a = 2, b = 2}, "exist|lock"))
      assert.is_false(pairs_:update(0, {a = 3, b = 3}, "noexist|lock"))
      assert.same({a = 2, b = 2}, pairs_:lookup(0, {flags = "lock"}))
      -- a map without a spin lock refuses the flag, and says why
      local plain = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 2, name = "plain"}
      plain:update(1, 1)
      assert.equal("lookup map 'plain': flag \"lock\" needs a value holding a struct bpf_spin_lock (EINVAL)",
        tostring(h.raises(plain.lookup, plain, 1, {flags = "lock"})))
      assert.equal("update map 'plain': flag \"lock\" needs a value holding a struct bpf_spin_lock (EINVAL)",
        tostring(h.raises(plain.update, plain, 1, 2, "lock")))
      plain:close()

      -- another process writes {a = i, b = i} under the lock while we read under it
      local dir
      dir, rm = h.tmp_bpffs()
      pairs_:pin(dir .. "/pairs")
      local writer = mh.spawn(("%s -e 'local m = bpf.open_pinned(%q) for i = 1, 400000 do " ..
        "m:update(0, {a = i, b = i}, [[lock]]) end print([[done]])'"):format(h.host, dir .. "/pairs"))
      local reads, torn, values = 0, 0, {}
      while mh.running(writer) do
        local v = pairs_:lookup(0, {flags = "lock"})
        if v.a ~= v.b then torn = torn + 1 end
        values[v.a] = true
        reads = reads + 1
      end
      local out, code = mh.finish(writer)
      assert.equal(0, code, out)
      assert.equal("done\n", out)
      local distinct = 0
      for _ in pairs(values) do distinct = distinct + 1 end
      assert.equal(0, torn)
      assert.is_true(distinct > 10, "the reads did not overlap the writes: " .. distinct .. " values seen")
      assert.same({a = 400000, b = 400000}, pairs_:lookup(0, {flags = "lock"}))

      -- and the other way round: we write under the lock, the other process reads under it
      local reader = mh.spawn(("%s -e 'local m = bpf.open_pinned(%q) local torn, seen, n = 0, {}, 0 " ..
        "for i = 1, 300000 do local v = m:lookup(0, {flags = [[lock]]}) if v.a ~= v.b then torn = torn + 1 end " ..
        "if not seen[v.a] then seen[v.a] = true n = n + 1 end end print(torn, n)'"):format(h.host, dir .. "/pairs"))
      local i = 0
      while mh.running(reader) do
        i = i + 1
        pairs_:update(0, {a = i, b = i}, "lock")
      end
      local rout, rcode = mh.finish(reader)
      assert.equal(0, rcode, rout)
      local rtorn, rseen = rout:match("^(%d+)\t(%d+)")
      assert.equal("0", rtorn, rout)
      assert.is_true(tonumber(rseen) > 10, rout)
    end)

    it("mmap: v[i] reads and writes through the codec, v:ptr() for the FFI, a program sees both", function()
      local shared = o:get_map("shared")
      local v = shared:mmap()
      assert.equal(8, #v)
      assert.equal(8, v.count)
      assert.equal(8, v.stride)
      assert.matches("^mmap of map 'shared': 8 x u64$", tostring(v))
      v[0] = 21
      assert.equal(21, shared:lookup(0)) -- the syscall path sees the view's write
      shared:update(5, 55)
      assert.equal(55, v[5])              -- and the view sees the syscall's
      o:program("mm_copy"):attach()
      cfg:update(CFG_MMAP, mh.caller())
      mh.getpgid()
      assert.equal(21, o:get_map("mm_out"):lookup(0)) -- the program read what the view wrote
      assert.equal(42, v[1])                          -- and the view reads what it wrote
      if ffi then
        local p = ffi.cast("uint64_t *", v:ptr())
        p[0] = 50
        mh.getpgid()
        assert.equal(100, tonumber(p[1]))
      else
        v[0] = 50
        mh.getpgid()
      end
      assert.equal(50, o:get_map("mm_out"):lookup(0))
      assert.equal(100, v[1])
      v[2] = "18446744073709551615"
      if ffi then
        assert.equal("18446744073709551615ULL", tostring(v[2]))
      else
        assert.equal(-1, v[2]) -- Lua 5.4: the u64's 64 bits in an integer
      end
      assert.matches("index 8 is out of range %(0..7%)$", h.raises(function() return v[8] end))
      assert.matches("index %-1 is out of range %(0..7%)$", h.raises(function() v[-1] = 1 end))
      assert.matches("write mmap of map 'shared': value: 1.5 is not an integer", h.raises(function() v[0] = 1.5 end))
      assert.equal(50, v[0])
      v:close()

      -- a frozen map maps read-only: writing is an error, not a crash
      local fm = bpf.map_create{type = "array", key = "u32", value = "u32", max_entries = 4, flags = "mmapable"}
      fm:update(1, 7)
      local fv = fm:mmap()
      local e = h.raises(fm.freeze, fm)
      assert.equal("freeze map '(no name)': the map is mmap'd writable (a view from m:mmap()) (EBUSY)", tostring(e))
      assert.matches("^close the writable views first", e.hint)
      fv:close()
      fm:freeze()
      fv = fm:mmap()
      assert.equal(7, fv[1])
      assert.matches("write mmap of map '%(no name%)': the view is read%-only %(the map is frozen, or read%-only for user space%)$",
        h.raises(function() fv[1] = 8 end))
      assert.equal(7, fv[1])
      fv:close()
      fm:close()
      local plain = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 4}
      assert.equal("mmap map '(no name)': only array maps made with the mmapable flag can be mapped (this is an array map without BPF_F_MMAPABLE)",
        h.raises(plain.mmap, plain))
      plain:close()
    end)

    it("mmap views of every integer size read and write what lookup and update see", function()
      for _, t in ipairs{"u8", "s8", "u16", "s16", "u32", "s32", "u64", "s64"} do
        local bits = tonumber(t:sub(2))
        local signed = t:sub(1, 1) == "s"
        local lo = signed and -2 ^ (bits - 1) or 0
        local hi = signed and 2 ^ (bits - 1) - 1 or 2 ^ bits - 1
        if bits == 64 then lo, hi = signed and -2 ^ 53 or 0, 2 ^ 53 end
        local m = bpf.map_create{type = "array", key = "u32", value = t, max_entries = 4, flags = "mmapable", name = "v" .. t}
        local v = m:mmap()
        v[0], v[1], v[3] = lo, hi, 7
        assert.same({lo, hi, 0, 7}, {m:lookup(0), m:lookup(1), m:lookup(2), m:lookup(3)}, t)
        m:update(2, hi - 1)
        assert.equal(hi - 1, v[2], t)
        local over = bits == 64 and (signed and 2 ^ 63 or 2 ^ 64) or hi + 1
        assert.matches("does not fit " .. t, h.raises(function() v[0] = over end), t)
        if bits == 64 then
          v[3] = 2 ^ 60 -- beyond 2^53 but in range: the codec writes it
          assert.equal(2 ^ 60, tonumber(m:lookup(3)))
          v[3] = 7
        end
        assert.matches("is not an integer$", h.raises(function() v[0] = 0.5 end), t)
        -- (Lua 5.4 reads a u64 beyond 2^63 as a negative integer, and takes it back)
        if not signed and (bits < 64 or h.luajit) then
          assert.matches("is negative for an unsigned field$", h.raises(function() v[0] = -1 end), t)
        end
        assert.matches("index 4 is out of range %(0..3%)$", h.raises(function() return v[4] end), t)
        assert.matches("index 0.5 is out of range %(0..3%)$", h.raises(function() return v[0.5] end), t)
        assert.equal(lo, v[0], t) -- refused writes left it alone
        assert.equal(4, v.count)
        assert.is_nil(v.nonexistent)
        assert.is_function(v.ptr)
        v:close()
        assert.matches("read mmap of map 'v" .. t .. "': view is closed$", h.raises(function() return v[0] end))
        m:close()
      end
      -- 64-bit beyond 2^53: the codec's cdata, both ways
      local m = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 2, flags = "mmapable"}
      local v = m:mmap()
      v[0] = "18446744073709551615"
      assert.equal(ffi and "18446744073709551615ULL" or "-1", tostring(v[0])) -- 5.4: an integer
      v[1] = v[0]
      assert.equal(ffi and "18446744073709551615ULL" or "-1", tostring(m:lookup(1)))
      v:close(); m:close()
    end)

    it("drain loses no count while a program increments the counters it removes", function()
      -- count_calls bumps counts[random k] in place and total[0] once per call.
      -- Both processes share CPU 0: this kernel does not preempt, so a drain
      -- syscall and the program never interleave inside one another, and the
      -- only way to lose a count is a drain that reads and deletes apart.
      -- (On two CPUs the kernel itself could lose an increment made through a
      -- pointer into an element a drain just freed.)
      local counts, total = o:get_map("counts"), o:get_map("total")
      o:program("count_calls"):attach()
      local drained, busy = 0, 0
      mh.on_cpu(0, function()
        local c = mh.syscaller{n = 400000, cpu = 0}
        cfg:update(CFG_COUNT, c.pid)
        while mh.running(c) do
          local got = 0
          for _, v in counts:drain() do drained = drained + v; got = got + 1 end
          if got > 0 then busy = busy + 1 end
        end
        local out, code = mh.finish(c)
        assert.equal(0, code, out)
      end)
      local rest = 0
      for _, v in counts:iterate() do rest = rest + v end
      local increments = total:lookup(0)
      assert.equal(0, total:lookup(1)) -- no increment was dropped by the program itself
      assert.is_true(increments > 0)
      assert.is_true(busy > 1, "no drain overlapped the increments")
      assert.equal(increments, drained + rest)
    end)

    it("iterate over 100k entries terminates and never yields a key twice while a program inserts and deletes", function()
      local big, total = o:get_map("big"), o:get_map("total")
      local t = {}
      for i = 0, 99999 do t[#t + 1] = {i * 2, i} end
      assert.equal(100000, big:update_batch(t))
      t = nil
      o:program("churn"):attach()
      local c = mh.syscaller{secs = 60}
      finally(function() mh.finish(c, "KILL") end)
      cfg:update(CFG_CHURN, c.pid)
      local function changes() return total:lookup(2) + total:lookup(3) end
      assert.is_true(mh.wait_for(function() return changes() > 1000 end), "the churn program does not run")
      for _, chunk in ipairs{1024, 64, 7} do
        local before = changes()
        local seen, n = {}, 0
        local it, st = big:iterate{chunk = chunk}
        for k, v in it, st do
          if seen[k] then error(("chunk %d: key %d yielded twice"):format(chunk, k)) end
          seen[k] = true
          n = n + 1
          -- the spec wrote k/2 under even keys, the program writes k
          if v ~= k and v * 2 ~= k then error(("key %d has value %d"):format(k, v)) end
        end
        local during = changes() - before
        assert.is_true(st.done)
        assert.is_boolean(st.complete)
        assert.equal(n, st.count)
        assert.is_true(during > 100, "the program made only " .. during .. " changes during the pass")
        assert.is_true(n > 50000 and n < 200000, n)
      end
      assert.is_true(mh.running(c), "the churning child ended before the passes did")
    end)

    it("per-CPU values have one element per possible CPU, also with a CPU offline", function()
      local online = "/sys/devices/system/cpu/cpu1/online"
      local f = io.open(online, "r+")
      if not f or not io.open("/sys/devices/system/cpu/possible"):read("*l"):match("^0%-1$") then
        if f then f:close() end
        pending("needs possible CPUs 0-1 and a writable " .. online)
        return
      end
      f:close()
      local ncpu = 2
      local ph = bpf.map_create{type = "percpu_hash", key = "u32", value = "u64", max_entries = 8}
      local lp = bpf.map_create{type = "lru_percpu_hash", key = "u32", value = "u32", max_entries = 8}
      finally(function()
        h.sh("echo 1 > " .. online)
        ph:close(); lp:close()
      end)
      local _, st = h.sh("echo 0 > " .. online)
      assert.equal(0, st)
      assert.equal("0", io.open(online):read("*l"))
      assert.equal(1, tonumber((h.sh("nproc"))))        -- online
      assert.equal(ncpu, tonumber((h.sh("nproc --all")))) -- possible (configured)
      assert.is_true(ph:update(1, {10, 20}))
      assert.same({10, 20}, ph:lookup(1)) -- the offline CPU keeps its slot
      assert.equal(16, #ph:lookup(1, {raw = true}))
      assert.equal(1, ph:update_batch{{2, {3, 4}}})
      local sums = {}
      for k, v in ph:iterate() do assert.equal(ncpu, #v); sums[k] = bpf.sum(v) end
      assert.same({[1] = 30, [2] = 7}, sums)
      assert.is_true(lp:update(1, {5, 6}))
      assert.same({5, 6}, lp:lookup(1))
      local pp = o:get_map("pcpu_points")
      pp:update(1, {{x = 1, y = 2}, {x = 3, y = 4}})
      assert.same({{x = 1, y = 2}, {x = 3, y = 4}}, pp:lookup(1))
      local n = 0
      for _, v in ph:drain() do n = n + 1; assert.equal(ncpu, #v) end
      assert.equal(2, n)
    end)
  end)
end)
