-- bpfhost.codecgen: the codecs bindings/codec.c generates from a Type's plan
-- ("Generated codecs" there), loaded for LuaJIT's fast paths: the ring
-- buffer's copying path (ringview.lua) and m:lookup/m:update/m:delete
-- (mapops.lua).
--
-- Why the FFI: a value built through the C API costs a C call per field and
-- a table filled key by key, more than the bpf() call it comes from (issue
-- 3); Lua code reading an FFI pointer is compiled into the caller's trace,
-- where a struct's table is one template copy. C generates the code, from
-- the same plan its own codec walks; this file only loads it, and checks
-- the layout LuaJIT gives the declaration against the plan (size and every
-- top-level field's offset) and the decoder against T:decode on sample
-- bytes, before anything uses them. A Type that fails is left to C.
local ffi = require "ffi"

local cast, fstring, copy, istype, typeof = ffi.cast, ffi.string, ffi.copy, ffi.istype, ffi.typeof
local type, tonumber, pairs, next, pcall, getmetatable, floor, huge =
  type, tonumber, pairs, next, pcall, getmetatable, math.floor, math.huge

local M = {}

-- -- What the generated code calls --------------------------------------

-- As the codec: 64-bit integers within 2^53 are numbers, others stay cdata.
local U53 = 9007199254740992ULL
local S53, NS53 = 9007199254740992LL, -9007199254740992LL
local function u64(v)
  if v <= U53 then return tonumber(v) end
  return v
end
local function s64(v)
  if v >= NS53 and v <= S53 then return tonumber(v) end
  return v
end
if not pcall(function() return ffi.C.strnlen end) then
  ffi.cdef "size_t strnlen(const char *s, size_t maxlen);"
end
local strnlen = ffi.C.strnlen
local function chars(a, n)
  return fstring(a, strnlen(a, n))
end

-- Floats by their bits first: a NaN read as a field comes as it is, and
-- some payloads are the tags of other values (nil, a pointer) to LuaJIT;
-- the C API gives the canonical NaN for every one, so do these.
local band = require("bit").band
local u8p, u32p = typeof("const uint8_t *"), typeof("const uint32_t *")
local f32p, f64p = typeof("const float *"), typeof("const double *")
local NAN = 0 / 0
local function f32(p, off)
  local q = cast(u8p, p) + off
  if band(cast(u32p, q)[0], 0x7fffffff) > 0x7f800000 then return NAN end
  return cast(f32p, q)[0]
end
local function f64(p, off)
  local q = cast(u8p, p) + off
  local hi = band(cast(u32p, q)[1], 0x7fffffff)
  if hi > 0x7ff00000 or (hi == 0x7ff00000 and cast(u32p, q)[0] ~= 0) then return NAN end
  return cast(f64p, q)[0]
end

local u64t, s64t = typeof("uint64_t"), typeof("int64_t")
local S64MAX = 0x7fffffffffffffffULL

-- One ctype per declaration: every user of a type shares it, and with it
-- the traces compiled for it (ctypes live as long as the FFI state anyway).
local ctypes = {}
local function ctype(decl)
  local ct = ctypes[decl]
  if not ct then
    ct = typeof(decl)
    ctypes[decl] = ct
  end
  return ct
end
M.ctype = ctype

-- One function per source (they do not depend on the layout, only on names).
local decoders, encoders = {}, {}
-- A decoder is function(p); for a struct or union the chunk also gives
-- into(p, t), which sets the fields of the value at p in t.
local intos = {}
local function load_decoder(src)
  local dec = decoders[src]
  if not dec then
    local chunk = loadstring(src, "=bpfhost.codecgen decoder")
    if not chunk then return nil end
    local into
    dec, into = chunk(u64, s64, chars, fstring, f32, f64)
    decoders[src], intos[src] = dec, into
  end
  return dec, intos[src]
end
local function load_encoder(src)
  local enc = encoders[src]
  if not enc then
    local chunk = loadstring(src, "=bpfhost.codecgen encoder")
    if not chunk then return nil end
    enc = chunk(type, floor, getmetatable, next, istype, u64t, s64t, S64MAX, copy, huge)
    encoders[src] = enc
  end
  return enc
end

-- The pointer type and decoder for a declaration and decoder source from C
-- (ringbuf.c), or nil when either does not load (C decodes then).
function M.decoder(decl, src)
  local ok, ct = pcall(ctype, decl)
  if not ok then return nil end
  local dec = load_decoder(src)
  if not dec then return nil end
  return ct, dec
end

-- -- Checks ----------------------------------------------------------------

-- Whether a and b are the same decoded value: NaNs equal, 64-bit cdata by
-- type and value, tables key by key.
local function same(a, b, depth)
  local ta = type(a)
  if ta ~= type(b) then return false end
  if ta == "number" then return a == b or (a ~= a and b ~= b) end
  if ta == "cdata" then return tostring(typeof(a)) == tostring(typeof(b)) and a == b end
  if ta ~= "table" then return a == b end
  if depth > 40 then return false end
  for k, x in pairs(a) do
    if not same(x, b[k], depth + 1) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- Sample bytes: a fixed pseudo-random pattern, and every byte 0xff.
local function samples(size)
  local b, x = {}, 2463534242
  for i = 1, size do
    x = (x * 1103515245 + 12345) % 2147483648
    b[i] = string.char(math.floor(x / 65536) % 256)
  end
  return {table.concat(b), ("\255"):rep(size)}
end

-- Whether the generated decoder builds what T:decode builds from the
-- samples, and the encoder, for what it takes of those values, writes what
-- T:encode writes.
local function agrees(T, c)
  local buf = ffi.new("uint8_t[?]", c.alloc)
  local p, mp = cast(c.ct, buf), cast(c.mct, buf)
  for _, s in ipairs(samples(c.size)) do
    copy(buf, s, c.size)
    local v = T:decode(s)
    if not same(c.dec(p), v, 0) then return false end
    if c.into and not same(c.into(p, {}), v, 0) then return false end
    if c.enc then
      ffi.fill(buf, c.alloc)
      if c.enc(mp, v) then
        local ok, want = pcall(T.encode, T, v)
        if not ok or fstring(buf, c.size) ~= want then return false end
      end
    end
  end
  return true
end

-- -- Codecs of a Type ------------------------------------------------------

-- What load(T) returns:
--   size         T.size
--   kind         the plan's kind: "int", "struct", "array", ...
--   ct, mct      const and mutable pointer types of the declaration
--   alloc        bytes a buffer for one value needs (the declaration may be
--                longer than T.size: bitfields are read in 32-bit units)
--   dec(p)       the value at p, as T:decode gives it
--   into(p, t)   for a struct or union: every field of that value set in t;
--                t returned (nil for other kinds)
--   enc(p, v)    write v at p (zeroed by the caller), true; or false when v
--                is not plain (then only T:encode says what it makes of v);
--                nil when not generated
-- Weak keys: a Type's codecs go with it (nothing here refers back to it).
local loaded = setmetatable({}, {__mode = "k"})

local function build(T)
  local decl, dsrc, esrc, offsets, kind = T:__codegen()
  if not decl or not dsrc then return false end
  -- Each type from its own string: this LuaJIT can return the first type
  -- again for ffi.typeof("const $ *", et) once the call is compiled. The
  -- three are one declaration parsed three times, so one layout.
  local body = decl:match("^const (.*) %*$")
  local ok, et = pcall(ctype, body)
  if not ok then return false end
  local ct, mct = ctype(decl), ctype(body .. " *")
  -- the layout LuaJIT made of the declaration is the plan's
  local size = T.size
  if ffi.sizeof(et) < size then return false end
  for name, off in pairs(offsets) do
    local found, o = pcall(ffi.offsetof, et, name)
    if not found or o ~= off then return false end
  end
  local c = {size = size, kind = kind, ct = ct, mct = mct, alloc = ffi.sizeof(et) + 8}
  c.dec, c.into = load_decoder(dsrc)
  if not c.dec then return false end
  c.enc = esrc and load_encoder(esrc) or nil
  if not agrees(T, c) then return false end
  return c
end

function M.load(T)
  local c = loaded[T]
  if c == nil then
    c = build(T)
    loaded[T] = c
  end
  return c
end

return M
