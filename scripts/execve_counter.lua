-- execve_counter.lua [seconds]: count execve() calls system-wide, print the
-- count every N seconds (default 5) until Ctrl-C.
local bpf = require "bpfhost"

local every = tonumber(arg and arg[1] or 5)
if not every or every ~= every or every <= 0 or every == math.huge then
  io.stderr:write("usage: execve_counter.lua [seconds]\n")
  os.exit(2)
end

-- Its BPF object: where scripts/find_object.lua says.
local object = dofile(((arg and arg[0] or ""):match("^(.*)/") or ".") .. "/find_object.lua")

local obj = bpf.load(object("execve_counter.bpf.o"))
local counts = obj:get_map("execve_counter")
counts:update("execve_counter", 0)
obj:attach()

io.write(("counting execve() every %gs; Ctrl-C to stop\n"):format(every))
io.flush()
local why = bpf.run{
  every = every,
  tick = function()
    io.write(("%s  execve_counter %s\n"):format(os.date("%H:%M:%S"), tostring(counts:lookup("execve_counter"))))
    io.flush()
  end,
}
obj:close()
io.write(("stopped (%s)\n"):format(why))
