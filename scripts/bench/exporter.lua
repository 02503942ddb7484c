-- Exporter cases (issue 10): what a Prometheus scrape costs for a map of
-- 100k labelled entries, beside the m:iterate() pass over the same map (the
-- batch read every scrape has to do; the rest is decoding labels, adding up
-- equal series and formatting).
--
--   counter     a hash {uid, comm} -> u64, two labels (a number, a string)
--   histogram   a hash {id, slot} -> u64: 2000 syscall ids x 50 log2 slots,
--               the id through the syscall decoder
--   scrape      the counter over HTTP: curl (another process) scrapes while
--               this process serves; the scrape's wall time as curl sees it,
--               and this process's CPU time per scrape
--
-- Per-entry times for the first two (one whole pass per slice). See
-- scripts/bench.lua for how cases are run and timed.
local bpf = require "bpfhost"

local build = os.getenv("BPFHOST_BUILD") or "build"
local OBJ = build .. "/bpf/exporter.bpf.o"
local N = 100000

local function fill_counter()
  local obj = bpf.open(OBJ)
  local m = bpf.map_create{type = "hash", key = obj:type("struct exec_key"), value = "u64",
    max_entries = N, name = "bench_execs"}
  local batch = {}
  for i = 1, N do
    batch[#batch + 1] = {{uid = i % 1000, comm = ("proc%06d"):format(i)}, i * 7}
    if #batch == 4096 or i == N then
      m:update_batch(batch)
      batch = {}
    end
  end
  return obj, m
end

local function fill_histogram()
  local obj = bpf.open(OBJ)
  local m = bpf.map_create{type = "hash", key = obj:type("struct lat_key"), value = "u64",
    max_entries = N, name = "bench_lat"}
  local batch = {}
  for id = 0, 1999 do
    for slot = 0, 49 do
      batch[#batch + 1] = {{id = id, slot = slot}, (id + slot) % 97 + 1}
      if #batch == 4096 then
        m:update_batch(batch)
        batch = {}
      end
    end
  end
  if #batch > 0 then m:update_batch(batch) end
  return obj, m
end

local function iterate_pass(ctx)
  local n = 0
  for _ in ctx.m:iterate() do n = n + 1 end
  assert(n == N, "a pass saw " .. n)
end

local function render_pass(ctx)
  local text = ctx.ex:render()
  assert(#text > N * 10)
end

local function teardown(ctx)
  ctx.ex:close()
  ctx.m:close()
  ctx.obj:close()
end

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

return {
  {
    name = "counter, 100k entries, 2 labels (per entry)",
    setup = function()
      local obj, m = fill_counter()
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      ex:counter("bench_execs_total", m, {labels = {"comm", "uid"}})
      return {obj = obj, m = m, ex = ex}
    end,
    teardown = teardown,
    baseline = {"m:iterate()", iterate_pass},
    run = {"ex:render()", render_pass},
    n = N,
    rounds = 9,
  },
  {
    name = "histogram, 100k entries = 2000 x 50 slots (per entry)",
    setup = function()
      local obj, m = fill_histogram()
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      ex:histogram("bench_lat_seconds", m, {
        labels = {{name = "syscall", field = "id", decode = "syscall"}}, scale = 1e-9})
      return {obj = obj, m = m, ex = ex}
    end,
    teardown = teardown,
    baseline = {"m:iterate()", iterate_pass},
    run = {"ex:render()", render_pass},
    n = N,
    rounds = 9,
  },
  {
    name = "scrape over HTTP, counter of 100k entries",
    setup = function()
      local obj, m = fill_counter()
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      ex:counter("bench_execs_total", m, {labels = {"comm", "uid"}})
      return {obj = obj, m = m, ex = ex}
    end,
    teardown = teardown,
    measure = function(ctx)
      local scrapes = tonumber(os.getenv("BENCH_ROUNDS")) or 9
      local out = os.tmpname()
      os.remove(out) -- tmpname made it: its appearing is the signal
      -- the iterate pass alone, as often
      local iter = {}
      for i = 1, scrapes do
        local t0 = os.clock()
        iterate_pass(ctx)
        iter[i] = (os.clock() - t0) * 1e3
      end
      os.execute(("(for i in $(seq %d); do curl -s -o /dev/null -w '%%{time_total} %%{size_download}\\n' " ..
        "http://%s/metrics; done > %s.tmp; mv %s.tmp %s) &"):format(scrapes, ctx.ex:address(), out, out, out))
      local cpu0 = os.clock()
      local deadline = bpf.now() + 600
      local done
      repeat
        ctx.ex:serve(50)
        local f = io.open(out)
        if f then
          done = f:read("*a")
          f:close()
        end
      until done or bpf.now() > deadline
      local cpu = (os.clock() - cpu0) * 1e3
      os.remove(out)
      assert(done, "curl did not finish")
      local wall, size = {}, 0
      for t, s in done:gmatch("(%S+) (%d+)") do
        wall[#wall + 1] = tonumber(t) * 1e3
        size = tonumber(s)
      end
      assert(#wall == scrapes and size > N * 10, "every scrape answered: " .. done)
      return {
        unit = "ms",
        base = {"m:iterate() pass", median(iter)},
        run = {"scrape (curl, wall)", median(wall)},
        also = {{"exporter CPU per scrape", cpu / scrapes},
          {"longest hold of the loop (one slice)", ctx.ex:stats().max_slice_seconds * 1e3}},
        note = ("%d scrapes of %.1f MB; the loop is held at most one slice of a rendering "
          .. "(target: no longer than the m:iterate() pass)"):format(scrapes, size / 1e6),
      }
    end,
  },
}
