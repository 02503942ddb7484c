local h = require "helper"
local r = require "ringhelp"
local bpf = require "bpfhost"

describe("perfbuf", function()
  context("arguments", function()
    it("needs a map handle", function()
      assert.matches("bpfhost.map expected, got number", h.raises(bpf.perfbuf, 1))
      assert.matches("bpfhost.map expected, got table", h.raises(bpf.perfbuf, {}))
    end)

    it("#root refuses other maps and bad options", function()
      local o = bpf.load(h.obj("test_ring"))
      local m = o:get_map("perf")
      assert.matches("perfbuf: map 'ring' is a ringbuf map, not a perf_event_array",
        h.raises(bpf.perfbuf, o:get_map("ring")))
      assert.matches("perfbuf: unknown option 'page' %(known: type, pages, on_lost%)",
        h.raises(bpf.perfbuf, m, {page = 4}))
      for _, bad in ipairs{0, 3, 1.5, "8", 131072} do
        assert.matches("perfbuf: option 'pages' must be a power of 2 from 1 to 65536",
          h.raises(bpf.perfbuf, m, {pages = bad}))
      end
      assert.matches("perfbuf: option 'on_lost' must be a function, got number",
        h.raises(bpf.perfbuf, m, {on_lost = 1}))
      assert.matches("perfbuf: option 'type' must be a Type or a type name, got boolean",
        h.raises(bpf.perfbuf, m, {type = true}))
      local pb = bpf.perfbuf(m)
      assert.matches("poll: timeout must be a number of milliseconds, got boolean",
        h.raises(pb.poll, pb, true, print))
      assert.matches("poll: the handler must be a function, got string", h.raises(pb.poll, pb, 0, "f"))
      pb:close()
      o:close()
    end)
  end)

  context("#root lifetime", function()
    local o
    before_each(function() o = bpf.load(h.obj("test_ring")) end)
    after_each(function() o:close() end)

    it("close is idempotent; use after close is an error", function()
      local pb = bpf.perfbuf(o:get_map("perf"))
      assert.matches("^perfbuf 'perf' %(%d+ CPU rings%)$", tostring(pb))
      assert.is_true(pb:close())
      assert.is_true(pb:close())
      assert.equal("perfbuf 'perf' (closed)", tostring(pb))
      assert.matches("poll perfbuf 'perf': perfbuf is closed", h.raises(pb.poll, pb, 0, print))
      assert.matches("records perfbuf 'perf': perfbuf is closed", h.raises(pb.records, pb, 0))
      assert.equal(0, pb.lost)
    end)

    it("closing from its own handler waits for the poll to end", function()
      local pb = bpf.perfbuf(o:get_map("perf"), {type = "struct ring_event"})
      r.emit_on(0, o:get_map("perf"), "emit_perf", 10)
      local seen = 0
      local n = pb:poll(0, function(e)
        seen = seen + 1
        if seen == 3 then
          pb:close()
          collectgarbage(); collectgarbage()
          assert.equal(2, e.seq) -- a copy: fine after close too
        end
      end)
      assert.equal(3, n)
      assert.matches("perfbuf is closed", h.raises(pb.poll, pb, 0, print))
    end)

    it("closing the object while it polls raises; collecting is harmless", function()
      local pb = bpf.perfbuf(o:get_map("perf"))
      r.emit_on(0, o:get_map("perf"), "emit_perf", 2)
      local err
      pb:poll(0, function() err = err or h.raises(o.close, o) end)
      assert.matches("one of its buffers is being polled", err)
      pb = nil
      for _ = 1, 10 do bpf.perfbuf(o:get_map("perf"), {pages = 1}) end
      collectgarbage(); collectgarbage()
    end)
  end)

  context("#root kernel", function()
    local o
    before_each(function() o = bpf.load(h.obj("test_ring")) end)
    after_each(function() o:close() end)

    it("hands over exactly N records in order, typed or raw, with their CPU", function()
      local pb = bpf.perfbuf(o:get_map("perf"), {type = "struct ring_event", pages = 64})
      r.emit_on(0, o:get_map("perf"), "emit_perf", 2000)
      local got, cpus = {}, {}
      while pb:poll(0, function(e, cpu) got[#got + 1] = e; cpus[cpu] = true end) > 0 do end
      assert.equal(2000, #got)
      for i, e in ipairs(got) do assert.is_true(r.valid(e, i - 1)) end
      assert.equal(0, pb.lost)
      assert.equal(2000, pb.count)
      assert.same({}, pb:lost_by_cpu())
      for cpu in pairs(cpus) do assert.is_true(cpu >= 0) end
      pb:close()
      -- raw: the kernel pads a sample so that its size + 4 is a multiple of 8
      local raw = bpf.perfbuf(o:get_map("perf"))
      r.emit_on(0, o:get_map("perf"), "emit_perf", 3)
      local T = o:type("struct ring_event")
      local n = 0
      for s, cpu in raw:records(0) do
        n = n + 1
        assert.equal(36, #s)
        assert.is_number(cpu)
        assert.is_true(r.valid(T:decode(s:sub(1, 32)), 2000 + n - 1))
      end
      assert.equal(3, n)
      raw:close()
    end)

    it("counts lost samples per CPU and tells on_lost", function()
      local told = {}
      local pb = bpf.perfbuf(o:get_map("perf"), {type = "struct ring_event", pages = 1,
        on_lost = function(cpu, n) told[cpu] = (told[cpu] or 0) + n end})
      r.emit_on(0, o:get_map("perf"), "emit_perf", 1000)
      local got = {}
      while pb:poll(0, function(e) got[#got + 1] = e end) > 0 do end
      assert.is_true(#got > 10 and #got < 1000, #got)
      for i, e in ipairs(got) do assert.is_true(r.valid(e, i - 1)) end
      -- the kernel reports drops with the first sample that fits again
      r.emit_on(0, o:get_map("perf"), "emit_perf", 1)
      while pb:poll(0, function(e) got[#got + 1] = e end) > 0 do end
      assert.equal(1000, got[#got].seq)
      assert.equal(1001, #got + pb.lost)
      assert.same(told, pb:lost_by_cpu())
      local sum = 0
      for _, n in pairs(told) do sum = sum + n end
      assert.equal(pb.lost, sum)
      pb:close()
    end)

    it("a raising handler stops the poll with its error; the rest stays queued", function()
      local pb = bpf.perfbuf(o:get_map("perf"), {type = "struct ring_event"})
      r.emit_on(0, o:get_map("perf"), "emit_perf", 10)
      local err = h.raises(pb.poll, pb, 0, function(e) if e.seq == 4 then error("no 4") end end)
      assert.matches("perfbuf_spec.lua:%d+: no 4", err)
      local rest = {}
      pb:poll(0, function(e) rest[#rest + 1] = e.seq end)
      assert.same({5, 6, 7, 8, 9}, rest)
      pb:close()
    end)

    it("false stops; records with break leaves the rest", function()
      local pb = bpf.perfbuf(o:get_map("perf"), {type = "struct ring_event"})
      r.emit_on(0, o:get_map("perf"), "emit_perf", 10)
      assert.equal(2, pb:poll(0, function(e) return e.seq < 1 end))
      local seqs = {}
      for e in pb:records(0) do
        seqs[#seqs + 1] = e.seq
        if #seqs == 3 then break end
      end
      for e in pb:records(0) do seqs[#seqs + 1] = e.seq end
      assert.same({2, 3, 4, 5, 6, 7, 8, 9}, seqs)
      pb:close()
    end)

    it("works in bpf.poll and bpf.run beside a ring", function()
      local pb = bpf.perfbuf(o:get_map("perf"), {type = "struct ring_event"})
      local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
      r.emit_on(0, o:get_map("perf"), "emit_perf", 5)
      r.emit(o, "emit", 7)
      local np, nr = 0, 0
      local n = bpf.poll({{pb, function() np = np + 1 end}, {rb, function() nr = nr + 1 end}}, 1000)
      assert.equal(12, n)
      local later = r.emit_later(o:get_map("perf"), "emit_perf", 3, 0.2)
      local why = bpf.run{sources = {{pb, function() np = np + 1; return np < 8 end},
        {rb, function() nr = nr + 1 end}}, timeout = 10}
      later.wait()
      assert.equal("stopped", why)
      assert.same({8, 7}, {np, nr})
      pb:close()
      rb:close()
    end)
  end)
end)
