-- Shared by the specs: paths to the build, privileges, processes, a private bpffs dir.
local h = {}

h.build = os.getenv("BPFHOST_BUILD") or "build"
h.host = h.build .. "/bpfhost"
package.cpath = h.build .. "/lib/?.so;" .. package.cpath

function h.obj(name)
  return h.build .. "/bpf/" .. name .. ".bpf.o"
end

-- Run a shell command; returns its stdout, and its exit status as a number.
function h.sh(cmd)
  local f = assert(io.popen(cmd .. "\necho \"__status=$?\""))
  local out = f:read("*a")
  f:close()
  local status = tonumber(out:match("__status=(%d+)%s*$"))
  return out:gsub("__status=%d+%s*$", ""), status
end

h.is_root = h.sh("id -u"):match("^0") ~= nil

-- Start n short processes (each one execve).
function h.spawn(n, cmd)
  for _ = 1, n do os.execute(cmd or "/bin/true") end
end

-- pcall that must fail; returns the error value.
function h.raises(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, got success")
  return err
end

-- A private directory on bpffs, and a function that removes it.
function h.tmp_bpffs()
  local bpf = require "bpfhost"
  h.sh("mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf")
  local dir = ("/sys/fs/bpf/bpfhost-spec-%d-%d"):format(math.random(1, 1e9), os.time())
  assert(h.sh("mkdir -p " .. dir) ~= nil)
  return dir, function() h.sh("rm -rf " .. dir) end
end

-- Count of links the kernel holds for programs named name.
function h.links_for(progname)
  local out = h.sh("bpftool link show 2>/dev/null; bpftool perf show 2>/dev/null")
  local n = 0
  for _ in out:gmatch(progname) do n = n + 1 end
  return n
end

math.randomseed(os.time())
return h
