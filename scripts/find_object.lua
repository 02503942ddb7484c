-- find_object.lua: where the example scripts find their BPF objects. Each
-- loads it with dofile from its own directory and calls it with a file name:
--
--   local object = dofile(((arg and arg[0] or ""):match("^(.*)/") or ".") .. "/find_object.lua")
--   local obj = bpf.load(object("execve_counter.bpf.o"))
--
-- The object is in $BPFHOST_OBJ_DIR, else in the build beside scripts/ (the
-- source tree; $BPFHOST_BUILD names another), else in bpf/ beside scripts/
-- (installed: share/bpfhost/scripts and share/bpfhost/bpf).
return function(name)
  local here = (arg and arg[0] or ""):match("^(.*)/scripts/[^/]*$") or "."
  local dir = os.getenv("BPFHOST_OBJ_DIR")
  if not dir then
    dir = (os.getenv("BPFHOST_BUILD") or (here .. "/build")) .. "/bpf"
    local f = io.open(dir .. "/" .. name)
    if f then f:close() else dir = here .. "/bpf" end
  end
  return dir .. "/" .. name
end
