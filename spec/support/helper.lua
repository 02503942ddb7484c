-- Shared by the specs: paths to the build, privileges, processes, a private bpffs dir.
local h = {}

h.build = os.getenv("BPFHOST_BUILD") or "build"
if h.build:sub(1, 1) ~= "/" then
  -- absolute, so that specs may cd elsewhere (or hand paths to other processes)
  local p = io.popen("pwd")
  h.build = p:read("*l") .. "/" .. h.build
  p:close()
end
-- BPFHOST_HOST and BPFHOST_CPATH test an installed host and module instead
-- (the fixtures still come from the build: README, "Installing")
h.host = os.getenv("BPFHOST_HOST") or h.build .. "/bpfhost"
-- the module built for this interpreter: LuaJIT's in lib/, Lua 5.4's in lua5.4/
h.luajit = jit ~= nil
h.lib = h.build .. (h.luajit and "/lib" or "/lua" .. _VERSION:match("%d+%.%d+"))
package.cpath = (os.getenv("BPFHOST_CPATH") or h.lib .. "/?.so") .. ";" .. package.cpath

-- `it` for a test that is LuaJIT's by nature (the FFI, cdata): under other
-- Luas the test is listed as pending, with why (busted's it and pending are
-- the spec file's, hence passed in).
function h.luajit_only(it, pending, why)
  if h.luajit then return it end
  return function(name) pending(name .. " [LuaJIT only: " .. why .. "]") end
end

-- A 64-bit integer from its literal (hex, or decimal within int64) as this
-- Lua holds one beyond 2^53: LuaJIT's uint64_t cdata, a Lua 5.4 integer
-- (hex past 2^63 wraps to the same 64 bits, negative).
function h.u64(lit)
  return assert(load("return " .. lit .. (h.luajit and "ULL" or "")))()
end

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

-- Write s to the file at path (made or truncated).
function h.write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Copies of the module and of the named BPF objects where an unprivileged
-- user (the specs drop to uid 65534) can read them even when the checkout
-- is not (a clone in a mktemp -d directory is 0700): the module's cpath
-- entry, the objects' paths by name, a function that removes them, and the
-- luajit to run (make check's wrapper lives in the build: copied too).
function h.nobody_copies(...)
  local dir = ("/tmp/bh-nobody-%d-%d"):format(h.pid(), math.random(1, 1e9))
  local objs, luajit = {}, "luajit"
  local cmd = ("mkdir -m 0755 %s && cp %s/lib/bpfhost.so %s/"):format(dir, h.build, dir)
  for _, name in ipairs{...} do
    objs[name] = dir .. "/" .. name .. ".bpf.o"
    cmd = cmd .. (" && cp %s %s"):format(h.obj(name), objs[name])
  end
  local lj = h.sh("command -v luajit"):gsub("%s+$", "")
  if lj:sub(1, #h.build + 1) == h.build .. "/" then
    luajit = dir .. "/luajit"
    cmd = cmd .. (" && cp %s %s"):format(lj, luajit)
  end
  assert(select(2, h.sh(cmd .. " && chmod -R a+rX " .. dir)) == 0, "could not copy to " .. dir)
  return dir .. "/?.so", objs, function() h.sh("rm -rf " .. dir) end, luajit
end

-- Equal as decoded values: NaNs equal, zeros by sign, cdata by type and
-- value, tables key by key.
function h.same_value(a, b, depth)
  depth = depth or 0
  local ta = type(a)
  if ta ~= type(b) then return false end
  if ta == "number" then
    if a ~= a then return b ~= b end
    return a == b and (a ~= 0 or 1 / a == 1 / b)
  end
  if ta == "cdata" then return tostring(a) == tostring(b) end
  if ta ~= "table" then return a == b end
  if depth > 20 then return false end
  for k, x in pairs(a) do
    if not h.same_value(x, b[k], depth + 1) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- The number of possible CPUs (per-CPU values have one element each).
function h.possible_cpus()
  local f = assert(io.open("/sys/devices/system/cpu/possible"))
  local s = f:read("*l")
  f:close()
  local n = 0
  for a, b in s:gmatch("(%d+)%-?(%d*)") do
    n = n + (b ~= "" and tonumber(b) - tonumber(a) + 1 or 1)
  end
  return n
end

-- This process's pid (the tgid BPF programs see).
function h.pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = tonumber(f:read("*l"):match("^(%d+)"))
  f:close()
  return pid
end

-- A network namespace with a veth pair: host_if (here, host_ip) <-> peer_if
-- (in the namespace, peer_ip). env.udp_to_host(port, n) sends n UDP datagrams
-- from the namespace to host_ip; env.udp_to_peer the other way. env.close()
-- removes the namespace and both ends.
local netns_n = 0
function h.netns()
  -- names and subnet from the pid: specs of concurrent runs do not collide
  local pid = h.pid()
  netns_n = netns_n + 1
  local r = pid .. "x" .. netns_n
  local env = {ns = "bhns" .. r, host_if = "bhh" .. r, peer_if = "bhp" .. r}
  local net = ("10.%d.%d."):format(200 + pid % 50, (math.floor(pid / 50) + netns_n) % 250)
  env.host_ip, env.peer_ip = net .. "1", net .. "2"
  local _, st = h.sh(("ip netns add %s && ip link add %s type veth peer name %s && " ..
    "ip link set %s netns %s && ip addr add %s/24 dev %s && ip link set %s up && " ..
    "ip -n %s addr add %s/24 dev %s && ip -n %s link set %s up && ip -n %s link set lo up")
    :format(env.ns, env.host_if, env.peer_if, env.peer_if, env.ns, env.host_ip, env.host_if,
      env.host_if, env.ns, env.peer_ip, env.peer_if, env.ns, env.peer_if, env.ns))
  function env.close()
    h.sh(("ip netns del %s 2>/dev/null; ip link del %s 2>/dev/null"):format(env.ns, env.host_if))
  end
  if st ~= 0 then env.close(); error("could not make a netns with a veth pair") end
  function env.udp_to_host(port, n)
    h.sh(("ip netns exec %s bash -c 'for i in $(seq %d); do echo x > /dev/udp/%s/%d; done' 2>/dev/null")
      :format(env.ns, n or 1, env.host_ip, port))
  end
  function env.udp_to_peer(port, n)
    h.sh(("bash -c 'for i in $(seq %d); do echo x > /dev/udp/%s/%d; done' 2>/dev/null")
      :format(n or 1, env.peer_ip, port))
  end
  return env
end

-- A cgroup v2 directory; cg.run(cmd) runs a shell command inside it; cg.close() removes it.
function h.cgroup()
  local root = h.sh("mount -t cgroup2 | awk 'NR == 1 { print $3 }'"):match("%S+")
  assert(root, "no cgroup v2 mount")
  local cg = {path = ("%s/bhspec-%d-%d"):format(root, h.pid(), math.random(1, 1e9))}
  assert(select(2, h.sh("mkdir " .. cg.path)) == 0)
  function cg.run(cmd)
    return h.sh(("bash -c 'echo $$ > %s/cgroup.procs && %s'"):format(cg.path, cmd))
  end
  function cg.close() h.sh("rmdir " .. cg.path .. " 2>/dev/null") end
  return cg
end

math.randomseed(os.time())
return h
