-- bpfhost.mapops: LuaJIT's fast path of m:lookup, m:update and m:delete
-- (bindings/map.c), for maps whose keys and values are integers, and for
-- typed maps whose values (and keys that are not integers) have codecs
-- generated for their Types (bindings/lua/codecgen.lua).
--
-- A call to a C function from LuaJIT compiled code costs about as much as
-- the rest of a map op in user space (the trace is left and re-entered),
-- and building a struct's table through the C API as much again, so these
-- Lua functions make the bpf() call themselves through the FFI, decode and
-- encode with the generated codecs, and LuaJIT compiles them into the
-- caller's trace. They take only the plain case: a map handle that is open
-- (its fd >= 0), marked fast by C (map_fast_code()), no options or flags
-- (lookup: or only {into = t}),
-- numbers that fit (64-bit ones within 2^53), indexes in range, values the
-- generated encoder takes as plain. Everything else, and every failure but
-- ENOENT, goes to the C method, which does the whole thing again and says
-- what is wrong.
if not jit then return nil end -- the FFI is LuaJIT's: other Luas take the C methods

local ffi = require "ffi"
local bit = require "bit"

local ok, lib = pcall(ffi.load, "bpf")
if not ok then ok, lib = pcall(ffi.load, "libbpf.so.1") end
if not ok then return nil end

pcall(ffi.cdef, [[
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_update_batch(int fd, const void *keys, const void *values, uint32_t *count,
                         const void *opts);
]])

-- Must match struct bh_map in bh.h (checked by size below).
if not pcall(ffi.typeof, "struct bh_mapops_map") then
  ffi.cdef [[
struct bh_mapops_map {
  uint32_t magic;
  int fd;
  int owns_fd;
  int closed;
  void *map;
  void *parent;
  uint32_t type, key_size, value_size, max_entries, map_flags;
  uint32_t value_bufsz;
  int ncpus;
  void *ktype, *vtype;
  unsigned char *kbuf, *vbuf, *kbuf2;
  unsigned special;
  char *pin_path;
  char name[16];
  int fast;
};
]]
end

local cast, errno, type, floor, getmetatable = ffi.cast, ffi.errno, type, math.floor, getmetatable
local rawget, rawset, next, fill, copy = rawget, rawset, next, ffi.fill, ffi.copy
local band, rshift = bit.band, bit.rshift
local MAP = ffi.typeof("struct bh_mapops_map *")
local ENOENT = 2
local LIMIT = 2 ^ 53
local GEN = 0x20000 -- map.c's BH_FAST_GEN
local ok_new, tnew = pcall(require, "table.new")
if not ok_new then tnew = function() return {} end end

-- By int code (size * 2 + signed, map.c's int_code): a one-element buffer and
-- the range a number must be in to go there as it is.
local codes = {}
for code, d in pairs{
  [2] = {"uint8_t", 0, 255}, [3] = {"int8_t", -128, 127},
  [4] = {"uint16_t", 0, 65535}, [5] = {"int16_t", -32768, 32767},
  [8] = {"uint32_t", 0, 4294967295}, [9] = {"int32_t", -2147483648, 2147483647},
  [16] = {"uint64_t", 0, LIMIT}, [17] = {"int64_t", -LIMIT, LIMIT},
} do
  codes[code] = {buf = ffi.new(d[1] .. "[1]"), vla = ffi.typeof(d[1] .. "[?]"), lo = d[2],
    hi = d[3], code = code}
end
-- keys and values need their own buffers (a u32 -> u32 map uses both)
local vcodes = {}
for code, c in pairs(codes) do
  vcodes[code] = {buf = ffi.new(ffi.typeof(c.buf)), vla = c.vla, lo = c.lo, hi = c.hi, code = code}
end

-- The payload of m when m is an open fast map handle, else nil; and its
-- metatable (its own: map.c's map_newud).
local function fast_map(m, magic)
  if type(m) ~= "userdata" then return nil end
  local mt = getmetatable(m)
  if type(mt) ~= "table" or mt.__name ~= "bpfhost.map" then return nil end
  local h = cast(MAP, m)
  if h.magic ~= magic or h.fd < 0 or h.fast == 0 then return nil end
  return h, mt
end

-- The key buffer holding k, or nil when k is not a plain fit.
local function key_of(h, k)
  if type(k) ~= "number" then return nil end
  local f = h.fast
  local c = codes[band(f, 0xff)]
  if not (k >= c.lo and k <= c.hi and floor(k) == k) then return nil end
  if band(f, 0x10000) ~= 0 and k >= h.max_entries then return nil end
  c.buf[0] = k
  return c.buf
end

-- The value in c's buffer as the codec gives it: 64-bit ones beyond 2^53 as
-- cdata (compared as integers: exact, and unsigned against no negative bound).
local function read(c)
  local x = c.buf[0]
  local code = c.code
  if code == 16 then
    if x <= LIMIT then return tonumber(x) end
    return x
  elseif code == 17 then
    if x >= -LIMIT and x <= LIMIT then return tonumber(x) end
    return x
  end
  return tonumber(x)
end

-- fn called with the first n (0..4) of a, b, c, d: what the caller gave.
local function callc(fn, n, a, b, c, d)
  if n == 2 then return fn(a, b) end
  if n == 3 then return fn(a, b, c) end
  if n == 4 then return fn(a, b, c, d) end
  if n == 1 then return fn(a) end
  return fn()
end

-- update_batch: chunks of CHUNK keys and values, per int code.
local CHUNK = 1024
local kbatch, vbatch = {}, {}
local count = ffi.new("uint32_t[1]")
local function batch_bufs(kcode, vcode)
  local kb, vb = kbatch[kcode], vbatch[vcode]
  if not kb then
    kb = codes[kcode].vla(CHUNK)
    kbatch[kcode] = kb
  end
  if not vb then
    vb = codes[vcode].vla(CHUNK)
    vbatch[vcode] = vb
  end
  return kb, vb
end

-- Whether k -> v goes to the kernel as it is (see key_of).
local function plain(h, kc, vc, k, v)
  return type(k) == "number" and type(v) == "number" and k >= kc.lo and k <= kc.hi
    and floor(k) == k and v >= vc.lo and v <= vc.hi and floor(v) == v
    and (band(h.fast, 0x10000) == 0 or k < h.max_entries)
end

-- -- Typed maps: generated codecs -----------------------------------------

-- A map's state lives in its metatable (the handle's own: map_newud), under
-- a constant key: one hash slot away from the metatable fast_map read.
local STATE = "__bh_fast"

local function nkeys(t)
  local n = 0
  for _ in next, t do n = n + 1 end
  return n
end

-- The state of a GEN map (types K and V): a value buffer with its codecs
-- bound to it (get() decodes it, put(v) encodes v into it, or declines),
-- and the key's encoder into a key buffer (key(k): the buffer, or nil)
-- when the key is not an integer. ok is false when the Types have no
-- generated codecs that passed codecgen's checks: C does everything then.
-- vt and kt are the plans it was built for: a new plan (set_types, a
-- reload) makes a new state. The state holds K and V, so that no other
-- Type can be given their addresses while it exists.
local function build(h, K, V)
  local st = {vt = h.vtype, kt = h.ktype, K = K, V = V, ok = false}
  local cg = require "bpfhost.codecgen"
  local vc = V and cg.load(V)
  if not vc or vc.size ~= h.value_size then return st end
  if band(h.fast, 0xff) == 0 then
    local kc = K and cg.load(K)
    if not kc or not kc.enc or kc.size ~= h.key_size then return st end
    local kbuf = ffi.new("uint8_t[?]", kc.alloc)
    local kp, ksize, kenc = cast(kc.mct, kbuf), kc.size, kc.enc
    st.kbuf = kbuf
    st.key = function(k)
      fill(kbuf, ksize)
      if kenc(kp, k) then return kbuf end
      return nil
    end
  end
  local size, ncpus, dec, enc = vc.size, h.ncpus, vc.dec, vc.enc
  if ncpus == 0 then
    local vbuf = ffi.new("uint8_t[?]", vc.alloc)
    local p, mp = cast(vc.ct, vbuf), cast(vc.mct, vbuf)
    st.vbuf = vbuf
    st.get = function() return dec(p) end
    -- lookup's "into": a struct's fields set straight from the buffer; an
    -- array's elements copied from its table (map.c's into_fill)
    local into = vc.into
    if into then
      st.into = function(t) return into(p, t) end
    elseif vc.kind == "array" then
      st.into = function(t)
        for i, x in next, dec(p) do t[i] = x end
        return t
      end
    end
    if enc then
      st.put = function(v)
        fill(vbuf, size)
        return enc(mp, v)
      end
    end
  else
    -- per-CPU: round_up(size, 8) bytes per possible CPU (map.c's value_bufsz)
    local stride = band(size + 7, -8)
    local total = stride * ncpus
    if total ~= h.value_bufsz then return st end
    local vbuf = ffi.new("uint8_t[?]", total + vc.alloc)
    local ct, mct = vc.ct, vc.mct
    st.vbuf = vbuf
    st.get = function()
      local t = tnew(ncpus, 0)
      for i = 0, ncpus - 1 do t[i + 1] = dec(cast(ct, vbuf + i * stride)) end
      return t
    end
    -- into: a struct CPU's fields go into the table already at t[i], if any
    -- (map.c's into_fill), so that polling per-CPU stats makes no table
    local into = vc.into
    st.into = function(t)
      for i = 0, ncpus - 1 do
        local p = cast(ct, vbuf + i * stride)
        local ti = t[i + 1]
        if into and type(ti) == "table" and getmetatable(ti) == nil then into(p, ti)
        else t[i + 1] = dec(p) end
      end
      return t
    end
    -- as bh_encode_percpu: one value for every CPU, or an array of one per
    -- CPU, told apart by the value's shape (codec.c's looks_like); here only
    -- for the kinds whose shapes tell it simply
    local kind = vc.kind
    local structs = kind == "struct" or kind == "union"
    if enc and kind ~= "array" and kind ~= "bytes" then
      local mp = cast(mct, vbuf)
      st.put = function(v)
        fill(vbuf, total)
        if type(v) ~= "table" or (structs and rawget(v, 1) == nil) then
          if not enc(mp, v) then return false end
          for i = 1, ncpus - 1 do copy(vbuf + i * stride, vbuf, size) end
          return true
        end
        if getmetatable(v) ~= nil or #v ~= ncpus or nkeys(v) ~= ncpus then return false end
        for i = 0, ncpus - 1 do
          if not enc(cast(mct, vbuf + i * stride), v[i + 1]) then return false end
        end
        return true
      end
    end
  end
  st.ok = true
  return st
end

return function(methods, map_size, magic)
  if ffi.sizeof("struct bh_mapops_map") ~= map_size then return nil end
  local c_lookup, c_update, c_delete = methods.lookup, methods.update, methods.delete
  local c_update_batch = methods.update_batch
  local c_key_type, c_value_type = methods.key_type, methods.value_type

  -- The key buffer of a GEN map holding k (state st): integer keys in their
  -- int code's buffer, others through the generated encoder; nil when k is
  -- not a plain fit.
  local function gen_key(h, st, k)
    if band(h.fast, 0xff) ~= 0 then return key_of(h, k) end
    return st.key(k)
  end

  -- The state of the GEN map m (payload h, metatable mt), or nil when it
  -- has no usable generated codecs.
  local function state(m, h, mt)
    local st = rawget(mt, STATE)
    if st == nil or st.vt ~= h.vtype or st.kt ~= h.ktype then
      st = build(h, c_key_type(m), c_value_type(m))
      rawset(mt, STATE, st)
    end
    if st.ok then return st end
    return nil
  end

  -- Write the n elements of t (a list of {k, v}, or k -> v) in chunks; false
  -- when the kernel refused one (the C method then does it all again, with
  -- its error; rewriting what went through gives the same values).
  local function write(h, kcode, vcode, n, t, pairs_form)
    local kb, vb = batch_bufs(kcode, vcode)
    local j = 0
    local function flush()
      count[0] = j
      local r = lib.bpf_map_update_batch(h.fd, kb, vb, count, nil)
      j = 0
      return r == 0
    end
    if pairs_form then
      for i = 1, n do
        local p = t[i]
        kb[j], vb[j] = p[1], p[2]
        j = j + 1
        if j == CHUNK and not flush() then return false end
      end
    else
      for k, v in pairs(t) do
        kb[j], vb[j] = k, v
        j = j + 1
        if j == CHUNK and not flush() then return false end
      end
    end
    return j == 0 or flush()
  end

  -- Only without flags ("noexist"/"exist" skip per element: C does that).
  local function update_batch(...)
    local m, t, flags = ...
    -- raw access like C's: no table with a metatable here
    local h = flags == nil and select("#", ...) == 2 and type(t) == "table"
      and getmetatable(t) == nil and fast_map(m, magic)
    if h and band(h.fast, GEN) == 0 then
      local f = h.fast
      local kcode, vcode = band(f, 0xff), band(rshift(f, 8), 0xff)
      local kc, vc = codes[kcode], codes[vcode]
      local n, ok = #t, true
      local pairs_form = type(t[1]) == "table"
      if pairs_form then
        -- other keys beside a list of pairs: C says so
        if nkeys(t) ~= n then ok = false end
        for i = 1, ok and n or 0 do
          local p = t[i]
          if type(p) ~= "table" or not plain(h, kc, vc, p[1], p[2]) then ok = false break end
        end
      else
        n = 0
        for k, v in pairs(t) do
          if not plain(h, kc, vc, k, v) then ok = false break end
          n = n + 1
        end
      end
      if ok and n > 0 and write(h, kcode, vcode, n, t, pairs_form) then return n end
    end
    return c_update_batch(...)
  end

  -- Each op is a vararg function that counts its arguments and tail-calls
  -- a fixed-arity one with the count: the C method gets exactly what the
  -- caller gave ("got no value"), and the fast path runs in no vararg
  -- frame, which LuaJIT's side traces cannot return through (a loop in a
  -- generated codec, one per nested table, ends its trace there; returning
  -- to the caller's loop links the next one).
  -- lookup(m, k, {into = t}) of a GEN map: t, or nil when k is absent;
  -- false when this path does not take it (then C does).
  local function lookup_into(m, k, opts)
    local into = rawget(opts, "into")
    -- a plain table: a __newindex could run Lua (another lookup of this map,
    -- through the buffer being read) between two fields
    if type(into) ~= "table" or getmetatable(into) ~= nil or next(opts) ~= "into"
      or next(opts, "into") ~= nil then
      return false
    end
    local h, mt = fast_map(m, magic)
    if not h or band(h.fast, GEN) == 0 then return false end
    local st = state(m, h, mt)
    if not st or not st.into then return false end
    local kb = gen_key(h, st, k)
    if not kb then return false end
    if lib.bpf_map_lookup_elem(h.fd, kb, st.vbuf) == 0 then return st.into(into) end
    if errno() == ENOENT then return nil end
    return false
  end

  local function lookup_n(n, m, k, opts)
    if type(opts) == "table" and n == 3 then
      local v = lookup_into(m, k, opts)
      if v ~= false then return v end
    elseif opts == nil then
      local h, mt = fast_map(m, magic)
      if h then
        local f = h.fast
        if band(f, GEN) == 0 then
          local kb = key_of(h, k)
          if kb then
            local vc = vcodes[band(rshift(f, 8), 0xff)]
            if lib.bpf_map_lookup_elem(h.fd, kb, vc.buf) == 0 then return read(vc) end
            if errno() == ENOENT then return nil end
          end
        else
          local st = state(m, h, mt)
          if st then
            local kb = gen_key(h, st, k)
            if kb then
              if lib.bpf_map_lookup_elem(h.fd, kb, st.vbuf) == 0 then return st.get() end
              if errno() == ENOENT then return nil end
            end
          end
        end
      end
    end
    return callc(c_lookup, n, m, k, opts)
  end

  local function update_n(n, m, k, v, flags)
    if flags == nil then
      local h, mt = fast_map(m, magic)
      if h then
        local f = h.fast
        if band(f, GEN) == 0 then
          local kb = type(v) == "number" and key_of(h, k)
          local vc = vcodes[band(rshift(f, 8), 0xff)]
          if kb and v >= vc.lo and v <= vc.hi and floor(v) == v then
            vc.buf[0] = v
            if lib.bpf_map_update_elem(h.fd, kb, vc.buf, 0) == 0 then return true end
          end
        else
          local st = state(m, h, mt)
          local put = st and st.put
          -- the value first: key_of's buffer is shared by every map, so it
          -- is written just before the call, with nothing run in between
          if put and put(v) then
            local kb = gen_key(h, st, k)
            if kb and lib.bpf_map_update_elem(h.fd, kb, st.vbuf, 0) == 0 then return true end
          end
        end
      end
    end
    return callc(c_update, n, m, k, v, flags)
  end

  local function delete_n(n, m, k, opts)
    local h, mt
    if opts == nil then h, mt = fast_map(m, magic) end
    if h and band(h.fast, 0x10000) == 0 then
      local kb
      if band(h.fast, 0xff) ~= 0 then
        kb = key_of(h, k)
      else
        local st = state(m, h, mt)
        kb = st and st.key(k)
      end
      if kb then
        if lib.bpf_map_delete_elem(h.fd, kb) == 0 then return true end
        if errno() == ENOENT then return false end
      end
    end
    return callc(c_delete, n, m, k, opts)
  end

  local function lookup(...)
    local n = select("#", ...)
    if n <= 3 then return lookup_n(n, ...) end
    return c_lookup(...)
  end

  local function update(...)
    local n = select("#", ...)
    if n <= 4 then return update_n(n, ...) end
    return c_update(...)
  end

  local function delete(...)
    local n = select("#", ...)
    if n <= 3 then return delete_n(n, ...) end
    return c_delete(...)
  end

  return {lookup = lookup, update = update, delete = delete, update_batch = update_batch}
end
