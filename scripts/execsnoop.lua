-- execsnoop.lua [-p PID] [-x] [-t SECONDS]: every execve() on the system as it
-- happens, one line each: time, pid, parent pid, result, comm, file name.
-- Ctrl-C stops it.
--
--   -p PID      only PID and its children (written to the program's .rodata
--               before it is loaded, so the kernel filters)
--   -x          only failed execs
--   -t SECONDS  stop after SECONDS
--
-- Events travel through a ring buffer as struct exec_event (bpf/execsnoop.bpf.c),
-- typed by the object's BTF; events the ring had no room for are counted by
-- the program in events_lost and reported here as they happen.
local bpf = require "bpfhost"

local function usage(msg)
  io.stderr:write(("execsnoop: %s\nusage: execsnoop.lua [-p PID] [-x] [-t SECONDS]\n"):format(msg))
  os.exit(2)
end

local pid, failed_only, seconds
local i = 1
while arg and arg[i] do
  local a = arg[i]
  if a == "-p" then
    pid = tonumber(arg[i + 1])
    if not pid or pid < 1 or pid % 1 ~= 0 or pid > 4194304 then usage("-p needs a process id") end
    i = i + 2
  elseif a == "-t" then
    seconds = tonumber(arg[i + 1])
    if not seconds or seconds ~= seconds or seconds <= 0 or seconds == math.huge then
      usage("-t needs a number of seconds")
    end
    i = i + 2
  elseif a == "-x" then
    failed_only = true
    i = i + 1
  else
    usage("unknown argument '" .. a .. "'")
  end
end

-- Its BPF object: where scripts/find_object.lua says.
local object = dofile(((arg and arg[0] or ""):match("^(.*)/") or ".") .. "/find_object.lua")

local obj = bpf.open(object("execsnoop.bpf.o"))
if pid then obj.rodata.targ_pid = pid end
obj:load()
obj:attach()
local ring = bpf.ringbuf(obj:get_map("events"), {type = obj:type("struct exec_event")})

io.stdout:setvbuf("line")
local line = "%-8s %-7s %-7s %4s %-16s %s\n"
io.write(line:format("TIME", "PID", "PPID", "RET", "COMM", "FILENAME"))

local lost = 0
local function report_lost()
  local now = ring.lost
  if now > lost then
    io.stderr:write(("execsnoop: %d events lost (the ring was full)\n"):format(now - lost))
    lost = now
  end
end

local why = bpf.run{
  sources = {{ring, function(e)
    if failed_only and e.ret == 0 then return end
    io.write(line:format(os.date("%H:%M:%S"), e.pid, e.ppid, e.ret, e.comm, e.filename))
  end}},
  every = 1,
  tick = report_lost,
  timeout = seconds,
}
report_lost()
obj:close()
io.stderr:write(("execsnoop: %s, %d events\n"):format(why, ring.count))
