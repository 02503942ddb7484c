local h = require "helper"
local bpf = require "bpfhost"
local pkt = require "bpfhost.packet"

local unpack = unpack or table.unpack
local NR_OPENAT = 257 -- x86_64

-- Open test_prog configured for this process; load it unless told not to.
local function prog_obj(load)
  local o = bpf.open(h.obj("test_prog"))
  o.rodata.target_tgid = h.pid()
  o.rodata.target_nr = NR_OPENAT
  if load ~= false then o:load() end
  return o
end

local function open_files(n)
  for _ = 1, n do assert(io.open("/dev/null")):close() end
end

describe("program", function()
  context("arguments", function()
    local o
    before_each(function() o = bpf.open(h.obj("test_net")) end)
    after_each(function() o:close() end)

    it("set_autoload takes a boolean", function()
      local p = o:program("xdp_count")
      assert.matches("bad argument #2 .*boolean expected", h.raises(p.set_autoload, p, 1))
      assert.equal(p, p:set_autoload(false))
      assert.is_false(p.autoload)
    end)

    it("attach calls check their arguments before anything else", function()
      local x, t = o:program("xdp_count"), o:program("tc_in")
      local cases = {
        {x.attach_xdp, x, "lo", "fast", "attach_xdp: mode must be \"skb\", \"drv\" or \"hw\", got \"fast\""},
        {x.attach_xdp, x, "lo", "skb", {replace = 1}, "attach_xdp: option 'replace' must be a boolean, got number"},
        {x.attach_xdp, x, "lo", "skb", {force = true}, "attach_xdp: unknown option 'force' (known: replace)"},
        {t.attach_tc, t, {ifname = "lo", direction = "in"}, "attach_tc: direction must be \"ingress\" or \"egress\", got \"in\""},
        {t.attach_tc, t, {ifname = "lo", replace = true}, "attach_tc: replace needs the 'handle' and 'priority' of the filter to replace"},
        {t.attach_tc, t, {ifname = "lo", ifindex = 1}, "attach_tc: give one of 'ifname' or 'ifindex'"},
        {t.attach_tc, t, {ifname = "lo", tcx = true, priority = 1}, "attach_tc: a tcx link has no priority, handle or replace"},
        {t.attach_tc, t, "lo", "attach_tc: options must be a table, got string"},
        {x.attach_cgroup, x, "/sys/fs/cgroup", "sideways", "attach_cgroup: unknown attach type 'sideways' (e.g. \"cgroup_inet_ingress\", \"cgroup_inet_egress\", \"cgroup_inet_sock_create\")"},
        {x.attach_uprobe, x, {binary = "/bin/true"}, "attach_uprobe: give option 'func' (a function name) or 'offset'"},
        {x.attach_uprobe, x, {func = "main"}, "attach_uprobe: option 'binary' (a path, or a library name) is required"},
        {x.attach_uprobe, x, {binary = "/bin/true", func = "main", pid = -2}, "attach_uprobe: option 'pid' must be an integer in [-1, 2147483647], got -2"},
        {x.attach_usdt, x, {binary = "/bin/true", provider = "p"}, "attach_usdt: options 'binary', 'provider' and 'name' are required"},
        {x.attach_kprobe, x, {offset = 4}, "attach_kprobe: option 'func' (the kernel function) is required"},
        {x.attach_perf_event, x, {event = "cpu-clock"}, "attach_perf_event: give 'cpu' (one CPU, every process), 'pid' (one process, 0 for this one) or both"},
        {x.attach_perf_event, x, {event = "tea-time", cpu = 0}, "^attach_perf_event: unknown event 'tea%-time' %(known: cpu%-clock, "},
        {x.attach_perf_event, x, {event = "cpu-clock", cpu = 0, period = 1, freq = 1}, "attach_perf_event: give 'period' or 'freq', not both"},
        {x.test_run, x, {data = 42}, "test_run: option 'data' must be a string of bytes, got number"},
        {x.test_run, x, {data = "x", ["repeat"] = -1}, "test_run: option 'repeat' must be an integer in [0, 2147483647], got -1"},
        {x.test_run, x, {data = "x", bogus = 1}, "test_run: unknown option 'bogus' (known: data, ctx, repeat, data_size_out, flags, cpu)"},
        {x.test_run, x, "x", "test_run: options must be a table, got string"},
      }
      for _, c in ipairs(cases) do
        local want = table.remove(c)
        local fn = table.remove(c, 1)
        local err = h.raises(fn, unpack(c))
        if want:sub(1, 1) == "^" then
          assert.matches(want, err)
        else
          assert.equal(want, err)
        end
      end
    end)

    it("attaching before load says to load first", function()
      local x = o:program("xdp_count")
      assert.equal("attach_xdp program 'xdp_count': the object is not loaded yet (call obj:load() first)",
        h.raises(x.attach_xdp, x, "lo", "skb"))
      assert.equal("attach program 'xdp_count': the object is not loaded yet (call obj:load() first)",
        h.raises(x.attach, x))
      assert.equal("test_run program 'xdp_count': the object is not loaded yet (call obj:load() first)",
        h.raises(x.test_run, x, {data = pkt.udp{}}))
    end)

    it("attach kinds check the program type", function()
      local x, t = o:program("xdp_count"), o:program("tc_in")
      assert.equal("attach_tc program 'xdp_count': a xdp program is not a tc (sched_cls) program",
        h.raises(x.attach_tc, x, {ifname = "lo"}))
      assert.equal("attach_xdp program 'tc_in': a sched_cls program is not an XDP program",
        h.raises(t.attach_xdp, t, "lo"))
      assert.equal("attach_trace program 'tc_in': a sched_cls program is not a tracing program (tp_btf, fentry, fexit, fmod_ret)",
        h.raises(t.attach_trace, t))
    end)

    it("fields say what the program is", function()
      local x = o:program("xdp_count")
      assert.equal("xdp_count", x.name)
      assert.equal("xdp", x.section)
      assert.equal("xdp", x.type)
      assert.equal(-1, x.fd)
      assert.is_true(x.autoload)
      assert.is_nil(x.id)
    end)
  end)

  context("lifetime", function()
    it("a program handle of a closed object raises, never crashes", function()
      local o = bpf.open(h.obj("test_net"))
      local p = o:program("xdp_count")
      o:close()
      assert.equal("set_autoload program 'xdp_count': its object is closed", h.raises(p.set_autoload, p, false))
      assert.equal("test_run program 'xdp_count': its object is closed", h.raises(p.test_run, p, {}))
      assert.is_nil(p.fd)
    end)

    it("handles survive collection of their object's other handles", function()
      local o = bpf.open(h.obj("test_net"))
      local p = o:program("tc_in")
      o = nil
      collectgarbage(); collectgarbage()
      assert.equal("tc_in", p.name)
      assert.equal("sched_cls", p.type)
    end)
  end)

  context("#root kernel", function()
    it("set_autoload(false) leaves a program out of the load", function()
      local o = prog_obj(false)
      o:program("on_read"):set_autoload(false)
      o:load()
      local p = o:program("on_read")
      assert.equal(-1, p.fd)
      assert.is_number(o:program("on_openat").id)
      assert.equal("attach program 'on_read': it was not loaded (autoload is off)", h.raises(p.attach, p))
      assert.equal("set_autoload program 'on_read': the object is already loaded (program settings apply before obj:load())",
        h.raises(p.set_autoload, p, true))
      o:close()
    end)

    it("a tracepoint fires on the syscalls this process makes", function()
      local o = prog_obj()
      local l = o:program("on_openat"):attach()
      assert.matches("^link tracepoint 'on_openat' fd %d+$", tostring(l))
      open_files(7)
      assert.equal(7, o.bss.tp_hits)
      l:detach()
      open_files(3)
      assert.equal(7, o.bss.tp_hits)
      o:close()
    end)

    it("attach_tracepoint names a tracepoint explicitly, and an unknown one is a clear error", function()
      local o = prog_obj()
      local p = o:program("on_openat")
      local l = p:attach_tracepoint("syscalls", "sys_enter_openat")
      open_files(2)
      assert.equal(2, o.bss.tp_hits)
      l:detach()
      local err = h.raises(p.attach_tracepoint, p, "syscalls", "sys_enter_nothing")
      assert.equal("attach tracepoint 'on_openat': no such tracepoint (or tracefs is not mounted) (ENOENT)", err.message)
      assert.equal("tracepoints are listed in /sys/kernel/tracing/events", err.hint)
      o:close()
    end)

    it("a raw tracepoint fires, by SEC() and by name", function()
      local o = prog_obj()
      local p = o:program("on_sys_enter")
      local l = p:attach()
      open_files(4)
      assert.equal(4, o.bss.raw_hits)
      l:detach()
      l = p:attach_raw_tracepoint("sys_enter")
      assert.equal("sys_enter", l:info().tp_name)
      open_files(1)
      assert.equal(5, o.bss.raw_hits)
      local err = h.raises(p.attach_raw_tracepoint, p, "no_such_tp")
      assert.equal("attach raw_tp 'on_sys_enter': no such raw tracepoint (ENOENT)", err.message)
      o:close()
    end)

    it("a tp_btf program fires, and reads the task with CO-RE", function()
      local o = prog_obj()
      local l = o:program("on_sys_enter_btf"):attach_trace()
      assert.matches("^link tp_btf 'on_sys_enter_btf'", tostring(l))
      assert.equal("raw_tracepoint", l:info().type) -- the kernel's link for tp_btf
      assert.equal("sys_enter", l:info().tp_name)
      open_files(3)
      assert.equal(3, o.bss.btf_hits)
      assert.equal(h.pid(), o.bss.seen_tgid)
      o:close()
    end)

    it("a kprobe is refused with the missing kernel feature named", function()
      local o = prog_obj()
      local p = o:program("on_read")
      local err = h.raises(p.attach, p)
      assert.equal("attach", err.op)
      assert.equal("on_read", err.name)
      assert.equal("EOPNOTSUPP", err.code)
      assert.equal("attach kprobe 'on_read': this kernel has no kprobe support (CONFIG_KPROBES) (EOPNOTSUPP)", err.message)
      err = h.raises(p.attach_kprobe, p, {func = "do_sys_openat2", retprobe = true})
      assert.equal("attach kretprobe 'on_read': this kernel has no kprobe support (CONFIG_KPROBES) (EOPNOTSUPP)", err.message)
      -- and obj:attach() stops at it, leaving nothing attached: the tracepoint
      -- it attached first sees no more syscalls
      err = h.raises(o.attach, o)
      assert.matches("no kprobe support", err.message)
      open_files(3)
      assert.equal(0, o.bss.tp_hits)
      assert.equal(0, o.bss.raw_hits)
      o:close()
    end)

    it("uprobe and uretprobe fire on a function of a test program", function()
      local o = prog_obj()
      local target = h.build .. "/test_uprobe_target"
      local l1 = o:program("on_target"):attach_uprobe{binary = target, func = "bh_target"}
      local l2 = o:program("on_target_ret"):attach_uprobe{binary = target, func = "bh_target"}
      assert.matches("^link uprobe ", tostring(l1))
      assert.matches("^link uretprobe ", tostring(l2))
      local out = h.sh(target .. " 5 8 13")
      assert.equal("52\n", out)
      assert.equal(3, o.bss.uprobe_hits)
      assert.equal(13, o.bss.uprobe_arg)
      assert.equal(3, o.bss.uretprobe_hits)
      assert.equal(26, o.bss.uretprobe_ret)
      local p = o:program("on_target")
      local err = h.raises(p.attach_uprobe, p, {binary = target, func = "no_such_function"})
      assert.equal("attach uprobe 'on_target': no function 'no_such_function' in '" .. target .. "' (ENOENT)", err.message)
      err = h.raises(p.attach_uprobe, p, {binary = "/nonexistent/bin", func = "main"})
      assert.equal("attach uprobe 'on_target': cannot read binary '/nonexistent/bin' (ENOENT)", err.message)
      o:close()
    end)

    it("a USDT probe fires, with its argument", function()
      local o = prog_obj()
      local target = h.build .. "/test_uprobe_target"
      local l = o:program("on_usdt"):attach_usdt{binary = target, provider = "bpfhost", name = "tick"}
      assert.equal("usdt", l:info().type)
      h.sh(target .. " 1 2 3 40")
      assert.equal(4, o.bss.usdt_hits)
      assert.equal(40, o.bss.usdt_arg)
      local p = o:program("on_usdt")
      local err = h.raises(p.attach_usdt, p, {binary = target, provider = "bpfhost", name = "tock"})
      assert.equal("attach usdt 'on_usdt': no USDT probe bpfhost:tock in '" .. target .. "' (ENOENT)", err.message)
      assert.equal("pin link 'on_usdt': this usdt attachment is not one BPF link, so it cannot pin",
        h.raises(l.pin, l, "/sys/fs/bpf/x"))
      o:close()
    end)

    it("a perf_event program runs on software clock samples of this process", function()
      local o = prog_obj()
      o:program("on_perf"):attach_perf_event{event = "task-clock", pid = 0, period = 200000}
      -- burn CPU until the event has fired (bounded: about 2^27 steps)
      local x, n = 0, 0
      while o.bss.perf_hits == 0 and n < 128 do
        for i = 1, 1e6 do x = x + i % 3 end
        n = n + 1
      end
      assert.is_true(o.bss.perf_hits > 0)
      local p = o:program("on_perf")
      assert.matches("^attach_perf_event: no CPU 100000 %(this machine has %d+%)$",
        h.raises(p.attach_perf_event, p, {event = "cpu-clock", cpu = 100000}))
      o:close()
    end)

    it("an iterator's output is read through its link, afresh each time", function()
      local o = prog_obj()
      local it = o:program("dump_task"):attach_iter()
      local out = it:read()
      assert.matches("^" .. h.pid() .. " " .. h.pid() .. " %S+\n", out)
      assert.equal(out:match("^%d+ %d+"), it:read():match("^%d+ %d+"))
      local m = o:get_map("iter_items")
      local p = o:program("dump_items")
      assert.equal("attach_iter program 'dump_items': this iterator needs a map: p:attach_iter{map = m}",
        h.raises(p.attach_iter, p))
      local mi = p:attach_iter{map = m}
      assert.equal("", mi:read())
      m:update(3, 33)
      m:update(4, 44)
      local lines = {}
      for l in mi:read():gmatch("[^\n]+") do lines[#lines + 1] = l end
      table.sort(lines)
      assert.same({"3=33", "4=44"}, lines)
      local tp = o:program("on_openat"):attach()
      assert.equal("read link 'on_openat': not an iterator link (it is a tracepoint link)", h.raises(tp.read, tp))
      o:close()
    end)

    it("a cgroup program sees the sockets made in the cgroup the spec creates", function()
      local cg = h.cgroup()
      local o = prog_obj()
      local ok, err = pcall(function()
        local l = o:program("on_sock_create"):attach_cgroup(cg.path)
        local info = l:info()
        assert.equal("cgroup", info.type)
        assert.equal("cgroup_inet_sock_create", info.attach_type)
        cg.run("echo x > /dev/udp/127.0.0.1/9; echo x > /dev/udp/127.0.0.1/9; echo x > /dev/udp/127.0.0.1/9")
        assert.equal(3, o.bss.cgroup_hits)
        h.sh("bash -c 'echo x > /dev/udp/127.0.0.1/9'") -- outside the cgroup
        assert.equal(3, o.bss.cgroup_hits)
        l:detach()
        -- the same with the attach type named
        l = o:program("on_sock_create"):attach_cgroup(cg.path, "cgroup_inet_sock_create")
        cg.run("echo x > /dev/udp/127.0.0.1/9")
        assert.equal(4, o.bss.cgroup_hits)
        local p = o:program("on_sock_create")
        local e = h.raises(p.attach_cgroup, p, "/nonexistent/cgroup")
        assert.equal("attach cgroup 'on_sock_create': cannot open cgroup '/nonexistent/cgroup': No such file or directory (ENOENT)", e.message)
      end)
      o:close()
      cg.close()
      assert(ok, err)
    end)

    it("XDP counts UDP packets sent across a veth from a namespace, in skb and drv modes", function()
      local env = h.netns()
      local o = bpf.open(h.obj("test_net"))
      local ok, err = pcall(function()
        o.rodata.udp_port = 4242
        o:load()
        local counts = o:get_map("counts")
        for _, mode in ipairs{"skb", "drv"} do
          local before = bpf.sum(counts:lookup(0))
          local l = o:program("xdp_count"):attach_xdp(env.host_if, mode)
          assert.equal("xdp", l:info().type)
          env.udp_to_host(4242, 3)
          env.udp_to_host(4243, 2) -- another port: not counted
          assert.equal(before + 3, bpf.sum(counts:lookup(0)))
          l:detach()
          env.udp_to_host(4242, 1)
          assert.equal(before + 3, bpf.sum(counts:lookup(0)))
        end
        local p = o:program("xdp_count")
        local e = h.raises(p.attach_xdp, p, env.host_if, "hw")
        assert.equal("attach xdp 'xdp_count': the driver of '" .. env.host_if .. "' has no XDP offload (mode \"hw\") (EINVAL)", e.message)
      end)
      o:close()
      env.close()
      assert(ok, err)
    end)

    it("a pinned program opens by its pin: test_run, attach_xdp, attach_raw_tracepoint, and clear refusals", function()
      local dir, rm = h.tmp_bpffs()
      local env = h.netns()
      local o = bpf.open(h.obj("test_net"))
      local po = prog_obj()
      local ok, err = pcall(function()
        o.rodata.udp_port = 4343
        o:load()
        local counts = o:get_map("counts")
        -- pinned by another tool, as bpftool does
        local _, st = h.sh(("bpftool prog pin id %d %s/xdp && bpftool prog pin id %d %s/rawtp")
          :format(o:program("xdp_bounce").id, dir, po:program("on_sys_enter").id, dir))
        assert.equal(0, st)
        local x = bpf.open_pinned(dir .. "/xdp")
        assert.equal("xdp_bounce", x.name)
        assert.equal("xdp", x.type)
        assert.equal(o:program("xdp_bounce").id, x.id)
        assert.equal(dir .. "/xdp", x.path)
        assert.matches("^program 'xdp_bounce' xdp pinned at " .. dir:gsub("%p", "%%%0") .. "/xdp$", tostring(x))
        -- test_run through the pinned fd: the frame comes back with its addresses swapped
        local frame = ("\1\2\3\4\5\6" .. "\7\8\9\10\11\12" .. "\8\0") .. ("x"):rep(50)
        local r = x:test_run{data = frame}
        assert.equal(3, r.retval) -- XDP_TX
        assert.equal("\7\8\9\10\11\12\1\2\3\4\5\6", r.data:sub(1, 12))
        -- what needs the object says so
        assert.matches("^attach program 'xdp_bounce': a program opened from a pin has no object", h.raises(x.attach, x))
        assert.matches("^attach_uprobe program 'xdp_bounce': a program opened from a pin", h.raises(x.attach_uprobe, x, {}))
        assert.equal("set_autoload program 'xdp_bounce': a program opened from a pin is loaded already",
          h.raises(x.set_autoload, x, false))
        assert.equal("attach_tc program 'xdp_bounce': a xdp program is not a tc (sched_cls) program",
          h.raises(x.attach_tc, x, {ifname = "lo"}))
        assert.matches("^attach_cgroup program 'xdp_bounce': give the attach type", h.raises(x.attach_cgroup, x, "/sys/fs/cgroup"))
        -- attach_xdp: a pinned XDP program (xdp_count, pinned by us this time) counts real traffic
        h.sh(("bpftool prog pin id %d %s/count"):format(o:program("xdp_count").id, dir))
        local c = bpf.open_pinned(dir .. "/count")
        local before = bpf.sum(counts:lookup(0))
        local l = c:attach_xdp(env.host_if, "skb")
        env.udp_to_host(4343, 3)
        -- (a loaded machine may hand the packets to ksoftirqd: wait for them, bounded)
        require("maphelp").wait_for(function() return bpf.sum(counts:lookup(0)) >= before + 3 end, 5)
        assert.equal(before + 3, bpf.sum(counts:lookup(0)))
        l:detach()
        env.udp_to_host(4343, 1)
        assert.equal(before + 3, bpf.sum(counts:lookup(0)))
        -- a pinned program as a prog_array value
        local pa = bpf.map_create{type = "prog_array", max_entries = 2}
        assert.is_true(pa:update(0, c))
        assert.equal(c.id, pa:lookup(0))
        pa:close()
        -- raw_tp: attach_raw_tracepoint fires the program
        local rt = bpf.open_pinned(dir .. "/rawtp")
        local hits = po.bss.raw_hits
        local rl = rt:attach_raw_tracepoint("sys_enter")
        assert.equal("sys_enter", rl:info().tp_name)
        open_files(3)
        assert.equal(hits + 3, po.bss.raw_hits)
        rl:detach()
        open_files(1)
        assert.equal(hits + 3, po.bss.raw_hits)
        -- close: the handle is done, the pins stay
        assert.is_true(x:close())
        assert.is_true(x:close())
        assert.equal("test_run program 'xdp_bounce': it is closed", h.raises(x.test_run, x, {data = frame}))
        assert.matches("%(closed%)$", tostring(x))
        local p = o:program("xdp_count")
        assert.equal("close program 'xdp_count': programs of an object close with it (obj:close())", h.raises(p.close, p))
        c:close()
        rt:close()
        -- a handle dropped without close gives its fd back when collected
        local function nfds()
          local f = io.popen("ls /proc/" .. h.pid() .. "/fd")
          local n = select(2, f:read("*a"):gsub("%d+", ""))
          f:close()
          return n
        end
        collectgarbage(); collectgarbage()
        local n0 = nfds()
        local dropped = bpf.open_pinned(dir .. "/xdp")
        local fd = dropped.fd
        assert.equal(n0 + 1, nfds())
        local function what(n)
          local f = io.popen(("readlink /proc/%d/fd/%d 2>/dev/null"):format(h.pid(), n))
          local s = f:read("*a")
          f:close()
          return s
        end
        assert.matches("bpf%-prog", what(fd))
        dropped = nil -- luacheck: ignore
        for _ = 1, 4 do collectgarbage() end
        assert.is_nil(what(fd):find("bpf-prog", 1, true), "fd " .. fd .. " still open: " .. what(fd))
      end)
      o:close()
      po:close()
      env.close()
      rm()
      assert(ok, err)
    end)

    it("rodata configuration changes what XDP does with real traffic", function()
      local env = h.netns()
      local o = bpf.open(h.obj("test_net"))
      local ok, err = pcall(function()
        o.rodata.udp_port = 5353
        o.rodata.drop = true
        o:load()
        -- a tc filter on the same interface sees only what XDP let through
        o:program("xdp_count"):attach_xdp(env.host_if, "skb")
        o:program("tc_in"):attach_tc{ifname = env.host_if, direction = "ingress"}
        env.udp_to_host(5353, 3)
        assert.equal(3, bpf.sum(o:get_map("counts"):lookup(0)))
        assert.equal(0, o.bss.tc_ingress)
      end)
      o:close()
      env.close()
      assert(ok, err)
    end)

    it("tc counts packets on ingress and egress of a veth, and detaches on close", function()
      local env = h.netns()
      local o = bpf.open(h.obj("test_net"))
      local ok, err = pcall(function()
        o.rodata.udp_port = 4242
        o:load()
        local li = o:program("tc_in"):attach_tc{ifname = env.host_if, direction = "ingress"}
        local le = o:program("tc_out"):attach_tc{ifname = env.host_if, direction = "egress", priority = 3, handle = 9}
        local info = le:info()
        assert.equal("tc", info.type)
        assert.equal("egress", info.direction)
        assert.equal(3, info.priority)
        assert.equal(9, info.handle)
        assert.equal(env.host_if, info.ifname)
        env.udp_to_host(4242, 2)
        env.udp_to_peer(4242, 4)
        assert.equal(2, o.bss.tc_ingress)
        assert.equal(4, o.bss.tc_egress)
        assert.matches("tc_in", h.sh("tc filter show dev " .. env.host_if .. " ingress"))
        li:detach()
        assert.equal("", h.sh("tc filter show dev " .. env.host_if .. " ingress"))
        assert.matches("clsact", h.sh("tc qdisc show dev " .. env.host_if))
        le:detach()
        -- the clsact qdisc that attach_tc made goes with its last filter
        assert.not_matches("clsact", h.sh("tc qdisc show dev " .. env.host_if))
        -- a tcx link (kernel 6.6) on the same device
        local lx = o:program("tc_in"):attach_tc{ifname = env.host_if, tcx = true}
        assert.equal("tcx", lx:info().type)
        env.udp_to_host(4242, 1)
        assert.equal(3, o.bss.tc_ingress)
      end)
      o:close()
      env.close()
      assert(ok, err)
    end)
  end)
end)

describe("load failures", function()
  context("#root kernel", function()
    it("carry the whole verifier log, the program and the verifier's last line", function()
      local o = bpf.open(h.obj("test_verifier"))
      o:program("null_deref"):set_autoload(true)
      local err = h.raises(o.load, o)
      assert.equal("load", err.op)
      assert.equal("EACCES", err.code)
      assert.equal("load object '" .. h.obj("test_verifier") .. "': program 'null_deref' was rejected by the verifier: R0 invalid mem access 'map_value_or_null' (EACCES)", err.message)
      assert.matches("^0: R1=ctx", err.log)
      assert.matches("R0 invalid mem access 'map_value_or_null'\nprocessed %d+ insns", err.log)
      assert.equal("a pointer that may be NULL (a map lookup's result) is used without a NULL check", err.hint)
      o:close()
    end)

    it("grow the log buffer until the whole log fits", function()
      for _, size in ipairs{4096, 256 * 1024} do
        local o = bpf.open(h.obj("test_verifier"), {log_size = size})
        o:program("long_log"):set_autoload(true)
        local err = h.raises(o.load, o)
        assert.equal("EACCES", err.code)
        assert.is_true(#err.log > 256 * 1024, "log of " .. #err.log .. " bytes")
        assert.matches("^0: R1=ctx", err.log)               -- the beginning
        assert.matches("R0 invalid mem access 'map_value_or_null'\nprocessed %d+ insns[^\n]*\n$", err.log) -- the end
        assert.matches("program 'long_log' was rejected by the verifier: R0 invalid mem access", err.message)
        o:close()
      end
    end)

    it("leave the object usable for nothing but close", function()
      local o = bpf.open(h.obj("test_verifier"))
      o:program("null_deref"):set_autoload(true)
      h.raises(o.load, o)
      assert.equal("load object '" .. h.obj("test_verifier") .. "': its load failed already; libbpf loads an object once (open it again)",
        h.raises(o.load, o))
      assert.is_true(o:close())
      assert.is_true(o:close())
    end)

    it("fentry, fexit, fmod_ret and lsm are refused with the reason named", function()
      for name, sec in pairs{on_open_entry = "fentry/do_sys_openat2", on_open_exit = "fexit/do_sys_openat2",
                             on_file_open_ret = "fmod_ret/security_file_open", on_lsm_file_open = "lsm/file_open"} do
        local o = bpf.open(h.obj("test_trampoline"))
        for pname, p in pairs(o:programs()) do p:set_autoload(pname == name) end
        local err = h.raises(o.load, o)
        assert.equal("EPERM", err.code)
        assert.equal("load object '" .. h.obj("test_trampoline") .. "': program '" .. name .. "' (" .. sec ..
          ") was refused: this kernel does not allow BPF trampolines (fentry/fexit/fmod_ret/lsm) (EPERM)", err.message)
        assert.equal("this kernel refuses BPF trampolines, which fentry, fexit, fmod_ret, freplace and lsm programs need; use tp_btf, raw_tp or tracepoint programs", err.hint)
        o:close()
      end
    end)

    it("without CAP_BPF, or without CAP_PERFMON for a tracing program, the hint says which is missing", function()
      local cpath, objs, rm, luajit = h.nobody_copies("test_prog")
      finally(rm)
      local code = ([[package.cpath = %q .. package.cpath
        local bpf = require "bpfhost"
        local o = bpf.open(%q)
        local ok, e = pcall(o.load, o)
        io.write(e.code, "\n", e.hint, "\n")]]):format(cpath .. ";", objs.test_prog)
      local f = assert(io.open(("/tmp/bh-progspec-%d.lua"):format(h.pid()), "w"))
      f:write(code)
      f:close()
      local out = h.sh(("cd /tmp && setpriv --reuid=65534 --regid=65534 --clear-groups %s /tmp/bh-progspec-%d.lua 2>&1"):format(luajit, h.pid()))
      assert.equal("EPERM\nneeds root, or CAP_BPF and CAP_PERFMON (missing: CAP_BPF)\n", out)
      out = h.sh(("cd /tmp && capsh --drop=cap_perfmon,cap_sys_admin -- -c '%s /tmp/bh-progspec-%d.lua' 2>&1"):format(luajit, h.pid()))
      assert.equal("EPERM\nneeds root, or CAP_BPF and CAP_PERFMON (missing: CAP_PERFMON)\n", out)
      os.remove(("/tmp/bh-progspec-%d.lua"):format(h.pid()))
    end)

    it("libbpf stays quiet unless bpfhost -d", function()
      local code = ("bpf.load(%q):close()"):format(h.obj("test_net"))
      local out, status = h.sh(("%s -e %q 2>&1"):format(h.host, code))
      assert.equal(0, status)
      assert.equal("", out)
      out, status = h.sh(("%s -d -e %q 2>&1"):format(h.host, code))
      assert.equal(0, status)
      assert.matches("libbpf: loading object from " .. h.obj("test_net"):gsub("%p", "%%%0"), out)
    end)

    it("a failure outside any program says what libbpf said", function()
      local o = bpf.open(h.obj("test_net"))
      o:get_map("counts"):set_type("hash") -- a per-CPU array turned into a hash of...
      o:get_map("counts"):set_flags("mmapable") -- ...mmap'able entries: the kernel refuses
      local err = h.raises(o.load, o)
      assert.equal("load", err.op)
      assert.matches("^load object '.-': map 'counts': failed to create", err.message)
      assert.matches("counts", err.log)
      o:close()
    end)
  end)
end)
