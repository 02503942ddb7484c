-- bpfhost benchmarks: `make bench [BENCH=pattern]`, or
-- `build/bpfhost scripts/bench.lua [pattern]`. pattern (a Lua pattern) picks
-- the case files whose name matches it; when none does, every file runs and
-- only the cases whose name matches (then RESULTS.md is left as it is: its
-- sections are whole files).
--
-- Every scripts/bench/*.lua is a case file. It returns a list of cases; each
-- case measures some bpfhost code beside a baseline doing the same work, in
-- the same process, and reports the ratio (DESIGN.md "Performance"). Nothing
-- here asserts a time: a target is reported as "ok" or "MISSED", never fails.
--
-- A case is a table:
--
--   name       what one line of output says: "lookup u64 (hash u32 -> u64)"
--   setup      optional function() -> ctx, once before timing (load objects,
--              fill maps); teardown optional function(ctx), once after
--   baseline   {label, fn}: the reference, fn(ctx, n) does n operations
--   run        {label, fn}: the code measured, the same n operations
--   also       optional list of {label, fn}: more contenders, same rounds
--   n          operations per slice (default 2000): keep a slice near 1-5 ms,
--              and long enough to hold the collector cycles the contenders'
--              garbage causes (else the median is a slice without one)
--   rounds     slices per contender (default 40; BENCH_ROUNDS overrides)
--   target     optional {a = label, b = label, max = 1.10} (or min = ...):
--              the ratio time(a) / time(b) the case aims at
--
-- Each round runs every contender for one slice of n operations, in an
-- order that rotates round by round, so drift and the machine's other load
-- hit all alike. A contender's time is its median per-operation time; its
-- ratio to the baseline (and the target's ratio) is the median over rounds
-- of the per-round ratio. Times are process CPU time (os.clock): time spent
-- off the CPU on a shared machine does not count, time in syscalls does.
--
-- A case that needs its own method (a ring's throughput, a process's
-- start-up) gives measure = function() -> result instead of baseline/run,
-- where result is {unit = "M rec/s", base = {label, value}, run = {label,
-- value}, also = {{label, value}, ...}, higher = true (bigger is better),
-- target = {a =, b =, min =/max =}, note = "..."}; ratios are computed here.
--
-- Each case file runs in its own bpfhost process (a crash or os.exit there
-- does not stop the others). BPFHOST_BUILD names the build directory (make
-- passes $(O)); BPF objects are in $BPFHOST_BUILD/bpf, C baselines built by
-- the Makefile in $BPFHOST_BUILD/bench. Results, with the machine, kernel,
-- libbpf and LuaJIT versions and the date, go to scripts/bench/RESULTS.md,
-- one section per case file, replaced when that file runs again. A file
-- that returns no cases has what it printed kept there as it is.
local bpf = require "bpfhost"

local RESULTS = "scripts/bench/RESULTS.md"
local host = arg and arg[-1] or "bpfhost"
local build = os.getenv("BPFHOST_BUILD") or host:match("^(.*)/[^/]*$") or "build"

local function sh(cmd)
  local f = assert(io.popen(cmd))
  local out = f:read("*a")
  f:close()
  return (out:gsub("%s+$", ""))
end

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function median(t)
  local s = {}
  for i, x in ipairs(t) do s[i] = x end
  table.sort(s)
  local n = #s
  if n == 0 then return 0 / 0 end
  return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end

-- -- One case file, in a child process -----------------------------------

local function serialize(v)
  if type(v) == "table" then
    local parts = {}
    for k, x in pairs(v) do
      parts[#parts + 1] = "[" .. serialize(k) .. "]=" .. serialize(x)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(v) == "string" then
    return ("%q"):format(v):gsub("\n", "n")
  elseif type(v) == "number" then
    if v ~= v then return "0/0" end
    if v == math.huge then return "math.huge" end
    return ("%.17g"):format(v)
  end
  return tostring(v)
end

-- Time the contenders of a case in rotating slices.
local function run_slices(case, ctx)
  local list = {case.baseline, case.run}
  for _, c in ipairs(case.also or {}) do list[#list + 1] = c end
  local n = case.n or 2000
  local rounds = tonumber(os.getenv("BENCH_ROUNDS")) or case.rounds or 40
  local times = {}
  for i = 1, #list do times[i] = {} end
  for i = 1, #list do list[i][2](ctx, n) end -- warm up: JIT, caches, map buckets
  for r = 1, rounds do
    for j = 0, #list - 1 do
      local i = (r + j) % #list + 1
      local t0 = os.clock()
      list[i][2](ctx, n)
      times[i][r] = (os.clock() - t0) / n
    end
  end
  local res = {unit = "us/op", also = {}}
  local function ratio_of(a, b)
    local q = {}
    for r = 1, rounds do q[r] = times[a][r] / times[b][r] end
    return median(q)
  end
  local index = {}
  for i, c in ipairs(list) do
    index[c[1]] = i
    local entry = {c[1], median(times[i]) * 1e6, ratio_of(i, 1)}
    if i == 1 then res.base = entry elseif i == 2 then res.run = entry else res.also[#res.also + 1] = entry end
  end
  local t = case.target
  if t then
    local a, b = assert(index[t.a], "target: no contender " .. tostring(t.a)),
      assert(index[t.b], "target: no contender " .. tostring(t.b))
    res.target = {a = t.a, b = t.b, max = t.max, min = t.min, value = ratio_of(a, b)}
  end
  return res
end

-- A measure() result: ratios to the baseline computed here.
local function from_measure(r)
  local function ratio(v) return v / r.base[2] end
  local res = {unit = r.unit or "", note = r.note, also = {}, higher = r.higher}
  res.base = {r.base[1], r.base[2], 1}
  res.run = {r.run[1], r.run[2], ratio(r.run[2])}
  local values = {[r.base[1]] = r.base[2], [r.run[1]] = r.run[2]}
  for _, a in ipairs(r.also or {}) do
    res.also[#res.also + 1] = {a[1], a[2], ratio(a[2])}
    values[a[1]] = a[2]
  end
  if r.target then
    local t = r.target
    res.target = {a = t.a, b = t.b, max = t.max, min = t.min,
      value = assert(values[t.a], "target a") / assert(values[t.b], "target b")}
  end
  return res
end

local function target_ok(t)
  if t.max and not (t.value <= t.max) then return false end
  if t.min and not (t.value >= t.min) then return false end
  return true
end

local function fmt(v) return v >= 100 and ("%.0f"):format(v) or v >= 10 and ("%.1f"):format(v) or ("%.3f"):format(v) end

local function line(name, r)
  local parts = {("%-44s %s %s %s"):format(name, r.base[1], fmt(r.base[2]), r.unit)}
  local function add(e) parts[#parts + 1] = ("%s %s x%.3f"):format(e[1], fmt(e[2]), e[3]) end
  add(r.run)
  for _, e in ipairs(r.also) do add(e) end
  local s = table.concat(parts, " | ")
  if r.target then
    local t = r.target
    s = s .. (" | target %s/%s %s %.2f: %.3f %s"):format(t.a, t.b, t.max and "<=" or ">=",
      t.max or t.min, t.value, target_ok(t) and "ok" or "MISSED")
  end
  if r.note then s = s .. " | " .. r.note end
  return s
end

local function child(file, pattern)
  local chunk = assert(loadfile(file))
  local cases = chunk()
  if type(cases) ~= "table" or #cases == 0 then return end
  for _, case in ipairs(cases) do
    if not pattern or file:match(pattern) or case.name:match(pattern) then
      local ctx
      local ok, r = pcall(function()
        ctx = case.setup and case.setup() or nil
        if case.measure then return from_measure(case.measure(ctx)) end
        return run_slices(case, ctx)
      end)
      if case.teardown then pcall(case.teardown, ctx) end
      if ok then
        r.name = case.name
        print(line(case.name, r))
        print("@@return " .. serialize(r))
      else
        print(("%-44s FAILED: %s"):format(case.name, tostring(r)))
        print("@@return " .. serialize({name = case.name, error = tostring(r)}))
      end
      io.stdout:flush()
    end
  end
  print("@@cases")
end

-- -- The parent: every case file, then the results file -------------------

local function env_line()
  local cpu = sh("sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1")
  local possible = 0
  for a, b in sh("cat /sys/devices/system/cpu/possible"):gmatch("(%d+)%-?(%d*)") do
    possible = possible + (b ~= "" and tonumber(b) - tonumber(a) + 1 or 1)
  end
  return ("%s · %s, %d possible CPUs, %s online · kernel %s · libbpf %s · %s · bpfhost %s")
    :format(os.date("!%Y-%m-%d %H:%M UTC"), sh("uname -m") .. (cpu ~= "" and " " .. cpu or ""),
      possible, sh("nproc"), sh("uname -r"), bpf.libbpf_version(),
      jit and jit.version or _VERSION, bpf._VERSION)
end

local function section(file, records, raw)
  local out = {("<!-- bench:%s -->"):format(file), ("## %s"):format(file), "", env_line(), ""}
  if #records > 0 then
    out[#out + 1] = "| case | baseline | measured | ratio | others | target | note |"
    out[#out + 1] = "|---|---|---|---|---|---|---|"
    for _, r in ipairs(records) do
      if r.error then
        out[#out + 1] = ("| %s | failed: %s | | | | | |"):format(r.name, (r.error:gsub("|", "/")))
      else
        local others = {}
        for _, e in ipairs(r.also) do
          others[#others + 1] = ("%s %s (x%.3f)"):format(e[1], fmt(e[2]), e[3])
        end
        local target = ""
        if r.target then
          local t = r.target
          target = ("%s/%s %s %.2f: %.3f %s"):format(t.a, t.b, t.max and "≤" or "≥", t.max or t.min,
            t.value, target_ok(t) and "ok" or "**MISSED**")
        end
        out[#out + 1] = ("| %s | %s %s %s | %s %s | x%.3f | %s | %s | %s |"):format(r.name, r.base[1],
          fmt(r.base[2]), r.unit, r.run[1], fmt(r.run[2]), r.run[3], table.concat(others, ", "), target,
          ((r.note or ""):gsub("|", "/")))
      end
    end
  end
  if raw and raw ~= "" then
    out[#out + 1] = ""
    out[#out + 1] = "```"
    out[#out + 1] = raw
    out[#out + 1] = "```"
  end
  out[#out + 1] = ("<!-- /bench:%s -->"):format(file)
  return table.concat(out, "\n")
end

local HEAD = [[
# Benchmark results

Written by `make bench` (scripts/bench.lua, which says how cases are made and
timed). Each case file has its own section, replaced when that file runs.
Ratios come from alternating each case's contenders in one process; absolute
times drift 20-40% between runs on a shared machine, ratios much less.
]]

-- Keep one section per case file (the newest), in file name order.
local function write_results(sections)
  local f = io.open(RESULTS)
  local old = f and f:read("*a") or ""
  if f then f:close() end
  local text = {}
  for name, body in old:gmatch("<!%-%- bench:(%S+) %-%->(.-)<!%-%- /bench:%1 %-%->") do
    text[name] = ("<!-- bench:%s -->%s<!-- /bench:%s -->"):format(name, body, name)
  end
  for name, t in pairs(sections) do text[name] = t end
  local names = {}
  for name in pairs(text) do names[#names + 1] = name end
  table.sort(names)
  local out = {(HEAD:gsub("%s+$", ""))}
  for _, name in ipairs(names) do out[#out + 1] = text[name] end
  f = assert(io.open(RESULTS, "w"))
  f:write(table.concat(out, "\n\n"), "\n")
  f:close()
end

local function parent(pattern)
  local files, named = {}, {}
  for name in sh("ls scripts/bench/*.lua 2>/dev/null"):gmatch("[^\n]+") do
    files[#files + 1] = name
    if pattern and name:match("([^/]+)$"):match(pattern) then named[#named + 1] = name end
  end
  if #named > 0 then files, pattern = named, nil end
  table.sort(files)
  local sections = {}
  for _, file in ipairs(files) do
    local short = file:match("([^/]+)$")
    do
      local cmd = ("BPFHOST_BUILD=%s %s scripts/bench.lua --file %s %s 2>&1"):format(quote(build),
        quote(host), quote(file), pattern and quote(pattern) or "")
      local p = assert(io.popen(cmd))
      local records, raw, cases = {}, {}, false
      for l in p:lines() do
        if l:sub(1, 9) == "@@return " then
          local fn = loadstring(l:sub(3))
          if fn then setfenv(fn, {math = math}) records[#records + 1] = fn() end
        elseif l == "@@cases" then
          cases = true
        else
          print(cases and l or (short .. ": " .. l))
          raw[#raw + 1] = l
        end
      end
      p:close()
      if #records > 0 or (not cases and not pattern) then
        sections[short] = section(short, records, (not cases) and table.concat(raw, "\n") or nil)
      end
    end
  end
  -- a pattern that picked cases, not files, ran part of a file: its rows
  -- would replace the whole section of the last full run
  if pattern then
    print(("results: not written to %s (the pattern picked cases, not whole files)"):format(RESULTS))
    return
  end
  write_results(sections)
  print(("results: %s"):format(RESULTS))
end

if arg and arg[1] == "--file" then
  child(arg[2], arg[3])
else
  parent(arg and arg[1])
end
