-- Counts UDP packets to one port with XDP, per CPU, on a veth pair that this
-- script makes (one end in a network namespace of its own) and removes when
-- it stops. The port and the drop/pass verdict are set through .rodata
-- before load; the namespace sends a few datagrams every second.
--
--   build/bpfhost scripts/xdp_count.lua [port [seconds [drop]]]
--   build/bpfhost scripts/xdp_count.lua 4242 10 drop
local bpf = require "bpfhost"

local function usage(msg)
  io.stderr:write(("xdp_count: %s\nusage: xdp_count.lua [port [seconds [drop]]]\n"):format(msg))
  os.exit(2)
end
local port = tonumber(arg[1] or 4242)
local seconds = tonumber(arg[2] or 5)
local drop = arg[3] == "drop"
if not port or port < 1 or port > 65535 or port % 1 ~= 0 then usage("port must be 1..65535") end
if not seconds or seconds ~= seconds or seconds <= 0 or seconds == math.huge then
  usage("seconds must be a number > 0")
end
if arg[3] and not drop then usage("the third argument can only be 'drop'") end

-- Its BPF object: where scripts/find_object.lua says.
local object = dofile(((arg and arg[0] or ""):match("^(.*)/") or ".") .. "/find_object.lua")

local pid = io.open("/proc/self/stat"):read("*l"):match("^%d+")
local ns, host_if, peer_if = "bhx" .. pid, "bhxh" .. pid, "bhxp" .. pid
local net = ("10.%d.%d."):format(200 + pid % 50, math.floor(pid / 50) % 250)

local function sh(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  return ok == true or ok == 0
end

local function teardown()
  sh(("ip netns del %s; ip link del %s"):format(ns, host_if))
end

local function setup()
  assert(sh(("ip netns add %s && ip link add %s type veth peer name %s && ip link set %s netns %s")
    :format(ns, host_if, peer_if, peer_if, ns)), "could not make the namespace and veth pair")
  assert(sh(("ip addr add %s1/24 dev %s && ip link set %s up && ip -n %s addr add %s2/24 dev %s" ..
    " && ip -n %s link set %s up"):format(net, host_if, host_if, ns, net, peer_if, ns, peer_if)))
end

local function main()
  setup()
  local obj = bpf.open(object("test_net.bpf.o"))
  obj.rodata.udp_port = port       -- const volatile: fixed at load
  obj.rodata.drop = drop
  obj:load()
  obj:program("xdp_count"):attach_xdp(host_if, "skb")
  local counts = obj:get_map("counts")
  print(("XDP on %s: counting UDP to port %d (%s), %d s; Ctrl-C stops"):format(host_if, port,
    drop and "dropping them" or "passing them", seconds))

  local why = bpf.run{every = 1, timeout = seconds, tick = function()
    sh(("ip netns exec %s bash -c 'for i in 1 2 3; do echo x > /dev/udp/%s1/%d; done'")
      :format(ns, net, port))
    local pkts, bytes = counts:lookup(0), counts:lookup(1)
    local cells = {}
    for cpu, n in ipairs(pkts) do cells[#cells + 1] = ("cpu%d %d"):format(cpu - 1, n) end
    print(("packets %d (%s), bytes %d, seen by XDP %d"):format(bpf.sum(pkts),
      table.concat(cells, ", "), bpf.sum(bytes), obj.bss.xdp_seen))
  end}
  obj:close()
  return why
end

local ok, res = pcall(main)
teardown()
if not ok then error(res, 0) end
print("stopped: " .. tostring(res))
