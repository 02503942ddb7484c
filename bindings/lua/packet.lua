-- bpfhost.packet: build and parse Ethernet/IPv4/IPv6/UDP/TCP/ICMP frames
-- (with correct checksums) for p:test_run and for checking what a program
-- wrote. Pure Lua, no bit operators: runs under LuaJIT and Lua 5.4 alike.
--
--   local pkt = require "bpfhost.packet"
--   local frame = pkt.udp{src = "10.0.0.1", dst = "10.0.0.2", dport = 53, payload = "hi"}
--   local r = prog:test_run{data = frame}
--   local p = pkt.parse(r.data)   --> p.eth, p.ip, p.udp, p.payload
local M = {}

local char, byte, floor, format, concat = string.char, string.byte, math.floor, string.format,
  table.concat

local function fail(fn, fmt, ...)
  error(("packet.%s: " .. fmt):format(fn, ...), 3)
end

local function u8(n) return char(n % 256) end
local function be16(n) return char(floor(n / 256) % 256, n % 256) end
local function be32(n) return be16(floor(n / 65536) % 65536) .. be16(n % 65536) end
local function get16(s, i) local a, b = byte(s, i, i + 1); return a * 256 + b end
local function get32(s, i) return get16(s, i) * 65536 + get16(s, i + 2) end

local function int(fn, name, v, def, max)
  if v == nil then return def end
  if type(v) ~= "number" or v ~= floor(v) or v < 0 or v > max then
    fail(fn, "%s must be an integer in [0, %d], got %s", name, max, tostring(v))
  end
  return v
end

-- ---- addresses ------------------------------------------------------------

--- "aa:bb:cc:dd:ee:ff" (or 6 raw bytes) -> 6 bytes
function M.mac(s)
  if type(s) ~= "string" then fail("mac", "a MAC address string expected, got %s", type(s)) end
  if #s == 6 and not s:find(":") then return s end
  local b = {}
  for h in s:gmatch("[^:%-]+") do
    local n = tonumber(h, 16)
    if not n or #h > 2 then fail("mac", "'%s' is not a MAC address", s) end
    b[#b + 1] = char(n)
  end
  if #b ~= 6 then fail("mac", "'%s' is not a MAC address", s) end
  return concat(b)
end

local function ip4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  if a > 255 or b > 255 or c > 255 or d > 255 then return nil end
  return char(a, b, c, d)
end

local function ip6(s)
  if not s:find(":") then return nil end
  local tail4 = ""
  local head = s
  local v4 = s:match(":(%d+%.%d+%.%d+%.%d+)$")
  if v4 then
    tail4 = ip4(v4)
    if not tail4 then return nil end
    head = s:sub(1, #s - #v4) .. "0:0"
  end
  local left, right = head:match("^(.-)::(.*)$")
  local function groups(part)
    local g = {}
    if part == "" then return g end
    for h in (part .. ":"):gmatch("([^:]*):") do
      local n = tonumber(h, 16)
      if h == "" or #h > 4 or not n then return nil end
      g[#g + 1] = n
    end
    return g
  end
  local gs
  if left then
    local l, r = groups(left), groups(right)
    if not l or not r or #l + #r > 7 then return nil end
    gs = l
    for _ = 1, 8 - #l - #r do gs[#gs + 1] = 0 end
    for _, n in ipairs(r) do gs[#gs + 1] = n end
  else
    gs = groups(head)
    if not gs or #gs ~= 8 then return nil end
  end
  local out = {}
  for i = 1, 8 do out[i] = be16(gs[i]) end
  local bytes = concat(out)
  if v4 then bytes = bytes:sub(1, 12) .. tail4 end
  return bytes
end

--- "10.0.0.1" -> 4 bytes; "fd00::1" -> 16 bytes
function M.ip(s)
  if type(s) ~= "string" then fail("ip", "an IP address string expected, got %s", type(s)) end
  local b = ip4(s) or ip6(s)
  if not b then fail("ip", "'%s' is not an IPv4 or IPv6 address", s) end
  return b
end

--- 4 or 16 bytes -> "10.0.0.1" / "fd00::1" (RFC 5952 form)
function M.ip_tostring(b)
  if #b == 4 then return format("%d.%d.%d.%d", byte(b, 1, 4)) end
  if #b ~= 16 then fail("ip_tostring", "4 or 16 bytes expected, got %d", #b) end
  local g = {}
  for i = 1, 8 do g[i] = get16(b, 2 * i - 1) end
  local best, bestlen, i = nil, 1, 1
  while i <= 8 do
    if g[i] == 0 then
      local j = i
      while j <= 8 and g[j] == 0 do j = j + 1 end
      if j - i > bestlen then best, bestlen = i, j - i end
      i = j
    else
      i = i + 1
    end
  end
  local parts = {}
  for k = 1, 8 do parts[k] = format("%x", g[k]) end
  if not best then return concat(parts, ":") end
  local l = concat(parts, ":", 1, best - 1)
  local r = best + bestlen <= 8 and concat(parts, ":", best + bestlen, 8) or ""
  return l .. "::" .. r
end

-- ---- checksums ------------------------------------------------------------

local function sum16(s, acc)
  acc = acc or 0
  local n = #s
  for i = 1, n - 1, 2 do
    local a, b = byte(s, i, i + 1)
    acc = acc + a * 256 + b
  end
  if n % 2 == 1 then acc = acc + byte(s, n) * 256 end
  return acc
end

local function fold(acc)
  while acc > 0xffff do acc = acc % 65536 + floor(acc / 65536) end
  return acc
end

--- The Internet checksum (RFC 1071) of bytes: the number to store.
function M.checksum(s, acc)
  return 0xffff - fold(sum16(s, acc))
end

local function pseudo(src, dst, proto, len)
  if #src == 4 then return src .. dst .. "\0" .. u8(proto) .. be16(len) end
  return src .. dst .. be32(len) .. "\0\0\0" .. u8(proto)
end

-- ---- layers ---------------------------------------------------------------

local ETH_IP, ETH_IP6 = 0x0800, 0x86DD
local PROTO = { icmp = 1, tcp = 6, udp = 17, icmpv6 = 58 }

--- eth{dst =, src =, type =, payload =}
function M.eth(t)
  local ty = int("eth", "type", t.type, ETH_IP, 0xffff)
  return M.mac(t.dst or "02:00:00:00:00:02") .. M.mac(t.src or "02:00:00:00:00:01") ..
    be16(ty) .. (t.payload or "")
end

--- ipv4{src =, dst =, proto =, ttl =, id =, tos =, df =, payload =}: header with its checksum
function M.ipv4(t)
  local src, dst = M.ip(t.src or "10.0.0.1"), M.ip(t.dst or "10.0.0.2")
  if #src ~= 4 or #dst ~= 4 then fail("ipv4", "src and dst must be IPv4 addresses") end
  local payload = t.payload or ""
  local proto = PROTO[t.proto] or int("ipv4", "proto", t.proto, 0, 255)
  local len = 20 + #payload
  if len > 0xffff then fail("ipv4", "payload of %d bytes does not fit a packet", #payload) end
  local hdr = "\69" .. u8(int("ipv4", "tos", t.tos, 0, 255)) .. be16(len) ..
    be16(int("ipv4", "id", t.id, 0, 0xffff)) .. (t.df == false and "\0\0" or "\64\0") ..
    u8(int("ipv4", "ttl", t.ttl, 64, 255)) .. u8(proto)
  local csum = M.checksum(hdr .. "\0\0" .. src .. dst)
  return hdr .. be16(csum) .. src .. dst .. payload
end

--- ipv6{src =, dst =, next =, hop_limit =, payload =}
function M.ipv6(t)
  local src, dst = M.ip(t.src or "fd00::1"), M.ip(t.dst or "fd00::2")
  if #src ~= 16 or #dst ~= 16 then fail("ipv6", "src and dst must be IPv6 addresses") end
  local payload = t.payload or ""
  if #payload > 0xffff then fail("ipv6", "payload of %d bytes does not fit a packet", #payload) end
  local nxt = PROTO[t.next] or int("ipv6", "next", t.next, 59, 255)
  return "\96\0\0\0" .. be16(#payload) .. u8(nxt) .. u8(int("ipv6", "hop_limit", t.hop_limit, 64, 255)) ..
    src .. dst .. payload
end

-- Wrap an L4 segment in IP (by the address family) and Ethernet (unless eth = false).
local function wrap(fn, t, proto, build)
  local v6 = (type(t.src) == "string" and t.src:find(":")) or
    (type(t.dst) == "string" and t.dst:find(":"))
  local src = t.src or (v6 and "fd00::1" or "10.0.0.1")
  local dst = t.dst or (v6 and "fd00::2" or "10.0.0.2")
  local s, d = M.ip(src), M.ip(dst)
  if #s ~= #d then fail(fn, "src and dst must both be IPv4 or both IPv6") end
  local seg = build(s, d)
  local ip
  if #s == 4 then
    ip = M.ipv4{src = src, dst = dst, proto = proto, ttl = t.ttl, id = t.id, tos = t.tos,
                df = t.df, payload = seg}
  else
    ip = M.ipv6{src = src, dst = dst, next = proto, hop_limit = t.ttl, payload = seg}
  end
  if t.eth == false then return ip end
  local e = type(t.eth) == "table" and t.eth or {}
  return M.eth{dst = e.dst, src = e.src, type = #s == 4 and ETH_IP or ETH_IP6, payload = ip}
end

--- udp{src =, dst =, sport =, dport =, payload =, ttl =, eth = {src =, dst =} | false}
function M.udp(t)
  t = t or {}
  local payload = t.payload or ""
  local sport = int("udp", "sport", t.sport, 12345, 0xffff)
  local dport = int("udp", "dport", t.dport, 9, 0xffff)
  return wrap("udp", t, 17, function(s, d)
    local len = 8 + #payload
    local hdr = be16(sport) .. be16(dport) .. be16(len)
    local c = M.checksum(hdr .. "\0\0" .. payload, sum16(pseudo(s, d, 17, len)))
    if c == 0 then c = 0xffff end
    return hdr .. be16(c) .. payload
  end)
end

local TCP_FLAGS = { F = 1, S = 2, R = 4, P = 8, A = 16, U = 32 }

--- tcp{src =, dst =, sport =, dport =, flags = "S" | "SA" | "PA"..., seq =, ack =, window =, payload =}
function M.tcp(t)
  t = t or {}
  local payload = t.payload or ""
  local sport = int("tcp", "sport", t.sport, 12345, 0xffff)
  local dport = int("tcp", "dport", t.dport, 80, 0xffff)
  local seq = int("tcp", "seq", t.seq, 1, 0xffffffff)
  local ack = int("tcp", "ack", t.ack, 0, 0xffffffff)
  local win = int("tcp", "window", t.window, 65535, 0xffff)
  local flags = 0
  for c in (t.flags or "S"):gmatch(".") do
    if not TCP_FLAGS[c] then fail("tcp", "unknown flag '%s' (F S R P A U)", c) end
    flags = flags + TCP_FLAGS[c]
  end
  return wrap("tcp", t, 6, function(s, d)
    local hdr = be16(sport) .. be16(dport) .. be32(seq) .. be32(ack) .. "\80" .. u8(flags) ..
      be16(win)
    local len = 20 + #payload
    local c = M.checksum(hdr .. "\0\0\0\0" .. payload, sum16(pseudo(s, d, 6, len)))
    return hdr .. be16(c) .. "\0\0" .. payload
  end)
end

--- icmp{src =, dst =, type =, code =, id =, seq =, payload =}: an echo request by default
--- (ICMPv6 when the addresses are IPv6).
function M.icmp(t)
  t = t or {}
  local payload = t.payload or ""
  local id = int("icmp", "id", t.id, 1, 0xffff)
  local seq = int("icmp", "seq", t.seq, 1, 0xffff)
  local v6 = (t.src or ""):find(":") or (t.dst or ""):find(":")
  local ty = int("icmp", "type", t.type, v6 and 128 or 8, 255)
  local code = int("icmp", "code", t.code, 0, 255)
  return wrap("icmp", t, v6 and 58 or 1, function(s, d)
    local body = u8(ty) .. u8(code) .. "\0\0" .. be16(id) .. be16(seq) .. payload
    local acc = #s == 16 and sum16(pseudo(s, d, 58, #body)) or 0
    return u8(ty) .. u8(code) .. be16(M.checksum(body, acc)) .. body:sub(5)
  end)
end

-- ---- parsing --------------------------------------------------------------

--- parse(frame[, {eth = false}]) -> {eth =, ip =, udp = | tcp = | icmp =, payload =}
--- Checksums are verified: ip.checksum_ok, udp.checksum_ok, tcp.checksum_ok.
function M.parse(s, opts)
  if type(s) ~= "string" then fail("parse", "a string of bytes expected, got %s", type(s)) end
  local r, off = {}, 1
  local ethtype
  if not (opts and opts.eth == false) then
    if #s < 14 then fail("parse", "%d bytes are too short for an Ethernet header", #s) end
    local function m(i) return format("%02x:%02x:%02x:%02x:%02x:%02x", byte(s, i, i + 5)) end
    ethtype = get16(s, 13)
    r.eth = {dst = m(1), src = m(7), type = ethtype}
    off = 15
  else
    local v = floor((byte(s, 1) or 0) / 16)
    ethtype = v == 4 and ETH_IP or v == 6 and ETH_IP6 or nil
  end
  local proto, src, dst, l4len
  if ethtype == ETH_IP and #s >= off + 19 then
    local ihl = byte(s, off) % 16 * 4
    local tot = get16(s, off + 2)
    src, dst = s:sub(off + 12, off + 15), s:sub(off + 16, off + 19)
    proto = byte(s, off + 9)
    r.ip = {version = 4, ihl = ihl, len = tot, id = get16(s, off + 4), ttl = byte(s, off + 8),
            proto = proto, src = M.ip_tostring(src), dst = M.ip_tostring(dst),
            checksum = get16(s, off + 10), checksum_ok = fold(sum16(s:sub(off, off + ihl - 1))) == 0xffff}
    l4len = tot - ihl
    off = off + ihl
  elseif ethtype == ETH_IP6 and #s >= off + 39 then
    src, dst = s:sub(off + 8, off + 23), s:sub(off + 24, off + 39)
    proto = byte(s, off + 6)
    l4len = get16(s, off + 4)
    r.ip = {version = 6, len = l4len, next = proto, hop_limit = byte(s, off + 7),
            src = M.ip_tostring(src), dst = M.ip_tostring(dst)}
    off = off + 40
  else
    r.payload = s:sub(off)
    return r
  end
  local seg = s:sub(off, off + l4len - 1)
  local ok = function(p) return fold(sum16(seg, sum16(pseudo(src, dst, p, #seg)))) == 0xffff end
  if proto == 17 and #seg >= 8 then
    r.udp = {sport = get16(seg, 1), dport = get16(seg, 3), len = get16(seg, 5),
             checksum = get16(seg, 7), checksum_ok = ok(17)}
    r.payload = seg:sub(9)
  elseif proto == 6 and #seg >= 20 then
    local doff = floor(byte(seg, 13) / 16) * 4
    local fl, flags = byte(seg, 14), ""
    for _, c in ipairs{"F", "S", "R", "P", "A", "U"} do
      if floor(fl / TCP_FLAGS[c]) % 2 == 1 then flags = flags .. c end
    end
    r.tcp = {sport = get16(seg, 1), dport = get16(seg, 3), seq = get32(seg, 5),
             ack = get32(seg, 9), flags = flags, window = get16(seg, 15),
             checksum = get16(seg, 17), checksum_ok = ok(6)}
    r.payload = seg:sub(doff + 1)
  elseif (proto == 1 or proto == 58) and #seg >= 8 then
    r.icmp = {type = byte(seg, 1), code = byte(seg, 2), id = get16(seg, 5), seq = get16(seg, 7),
              checksum_ok = proto == 1 and fold(sum16(seg)) == 0xffff or ok(58)}
    r.payload = seg:sub(9)
  else
    r.payload = seg
  end
  return r
end

return M
