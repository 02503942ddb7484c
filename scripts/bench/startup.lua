-- Start-up cost (issue 7): `bpfhost -e ''` beside `luajit -e ''`.
-- Budget: within 2x of luajit, and under 16 MB peak RSS, so that one-shot
-- pokes from shell scripts stay cheap.
--
-- The two commands are spawned alternately (posix_spawn, no shell between)
-- so drift and the machine's other load hit both alike. A run's cost is the
-- child's CPU time (user + sys from wait4's rusage: loading, relocating,
-- opening the Lua state and the module), which time spent waiting for a
-- shared CPU does not inflate; the median wall time is in the note. Peak RSS
-- comes from /usr/bin/time -f %M: wait4's ru_maxrss for a child of this
-- process also counts this process's own pages, which the child had until
-- its exec.
--
-- A case file for scripts/bench.lua (make bench), or alone:
--   build/bpfhost scripts/bench/startup.lua [runs]
-- BPFHOST names the binary to measure; by default $BPFHOST_BUILD/bpfhost,
-- else the one running this file.
local ffi = require "ffi"

ffi.cdef [[
typedef int bh_pid_t;
struct bh_timespec { long tv_sec; long tv_nsec; };
struct bh_timeval { long tv_sec; long tv_usec; };
struct bh_rusage {
  struct bh_timeval ru_utime, ru_stime;
  long ru_maxrss, ru_ixrss, ru_idrss, ru_isrss, ru_minflt, ru_majflt, ru_nswap,
       ru_inblock, ru_oublock, ru_msgsnd, ru_msgrcv, ru_nsignals, ru_nvcsw, ru_nivcsw;
};
int clock_gettime(int clk, struct bh_timespec *ts);
int posix_spawnp(bh_pid_t *pid, const char *file, const void *file_actions,
                 const void *attrp, char *const argv[], char *const envp[]);
bh_pid_t wait4(bh_pid_t pid, int *status, int options, struct bh_rusage *ru);
extern char **environ;
]]

local C = ffi.C
local CLOCK_MONOTONIC = 1

local function now()
  local ts = ffi.new("struct bh_timespec")
  C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- Spawn argv (which prints nothing); returns wall seconds, CPU seconds, exit status.
local function run(argv)
  local cargv = ffi.new("char *[?]", #argv + 1)
  local keep = {}
  for i, a in ipairs(argv) do
    keep[i] = ffi.new("char[?]", #a + 1, a)
    cargv[i - 1] = keep[i]
  end
  cargv[#argv] = nil
  local pid = ffi.new("bh_pid_t[1]")
  local st = ffi.new("int[1]")
  local ru = ffi.new("struct bh_rusage")
  local t0 = now()
  local err = C.posix_spawnp(pid, argv[1], nil, nil, cargv, C.environ)
  if err ~= 0 then error(("cannot spawn %s (errno %d)"):format(argv[1], err)) end
  C.wait4(pid[0], st, 0, ru)
  local wall = now() - t0
  local cpu = tonumber(ru.ru_utime.tv_sec) + tonumber(ru.ru_utime.tv_usec) * 1e-6
    + tonumber(ru.ru_stime.tv_sec) + tonumber(ru.ru_stime.tv_usec) * 1e-6
  return wall, cpu, st[0]
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
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end

local function default_host()
  if os.getenv("BPFHOST") then return os.getenv("BPFHOST") end
  if os.getenv("BPFHOST_BUILD") then return os.getenv("BPFHOST_BUILD") .. "/bpfhost" end
  return arg and arg[-1] and arg[-1]:match("bpfhost$") and arg[-1] or "build/bpfhost"
end

-- bpfhost and luajit, alternately, runs times each.
local function measure(host, runs)
  host = host or default_host()
  runs = runs or 200
  local ha, hb = { host, "-e", "" }, { "luajit", "-e", "" }
  local ca, cb, wa, wb = {}, {}, {}, {}
  for _ = 1, 5 do run(ha); run(hb) end -- warm the page cache
  for i = 1, runs do
    local first, second = ha, hb
    if i % 2 == 0 then first, second = hb, ha end
    for _, argv in ipairs{ first, second } do
      local w, c, st = run(argv)
      if st ~= 0 then error(("%s -e '' exited with status %d"):format(argv[1], st)) end
      if argv == ha then ca[#ca + 1], wa[#wa + 1] = c, w else cb[#cb + 1], wb[#wb + 1] = c, w end
    end
  end
  local rss_a, rss_b = peak_rss(ha, 5), peak_rss(hb, 5)
  return {
    cpu_a = median(ca) * 1e3, cpu_b = median(cb) * 1e3,
    wall_a = median(wa) * 1e3, wall_b = median(wb) * 1e3,
    rss_a = rss_a, rss_b = rss_b,
  }
end

local function rss_note(r)
  if not r.rss_a then return "peak RSS unknown (no /usr/bin/time)" end
  return ("peak RSS bpfhost %.1f MB, luajit %.1f MB: %s (budget 16 MB)"):format(r.rss_a / 1024,
    (r.rss_b or 0) / 1024, r.rss_a < 16 * 1024 and "ok" or "MISSED")
end

local cases = {
  {
    name = "start-up (-e '', CPU ms per process)",
    measure = function()
      local r = measure(nil, tonumber(os.getenv("BENCH_STARTUP_RUNS")) or 200)
      return {
        unit = "ms",
        base = { "luajit", r.cpu_b },
        run = { "bpfhost", r.cpu_a },
        target = { a = "bpfhost", b = "luajit", max = 2.0 },
        note = ("wall %.2f ms vs %.2f ms; %s"):format(r.wall_a, r.wall_b, rss_note(r)),
      }
    end,
  },
}

-- Alone: one line; the exit status says whether both budgets hold.
if arg and arg[0] and arg[0]:match("startup%.lua$") then
  local r = measure(default_host(), tonumber(arg[1]) or 200)
  local ratio = r.cpu_a / r.cpu_b
  print(("start-up: bpfhost -e '' %.2f ms CPU, luajit -e '' %.2f ms (x%.2f, budget x2: %s); "
    .. "wall %.2f vs %.2f ms; %s"):format(r.cpu_a, r.cpu_b, ratio, ratio <= 2 and "ok" or "MISSED",
    r.wall_a, r.wall_b, rss_note(r)))
  os.exit((ratio <= 2 and r.rss_a and r.rss_a < 16 * 1024) and 0 or 1)
end

return cases
