-- The fast path of typed maps under LuaJIT: m:lookup, m:update and m:delete
-- in bindings/lua/mapops.lua, with the codecs codec.c generates per Type
-- (loaded by bindings/lua/codecgen.lua). It must give and take exactly what
-- the C codec does, for every kind the generators cover, and leave to C
-- whatever is not plain.
--
-- The oracle is the C codec, which reads nothing through the FFI: T:decode
-- and T:encode beside the generated decoder and encoder, and each map op
-- beside the same op forced through C by an options table ({}). Values are
-- random: decoded from random bytes (so every kind and field turns up), then
-- fields dropped, one member of each table kept, leaves swapped for junk
-- (NaN, inf, 2^64, 1.5, numeric strings, long strings, tables, functions,
-- cdata), unknown keys added, metatables set.
--
-- Seeded and reproducible: BPFHOST_SEED=n repeats a run (the seed is in
-- every test's name); BPFHOST_CASES=n sets the cases per type and per map.
local h = require "helper"
local bpf = require "bpfhost"
local ffi = h.luajit and require "ffi"

local it = h.luajit_only(it, pending, "the fast path is LuaJIT's (the FFI)")
local OBJ, BENCH_OBJ = h.obj("test_codec"), h.obj("bench_codec")
local SEED = tonumber(os.getenv("BPFHOST_SEED") or "") or os.time() % 1000000
local CASES = tonumber(os.getenv("BPFHOST_CASES") or "") or 400

local NCPU = h.possible_cpus()

-- -- Randomness, equality, junk --------------------------------------------

-- A generator of its own (Park-Miller), so that nothing else drawing from
-- math.random changes a run: R() in [0, 1), R(a, b) an integer in a..b.
local function rng(seed)
  local x = seed % 2147483646 + 1
  return function(a, b)
    x = x * 16807 % 2147483647
    if not a then return x / 2147483647 end
    return a + x % (b - a + 1)
  end
end

local same = h.same_value

-- A short rendering for failure messages.
local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return ("%q"):format(v):gsub("\n", "n") end
  if type(v) ~= "table" then return tostring(v) end
  if depth > 3 then return "{...}" end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = ("[%s]=%s"):format(show(k, depth + 1), show(v[k], depth + 1))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function bytes(R, n)
  local t = {}
  for i = 1, n do t[i] = string.char(R(0, 255)) end
  return table.concat(t)
end

-- Bytes for a value of n bytes: random, all zero, all 0xff, or random with
-- NaN patterns (float and double, either sign, any payload) at random
-- 4-byte boundaries.
local function sample(R, n)
  local r = R(1, 12)
  if r == 1 then return ("\0"):rep(n) end
  if r == 2 then return ("\255"):rep(n) end
  local s = bytes(R, n)
  if r <= 5 and n >= 4 then
    for _ = 1, R(1, 4) do
      local at = R(0, math.floor(n / 4) - 1) * 4
      local top = string.char(R(0, 1) == 1 and 0xff or 0x7f, R(0xf0, 0xff))
      s = s:sub(1, at + 2) .. top .. s:sub(at + 5)
    end
  end
  return s
end

local deep = {}
for _ = 1, 40 do deep = {deep} end

-- Where integer types end: 2^k and 2^k - 1, either sign, for every width.
local BOUNDS = {1, 3, 4, 5, 7, 8, 9, 15, 16, 31, 32, 52, 53, 54, 63, 64}
-- The fixture's enumerators (W_BIG's enum is cut to 32 bits: names refused).
local NAMES = {"RED", "GREEN", "BLUE", "D_NEG", "D_ZERO", "D_POS", "T_A", "T_B", "W_SMALL", "W_BIG",
  "red", "RED\0", " RED"}

local function junk(R)
  local J = {
    function() return NAMES[R(1, #NAMES)] end, function() return NAMES[R(1, #NAMES)] end,
    function() return 2 ^ BOUNDS[R(1, #BOUNDS)] - R(0, 1) end,
    function() return -2 ^ BOUNDS[R(1, #BOUNDS)] - R(0, 1) end,
    function() return -2 ^ BOUNDS[R(1, #BOUNDS)] + 1 end,
    function() return 0 / 0 end, function() return 1 / 0 end, function() return -1 / 0 end,
    function() return 2 ^ 53 end, function() return 2 ^ 53 + 2 end, function() return 2 ^ 63 end,
    function() return 2 ^ 64 end, function() return -2 ^ 63 end, function() return -1 end,
    function() return 1.5 end, function() return -0.0 end, function() return R(0, 2 ^ 31) end,
    function() return -R(1, 2 ^ 31) end, function() return 4294967296 end,
    function() return 3.5e38 end, function() return "12" end, function() return "0x10" end,
    function() return "abc" end, function() return "" end, function() return ("x"):rep(R(7, 400)) end,
    function() return "\0\1\2" end, function() return true end, function() return false end,
    function() return {} end, function() return {1, 2, 3} end, function() return {x = 1} end,
    function() return deep end,
    function() return setmetatable({}, {__index = function() return 1 end}) end,
    function() return print end, function() return coroutine.create(print) end,
    function() return io.stdout end,
    function() return ffi.new("int64_t", -R(0, 1000)) end,
    function() return ffi.new("uint64_t", R(0, 1000)) end,
    function() return h.u64("0x8000000000000000") end, function() return h.u64("0xffffffffffffffff") end,
    function() return ffi.new("int64_t", 2 ^ 62) end, function() return ffi.new("int32_t", 5) end,
    function() return ffi.new("double", 2.5) end, function() return ffi.cast("void *", 0) end,
  }
  return J[R(1, #J)]()
end

local KEYS = {"nosuch", "PACKETS", 0, 1, 1.5, true}

-- A variant of the decoded value v. "clean" drops fields (and array
-- elements); "one" keeps one field of each struct (one member of a union);
-- "dirty" also swaps leaves for junk, adds keys and sets metatables.
local function vary(R, v, mode, depth)
  depth = depth or 0
  if type(v) == "table" then
    if mode == "dirty" and R(1, 40) == 1 then return junk(R) end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local pick = mode == "one" and type(keys[1]) == "string" and keys[R(1, #keys)]
    local out = {}
    for _, k in ipairs(keys) do
      local keep
      if pick then
        keep = k == pick
      elseif mode == "as is" then
        keep = true
      else
        keep = R(1, type(k) == "number" and 6 or 3) ~= 1
      end
      if keep then out[k] = vary(R, v[k], mode, depth + 1) end
    end
    if mode == "dirty" then
      local r = R(1, 30)
      if r == 1 then
        out[KEYS[R(1, #KEYS)]] = junk(R)
      elseif r == 2 then
        setmetatable(out, {})
      elseif r == 3 then
        out[#keys + 1] = v[1]
      end
    end
    return out
  end
  if mode == "dirty" then
    local r = R(1, 12)
    if r == 1 then return junk(R) end
    if r == 2 and type(v) == "number" then return v + R(-2, 2) end
    if r == 3 and type(v) == "number" then return -v end
    if r == 4 and type(v) == "number" then return v * 2 ^ R(1, 40) end
    if r == 6 and type(v) == "number" then return (R(0, 1) * 2 - 1) * 2 ^ BOUNDS[R(1, #BOUNDS)] - R(0, 1) end
    if r == 5 and type(v) == "string" then return v .. ("\0\1z"):sub(1, R(1, 3)) end
  end
  return v
end

local MODES = {"as is", "clean", "one", "dirty"}

-- A random value of T, now and then junk itself.
local function value_of(R, T)
  if R(1, 25) == 1 then return junk(R) end
  return vary(R, T:decode(sample(R, T.size)), MODES[R(1, #MODES)])
end

-- -- The fixture's types and maps -------------------------------------------

-- Every key and value type of bpf/test_codec.bpf.c's maps, and the bench's.
local MAPS = {
  "ints8", "ints16", "ints32", "ints64", "intsu64", "enums", "wides", "bools", "ptrs", "floats",
  "names", "scalars", "flows", "shapes", "unions", "variants", "paddeds", "lockeds", "grids",
  "pc_hash", "pc_array", "pc_lru", "pc_grid", "pc_byte", "pc_u64",
}
local BENCH_MAPS = {"h_flow", "pc_cpu"}
-- What the generators leave to C: 40- and 60-bit bitfields (LuaJIT's are 32-bit at most).
local NOT_GENERATED = {["struct stats"] = true}
-- Kernel types of every shape: bitfields, unions in structs in unions, arrays of structs.
local KERNEL_TYPES = {
  "struct iphdr", "struct ipv6hdr", "struct tcphdr", "struct ethhdr", "struct in6_addr",
  "struct sockaddr_in6", "struct bpf_sock", "struct __sk_buff", "struct bpf_flow_keys",
  "union bpf_attr", "struct bpf_map_info", "struct sock_common", "struct tcp_info", "struct flowi4",
}

local function is_percpu(m) return m.type:match("percpu") ~= nil end
local function is_array(m) return m.type:match("array") ~= nil end

describe("fast path", function()
  context("#root kernel", function()
    local o, bo, cg
    setup(function()
      o = bpf.load(OBJ)
      bo = bpf.load(BENCH_OBJ)
      if h.luajit then cg = require "bpfhost.codecgen" end
    end)
    teardown(function()
      o:close()
      bo:close()
    end)

    local function map(name)
      local ok, m = pcall(o.get_map, o, name)
      return ok and m or bo:get_map(name)
    end

    -- Every Type of the fixture's maps (keys and values), and the kernel's.
    local function types()
      local list, seen = {}, {}
      for _, name in ipairs(MAPS) do
        for _, T in ipairs{map(name):key_type(), map(name):value_type()} do
          if not seen[T.name] then
            seen[T.name] = true
            list[#list + 1] = T
          end
        end
      end
      for _, name in ipairs(KERNEL_TYPES) do list[#list + 1] = bpf.kernel_type(name) end
      return list
    end

    it(("generated decoders build what T:decode builds, from random bytes (%d cases a type, seed %d)")
        :format(CASES, SEED), function()
      local R = rng(SEED)
      for _, T in ipairs(types()) do
        local c = cg.load(T)
        assert.equal(not NOT_GENERATED[T.name], c and true or false, T.name)
        if c then
          local buf = ffi.new("uint8_t[?]", c.alloc)
          local p = ffi.cast(c.ct, buf)
          for i = 1, CASES do
            local s = sample(R, T.size)
            ffi.copy(buf, s, T.size)
            local want, got = T:decode(s), c.dec(p)
            if not same(want, got) then
              error(("%s, case %d, seed %d: bytes %s: C %s, generated %s"):format(T.name, i, SEED,
                show(s), show(want), show(got)))
            end
          end
        end
      end
    end)

    it(("generated encoders write what T:encode writes, and take nothing it refuses (%d cases a type, seed %d)")
        :format(CASES, SEED), function()
      local R = rng(SEED + 1)
      for _, T in ipairs(types()) do
        local c = cg.load(T)
        if c and c.enc then
          local buf = ffi.new("uint8_t[?]", c.alloc)
          local mp = ffi.cast(c.mct, buf)
          local taken = 0
          for i = 1, CASES do
            local v = value_of(R, T)
            local ok, want = pcall(T.encode, T, v)
            ffi.fill(buf, c.alloc)
            local ran, plain = pcall(c.enc, mp, v)
            local function fail(why)
              error(("%s, case %d, seed %d: %s: %s"):format(T.name, i, SEED, show(v), why))
            end
            if not ran then fail("the encoder raised " .. tostring(plain)) end
            if plain ~= true and plain ~= false then fail("the encoder returned " .. tostring(plain)) end
            if plain then
              if not ok then fail("generated took what C refuses: " .. tostring(want)) end
              if ffi.string(buf, T.size) ~= want then fail("bytes differ") end
              taken = taken + 1
            end
          end
          -- each type's plain values go the fast way (unions: "one" member)
          assert(taken >= CASES / 20, ("%s: only %d of %d taken"):format(T.name, taken, CASES))
        end
      end
    end)

    -- The map's contents as raw bytes, key -> value.
    local function snapshot(m)
      local t = {}
      for k, v in m:iterate({raw = true}) do t[k] = v end
      return t
    end

    -- Make m hold exactly base (as snapshot gives it); arrays hold every index.
    local function reset(m, base)
      if not is_array(m) then
        for k in pairs(snapshot(m)) do
          if base[k] == nil then m:delete(k, {raw = true}) end
        end
      end
      for k, v in pairs(base) do m:update(k, v, {raw = true}) end
    end

    -- pcall's results, an error as its string (error objects by tostring).
    local function outcome(f, ...)
      local r = {pcall(f, ...)}
      if not r[1] then r[2] = tostring(r[2]) end
      return r
    end

    local function value(R, m)
      local V = m:value_type()
      if not is_percpu(m) then return value_of(R, V) end
      local r = R(1, 12)
      if r <= 5 then return value_of(R, V) end
      local n = r == 12 and NCPU + R(-1, 1) * R(1, 2) or NCPU
      local t = {}
      for i = 1, math.max(n, 0) do t[i] = value_of(R, V) end
      return t
    end

    local function key(R, m)
      local K = m:key_type()
      if is_array(m) and R(1, 4) > 1 then return R(0, m.max_entries) end
      return value_of(R, K)
    end

    for i, name in ipairs(MAPS) do
      it(("%s: update, lookup, delete give what the C path gives (%d cases, seed %d)")
          :format(name, CASES, SEED), function()
        local R = rng(SEED + 10 + i)
        local m = map(name)
        local base = is_array(m) and snapshot(m) or {}
        local function check(case, what, a, b, k, v)
          if not same(a, b) then
            error(("%s, case %d, seed %d: %s of key %s, value %s: fast %s, C %s"):format(name, case,
              SEED, what, show(k), show(v), show(a), show(b)))
          end
        end
        for case = 1, CASES do
          local k, v = key(R, m), value(R, m)
          reset(m, base)
          local u1 = outcome(m.update, m, k, v)
          local s1 = snapshot(m)
          reset(m, base)
          local u2 = outcome(m.update, m, k, v, {})
          local s2 = snapshot(m)
          check(case, "update", u1, u2, k, v)
          check(case, "update's bytes", s1, s2, k, v)
          check(case, "lookup", outcome(m.lookup, m, k), outcome(m.lookup, m, k, {}), k, v)
          -- into: the fast path (only into) beside C (a flag sends it there)
          -- (a table at [1]: a per-CPU struct's first CPU goes into it)
          local t1, t2 = {extra = 1, {old = 1}}, {extra = 1, {old = 1}}
          local i1 = outcome(m.lookup, m, k, {into = t1})
          local i2 = outcome(m.lookup, m, k, {into = t2, flags = "any"})
          if i1[1] and i1[2] ~= nil then
            if i1[2] ~= t1 then error(name .. ": lookup into gave another table") end
            i1[2] = "into"
          end
          if i2[1] and i2[2] ~= nil then i2[2] = "into" end
          check(case, "lookup into", i1, i2, k, v)
          check(case, "lookup into's table", t1, t2, k, v)
          local d1 = outcome(m.delete, m, k)
          local s3 = snapshot(m)
          reset(m, s2)
          local d2 = outcome(m.delete, m, k, {})
          check(case, "delete", d1, d2, k, v)
          check(case, "delete's bytes", s3, snapshot(m), k, v)
          check(case, "lookup after delete", outcome(m.lookup, m, k), outcome(m.lookup, m, k, {}),
            k, v)
        end
        reset(m, base)
        -- the fast path was there to compare: C marked the map, the codecs loaded
        local st = rawget(getmetatable(m), "__bh_fast")
        local typed = not m:value_type().name:match("^[su]%d+$") or is_percpu(m)
          or not m:key_type().name:match("^[su]%d+$")
        if typed and name ~= "ptrs" then
          assert.is_table(st, name)
          assert.equal(not NOT_GENERATED[m:value_type().name], st.ok, name)
        end
      end)
    end

    it(("the bench's struct maps, as the C path (%d cases, seed %d)"):format(CASES, SEED), function()
      local R = rng(SEED + 99)
      for _, name in ipairs(BENCH_MAPS) do
        local m = map(name)
        for case = 1, CASES do
          local k, v = R(0, 1100), value(R, m)
          local u1 = outcome(m.update, m, k, v)
          local a = m:lookup(k, {raw = true})
          local u2 = outcome(m.update, m, k, v, {})
          local b = m:lookup(k, {raw = true})
          if not (same(u1, u2) and a == b and same(m:lookup(k), m:lookup(k, {}))) then
            error(("%s case %d seed %d: %s: fast %s, C %s"):format(name, case, SEED, show(v), show(u1),
              show(u2)))
          end
        end
        local st = rawget(getmetatable(m), "__bh_fast")
        assert.is_true(st.ok)
        -- and lookup's into has its own path (no table made per call)
        assert.is_function(st.into, name)
      end
    end)

    it("junk keys and values, one by one on every map, fail or pass as through C", function()
      local R = rng(SEED + 200)
      for _, name in ipairs(MAPS) do
        local m = map(name)
        local base = is_array(m) and snapshot(m) or {}
        local good = m:value_type():decode(("\0"):rep(m:value_type().size))
        for _ = 1, 60 do
          local j = junk(R)
          for _, args in ipairs{{j, good}, {0, j}, {j, j}} do
            reset(m, base)
            local a = outcome(m.update, m, args[1], args[2])
            local sa = snapshot(m)
            reset(m, base)
            local b = outcome(m.update, m, args[1], args[2], {})
            if not same(a, b) then
              error(("%s: update(%s, %s): fast %s, C %s"):format(name, show(args[1]), show(args[2]),
                show(a), show(b)))
            end
            if not same(sa, snapshot(m)) then
              error(name .. ": bytes after update(" .. show(args[1]) .. ", " .. show(args[2]) .. ")")
            end
          end
          local before = snapshot(m)
          if not same(outcome(m.lookup, m, j), outcome(m.lookup, m, j, {})) then
            error(name .. ": lookup(" .. show(j) .. ")")
          end
          local a = outcome(m.delete, m, j)
          reset(m, before)
          if not same(a, outcome(m.delete, m, j, {})) then
            error(name .. ": delete(" .. show(j) .. ")")
          end
        end
        reset(m, base)
      end
    end)

    it("no arguments, too few and too many, reach C as given (no value is not nil)", function()
      local m = map("shapes")
      local function err(...) return tostring(h.raises(...)) end
      assert.equal("bad argument #1 to '?' (bpfhost.map expected, got no value (call it as m:lookup(...)))",
        err(m.lookup))
      assert.equal("bad argument #1 to '?' (bpfhost.map expected, got nil (call it as m:lookup(...)))",
        err(m.lookup, nil))
      assert.equal("lookup map 'shapes': key: expected a table for struct point, got no value", err(m.lookup, m))
      assert.equal("lookup map 'shapes': key: expected a table for struct point, got nil", err(m.lookup, m, nil))
      assert.equal("update map 'shapes': value missing (use m:delete(key) to remove)", err(m.update, m))
      assert.equal("update map 'shapes': key: expected a table for struct point, got nil", err(m.update, m, nil, {}))
      assert.equal("delete map 'shapes': key: expected a table for struct point, got no value", err(m.delete, m))
      assert.equal("delete map 'shapes': key: expected a table for struct point, got nil", err(m.delete, m, nil))
      -- more arguments than the fast path reads: C has them all
      assert.is_true(m:update({x = 1}, {}, nil, 5))
      assert.same(m:lookup({x = 1}, {}), m:lookup({x = 1}, nil, 5))
      assert.is_true(m:delete({x = 1}, nil, 5))
    end)
  end)

  context("lifetime", function()
    it("#root set_types and close: the fast path follows the map's types, and its state", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8, name = "fp"}
      assert.is_true(m:update(1, h.u64("0x0102030405060708")))
      assert.equal(h.u64("0x0102030405060708"), m:lookup(1))
      m:set_types{value = "u8[8]"}
      assert.equal("\8\7\6\5\4\3\2\1", m:lookup(1))
      assert.equal(m:lookup(1, {}), m:lookup(1))
      m:set_types{value = "u16[4]"}
      assert.same({0x0708, 0x0506, 0x0304, 0x0102}, m:lookup(1))
      assert.is_true(m:update(1, {1, 2}))
      assert.same({1, 2, 0, 0}, m:lookup(1))
      m:set_types{key = "char[4]"}
      assert.same({1, 2, 0, 0}, m:lookup("\1"))
      assert.is_true(m:update("ab", {9}))
      assert.same({9, 0, 0, 0}, m:lookup("ab"))
      assert.is_true(m:delete("ab"))
      assert.is_nil(m:lookup("ab"))
      collectgarbage()
      collectgarbage()
      assert.same({1, 2, 0, 0}, m:lookup("\1"))
      m:close()
      assert.equal(tostring(h.raises(m.lookup, m, "\1", {})), tostring(h.raises(m.lookup, m, "\1")))
      assert.equal(tostring(h.raises(m.update, m, "\1", {1}, {})), tostring(h.raises(m.update, m, "\1", {1})))
    end)
  end)
end)
