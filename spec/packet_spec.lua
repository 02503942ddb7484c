local h = require "helper"
local bpf = require "bpfhost"
local pkt = require "bpfhost.packet"

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

describe("bpfhost.packet", function()
  context("arguments", function()
    it("builds a UDP/IPv4 frame byte for byte, checksums included", function()
      -- computed independently (Python struct/socket) for this spec
      local want = "020000000002020000000001080045000021000040004011" ..
        "22c40a0102030a01020403e81092000d8f7f68656c6c6f"
      assert.equal(want, hex(pkt.udp{src = "10.1.2.3", dst = "10.1.2.4", sport = 1000,
                                     dport = 4242, payload = "hello"}))
    end)

    it("computes the Internet checksum of RFC 1071's example and of an IPv4 header", function()
      -- RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2 (checksum 220d)
      assert.equal(0x220d, pkt.checksum("\0\1\242\3\244\245\246\247"))
      local hdr = "\69\0\0\115\0\0\64\0\64\17\0\0\192\168\0\1\192\168\0\199"
      assert.equal(0xb861, pkt.checksum(hdr))
    end)

    it("parses what it builds, and verifies checksums", function()
      local p = pkt.parse(pkt.udp{src = "10.1.2.3", dst = "10.1.2.4", dport = 53, payload = "q"})
      assert.equal(0x0800, p.eth.type)
      assert.equal("02:00:00:00:00:01", p.eth.src)
      assert.same({4, "10.1.2.3", "10.1.2.4", 17, 64, true},
        {p.ip.version, p.ip.src, p.ip.dst, p.ip.proto, p.ip.ttl, p.ip.checksum_ok})
      assert.same({12345, 53, 9, true}, {p.udp.sport, p.udp.dport, p.udp.len, p.udp.checksum_ok})
      assert.equal("q", p.payload)

      local t = pkt.parse(pkt.tcp{src = "fd00::1", dst = "fd00::abcd", flags = "SA", payload = "x"})
      assert.equal(0x86DD, t.eth.type)
      assert.same({6, "fd00::1", "fd00::abcd", 6}, {t.ip.version, t.ip.src, t.ip.dst, t.ip.next})
      assert.same({"SA", 80, true, 0x6177}, {t.tcp.flags, t.tcp.dport, t.tcp.checksum_ok, t.tcp.checksum})
      assert.equal("x", t.payload)

      local i = pkt.parse(pkt.icmp{dst = "192.0.2.1", id = 7, seq = 3})
      assert.same({8, 0, 7, 3, true}, {i.icmp.type, i.icmp.code, i.icmp.id, i.icmp.seq, i.icmp.checksum_ok})
      local i6 = pkt.parse(pkt.icmp{src = "fd00::1", dst = "fd00::2"})
      assert.same({128, true}, {i6.icmp.type, i6.icmp.checksum_ok})

      local raw = pkt.udp{eth = false, dst = "10.9.9.9"}
      assert.equal(28, #raw)
      assert.equal("10.9.9.9", pkt.parse(raw, {eth = false}).ip.dst)
    end)

    it("a corrupted byte fails the checksum check", function()
      local f = pkt.udp{payload = "hello"}
      local bad = f:sub(1, #f - 1) .. "X"
      assert.is_false(pkt.parse(bad).udp.checksum_ok)
      assert.is_true(pkt.parse(bad).ip.checksum_ok)
    end)

    it("writes and reads addresses", function()
      assert.equal("\10\0\0\1", pkt.ip("10.0.0.1"))
      assert.equal(16, #pkt.ip("fd00::1"))
      assert.equal("fd00::1", pkt.ip_tostring(pkt.ip("fd00:0:0:0:0:0:0:1")))
      assert.equal("::", pkt.ip_tostring(pkt.ip("::")))
      assert.equal("2001:db8::1:0:0:1", pkt.ip_tostring(pkt.ip("2001:db8:0:0:1:0:0:1")))
      assert.equal("::ffff:1.2.3.4", (function()
        local b = pkt.ip("::ffff:1.2.3.4")
        return "::ffff:" .. pkt.ip_tostring(b:sub(13))
      end)())
      assert.equal("\170\187\204\221\238\255", pkt.mac("aa:bb:cc:dd:ee:ff"))
    end)

    it("rejects bad input with the field named", function()
      assert.matches("packet%.ip: '10%.0%.0%.256' is not an IPv4 or IPv6 address", h.raises(pkt.ip, "10.0.0.256"))
      assert.matches("packet%.mac: 'aa:bb' is not a MAC address", h.raises(pkt.mac, "aa:bb"))
      assert.matches("packet%.udp: dport must be an integer in %[0, 65535%], got 70000",
        h.raises(pkt.udp, {dport = 70000}))
      assert.matches("packet%.tcp: unknown flag 'Z'", h.raises(pkt.tcp, {flags = "SZ"}))
      assert.matches("packet%.udp: src and dst must both be IPv4 or both IPv6",
        h.raises(pkt.udp, {src = "10.0.0.1", dst = "fd00::1"}))
      assert.matches("packet%.parse: 3 bytes are too short for an Ethernet header", h.raises(pkt.parse, "abc"))
    end)
  end)

  context("#root kernel", function()
    local o
    before_each(function()
      o = bpf.open(h.obj("test_net"))
      o.rodata.udp_port = 4242
      o:load()
    end)
    after_each(function() o:close() end)

    it("XDP, tc and socket filters run on built packets with test_run", function()
      local x = o:program("xdp_count")
      local r = x:test_run{data = pkt.udp{dport = 4242, payload = "abc"}, ["repeat"] = 5}
      assert.equal(2, r.retval) -- XDP_PASS
      assert.is_number(r.duration)
      assert.equal(5, bpf.sum(o:get_map("counts"):lookup(0)))
      x:test_run{data = pkt.udp{src = "fd00::1", dst = "fd00::2", dport = 4242}}
      x:test_run{data = pkt.udp{dport = 53}}
      x:test_run{data = pkt.tcp{dport = 4242}}
      assert.equal(6, bpf.sum(o:get_map("counts"):lookup(0)))
      assert.equal(8, o.bss.xdp_seen)

      local s = o:program("sock_filter")
      local v4 = pkt.udp{dport = 4242, payload = "12345"}
      assert.equal(#v4 - 14, s:test_run{data = v4}.retval) -- the whole IP packet kept
      local v6 = pkt.udp{src = "fd00::1", dst = "fd00::2", dport = 4242}
      assert.equal(#v6 - 14, s:test_run{data = v6}.retval)
      assert.equal(0, s:test_run{data = pkt.tcp{dport = 4242}}.retval)
      assert.equal(0, s:test_run{data = pkt.udp{dport = 80}}.retval)
    end)

    it("returns the packet the program wrote, and the context", function()
      local f = pkt.udp{eth = {src = "aa:aa:aa:aa:aa:01", dst = "bb:bb:bb:bb:bb:02"}, dport = 4242}
      local r = o:program("xdp_bounce"):test_run{data = f}
      assert.equal(3, r.retval) -- XDP_TX
      local p = pkt.parse(r.data)
      assert.equal("bb:bb:bb:bb:bb:02", p.eth.src)
      assert.equal("aa:aa:aa:aa:aa:01", p.eth.dst)
      assert.equal(4242, p.udp.dport)

      -- a context as a table: encoded and decoded with the kernel's struct __sk_buff
      local t = o:program("tc_out"):test_run{data = f, ctx = {mark = 0, priority = 7}}
      assert.equal(0, t.retval) -- TC_ACT_OK
      assert.equal(0x1234, t.ctx.mark)
      assert.equal(7, t.ctx.priority)
      -- or as bytes
      local raw = o:program("tc_out"):test_run{data = f, ctx = string.rep("\0", 192)}
      assert.equal("string", type(raw.ctx))
    end)

    it("says what is wrong with data the kernel refuses", function()
      local x = o:program("xdp_count")
      local err = h.raises(x.test_run, x, {data = "abc"})
      assert.equal("test_run program 'xdp_count': the kernel refused 3 bytes of data (a packet needs at least an Ethernet header, 14 bytes) (EINVAL)", err.message)
      err = h.raises(x.test_run, x, {data = pkt.udp{payload = string.rep("x", 100)}, data_size_out = 10})
      assert.equal("ENOSPC", err.code)
      assert.equal("test_run program 'xdp_count': the output packet has 142 bytes, data_size_out is 10 (ENOSPC)", err.message)
      local c = h.raises(x.test_run, x, {data = pkt.udp{}, ctx = {nope = 1}})
      assert.matches("^test_run program 'xdp_count': ctx: .*'nope'", tostring(c))
    end)
  end)
end)
