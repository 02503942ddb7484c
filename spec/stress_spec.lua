-- Lifetime stress (issue 9): random interleavings of open, load, close,
-- get_map, map ops, ring buffers made, polled and closed (also from inside
-- their handlers, also closing their object from there), dropped handles
-- and garbage collection. Seeded and reproducible: BPFHOST_STRESS_SEED
-- (printed when a run fails) and BPFHOST_STRESS_STEPS (make check: 100000,
-- under ASan). Nothing may crash; every refusal is a clean error; at the
-- end, with everything closed and collected, the process holds the fds it
-- held before.
local h = require "helper"
local bpf = require "bpfhost"

local function nfds()
  local n = 0
  local p = io.popen("ls /proc/" .. h.pid() .. "/fd")
  for _ in p:read("*a"):gmatch("%d+") do n = n + 1 end
  p:close()
  return n
end

local function clean(err)
  if type(err) == "string" then return true end
  return type(err) == "table" and type(err.message) == "string"
end

describe("stress", function()
  describe("#root kernel", function()
    it("random interleavings of handles, buffers, handlers and GC", function()
      local steps = tonumber(os.getenv("BPFHOST_STRESS_STEPS")) or 3000
      local seed = tonumber(os.getenv("BPFHOST_STRESS_SEED")) or 9
      math.randomseed(seed)
      local rnd = math.random
      local pkt = ("\0"):rep(64)
      local objs, maps, rings = {}, {}, {}
      -- LuaJIT's compiled traces hold the closures they were specialised on
      -- (and so those closures' upvalues: handlers holding rings, rings
      -- holding objects) until the traces are flushed: flush them, so that
      -- what is unreachable is collected
      local function flush() if jit then jit.flush() end end
      flush()
      for _ = 1, 20 do collectgarbage() end -- what earlier specs left goes first
      local before = nfds()
      local counts = {}

      local function pick(t) return t[rnd(#t)] end
      local function drop(t, v)
        for i = #t, 1, -1 do if t[i] == v then table.remove(t, i) end end
      end

      local function handler(ring)
        return function()
          local k = rnd(12)
          if k == 1 then ring:close()
          elseif k == 2 then local o = pick(objs); if o then o:close() end -- raises: its ring polls
          elseif k == 3 then local r = pick(rings); if r then r:close() end
          elseif k == 4 then collectgarbage("step", 10)
          elseif k == 5 then return false
          elseif k == 6 then error("handler error")
          elseif k == 7 then local r = pick(rings); if r then r:poll(0, function() end) end -- raises if it is this one
          elseif k == 8 then objs, maps = {}, {} -- drop every handle we hold
          end
        end
      end

      local ops = {
        {2, "open", function()
          if #objs >= 3 then return end
          local o = bpf.open(h.obj("test_ring"))
          for name, p in pairs(o:programs()) do p:set_autoload(name == "emit") end
          if rnd(4) > 1 then o:load() end
          objs[#objs + 1] = o
        end},
        {2, "close object", function()
          local o = pick(objs)
          if o then o:close(); if rnd(2) == 1 then drop(objs, o) end end
        end},
        {10, "get_map", function()
          local o = pick(objs)
          if o then maps[#maps + 1] = o:get_map(pick{"ring", "stats", "ring2", "not_a_ring"}) end
          if #maps > 16 then table.remove(maps, 1) end
        end},
        {10, "map op", function()
          local m = pick(maps)
          if m and m.name == "stats" then m:update(rnd(0, 3), rnd(0, 1000)); m:lookup(rnd(0, 3)) end
          if m and m.name == "not_a_ring" then m:update(rnd(100), {}); m:delete(rnd(100)) end
        end},
        {3, "close map", function() local m = pick(maps); if m then m:close() end end},
        {3, "ringbuf", function()
          if #rings >= 4 then return end
          local o = pick(objs)
          if o then
            local typed = rnd(2) == 1
            rings[#rings + 1] = bpf.ringbuf(o:get_map("ring"),
              typed and {type = o:type("struct ring_event"), view = jit ~= nil and rnd(3) == 1} or nil)
          end
        end},
        {6, "emit", function()
          local o = pick(objs)
          if o and o.loaded then o:program("emit"):test_run{data = pkt, ["repeat"] = rnd(1, 64)} end
        end},
        {10, "poll", function()
          local r = pick(rings)
          if r then r:poll(0, handler(r)) end
        end},
        {4, "records", function()
          local r = pick(rings)
          if not r then return end
          local f = handler(r)
          for _ in r:records(0) do if f() == false or rnd(8) == 1 then break end end
        end},
        {3, "bpf.poll", function()
          local a, b = pick(rings), pick(rings)
          if a and b and a ~= b then bpf.poll({{a, handler(a)}, {b, handler(b)}}, 0) end
        end},
        {2, "close ring", function()
          local r = pick(rings)
          if r then r:close(); drop(rings, r) end
        end},
        {2, "gc", function()
          if rnd(2) == 1 then table.remove(objs, 1) end
          if rnd(2) == 1 then table.remove(rings, 1) end
          collectgarbage(rnd(2) == 1 and "collect" or "step")
        end},
      }
      local total = 0
      for _, op in ipairs(ops) do total = total + op[1] end

      for step = 1, steps do
        local x, op = rnd(total), nil
        for _, o in ipairs(ops) do
          x = x - o[1]
          if x <= 0 then op = o; break end
        end
        local ok, err = pcall(op[3])
        if not ok and not clean(err) then
          error(("step %d (%s), seed %d: not a clean error: %s"):format(step, op[2], seed, tostring(err)))
        end
        counts[op[2]] = (counts[op[2]] or 0) + (ok and 1 or 0)
      end

      for _, r in ipairs(rings) do r:close() end
      for _, o in ipairs(objs) do o:close() end
      objs, maps, rings = nil, nil, nil
      flush()
      -- a ring's finalizer releases its map handle, whose finalizer releases the
      -- object: each link of the chain takes one more cycle
      for _ = 1, 20 do collectgarbage() end
      -- nothing more than before (busted may close one of its own meanwhile)
      local after = nfds()
      assert.is_true(after <= before, ("fds: %d before, %d after (seed %d)"):format(before, after, seed))
      -- every kind of step ran, and most of them did something
      for _, op in ipairs(ops) do assert.is_true((counts[op[2]] or 0) > 0, op[2]) end
    end)
  end)
end)
