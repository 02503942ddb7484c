-- Start-up cost: `bpfhost -e ''` beside `luajit -e ''`, in one run.
--
-- The two commands are spawned alternately (posix_spawn, no shell between)
-- and timed with CLOCK_MONOTONIC. Peak RSS comes from /usr/bin/time -f %M:
-- wait4's ru_maxrss for a child of this process also counts this process's
-- own pages, which the child had until its exec.
-- Budget (issue 7): within 2x of luajit's time, under 16 MB peak RSS.
--
-- Alone: build/bpfhost scripts/bench/startup.lua [runs]
-- (BPFHOST=path picks the binary; by default the one running this script.)
local ffi = require "ffi"

ffi.cdef [[
typedef int pid_t;
struct bh_timespec { long tv_sec; long tv_nsec; };
struct bh_timeval { long tv_sec; long tv_usec; };
struct bh_rusage {
  struct bh_timeval ru_utime, ru_stime;
  long ru_maxrss, ru_ixrss, ru_idrss, ru_isrss, ru_minflt, ru_majflt, ru_nswap,
       ru_inblock, ru_oublock, ru_msgsnd, ru_msgrcv, ru_nsignals, ru_nvcsw, ru_nivcsw;
};
int clock_gettime(int clk, struct bh_timespec *ts);
int posix_spawnp(pid_t *pid, const char *file, const void *file_actions,
                 const void *attrp, char *const argv[], char *const envp[]);
pid_t wait4(pid_t pid, int *status, int options, struct bh_rusage *ru);
extern char **environ;
]]

local C = ffi.C
local CLOCK_MONOTONIC = 1

local function now()
  local ts = ffi.new("struct bh_timespec")
  C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- Spawn argv with stdout/stderr as they are; returns seconds, peak RSS (KiB), status.
local function run(argv)
  local cargv = ffi.new("char *[?]", #argv + 1)
  local keep = {}
  for i, a in ipairs(argv) do
    keep[i] = ffi.new("char[?]", #a + 1, a)
    cargv[i - 1] = keep[i]
  end
  cargv[#argv] = nil
  local pid = ffi.new("pid_t[1]")
  local st = ffi.new("int[1]")
  local ru = ffi.new("struct bh_rusage")
  local t0 = now()
  local err = C.posix_spawnp(pid, argv[1], nil, nil, cargv, C.environ)
  if err ~= 0 then error(("cannot spawn %s (errno %d)"):format(argv[1], err)) end
  C.wait4(pid[0], st, 0, ru)
  local t = now() - t0
  return t, tonumber(ru.ru_maxrss), st[0]
end

-- Peak RSS in KiB of argv run under /usr/bin/time (the largest of n runs), or nil.
local function peak_rss(argv, n)
  local q = {}
  for i, a in ipairs(argv) do q[i] = "'" .. a:gsub("'", "'\\''") .. "'" end
  local best
  for _ = 1, n do
    local f = io.popen("/usr/bin/time -f '%M' " .. table.concat(q, " ") .. " 2>&1 >/dev/null")
    local kb = f and tonumber((f:read("*a") or ""):match("(%d+)%s*$"))
    if f then f:close() end
    if not kb then return nil end
    if not best or kb > best then best = kb end
  end
  return best
end

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

-- Alternate the two commands in small slices so drift hits both alike.
local function measure(host, runs)
  local a, b, rss_a, rss_b = {}, {}, 0, 0
  local ha, hb = { host, "-e", "" }, { "luajit", "-e", "" }
  for _ = 1, 5 do run(ha); run(hb) end -- warm the page cache
  for i = 1, runs do
    local ta, ra, sa, tb, rb
    if i % 2 == 0 then
      ta, ra, sa = run(ha)
      tb, rb = run(hb)
    else
      tb, rb = run(hb)
      ta, ra, sa = run(ha)
    end
    if sa ~= 0 then error(("%s -e '' exited with status %d"):format(host, sa)) end
    a[#a + 1], b[#b + 1] = ta, tb
    if ra > rss_a then rss_a = ra end
    if rb > rss_b then rss_b = rb end
  end
  local ma, mb = median(a), median(b)
  rss_a = peak_rss(ha, 5) or rss_a
  rss_b = peak_rss(hb, 5) or rss_b
  return {
    name = "startup",
    bpfhost_ms = ma * 1e3, luajit_ms = mb * 1e3, ratio = ma / mb,
    bpfhost_rss_kb = rss_a, luajit_rss_kb = rss_b,
    ok = ma / mb <= 2 and rss_a < 16 * 1024,
  }
end

local function report(r)
  return ("startup: bpfhost -e '' %.2f ms, luajit -e '' %.2f ms (x%.2f, budget x2); "
    .. "peak RSS %.1f MB vs %.1f MB (budget 16 MB)%s"):format(r.bpfhost_ms, r.luajit_ms,
    r.ratio, r.bpfhost_rss_kb / 1024, r.luajit_rss_kb / 1024, r.ok and "" or "  OVER BUDGET")
end

local M = { measure = measure, report = report }

-- Run alone: print one line; the exit status says whether the budget holds.
if arg and arg[0] and arg[0]:match("startup%.lua$") then
  local host = os.getenv("BPFHOST") or (arg[-1] and arg[-1]:match("bpfhost$") and arg[-1])
    or "build/bpfhost"
  local r = measure(host, tonumber(arg[1]) or 200)
  print(report(r))
  os.exit(r.ok and 0 or 1)
end

return M
