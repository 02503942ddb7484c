local h = require "helper"

describe("module", function()
  it("loads from plain luajit and adds no globals", function()
    local out, status = h.sh(([[luajit -e '
      package.cpath = "%s/lib/?.so;" .. package.cpath
      local before = {}
      for k in pairs(_G) do before[k] = true end
      local bpf = require "bpfhost"
      local added = {}
      for k in pairs(_G) do if not before[k] then added[#added + 1] = k end end
      print(type(bpf.open), bpf._VERSION, #added, table.concat(added, ","))' 2>&1]]):format(h.build))
    assert.equal(0, status, out)
    assert.matches("^function\t%d+%.%d+%.%d+\t0\t\n$", out)
  end)

  it("has one version, the same in bpf._VERSION and bpfhost -v", function()
    local bpf = require "bpfhost"
    local out = h.sh(h.host .. " -v")
    assert.equal("bpfhost " .. bpf._VERSION, out:match("^[^\n]+"))
  end)

  it("documents every function and method in the README", function()
    local f = assert(io.open("README.md"))
    local readme = f:read("*a")
    f:close()
    local bpf = require "bpfhost"
    local missing = {}
    local function check(prefix, t)
      for k, v in pairs(t) do
        if type(v) == "function" and not k:match("^_") then
          if not readme:find(prefix .. k, 1, true) then missing[#missing + 1] = prefix .. k end
        end
      end
    end
    check("bpf.", bpf)
    local reg = debug.getregistry()
    local function methods(mt)
      if mt.__index and type(mt.__index) == "table" then return mt.__index end
      return mt.__methods or (mt.__props_mt and mt.__props_mt.__index) or {}
    end
    for name, letter in pairs{["bpfhost.object"] = "obj:", ["bpfhost.map"] = "m:",
        ["bpfhost.prog"] = "p:", ["bpfhost.link"] = "link:", ["bpfhost.type"] = "T:",
        ["bpfhost.exporter"] = "ex:", ["bpfhost.ringbuf"] = "ring:", ["bpfhost.perfbuf"] = "perf:",
        ["bpfhost.user_ringbuf"] = "up:"} do
      check(letter, methods(reg[name]))
    end
    table.sort(missing)
    assert.same({}, missing)
  end)
end)
