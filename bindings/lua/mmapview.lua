-- bpfhost.mmapview: the FFI half of m:mmap() views (bindings/mmap.c), under
-- LuaJIT, for arrays of integers.
--
-- v[i] and v[i] = x read and write the mapped element through a typed
-- pointer, so that LuaJIT compiles them into the caller's trace (no C call,
-- no syscall). Only the cases that cannot go wrong are taken here: an index
-- in range, an open view, a number that fits the element (64-bit values
-- within 2^53 as numbers, beyond as the codec's int64_t/uint64_t cdata).
-- Everything else (other keys, methods, errors, a closed or read-only view)
-- goes to the C metamethods, which say what is wrong.
if not jit then return nil end -- the FFI is LuaJIT's: other Luas use the C metamethods

local ffi = require "ffi"

local cast, tonumber, type, floor = ffi.cast, tonumber, type, math.floor

-- Must match the head of struct bh_view in mmap.c (checked by size below).
if not pcall(ffi.typeof, "struct bh_mmapview") then
  ffi.cdef [[
struct bh_mmapview {
  uint32_t magic;
  uint8_t *base;
  size_t len;
  uint32_t stride;
  uint32_t count;
  int writable;
  void *vtype;
  char name[16];
};
]]
end

local VIEW = ffi.typeof("struct bh_mmapview *")
local LIMIT = 2 ^ 53
local cache = {}

local ctypes = {
  [1] = {[false] = "uint8_t *", [true] = "int8_t *"},
  [2] = {[false] = "uint16_t *", [true] = "int16_t *"},
  [4] = {[false] = "uint32_t *", [true] = "int32_t *"},
  [8] = {[false] = "uint64_t *", [true] = "int64_t *"},
}

-- The metatable for views of size-byte integers; base is the C view metatable.
return function(base, size, signed, cview_size)
  if ffi.sizeof("struct bh_mmapview") ~= cview_size then return nil end
  local key = size * 2 + (signed and 1 or 0)
  if cache[key] then return cache[key] end

  local ET = ffi.typeof(ctypes[size][signed])
  local c_index, c_newindex = base.__index, base.__newindex
  local lo, hi
  if size == 8 then
    lo, hi = signed and -LIMIT or 0, LIMIT
  else
    lo = signed and -2 ^ (size * 8 - 1) or 0
    hi = signed and 2 ^ (size * 8 - 1) - 1 or 2 ^ (size * 8) - 1
  end

  local read
  if size == 8 then
    read = function(x)
      local n = tonumber(x)
      if n >= -LIMIT and n <= LIMIT then return n end
      return x
    end
  else
    read = tonumber
  end

  local mt = {}
  for k, v in pairs(base) do mt[k] = v end

  mt.__index = function(v, i)
    if type(i) == "number" then
      local h = cast(VIEW, v)
      local b = h.base
      if b ~= nil and i >= 0 and i < h.count and floor(i) == i then
        return read(cast(ET, b + i * h.stride)[0])
      end
    end
    return c_index(v, i)
  end

  mt.__newindex = function(v, i, x)
    if type(i) == "number" and type(x) == "number" then
      local h = cast(VIEW, v)
      local b = h.base
      if b ~= nil and h.writable ~= 0 and i >= 0 and i < h.count and floor(i) == i
          and x >= lo and x <= hi and floor(x) == x then
        cast(ET, b + i * h.stride)[0] = x
        return
      end
    end
    return c_newindex(v, i, x)
  end

  cache[key] = mt
  return mt
end
