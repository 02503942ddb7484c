-- bpf.pp and the printer behind it (bpfhost.pp / bpfhost.pretty).
local h = require "helper"
local bpf = require "bpfhost"
local pp = require "bpfhost.pp"

-- What bpf.pp writes to stdout.
local function printed(v, opts)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  local saved = io.stdout
  io.stdout = f
  local ok, err = pcall(bpf.pp, v, opts)
  io.stdout = saved
  f:close()
  f = assert(io.open(path))
  local s = f:read("*a")
  f:close()
  os.remove(path)
  assert(ok, err)
  return s
end

describe("pp", function()
  context("arguments", function()
    it("exists when the module opens, and prints to stdout with a newline", function()
      assert.is_function(bpf.pp)
      assert.equal("{ 1, 2 }\n", printed({ 1, 2 }))
      assert.equal('"x"\n', printed("x"))
    end)

    it("rejects options it does not know, and bad values", function()
      local err = h.raises(bpf.pp, {}, { colour = true })
      assert.matches("pp: unknown option 'colour' %(known: depth, items, rows, width%)", err)
      err = h.raises(bpf.pp, {}, "wide")
      assert.matches("pp: opts must be a table, got string", err)
      err = h.raises(pp.format, {}, { rows = 0 })
      assert.matches("pp: rows must be a positive integer, got 0", err)
    end)

    it("prints scalars as Lua would read them", function()
      assert.equal("nil", pp.format(nil))
      assert.equal("true", pp.format(true))
      assert.equal("42", pp.format(42))
      assert.equal("-7", pp.format(-7))
      assert.equal("0.5", pp.format(0.5))
      assert.equal("9007199254740992", pp.format(2 ^ 53))
      assert.equal("inf", pp.format(math.huge))
      assert.equal("nan", pp.format(0 / 0))
      assert.equal('"a \\"b\\"\\n"', pp.format('a "b"\n'))
      assert.equal('"héllo"', pp.format("héllo"))
    end)

    it("shows byte strings that are not printable as hex, long ones cut with their length", function()
      assert.equal("<0a 00 00 01>", pp.format("\10\0\0\1"))
      assert.equal("<ff fe>", pp.format("\255\254"))
      local long = pp.format(string.rep("\0", 100))
      assert.matches("^<00 00 .* %.%.%. %(100 bytes%)>$", long)
      local shown = long:match("^<(.-) %.%.%.")
      assert.equal(32, select(2, shown:gsub("%x%x", "")))
    end)

    h.luajit_only(it, pending, "cdata")("prints 64-bit cdata integers as plain digits", function()
      local ffi = require "ffi"
      assert.equal("18446744073709551615", pp.format(ffi.new("uint64_t", h.u64("18446744073709551615"))))
      assert.equal("-9223372036854775807", pp.format(ffi.new("int64_t", -h.u64("9223372036854775807"))))
    end)

    it("prints integers as plain digits (Lua 5.4: all 64 bits of them)", function()
      assert.equal("42", pp.format(42))
      if h.luajit then return end
      assert.equal("9223372036854775807", pp.format(math.maxinteger))
      assert.equal("-9223372036854775808", pp.format(math.mininteger))
    end)

    it("sorts keys: the array part first, then numbers, strings, others", function()
      local t = { "a", "b", zeta = 1, alpha = 2, [10] = 3, [-1] = 4, [true] = 5,
        ["not an ident"] = 6, ["end"] = 7 }
      assert.equal('{ "a", "b", [-1] = 4, [10] = 3, alpha = 2, ["end"] = 7, '
        .. '["not an ident"] = 6, zeta = 1, [true] = 5 }', pp.format(t, { width = 200 }))
    end)

    it("nests, and breaks lines when a table does not fit the width", function()
      local t = { name = "counts", inner = { a = 1, b = { c = 2 } }, list = { 1, 2, 3 } }
      assert.equal("{ inner = { a = 1, b = { c = 2 } }, list = { 1, 2, 3 }, name = \"counts\" }",
        pp.format(t))
      assert.equal("{\n  inner = { a = 1, b = { c = 2 } },\n  list = { 1, 2, 3 },\n"
        .. "  name = \"counts\",\n}", pp.format(t, { width = 40 }))
    end)

    it("packs long arrays of short values several to a line", function()
      local t = {}
      for i = 1, 40 do t[i] = i end
      local s = pp.format(t, { width = 40 })
      assert.matches("^{\n  1, 2, 3,", s)
      assert.matches("\n}$", s)
      local lines, numbers = 0, 0
      for line in s:gmatch("[^\n]+") do
        assert.is_true(#line <= 40, line)
        lines = lines + 1
      end
      for _ in s:gmatch("%d+") do numbers = numbers + 1 end
      assert.equal(40, numbers)
      assert.is_true(lines < 12, s)
    end)

    it("marks cycles instead of following them", function()
      local t = { name = "loop" }
      t.self = t
      t.list = { t, { t } }
      assert.equal('{ list = { <cycle>, { <cycle> } }, name = "loop", self = <cycle> }',
        pp.format(t, { width = 200 }))
      local shared = { 1 }
      assert.equal("{ { 1 }, { 1 } }", pp.format({ shared, shared }))
    end)

    it("stops at depth and item limits, saying how many were left out", function()
      local deep = { { { { 1 } } } }
      assert.equal("{ { {...} } }", pp.format(deep, { depth = 2 }))
      local many = {}
      for i = 1, 10 do many[i] = i end
      assert.equal("{ 1, 2, 3, ... (7 more) }", pp.format(many, { items = 3 }))
    end)

    it("prints tables with __tostring through it", function()
      local t = setmetatable({}, { __tostring = function() return "custom!" end })
      assert.equal("custom!", pp.format(t))
      assert.equal("{ custom! }", pp.format({ t }))
    end)

    it("never runs into a value's own code: raising metamethods do not stop it", function()
      local bad = setmetatable({}, { __tostring = function() error("no") end,
        __index = function() error("no") end })
      assert.equal("{}", pp.format(bad))
      local s = pp.format({ [bad] = 1, [setmetatable({}, getmetatable(bad))] = 2, x = 3 })
      assert.matches("x = 3", s)
      assert.matches("^{ x = 3, %[{}%] = %d, %[{}%] = %d }$", s)
      local weird = setmetatable({}, { __tostring = function() return 42 end })
      -- LuaJIT's tostring hands the 42 back, which pp refuses; Lua 5.4's makes it "42"
      assert.equal(h.luajit and "{}" or "42", pp.format(weird))
    end)

    it("says so when a list is empty, and counts in the singular for one", function()
      assert.equal("no maps", pp.maps({}))
      assert.equal("no links", pp.links({}))
      local one = pp.programs({ { id = 3, type = "xdp", name = "x", tag = "5c61c9857c476ac5", map_ids = { 4, 5 } } })
      assert.equal("id  type  name  tag               map_ids\n 3  xdp   x     5c61c9857c476ac5  4,5\n1 program", one)
    end)

    it("reads the fields of a struct from a Type's declaration, anonymous members flattened", function()
      local T = bpf.kernel_type("struct file_ra_state")
      assert.same({ "start", "size", "async_size", "ra_pages", "order", "mmap_miss", "prev_pos" },
        pp.fields(T))
      local skb = pp.fields(bpf.kernel_type("struct sk_buff"))
      assert.equal("next", skb[1]) -- inside union { struct { ... } }
      assert.truthy(table.concat(skb, " "):find("destructor", 1, true)) -- a function pointer
      assert.truthy(table.concat(skb, " "):find(" cloned ", 1, true)) -- a bitfield
      assert.is_nil(pp.fields(bpf.kernel_type("u32")))
      assert.is_nil(pp.fields(bpf.kernel_type("enum bpf_map_type")))
      assert.same({ "in6_u" }, pp.fields(bpf.kernel_type("struct in6_addr"))) -- a named union member
    end)

    it("lays out a dump as columns, sorted by key, with the count", function()
      local d = { { key = 2, value = { b = 20, a = "x" } }, { key = 1, value = { b = 1000, a = "yy" } } }
      assert.equal([[
key | a        b
  1 | "yy"  1000
  2 | "x"     20
2 entries]], pp.dump(d))
      assert.equal("no entries", pp.dump({}))
    end)
  end)

  context("#root kernel", function()
    local obj
    before_each(function() obj = bpf.load(h.obj("test_maps")) end)
    after_each(function() obj:close() end)

    it("shows a map handle in one line: name, type, key→value, entries/max", function()
      local m = obj:get_map("name_stats")
      assert.equal("map 'name_stats' hash char[16]→struct stats 0/64", pp.format(m))
      m:update("bash", { packets = 1 })
      assert.equal("map 'name_stats' hash char[16]→struct stats 1/64", pp.format(m))
      assert.equal("map 'sized' hash 6B→4B 0/16", pp.format(obj:get_map("sized")))
      m:close()
      assert.equal("map 'name_stats' (closed)", pp.format(m))
    end)

    it("shows an object with its maps and programs, and a Type as its declaration", function()
      local s = pp.format(obj)
      assert.matches("^object 'test_maps' %(loaded%)\n  maps: arr name_stats pcpu sized small u32_u64\n"
        .. "  programs: touch$", s)
      assert.equal("struct stats {\n\tu64 packets;\n\tu64 bytes;\n\tu32 flags;\n\tchar comm[16];\n}",
        pp.format(obj:get_map("name_stats"):value_type()))
      assert.equal("{ type struct stats }", pp.format({ obj:get_map("name_stats"):value_type() }))
    end)

    it("prints m:dump() as aligned columns, key fields | value fields", function()
      local m = obj:get_map("name_stats")
      m:update("sshd", { packets = 30, bytes = 100000, flags = 1, comm = "sshd" })
      m:update("bash", { packets = 3, bytes = 100, comm = "bash" })
      local s = printed(m:dump())
      local lines = {}
      for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equal(4, #lines, s)
      assert.matches("^key%s+|", lines[1])
      for _, f in ipairs{ "packets", "bytes", "flags", "comm" } do
        assert.truthy(lines[1]:find(f, 1, true), lines[1])
      end
      assert.matches('^"bash"%s+|', lines[2])
      assert.matches('^"sshd"%s+|', lines[3])
      assert.equal("2 entries", lines[4])
      -- numbers right-aligned: their last digits line up
      local p2 = lines[2]:find("100 ") or lines[2]:find("100$")
      local p3 = lines[3]:find("100000")
      assert.equal(p2 + 2, p3 + 5)
      -- every row starts its value fields at the same column
      assert.equal(lines[1]:find("|", 1, true), lines[2]:find("|", 1, true))
      assert.equal(lines[1]:find("|", 1, true), lines[3]:find("|", 1, true))
    end)

    it("prints per-CPU values one column per CPU, with their sum", function()
      local m = obj:get_map("pcpu")
      m:update(7, 5)
      local d = m:dump()
      local ncpu = #d[1].value
      local s = pp.dump(d, { map = m })
      local header = s:match("^[^\n]+")
      if ncpu <= 8 then
        assert.matches("^key | cpu0", header)
        assert.matches("sum$", header)
        assert.matches("\n  7 |%s+5", s)
        assert.matches(tostring(5 * ncpu) .. "\n1 entry$", s)
      else
        assert.matches("^key | sum", header)
      end
    end)

    it("cuts long dumps with a count of what was left out", function()
      local m = obj:get_map("u32_u64")
      for i = 1, 120 do m:update(i, i * i) end
      local s = printed(m:dump(), { rows = 5 })
      local lines = {}
      for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equal(7, #lines, s)
      assert.equal("  1 |     1", lines[2])
      assert.equal("  5 |    25", lines[6])
      assert.equal("... 115 more (120 entries; {rows = 120} shows all)", lines[7])
      -- the default keeps 50
      local all = pp.format(m:dump())
      assert.matches("%.%.%. 70 more %(120 entries", all)
    end)

    it("prints bpf.maps() like bpftool map show", function()
      local m = obj:get_map("name_stats")
      m:update("x", {})
      local s = printed(bpf.maps())
      local header = s:match("^[^\n]+")
      assert.matches("^%s*id%s+type%s+name%s+key→value%s+entries%s+memlock", header)
      local row = s:match("\n(%s*" .. m.id .. " [^\n]+)")
      assert.truthy(row, s)
      assert.matches("^%s*" .. m.id .. "%s+hash%s+name_stats%s+char%[16%]→struct stats%s+1/64%s+%S+", row)
      assert.matches("\n%d+ maps\n$", s)
    end)

    it("prints bpf.programs() and bpf.links() as columns", function()
      local links = obj:attach()
      local id
      for _, e in ipairs(bpf.programs()) do
        if e.name == "touch" and (not id or e.id > id) then id = e.id end
      end
      assert.truthy(id)
      local s = printed(bpf.programs())
      assert.matches("^%s*id%s+type%s+name%s+tag", s)
      assert.matches("\n%s*" .. id .. "%s+raw_tracepoint%s+touch%s", s)
      s = printed(bpf.links())
      assert.matches("^%s*id%s+type%s+prog_id", s)
      assert.matches("\n%s*%d+%s+raw_tracepoint%s+" .. id .. "%s", s)
      for _, l in pairs(links) do l:detach() end
    end)
  end)
end)
