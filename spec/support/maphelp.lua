-- Shared by the map specs: this process's pid, syscalls that fire the
-- fixture programs, child processes with known pids, CPU affinity.
local h = require "helper"
local ffi = h.luajit and require "ffi"

local M = {}

if ffi then
  pcall(ffi.cdef, [[
int getpid(void);
int getpgid(int pid);
]])
  M.pid = ffi.C.getpid()

  -- Fire the getpgid programs of bpf/test_mapops.bpf.c n times from this process.
  function M.getpgid(n)
    for _ = 1, n or 1 do ffi.C.getpgid(0) end
  end

  -- The process whose getpgid() calls M.getpgid makes: this one.
  function M.caller() return M.pid end
else
  M.pid = h.pid()
end

-- Start a shell command (a simple command: the shell forks and execs it, so
-- $! is its pid) as a child whose pid is known. The shell waits for it and
-- reports its exit status (LuaJIT's popen close does not). Returns {pid =, f =}.
function M.spawn(cmd)
  local f = assert(io.popen("exec 2>/dev/null; " .. cmd .. " 2>&1 & echo __pid=$!; wait $!; echo __status=$?"))
  local early = {}
  local pid
  while not pid do
    local line = f:read("*l")
    assert(line, "could not start: " .. cmd)
    pid = tonumber(line:match("^__pid=(%d+)$"))
    if not pid then early[#early + 1] = line .. "\n" end
  end
  return {pid = pid, f = f, early = table.concat(early)}
end

-- Whether the child still runs (a zombie does not).
function M.running(c)
  local s = io.open("/proc/" .. c.pid .. "/stat")
  if not s then return false end
  local line = s:read("*l") or ""
  s:close()
  local state = line:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

-- Wait for the child (signal it first when sig is given); returns its output
-- and its exit status (128 + n when signal n ended it).
function M.finish(c, sig)
  if sig and M.running(c) then os.execute(("kill -%s %d 2>/dev/null"):format(sig, c.pid)) end
  local out = c.early .. c.f:read("*a")
  c.f:close()
  local status = tonumber(out:match("__status=(%d+)%s*$"))
  return (out:gsub("__status=%d+%s*$", "")), status
end

-- Read one line of the child's output (blocks).
function M.line(c)
  return c.f:read("*l")
end

if not ffi then
  -- Lua 5.4 has no FFI to call getpgid() with: a LuaJIT child makes the
  -- calls on demand, told how many through a FIFO; the fixture programs
  -- watch its pid (M.caller()). It ends when this process does.
  local child, cmd
  function M.caller()
    if not child then
      local fifo = os.tmpname()
      os.remove(fifo)
      assert(select(2, h.sh("mkfifo -m 0600 " .. fifo)) == 0)
      child = M.spawn(("luajit -e 'local ffi = require [[ffi]] ffi.cdef [[int getpgid(int);]] " ..
        "for l in io.lines(%q) do for i = 1, tonumber(l) do ffi.C.getpgid(0) end " ..
        "print([[ok]]) io.flush() end'"):format(fifo))
      cmd = assert(io.open(fifo, "w"))
      os.remove(fifo)
      cmd:setvbuf("no")
    end
    return child.pid
  end

  function M.getpgid(n)
    M.caller()
    cmd:write(n or 1, "\n")
    assert(M.line(child) == "ok", "the getpgid child did not answer")
  end
end

-- A child that calls getpgid(0) n times (or for secs seconds of CPU time when
-- n is nil), on one CPU when cpu is given. It prints "done" at the end.
function M.syscaller(opts)
  local loop
  if opts.n then
    loop = ("for i = 1, %d do C.getpgid(0) end"):format(opts.n)
  else
    loop = ("local t = os.clock() + %g while os.clock() < t do for i = 1, 1000 do C.getpgid(0) end end")
      :format(opts.secs or 5)
  end
  local code = "local ffi = require [[ffi]] ffi.cdef [[int getpgid(int);]] local C = ffi.C " ..
    loop .. " print([[done]])"
  local cmd = ("luajit -e '%s'"):format(code)
  if opts.cpu then cmd = ("taskset -c %d %s"):format(opts.cpu, cmd) end
  return M.spawn(cmd)
end

-- Run fn with this process bound to one CPU, restoring its affinity after.
function M.on_cpu(cpu, fn)
  local out = h.sh("taskset -p " .. M.pid)
  local mask = assert(out:match("affinity mask: (%x+)"), out)
  h.sh(("taskset -p -c %d %d >/dev/null"):format(cpu, M.pid))
  local ok, err = pcall(fn)
  h.sh(("taskset -p %s %d >/dev/null"):format(mask, M.pid))
  if not ok then error(err, 0) end
end

-- Poll until cond() is true (or secs seconds passed); returns cond()'s last value.
function M.wait_for(cond, secs)
  local bpf = require "bpfhost"
  local deadline = bpf.now() + (secs or 5)
  local v = cond()
  while not v and bpf.now() < deadline do
    bpf.sleep(0.01)
    v = cond()
  end
  return v
end

-- The number of entries of an info listing (bpf.maps() ...) with field == value.
function M.find(list, field, value)
  for _, e in ipairs(list) do
    if e[field] == value then return e end
  end
end

return M
