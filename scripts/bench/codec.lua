-- Codec cases (issue 3): per-operation time of lookup and update on hash maps
-- (bpf/bench_codec.bpf.c) whose values are a u64, a 64-byte struct and a
-- per-CPU struct, typed by BTF through the codec ("typed"), beside:
--
--   FFI    the same libbpf call through LuaJIT's FFI, buffers reused: C speed,
--          the baseline
--   raw    the same map and method with {raw = true}: byte strings in and out
--   bytes  a twin map of the same sizes without BTF: byte strings in and out
--          with no option table, so typed / bytes is what the codec adds
--   into   (lookups of table values) m:lookup(k, {into = t}): typed, into
--          one table reused, so into / typed is what a new table costs
--
-- Targets (issue 3): the codec adds under 10% to a lookup of the u64 value
-- and under 25% to a lookup of the 64-byte struct (typed / bytes).
--
-- The file runs in the host, whose LuaJIT has a 4 MiB GC floor (bindings/
-- gc.c): a typed struct lookup's table is then collected one cycle in ~9000
-- lookups, not one in ~500 (the case "GC floor 4 MiB vs none" measures what
-- that changes, and what it costs in heap). So the cases run slices of 20000
-- operations: the collector's work is in every slice, as it is in a long
-- loop, not left to a few slices the median would skip.
-- See scripts/bench.lua for how cases are run and timed.
local bpf = require "bpfhost"
local ffi = require "ffi"

local build = os.getenv("BPFHOST_BUILD") or "build"
local OBJ = build .. "/bpf/bench_codec.bpf.o"
local N = 1000 -- keys in every map

ffi.cdef [[
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags);
int libbpf_num_possible_cpus(void);
struct bench_flow_stats {
  uint64_t packets, bytes, first_ns, last_ns;
  uint32_t saddr, daddr;
  uint16_t sport, dport;
  uint8_t proto, flags;
  uint16_t ifindex;
  char comm[16];
};
struct bench_cpu_stats { uint64_t packets, bytes; uint32_t drops, errors; };
]]

-- The host links libbpf; plain luajit loads it.
local lib = pcall(function() return ffi.C.bpf_map_lookup_elem end) and ffi.C or ffi.load("bpf")
local NCPU = lib.libbpf_num_possible_cpus()
local RAW = {raw = true}

local shapes = {
  u64 = {
    map = "h_u64", twin = "h_u64_bytes", ctype = "uint64_t", size = 8,
    value = function(i) return i * 3 end,
    cvalue = function(c, i) c[0] = i * 3 end,
  },
  -- timestamps in ns since boot (bpf_ktime_get_ns) stay below 2^53 for 104
  -- days of uptime: numbers, not int64 cdata (see flow64 for those)
  flow = {
    map = "h_flow", twin = "h_flow_bytes", ctype = "struct bench_flow_stats", size = 64,
    value = function(i)
      return {packets = i, bytes = i * 1500, first_ns = 86400000000000 + i,
        last_ns = 86401000000000 + i, saddr = 0x0a000001, daddr = 0x0a000002 + i,
        sport = 443, dport = 40000 + i % 1000, proto = 6, flags = 2, ifindex = 3,
        comm = "nginx"}
    end,
    cvalue = function(c, i)
      c[0].packets, c[0].bytes, c[0].saddr, c[0].daddr = i, i * 1500, 0x0a000001, 0x0a000002 + i
      c[0].first_ns, c[0].last_ns = 86400000000000 + i, 86401000000000 + i
      c[0].sport, c[0].dport, c[0].proto, c[0].flags, c[0].ifindex = 443, 40000 + i % 1000, 6, 2, 3
      ffi.copy(c[0].comm, "nginx")
    end,
  },
  -- the same with wall-clock timestamps (beyond 2^53): two int64 boxes per value
  flow64 = {
    map = "h_flow", twin = "h_flow_bytes", ctype = "struct bench_flow_stats", size = 64,
    value = function(i)
      return {packets = i, bytes = i * 1500, first_ns = 1700000000000000000ULL + i,
        last_ns = 1700000001000000000ULL + i, saddr = 0x0a000001, daddr = 0x0a000002 + i,
        sport = 443, dport = 40000 + i % 1000, proto = 6, flags = 2, ifindex = 3,
        comm = "nginx"}
    end,
    cvalue = function(c, i)
      c[0].packets, c[0].bytes, c[0].saddr, c[0].daddr = i, i * 1500, 0x0a000001, 0x0a000002 + i
      c[0].first_ns, c[0].last_ns = 1700000000000000000ULL + i, 1700000001000000000ULL + i
      c[0].sport, c[0].dport, c[0].proto, c[0].flags, c[0].ifindex = 443, 40000 + i % 1000, 6, 2, 3
      ffi.copy(c[0].comm, "nginx")
    end,
  },
  percpu = {
    map = "pc_cpu", twin = "pc_cpu_bytes", ctype = "struct bench_cpu_stats", size = 24,
    percpu = true,
    value = function(i) return {packets = i, bytes = i * 100, drops = i % 7, errors = 1} end,
    cvalue = function(c, i)
      for cpu = 0, NCPU - 1 do
        c[cpu].packets, c[cpu].bytes, c[cpu].drops, c[cpu].errors = i, i * 100, i % 7, 1
      end
    end,
  },
}

-- Load the object, fill both maps of a shape with keys 0..N-1.
local function setup(shape)
  return function()
    local s = shapes[shape]
    local obj = bpf.load(OBJ)
    local c = {obj = obj, m = obj:get_map(s.map), twin = obj:get_map(s.twin)}
    local slots = s.percpu and NCPU or 1
    c.k = ffi.new("uint32_t[1]")
    c.v = ffi.new(s.ctype .. "[?]", slots)
    c.kb, c.vb = {}, {}
    for i = 0, N - 1 do
      c.k[0] = i
      s.cvalue(c.v, i)
      assert(lib.bpf_map_update_elem(c.m.fd, c.k, c.v, 0) == 0)
      assert(lib.bpf_map_update_elem(c.twin.fd, c.k, c.v, 0) == 0)
      c.kb[i] = ffi.string(c.k, 4)
    end
    -- raw takes every CPU's bytes; the twin without BTF one value for all
    c.vbytes = ffi.string(c.v, ffi.sizeof(s.ctype) * slots)
    c.vone = ffi.string(c.v, ffi.sizeof(s.ctype))
    c.value = s.value(7)
    c.into = {into = {}}
    c.fd, c.twin_fd = c.m.fd, c.twin.fd
    -- the per-CPU value as the map takes raw bytes: round_up(24, 8) per CPU
    assert(#c.vbytes == (s.percpu and NCPU * 24 or s.size))
    return c
  end
end

local function teardown(c) c.obj:close() end

-- Each case's contenders are compiled from source of their own (see add):
-- LuaJIT keys traces by bytecode, so one loop shared by the cases would
-- carry the trace it got in one case into the next (the typed path is Lua
-- since the fast path: a struct case would run as a side trace of the u64
-- case's loop), as no single call site of a program does.
local LOOKUPS = [[
local lib, N, RAW = ...
return {
  FFI = function(c, n)
    local f, fd, k, v = lib.bpf_map_lookup_elem, c.fd, c.k, c.v
    for i = 1, n do
      k[0] = i % N
      f(fd, k, v)
    end
  end,
  typed = function(c, n)
    local m = c.m
    for i = 1, n do c.last = m:lookup(i % N) end
  end,
  raw = function(c, n)
    local m, kb = c.m, c.kb
    for i = 1, n do c.last = m:lookup(kb[i % N], RAW) end
  end,
  bytes = function(c, n)
    local m, kb = c.twin, c.kb
    for i = 1, n do c.last = m:lookup(kb[i % N]) end
  end,
  into = function(c, n)
    local m, o = c.m, c.into
    for i = 1, n do c.last = m:lookup(i % N, o) end
  end,
}]]

local UPDATES = [[
local lib, N, RAW = ...
return {
  FFI = function(c, n)
    local f, fd, k, v = lib.bpf_map_update_elem, c.fd, c.k, c.v
    for i = 1, n do
      k[0] = i % N
      f(fd, k, v, 0)
    end
  end,
  typed = function(c, n)
    local m, v = c.m, c.value
    for i = 1, n do m:update(i % N, v) end
  end,
  raw = function(c, n)
    local m, kb, vb = c.m, c.kb, c.vbytes
    for i = 1, n do m:update(kb[i % N], vb, RAW) end
  end,
  bytes = function(c, n)
    local m, kb, vb = c.twin, c.kb, c.vone
    for i = 1, n do m:update(kb[i % N], vb) end
  end,
}]]

local function lookups() return assert(loadstring(LOOKUPS, "=codec lookups"))(lib, N, RAW) end
local function updates() return assert(loadstring(UPDATES, "=codec updates"))(lib, N, RAW) end

local cases = {}
local function add(op, make, shape, what, max)
  local fns = make()
  cases[#cases + 1] = {
    name = ("%s %s"):format(op, what),
    setup = setup(shape),
    teardown = teardown,
    baseline = {"FFI", fns.FFI},
    run = {"typed", fns.typed},
    also = {{"raw", fns.raw}, {"bytes", fns.bytes},
      -- lookup's {into = t}: the struct's fields set in one table, reused
      fns.into and shape ~= "u64" and {"into", fns.into} or nil},
    target = max and {a = "typed", b = "bytes", max = max} or nil,
    -- slices long enough to hold collector cycles (one per ~9000 struct
    -- lookups under the host's GC floor): the median slice of a shorter one
    -- would be one the collector never ran in
    n = 20000, rounds = 15,
  }
end
add("lookup", lookups, "u64", "u64 (hash u32 -> u64)", 1.10)
add("lookup", lookups, "flow", "64-byte struct (hash u32 -> struct)", 1.25)
add("lookup", lookups, "flow64", "64-byte struct, 2 fields beyond 2^53")
add("lookup", lookups, "percpu", ("per-CPU 24-byte struct x %d CPUs"):format(NCPU))

-- The host's GC floor (bindings/gc.c) against none, on the lookup that
-- makes the most garbage: a new 12-field table per call. Each contender
-- runs in slices long enough for many collector cycles (one every ~500
-- lookups without the floor), each slice after a full collection with its
-- floor set, in rotating order; untimed, a pass of each samples the Lua
-- heap every 100 lookups for its peak: what the floor costs in memory.
local FLOOR_SLICE, FLOOR_ROUNDS = 20000, 15
local function floor_run(c, floor, n, sample)
  bpf.gc_floor(floor)
  collectgarbage() -- untimed: each slice starts a cycle under its own floor
  local m, peak = c.m, 0
  local t0 = os.clock()
  if sample then
    for i = 1, n do
      c.last = m:lookup(i % N)
      if i % 100 == 0 then peak = math.max(peak, collectgarbage("count")) end
    end
    return peak
  end
  for i = 1, n do c.last = m:lookup(i % N) end
  return (os.clock() - t0) / n * 1e6
end
cases[#cases + 1] = {
  name = "lookup 64-byte struct: GC floor 4 MiB vs none",
  measure = function()
    local c = setup("flow")()
    local host = bpf.gc_floor()
    local floors = {{"no floor", 0}, {"floor 4 MiB", 4 * 2 ^ 20}}
    local times = {{}, {}}
    for _, f in ipairs(floors) do floor_run(c, f[2], FLOOR_SLICE) end -- warm up
    for r = 1, FLOOR_ROUNDS do
      for j = 0, 1 do
        local i = (r + j) % 2 + 1
        times[i][r] = floor_run(c, floors[i][2], FLOOR_SLICE)
      end
    end
    local peaks = {}
    for i, f in ipairs(floors) do peaks[i] = floor_run(c, f[2], FLOOR_SLICE, true) end
    bpf.gc_floor(host)
    teardown(c)
    local function median(t)
      table.sort(t)
      return t[math.floor((#t + 1) / 2)]
    end
    return {unit = "us/op", base = {"no floor", median(times[1])},
      run = {"floor 4 MiB", median(times[2])},
      note = ("peak Lua heap %.0f KiB without the floor, %.0f KiB with it"):format(peaks[1], peaks[2])}
  end,
}

add("update", updates, "u64", "u64 (hash u32 -> u64)")
add("update", updates, "flow", "64-byte struct (hash u32 -> struct)")
add("update", updates, "flow64", "64-byte struct, 2 fields beyond 2^53")
add("update", updates, "percpu", ("per-CPU 24-byte struct x %d CPUs"):format(NCPU))
return cases
