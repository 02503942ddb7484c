-- Shared by the ring, perf and loop specs: running fixture programs.
local h = require "helper"

local r = {}

r.ring_c = h.build .. "/bench/ring_c"
r.packet = string.rep("\0", 64)

-- Run program name of obj n times (BPF_PROG_TEST_RUN with repeat = n):
-- each run of a test_ring program emits one record.
function r.emit(obj, name, n)
  local p = obj:program(name)
  assert(p:test_run{data = r.packet, ["repeat"] = n})
end

-- The same from a process pinned to cpu (perf buffers keep one ring per CPU:
-- pinned, the records of one call stay in one ring, in order).
function r.emit_on(cpu, map, name, n)
  local out, st = h.sh(("taskset -c %d %s run %d %s %d 2>&1"):format(cpu, r.ring_c, map.id, name, n))
  assert(st == 0, out)
end

-- The same from another process (ring_c), in the background after delay
-- seconds; returns a handle whose :wait() gives that process's output.
function r.emit_later(map, name, n, delay)
  local f = assert(io.popen(("sleep %s; %s run %d %s %d 2>&1"):format(delay, r.ring_c, map.id, name, n)))
  return {wait = function() local out = f:read("*a"); f:close(); return out end}
end

-- Every record a consumer hands over within ms, in order.
function r.drain(buf, ms)
  local got = {}
  while buf:poll(ms or 0, function(rec, name) got[#got + 1] = rec end) > 0 do end
  return got
end

-- The check every test_ring event carries.
function r.valid(e, seq)
  return e.seq == seq and e.pid == 4242 and e.check == 4294967295 - seq and e.comm == "bpfhost-ring"
end

-- A bpfhost script in a file, run in the background with SIGINT and SIGTERM
-- at their defaults (sh would start it with SIGINT ignored); returns its
-- pid and the path of its output (path .. ".rc" gets the exit status).
-- interp runs it instead of the host (lua5.4: the script sets its cpath).
function r.start(src, interp)
  local path = os.tmpname()
  local f = assert(io.open(path .. ".lua", "w"))
  f:write(src)
  f:close()
  h.sh(("(env --default-signal=INT,TERM BPFHOST_BUILD=%s %s %s.lua > %s 2>&1 & " ..
    "echo $! > %s.pid; wait $!; echo $? > %s.rc) > /dev/null 2>&1 &")
    :format(h.build, interp or h.host, path, path, path, path))
  for _ = 1, 200 do
    local pf = io.open(path .. ".pid")
    local pid = pf and tonumber(pf:read("*a"))
    if pf then pf:close() end
    if pid then return pid, path end
    h.sh("sleep 0.02")
  end
  error("the script did not start")
end

local function slurp(path)
  local f = io.open(path)
  local s = f and f:read("*a")
  if f then f:close() end
  return s
end

-- Wait (up to 10 s) until the output at path holds pattern.
function r.wait_for(path, pattern)
  for _ = 1, 200 do
    local s = slurp(path) or ""
    if s:find(pattern) then return s end
    if slurp(path .. ".rc") then break end
    h.sh("sleep 0.05")
  end
  error("no '" .. pattern .. "' in the output: " .. (slurp(path) or ""))
end

-- Send sig to pid; wait (up to 10 s) for it to exit. Returns its exit
-- status, the milliseconds from the signal to the exit, and its output.
function r.signal_and_wait(pid, path, sig)
  local out = h.sh(([[
t0=$(date +%%s%%N); kill -%s %d
while [ ! -s %s.rc ]; do
  if [ $(( ($(date +%%s%%N) - t0) / 1000000 )) -gt 10000 ]; then kill -9 %d; sleep 0.1; break; fi
  sleep 0.005
done
t1=$(date +%%s%%N); echo ms=$(( (t1 - t0) / 1000000 ))]]):format(sig, pid, path, pid))
  local rc = tonumber(slurp(path .. ".rc") or "")
  local output = slurp(path) or ""
  os.remove(path); os.remove(path .. ".lua"); os.remove(path .. ".pid"); os.remove(path .. ".rc")
  return rc, tonumber(out:match("ms=(%d+)")), output
end

-- Links the kernel holds for programs named name (bpftool 7.1 names no
-- program in its link and perf listings: go through the program ids).
function r.links_for(name)
  local ids = {}
  for id in h.sh("bpftool prog show name " .. name .. " 2>/dev/null"):gmatch("(%d+): ") do
    ids[#ids + 1] = id
  end
  local n = 0
  local links = h.sh("bpftool link show 2>/dev/null; bpftool perf show 2>/dev/null")
  for _, id in ipairs(ids) do
    for _ in links:gmatch("prog " .. id .. "%f[%D]") do n = n + 1 end
    for _ in links:gmatch("prog_id " .. id .. "%f[%D]") do n = n + 1 end
  end
  return n
end

-- Kill what start() started, if it still runs (a failed spec must not leave it).
function r.kill(pid)
  if pid then h.sh("kill -9 " .. pid .. " 2>/dev/null") end
end

return r
