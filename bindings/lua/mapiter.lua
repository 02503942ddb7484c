-- bpfhost.mapiter: the Lua half of m:iterate() and m:drain() (bindings/map.c).
--
-- C fetches the map a chunk at a time (one batch syscall, or get_next_key
-- where the kernel has no batch op); the function the generic for calls
-- lives here, so that LuaJIT compiles it with the loop body: no C call per
-- element. Keys and values that are integers are read from the chunk with
-- the FFI under LuaJIT (64-bit ones beyond 2^53 as the codec's cdata);
-- anything else C decodes into two tables, a chunk at a time. The state is a
-- table whose fields (complete, done, count) come from C's iterator, count
-- corrected for what the current chunk has handed out.
local setmetatable, tonumber = setmetatable, tonumber

local ok, ffi = pcall(require, "ffi")
local cast
local ctypes = {}
if ok and jit then
  cast = ffi.cast
  -- by size * 2 + signed, as map.c's int_code()
  for code, name in pairs{[2] = "uint8_t *", [3] = "int8_t *", [4] = "uint16_t *",
      [5] = "int16_t *", [8] = "uint32_t *", [9] = "int32_t *", [16] = "uint64_t *",
      [17] = "int64_t *"} do
    ctypes[code] = ffi.typeof(name)
  end
end

local LIMIT = 2 ^ 53
-- cdata compares with numbers exactly: no rounding at 2^53 + 1
local function u64(x) if x <= LIMIT then return tonumber(x) end return x end
local function s64(x) if x >= -LIMIT and x <= LIMIT then return tonumber(x) end return x end
local function reader(code)
  if code == 16 then return u64 end
  if code == 17 then return s64 end
  return tonumber
end

local function state_of(it, count)
  return setmetatable({}, {
    __index = function(_, k)
      if k == "count" then return count() end
      return it[k]
    end,
    __tostring = function()
      local tail = ""
      if it.done then tail = it.complete and ", complete" or ", incomplete" end
      return ("%s: %d seen%s"):format(it.what, count(), tail)
    end,
  })
end

-- Integer keys and values, read from the chunk in place.
local function ffi_iter(it, fill, kcode, vcode)
  local KT, VT = ctypes[kcode], ctypes[vcode]
  local kread, vread = reader(kcode), reader(vcode)
  local kp, vp
  local n, pos = 0, 0

  local function step()
    if pos < n then
      local i = pos
      pos = i + 1
      return kread(kp[i]), vread(vp[i])
    end
    local kb, vb
    n, kb, vb = fill(it) -- raises what C raises (a map closed under us, ...)
    if n == 0 then
      pos, kp, vp = 0, nil, nil
      return nil
    end
    kp, vp = cast(KT, kb), cast(VT, vb)
    pos = 1
    return kread(kp[0]), vread(vp[0])
  end

  return step, state_of(it, function() return it.count + pos end), nil
end

return function(it, fill, kcode, vcode)
  if cast and kcode and vcode and ctypes[kcode] and ctypes[vcode] then
    return ffi_iter(it, fill, kcode, vcode)
  end
  local ks, vs = {}, {}
  local n, pos = 0, 0

  local function step()
    if pos < n then
      pos = pos + 1
      return ks[pos], vs[pos]
    end
    n = fill(it, ks, vs)
    if n == 0 then
      pos = 0
      return nil
    end
    pos = 1
    return ks[1], vs[1]
  end

  return step, state_of(it, function() return it.count + pos end), nil
end
