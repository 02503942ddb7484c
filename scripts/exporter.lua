-- exporter.lua [address:port [pid]]: serve, as Prometheus metrics on
-- http://address:port/metrics (default 127.0.0.1:9435), how many execve()
-- calls each command made and a per-syscall latency histogram; with pid, the
-- latency of that process only. Ctrl-C stops it.
local bpf = require "bpfhost"

local listen = arg and arg[1] or "127.0.0.1:9435"
local pid = tonumber(arg and arg[2] or 0)
-- numeric address:port, as bpf.exporter takes (checked again there)
local numeric = listen:match("^[%d%.]+:%d+$") or listen:match("^%[[%x:%.]+%]:%d+$")
if not numeric or not pid or pid < 0 or pid ~= math.floor(pid) then
  io.stderr:write("usage: exporter.lua [address:port [pid]]\n")
  os.exit(2)
end

-- Its BPF object: where scripts/find_object.lua says.
local object = dofile(((arg and arg[0] or ""):match("^(.*)/") or ".") .. "/find_object.lua")

local obj = bpf.load(object("exporter.bpf.o"))
obj:get_map("target"):update(0, pid)
local execs, lat, lat_sum = obj:get_map("execs"), obj:get_map("syscall_lat"),
  obj:get_map("syscall_lat_sum")
obj:attach()

local ex = bpf.exporter{listen = listen}
ex:counter("bpfhost_execs_total", execs, {
  help = "execve() calls, by the uid and command that made them",
  labels = {"comm", "uid"},
})
ex:histogram("bpfhost_syscall_latency_seconds", lat, {
  help = "Time from sys_enter to sys_exit, per syscall",
  labels = {{name = "syscall", field = "id", decode = "syscall"}},
  buckets = "log2",          -- slot i: 2^(i-1) <= ns < 2^i
  scale = 1e-9,              -- ns -> seconds
  sum = lat_sum,             -- exact _sum: the program adds up the nanoseconds
})

io.write(("serving http://%s/metrics (maps: execs %d, syscall_lat %d, syscall_lat_sum %d)\n")
  :format(ex:address(), execs.id, lat.id, lat_sum.id))
io.flush()

-- serves scrapes until Ctrl-C (the exporter is a source of the loop, like a ring buffer)
local why = bpf.run{sources = {ex}}
ex:close()
obj:close()
io.write(("stopped (%s)\n"):format(why))
