local h = require "helper"
local bpf = require "bpfhost"
local pkt = require "bpfhost.packet"

local NR_BPF = 321 -- x86_64

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

describe("globals", function()
  context("arguments", function()
    local o
    before_each(function() o = bpf.open(h.obj("test_globals")) end)
    after_each(function() o:close() end)

    it("read .rodata, .data and .bss before load: the values the object was built with", function()
      assert.equal(10, o.rodata.threshold)
      assert.same({mult = 1, label = "dflt", ports = {0, 0, 0, 0}}, o.rodata.cfg)
      assert.equal("\1\2\3\4", o.rodata.weights) -- u8[4]: a byte string
      assert.equal(5, o.data.total)
      assert.equal(-3, o.data.signed_val)
      assert.equal(0, o.bss.step)
      assert.same({a = 0, b = 0}, o.bss.pair)
      assert.equal(7, o:globals(".data.extra").extra_counter)
      assert.equal("extra", o:globals(".data.extra").extra_name)
      assert.equal(99, o:globals(".rodata.custom").ro_custom)
    end)

    it("write scalars, structs and arrays before load", function()
      o.rodata.threshold = 3
      o.rodata.cfg = {mult = 2, label = "abc", ports = {80, 443}}
      o.rodata.weights = {9, 8, 7, 6}
      o.data.signed_val = -100
      o.bss.step = 4
      assert.equal(3, o.rodata.threshold)
      assert.same({mult = 2, label = "abc", ports = {80, 443, 0, 0}}, o.rodata.cfg)
      assert.equal("\9\8\7\6", o.rodata.weights)
      assert.equal(-100, o.data.signed_val)
      assert.equal(4, o.bss.step)
    end)

    it("list a section's variables with their values: g() (and pairs(g) on Lua 5.2+)", function()
      local all = o.data()
      assert.same({total = 5, signed_val = -3}, all)
      local names = {}
      for k in pairs(o.rodata()) do names[#names + 1] = k end
      table.sort(names)
      assert.same({"cfg", "threshold", "weights"}, names)
    end)

    it("bad values and names are clear errors, and leave the variable as it was", function()
      -- the codec's own words are the codec spec's business: here, that they name the variable and the path
      local codec = {
        {function() o.rodata.threshold = 1.5 end, "^set %.rodata 'threshold': value: .*1%.5"},
        {function() o.rodata.cfg = {mult = 1, nope = 2} end, "^set %.rodata 'cfg': value: .*'nope'"},
        {function() o.rodata.cfg = {label = "much too long"} end, "^set %.rodata 'cfg': value%.label: .*char%[8%]"},
        {function() o.rodata.weights = {1, 2, 3, 4, 5} end, "^set %.rodata 'weights': value: .*u8%[4%]"},
      }
      for _, c in ipairs(codec) do
        assert.matches(c[2], tostring(h.raises(c[1])))
      end
      local cases = {
        {function() return o.rodata.nope end, "get .rodata 'nope': no such variable (variables: threshold, cfg, weights)"},
        {function() o.bss.nope = 1 end, "set .bss 'nope': no such variable (variables: step, runs, last_verdict, seen_ports, pair, kconfig_seen)"},
        {function() return o.bss[1] end, "get .bss: variable names are strings, got number"},
        {function() return o:globals(".text") end, "globals: '.text' is not a data section (sections with variables: .rodata, .data, .bss, .data.extra, .rodata.custom, .kconfig)"},
        {function() return o:globals(".data.nope") end, "globals: object '" .. h.obj("test_globals") .. "' has no variables in .data.nope (sections with variables: .rodata, .data, .bss, .data.extra, .rodata.custom, .kconfig)"},
        {function() o:globals(".kconfig").CONFIG_BH_TEST_VALUE = 1 end, "set .kconfig 'CONFIG_BH_TEST_VALUE': kconfig values come from the kernel or the 'kconfig' open option"},
      }
      for _, c in ipairs(cases) do
        local err = h.raises(c[1])
        assert.equal(c[2], (tostring(err):gsub("^[^:]*:%d+: ", "")))
      end
      assert.equal(10, o.rodata.threshold)
      assert.same({mult = 1, label = "dflt", ports = {0, 0, 0, 0}}, o.rodata.cfg)
    end)

    it("an object without a section says which it has", function()
      local n = bpf.open(h.obj("test_verifier"))
      local err = h.raises(function() return n.rodata end)
      assert.matches("has no variables in %.rodata %(sections with variables: %.bss%)$", err)
      n:close()
    end)

    it("bpf.open_mem opens an object from bytes in memory", function()
      local m = bpf.open_mem(read_file(h.obj("test_globals")), {name = "fromram"})
      assert.equal("fromram", m.name)
      assert.equal(10, m.rodata.threshold)
      assert.matches("^object 'fromram' %(not loaded%)$", tostring(m))
      m:close()
      assert.matches("bad argument #1 .*not an ELF file", h.raises(bpf.open_mem, "hello"))
      assert.matches("bad argument #1 .*string expected", h.raises(bpf.open_mem, {}))
      assert.equal("open_mem: unknown option 'path' (known: pin_root, name, btf_custom_path, kconfig, log_size)",
        h.raises(bpf.open_mem, read_file(h.obj("test_globals")), {path = "x"}))
    end)

    it("open checks log_size", function()
      assert.equal("open: option 'log_size' must be an integer in [128, 1073741823], got 1",
        h.raises(bpf.open, h.obj("test_globals"), {log_size = 1}))
    end)
  end)

  context("lifetime", function()
    it("a section is the same handle each time, and is unusable once its object is closed", function()
      local o = bpf.open(h.obj("test_globals"))
      local bss = o.bss
      assert.is_true(rawequal(bss, o.bss))
      assert.matches("^globals %.bss of object 'test_globals' %(6 variables%)$", tostring(bss))
      o:close()
      assert.equal("get .bss: its object is closed", h.raises(function() return bss.step end))
      assert.equal("set .bss: its object is closed", h.raises(function() bss.step = 1 end))
      assert.equal("globals .bss (object closed)", tostring(bss))
      assert.matches("^bss object '.-': object is closed$", h.raises(function() return o.bss end))
    end)

    it("keeps its object alive, and survives collection", function()
      local data = bpf.open(h.obj("test_globals")).data
      collectgarbage(); collectgarbage()
      assert.equal(5, data.total)
      data = nil
      collectgarbage(); collectgarbage()
    end)
  end)

  context("#root kernel", function()
    it("rodata set before load changes what the program does", function()
      for _, case in ipairs{{threshold = 100, verdict = 2}, {threshold = 10, verdict = 1}} do
        local o = bpf.open(h.obj("test_globals"))
        o.rodata.threshold = case.threshold
        o.rodata.cfg = {mult = 3, label = "x", ports = {10, 20, 30, 40}}
        o.bss.step = 5
        o:load()
        local r = o:program("run"):test_run{data = pkt.udp{}}
        assert.equal(case.verdict, r.retval)
        assert.equal(5 + 5 * 3, o.data.total)
        assert.same({11, 22, 33, 44}, o.bss.seen_ports)
        assert.equal(case.threshold, o.rodata.threshold) -- still readable after load
        assert.equal("set .rodata 'threshold': the object is loaded; .rodata is read-only after load (set it before obj:load())",
          h.raises(function() o.rodata.threshold = 1 end))
        o:close()
      end
    end)

    it("bss and data are read and written live, in the map's memory", function()
      local o = bpf.load(h.obj("test_globals"))
      local run = o:program("run")
      run:test_run{data = pkt.udp{}}
      assert.equal(1, o.bss.runs)
      assert.equal(5, o.data.total)
      o.bss.step = 7                       -- the program sees it on its next run
      run:test_run{data = pkt.udp{}, ["repeat"] = 3}
      assert.equal(4, o.bss.runs)
      assert.equal(5 + 3 * 7, o.data.total)
      o.data.total = 1000
      run:test_run{data = pkt.udp{}}
      assert.equal(1007, o.data.total)
      assert.same({a = 1007, b = 99}, o.bss.pair)
      assert.equal(1, o.bss.last_verdict)
      assert.equal(7 + 5, o:globals(".data.extra").extra_counter)
      o:close()
    end)

    it("reading and writing globals makes no bpf() syscall", function()
      local o = bpf.load(h.obj("test_globals"))
      local spy = bpf.open(h.obj("test_prog"))
      spy.rodata.target_tgid = h.pid()
      spy.rodata.target_nr = NR_BPF
      spy:load()
      spy:program("on_sys_enter"):attach()
      o:program("run"):test_run{data = pkt.udp{}} -- one bpf() call, counted
      assert.equal(1, spy.bss.raw_hits)
      local bss = o.bss
      for i = 1, 1000 do
        bss.step = i
        assert.equal(i, bss.step)
      end
      assert.equal(1, spy.bss.raw_hits)
      spy:close()
      o:close()
    end)

    it("the kconfig option sets CONFIG_ values the program reads", function()
      local o = bpf.open(h.obj("test_globals"), {kconfig = "CONFIG_BH_TEST_VALUE=42\n"})
      o:load()
      assert.equal(42, o:globals(".kconfig").CONFIG_BH_TEST_VALUE)
      o:program("run"):test_run{data = pkt.udp{}}
      assert.equal(42, o.bss.kconfig_seen)
      o:close()
      o = bpf.load(h.obj("test_globals")) -- without it: the __weak default
      o:program("run"):test_run{data = pkt.udp{}}
      assert.equal(0, o.bss.kconfig_seen)
      o:close()
    end)

    it("btf_custom_path gives CO-RE another BTF", function()
      local o = bpf.open(h.obj("test_prog"), {btf_custom_path = "/sys/kernel/btf/vmlinux"})
      o.rodata.target_tgid = h.pid()
      o.rodata.target_nr = 257
      o:load()
      o:program("on_sys_enter_btf"):attach()
      assert(io.open("/dev/null")):close()
      assert.equal(h.pid(), o.bss.seen_tgid)
      o:close()
      o = bpf.open(h.obj("test_prog"), {btf_custom_path = "/nonexistent/btf"})
      local err = h.raises(o.load, o)
      assert.equal("load", err.op)
      assert.equal("ENOENT", err.code)
      assert.equal("btf_custom_path '/nonexistent/btf' could not be read as BTF", err.hint)
      assert.matches("failed to parse target BTF", err.log)
      o:close()
    end)

    it("an object opened from memory loads and runs", function()
      local o = bpf.open_mem(read_file(h.obj("test_globals")))
      assert.equal("mem", o.name)
      o.bss.step = 2
      o:load()
      o:program("run"):test_run{data = pkt.udp{}}
      assert.equal(7, o.data.total)
      o:close()
    end)
  end)
end)
