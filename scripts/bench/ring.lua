-- Ring buffer consumption (issue 6): records/s by C libbpf (ring_buffer__poll
-- with an empty callback, scripts/bench/ring_c.c: the limit) beside bpfhost's
-- three ways of handing records to Lua; same program, same ring, same run.
--
--   raw     ring:poll(ms, fn), fn(string)        (the handler keeps the string)
--   typed   ring:poll(ms, fn), fn(table)         (struct bench_ev by BTF; reads a field)
--   view    {view = true}: fn(pointer into the ring) (reads a field)
--
-- drain:   a 64 MiB ring pre-filled by test_run with 2.7M records of 16
--          bytes is drained; rounds alternate the paths; the median of the
--          rounds counts. Rates are per CPU second of the consumer
--          (os.clock here, CLOCK_PROCESS_CPUTIME_ID in ring_c), so that
--          time the shared machine gives to others does not count.
-- keep-up: a test_run producer in another process (on CPU 0) feeds a 1 MiB
--          ring as fast as it can while the consumer (on CPU 1) keeps up;
--          drops come from the ring's live_lost counter (bh_ringbuf.h);
--          three attempts per path, the median counts.
-- "strings alone" is the ceiling of the raw path here: the same handler fed
-- ffi.string copies of the same records from plain memory, no ring at all.
--
-- Targets: view >= 50% of C's drain rate, raw >= 15%, typed >= 5%; no drops
-- while keeping up on the raw and view paths.
--
-- A case file for scripts/bench.lua (make bench), or alone:
--   build/bpfhost scripts/bench/ring.lua [rounds]
local bpf = require "bpfhost"
local ffi = require "ffi"

local host = arg and arg[-1] or "bpfhost"
local build = os.getenv("BPFHOST_BUILD") or host:match("^(.*)/[^/]*$") or "build"
local ring_c = build .. "/bench/ring_c"

local FILL_RUNS = 168750          -- x16 records per run
local FILL = FILL_RUNS * 16       -- 2.7M records of 16 (+8) bytes: 64.8 of the 64 MiB
local LIVE = 4000000              -- records the live producer emits

local function sh(cmd)
  local f = assert(io.popen(cmd))
  local out = f:read("*a")
  f:close()
  return out
end

local obj, big, big_lost, live, live_lost, T
local function open()
  if obj then return end
  obj = bpf.load(build .. "/bpf/bench_ring.bpf.o")
  big, big_lost = obj:get_map("big"), obj:get_map("big_lost")
  live, live_lost = obj:get_map("live"), obj:get_map("live_lost")
  T = obj:type("struct bench_ev")
end

local function fill()
  big_lost:update(0, 0)
  local out = sh(("%s run %d fill_big %d 2>&1"):format(ring_c, big.id, FILL_RUNS))
  assert(out:match("^%d+ %d+"), "fill failed: " .. out)
  local lost = bpf.sum(big_lost:lookup(0))
  assert(lost == 0, "the 64 MiB ring dropped " .. tostring(lost) .. " records while filling")
end

-- Handlers that use what they get, so that nothing is optimised away.
local n, sum, last = 0, 0, nil
local handlers = {
  raw = function(s) n = n + 1; last = s end,
  typed = function(e) n = n + 1; sum = sum + e.val end,
  view = function(e) n = n + 1; sum = sum + e.val end,
}

local function consumer(path, map)
  if path == "raw" then return bpf.ringbuf(map) end
  if path == "typed" then return bpf.ringbuf(map, {type = T}) end
  return bpf.ringbuf(map, {type = T, view = true})
end

local function drain_lua(path)
  local ring = consumer(path, big)
  local fn = handlers[path]
  n = 0
  local c0 = os.clock()
  while n < FILL do
    if ring:poll(1000, fn) == 0 then break end
  end
  local cpu = os.clock() - c0
  ring:close()
  assert(n == FILL, ("%s: drained %d of %d records"):format(path, n, FILL))
  return FILL / cpu
end

local function drain_c()
  local out = sh(("%s drain %d %d 2>&1"):format(ring_c, big.id, FILL))
  local got, _, cpu = out:match("^(%d+) ([%d.]+) ([%d.]+)")
  assert(tonumber(got) == FILL, "C drain: " .. out)
  return FILL / tonumber(cpu)
end

-- The raw handler on ffi.string copies from plain memory: what strings cost.
local plain
local function strings_alone()
  if not plain then
    -- malloc, not ffi.new: 64 MB of GC-owned cdata would swell the heap the
    -- collector paces itself by, and with it the garbage each cycle sweeps
    pcall(ffi.cdef, "void *malloc(size_t n);")
    plain = ffi.cast("uint8_t *", ffi.C.malloc(FILL * 24))
    for i = 0, FILL - 1 do ffi.cast("uint64_t *", plain + i * 24)[0] = i end
  end
  local fn, fstring = handlers.raw, ffi.string
  n = 0
  local c0 = os.clock()
  for i = 0, FILL - 1 do fn(fstring(plain + i * 24, 16)) end
  return FILL / (os.clock() - c0)
end

local function median(t)
  table.sort(t)
  local k = #t
  return k % 2 == 1 and t[(k + 1) / 2] or (t[k / 2] + t[k / 2 + 1]) / 2
end

local drain_result
local function drain(rounds)
  if drain_result then return drain_result end
  open()
  local paths = {"c", "raw", "typed", "view", "strings"}
  local rates = {}
  for _, p in ipairs(paths) do rates[p] = {} end
  for r = 1, rounds do
    for j = 0, #paths - 1 do
      local p = paths[(r + j) % #paths + 1]
      local rate
      if p == "strings" then
        rate = strings_alone()
      else
        fill()
        rate = p == "c" and drain_c() or drain_lua(p)
      end
      table.insert(rates[p], rate / 1e6)
    end
  end
  drain_result = {}
  for _, p in ipairs(paths) do drain_result[p] = median(rates[p]) end
  return drain_result
end

-- Keep-up runs the producer on CPU 0 and the consumer on CPU 1 (when there
-- are two), so that the scheduler never puts them on one CPU; the other
-- load of a shared machine can still take the consumer's CPU for a while.
pcall(ffi.cdef, "int sched_setaffinity(int pid, size_t n, const uint64_t *mask);" ..
  "int sched_getaffinity(int pid, size_t n, uint64_t *mask);")
local two = tonumber(sh("nproc")) >= 2
local function pin(mask)
  if not two then return end
  local m = ffi.new("uint64_t[16]")
  if mask then m[0] = mask else ffi.C.sched_getaffinity(0, ffi.sizeof(m), m) end
  ffi.C.sched_setaffinity(0, ffi.sizeof(m), m)
  return m
end
local producer_cpu = two and "taskset -c 0 " or ""
local consumer_cpu = two and "taskset -c 1 " or ""

-- Keep up with a producer in another process: M records/s, drops, producer M/s.
local function keep(path)
  open()
  live_lost:update(0, 0)
  local prod, ring
  if path ~= "c" then
    ring = consumer(path, live)
    while ring:poll(0, handlers[path]) > 0 do end
  end
  local cmd = ("%s%s run %d produce_live %d 2>&1"):format(producer_cpu, ring_c, live.id, LIVE)
  if path == "c" then
    -- the consumer first (it must be set up before records come), then the producer
    local cons = assert(io.popen(("%s%s keep %d %d %d 60 2>&1"):format(consumer_cpu, ring_c,
      live.id, live_lost.id, LIVE)))
    bpf.sleep(0.3)
    local pout = sh(cmd)
    local out = cons:read("*a")
    cons:close()
    local got, lost, secs = out:match("^(%d+) (%d+) ([%d.]+)")
    local ns = tonumber(pout:match("^%d+ (%d+)")) or 0
    return tonumber(got) / tonumber(secs) / 1e6, tonumber(lost), 1e3 / math.max(ns, 1)
  end
  local fn = handlers[path]
  n = 0
  local saved = pin()
  pin(2)
  prod = assert(io.popen(cmd))
  local t0, lost = bpf.now(), 0
  while n + lost < LIVE and bpf.now() - t0 < 60 do
    ring:poll(10, fn)
    lost = ring.lost
  end
  local dt = bpf.now() - t0
  if saved then ffi.C.sched_setaffinity(0, ffi.sizeof(saved), saved) end
  local pout = prod:read("*a")
  prod:close()
  ring:close()
  local ns = tonumber(pout:match("^%d+ (%d+)")) or 0
  return n / dt / 1e6, lost, 1e3 / math.max(ns, 1)
end

-- Three attempts per path, alternating; the median attempt (by drops) counts.
local KEEP_ATTEMPTS = 3
local keep_result
local function keepup()
  if keep_result then return keep_result end
  local all = {c = {}, raw = {}, typed = {}, view = {}}
  for _ = 1, KEEP_ATTEMPTS do
    for _, p in ipairs{"c", "raw", "typed", "view"} do
      local rate, lost, prate = keep(p)
      table.insert(all[p], {rate = rate, lost = lost, producer = prate})
    end
  end
  keep_result = {}
  for p, list in pairs(all) do
    table.sort(list, function(a, b) return a.lost < b.lost end)
    local drops = {}
    for i, a in ipairs(list) do drops[i] = a.lost end
    keep_result[p] = list[math.floor((#list + 1) / 2)]
    keep_result[p].all = table.concat(drops, "/")
  end
  return keep_result
end

local ROUNDS = tonumber(os.getenv("BENCH_RING_ROUNDS")) or 5

local function drain_case(path, label, min)
  return {
    name = "ring drain 64 MiB: " .. label,
    measure = function()
      local d = drain(ROUNDS)
      local also = {}
      for _, p in ipairs{"raw", "typed", "view"} do
        if p ~= path then also[#also + 1] = {p, d[p]} end
      end
      if path == "raw" then also[#also + 1] = {"strings alone", d.strings} end
      return {
        unit = "M rec/s", higher = true,
        base = {"C libbpf", d.c}, run = {path, d[path]}, also = also,
        target = {a = path, b = "C libbpf", min = min},
        note = ("median of %d rounds, per consumer CPU second"):format(ROUNDS),
      }
    end,
  }
end

-- Kept up with = the share of the records the consumer got; the target is
-- all of them (no drops), against "emitted" = 100.
local function keep_case(path)
  return {
    name = "ring keep-up 1 MiB: " .. path .. " (% delivered)",
    measure = function()
      local k = keepup()
      local function pct(p) return 100 * (LIVE - k[p].lost) / LIVE end
      local also = {{"C libbpf", pct("c")}}
      for _, p in ipairs{"raw", "typed", "view"} do
        if p ~= path then also[#also + 1] = {p, pct(p)} end
      end
      return {
        unit = "%", higher = true,
        base = {"emitted", 100}, run = {path, pct(path)}, also = also,
        target = {a = path, b = "emitted", min = 1.0},
        note = ("%d records from a producer at %.1f M/s; median of %d attempts; drops in each: " ..
          "C %s, raw %s, typed %s, view %s; consumed at %.2f (C), %.2f (raw), %.2f (typed), " ..
          "%.2f (view) M/s"):format(LIVE, k[path].producer, KEEP_ATTEMPTS, k.c.all, k.raw.all,
          k.typed.all, k.view.all, k.c.rate, k.raw.rate, k.typed.rate, k.view.rate),
      }
    end,
  }
end

local cases = {
  drain_case("view", "view (fast path)", 0.50),
  drain_case("raw", "raw strings", 0.15),
  drain_case("typed", "typed tables", 0.05),
  keep_case("raw"),
  keep_case("view"),
}

-- Alone: a table; the exit status says whether every target holds.
if arg and arg[0] and arg[0]:match("ring%.lua$") then
  ROUNDS = tonumber(arg[1]) or ROUNDS
  local ok = true
  for _, case in ipairs(cases) do
    local r = case.measure()
    local line = ("%-34s %s %.2f | %s %.2f"):format(case.name, r.base[1], r.base[2], r.run[1], r.run[2])
    for _, a in ipairs(r.also or {}) do line = line .. (" | %s %.2f"):format(a[1], a[2]) end
    if r.target then
      local v = r.run[2] / r.base[2]
      local pass = v >= r.target.min
      ok = ok and pass
      line = line .. (" | x%.3f (target >= %.2f: %s)"):format(v, r.target.min, pass and "ok" or "MISSED")
    end
    if r.note then line = line .. " | " .. r.note end
    print(line)
  end
  obj:close()
  os.exit(ok and 0 or 1)
end

return cases
