local h = require "helper"
local r = require "ringhelp"
local bpf = require "bpfhost"
-- The view (records read in place) is LuaJIT's FFI: Lua 5.4 reads copies.
local ffi = h.luajit and require "ffi"
local VIEWS = ffi and {false, true} or {false}
local jit_it = h.luajit_only(it, pending, "the view reads records in place through the FFI")

-- Every test_ring program run emits one record; the fixture numbers them.
local N = 20000

describe("ringbuf", function()
  context("arguments", function()
    it("needs a map handle", function()
      assert.matches("bpfhost.map expected, got number", h.raises(bpf.ringbuf, 42))
      assert.matches("bpfhost.map expected, got no value", h.raises(bpf.ringbuf))
      assert.matches("bpfhost.map expected, got nil", h.raises(bpf.perfbuf, nil))
      assert.matches("bpfhost.map expected, got string", h.raises(bpf.user_ringbuf, "events"))
    end)

    it("#root refuses maps that are not ring buffers, and bad options", function()
      local o = bpf.load(h.obj("test_ring"))
      local ring = o:get_map("ring")
      assert.matches("ringbuf: map 'not_a_ring' is a hash map, not a ringbuf",
        h.raises(bpf.ringbuf, o:get_map("not_a_ring")))
      assert.matches("map 'ring' is a ringbuf map, not a user_ringbuf",
        h.raises(bpf.user_ringbuf, ring))
      assert.matches("ringbuf: unknown option 'typ' %(known: type, view, lost%)",
        h.raises(bpf.ringbuf, ring, {typ = "struct ring_event"}))
      assert.matches("ringbuf: options must be a table, got string", h.raises(bpf.ringbuf, ring, "x"))
      assert.matches("option 'type' must be a Type or a type name, got number",
        h.raises(bpf.ringbuf, ring, {type = 42}))
      assert.matches("option 'view' must be a boolean, got string",
        h.raises(bpf.ringbuf, ring, {view = "yes"}))
      assert.matches("option 'lost' must be a map, a map name or false, got number",
        h.raises(bpf.ringbuf, ring, {lost = 42}))
      assert.matches("no drop counter map 'nope' beside ringbuf 'ring'",
        h.raises(bpf.ringbuf, ring, {lost = "nope"}))
      assert.matches("drop counter map 'not_a_ring' must be a %(per%-CPU%) array of u64",
        h.raises(bpf.ringbuf, ring, {lost = "not_a_ring"}))
      assert.matches(ffi and "view needs a type" or "view needs LuaJIT's FFI",
        h.raises(bpf.ringbuf, ring, {view = true}))
      assert.matches("no type 'struct nope'", h.raises(bpf.ringbuf, ring, {type = "struct nope"}))
      o:close()
    end)

    it("#root checks poll, records and add arguments", function()
      local o = bpf.load(h.obj("test_ring"))
      local rb = bpf.ringbuf(o:get_map("ring"))
      assert.matches("poll: timeout must be a number of milliseconds, got string",
        h.raises(rb.poll, rb, "x", print))
      assert.matches("poll: timeout must be milliseconds from 0 to 86400000, or %-1",
        h.raises(rb.poll, rb, -5, print))
      assert.matches("poll: a handler is needed: ring:poll%(ms, function%(rec, name%) ... end%)",
        h.raises(rb.poll, rb, 10))
      assert.matches("poll: the handler must be a function, got number", h.raises(rb.poll, rb, 0, 42))
      assert.matches("records: timeout must be a number of milliseconds, got table",
        h.raises(rb.records, rb, {}))
      assert.matches("bpfhost.ringbuf expected, got number", h.raises(rb.poll, 42, 0, print))
      assert.matches("add: map 'not_a_ring' is a hash map", h.raises(rb.add, rb, o:get_map("not_a_ring")))
      assert.matches("add: ringbuf 'ring' is already in this consumer", h.raises(rb.add, rb, o:get_map("ring")))
      -- a failed add leaves the consumer as it was
      assert.equal(0, rb:poll(0, print))
      assert.matches("every ring of a consumer is read the same way",
        h.raises(rb.add, rb, o:get_map("ring2"), {type = "struct ring_sample", view = true}))
      r.emit(o, "emit", 3)
      assert.equal(3, rb:poll(0, function() end))
      rb:close()
      o:close()
    end)

    it("#root checks submit arguments", function()
      local o = bpf.load(h.obj("test_ring"))
      local up = bpf.user_ringbuf(o:get_map("urb"))
      assert.matches("record must be a string of bytes %(or give the user_ringbuf a type%), got table",
        h.raises(up.submit, up, {seq = 1}))
      assert.matches("an empty record", h.raises(up.submit, up, ""))
      assert.matches("a record of 16380 bytes does not fit %(the ring holds 16384 bytes%)",
        h.raises(up.submit, up, string.rep("x", 16380)))
      -- the largest that fits does
      assert.is_true(up:submit(string.rep("x", 16376)))
      assert.matches("submit: unknown option 'wiat'", h.raises(up.submit, up, "x", {wiat = 1}))
      assert.matches("submit: timeout must be a number of milliseconds, got string",
        h.raises(up.submit, up, "x", {wait = "long"}))
      local typed = bpf.user_ringbuf(o:get_map("urb"), {type = "struct ring_event"})
      assert.matches("submit user_ringbuf 'urb': record.seq: ", h.raises(typed.submit, typed, {seq = 0.5}))
      assert.matches("user_ringbuf: unknown option 'types'", h.raises(bpf.user_ringbuf, o:get_map("urb"), {types = 1}))
      o:close()
    end)
  end)

  context("#root lifetime", function()
    local o
    before_each(function() o = bpf.load(h.obj("test_ring")) end)
    after_each(function() o:close() end)

    it("close is idempotent; use after close is an error", function()
      local rb = bpf.ringbuf(o:get_map("ring"))
      assert.matches("^ringbuf 'ring' %(fd %d+%)$", tostring(rb))
      assert.is_true(rb:close())
      assert.is_true(rb:close())
      assert.equal("ringbuf 'ring' (closed)", tostring(rb))
      assert.matches("poll ringbuf 'ring': ringbuf is closed", h.raises(rb.poll, rb, 0, print))
      assert.matches("records ringbuf 'ring': ringbuf is closed", h.raises(rb.records, rb, 0))
      assert.matches("add ringbuf 'ring': ringbuf is closed", h.raises(rb.add, rb, o:get_map("ring2")))
      assert.matches("poll: ringbuf 'ring' is closed", h.raises(bpf.poll, {rb}, 0))
      local up = bpf.user_ringbuf(o:get_map("urb"))
      assert.is_true(up:close())
      assert.is_true(up:close())
      assert.matches("submit user_ringbuf 'urb': user_ringbuf is closed", h.raises(up.submit, up, "x"))
    end)

    it("keeps working after its map handle and its object are closed", function()
      local m = o:get_map("ring")
      local rb = bpf.ringbuf(m, {type = "struct ring_event"})
      r.emit(o, "emit", 5)
      m:close()
      o:close()
      local got = r.drain(rb)
      assert.equal(5, #got)
      assert.is_true(r.valid(got[5], 4))
      assert.equal(0, rb.lost) -- the ring holds its own fd of ring_lost
      rb:close()
    end)

    it("closing the object while its ring polls raises; the ring goes on", function()
      local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
      r.emit(o, "emit", 3)
      local err
      local n = rb:poll(0, function() err = err or h.raises(o.close, o) end)
      assert.equal(3, n)
      assert.matches("close object '.-test_ring.bpf.o': one of its buffers is being polled", err)
      assert.is_true(o:close()) -- after the poll it may
      rb:close()
    end)

    for _, view in ipairs{false, true} do
      local it = view and jit_it or it
      it("closing a ring from its own handler waits for the poll to end" .. (view and " (view)" or ""), function()
        local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = view})
        r.emit(o, "emit", 10)
        local seen = {}
        local n = rb:poll(0, function(e)
          seen[#seen + 1] = tonumber(e.seq)
          if #seen == 2 then
            assert.is_true(rb:close())
            -- the record is still readable: nothing was freed under us
            seen[#seen + 1] = tonumber(e.seq) + 100
            collectgarbage(); collectgarbage()
          end
        end)
        assert.equal(2, n)
        assert.same({0, 1, 101}, seen)
        assert.equal("ringbuf 'ring' (closed)", tostring(rb))
        assert.matches("ringbuf is closed", h.raises(rb.poll, rb, 0, print))
        -- the next consumer starts after what the closed one consumed: a
        -- copying ring had copied out the whole batch, a view only what it saw
        local rb2 = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
        local rest = r.drain(rb2)
        assert.equal(view and 8 or 0, #rest)
        if view then assert.equal(2, rest[1].seq) end
        rb2:close()
      end)

      it("closing a ring in a records loop ends it" .. (view and " (view)" or ""), function()
        local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = view})
        r.emit(o, "emit", 10)
        local n = 0
        for e in rb:records(0) do
          n = n + 1
          if n == 3 then
            rb:close()
            collectgarbage(); collectgarbage()
            assert.equal(2, tonumber(e.seq)) -- still mapped until the loop moves on
            assert.equal(4242, e.pid)
          end
        end
        assert.equal(3, n)
      end)
    end

    it("a handler cannot poll its own ring (nor start records)", function()
      local rb = bpf.ringbuf(o:get_map("ring"))
      r.emit(o, "emit", 2)
      local e1, e2
      rb:poll(0, function()
        e1 = e1 or h.raises(rb.poll, rb, 0, print)
        e2 = e2 or h.raises(rb.records, rb, 0)
      end)
      assert.matches("poll: ringbuf 'ring' is already being polled", e1)
      assert.matches("records: ringbuf 'ring' is being polled", e2)
      rb:close()
    end)

    it("survives garbage collection while polling and while not referenced", function()
      local count = 0
      do
        local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
        r.emit(o, "emit", 100)
        rb:poll(0, function(e)
          count = count + 1
          if count % 10 == 0 then collectgarbage(); collectgarbage() end
        end)
        rb = nil
      end
      collectgarbage(); collectgarbage()
      assert.equal(100, count)
      for _ = 1, ffi and 20 or 0 do bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = true}) end
      for _ = 1, 20 do bpf.user_ringbuf(o:get_map("urb")) end
      collectgarbage(); collectgarbage()
      if not ffi then return end
      -- a view records loop abandoned half-way: the record it held counts as
      -- consumed once the ring is closed (or collected: its pages stay mapped
      -- until then, the loop body may still hold the pointer)
      r.emit(o, "emit", 5)
      local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = true})
      local held
      for e in rb:records(0) do held = e; break end
      rb:close()
      assert.equal(4242, held.pid)
      local rb2 = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
      assert.equal(4, #r.drain(rb2))
      rb2:close()
      r.emit(o, "emit", 5)
      rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = true})
      for e in rb:records(0) do break end
      rb, held = nil, nil
      collectgarbage(); collectgarbage()
    end)
  end)

  context("#root kernel", function()
    local o
    before_each(function() o = bpf.load(h.obj("test_ring")) end)
    after_each(function() o:close() end)

    local modes = {
      {"typed (Type)", function(obj) return {type = obj:type("struct ring_event")} end},
      {"typed (name)", function() return {type = "struct ring_event"} end},
      {"view", function(obj) return {type = obj:type("struct ring_event"), view = true} end},
    }
    for _, mode in ipairs(modes) do
      local it = mode[1] == "view" and jit_it or it
      it("hands over exactly N records, in order, none lost: " .. mode[1], function()
        local rb = bpf.ringbuf(o:get_map("ring"), mode[2](o))
        r.emit(o, "emit", N)
        local n, bad = 0, 0
        local ok = rb:poll(0, function(e, name)
          if not r.valid({seq = tonumber(e.seq), pid = e.pid, check = e.check,
              comm = type(e.comm) == "string" and e.comm or ffi.string(e.comm)}, n) then
            bad = bad + 1
          end
          assert(name == "ring")
          n = n + 1
        end)
        while rb:poll(0, function() n = n + 1 end) > 0 do end
        assert.equal(N, n)
        assert.equal(0, bad)
        assert.equal(N, rb.count)
        assert.equal(0, rb.lost)
        assert.same({ring = {records = N, lost = 0, lost_map = "ring_lost"}}, rb:stats())
        assert.is_true(ok > 0)
        rb:close()
      end)
    end

    it("hands over raw records as strings of their exact length", function()
      local rb = bpf.ringbuf(o:get_map("ring"))
      local T = o:type("struct ring_event")
      r.emit(o, "emit", 100)
      r.emit(o, "emit_bytes", 200)
      local got = r.drain(rb)
      assert.equal(300, #got)
      for i = 1, 100 do
        assert.equal(32, #got[i])
        assert.is_true(r.valid(T:decode(got[i]), i - 1))
      end
      for i = 0, 199 do
        local s = got[101 + i]
        assert.equal(8 + i % 57, #s)
        local seq = 0
        for k = 8, 1, -1 do seq = seq * 256 + s:byte(k) end
        assert.equal(i, seq)
        for k = 9, #s do assert.equal(k - 1, s:byte(k)) end
      end
      rb:close()
    end)

    it("never hands over discarded records", function()
      for _, view in ipairs(VIEWS) do
        local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = view})
        r.emit(o, "emit_discard", 50)
        local n = 0
        for e in rb:records(0) do
          assert.equal(4242, e.pid)
          n = n + 1
        end
        assert.equal(50, n)
        rb:close()
      end
    end)

    it("overflow: a small ring keeps the first records whole and counts every drop", function()
      local rb = bpf.ringbuf(o:get_map("small"), {type = "struct ring_event"})
      r.emit(o, "emit_small", 1000)
      local got = r.drain(rb)
      assert.is_true(#got > 50 and #got < 1000, #got)
      for i, e in ipairs(got) do assert.is_true(r.valid(e, i - 1)) end
      assert.equal(1000 - #got, rb.lost)
      assert.same({small = {records = #got, lost = 1000 - #got, lost_map = "small_lost"}}, rb:stats())
      -- the same counter, read by hand
      assert.equal(1000 - #got, bpf.sum(o:get_map("small_lost"):lookup(0)))
      -- the ring works on after the overflow
      r.emit(o, "emit_small", 10)
      got = r.drain(rb)
      assert.equal(10, #got)
      assert.equal(1000, got[1].seq)
      rb:close()
    end)

    it("finds the drop counter by option, or not at all", function()
      local rb = bpf.ringbuf(o:get_map("small"), {lost = o:get_map("small_lost")})
      r.emit(o, "emit_small", 300)
      local got = r.drain(rb)
      assert.equal(300 - #got, rb.lost)
      rb:close()
      local none = bpf.ringbuf(o:get_map("small"), {lost = false})
      r.emit(o, "emit_small", 300)
      got = r.drain(none)
      assert.equal(0, none.lost)
      assert.same({small = {records = #got, lost = 0}}, none:stats())
      none:close()
      local byname = bpf.ringbuf(o:get_map("ring2"), {lost = "small_lost"})
      assert.is_true(byname.lost > 0)
      byname:close()
    end)

    for _, view in ipairs{false, true} do
      local it = view and jit_it or it
      local tag = view and " (view)" or ""
      it("a raising handler stops the poll; its error and traceback reach the caller; the rest stays queued" .. tag, function()
        local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = view})
        r.emit(o, "emit", 10)
        local function handler(e)
          if e.seq == 3 then error("boom at 3") end
        end
        local ok, tb = xpcall(function() return rb:poll(0, handler) end, debug.traceback)
        assert.is_false(ok)
        assert.matches("^spec/ringbuf_spec.lua:%d+: boom at 3\nstack traceback:", tb)
        -- the traceback runs from the handler's own frame, through the
        -- hand-over loop and poll, to this function: no pcall in between
        local at_error = tb:find("in function 'error'", 1, true)
        local at_loop = tb:find(ffi and "bpfhost.ringview:" or "[C]: in method 'poll'", 1, true) -- 5.4: C's loop
        -- (Lua 5.4 names the handler's frame <spec/ringbuf_spec.lua:N> too: look past the loop)
        local at_caller = tb:find("in function <spec/ringbuf_spec.lua:", (at_loop or #tb) + 1, true)
        assert.is_true(at_error < at_loop and at_loop < at_caller, tb)
        local rest = {}
        rb:poll(0, function(e) rest[#rest + 1] = tonumber(e.seq) end)
        assert.same({4, 5, 6, 7, 8, 9}, rest)
        -- the poll ended cleanly: the object can be closed, signals are ours again
        rb:close()
      end)

      it("a handler returning false stops the poll; the rest stays queued" .. tag, function()
        local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = view})
        r.emit(o, "emit", 10)
        local seen = 0
        assert.equal(3, rb:poll(0, function() seen = seen + 1; return seen < 3 end))
        local rest = {}
        assert.equal(7, rb:poll(0, function(e) rest[#rest + 1] = tonumber(e.seq) end))
        assert.same({3, 4, 5, 6, 7, 8, 9}, rest)
        rb:close()
      end)

      it("records: break stops, the rest is there next time" .. tag, function()
        local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = view})
        r.emit(o, "emit", 10)
        local first = {}
        for e, name in rb:records(0) do
          assert.equal("ring", name)
          first[#first + 1] = tonumber(e.seq)
          if #first == 4 then break end
        end
        local rest = {}
        for e in rb:records(0) do rest[#rest + 1] = tonumber(e.seq) end
        assert.same({0, 1, 2, 3}, first)
        assert.same({4, 5, 6, 7, 8, 9}, rest)
        rb:close()
      end)

      it("records waits up to ms for the next record, then ends" .. tag, function()
        local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = view})
        local later = r.emit_later(o:get_map("ring"), "emit", 7, 0.3)
        local got = {}
        for e in rb:records(5000) do
          got[#got + 1] = tonumber(e.seq)
          if #got == 7 then break end
        end
        later.wait()
        assert.same({0, 1, 2, 3, 4, 5, 6}, got)
        local n = 0
        for _ in rb:records(20) do n = n + 1 end
        assert.equal(0, n)
        rb:close()
      end)
    end

    it("a record of the wrong size for the type is an error, and is not seen again", function()
      for _, view in ipairs(VIEWS) do
        local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = view})
        r.emit(o, "emit", 1)
        r.emit(o, "emit_bytes", 1) -- 8 bytes
        r.emit(o, "emit", 1)
        local seqs = {}
        local err = h.raises(rb.poll, rb, 0, function(e) seqs[#seqs + 1] = tonumber(e.seq) end)
        assert.matches("^ringbuf 'ring': a record of %d bytes does not match struct ring_event " ..
          "%(32 bytes%); give no type for variable%-size records$", err)
        assert.equal(1, rb:poll(0, function(e) seqs[#seqs + 1] = tonumber(e.seq) end))
        local base = view and 2 or 0
        assert.same({base, base + 1}, seqs)
        rb:close()
      end
    end)

    it("several rings in one consumer, each with its type", function()
      local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
      assert.equal(rb, rb:add(o:get_map("ring2"), {type = "struct ring_sample"}))
      r.emit(o, "emit", 300)
      r.emit(o, "emit2", 200)
      local by = {ring = {}, ring2 = {}}
      while rb:poll(0, function(rec, name) table.insert(by[name], rec) end) > 0 do end
      assert.equal(300, #by.ring)
      assert.equal(200, #by.ring2)
      for i, e in ipairs(by.ring) do assert.is_true(r.valid(e, i - 1)) end
      for i, s in ipairs(by.ring2) do
        assert.same({id = i - 1, kind = 7, flag = 1, pad = 0, delta = -(i - 1)}, s)
      end
      assert.equal(500, rb.count)
      assert.same({ring = {records = 300, lost = 0, lost_map = "ring_lost"},
        ring2 = {records = 200, lost = 0}}, rb:stats())
      -- records takes from both
      r.emit(o, "emit", 3)
      r.emit(o, "emit2", 3)
      local names = {}
      for _, name in rb:records(0) do names[name] = (names[name] or 0) + 1 end
      assert.same({ring = 3, ring2 = 3}, names)
      rb:close()
    end)

    jit_it("several rings in one view consumer", function()
      local rb = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event", view = true})
      rb:add(o:get_map("ring2"), {type = "struct ring_sample"})
      r.emit(o, "emit", 30)
      r.emit(o, "emit2", 20)
      local sum = {ring = 0, ring2 = 0}
      while rb:poll(0, function(e, name) sum[name] = sum[name] + (name == "ring" and tonumber(e.seq) or e.id) end) > 0 do end
      assert.same({ring = 435, ring2 = 190}, sum)
      rb:close()
    end)

    it("decodes every kind of field as the codec does, copying and through the view", function()
      local T = o:type("struct ring_mixed")
      local raw = bpf.ringbuf(o:get_map("ring3"))
      r.emit(o, "emit_mixed", 40)
      local bytes = r.drain(raw)
      raw:close()
      assert.equal(40, #bytes)
      -- the same records again, through the typed consumer
      o:close()
      o = bpf.load(h.obj("test_ring"))
      local typed = bpf.ringbuf(o:get_map("ring3"), {type = T})
      r.emit(o, "emit_mixed", 40)
      local recs = r.drain(typed)
      typed:close()
      assert.equal(40, #recs)
      for i = 1, 40 do assert.same(T:decode(bytes[i]), recs[i]) end
      local e = recs[2]
      assert.equal(-1001, e.s16)
      assert.equal(-2000000014, e.neg)
      assert.equal(ffi and "cdata" or "integer", ffi and type(e.big) or math.type(e.big))
      assert.equal("mixed-01", e.name)
      assert.same({1, 2}, {e.pts[1].x, e.pts[2].x})
      if not ffi then return end
      -- the view reads the same fields
      o:close()
      o = bpf.load(h.obj("test_ring"))
      local view = bpf.ringbuf(o:get_map("ring3"), {type = T, view = true})
      r.emit(o, "emit_mixed", 40)
      local i = 0
      while view:poll(0, function(v)
        i = i + 1
        local d = T:decode(bytes[i])
        assert.equal(d.b8, v.b8)
        assert.equal(d.s16, v.s16)
        assert.equal(d.s32, v.s32)
        assert.is_true(d.big == v.big)
        assert.is_true(d.neg == v.neg)
        assert.equal(d.yes, v.yes)
        assert.equal(d.color, v.color)
        assert.equal(d.name, ffi.string(v.name))
        assert.equal(d.raw, ffi.string(v.raw, 5))
        assert.equal(d.grid[2][3], v.grid[1][2])
        assert.equal(d.pts[2].x, v.pts[1].x)
        assert.equal(d.pts[2].tag, ffi.string(v.pts[1].tag))
        assert.equal(d.word, v.word)
        assert.equal(d.bytes, ffi.string(v.bytes, 4))
        assert.same({d.lo, d.mid, d.hi, d.sbits}, {v.lo, v.mid, v.hi, v.sbits})
        assert.equal(d.ratio, v.ratio)
        assert.equal(d.f, v.f)
      end) > 0 do end
      assert.equal(40, i)
      view:close()
    end)

    it("decodes in C what the generated decoder does not cover", function()
      local T = o:type("struct ring_wide")
      local raw = bpf.ringbuf(o:get_map("ring4"))
      local typed = bpf.ringbuf(o:get_map("ring4"), {type = T})
      r.emit(o, "emit_wide", 30)
      local bytes = r.drain(raw)
      raw:close()
      assert.equal(30, #bytes)
      o:close()
      o = bpf.load(h.obj("test_ring"))
      typed = bpf.ringbuf(o:get_map("ring4"), {type = T})
      r.emit(o, "emit_wide", 30)
      local seen = {}
      -- fill() decodes a few hundred at a time: false and errors still stop at the record
      assert.equal(5, typed:poll(0, function(w) seen[#seen + 1] = w; return #seen < 5 end))
      local err = h.raises(typed.poll, typed, 0, function(w) if w.seq == 7 then error("seven") end seen[#seen + 1] = w end)
      assert.matches("seven", err)
      typed:poll(0, function(w) seen[#seen + 1] = w end)
      assert.equal(29, #seen)
      local k = 0
      for i = 1, 30 do
        if i ~= 8 then
          k = k + 1
          assert.same(T:decode(bytes[i]), seen[k])
        end
      end
      assert.equal(0xabcdef0123 + 3, seen[4].wide)
      typed:close()
      if not ffi then return end
      -- the view leaves the 40-bit field out: reading it is an error, the rest reads
      local view = bpf.ringbuf(o:get_map("ring4"), {type = T, view = true})
      r.emit(o, "emit_wide", 1)
      view:poll(0, function(w)
        assert.equal(30, tonumber(w.seq))
        assert.equal(30 + 599, w.arr[599])
        assert.matches("has no member named 'wide'", h.raises(function() return w.wide end))
      end)
      view:close()
    end)

    it("without the FFI half, C hands records over, with the same results", function()
      package.loaded["bpfhost.ringview"] = nil
      local saved = package.preload["bpfhost.ringview"]
      package.preload["bpfhost.ringview"] = function() error("no FFI here") end
      local ok, err = pcall(function()
        assert.matches("view needs LuaJIT's FFI", h.raises(bpf.ringbuf, o:get_map("ring"),
          {type = "struct ring_event", view = true}))
        local typed = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
        local raw = bpf.ringbuf(o:get_map("ring2"))
        r.emit(o, "emit", 20)
        r.emit(o, "emit2", 3)
        local got = {}
        assert.equal(4, typed:poll(0, function(e) got[#got + 1] = e; return #got < 4 end))
        local e2 = h.raises(typed.poll, typed, 0, function(e) if e.seq == 6 then error("six") end got[#got + 1] = e end)
        assert.matches("six", e2)
        while typed:poll(0, function(e) got[#got + 1] = e end) > 0 do end
        assert.equal(19, #got)
        for i, e in ipairs(got) do assert.is_true(r.valid(e, i <= 6 and i - 1 or i)) end
        local strs = r.drain(raw)
        assert.equal(3, #strs)
        assert.equal(16, #strs[1])
        typed:close()
        raw:close()
      end)
      package.preload["bpfhost.ringview"] = saved
      package.loaded["bpfhost.ringview"] = nil
      assert(ok, err)
    end)

    it("user ringbuf: records go through a program and come back", function()
      local up = bpf.user_ringbuf(o:get_map("urb"), {type = "struct ring_event"})
      local T = o:type("struct ring_event")
      for i = 0, 99 do
        assert.is_true(up:submit({seq = i, pid = i, check = 7, comm = "up" .. i}))
      end
      -- raw bytes work too, whatever the type
      assert.is_true(up:submit(T:encode({seq = 100, pid = 100, comm = "bytes"})))
      assert.is_true(up:submit("short")) -- the program refuses records this small
      r.emit(o, "echo_user", 1)
      assert.same(101, o:get_map("stats"):lookup(0))
      assert.same(1, o:get_map("stats"):lookup(1))
      local echo = bpf.ringbuf(o:get_map("echo"), {type = T})
      local got = r.drain(echo)
      assert.equal(101, #got)
      for i = 0, 99 do
        assert.same({seq = i, pid = i + 1, check = 7, comm = "up" .. i}, got[i + 1])
      end
      assert.equal("bytes", got[101].comm)
      echo:close()
      up:close()
    end)

    it("user ringbuf: a full ring is false; wait waits for room", function()
      local up = bpf.user_ringbuf(o:get_map("urb"), {type = "struct ring_event"})
      local n = 0
      while up:submit({seq = n}) do n = n + 1 end
      assert.is_true(n > 100 and n < 16384 / 32, n)
      assert.is_false(up:submit({seq = n}))
      assert.is_false(up:submit({seq = n}, {wait = 50}))
      assert.is_false(up:submit({seq = n}, {wait = false}))
      -- another process drains the ring in a while: the wait ends with room
      local later = r.emit_later(o:get_map("urb"), "echo_user", 1, 0.2)
      assert.is_true(up:submit({seq = n}, {wait = 10000}))
      later.wait()
      assert.equal(n, o:get_map("stats"):lookup(0))
      up:close()
    end)

    it("bpf.poll waits on several sources; handlers get theirs, the rest come back ready", function()
      local a = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
      local b = bpf.ringbuf(o:get_map("ring2"), {type = "struct ring_sample"})
      local n0, ready0 = bpf.poll({{a, print}, b}, 0)
      assert.equal(0, n0)
      assert.same({}, ready0)
      r.emit(o, "emit", 5)
      r.emit(o, "emit2", 2)
      local seen = 0
      local n, ready = bpf.poll({{a, function() seen = seen + 1 end}, b}, 1000)
      assert.equal(5, n)
      assert.equal(5, seen)
      assert.equal(1, #ready)
      assert.equal(b, ready[1])
      assert.equal(2, b:poll(0, function() end))
      -- and it waits
      local later = r.emit_later(o:get_map("ring2"), "emit2", 1, 0.2)
      n, ready = bpf.poll({a, b}, 10000)
      later.wait()
      assert.equal(0, n)
      assert.same({b}, ready)
      a:close()
      b:close()
    end)

    it("bpf.run hands records to handlers until one returns false", function()
      local a = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
      local b = bpf.ringbuf(o:get_map("ring2"), {type = "struct ring_sample"})
      r.emit(o, "emit", 50)
      r.emit(o, "emit2", 5)
      local na, nb = 0, 0
      local why = bpf.run{sources = {{a, function() na = na + 1 end},
        {b, function() nb = nb + 1; return nb < 5 end}}, timeout = 10}
      assert.equal("stopped", why)
      assert.equal(5, nb)
      assert.equal("timeout", bpf.run{sources = {{a, function() na = na + 1 end}}, timeout = 0.05})
      assert.equal(50, na)
      -- a source closed from its handler stops the run
      r.emit(o, "emit", 3)
      assert.equal("stopped", bpf.run{sources = {{a, function() a:close() end}}, timeout = 10})
      b:close()
      assert.matches("run: sources%[1%] needs a handler", h.raises(bpf.run, {sources = {a}}))
    end)

    it("bpf.run: a raising handler ends it with the error; the loop can run again", function()
      local a = bpf.ringbuf(o:get_map("ring"), {type = "struct ring_event"})
      r.emit(o, "emit", 4)
      local ok, tb = xpcall(bpf.run, debug.traceback,
        {sources = {{a, function(e) if e.seq == 1 then error({code = "mine"}) end end}}, timeout = 10})
      assert.is_false(ok)
      assert.same({code = "mine"}, tb) -- error values pass as they are
      local rest = {}
      assert.equal("timeout", bpf.run{sources = {{a, function(e) rest[#rest + 1] = e.seq end}}, timeout = 0.05})
      assert.same({2, 3}, rest)
      a:close()
    end)
  end)
end)
