-- The Lua half of codec_fuzz.c: values(T, data) builds a Lua value for Type
-- T from the bytes data and checks what encode does with it: either T.size
-- bytes that decode and encode again to the same bytes, or a clean error
-- (a string naming the call). The shape comes from T:decode of zero bytes
-- and of the data itself, so field names, array lengths and leaf kinds are
-- the type's; the leaves are then kept, changed, or replaced by values out
-- of range or of the wrong kind.
local ok_ffi, ffi = pcall(require, "ffi")

local M = {}

local function reader(data)
  local pos = 0
  local r = {}
  function r.byte()
    pos = pos + 1
    return data:byte(pos) or 0
  end
  function r.left() return #data - pos end
  function r.str(n)
    local s = data:sub(pos + 1, pos + n)
    pos = pos + n
    return s
  end
  return r
end

local odd_numbers = {
  0, -1, 1, 127, 128, 255, 256, -128, -129, 32767, 32768, 65535, 65536, -32769,
  2^31 - 1, 2^31, -2^31, -2^31 - 1, 2^32 - 1, 2^32, 2^53, 2^53 + 2, -2^53, 2^63, -2^63, 2^64,
  1.5, -0.5, 1e300, -1e300, 0 / 0, 1 / 0, -1 / 0, -0.0, 5e-324,
}
local odd_strings = {
  "", "0", "-1", "18446744073709551615", "18446744073709551616", "-9223372036854775808",
  "9007199254740993", "0x10", "1e3", " 1", "abc", "RED", "GREEN", "BLUE", "\0", "x\0y",
}

local function cdata_int(r)
  if not ok_ffi then return 1 end
  local k = r.byte() % 6
  if k == 0 then return ffi.new("uint64_t", 0xffffffffffffffffULL)
  elseif k == 1 then return ffi.new("int64_t", -0x7fffffffffffffffLL - 1)
  elseif k == 2 then return ffi.new("uint64_t", 2^53 + r.byte())
  elseif k == 3 then return ffi.new("int64_t", -r.byte())
  elseif k == 4 then return ffi.new("int32_t", 7)
  else return ffi.new("double", 1.25) end
end

local mutate

local function any_value(r, depth)
  local k = r.byte() % 8
  if k == 0 then return odd_numbers[r.byte() % #odd_numbers + 1]
  elseif k == 1 then return odd_strings[r.byte() % #odd_strings + 1]
  elseif k == 2 then return r.byte() % 2 == 0
  elseif k == 3 then return cdata_int(r)
  elseif k == 4 and depth < 4 then
    local t = {}
    for i = 1, r.byte() % 4 do t[i] = any_value(r, depth + 1) end
    return t
  elseif k == 5 then return r.str(r.byte() % 24)
  elseif k == 6 then return print -- a function
  else return r.byte() - 128 end
end

-- A changed copy of v (a decoded value, or part of one).
function mutate(v, r, depth)
  local k = r.byte()
  if k < 96 then
    -- keep the kind, change the value
    local t = type(v)
    if t == "number" then
      if k < 48 then return odd_numbers[r.byte() % #odd_numbers + 1] end
      return (r.byte() - 128) * 2 ^ (r.byte() % 64)
    elseif t == "string" then
      if k < 48 then return r.str(#v) end
      return r.str(r.byte() % (#v + 3))
    elseif t == "boolean" then
      return r.byte() % 2 == 0
    elseif t == "cdata" then
      return cdata_int(r)
    elseif t == "table" and depth < 8 then
      local out = {}
      for key, val in pairs(v) do
        local what = r.byte()
        if what < 200 then out[key] = val
        elseif what < 240 then out[key] = mutate(val, r, depth + 1)
        end -- else: left out
      end
      local extra = r.byte()
      if extra > 250 then out.not_a_field = 1
      elseif extra > 245 then out[#v + 1] = 0
      elseif extra > 240 then out[0] = 0
      elseif extra > 235 then out[1.5] = 0
      end
      return out
    end
    return v
  elseif k < 160 then
    return v
  else
    return any_value(r, depth)
  end
end

-- decode then encode; nil when a union refuses (the one refusal allowed:
-- its members cannot all give the union's bytes back)
local function again(T, s)
  local ok, v = pcall(T.decode, T, s)
  assert(ok, v)
  local ok2, s2 = pcall(T.encode, T, v)
  if not ok2 then
    assert(type(s2) == "string" and s2:find("share a union", 1, true), s2)
    return nil
  end
  assert(type(s2) == "string" and #s2 == T.size, "encode gave the wrong size")
  return s2
end

-- What encode gave from a built value may still change once: a char[N]
-- string with a NUL inside is stored whole, and decodes up to that NUL.
-- From then on the bytes are a fixed point.
local function check_encoding(T, s)
  assert(type(s) == "string" and #s == T.size, "encode gave the wrong size")
  local s2 = again(T, s)
  if not s2 then return end
  local s3 = again(T, s2)
  assert(s3 == nil or s3 == s2, "encoding is not canonical for " .. T.name)
end

function M.values(T, data)
  local r = reader(data)
  local base
  if r.byte() % 2 == 0 then
    base = T:decode(("\0"):rep(T.size))
  else
    local b = r.str(T.size)
    base = T:decode(b .. ("\0"):rep(T.size - #b))
  end
  local v = mutate(base, r, 0)
  local ok, s = pcall(T.encode, T, v)
  if ok then
    check_encoding(T, s)
  else
    assert(type(s) == "string", "encode raised a " .. type(s))
    assert(s:find("encode type '", 1, true), "an error that does not name the call: " .. s)
  end
end

return M
