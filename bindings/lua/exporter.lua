-- bpfhost.exporter: metric definitions for bpf.exporter, and their rendering
-- in the Prometheus text exposition format (version 0.0.4).
--
-- bpf.exporter and the HTTP side are C (exporter.c). This adds ex:counter,
-- ex:gauge, ex:histogram and ex:render to the exporter's methods. Maps are
-- read at scrape time with m:iterate() (batch syscalls); entries whose
-- labels come out equal are added up, so a family never repeats a series.
local M = ...

local C = rawget(M, "_exporter")
if not C then return {} end
M._exporter = nil

local methods, dec = C.methods, C.decoders
local type, tostring, tonumber, pairs, ipairs, error, pcall, select, setmetatable, getmetatable =
  type, tostring, tonumber, pairs, ipairs, error, pcall, select, setmetatable, getmetatable
local format, find, gsub, rep, byte, sub, match =
  string.format, string.find, string.gsub, string.rep, string.byte, string.sub, string.match
local concat, sort = table.concat, table.sort
local floor, huge = math.floor, math.huge
local mtype = math.type -- Lua 5.4: integer or float; nil under LuaJIT
local clock = M.now

local okbit, bit = pcall(require, "bit")
if not okbit then bit = nil end

-- ex -> its definitions; weak, so an exporter is collected with its metrics
local state = setmetatable({}, { __mode = "k" })

local function defs_of(ex)
  local d = state[ex]
  if not d then
    d = { list = {}, names = {} }
    state[ex] = d
  end
  return d
end

-- ---------------------------------------------------------------------------
-- -- Numbers -----------------------------------------------------------------

-- A sample value as Prometheus reads it: integers exactly, floats round-trip.
local function fmtnum(x)
  local t = type(x)
  if t == "number" then
    if x == floor(x) then
      -- tostring prints integers below 1e14 as integers, and fast (Lua 5.4:
      -- its integers only; whole floats it prints as 1.0)
      if x < 1e14 and x > -1e14 and (not mtype or mtype(x) == "integer") then return tostring(x) end
      if x > -9.2e18 and x < 9.2e18 then return format("%d", x) end
    end
    if x ~= x then return "NaN" end
    if x == huge then return "+Inf" end
    if x == -huge then return "-Inf" end
    local s = format("%.15g", x)
    if tonumber(s) ~= x then s = format("%.17g", x) end
    return s
  elseif t == "boolean" then
    return x and "1" or "0"
  end
  -- int64_t / uint64_t cdata (LuaJIT)
  return (gsub(tostring(x), "[UuLl]+$", ""))
end

local function tonum(x)
  local t = type(x)
  if t == "number" then return x end
  if t == "boolean" then return x and 1 or 0 end
  return tonumber(x) or tonumber((gsub(tostring(x), "[UuLl]+$", "")))
end

-- An integer (number or 64-bit cdata) as hex: "0x1f".
local function hexint(v)
  if type(v) == "number" then
    -- Lua 5.4: %x shows an integer's 64 bits (a u64 beyond 2^63 is negative)
    if math.type and math.type(v) == "integer" then return format("0x%x", v) end
    if v < 0 then v = v + 18446744073709551616 end
    return format("0x%x", v)
  end
  if bit then
    local s = gsub(bit.tohex(v, 16), "^0+(.)", "%1")
    return "0x" .. s
  end
  return format("0x%x", v)
end

-- ---------------------------------------------------------------------------
-- -- Label decoders ----------------------------------------------------------

-- C: one pass, and the string itself back when nothing needs escaping
-- (string.find with a class is not compiled by LuaJIT: slower per label).
local escape = dec.escape

local function as_string(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" or t == "cdata" or t == "boolean" then return fmtnum(v) end
  return nil
end

local function hexbytes(s)
  return (gsub(s, ".", function(c) return format("%02x", byte(c)) end))
end

-- Each decoder: (value, ctx) -> string. ctx holds per-render caches.
local decoders = {}

decoders.string = function(v) return as_string(v) or tostring(v) end

decoders.number = function(v)
  if type(v) == "string" then return v end
  return fmtnum(v)
end

decoders.hex = function(v)
  if type(v) == "string" then return "0x" .. hexbytes(v) end
  if type(v) == "table" then
    local parts = {}
    for i = 1, #v do parts[i] = format("%02x", tonum(v[i]) % 256) end
    return "0x" .. concat(parts)
  end
  return hexint(v)
end

decoders.inet = function(v)
  if type(v) == "cdata" then v = tonum(v) end
  return dec.inet(v) or decoders.hex(v)
end

decoders.errno = function(v)
  local n = tonum(v)
  return n and dec.errno(n) or fmtnum(v)
end

decoders.syscall = function(v)
  local n = tonum(v)
  return n and dec.syscall(n) or fmtnum(v)
end

decoders.ifname = function(v, ctx)
  local n = tonum(v)
  local cache = ctx.ifname
  local s = cache[n]
  if not s then
    s = n and dec.ifname(n) or fmtnum(v)
    cache[n] = s
  end
  return s
end

local ksyms -- loaded once, at the first ksym label
decoders.ksym = function(v)
  if not ksyms then ksyms = dec.kallsyms() end
  local a = v
  if type(v) == "cdata" then a = hexint(v) end
  return dec.ksym(ksyms, a) or hexint(v)
end

-- cgroup ids (inode numbers of the cgroup2 directories) -> paths; walked
-- again at most once per render when an id is unknown (a new cgroup).
local cgroups
decoders.cgroup = function(v, ctx)
  local id = tonum(v)
  local p = cgroups and cgroups[id]
  if not p and not ctx.cgroup_walked then
    ctx.cgroup_walked = true
    cgroups = dec.cgroups() or {}
    p = cgroups[id]
  end
  return p or fmtnum(v)
end

-- ---------------------------------------------------------------------------
-- -- Checking definitions ----------------------------------------------------

-- Raise at the first caller outside this file: the line of the script's call.
local getinfo = debug and debug.getinfo
local function argerr(fn, fmt_, ...)
  local lvl = 2
  while getinfo do
    local info = getinfo(lvl, "S")
    if not info then lvl = 1 break end
    if info.source ~= "=bpfhost.exporter" then break end
    lvl = lvl + 1
  end
  error(fn .. ": " .. format(fmt_, ...), getinfo and lvl or 3)
end

local function valid_metric(s) return type(s) == "string" and find(s, "^[%a_:][%w_:]*$") ~= nil end
local function valid_label(s)
  return type(s) == "string" and find(s, "^[%a_][%w_]*$") ~= nil and not find(s, "^__")
end

-- "a.b.c" -> {"a", "b", "c"}
local function split_path(s)
  local p = {}
  for part in s:gmatch("[^%.]+") do p[#p + 1] = part end
  return p
end

local function get_path(v, path)
  for i = 1, #path do
    if type(v) ~= "table" then return nil end
    v = v[path[i]]
  end
  return v
end

local function field_names(t)
  local names = {}
  if type(t) == "table" then
    for k in pairs(t) do names[#names + 1] = tostring(k) end
  end
  sort(names)
  return concat(names, ", ")
end

-- A zero value of the map's key (or value) type: a table of its fields for a
-- struct, a scalar otherwise, nil when the map has no BTF.
local function template(m, side)
  local ok, T = pcall(side == "key" and m.key_type or m.value_type, m)
  if not ok or not T then return nil end
  local ok2, v = pcall(T.decode, T, rep("\0", T.size))
  if ok2 then return v end
  return nil
end

local function is_percpu(m) return find(m.type or "", "percpu", 1, true) ~= nil end

local known_opts = {
  counter = { help = true, labels = true, value = true, percpu = true },
  gauge = { help = true, labels = true, value = true, percpu = true },
  histogram = { help = true, labels = true, value = true, buckets = true, width = true,
    le = true, slot = true, sum = true, scale = true, max_slot = true },
}

local function check_opts(fn, kind, opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then argerr(fn, "options must be a table, got %s", type(opts)) end
  local known = known_opts[kind]
  for k in pairs(opts) do
    if not known[k] then
      local names = {}
      for n in pairs(known) do names[#names + 1] = n end
      sort(names)
      argerr(fn, "unknown option '%s' (known: %s)", tostring(k), concat(names, ", "))
    end
  end
  return opts
end

-- labels = {"comm", {name = "syscall", field = "id", decode = "syscall"}, ...}
local function check_labels(fn, m, opts, reserved, skip_field)
  local spec = opts.labels
  local out, seen = {}, {}
  if spec == nil then return out end
  if type(spec) ~= "table" then argerr(fn, "labels must be a list, got %s", type(spec)) end
  local ktmpl = template(m, "key")
  for i, l in ipairs(spec) do
    local name, field, decode
    if type(l) == "string" then
      name, field = l, l
    elseif type(l) == "table" then
      for k in pairs(l) do
        if k ~= "name" and k ~= "field" and k ~= "decode" and k ~= 1 then
          argerr(fn, "labels[%d]: unknown field '%s' (known: name, field, decode)", i, tostring(k))
        end
      end
      name = l.name or l[1]
      field = l.field or name
      decode = l.decode
    else
      argerr(fn, "labels[%d] must be a name or a table {name =, field =, decode =}, got %s", i,
        type(l))
    end
    if not valid_label(name) then
      argerr(fn, "labels[%d]: '%s' is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not __...)", i,
        tostring(name))
    end
    if reserved[name] then argerr(fn, "labels[%d]: '%s' is reserved here", i, name) end
    if seen[name] then argerr(fn, "labels[%d]: '%s' given twice", i, name) end
    seen[name] = true
    if type(field) ~= "string" then
      argerr(fn, "labels[%d]: field must be a string, got %s", i, type(field))
    end
    local dfn
    if decode == nil then
      dfn = nil -- by the value's Lua type, at render
    elseif type(decode) == "function" then
      dfn = function(v, ctx) local s = decode(v); return s ~= nil and tostring(s) or "" end
    elseif decoders[decode] then
      dfn = decoders[decode]
    else
      local names = {}
      for n in pairs(decoders) do names[#names + 1] = n end
      sort(names)
      argerr(fn, "labels[%d]: unknown decoder '%s' (known: %s, or a function)", i,
        tostring(decode), concat(names, ", "))
    end
    local path = split_path(field)
    if type(ktmpl) == "table" then
      if get_path(ktmpl, path) == nil then
        argerr(fn, "labels[%d]: map '%s' has no key field '%s' (fields: %s)", i, m.name, field,
          field_names(ktmpl))
      end
      if type(get_path(ktmpl, path)) == "table" and not decode then
        argerr(fn, "labels[%d]: key field '%s' is a struct or array: name one of its fields "
          .. "('%s.x') or give a decoder", i, field, field)
      end
      if skip_field and field == skip_field then
        argerr(fn, "labels[%d]: '%s' is the slot field", i, field)
      end
    else
      path = nil -- scalar (or raw) key: the label is the whole key
      if #spec > 1 then
        argerr(fn, "map '%s' has a scalar key: it gives one label, not %d", m.name, #spec)
      end
    end
    out[#out + 1] = { name = name, path = path, field = path and #path == 1 and path[1] or nil,
      decode = dfn, pre = (#out == 0 and "" or '",') .. name .. '="' }
  end
  for k in pairs(spec) do
    if type(k) ~= "number" then
      argerr(fn, "labels must be a list; use {name = ..., field = ...} entries, not key '%s'",
        tostring(k))
    end
  end
  return out
end

local function check_value(fn, m, opts)
  local v = opts.value
  local vtmpl = template(m, "value")
  if type(vtmpl) == "table" and #vtmpl > 0 and vtmpl[1] ~= nil and is_percpu(m) then
    vtmpl = vtmpl[1]
  end
  if v == nil then
    if type(vtmpl) == "table" then
      argerr(fn, "map '%s' has struct values: give value = 'field' or a function (fields: %s)",
        m.name, field_names(vtmpl))
    end
    return nil
  end
  if type(v) == "function" then return v end
  if type(v) ~= "string" then
    argerr(fn, "value must be a field name or a function(key, value), got %s", type(v))
  end
  local path = split_path(v)
  if type(vtmpl) == "table" and get_path(vtmpl, path) == nil then
    argerr(fn, "map '%s' has no value field '%s' (fields: %s)", m.name, v, field_names(vtmpl))
  elseif vtmpl ~= nil and type(vtmpl) ~= "table" then
    argerr(fn, "map '%s' has scalar values: leave value out", m.name)
  end
  return path
end

local function check_ex(ex, fn)
  local st = dec.state(ex)
  if st == nil then argerr(fn, "bpfhost.exporter expected, got %s (call it as ex:%s)", type(ex), fn) end
  if not st then argerr(fn, "exporter is closed") end
end

local function check_common(ex, fn, kind, name, m, opts)
  check_ex(ex, fn)
  local d = defs_of(ex)
  if not valid_metric(name) then
    argerr(fn, "'%s' is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", tostring(name))
  end
  if not dec.is_map(m) then argerr(fn, "argument 2 must be a map, got %s", type(m)) end
  opts = check_opts(fn, kind, opts)
  if opts.help ~= nil and type(opts.help) ~= "string" then
    argerr(fn, "help must be a string, got %s", type(opts.help))
  end
  local names = { name }
  if kind == "histogram" then
    names = { name, name .. "_bucket", name .. "_sum", name .. "_count" }
  end
  for _, n in ipairs(names) do
    if d.names[n] then argerr(fn, "'%s' is already defined", n) end
  end
  return d, opts, names
end

local function add_def(d, names, def)
  for _, n in ipairs(names) do d.names[n] = def end
  d.list[#d.list + 1] = def
end

-- ex:counter(name, map, opts) / ex:gauge(name, map, opts)
local function scalar_metric(kind)
  local fn = kind
  return function(ex, name, m, opts)
    local d, o, names = check_common(ex, fn, kind, name, m, opts)
    local percpu = o.percpu
    if percpu ~= nil and percpu ~= "sum" and percpu ~= "split" then
      argerr(fn, "percpu must be \"sum\" or \"split\", got %s", tostring(percpu))
    end
    if percpu ~= nil and not is_percpu(m) then
      argerr(fn, "percpu: map '%s' (%s) is not per-CPU", m.name, tostring(m.type))
    end
    local split = percpu == "split"
    local labels = check_labels(fn, m, o, split and { cpu = true } or {})
    local def = {
      kind = kind, name = name, help = o.help, map = m, labels = labels,
      value = check_value(fn, m, o), percpu = is_percpu(m), split = split,
    }
    add_def(d, names, def)
    return ex
  end
end

methods.counter = scalar_metric("counter")
methods.gauge = scalar_metric("gauge")

-- Bucket bounds: slot i holds values below le(i) and at or above le(i - 1).
-- log2: slot = bit length of the value (0 for 0, 1 for 1, 2 for 2..3, ...,
-- i for 2^(i-1)..2^i - 1), so le(i) = 2^i; linear: slot = value // width,
-- le(i) = (i + 1) * width.
local function bucket_fn(fn, o)
  local b = o.buckets or "log2"
  if o.le ~= nil then
    if type(o.le) ~= "function" then argerr(fn, "le must be a function(slot), got %s", type(o.le)) end
    if o.buckets ~= nil then argerr(fn, "give buckets or le, not both") end
    return o.le, "custom"
  end
  if b == "log2" then
    if o.width ~= nil then argerr(fn, "width is for buckets = \"linear\"") end
    return function(i) return 2 ^ i end, b
  elseif b == "linear" then
    local w = o.width
    if type(w) ~= "number" or w <= 0 or w ~= w or w == huge then
      argerr(fn, "buckets = \"linear\" needs width, a number > 0")
    end
    return function(i) return (i + 1) * w end, b
  end
  argerr(fn, "buckets must be \"log2\" or \"linear\" (or give le = function(slot)), got %s",
    tostring(b))
end

-- ex:histogram(name, map, opts)
function methods.histogram(ex, name, m, opts)
  local fn = "histogram"
  local d, o, names = check_common(ex, fn, "histogram", name, m, opts)
  local le, btype = bucket_fn(fn, o)
  local ktmpl = template(m, "key")
  local slot = o.slot
  if type(ktmpl) == "table" then
    slot = slot or "slot"
    if type(slot) ~= "string" then argerr(fn, "slot must be a key field name, got %s", type(slot)) end
    if get_path(ktmpl, split_path(slot)) == nil then
      argerr(fn, "map '%s' has no key field '%s' for the slot (fields: %s); name it with slot =",
        m.name, slot, field_names(ktmpl))
    end
  elseif slot ~= nil then
    argerr(fn, "slot: map '%s' has a scalar key, which is the slot itself", m.name)
  elseif o.labels ~= nil and #o.labels > 0 then
    argerr(fn, "labels: map '%s' has a scalar key (the slot): it has no label fields", m.name)
  end
  local labels = check_labels(fn, m, o, { le = true }, slot)
  local scale = o.scale
  if scale ~= nil and (type(scale) ~= "number" or scale <= 0 or scale ~= scale or scale == huge) then
    argerr(fn, "scale must be a number > 0, got %s", tostring(scale))
  end
  local max_slot = o.max_slot
  if max_slot ~= nil and (type(max_slot) ~= "number" or max_slot < 0 or max_slot > 4096
      or max_slot ~= floor(max_slot)) then
    argerr(fn, "max_slot must be an integer 0..4096")
  end
  local sum = o.sum
  if sum ~= nil and not dec.is_map(sum) then
    argerr(fn, "sum must be a map (keyed by the label fields, values: the total of the "
      .. "observed values), got %s", type(sum))
  end
  local sum_labels
  if sum then sum_labels = check_labels(fn, sum, o, { le = true }) end
  local def = {
    kind = "histogram", name = name, help = o.help, map = m, labels = labels,
    value = check_value(fn, m, o), percpu = is_percpu(m), le = le, btype = btype,
    slot = slot and split_path(slot), scale = scale or 1, max_slot = max_slot or 255, seen = -1,
    sum = sum, sum_labels = sum_labels, sum_percpu = sum and is_percpu(sum),
  }
  -- the bounds must grow with the slot, or Prometheus refuses the histogram
  for i = 1, 8 do
    local a, b = le(i - 1), le(i)
    if type(a) ~= "number" or type(b) ~= "number" or not (b > a) then
      argerr(fn, "le(slot) must give increasing numbers (le(%d) = %s, le(%d) = %s)", i - 1,
        tostring(a), i, tostring(b))
    end
  end
  add_def(d, names, def)
  return ex
end

-- ---------------------------------------------------------------------------
-- -- Rendering ---------------------------------------------------------------

local function default_decode(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "table" then return nil end
  return fmtnum(v)
end

-- Label i of key k, decoded and escaped.
local function label_value(l, k, ctx)
  local v
  if l.field then v = k[l.field] elseif l.path then v = get_path(k, l.path) else v = k end
  local s
  if l.decode then s = l.decode(v, ctx) else s = default_decode(v) end
  if s == nil then
    error(format("exporter: label '%s' of %s: a %s is not a label value; give it a decoder",
      l.name, ctx.metric, type(v)), 0)
  end
  return escape(s)
end

-- The inner label text of key k: 'a="x",b="y"' ('' without labels), made
-- in one concatenation for up to three labels (the common cases).
local function label_text(labels, k, ctx, buf)
  local n = #labels
  if n == 0 then return "" end
  local l1 = labels[1]
  if n == 1 then return l1.pre .. label_value(l1, k, ctx) .. '"' end
  local l2 = labels[2]
  if n == 2 then
    return l1.pre .. label_value(l1, k, ctx) .. l2.pre .. label_value(l2, k, ctx) .. '"'
  end
  local l3 = labels[3]
  if n == 3 then
    return l1.pre .. label_value(l1, k, ctx) .. l2.pre .. label_value(l2, k, ctx) .. l3.pre
      .. label_value(l3, k, ctx) .. '"'
  end
  for i = 1, n do buf[i] = labels[i].pre .. label_value(labels[i], k, ctx) end
  return concat(buf, "", 1, n) .. '"'
end

-- The number a map value stands for (nil: skip the entry).
local function value_of(def, k, v)
  local vf = def.value
  if vf == nil then return v end
  if type(vf) == "function" then return vf(k, v) end
  return get_path(v, vf)
end

local sum_percpu = M.sum

-- Add x to acc[lbl], keeping the order in which series first appeared.
local function accumulate(acc, order, lbl, x)
  local cur = acc[lbl]
  if cur == nil then
    order[#order + 1] = lbl
    acc[lbl] = x
  else
    acc[lbl] = cur + x
  end
end

local function check_num(def, x)
  local t = type(x)
  if t == "number" or t == "cdata" then return x end
  if t == "boolean" then return x and 1 or 0 end
  error(format("exporter: %s: a value is a %s, not a number", def.name, t), 0)
end

local function header(out, def)
  local help = def.help or ("%s from map '%s'"):format(def.kind, def.map.name)
  out[#out + 1] = "# HELP " .. def.name .. " " .. gsub((gsub(help, "\\", "\\\\")), "\n", "\\n")
    .. "\n"
  out[#out + 1] = "# TYPE " .. def.name .. " " .. def.kind .. "\n"
end

local function render_scalar(def, out, ctx)
  local acc, order, buf = {}, {}, {}
  local labels, split = def.labels, def.split
  local pace = ctx.pace
  for k, v in def.map:iterate() do
    if pace then pace() end
    local lbl = label_text(labels, k, ctx, buf)
    if split then
      for cpu = 1, #v do
        local x = value_of(def, k, v[cpu])
        if x ~= nil then
          local l = lbl == "" and format('cpu="%d"', cpu - 1) or format('%s,cpu="%d"', lbl, cpu - 1)
          accumulate(acc, order, l, check_num(def, x))
        end
      end
    else
      if def.percpu then v = sum_percpu(v) end
      local x = value_of(def, k, v)
      if x ~= nil then accumulate(acc, order, lbl, check_num(def, x)) end
    end
  end
  header(out, def)
  -- pieces, not lines: table.concat copies them once
  local name, nameb = def.name, def.name .. "{"
  local o = #out
  for i = 1, #order do
    if pace then pace() end
    local lbl = order[i]
    if lbl == "" then
      out[o + 1], out[o + 2], out[o + 3], out[o + 4] = name, " ", fmtnum(acc[lbl]), "\n"
    else
      out[o + 1], out[o + 2], out[o + 3], out[o + 4] = nameb, lbl, "} ", fmtnum(acc[lbl])
      out[o + 5] = "\n"
      o = o + 1
    end
    o = o + 4
  end
end

local function fmtle(x)
  if x == huge then return "+Inf" end
  return fmtnum(x)
end

local function render_histogram(def, out, ctx)
  local groups, order, buf = {}, {}, {}
  local labels, slotp, max_slot = def.labels, def.slot, def.max_slot
  local seen = def.seen
  local pace = ctx.pace
  for k, v in def.map:iterate() do
    if pace then pace() end
    local s, lbl
    if slotp then
      s = tonum(get_path(k, slotp))
      lbl = label_text(labels, k, ctx, buf)
    else
      s = tonum(k)
      lbl = ""
    end
    if def.percpu then v = sum_percpu(v) end
    local c = value_of(def, k, v)
    if c ~= nil then
      c = tonum(check_num(def, c))
      local g = groups[lbl]
      if not g then
        g = { counts = {}, total = 0 }
        groups[lbl] = g
        order[#order + 1] = lbl
      end
      g.total = g.total + c
      if s and s >= 0 and s == floor(s) and s <= max_slot then
        g.counts[s] = (g.counts[s] or 0) + c
        if c ~= 0 and s > seen then seen = s end
      end
    end
  end
  -- every series of the family gets the same buckets, and they never shrink
  def.seen = seen
  local scale, le = def.scale, def.le
  if def.sum then
    for k, v in def.sum:iterate() do
      if pace then pace() end
      local lbl = label_text(def.sum_labels, k, ctx, buf)
      local g = groups[lbl]
      if g then
        if def.sum_percpu then v = sum_percpu(v) end
        g.sum = (g.sum or 0) + tonum(check_num(def, v)) * scale
      end
    end
  end
  header(out, def)
  local name = def.name
  -- per slot: its bound (for the estimate) and 'le="..."} ' (pieces, not lines)
  local bounds, lepart = {}, {}
  for i = 0, seen do
    bounds[i] = le(i)
    lepart[i] = 'le="' .. fmtle(bounds[i] * scale) .. '"} '
  end
  local o = #out
  for i = 1, #order do
    if pace then pace() end
    local lbl = order[i]
    local g = groups[lbl]
    local pre = lbl == "" and name .. "_bucket{" or name .. "_bucket{" .. lbl .. ","
    local cum, est, counts = 0, 0, g.counts
    local lo = 0
    for s = 0, seen do
      local c = counts[s]
      if c then
        cum = cum + c
        est = est + c * (lo + bounds[s]) / 2
      end
      lo = bounds[s]
      out[o + 1], out[o + 2], out[o + 3], out[o + 4] = pre, lepart[s], fmtnum(cum), "\n"
      o = o + 4
    end
    local tail = lbl == "" and " " or "{" .. lbl .. "} "
    local total = fmtnum(g.total)
    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = pre, 'le="+Inf"} ', total, "\n"
    out[o + 5], out[o + 6], out[o + 7], out[o + 8] = name .. "_sum", tail, fmtnum(g.sum or est * scale), "\n"
    out[o + 9], out[o + 10], out[o + 11], out[o + 12] = name .. "_count", tail, total, "\n"
    o = o + 12
  end
end

-- A pace() for a render run as a coroutine: every so many entries it looks
-- at the clock, and once the render has run for slice seconds it yields, so
-- that the loop serving the exporter gets its time back (exporter.c resumes
-- it on the next round).
local yield = coroutine.yield
local function pacer(slice)
  local n, deadline = 0, clock() + slice
  return function()
    n = n + 1
    if n % 64 == 0 and clock() >= deadline then
      yield()
      deadline = clock() + slice
    end
  end
end

local function render(ex, pace)
  local d = defs_of(ex)
  local out = {}
  local ctx = { ifname = {}, pace = pace }
  for _, def in ipairs(d.list) do
    ctx.metric = def.name
    if def.kind == "histogram" then
      render_histogram(def, out, ctx)
    else
      render_scalar(def, out, ctx)
    end
  end
  return concat(out)
end

-- ex:render() -> the exposition text of every metric, read from the maps now.
function methods.render(ex)
  check_ex(ex, "render")
  return render(ex, nil)
end

-- How exporter.c resumes a paced render (see there why not lua_resume).
methods._resume = coroutine.resume

-- The message handler of a paced render: the error as a string (error
-- objects by __tostring), with the render's traceback.
local traceback = debug.traceback
local function render_error(e)
  if type(e) ~= "string" then
    local mt = getmetatable(e)
    e = mt and mt.__tostring and tostring(e) or "(error object)"
  end
  return traceback(e, 2)
end

-- What exporter.c runs in a thread of its own for a scrape: the same
-- rendering, in slices of at most slice seconds; true and the text, or
-- false and the error with its traceback. The error is caught in the thread:
-- LuaJIT 2.1-beta3 crashed now and then in the collector after a render's
-- error left the thread through lua_resume with traces compiled (the
-- exporter spec, about one run in five).
function methods._render_paced(ex, slice)
  check_ex(ex, "_render_paced")
  return xpcall(render, render_error, ex, pacer(slice))
end

-- ex:metrics() -> the names of the metric families, in definition order.
function methods.metrics(ex)
  local names = {}
  for i, def in ipairs(defs_of(ex).list) do names[i] = def.name end
  return names
end

return { decoders = decoders, fmtnum = fmtnum }
