local h = require "helper"
local bpf = require "bpfhost"

-- ---------------------------------------------------------------------------
-- Helpers of this spec: ports, HTTP through curl in the background (so this
-- process can serve meanwhile with ex:serve), a small JSON reader for
-- Prometheus's API, processes started and killed by pid.

local tmp = os.tmpname()
os.remove(tmp)
h.sh("mkdir -p " .. tmp)

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- A port nobody listens on now: bind port 0, read it, release it.
local function free_port()
  local ex = bpf.exporter{listen = "127.0.0.1:0"}
  local _, _, port = ex:address()
  ex:close()
  return port
end

local nreq = 0
-- Start curl in the background; returns a table whose done() says when it
-- finished and fills status (HTTP code), body and headers.
local function fetch(url, args)
  nreq = nreq + 1
  local base = ("%s/req%d"):format(tmp, nreq)
  os.execute(("(curl -s -m 30 %s -D %s.hdr -o %s.body -w '%%{http_code}' '%s' > %s.code.tmp; " ..
    "mv %s.code.tmp %s.code) >/dev/null 2>&1 &"):format(args or "", base, base, url, base, base, base))
  local r = {}
  function r.done()
    local code = slurp(base .. ".code")
    if not code then return false end
    r.status = tonumber(code)
    r.body = slurp(base .. ".body") or ""
    r.headers = slurp(base .. ".hdr") or ""
    return true
  end
  return r
end

-- Serve from this process until every request finished (bounded: 30 s).
local function serve_until(ex, ...)
  local reqs = {...}
  local deadline = bpf.now() + 30
  while bpf.now() < deadline do
    ex:serve(20)
    local all = true
    for _, r in ipairs(reqs) do
      if not r.status and not r.done() then all = false end
    end
    if all then return ... end
  end
  error("requests did not finish")
end

local function get(ex, path, args)
  local addr = ex:address()
  return serve_until(ex, fetch("http://" .. addr .. path, args))
end

-- Minimal JSON reader (what Prometheus's HTTP API returns).
local function json_decode(s)
  local pos = 1
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    local out, i = {}, pos + 1
    while true do
      local c = s:sub(i, i)
      if c == '"' then pos = i + 1 return table.concat(out) end
      if c == "\\" then
        local e = s:sub(i + 1, i + 1)
        local map = { n = "\n", t = "\t", r = "\r", b = "\b", f = "\f" }
        if e == "u" then
          out[#out + 1] = string.char(tonumber(s:sub(i + 2, i + 5), 16) % 256)
          i = i + 6
        else
          out[#out + 1] = map[e] or e
          i = i + 2
        end
      else
        out[#out + 1] = c
        i = i + 1
      end
      assert(i <= #s + 1, "unterminated string")
    end
  end
  function value()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1 return t end
      while true do
        ws()
        local k = str()
        ws()
        assert(s:sub(pos, pos) == ":")
        pos = pos + 1
        t[k] = value()
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return t end
        assert(d == ",", "bad object")
      end
    elseif c == "[" then
      local t = {}
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1 return t end
      while true do
        t[#t + 1] = value()
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return t end
        assert(d == ",", "bad array")
      end
    elseif c == '"' then
      return str()
    elseif s:find("^true", pos) then pos = pos + 4 return true
    elseif s:find("^false", pos) then pos = pos + 5 return false
    elseif s:find("^null", pos) then pos = pos + 4 return nil
    else
      local num = s:match("^-?[%d.eE+-]+", pos)
      assert(num, "bad JSON at " .. pos)
      pos = pos + #num
      return tonumber(num)
    end
  end
  return value()
end

local function kill(pid, sig)
  if pid then h.sh(("kill -%s %d 2>/dev/null"):format(sig or "TERM", pid)) end
end

-- Wait (bounded) for a file to contain pattern; returns the match.
local function wait_file(path, pattern, secs)
  local deadline = bpf.now() + (secs or 30)
  repeat
    local s = slurp(path)
    local m = s and s:match(pattern)
    if m then return m end
    bpf.sleep(0.05)
  until bpf.now() > deadline
  error(("%s never showed %q; it holds:\n%s"):format(path, pattern, slurp(path) or "(nothing)"))
end

-- The samples of an exposition as {name{labels} = value}.
local function samples(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do
    if not line:match("^#") then
      local series, v = line:match("^(.-) (%S+)$")
      t[series] = v
    end
  end
  return t
end

-- promtool's verdict on an exposition: status and output.
local function promtool(text)
  local f = tmp .. "/exposition.txt"
  h.write_file(f, text)
  return h.sh("promtool check metrics < " .. f .. " 2>&1")
end

local function errmsg(e) return type(e) == "table" and e.message or tostring(e) end

-- ---------------------------------------------------------------------------

describe("exporter", function()
  teardown(function() h.sh("rm -rf " .. tmp) end)

  context("arguments", function()
    it("bpf.exporter checks its options before binding", function()
      local cases = {
        { 5, "exporter: options must be a table, got number" },
        { { bogus = 1 }, "exporter: unknown option 'bogus' %(known: listen, connection_limit" },
        { { listen = 5 }, "exporter: listen must be a string \"address:port\", got number" },
        { { listen = "nope" }, "exporter: listen: 'nope' is not a numeric address and port" },
        { { listen = "127.0.0.1" }, "is not a numeric address and port" },
        { { listen = "127.0.0.1:99999" }, "is not a numeric address and port" },
        { { listen = "127.0.0.1:" }, "is not a numeric address and port" },
        { { listen = "[::1]9435" }, "is not a numeric address and port" },
        { { listen = "::1:9435" }, "is not a numeric address and port" },
        { { listen = "example.com:80" }, "is not a numeric address and port" },
        { { connection_limit = 0 }, "exporter: connection_limit must be an integer 1..65536" },
        { { per_ip_limit = 1.5 }, "exporter: per_ip_limit must be an integer" },
        { { timeout = "x" }, "exporter: timeout must be a number, got string" },
        { { memory_limit = 10 }, "exporter: memory_limit must be an integer 4096" },
        { { cache = -1 }, "exporter: cache must be a number 0..86400" },
      }
      for _, c in ipairs(cases) do
        assert.matches(c[2], h.raises(bpf.exporter, c[1]))
      end
    end)

    it("a port in use is an error object naming it", function()
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      local addr = ex:address()
      local e = h.raises(bpf.exporter, {listen = addr})
      assert.equal("EADDRINUSE", e.code)
      assert.equal("exporter", e.op)
      assert.matches("^exporter listen '" .. addr:gsub("%.", "%%.") .. "': .* %(EADDRINUSE%)$", e.message)
      assert.matches("another process listens there", e.hint)
      ex:close()
    end)

    it("binds to loopback unless told otherwise", function()
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      local _, host = ex:address()
      assert.equal("127.0.0.1", host)
      ex:close()
      -- the default is 127.0.0.1:9435 (the port may be taken: then the error names it)
      local ok, ex2 = pcall(bpf.exporter)
      if ok then
        assert.equal("127.0.0.1:9435", ex2:address())
        ex2:close()
      else
        assert.matches("'127%.0%.0%.1:9435'", errmsg(ex2))
      end
      local ex6 = bpf.exporter{listen = "[::1]:0"}
      local a6, h6 = ex6:address()
      assert.equal("::1", h6)
      assert.matches("^%[::1%]:%d+$", a6)
      ex6:close()
    end)

    it("serve and the metric methods check their arguments", function()
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      assert.matches("serve exporter: ms must be a number of milliseconds, got string",
        h.raises(ex.serve, ex, "x"))
      assert.matches("serve exporter: ms must be a finite number >= 0", h.raises(ex.serve, ex, -1))
      assert.matches("bpfhost.exporter expected, got table", h.raises(ex.serve, {}))
      assert.matches("counter: 'bad name' is not a metric name", h.raises(ex.counter, ex, "bad name", nil))
      assert.matches("gauge: '9x' is not a metric name", h.raises(ex.gauge, ex, "9x", nil))
      assert.matches("counter: argument 2 must be a map, got nil", h.raises(ex.counter, ex, "ok_total", nil))
      assert.matches("histogram: argument 2 must be a map, got table", h.raises(ex.histogram, ex, "h", {}))
      assert.matches("counter: bpfhost.exporter expected, got table %(call it as ex:counter%)",
        h.raises(ex.counter, {}, "x", nil))
      ex:close()
    end)

    it("#root metric options are checked against the map's BTF", function()
      local obj = bpf.load(h.obj("exporter"))
      local execs, lat, sum = obj:get_map("execs"), obj:get_map("syscall_lat"), obj:get_map("syscall_lat_sum")
      local u32 = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8}
      local pc = bpf.map_create{type = "percpu_hash", key = "u32", value = "u64", max_entries = 8}
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      local cases = {
        { "counter", execs, 5, "counter: options must be a table, got number" },
        { "counter", execs, { bogus = 1 }, "counter: unknown option 'bogus' %(known: help, labels, percpu, value%)" },
        { "counter", execs, { help = 1 }, "counter: help must be a string, got number" },
        { "counter", execs, { labels = "comm" }, "counter: labels must be a list, got string" },
        { "counter", execs, { labels = { 5 } }, "labels%[1%] must be a name or a table" },
        { "counter", execs, { labels = { "pid" } }, "counter: labels%[1%]: map 'execs' has no key field 'pid' %(fields: comm, uid%)" },
        { "counter", execs, { labels = { "comm", "comm" } }, "labels%[2%]: 'comm' given twice" },
        { "counter", execs, { labels = { "__x" } }, "labels%[1%]: '__x' is not a label name" },
        { "counter", execs, { labels = { { name = "c", field = "comm", decode = "rot13" } } },
          "labels%[1%]: unknown decoder 'rot13' %(known: cgroup, errno, hex, ifname, inet, ksym, number, string, syscall, or a function%)" },
        { "counter", execs, { labels = { { name = "c", fld = "comm" } } }, "labels%[1%]: unknown field 'fld'" },
        { "counter", execs, { labels = { comm = true } }, "labels must be a list" },
        { "counter", u32, { labels = { "a", "b" } }, "map '.-' has a scalar key: it gives one label, not 2" },
        { "counter", u32, { value = 5 }, "value must be a field name or a function" },
        { "counter", u32, { value = "x" }, "has scalar values: leave value out" },
        { "counter", u32, { percpu = "sum" }, "percpu: map '.-' %(hash%) is not per%-CPU" },
        { "counter", pc, { percpu = "each" }, "percpu must be \"sum\" or \"split\", got each" },
        { "counter", pc, { percpu = "split", labels = { "cpu" } }, "labels%[1%]: 'cpu' is reserved here" },
        { "histogram", lat, { buckets = "exp" }, "buckets must be \"log2\" or \"linear\"" },
        { "histogram", lat, { buckets = "linear" }, "buckets = \"linear\" needs width, a number > 0" },
        { "histogram", lat, { width = 3 }, "width is for buckets = \"linear\"" },
        { "histogram", lat, { slot = "bucket" }, "map 'syscall_lat' has no key field 'bucket' for the slot %(fields: id, slot%)" },
        { "histogram", lat, { labels = { "slot" } }, "labels%[1%]: 'slot' is the slot field" },
        { "histogram", lat, { labels = { { name = "le", field = "id" } } }, "labels%[1%]: 'le' is reserved here" },
        { "histogram", lat, { le = function(i) return 1 end }, "le%(slot%) must give increasing numbers" },
        { "histogram", lat, { le = 5 }, "le must be a function%(slot%), got number" },
        { "histogram", lat, { scale = 0 }, "scale must be a number > 0" },
        { "histogram", lat, { max_slot = -1 }, "max_slot must be an integer 0..4096" },
        { "histogram", lat, { sum = 5 }, "sum must be a map" },
        { "histogram", u32, { slot = "x" }, "slot: map '.-' has a scalar key, which is the slot itself" },
        { "histogram", u32, { labels = { "x" } }, "has a scalar key %(the slot%): it has no label fields" },
      }
      for i, c in ipairs(cases) do
        local e = h.raises(ex[c[1]], ex, "m" .. i, c[2], c[3])
        assert.matches(c[4], e)
      end
      -- struct values need value =
      local vs = bpf.map_create{type = "hash", key = "u32", value = obj:type("struct start"), max_entries = 8}
      assert.matches("counter: map '.-' has struct values: give value = 'field' or a function %(fields: id, ts%)",
        h.raises(ex.counter, ex, "v_total", vs))
      assert.matches("no value field 'nope' %(fields: id, ts%)",
        h.raises(ex.counter, ex, "v_total", vs, { value = "nope" }))
      -- names are unique, histogram suffixes included
      ex:counter("dup_total", execs, { labels = { "comm" } })
      assert.matches("counter: 'dup_total' is already defined", h.raises(ex.counter, ex, "dup_total", execs))
      ex:histogram("lat", lat, { labels = { "id" }, sum = sum })
      assert.matches("gauge: 'lat_count' is already defined", h.raises(ex.gauge, ex, "lat_count", u32))
      ex:close()
      vs:close(); u32:close(); pc:close()
      obj:close()
    end)
  end)

  context("lifetime", function()
    it("close is idempotent; use after close is an error", function()
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      assert.matches("^bpfhost%.exporter: http://127%.0%.0%.1:%d+/metrics$", tostring(ex))
      assert.is_true(ex:close())
      assert.is_true(ex:close())
      assert.equal("bpfhost.exporter: (closed)", tostring(ex))
      assert.matches("serve exporter: exporter is closed", h.raises(ex.serve, ex, 0))
      assert.matches("fd exporter: exporter is closed", h.raises(ex.fd, ex))
      assert.matches("address exporter: exporter is closed", h.raises(ex.address, ex))
      assert.matches("counter: exporter is closed", h.raises(ex.counter, ex, "x_total", nil))
      assert.matches("render: exporter is closed", h.raises(ex.render, ex))
    end)

    it("close releases the port; so does the collector", function()
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      local addr = ex:address()
      ex:close()
      local again = bpf.exporter{listen = addr}
      again = nil
      collectgarbage()
      collectgarbage()
      local third = bpf.exporter{listen = addr}
      assert.equal(addr, third:address())
      third:close()
    end)

    it("#root keeps its maps alive; a closed map makes the scrape a 500 and serve raises", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8}
      m:update(1, 5)
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      ex:counter("kept_total", m, { labels = { "k" } })
      m = nil
      collectgarbage()
      collectgarbage()
      assert.equal("5", samples(ex:render())['kept_total{k="1"}'])
      assert.same({ "kept_total" }, ex:metrics())
      ex:close()
    end)

    it("#root an error in a render reaches serve's caller after the client got a 500", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8}
      m:update(1, 5)
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      ex:counter("boom_total", m, { value = function() error("boom in value") end })
      local r = fetch("http://" .. ex:address() .. "/metrics")
      local deadline = bpf.now() + 30
      local ok, e
      repeat
        ok, e = pcall(ex.serve, ex, 20)
      until not ok or bpf.now() > deadline
      assert.is_false(ok)
      assert.matches("boom in value", errmsg(e))
      assert.matches("stack traceback", errmsg(e))
      -- the client was answered before the error was raised; serving goes on
      serve_until(ex, r)
      assert.equal(500, r.status)
      assert.matches("^render failed: .*boom in value", r.body)
      local r2 = serve_until(ex, fetch("http://" .. ex:address() .. "/"))
      assert.equal(200, r2.status)
      ex:close()
      m:close()
    end)

    it("#root close from its own render is done when serve returns", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8}
      m:update(1, 5)
      local ex = bpf.exporter{listen = "127.0.0.1:0"}
      local closed_inside
      ex:gauge("g", m, { value = function(k, v) closed_inside = ex:close(); return v end })
      local r = fetch("http://" .. ex:address() .. "/metrics")
      local deadline = bpf.now() + 30
      while tostring(ex) ~= "bpfhost.exporter: (closed)" and bpf.now() < deadline do
        ex:serve(20)
      end
      assert.is_true(closed_inside)
      assert.equal("bpfhost.exporter: (closed)", tostring(ex))
      deadline = bpf.now() + 30
      while not r.done() and bpf.now() < deadline do bpf.sleep(0.02) end
      -- answered (the rendering) or cut (closed): never left hanging
      assert.is_true(r.done())
      m:close()
    end)
  end)

  context("#root kernel", function()
    local obj, ex
    before_each(function()
      obj = bpf.load(h.obj("exporter"))
      ex = bpf.exporter{listen = "127.0.0.1:0"}
    end)
    after_each(function()
      ex:close()
      obj:close()
    end)

    it("renders a counter: HELP and TYPE once, labels from key fields by BTF name, promtool accepts it", function()
      local execs = obj:get_map("execs")
      execs:update({uid = 0, comm = "bash"}, 3)
      execs:update({uid = 1000, comm = "bash"}, 4)
      execs:update({uid = 0, comm = "make"}, 5)
      ex:counter("execs_total", execs, { help = "execve() calls", labels = { "comm", "uid" } })
      local text = ex:render()
      local _, nhelp = text:gsub("# HELP execs_total execve%(%) calls\n", "")
      local _, ntype = text:gsub("# TYPE execs_total counter\n", "")
      assert.equal(1, nhelp)
      assert.equal(1, ntype)
      assert.same({
        ['execs_total{comm="bash",uid="0"}'] = "3",
        ['execs_total{comm="bash",uid="1000"}'] = "4",
        ['execs_total{comm="make",uid="0"}'] = "5",
      }, samples(text))
      local out, st = promtool(text)
      assert.equal(0, st, out)
    end)

    it("adds up entries whose labels are equal, so no series repeats", function()
      local execs = obj:get_map("execs")
      execs:update({uid = 0, comm = "bash"}, 3)
      execs:update({uid = 1000, comm = "bash"}, 4)
      execs:update({uid = 0, comm = "make"}, 5)
      ex:counter("by_comm_total", execs, { labels = { "comm" } })
      ex:gauge("all", execs)
      assert.same({
        ['by_comm_total{comm="bash"}'] = "7",
        ['by_comm_total{comm="make"}'] = "5",
        ["all"] = "12",
      }, samples(ex:render()))
    end)

    it("escapes label values and HELP text; invalid UTF-8 becomes U+FFFD", function()
      local m = bpf.map_create{type = "hash", key = "char[16]", value = "u64", max_entries = 8}
      m:update('a"b\\c\nd', 1)
      m:update("caf\xc3\xa9", 2)
      m:update("bad\xff\xc3", 3)
      ex:counter("esc_total", m, { help = "back\\slash and\nnewline", labels = { "s" } })
      local text = ex:render()
      assert.truthy(text:find("# HELP esc_total back\\\\slash and\\nnewline\n", 1, true))
      assert.same({
        ['esc_total{s="a\\"b\\\\c\\nd"}'] = "1",
        ['esc_total{s="caf\xc3\xa9"}'] = "2",
        ['esc_total{s="bad\xef\xbf\xbd\xef\xbf\xbd"}'] = "3",
      }, samples(text))
      local out, st = promtool(text)
      assert.equal(0, st, out)
      m:close()
    end)

    it("decodes labels: number, hex, string, inet v4/v6, errno, syscall, ifname, ksym, cgroup, a function", function()
      local function one(key, value_of_key, label)
        local m = bpf.map_create{type = "hash", key = key, value = "u64", max_entries = 8}
        m:update(value_of_key, 1)
        local e = bpf.exporter{listen = "127.0.0.1:0"}
        e:gauge("g", m, { labels = { label } })
        local s = next(samples(e:render()))
        e:close()
        m:close()
        return s:match('^g{l="(.*)"}$')
      end
      assert.equal("42", one("u32", 42, { name = "l", decode = "number" }))
      assert.equal("42", one("u32", 42, "l"))
      assert.equal("-7", one("s32", -7, "l"))
      assert.equal("0x2a", one("u32", 42, { name = "l", decode = "hex" }))
      assert.equal("0xffffffff81000000", one("u64", h.u64("0xffffffff81000000"), { name = "l", decode = "hex" }))
      assert.equal("0x0aff", one("unsigned char[2]", "\10\255", { name = "l", decode = "hex" }))
      assert.equal("xyz", one("char[8]", "xyz", { name = "l", decode = "string" }))
      -- a __be32 as it sits in memory: 10.1.2.3
      assert.equal("10.1.2.3", one("u32", 0x0302010a, { name = "l", decode = "inet" }))
      assert.equal("192.168.0.1", one("unsigned char[4]", "\192\168\0\1", { name = "l", decode = "inet" }))
      assert.equal("2001:db8::1", one("unsigned char[16]",
        "\32\1\13\184" .. ("\0"):rep(11) .. "\1", { name = "l", decode = "inet" }))
      assert.equal("ENOENT", one("u32", 2, { name = "l", decode = "errno" }))
      assert.equal("EACCES", one("s32", -13, { name = "l", decode = "errno" }))
      assert.equal("9999", one("u32", 9999, { name = "l", decode = "errno" }))
      -- syscall numbers from the system headers, not from the table under test
      local nr = tonumber(h.sh("echo '#include <asm/unistd.h>' | cc -E -dM - | awk '$2 == \"__NR_openat\" { print $3 }'"):match("%d+"))
      assert.is_number(nr)
      assert.equal("openat", one("u32", nr, { name = "l", decode = "syscall" }))
      assert.equal("100000", one("u32", 100000, { name = "l", decode = "syscall" }))
      local lo = tonumber(slurp("/sys/class/net/lo/ifindex"))
      assert.equal("lo", one("u32", lo, { name = "l", decode = "ifname" }))
      assert.equal("99999", one("u32", 99999, { name = "l", decode = "ifname" }))
      -- ksym: an address from /proc/kallsyms, and one inside that function
      local hex = h.sh("awk '$3 == \"vfs_read\" { print $1; exit }' /proc/kallsyms"):match("%x+")
      assert.truthy(hex)
      local addr = h.u64("0")
      for c in hex:gmatch(".") do addr = addr * 16 + tonumber(c, 16) end
      assert.equal("vfs_read", one("u64", addr, { name = "l", decode = "ksym" }))
      assert.equal("vfs_read+0x10", one("u64", addr + 16, { name = "l", decode = "ksym" }))
      -- cgroup: v2 id = inode of the cgroup directory
      local root = h.sh("awk '$3 == \"cgroup2\" { print $2; exit }' /proc/self/mounts"):match("%S+")
      assert.truthy(root, "cgroup2 is mounted")
      local dir = ("bhx-spec-%d"):format(math.random(1, 1e9))
      assert.equal(0, select(2, h.sh("mkdir " .. root .. "/" .. dir)))
      local ino = tonumber(h.sh("stat -c %i " .. root .. "/" .. dir):match("%d+"))
      local ok, got = pcall(one, "u64", ino, { name = "l", decode = "cgroup" })
      h.sh("rmdir " .. root .. "/" .. dir)
      assert.is_true(ok, got)
      assert.equal("/" .. dir, got)
      assert.equal("/", one("u64", tonumber(h.sh("stat -c %i " .. root):match("%d+")), { name = "l", decode = "cgroup" }))
      assert.equal("pid-7", one("u32", 7, { name = "l", decode = function(v) return "pid-" .. v end }))
    end)

    it("a struct key's fields, nested by a dotted name", function()
      local lat = obj:get_map("syscall_lat")
      lat:update({id = 0, slot = 3}, 2)
      ex:gauge("g", lat, { labels = { { name = "sc", field = "id", decode = "syscall" }, "slot" } })
      assert.same({ ['g{sc="read",slot="3"}'] = "2" }, samples(ex:render()))
    end)

    it("per-CPU values: summed by default, or split by a cpu label", function()
      local pc = bpf.map_create{type = "percpu_hash", key = "u32", value = "u64", max_entries = 8}
      pc:update(1, 0)
      local ncpu = #pc:lookup(1)
      local vals = {}
      for i = 1, ncpu do vals[i] = i * 10 end
      pc:update(1, vals)
      ex:counter("sum_total", pc, { labels = { "k" } })
      ex:counter("split_total", pc, { labels = { "k" }, percpu = "split" })
      local s = samples(ex:render())
      assert.equal(tostring(5 * ncpu * (ncpu + 1)), s['sum_total{k="1"}'])
      for i = 1, ncpu do
        assert.equal(tostring(i * 10), s[('split_total{k="1",cpu="%d"}'):format(i - 1)])
      end
      local out, st = promtool(ex:render())
      assert.equal(0, st, out)
      pc:close()
    end)

    it("value from a field or a function of key and value", function()
      local vs = bpf.map_create{type = "hash", key = "u32", value = obj:type("struct start"), max_entries = 8}
      vs:update(1, {ts = 100, id = 7})
      vs:update(2, {ts = 200, id = 8})
      ex:gauge("ts", vs, { labels = { "k" }, value = "ts" })
      ex:gauge("twice", vs, { labels = { "k" }, value = function(k, v) return k == 2 and v.id * 2 or nil end })
      assert.same({ ['ts{k="1"}'] = "100", ['ts{k="2"}'] = "200", ['twice{k="2"}'] = "16" },
        samples(ex:render()))
      vs:close()
    end)

    it("histogram from an array of log2 slots: cumulative buckets, _sum estimated, _count", function()
      local a = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 8}
      a:update(0, 1)   -- value 0
      a:update(2, 4)   -- 2..3
      a:update(4, 2)   -- 8..15
      ex:histogram("h", a, { help = "log2" })
      local text = ex:render()
      assert.truthy(text:find("# HELP h log2\n# TYPE h histogram\n", 1, true))
      assert.same({
        ['h_bucket{le="1"}'] = "1", ['h_bucket{le="2"}'] = "1", ['h_bucket{le="4"}'] = "5",
        ['h_bucket{le="8"}'] = "5", ['h_bucket{le="16"}'] = "7", ['h_bucket{le="+Inf"}'] = "7",
        -- midpoints: 1 x 0.5, 4 x 3, 2 x 12
        ["h_sum"] = "36.5", ["h_count"] = "7",
      }, samples(text))
      local out, st = promtool(text)
      assert.equal(0, st, out)
      a:close()
    end)

    it("histogram from a hash keyed by {labels..., slot}, scaled, with the program's sum", function()
      local lat, sum = obj:get_map("syscall_lat"), obj:get_map("syscall_lat_sum")
      lat:update({id = 0, slot = 1}, 3)
      lat:update({id = 0, slot = 3}, 1)
      lat:update({id = 1, slot = 2}, 5)
      sum:update({id = 0}, 9)
      sum:update({id = 1}, 12)
      ex:histogram("lat_seconds", lat, { labels = { { name = "syscall", field = "id", decode = "syscall" } },
        scale = 0.5, sum = sum })
      local s = samples(ex:render())
      assert.same({
        ['lat_seconds_bucket{syscall="read",le="0.5"}'] = "0",
        ['lat_seconds_bucket{syscall="read",le="1"}'] = "3",
        ['lat_seconds_bucket{syscall="read",le="2"}'] = "3",
        ['lat_seconds_bucket{syscall="read",le="4"}'] = "4",
        ['lat_seconds_bucket{syscall="read",le="+Inf"}'] = "4",
        ['lat_seconds_sum{syscall="read"}'] = "4.5",
        ['lat_seconds_count{syscall="read"}'] = "4",
        ['lat_seconds_bucket{syscall="write",le="0.5"}'] = "0",
        ['lat_seconds_bucket{syscall="write",le="1"}'] = "0",
        ['lat_seconds_bucket{syscall="write",le="2"}'] = "5",
        ['lat_seconds_bucket{syscall="write",le="4"}'] = "5",
        ['lat_seconds_bucket{syscall="write",le="+Inf"}'] = "5",
        ['lat_seconds_sum{syscall="write"}'] = "6",
        ['lat_seconds_count{syscall="write"}'] = "5",
      }, s)
      -- buckets never shrink: after the high slot is gone, le="4" is still there
      lat:delete({id = 0, slot = 3})
      assert.equal("3", samples(ex:render())['lat_seconds_bucket{syscall="read",le="4"}'])
    end)

    it("linear buckets", function()
      local a = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 4}
      a:update(0, 1)
      a:update(2, 2)
      ex:histogram("lin", a, { buckets = "linear", width = 10 })
      local s = samples(ex:render())
      assert.equal("1", s['lin_bucket{le="10"}'])
      assert.equal("1", s['lin_bucket{le="20"}'])
      assert.equal("3", s['lin_bucket{le="30"}'])
      assert.equal("3", s['lin_count'])
      a:close()
    end)

    it("serves /metrics, / and HEAD; 404 for other paths, 405 for other methods", function()
      local execs = obj:get_map("execs")
      execs:update({uid = 0, comm = "x"}, 1)
      ex:counter("x_total", execs, { labels = { "comm" } })
      local r = get(ex, "/metrics")
      assert.equal(200, r.status)
      assert.matches("Content%-Type: text/plain; version=0%.0%.4; charset=utf%-8", r.headers)
      assert.equal(ex:render(), r.body)
      r = get(ex, "/")
      assert.equal(200, r.status)
      assert.matches('href="/metrics"', r.body)
      r = get(ex, "/metrics", "-I")
      assert.equal(200, r.status)
      assert.matches("Content%-Length: %d+", r.headers)
      assert.is_nil(r.body:find("x_total", 1, true))
      r = get(ex, "/nope")
      assert.equal(404, r.status)
      r = get(ex, "/metrics/x")
      assert.equal(404, r.status)
      for _, m in ipairs{ "POST", "PUT", "DELETE" } do
        r = get(ex, "/metrics", "-X " .. m .. " -d abc")
        assert.equal(405, r.status)
        assert.matches("Allow: GET, HEAD", r.headers)
      end
      r = get(ex, "/", "-X POST")
      assert.equal(405, r.status)
      assert.equal(200, get(ex, "/metrics").status)
    end)

    it("answers concurrent scrapes from one rendering", function()
      local execs = obj:get_map("execs")
      execs:update({uid = 0, comm = "x"}, 1)
      ex:counter("x_total", execs, { labels = { "comm" } })
      local before = ex:stats().scrapes
      local rs = {}
      for i = 1, 8 do rs[i] = fetch("http://" .. ex:address() .. "/metrics") end
      serve_until(ex, (table.unpack or unpack)(rs))
      for i = 1, 8 do
        assert.equal(200, rs[i].status)
        assert.equal('x_total{comm="x"} 1', rs[i].body:match("x_total{[^\n]*"))
      end
      assert.equal(8, ex:stats().scrapes - before)
    end)

    it("a slowloris client does not stall other scrapes", function()
      local execs = obj:get_map("execs")
      execs:update({uid = 0, comm = "x"}, 1)
      ex:counter("x_total", execs, { labels = { "comm" } })
      local _, _, port = ex:address()
      local done = tmp .. "/slowloris.done"
      -- headers one byte at a time, 0.2 s apart: about 9 s for the request
      local pid = h.sh(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; req=\"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nX-Slow: 1\\r\\n\\r\\n\"; " ..
        "for ((i = 0; i < ${#req}; i++)); do printf %%s \"${req:$i:1}\" >&3; sleep 0.2; done; cat <&3 > /dev/null; touch %s' >/dev/null 2>&1 & echo $!")
        :format(port, done)):match("%d+")
      -- let it connect and start trickling
      local t = bpf.now() + 1
      while bpf.now() < t do ex:serve(20) end
      assert.equal(1, ex:stats().connections)
      local r = serve_until(ex, fetch("http://" .. ex:address() .. "/metrics"))
      assert.equal(200, r.status)
      assert.equal('x_total{comm="x"} 1', r.body:match("x_total{[^\n]*"))
      -- the slow one was still sending meanwhile
      assert.is_nil(slurp(done))
      kill(tonumber(pid))
    end)

    it("limits connections per client address; a freed slot serves again", function()
      ex:close()
      ex = bpf.exporter{listen = "127.0.0.1:0", per_ip_limit = 2}
      local execs = obj:get_map("execs")
      execs:update({uid = 0, comm = "x"}, 1)
      ex:counter("x_total", execs, { labels = { "comm" } })
      local _, _, port = ex:address()
      local pids = {}
      for i = 1, 2 do
        pids[i] = tonumber(h.sh(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; exec sleep 60' >/dev/null 2>&1 & echo $!")
          :format(port)):match("%d+"))
      end
      local deadline = bpf.now() + 30
      while ex:stats().connections < 2 and bpf.now() < deadline do ex:serve(20) end
      assert.equal(2, ex:stats().connections)
      -- a third from the same address is refused (curl sees no HTTP answer)
      local r = serve_until(ex, fetch("http://" .. ex:address() .. "/metrics"))
      assert.equal(0, r.status)
      for _, pid in ipairs(pids) do kill(pid) end
      deadline = bpf.now() + 30
      while ex:stats().connections > 0 and bpf.now() < deadline do ex:serve(20) end
      r = serve_until(ex, fetch("http://" .. ex:address() .. "/metrics"))
      assert.equal(200, r.status)
    end)

    it("rejects huge headers and long URLs, and keeps serving", function()
      local execs = obj:get_map("execs")
      execs:update({uid = 0, comm = "x"}, 1)
      ex:counter("x_total", execs, { labels = { "comm" } })
      h.write_file(tmp .. "/big.hdr", "X-Big: " .. ("a"):rep(100000) .. "\n")
      local r = get(ex, "/metrics", "-H @" .. tmp .. "/big.hdr")
      assert.equal(431, r.status)
      r = get(ex, "/" .. ("a"):rep(70000), "--path-as-is")
      assert.is_true(r.status == 414 or r.status == 431, tostring(r.status))
      r = get(ex, "/metrics")
      assert.equal(200, r.status)
    end)

    it("is a source of bpf.run, beside a ring buffer and a tick", function()
      local ro = bpf.load(h.obj("test_ring"))
      local ring = bpf.ringbuf(ro:get_map("ring"), {type = ro:type("struct ring_event")})
      local seen = bpf.map_create{type = "array", key = "u32", value = "u64", max_entries = 1}
      ex:gauge("ring_records", seen, { help = "records the handler saw" })
      ro:program("emit"):test_run{data = ("\0"):rep(64), ["repeat"] = 10}
      local n, ticks, r = 0, 0, nil
      local why = bpf.run{
        sources = { ex, { ring, function(ev)
          assert.equal(4242, ev.pid)
          n = n + 1
          seen:update(0, n)
        end } },
        every = 0.05,
        tick = function()
          ticks = ticks + 1
          -- scrape once the handler has seen every record; stop when answered
          if n == 10 and not r then r = fetch("http://" .. ex:address() .. "/metrics") end
          if r and r.done() then return false end
        end,
        timeout = 30,
      }
      assert.equal("stopped", why)
      assert.equal(10, n)
      assert.is_true(ticks >= 2)
      assert.equal(200, r.status)
      assert.equal("10", samples(r.body).ring_records)
      seen:close()
      ring:close()
      ro:close()
    end)

    it("a scrape of a large map gives the loop back between slices of its render", function()
      -- 100k labelled entries: the render takes many slices; the loop's tick
      -- must run while one is under way (a render in one piece would hold the
      -- loop, and no tick could see it in progress)
      local n = 100000
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = n}
      local batch = {}
      for i = 1, n do batch[i] = {i, i * 2} end
      assert.equal(n, m:update_batch(batch))
      ex:counter("big_total", m, { labels = { "id" } })
      local r, during, ticks = nil, 0, 0
      local why = bpf.run{
        sources = { ex },
        every = 0.002,
        tick = function()
          ticks = ticks + 1
          if not r then r = fetch("http://" .. ex:address() .. "/metrics") end
          if ex:stats().rendering then during = during + 1 end
          if r.done() then return false end
        end,
        timeout = 60,
      }
      assert.equal("stopped", why)
      assert.equal(200, r.status)
      local lines = 0
      for _ in r.body:gmatch("\nbig_total{") do lines = lines + 1 end
      assert.equal(n, lines)
      assert.is_true(during > 0, ("no tick ran during the render (%d ticks)"):format(ticks))
      local st = ex:stats()
      assert.is_false(st.rendering)
      assert.is_true(st.max_slice_seconds < st.render_seconds,
        ("one slice %.3f s of a %.3f s render"):format(st.max_slice_seconds, st.render_seconds))
      m:close()
    end)

    it("bpf.run waits on it without spinning while nobody scrapes", function()
      -- a wrapper that counts the loop's serve(0) calls
      local calls = 0
      local src = {
        fd = function() return ex:fd() end,
        timeout = function() return ex:timeout() end,
        serve = function(_, ms) calls = calls + 1; return ex:serve(ms) end,
      }
      assert.is_nil(ex:timeout())
      assert.equal("timeout", bpf.run{sources = { src }, timeout = 0.3})
      -- once at the start; then only when its fd is readable, which it never is here
      assert.is_true(calls >= 1 and calls <= 2, calls .. " serve calls")
    end)

    it("bpf.poll gives it back as ready when a scrape comes in", function()
      local m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8}
      m:update(1, 5)
      ex:gauge("g", m, { labels = { "k" } })
      local r = fetch("http://" .. ex:address() .. "/metrics")
      local _, ready = bpf.poll({ ex }, 20000)
      assert.equal(1, #ready)
      assert.equal(ex, ready[1])
      serve_until(ex, r)
      assert.equal(200, r.status)
      assert.equal("5", samples(r.body)['g{k="1"}'])
      m:close()
    end)

    it("serve returns on its own; fd and timeout are for an outer loop", function()
      assert.equal(0, ex:serve(0))
      assert.is_number(ex:fd())
      assert.is_true(ex:fd() >= 0)
      local t = ex:timeout()
      assert.is_true(t == nil or t >= 0)
    end)
  end)

  -- A real Prometheus scraping scripts/exporter.lua in a child bpfhost.
  context("#root kernel prometheus", function()
    local dir, child, prom, helper, eport, pport, ids
    local function query(q)
      local out = h.sh(("curl -s -m 10 --data-urlencode %q http://127.0.0.1:%d/api/v1/query"):format("query=" .. q, pport))
      local ok, t = pcall(json_decode, out)
      if ok and type(t) == "table" and t.status == "success" then return t.data.result end
      return nil
    end
    -- Query until check(result) holds (bounded); returns the last result.
    local function eventually(q, check, secs)
      local deadline = bpf.now() + (secs or 40)
      local res
      repeat
        res = query(q)
        if res and check(res) then return res end
        bpf.sleep(0.25)
      until bpf.now() > deadline
      return res
    end

    setup(function()
      dir = tmp .. "/prom"
      h.sh("mkdir -p " .. dir .. "/data")
      -- a process for the latency histogram: waits on a fifo, then makes
      -- syscalls, then waits again (its numbers stay put)
      h.sh(("mkfifo %s/go %s/stop"):format(dir, dir))
      helper = tonumber(h.sh(("bash -c 'read x < %s/go; for i in $(seq 50); do echo $i > /dev/null; done; read y < %s/stop' >/dev/null 2>&1 & echo $!")
        :format(dir, dir)):match("%d+"))
      eport, pport = free_port(), free_port()
      child = tonumber(h.sh(("BPFHOST_OBJ_DIR=%s/bpf %s scripts/exporter.lua 127.0.0.1:%d %d > %s/child.log 2>&1 & echo $!")
        :format(h.build, h.host, eport, helper, dir)):match("%d+"))
      local line = wait_file(dir .. "/child.log", "serving [^\n]*\n")
      ids = {
        execs = tonumber(line:match("execs (%d+)")),
        lat = tonumber(line:match("syscall_lat (%d+)")),
        sum = tonumber(line:match("syscall_lat_sum (%d+)")),
      }
      h.write_file(dir .. "/prometheus.yml", ([[
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: bpfhost
    static_configs:
      - targets: ['127.0.0.1:%d']
]]):format(eport))
      prom = tonumber(h.sh(("prometheus --config.file=%s/prometheus.yml --storage.tsdb.path=%s/data " ..
        "--web.listen-address=127.0.0.1:%d --log.level=warn > %s/prom.log 2>&1 & echo $!")
        :format(dir, dir, pport, dir)):match("%d+"))
    end)

    teardown(function()
      kill(child)
      kill(prom)
      kill(helper)
      for _, pid in ipairs{ child, prom } do
        local deadline = bpf.now() + 20
        while pid and select(2, h.sh("kill -0 " .. pid .. " 2>/dev/null")) == 0 and bpf.now() < deadline do
          bpf.sleep(0.1)
        end
        kill(pid, "KILL")
      end
      h.sh("rm -rf " .. dir)
    end)

    it("answers queries with the values the BPF program counted", function()
      assert.is_number(ids.execs)
      assert.truthy(eventually("up", function(r) return r[1] and r[1].value[2] == "1" end),
        "Prometheus scrapes the exporter")
      -- execs from a command only this spec runs: a copy of sh under a unique name
      local comm = ("bhx%d"):format(math.random(100000, 999999))
      h.sh(("cp /bin/sh %s/%s && %s/%s -c 'i=0; while [ $i -lt 25 ]; do /bin/true; i=$((i + 1)); done'"):format(dir, comm, dir, comm))
      local execs = bpf.map_by_id(ids.execs)
      local counted = execs:lookup({uid = 0, comm = comm})
      assert.equal(25, counted)
      local res = eventually(('bpfhost_execs_total{comm="%s"}'):format(comm),
        function(r) return r[1] and r[1].value[2] == tostring(counted) end)
      assert.equal(1, #res)
      assert.equal(tostring(counted), res[1].value[2])
      assert.equal("0", res[1].metric.uid)
      assert.equal("bpfhost", res[1].metric.job)
      execs:close()

      -- the latency histogram of the helper, whose numbers stop once it waits again
      h.write_file(dir .. "/go", "go\n")
      local lat, sum = bpf.map_by_id(ids.lat), bpf.map_by_id(ids.sum)
      local write_nr = tonumber(h.sh("echo '#include <asm/unistd.h>' | cc -E -dM - | awk '$2 == \"__NR_write\" { print $3 }'"):match("%d+"))
      local function map_counts()
        local per, total = {}, 0
        for k, v in lat:iterate() do
          if k.id == write_nr then per[k.slot] = v; total = total + v end
        end
        return per, total
      end
      local deadline = bpf.now() + 20
      local per, total = map_counts()
      while total < 50 and bpf.now() < deadline do bpf.sleep(0.1); per, total = map_counts() end
      bpf.sleep(0.5)
      per, total = map_counts()
      assert.equal(50, total) -- one write() per echo
      local ns = sum:lookup({id = write_nr})
      -- Prometheus: every bucket equals the map's cumulative count
      res = eventually('bpfhost_syscall_latency_seconds_count{syscall="write"}',
        function(r) return r[1] and r[1].value[2] == "50" end)
      assert.equal("50", res[1].value[2])
      local buckets = eventually('bpfhost_syscall_latency_seconds_bucket{syscall="write"}',
        function(r) return #r > 0 end)
      local maxslot = 0
      for s in pairs(per) do if s > maxslot then maxslot = s end end
      local seen = 0
      for _, b in ipairs(buckets) do
        local le = b.metric.le
        if le == "+Inf" then
          assert.equal("50", b.value[2])
        else
          local slot = math.floor(math.log(tonumber(le) / 1e-9) / math.log(2) + 0.5)
          assert.is_true(math.abs(tonumber(le) - 2 ^ slot * 1e-9) < 1e-18 * 2 ^ slot, le)
          local cum = 0
          for s, c in pairs(per) do if s <= slot then cum = cum + c end end
          assert.equal(tostring(cum), b.value[2], "le=" .. le)
          seen = seen + 1
        end
      end
      assert.is_true(seen >= maxslot + 1)
      res = eventually('bpfhost_syscall_latency_seconds_sum{syscall="write"}', function(r) return r[1] end)
      assert.is_true(math.abs(tonumber(res[1].value[2]) - ns * 1e-9) <= 1e-12 * ns)
      lat:close()
      sum:close()
    end)

    it("serves an exposition promtool accepts", function()
      local out, st = h.sh(("curl -s -m 10 http://127.0.0.1:%d/metrics > %s/scrape.txt && promtool check metrics < %s/scrape.txt 2>&1")
        :format(eport, dir, dir))
      assert.equal(0, st, out)
      local text = slurp(dir .. "/scrape.txt")
      assert.matches("# TYPE bpfhost_execs_total counter", text, 1, true)
      assert.matches("# TYPE bpfhost_syscall_latency_seconds histogram", text, 1, true)
    end)
  end)
end)
