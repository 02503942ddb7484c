local h = require "helper"
local bpf = require "bpfhost"

local NR_OPENAT = 257 -- x86_64

local function prog_obj()
  local o = bpf.open(h.obj("test_prog"))
  o.rodata.target_tgid = h.pid()
  o.rodata.target_nr = NR_OPENAT
  o:load()
  return o
end

local function open_files(n)
  for _ = 1, n do assert(io.open("/dev/null")):close() end
end

local function link_exists(id)
  return select(2, h.sh("bpftool link show id " .. id .. " >/dev/null 2>&1")) == 0
end

-- The XDP program ids on an interface, from iproute2.
local function xdp_on(ifname)
  return h.sh("ip -d link show " .. ifname):match("prog/xdp id (%d+)")
end

describe("link", function()
  context("arguments", function()
    it("methods refuse what is not a link", function()
      local methods = debug.getregistry()["bpfhost.link"].__methods
      for _, name in ipairs{"detach", "pin", "unpin", "info", "update_prog", "read"} do
        assert.matches("bad argument #1 .*bpfhost%.link expected, got number", h.raises(methods[name], 42))
      end
    end)
  end)

  context("lifetime", function()
    it("detach is idempotent; a detached link says so #root", function()
      local o = prog_obj()
      local l = o:program("on_openat"):attach()
      local id = l:info().id
      assert.is_true(l.attached)
      assert.is_true(l:detach())
      assert.is_true(l:detach())
      assert.is_false(l.attached)
      assert.is_false(link_exists(id))
      assert.equal("link tracepoint 'on_openat' (detached)", tostring(l))
      assert.equal("info link 'on_openat': link is detached", h.raises(l.info, l))
      assert.equal("pin link 'on_openat': link is detached", h.raises(l.pin, l, "/sys/fs/bpf/x"))
      assert.equal(-1, l.fd)
      o:close()
    end)

    it("the object keeps its links attached when the script drops them, and destroys them on close #root", function()
      local o = prog_obj()
      local id = o:program("on_openat"):attach():info().id
      collectgarbage(); collectgarbage()
      open_files(2)
      assert.equal(2, o.bss.tp_hits)
      assert.is_true(link_exists(id))
      o:close()
      assert.is_false(link_exists(id))
    end)

    it("a link keeps its object alive #root", function()
      local l = prog_obj():program("on_openat"):attach()
      collectgarbage(); collectgarbage()
      local id = l:info().id
      assert.is_true(link_exists(id))
      l:detach()
      assert.is_false(link_exists(id))
    end)
  end)

  context("#root kernel", function()
    it("info describes the kernel's link", function()
      local o = prog_obj()
      local p = o:program("on_openat")
      local info = p:attach():info()
      assert.equal("perf_event", info.type)
      assert.equal(p.id, info.prog_id)
      assert.equal("on_openat", info.program)
      assert.equal("tracepoint", info.kind)
      assert.is_number(info.id)
      o:close()
    end)

    it("pin keeps a link attached after its object is closed, until the pin goes", function()
      local dir, cleanup = h.tmp_bpffs()
      local ok, err = pcall(function()
        local o = prog_obj()
        local l = o:program("on_openat"):attach()
        local id = l:info().id
        assert.is_true(l:pin(dir .. "/l1"))
        assert.equal("pin link 'on_openat': it is pinned at '" .. dir .. "/l1' already (unpin it first)",
          h.raises(l.pin, l, dir .. "/l2"))
        local l2 = o:program("on_sys_enter"):attach()
        local e = h.raises(l2.pin, l2, dir .. "/l1")
        assert.equal("pin link 'on_sys_enter': cannot pin at '" .. dir .. "/l1': File exists (EEXIST)", e.message)
        assert.equal("something is pinned there already", e.hint)
        o:close()
        assert.is_true(link_exists(id))
        assert.equal(0, select(2, h.sh("bpftool link show pinned " .. dir .. "/l1 >/dev/null")))
        h.sh("rm " .. dir .. "/l1")
        assert.is_false(link_exists(id))

        o = prog_obj()
        l = o:program("on_openat"):attach()
        id = l:info().id
        l:pin(dir .. "/l2")
        assert.is_true(l:unpin())
        o:close()
        assert.is_false(link_exists(id))
      end)
      cleanup()
      assert(ok, err)
    end)

    it("update_prog swaps the program of an XDP link; traffic reaches the new one", function()
      local env = h.netns()
      local o = bpf.open(h.obj("test_net"))
      local ok, err = pcall(function()
        o.rodata.udp_port = 4242
        o:load()
        local l = o:program("xdp_count"):attach_xdp(env.host_if, "skb")
        env.udp_to_host(4242, 2)
        assert.equal(2, bpf.sum(o:get_map("counts"):lookup(0)))
        assert.equal(l, l:update_prog(o:program("xdp_other_prog")))
        assert.equal(tostring(o:program("xdp_other_prog").id), xdp_on(env.host_if))
        env.udp_to_host(4242, 3)
        assert.equal(2, bpf.sum(o:get_map("counts"):lookup(0)))
        assert.is_true(o.bss.xdp_other >= 3)
        local e = h.raises(l.update_prog, l, o:program("tc_in"))
        assert.equal("update_prog", e.op)
        assert.equal("EINVAL", e.code)
        l:detach()
        assert.is_nil(xdp_on(env.host_if))
      end)
      o:close()
      env.close()
      assert(ok, err)
    end)

    it("XDP: a second program is refused unless replace is asked; replace detaches only its own", function()
      local env = h.netns()
      local o = bpf.load(h.obj("test_net"))
      local ok, err = pcall(function()
        local a, b = o:program("xdp_count"), o:program("xdp_other_prog")
        local la = a:attach_xdp(env.host_if, "skb")
        local e = h.raises(b.attach_xdp, b, env.host_if, "skb")
        assert.equal("EBUSY", e.code)
        assert.equal("attach xdp 'xdp_other_prog': interface '" .. env.host_if ..
          "' already has an XDP program (id " .. a.id .. ") (EBUSY)", e.message)
        assert.matches("update_prog", e.hint)
        la:detach()
        -- without links: replace takes the interface over
        local na = a:attach_xdp(env.host_if, "skb", {replace = true})
        assert.equal(tostring(a.id), xdp_on(env.host_if))
        local nb = b:attach_xdp(env.host_if, "skb", {replace = true})
        assert.equal(tostring(b.id), xdp_on(env.host_if))
        assert.equal("xdp", nb:info().type)
        assert.equal(env.host_if, nb:info().ifname)
        assert.equal("pin link 'xdp_other_prog': this xdp attachment is not one BPF link, so it cannot pin",
          h.raises(nb.pin, nb, "/sys/fs/bpf/x"))
        na:detach() -- no longer there: leaves b's alone
        assert.equal(tostring(b.id), xdp_on(env.host_if))
        nb:detach()
        assert.is_nil(xdp_on(env.host_if))
      end)
      o:close()
      env.close()
      assert(ok, err)
    end)

    it("tc filters and XDP programs go when the object is closed", function()
      local env = h.netns()
      local o = bpf.load(h.obj("test_net"))
      local ok, err = pcall(function()
        o:program("tc_in"):attach_tc{ifname = env.host_if}
        o:program("tc_out"):attach_tc{ifname = env.host_if, direction = "egress"}
        o:program("xdp_count"):attach_xdp(env.host_if, "skb", {replace = true})
        assert.matches("tc_in", h.sh("tc filter show dev " .. env.host_if .. " ingress"))
        assert.is_not_nil(xdp_on(env.host_if))
        o:close()
        assert.equal("", h.sh("tc filter show dev " .. env.host_if .. " ingress"))
        assert.equal("", h.sh("tc filter show dev " .. env.host_if .. " egress"))
        assert.not_matches("clsact", h.sh("tc qdisc show dev " .. env.host_if))
        assert.is_nil(xdp_on(env.host_if))
      end)
      o:close()
      env.close()
      assert(ok, err)
    end)

    it("tc filters and XDP programs go when the host exits, however it exits", function()
      local env = h.netns()
      local ok, err = pcall(function()
        local attach = ([[local o = bpf.load(%q)
          o:program("tc_in"):attach_tc{ifname = %q}
          o:program("xdp_count"):attach_xdp(%q, "skb", {replace = true})
          io.write("attached\n"); io.flush()
        ]]):format(h.obj("test_net"), env.host_if, env.host_if)
        for _, ending in ipairs{
          {"os.exit(0)", 0},                     -- no lua_close: the exit handler
          {"error('boom')", 1},                  -- lua_close after the error
          {"os.exit(3, true)", 3},
          {"io.stdout:close(); bpf.sleep(60)", 143, true}, -- SIGTERM while waiting
        } do
          local cmd = ("%s -e %q"):format(h.host, attach .. ending[1])
          if ending[3] then
            -- stop it once it says it attached (stdout closed right after)
            local out = ("/tmp/bh-linkspec-%d.out"):format(h.pid())
            cmd = ("(%s > %s 2>/dev/null & pid=$!; while ! grep -q attached %s 2>/dev/null; do kill -0 $pid || break; sleep 0.05; done; " ..
              "kill -TERM $pid; wait $pid; st=$?; cat %s; rm -f %s; exit $st)"):format(cmd, out, out, out, out)
          end
          local out, status = h.sh(cmd .. " 2>/dev/null")
          assert.equal("attached\n", out)
          assert.equal(ending[2], status)
          assert.equal("", h.sh("tc filter show dev " .. env.host_if .. " ingress"))
          assert.not_matches("clsact", h.sh("tc qdisc show dev " .. env.host_if))
          assert.is_nil(xdp_on(env.host_if))
        end
      end)
      env.close()
      assert(ok, err)
    end)
  end)
end)
