-- The valgrind memcheck workload of make check: codec, map ops, batch,
-- ring buffers and object lifetimes, with the plain (unsanitized) module,
-- asserting as it goes. Run as: luajit spec/support/memcheck.lua BUILD_DIR
local build = assert(arg[1], "usage: memcheck.lua BUILD_DIR")
package.cpath = build .. "/lib/?.so;" .. package.cpath
local bpf = require "bpfhost"

local function obj(name) return build .. "/bpf/" .. name .. ".bpf.o" end
local function raises(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

-- objects: open, load, handles, close in every order
for round = 1, 3 do
  local o = bpf.open(obj("test_maps"))
  local m = o:get_map("u32_u64")
  if round == 1 then o:close() end           -- closed before load
  if round >= 2 then o:load() end
  local p = round >= 2 and o:program("touch")
  o:close()
  assert(o:close() == true)
  assert(tostring(raises(m.lookup, m, 1)):match("closed"))
  if p then assert(raises(p.attach, p)) end
  m, p, o = nil, nil, nil
  collectgarbage(); collectgarbage()
end
local f = assert(io.open(obj("test_maps"), "rb"))
local image = f:read("*a")
f:close()
assert(raises(bpf.open_mem, ("\127ELF"):rep(20)).code)
assert(raises(bpf.open_mem, image:sub(1, math.floor(#image / 2))).code)
bpf.open_mem(image):close()

-- codec and single map ops
local o = bpf.load(obj("test_maps"))
local ns = o:get_map("name_stats")
for i = 1, 40 do
  local k = ("comm-%d"):format(i)
  assert(ns:update(k, {packets = i, bytes = i * 1500, flags = i % 3, comm = k}))
  local v = ns:lookup(k)
  assert(v.packets == i and v.comm == k)
end
assert(ns:lookup("absent") == nil and ns:delete("absent") == false)
assert(ns:update("comm-1", {}, "noexist") == false)
local err = raises(ns.update, ns, "x", {packets = 1.5})
assert(tostring(err):match("not an integer"))
assert(raises(ns.update, ns, ("x"):rep(17), {}))
local T = o:type("struct stats")
local bytes = T:encode({packets = 2^53 + 2, comm = "abc"})
assert(#bytes == T.size)
assert(T:decode(bytes).comm == "abc")
assert(T:encode(T:decode(bytes)) == bytes)

local pc = o:get_map("pcpu")
pc:update(1, 7)
assert(bpf.sum(pc:lookup(1)) == 7 * #pc:lookup(1))
local sized = o:get_map("sized")
sized:update("abcdef", 5)
assert(#sized:lookup("abcdef", {raw = true}) == 4)

-- iteration and batches
local u = o:get_map("u32_u64")
local t = {}
for i = 1, 3000 do t[i] = i * 3 end
assert(u:update_batch(t) == 3000)
local n, sum = 0, 0
for k, v in u:iterate({chunk = 64}) do n = n + 1; sum = sum + v - 3 * k end
assert(n == 3000 and sum == 0)
local vals = u:lookup_batch({1, 2, 5000})
assert(vals[1] == 3 and vals[2] == 6 and vals[3] == nil)
assert(u:delete_batch({1, 2, 3}) == 3)
local drained = 0
for _ in u:drain({chunk = 100}) do drained = drained + 1 end
assert(drained == 2997 and u:count() == 0)
assert(#ns:dump() == 40 and ns:clear() == 40)
o:close()

-- ring buffers: copied, typed, closed from a handler, with the object closed under them
local r = bpf.load(obj("test_ring"))
local pkt = ("\0"):rep(64)
r:program("emit"):test_run{data = pkt, ["repeat"] = 500}
local ring = bpf.ringbuf(r:get_map("ring"), {type = r:type("struct ring_event")})
local got = 0
ring:poll(0, function(e)
  assert(e.check == 0xffffffff - e.seq % 2^32 and e.comm == "bpfhost-ring")
  got = got + 1
end)
assert(got == 500)
r:program("emit"):test_run{data = pkt, ["repeat"] = 10}
for e in ring:records(0) do got = got + 1; if got == 505 then break end end
assert(ring:poll(0, function() ring:close() end) == 1)
assert(ring:close())
local raw = bpf.ringbuf(r:get_map("ring"))
r:program("emit_bytes"):test_run{data = pkt, ["repeat"] = 100}
local lens = 0
raw:poll(0, function(s) lens = lens + #s end)
assert(lens > 0)
local mixed = bpf.ringbuf(r:get_map("ring3"), {type = r:type("struct ring_mixed")})
r:program("emit_mixed"):test_run{data = pkt, ["repeat"] = 20}
local m = 0
mixed:poll(0, function(e) m = m + 1; assert(e.grid[2][3] == (m - 1) * 10 + 5) end)
assert(m == 20)
local perf = bpf.perfbuf(r:get_map("perf"))
r:program("emit_perf"):test_run{data = pkt, ["repeat"] = 5}
local p = 0
perf:poll(100, function() p = p + 1 end)
assert(p >= 1)
r:close()
raw:close(); mixed:close(); perf:close()
ring, raw, mixed, perf, r = nil, nil, nil, nil, nil
collectgarbage(); collectgarbage()
print("memcheck workload: ok")
