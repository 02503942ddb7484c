-- Map cases (issue 4): bpfhost's map operations beside the same libbpf calls
-- made through LuaJIT's FFI (C speed: DESIGN.md "Performance"), on hash maps
-- u32 -> u64 made with bpf.map_create.
--
--   single ops   m:lookup / m:update / m:delete vs bpf_map_*_elem via FFI,
--                one syscall each; target <= 1.10x
--   iterate      100k entries: m:iterate() vs a bpf_map_lookup_batch loop
--                (<= 1.25x, and <= 0.35 us per element), vs a get_next_key +
--                lookup loop (>= 3x faster), vs `bpftool map dump` (>= 5x
--                faster; bpftool's CPU time from getrusage(RUSAGE_CHILDREN))
--   batches      m:update_batch and m:drain() vs bpf_map_update_batch and
--                bpf_map_lookup_and_delete_batch loops, per element; <= 1.25x
--   mmap         v[i] (and v:ptr() through ffi.cast) vs a syscall lookup of
--                the same element; >= 50x faster
--   map_create   with Types (BTF written and loaded for the map) and with
--                sizes, vs bpf_map_create via FFI, a create and a close each
--   memory       iterating or draining a 1M-entry map, in a fresh bpfhost
--                process: growth of peak RSS (VmHWM) < 16 MB
--
-- See scripts/bench.lua for how cases are run and timed. Alone:
-- build/bpfhost scripts/bench/maps.lua prints the same lines.
local bpf = require "bpfhost"
local ffi = require "ffi"

local host = (arg and arg[-1] and arg[-1]:match("bpfhost$") and arg[-1])
  or (os.getenv("BPFHOST_BUILD") or "build") .. "/bpfhost"

pcall(ffi.cdef, [[
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values,
                         uint32_t *count, const void *opts);
int bpf_map_lookup_and_delete_batch(int fd, void *in_batch, void *out_batch, void *keys,
                                    void *values, uint32_t *count, const void *opts);
int bpf_map_update_batch(int fd, const void *keys, const void *values, uint32_t *count,
                         const void *opts);
struct bhm_timeval { long tv_sec; long tv_usec; };
struct bhm_rusage {
  struct bhm_timeval ru_utime, ru_stime;
  long ru_maxrss, ru_ixrss, ru_idrss, ru_isrss, ru_minflt, ru_majflt, ru_nswap,
       ru_inblock, ru_oublock, ru_msgsnd, ru_msgrcv, ru_nsignals, ru_nvcsw, ru_nivcsw;
};
int getrusage(int who, struct bhm_rusage *usage);
]])

local ok, lib = pcall(ffi.load, "bpf")
if not ok then lib = ffi.load("libbpf.so.1") end
local C = ffi.C

local CHUNK = 1024
local u32a, u64a = ffi.typeof("uint32_t[?]"), ffi.typeof("uint64_t[?]")

local function median(t)
  local s = {}
  for i, x in ipairs(t) do s[i] = x end
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end

-- A hash u32 -> u64 of n keys 1..n (values = keys), filled with C batches.
local function hash(n, max)
  local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = max or n,
    name = "bench_maps"}
  local K, V = u32a(n), u64a(n)
  for i = 0, n - 1 do K[i], V[i] = i + 1, i + 1 end
  local cnt = ffi.new("uint32_t[1]")
  local function fill()
    for off = 0, n - 1, CHUNK do
      cnt[0] = math.min(CHUNK, n - off)
      assert(lib.bpf_map_update_batch(m.fd, K + off, V + off, cnt, nil) == 0, "update_batch")
    end
  end
  fill()
  return {m = m, fd = m.fd, n = n, K = K, V = V, fill = fill}
end

-- C loops over a whole map through the FFI; both return how many elements.
local function batch_loop(fn)
  local keys, vals = u32a(CHUNK), u64a(CHUNK)
  local cin, cout, cnt = u32a(2), u32a(2), ffi.new("uint32_t[1]")
  return function(fd)
    local n, first, s = 0, true, 0
    while true do
      cnt[0] = CHUNK
      local err = fn(fd, (not first) and cin or nil, cout, keys, vals, cnt, nil)
      for i = 0, cnt[0] - 1 do s = s + tonumber(vals[i]) end
      n = n + cnt[0]
      if err ~= 0 then break end
      first = false
      cin[0], cin[1] = cout[0], cout[1]
    end
    return n
  end
end

local c_lookup_batch = batch_loop(function(...) return lib.bpf_map_lookup_batch(...) end)
local c_drain_batch = batch_loop(function(...) return lib.bpf_map_lookup_and_delete_batch(...) end)

local function c_next_key(fd)
  local k, nk, v = u32a(1), u32a(1), u64a(1)
  local prev, n, s = nil, 0, 0
  while lib.bpf_map_get_next_key(fd, prev, nk) == 0 do
    if lib.bpf_map_lookup_elem(fd, nk, v) == 0 then s = s + tonumber(v[0]); n = n + 1 end
    k[0] = nk[0]
    prev = k
  end
  return n
end

local function bh_iterate(m)
  local n, s = 0, 0
  for _, v in m:iterate() do n = n + 1; s = s + v end
  return n
end

local function bh_drain(m)
  local n, s = 0, 0
  for _, v in m:drain() do n = n + 1; s = s + v end
  return n
end

-- CPU seconds of this process's waited-for children.
local function child_cpu()
  local ru = ffi.new("struct bhm_rusage")
  C.getrusage(-1, ru)
  return tonumber(ru.ru_utime.tv_sec) + tonumber(ru.ru_stime.tv_sec)
    + (tonumber(ru.ru_utime.tv_usec) + tonumber(ru.ru_stime.tv_usec)) * 1e-6
end

-- Alternate contenders that need a fresh map state before each slice (prep,
-- untimed); returns per-element medians in us, by label.
local function alternate(rounds, list, prep, n)
  local times = {}
  for _, c in ipairs(list) do times[c[1]] = {} end
  for _, c in ipairs(list) do prep(); c[2](n) end -- warm up
  for r = 1, rounds do
    for j = 0, #list - 1 do
      local c = list[(r + j) % #list + 1]
      prep()
      local t0 = os.clock()
      local got = c[2](n)
      local dt = os.clock() - t0
      assert(got == n, ("%s: %d elements, expected %d"):format(c[1], got, n))
      table.insert(times[c[1]], dt / n * 1e6)
    end
  end
  local med = {}
  for k, t in pairs(times) do med[k] = median(t) end
  return med
end

local cases = {}

-- -- Single operations ------------------------------------------------------

local KEYS = 1024
local function single_setup()
  local ctx = hash(KEYS)
  ctx.kb, ctx.vb = u32a(1), u64a(1)
  return ctx
end

cases[#cases + 1] = {
  name = "lookup (hash u32 -> u64, one syscall)",
  setup = single_setup,
  teardown = function(ctx) ctx.m:close() end,
  baseline = {"FFI", function(ctx, n)
    local fd, kb, vb, s = ctx.fd, ctx.kb, ctx.vb, 0
    for i = 1, n do
      kb[0] = i % KEYS + 1
      lib.bpf_map_lookup_elem(fd, kb, vb)
      s = s + tonumber(vb[0])
    end
    return s
  end},
  run = {"m:lookup", function(ctx, n)
    local m, s = ctx.m, 0
    for i = 1, n do s = s + m:lookup(i % KEYS + 1) end
    return s
  end},
  target = {a = "m:lookup", b = "FFI", max = 1.10},
}

cases[#cases + 1] = {
  name = "update (hash u32 -> u64, existing keys)",
  setup = single_setup,
  teardown = function(ctx) ctx.m:close() end,
  baseline = {"FFI", function(ctx, n)
    local fd, kb, vb = ctx.fd, ctx.kb, ctx.vb
    for i = 1, n do
      kb[0], vb[0] = i % KEYS + 1, i
      lib.bpf_map_update_elem(fd, kb, vb, 0)
    end
  end},
  run = {"m:update", function(ctx, n)
    local m = ctx.m
    for i = 1, n do m:update(i % KEYS + 1, i) end
  end},
  target = {a = "m:update", b = "FFI", max = 1.10},
}

cases[#cases + 1] = {
  name = "delete (hash u32 -> u64, present keys)",
  measure = function()
    local n = 2000
    local ctx = hash(n)
    local kb = u32a(1)
    local med = alternate(tonumber(os.getenv("BENCH_ROUNDS")) or 40, {
      {"FFI", function(cnt)
        local fd, d = ctx.fd, 0
        for i = 1, cnt do
          kb[0] = i
          if lib.bpf_map_delete_elem(fd, kb) == 0 then d = d + 1 end
        end
        return d
      end},
      {"m:delete", function(cnt)
        local m, d = ctx.m, 0
        for i = 1, cnt do if m:delete(i) then d = d + 1 end end
        return d
      end},
    }, ctx.fill, n)
    ctx.m:close()
    return {unit = "us/op", base = {"FFI", med.FFI}, run = {"m:delete", med["m:delete"]},
      target = {a = "m:delete", b = "FFI", max = 1.10},
      note = "the map is refilled (untimed) before each slice"}
  end,
}

-- -- Iteration --------------------------------------------------------------

local ITER = 100000
local function iter_setup() return hash(ITER) end
local function iter_teardown(ctx) ctx.m:close() end

cases[#cases + 1] = {
  name = "iterate 100k entries, per element",
  setup = iter_setup, teardown = iter_teardown,
  n = ITER, rounds = 15,
  baseline = {"C lookup_batch", function(ctx) assert(c_lookup_batch(ctx.fd) == ITER) end},
  run = {"m:iterate", function(ctx) assert(bh_iterate(ctx.m) == ITER) end},
  target = {a = "m:iterate", b = "C lookup_batch", max = 1.25},
}

cases[#cases + 1] = {
  name = "iterate 100k entries vs a get_next_key loop",
  setup = iter_setup, teardown = iter_teardown,
  n = ITER, rounds = 9,
  baseline = {"m:iterate", function(ctx) assert(bh_iterate(ctx.m) == ITER) end},
  run = {"C get_next_key+lookup", function(ctx) assert(c_next_key(ctx.fd) == ITER) end},
  target = {a = "C get_next_key+lookup", b = "m:iterate", min = 3},
}

cases[#cases + 1] = {
  name = "iterate 100k entries vs bpftool map dump",
  measure = function()
    local ctx = hash(ITER)
    local bh, tool = {}, {}
    bh_iterate(ctx.m)
    for _ = 1, tonumber(os.getenv("BENCH_ROUNDS")) and 3 or 5 do
      local t0 = os.clock()
      assert(bh_iterate(ctx.m) == ITER)
      bh[#bh + 1] = (os.clock() - t0) / ITER * 1e6
      local c0 = child_cpu()
      local p = assert(io.popen("exec bpftool map dump id " .. ctx.m.id))
      local lines = 0
      for _ in p:lines() do lines = lines + 1 end
      p:close()
      assert(lines >= ITER, "bpftool printed " .. lines .. " lines")
      tool[#tool + 1] = (child_cpu() - c0) / ITER * 1e6
    end
    ctx.m:close()
    return {unit = "us/elem", base = {"m:iterate", median(bh)}, run = {"bpftool map dump", median(tool)},
      target = {a = "bpftool map dump", b = "m:iterate", min = 5},
      note = "bpftool: CPU time of the process (getrusage of children), output read and dropped"}
  end,
}

cases[#cases + 1] = {
  name = "iterate 100k entries, absolute",
  measure = function()
    local ctx = hash(ITER)
    local t = {}
    bh_iterate(ctx.m)
    for _ = 1, 15 do
      local t0 = os.clock()
      assert(bh_iterate(ctx.m) == ITER)
      t[#t + 1] = (os.clock() - t0) / ITER * 1e6
    end
    ctx.m:close()
    return {unit = "us/elem", base = {"budget", 0.35}, run = {"m:iterate", median(t)},
      target = {a = "m:iterate", b = "budget", max = 1.0}}
  end,
}

-- -- Batches ----------------------------------------------------------------

local BATCH = 10000

cases[#cases + 1] = {
  name = "update_batch 10k existing keys, per element",
  setup = function()
    local ctx = hash(BATCH)
    ctx.pairs, ctx.tbl = {}, {}
    for i = 1, BATCH do ctx.pairs[i] = {i, i * 2}; ctx.tbl[i] = i * 3 end
    ctx.cnt = ffi.new("uint32_t[1]")
    return ctx
  end,
  teardown = function(ctx) ctx.m:close() end,
  n = BATCH, rounds = 30,
  baseline = {"C update_batch", function(ctx)
    for off = 0, BATCH - 1, CHUNK do
      ctx.cnt[0] = math.min(CHUNK, BATCH - off)
      lib.bpf_map_update_batch(ctx.fd, ctx.K + off, ctx.V + off, ctx.cnt, nil)
    end
  end},
  run = {"m:update_batch{{k, v}}", function(ctx) assert(ctx.m:update_batch(ctx.pairs) == BATCH) end},
  also = {{"m:update_batch{[k] = v}", function(ctx) assert(ctx.m:update_batch(ctx.tbl) == BATCH) end}},
  target = {a = "m:update_batch{{k, v}}", b = "C update_batch", max = 1.25},
}

cases[#cases + 1] = {
  name = "drain 10k entries, per element",
  measure = function()
    local ctx = hash(BATCH)
    local med = alternate(tonumber(os.getenv("BENCH_ROUNDS")) or 30, {
      {"C lookup_and_delete_batch", function() return c_drain_batch(ctx.fd) end},
      {"m:drain", function() return bh_drain(ctx.m) end},
    }, ctx.fill, BATCH)
    ctx.m:close()
    return {unit = "us/elem", base = {"C lookup_and_delete_batch", med["C lookup_and_delete_batch"]},
      run = {"m:drain", med["m:drain"]},
      target = {a = "m:drain", b = "C lookup_and_delete_batch", max = 1.25},
      note = "the map is refilled (untimed) before each pass"}
  end,
}

-- -- mmap -------------------------------------------------------------------

cases[#cases + 1] = {
  name = "mmap read of a u64 array element",
  setup = function()
    local m = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = KEYS,
      flags = "mmapable", name = "bench_mmap"}
    local v = m:mmap()
    for i = 0, KEYS - 1 do v[i] = i end
    return {m = m, v = v, p = ffi.cast("uint64_t *", v:ptr())}
  end,
  teardown = function(ctx) ctx.v:close(); ctx.m:close() end,
  n = 20000,
  baseline = {"m:lookup", function(ctx, n)
    local m, s = ctx.m, 0
    for i = 1, n do s = s + m:lookup(i % KEYS) end
    return s
  end},
  run = {"v[i]", function(ctx, n)
    local v, s = ctx.v, 0
    for i = 1, n do s = s + v[i % KEYS] end
    return s
  end},
  also = {{"v:ptr()[i]", function(ctx, n)
    local p, s = ctx.p, 0
    for i = 1, n do s = s + tonumber(p[i % KEYS]) end
    return s
  end}},
  target = {a = "m:lookup", b = "v[i]", min = 50},
}

-- -- Memory -----------------------------------------------------------------

local BIG = 1000000

-- Peak RSS growth (KiB) of a fresh bpfhost process walking the map id with what.
local function rss_growth(id, what)
  local script = ([[
    local function hwm()
      for l in io.lines("/proc/self/status") do
        local v = l:match("^VmHWM:%%s+(%%d+)")
        if v then return tonumber(v) end
      end
    end
    local m = bpf.map_by_id(%d)
    m:set_types{key = "u32", value = "u64"}
    local w = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 4096}
    for i = 1, 4096 do w:update(i, i) end
    for _ in w:iterate() do end
    for _ in w:drain() do end
    w:close()
    collectgarbage(); collectgarbage()
    local before, n, s = hwm(), 0, 0
    for _, v in m:%s() do n = n + 1; s = s + v end
    print(n, before, hwm())
  ]]):format(id, what)
  local p = assert(io.popen(("%s -e %q 2>&1"):format(host, script)))
  local out = p:read("*a")
  p:close()
  local n, before, after = out:match("^(%d+)\t(%d+)\t(%d+)")
  assert(n, "child: " .. out)
  return tonumber(after) - tonumber(before), tonumber(n), tonumber(after)
end

for _, what in ipairs{"iterate", "drain"} do
  cases[#cases + 1] = {
    name = ("%s 1M entries in a fresh process: peak RSS growth"):format(what),
    measure = function()
      local ctx = hash(BIG)
      local worst, peak = 0, 0
      for _ = 1, 3 do
        if what == "drain" then ctx.fill() end
        local grew, n, hwm = rss_growth(ctx.m.id, what)
        assert(n == BIG, what .. " saw " .. n)
        if grew > worst then worst, peak = grew, hwm end
      end
      ctx.m:close()
      return {unit = "KiB", base = {"budget", 16 * 1024}, run = {"VmHWM growth", worst},
        target = {a = "VmHWM growth", b = "budget", max = 1.0},
        note = ("worst of 3 fresh processes; peak RSS %d KiB"):format(peak)}
    end,
  }
end

-- Alone: run the cases here, one line each (bench.lua does it for make bench).
if arg and arg[0] and arg[0]:match("maps%.lua$") then
  for _, case in ipairs(cases) do
    local r
    if case.measure then
      r = case.measure()
      print(("%-50s %s %.3f | %s %.3f %s | x%.3f"):format(case.name, r.base[1], r.base[2], r.run[1],
        r.run[2], r.unit, r.run[2] / r.base[2]))
    else
      local ctx = case.setup and case.setup()
      local n, rounds = case.n or 2000, case.rounds or 40
      local ta, tb, q = {}, {}, {}
      for _ = 1, rounds do
        local t0 = os.clock(); case.baseline[2](ctx, n); local a = os.clock() - t0
        t0 = os.clock(); case.run[2](ctx, n); local b = os.clock() - t0
        ta[#ta + 1], tb[#tb + 1], q[#q + 1] = a / n * 1e6, b / n * 1e6, b / a
      end
      if case.teardown then case.teardown(ctx) end
      print(("%-50s %s %.3f | %s %.3f us/op | x%.3f"):format(case.name, case.baseline[1],
        median(ta), case.run[1], median(tb), median(q)))
    end
  end
  return
end

-- map_create with Types writes BTF for the map and loads it (one more
-- syscall, and the kernel checks it): what that costs beside the same map
-- made from sizes, and beside libbpf's bpf_map_create through the FFI.
-- Last in the file: maps made and freed by the thousand leave the kernel
-- work (deferred frees) that slowed the cases after it by 10%.
pcall(ffi.cdef, [[
int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size,
                   uint32_t max_entries, const void *opts);
int close(int fd);
]])
cases[#cases + 1] = {
  name = "map_create + close (hash u32 -> 40-byte struct, 64 entries)",
  n = 50,
  setup = function()
    local o = bpf.open(os.getenv("BPFHOST_BUILD") and os.getenv("BPFHOST_BUILD") .. "/bpf/test_maps.bpf.o"
      or "build/bpf/test_maps.bpf.o")
    return {o = o, T = o:type("struct stats")}
  end,
  teardown = function(ctx) ctx.o:close() end,
  baseline = {"FFI", function(ctx, n)
    for _ = 1, n do C.close(lib.bpf_map_create(1, "bench_mc", 4, 40, 64, nil)) end
  end},
  run = {"typed", function(ctx, n)
    local T = ctx.T
    for _ = 1, n do
      bpf.map_create{type = "hash", key = "u32", value = T, max_entries = 64, name = "bench_mc"}:close()
    end
  end},
  also = {{"sizes", function(ctx, n)
    for _ = 1, n do
      bpf.map_create{type = "hash", key = 4, value = 40, max_entries = 64, name = "bench_mc"}:close()
    end
  end}},
}

return cases
