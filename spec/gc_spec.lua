-- bpf.gc_floor (bindings/gc.c): a floor under the collector's headroom.
-- What it does is seen in the heap: with a floor, garbage piles up to about
-- the floor past the live heap before a cycle frees it, and no further;
-- without one, to about the live heap (pause 200). The pause the script had
-- comes back when the floor goes.
local h = require "helper"
local bpf = require "bpfhost"

local MiB = 2 ^ 20

-- The largest Lua heap (bytes) seen while making n tables of 12 fields
-- (about 450 bytes each), sampled every 50.
local function peak_of_garbage(n)
  local peak, keep = 0, {}
  for i = 1, n do
    keep[1] = {a = i, b = i, c = i, d = i, e = i, f = i, g = i, h = i, i = i, j = i, k = i, l = i}
    if i % 50 == 0 then peak = math.max(peak, collectgarbage("count") * 1024) end
  end
  return peak
end

local function pause()
  local p = collectgarbage("setpause", 200)
  collectgarbage("setpause", p)
  return p
end

describe("gc", function()
  local lj = h.luajit_only(it, pending, "Lua 5.4 runs no lua_gc from a finalizer")

  context("arguments", function()
    lj("takes a whole number of bytes from 0 to 1 GiB", function()
      local range = "gc_floor: bytes must be an integer from 0 to 1073741824 (1 GiB), got "
      for _, c in ipairs{{-1, "-1"}, {1.5, "1.5"}, {0 / 0, "nan"}, {2 ^ 30 + 1, "1073741825"},
        {math.huge, "inf"}} do
        assert.equal(range .. c[2], h.raises(bpf.gc_floor, c[1]))
      end
      for _, v in ipairs{"4096", {}, true} do
        assert.equal("gc_floor: bytes must be a number (0 turns the floor off), got " .. type(v),
          h.raises(bpf.gc_floor, v))
      end
      assert.equal(0, bpf.gc_floor())
    end)

    it("says why it is LuaJIT's only under Lua 5.4", function()
      if h.luajit then
        assert.equal("number", type(bpf.gc_floor()))
        return
      end
      assert.equal("gc_floor: needs LuaJIT (Lua 5.4 runs no lua_gc from a finalizer); "
        .. 'collectgarbage("generational") serves short-lived garbage there',
        h.raises(bpf.gc_floor, 4096))
    end)
  end)

  context("the collector", function()
    local base
    before_each(function()
      base = pause()
      bpf.gc_floor(0)
    end)
    after_each(function()
      bpf.gc_floor(0)
      collectgarbage("setpause", base)
    end)

    lj("is off in the module loaded from luajit, and on at 4 MiB in the host", function()
      assert.equal(0, bpf.gc_floor())
      local out, status = h.sh(h.host .. " -e 'print(bpf.gc_floor())'")
      assert.equal(0, status)
      assert.equal("4194304\n", out)
    end)

    lj("lets garbage pile up to the floor past the live heap, and no further", function()
      collectgarbage()
      local live = collectgarbage("count") * 1024
      -- a floor well above the live heap: at pause 200 the headroom is the
      -- live heap, which the floor must then exceed to be seen
      local floor = math.max(8 * MiB, math.ceil(4 * live / MiB) * MiB)
      local without = peak_of_garbage(60000)
      assert.equal(0, bpf.gc_floor(floor))
      local with = peak_of_garbage(4 * floor / 450)
      assert.equal(floor, bpf.gc_floor(0))
      -- from the next cycle on: the one running keeps its start
      collectgarbage()
      local after = peak_of_garbage(60000)
      assert.is_true(without < live * 2 + 2 * MiB, ("without: %d, live %d"):format(without, live))
      assert.is_true(with > live + 0.7 * floor, ("with: %d, live %d"):format(with, live))
      assert.is_true(with < live + floor + 2 * MiB, ("with: %d, live %d"):format(with, live))
      assert.is_true(after < live * 2 + 2 * MiB, ("after: %d, live %d"):format(after, live))
    end)

    lj("gives the script's pause back when it goes, and keeps one set meanwhile", function()
      collectgarbage("setpause", 150)
      bpf.gc_floor(8 * MiB)
      peak_of_garbage(40000)
      assert.is_true(pause() > 150)
      bpf.gc_floor(0)
      assert.equal(150, pause())
      -- set while the floor is on: the least pause it uses, and what stays
      bpf.gc_floor(8 * MiB)
      collectgarbage("setpause", 300)
      peak_of_garbage(60000)
      assert.is_true(pause() >= 300)
      bpf.gc_floor(0)
      assert.equal(300, pause())
      -- off means off: cycles go on without raising it
      peak_of_garbage(20000)
      assert.equal(300, pause())
    end)

    lj("setting it again replaces it (one chain of sentinels, not two)", function()
      bpf.gc_floor(8 * MiB)
      assert.equal(8 * MiB, bpf.gc_floor(2 * MiB))
      assert.equal(2 * MiB, bpf.gc_floor(2 * MiB))
      collectgarbage()
      local live = collectgarbage("count") * 1024
      local floor = math.max(2 * MiB, math.ceil(2 * live / MiB) * MiB)
      bpf.gc_floor(floor)
      local with = peak_of_garbage(4 * floor / 450)
      assert.is_true(with < live + floor + 2 * MiB, ("with: %d, live %d"):format(with, live))
    end)
  end)

  context("lifetime", function()
    lj("a process with a floor set ends at once, in the host and in luajit", function()
      local chunk = "local bpf = require 'bpfhost'; bpf.gc_floor(1048576); "
        .. "local t = {} for i = 1, 100000 do t[1] = {i} end; print('done')"
      local out, status = h.sh(("timeout 20 %s -e %q"):format(h.host, chunk))
      assert.equal(0, status)
      assert.equal("done\n", out)
      out, status = h.sh(("timeout 20 luajit -e %q"):format(
        ("package.cpath = %q .. ';' .. package.cpath; "):format(h.lib .. "/?.so") .. chunk))
      assert.equal(0, status)
      assert.equal("done\n", out)
    end)

    lj("survives collectgarbage run twice with the floor on and off", function()
      bpf.gc_floor(MiB)
      collectgarbage()
      collectgarbage()
      assert.equal(MiB, bpf.gc_floor(0))
      collectgarbage()
      collectgarbage()
      assert.equal(0, bpf.gc_floor())
    end)
  end)
end)
