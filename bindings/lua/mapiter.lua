-- bpfhost.mapiter: the Lua half of m:iterate() and m:drain() (bindings/map.c).
--
-- C fetches the map a chunk at a time (one batch syscall, or get_next_key
-- where the kernel has no batch op) and decodes the chunk into two tables;
-- the function the generic for calls lives here, so that LuaJIT compiles it
-- with the loop body: no C call per element. The state is a table whose
-- fields (complete, done, count) come from C's iterator, count corrected
-- for what the current chunk has handed out.
local setmetatable, tostring = setmetatable, tostring

return function(it, fill)
  local ks, vs = {}, {}
  local n, pos = 0, 0

  local function step()
    if pos < n then
      pos = pos + 1
      return ks[pos], vs[pos]
    end
    n = fill(it, ks, vs) -- raises what C raises (a map closed under us, ...)
    if n == 0 then
      pos = 0
      return nil
    end
    pos = 1
    return ks[1], vs[1]
  end

  local function count() return it.count + pos end

  local state = setmetatable({}, {
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
  return step, state, nil
end
