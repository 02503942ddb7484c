local h = require "helper"
local r = require "ringhelp"
local bpf = require "bpfhost"

-- A script for a bpfhost process of its own.
local function script(body)
  return ("package.cpath = %q .. package.cpath\nlocal bpf = require 'bpfhost'\n%s")
    :format(h.build .. "/lib/?.so;", body)
end

describe("loop", function()
  context("arguments", function()
    it("checks sleep, poll and run arguments before waiting", function()
      assert.matches("sleep: the argument must be a number of seconds, got string", h.raises(bpf.sleep, "1"))
      assert.matches("sleep: the argument must be a finite number >= 0", h.raises(bpf.sleep, -1))
      assert.matches("sleep: the argument must be a finite number >= 0", h.raises(bpf.sleep, math.huge))
      -- LuaJIT names the function '?', Lua 5.4 'bpfhost.run'
      assert.matches("bad argument #1 to '[^']*' %(table expected, got number%)", h.raises(bpf.run, 5))
      assert.matches("run: unknown option 'every_s'", h.raises(bpf.run, {every_s = 1}))
      assert.matches("run: every must be > 0", h.raises(bpf.run, {every = 0, tick = print}))
      assert.matches("run: tick needs every", h.raises(bpf.run, {tick = print}))
      assert.equal("run: every needs tick (the function to call every 0.2 seconds)", h.raises(bpf.run, {every = 0.2, timeout = 1}))
      assert.matches("run: tick must be a function, got number", h.raises(bpf.run, {every = 1, tick = 1}))
      assert.matches("run: timeout must be a number of seconds, got string", h.raises(bpf.run, {timeout = "1"}))
      assert.matches("run: sources must be a list, got number", h.raises(bpf.run, {sources = 5}))
      assert.matches("run: sources%[1%] must be a ringbuf, a perfbuf, {source, handler} or a value " ..
        "with fd and serve methods %(an exporter%), got number", h.raises(bpf.run, {sources = {7}}))
      assert.matches("run: sources%[1%]%[1%] must be a ringbuf or perfbuf, got string",
        h.raises(bpf.run, {sources = {{"x", print}}}))
      assert.matches("bad argument #1 to '[^']*' %(table expected, got string%)", h.raises(bpf.poll, "x"))
      assert.matches("poll: timeout must be a number of milliseconds, got string", h.raises(bpf.poll, {}, "x"))
    end)
  end)

  context("lifetime", function()
    it("runs a tick until it returns false, or until the timeout", function()
      local n = 0
      assert.equal("stopped", bpf.run{every = 0.001, tick = function() n = n + 1; return n < 5 end})
      assert.equal(5, n)
      local t0 = bpf.now()
      assert.equal("timeout", bpf.run{timeout = 0.05})
      assert.is_true(bpf.now() >= t0 + 0.05)
      assert.equal("timeout", bpf.run{timeout = 0})
    end)

    it("a tick that raises ends the loop with its error", function()
      local err = h.raises(bpf.run, {every = 0.001, tick = function() error("tock") end})
      assert.matches("loop_spec.lua:%d+: tock", err)
      -- and the loop runs again afterwards
      assert.equal("timeout", bpf.run{timeout = 0})
    end)

    it("bpf.now is monotonic seconds, bpf.sleep sleeps", function()
      local a = bpf.now()
      bpf.sleep(0.02)
      local b = bpf.now()
      assert.is_true(b - a >= 0.02)
      bpf.sleep(0)
    end)

    local jit_it = h.luajit_only(it, pending, "its pipe comes from the FFI; exporter_spec runs a Lua-level source")
    jit_it("runs Lua-level sources (fd, timeout, serve): the exporter's shape", function()
      local ffi = require "ffi"
      pcall(ffi.cdef, "int pipe(int fds[2]); int close(int fd); long write(int fd, const void *b, unsigned long n);")
      local fds = ffi.new("int[2]")
      assert.equal(0, ffi.C.pipe(fds))
      local function source(t)
        t.served = 0
        t.fd = function() return fds[0] end
        t.serve = function(self, ms) assert(ms == 0); self.served = self.served + 1 end
        return t
      end
      -- never readable, but wants serving every 2 ms
      local idle = source{timeout = function() return 2 end}
      local n = 0
      assert.equal("stopped", bpf.run{sources = {idle}, every = 0.05, tick = function() n = n + 1; return n < 2 end})
      assert.is_true(idle.served >= 10, idle.served)
      -- readable: served as it stays so, with no timeout at all
      ffi.C.write(fds[1], "x", 1)
      local busy = source{}
      n = 0
      assert.equal("stopped", bpf.run{sources = {busy}, every = 0.01, tick = function() n = n + 1; return n < 2 end})
      assert.is_true(busy.served >= 2, busy.served)
      -- bpf.poll hands a ready one back
      local c, ready = bpf.poll({busy}, 0)
      assert.equal(0, c)
      assert.same({busy}, ready)
      ffi.C.close(fds[0]); ffi.C.close(fds[1])
    end)
  end)

  context("#root signals", function()
    it("SIGINT and SIGTERM end bpf.sleep with an EINTR error; the host exits 130/143", function()
      for _, sig in ipairs{{"INT", 130, "SIGINT"}, {"TERM", 143, "SIGTERM"}} do
        local pid, path = r.start(script([[
          print("ready"); io.stdout:flush()
          local ok, err = pcall(bpf.sleep, 30)
          print(err.code, err.message); io.stdout:flush()
          error(err)]]))
        finally(function() r.kill(pid) end)
        r.wait_for(path, "ready")
        local rc, ms, out = r.signal_and_wait(pid, path, sig[1])
        assert.equal(sig[2], rc, out)
        assert.is_true(ms < 1000, ms)
        assert.matches("EINTR\tsleep: interrupted by " .. sig[3], out)
      end
    end)

    it("after bpf.run raised, the host's SIGINT handling is back", function()
      local pid, path = r.start(script([[
        require("jit").off()
        assert(not pcall(bpf.run, {every = 0.001, tick = function() error("boom") end}))
        print("ready"); io.stdout:flush()
        local t = os.time()
        while os.time() - t < 20 do end
        print("not interrupted")]]))
      finally(function() r.kill(pid) end)
      r.wait_for(path, "ready")
      local rc, ms, out = r.signal_and_wait(pid, path, "INT")
      assert.equal(130, rc, out)
      assert.is_true(ms < 1000, ms)
      assert.not_matches("not interrupted", out)
      assert.matches("interrupted!", out)
    end)

  end)

  context("#root kernel", function()
    it("SIGINT inside bpf.run with a JIT-hot tick: exit 0 within a second, no link left", function()
      for _, sig in ipairs{"INT", "TERM"} do
        local pid, path = r.start(script(([[
          local obj = bpf.load(%q)
          obj:attach()
          local ring = bpf.ringbuf(obj:get_map("ring"))
          local ticks, acc = 0, 0
          local function hot()
            for i = 1, 200000 do acc = (acc + i * 3) %% 1000003 end
            ticks = ticks + 1
            if ticks == 100 then print("ready"); io.stdout:flush() end
          end
          local why = bpf.run{sources = {{ring, function() end}}, every = 0.001, tick = hot}
          print(why, ticks > 100, require("jit").status())
          obj:close()]]):format(h.obj("test_ring"))))
        finally(function() r.kill(pid) end)
        r.wait_for(path, "ready")
        assert.is_true(r.links_for("ring_tp_getppid") > 0, "the script holds a link")
        local rc, ms, out = r.signal_and_wait(pid, path, sig)
        assert.equal(0, rc, out)
        assert.is_true(ms < 1000, "took " .. ms .. " ms")
        assert.matches("interrupted\ttrue\ttrue", out)
        assert.equal(0, r.links_for("ring_tp_getppid"))
      end
    end)

    it("a signal inside a handler that never ends: the second one kills, links go with it", function()
      local pid, path = r.start(script(([[
        local obj = bpf.load(%q)
        obj:attach()
        local ring = bpf.ringbuf(obj:get_map("ring"))
        obj:program("emit"):test_run{data = string.rep("\0", 64)}
        bpf.run{sources = {{ring, function()
          print("ready"); io.stdout:flush()
          local x = 0
          while true do x = x + 1 end
        end}}}]]):format(h.obj("test_ring"))))
      finally(function() r.kill(pid) end)
      r.wait_for(path, "ready")
      assert.is_true(r.links_for("ring_tp_getppid") > 0, "the script holds a link")
      h.sh("kill -INT " .. pid .. "; sleep 0.2")
      local rc, ms, out = r.signal_and_wait(pid, path, "INT")
      assert.equal(130, rc, out)
      assert.is_true(ms < 1000, ms)
      assert.equal(0, r.links_for("ring_tp_getppid"))
    end)

    it("SIGINT ends a records() wait with an EINTR error", function()
      local pid, path = r.start(script(([[
        local obj = bpf.load(%q)
        local ring = bpf.ringbuf(obj:get_map("ring"))
        print("ready"); io.stdout:flush()
        local ok, err = pcall(function() for rec in ring:records(-1) do end end)
        print(err.code); io.stdout:flush()
        local ok2, err2 = pcall(function() return ring:poll(-1, print) end)
        print("poll", err2.code)]]):format(h.obj("test_ring"))))
      finally(function() r.kill(pid) end)
      r.wait_for(path, "ready")
      local rc, ms, out = r.signal_and_wait(pid, path, "INT")
      assert.equal(0, rc, out)
      assert.matches("EINTR\npoll\tEINTR", out)
    end)
  end)
end)
