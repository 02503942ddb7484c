-- opensnoop.lua [-p PID] [-t SECONDS] [-P PAGES]: every openat() as it
-- happens: time, pid, comm, flags, file name. Ctrl-C stops it.
--
-- The perf buffer example: the program (bpf/opensnoop.bpf.c) writes into a
-- BPF_MAP_TYPE_PERF_EVENT_ARRAY, one ring per CPU of PAGES pages (default
-- 64); samples a full ring refused are reported by the kernel per CPU, and
-- shown here as they come (on_lost), with the total at the end.
local bpf = require "bpfhost"

local function usage(msg)
  io.stderr:write(("opensnoop: %s\nusage: opensnoop.lua [-p PID] [-t SECONDS] [-P PAGES]\n"):format(msg))
  os.exit(2)
end

local pid, seconds, pages
local i = 1
while arg and arg[i] do
  local a, v = arg[i], tonumber(arg[i + 1])
  if a == "-p" and v and v >= 1 and v % 1 == 0 then pid = v
  elseif a == "-t" and v and v > 0 and v < math.huge then seconds = v
  elseif a == "-P" and v then pages = v
  else usage("bad argument '" .. a .. "'") end
  i = i + 2
end

-- Its BPF object: where scripts/find_object.lua says.
local object = dofile(((arg and arg[0] or ""):match("^(.*)/") or ".") .. "/find_object.lua")

local obj = bpf.open(object("opensnoop.bpf.o"))
if pid then obj.rodata.targ_pid = pid end
obj:load()
obj:attach()

local perf = bpf.perfbuf(obj:get_map("opens"), {
  type = obj:type("struct open_event"),
  pages = pages,
  on_lost = function(cpu, n)
    io.stderr:write(("opensnoop: CPU %d lost %d events\n"):format(cpu, n))
  end,
})

io.stdout:setvbuf("line")
local line = "%-8s %-7s %-16s %-8s %s\n"
io.write(line:format("TIME", "PID", "COMM", "FLAGS", "FILENAME"))
local why = bpf.run{
  sources = {{perf, function(e, cpu)
    io.write(line:format(os.date("%H:%M:%S"), e.pid, e.comm, ("0%o"):format(e.flags), e.filename))
  end}},
  timeout = seconds,
}
obj:close()
io.stderr:write(("opensnoop: %s, %d events, %d lost\n"):format(why, perf.count, perf.lost))
