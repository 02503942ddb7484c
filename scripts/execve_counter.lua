-- execve_counter.lua [seconds]: count execve() calls system-wide, print the
-- count every N seconds (default 5) until Ctrl-C.
local bpf = require "bpfhost"

local every = tonumber(arg and arg[1] or 5)
if not every or every ~= every or every <= 0 or every == math.huge then
  io.stderr:write("usage: execve_counter.lua [seconds]\n")
  os.exit(2)
end

-- Its BPF object: in $BPFHOST_OBJ_DIR, else in the build beside scripts/ (the
-- source tree; $BPFHOST_BUILD names another), else in bpf/ beside scripts/
-- (installed: share/bpfhost/scripts and share/bpfhost/bpf).
local function object(name)
  local here = (arg and arg[0] or ""):match("^(.*)/scripts/[^/]*$") or "."
  local dir = os.getenv("BPFHOST_OBJ_DIR")
  if not dir then
    dir = (os.getenv("BPFHOST_BUILD") or (here .. "/build")) .. "/bpf"
    local f = io.open(dir .. "/" .. name)
    if f then f:close() else dir = here .. "/bpf" end
  end
  return dir .. "/" .. name
end

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
