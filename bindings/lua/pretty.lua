-- bpfhost.pretty: the pretty printer behind bpf.pp and the REPL, loaded on
-- first use (bpfhost.pp, which the module opens with, is only its stub).
--
-- format(v [, opts]) gives the string; bpf.pp(v [, opts]) writes it to
-- stdout. Tables print with sorted keys and nesting, cycles marked; byte
-- strings that are not printable as hex; handles as one-line summaries; map
-- dumps and bpf.maps()/programs()/links() lists as aligned columns,
-- truncated with a count.
local M = ...

local type, tostring, pairs, next, rawget, getmetatable, select, pcall =
  type, tostring, pairs, next, rawget, getmetatable, select, pcall
local fmt, rep, concat, sort, floor, huge = string.format, string.rep, table.concat,
  table.sort, math.floor, math.huge

local pp = {}

local defaults = { width = 80, rows = 50, depth = 8, items = 200 }
local option_names = { width = true, rows = true, depth = true, items = true }

local keywords = {}
for w in ("and break do else elseif end false for function goto if in local nil not or repeat "
  .. "return then true until while"):gmatch("%S+") do keywords[w] = true end
pp.keywords = keywords

local function mtname(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__name") or nil
end

-- ---------------------------------------------------------------------------
-- Scalars

-- Printable: ASCII text (tab and newlines allowed) or valid UTF-8.
local function printable(s)
  if s:find("[%z\1-\8\11\12\14-\31\127]") then return false end
  if not s:find("[\128-\255]") then return true end
  local t = s:gsub("[\194-\223][\128-\191]", "")
    :gsub("[\224-\239][\128-\191][\128-\191]", "")
    :gsub("[\240-\244][\128-\191][\128-\191][\128-\191]", "")
  return not t:find("[\128-\255]")
end
pp.printable = printable

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r" }

local function quote(s)
  return '"' .. s:gsub('["\\\n\t\r]', escapes) .. '"'
end

-- <0a 00 00 01>; long ones cut after 32 bytes, with the length.
local function hex(s)
  local n, cut = #s, #s
  if n > 48 then cut = 32 end
  local b = {}
  for i = 1, cut do b[i] = fmt("%02x", s:byte(i)) end
  if cut < n then
    return "<" .. concat(b, " ") .. fmt(" ... (%d bytes)>", n)
  end
  return "<" .. concat(b, " ") .. ">"
end
pp.hex = hex

local mtype = math.type -- Lua 5.4

local function number(n)
  if mtype and mtype(n) == "integer" then return fmt("%d", n) end
  if n ~= n then return "nan" end
  if n == huge then return "inf" end
  if n == -huge then return "-inf" end
  if n == floor(n) and n > -2^63 and n < 2^63 then return fmt("%d", n) end
  local s = fmt("%.14g", n)
  if tonumber(s) ~= n then s = fmt("%.17g", n) end
  return s
end

local function cdata(v)
  local s = tostring(v)
  -- boxed 64-bit integers from the codec: 18446744073709551615ULL
  return s:match("^(%-?%d+)U?LL$") or s
end

-- A map handle in one line: map 'counts' hash u32→struct stats 12/1024
local function typename(T, size)
  if T == nil then return size and (size .. "B") or "?" end
  local ok, name = pcall(function() return T.name end)
  if not ok or type(name) ~= "string" then return size and (size .. "B") or "?" end
  local raw = name:match("^(%d+) bytes$")
  return raw and (raw .. "B") or name
end

local function map_summary(m)
  local ok, s = pcall(tostring, m)
  s = ok and s or "map"
  if s:find("%(closed%)") or s:find("%(object closed%)") or s:find("%(not loaded%)") then
    return s
  end
  local ok2, line = pcall(function()
    local kt = m.key_type and m:key_type()
    local vt = m.value_type and m:value_type()
    local size
    if type(m.count) == "function" then
      local okc, n = pcall(m.count, m)
      if okc and n then size = number(tonumber(n) or 0) .. "/" .. number(m.max_entries) end
    end
    return fmt("map '%s' %s %s→%s %s", m.name, m.type, typename(kt, m.key_size),
      typename(vt, m.value_size), size or ("max " .. number(m.max_entries)))
  end)
  return ok2 and line or s
end
pp.map_summary = map_summary

local scalar -- forward

local function handle(v, top)
  local name = mtname(v)
  if name == "bpfhost.map" then return map_summary(v) end
  if name == "bpfhost.type" then
    if top then return tostring(v) end
    local ok, n = pcall(function() return v.name end)
    return "type " .. (ok and n or "?")
  end
  local ok, s = pcall(tostring, v)
  s = ok and s or fmt("(%s)", type(v))
  if top and name == "bpfhost.object" then
    -- what it holds, by name
    local lines = { s }
    for _, what in ipairs{ "maps", "programs" } do
      local okm, t = pcall(function() return v[what](v) end)
      if okm and type(t) == "table" then
        local names = {}
        for k in pairs(t) do names[#names + 1] = tostring(k) end
        sort(names)
        if #names > 0 then lines[#lines + 1] = fmt("  %s: %s", what, concat(names, " ")) end
      end
    end
    return concat(lines, "\n")
  end
  return s
end

function scalar(v, top)
  local t = type(v)
  if t == "string" then return printable(v) and quote(v) or hex(v) end
  if t == "number" then return number(v) end
  if t == "cdata" then return cdata(v) end
  if t == "userdata" then return handle(v, top) end
  local ok, str = pcall(tostring, v)
  return ok and type(str) == "string" and str or ("(" .. t .. ")")
end

-- ---------------------------------------------------------------------------
-- C struct fields, from a Type's declaration (tostring(T))

-- The member name in one declaration line: "u64 packets;", "char comm[16];",
-- "__u8 cloned: 1;", "void (*destructor)(struct sk_buff *);".
local function member_name(line)
  local d = line:gsub("^%s+", ""):gsub(";%s*$", "")
  local fp = d:match("%(%s*%*%s*([%a_][%w_]*)%s*%)")
  if fp then return fp end
  d = d:gsub("%s*:%s*%d+%s*$", ""):gsub("%s*%b[]", "")
  return d:match("([%a_][%w_]*)%s*$")
end

-- Ordered member names of a struct or union Type (anonymous members
-- flattened, as the codec does), or nil for other types.
function pp.fields(T)
  if T == nil then return nil end
  local ok, decl = pcall(tostring, T)
  if not ok or type(decl) ~= "string" or not decl:find("{", 1, true)
    or decl:match("^%s*enum[%s{]") then
    return nil
  end
  local lines = {}
  for l in decl:gmatch("[^\n]+") do lines[#lines + 1] = l end
  local i = 1
  while i <= #lines and not lines[i]:find("{", 1, true) do i = i + 1 end
  local function block()
    -- lines[i] opens a block; returns its fields and the name after its "}"
    local out = {}
    i = i + 1
    while i <= #lines do
      local l = lines[i]
      local close = l:match("^%s*}%s*([%w_]*)")
      if close then
        return out, close ~= "" and close or nil
      elseif l:find("{%s*$") then
        local sub, name = block()
        if name then
          out[#out + 1] = name
        else
          for _, f in ipairs(sub) do out[#out + 1] = f end
        end
      else
        local n = member_name(l)
        if n then out[#out + 1] = n end
      end
      i = i + 1
    end
    return out
  end
  if i > #lines then return nil end
  return (block())
end

-- ---------------------------------------------------------------------------
-- Tables

local rank = { number = 1, string = 2, boolean = 3 }

-- tostring that never raises (a __tostring may), for ordering only
local function safestr(v)
  local ok, s = pcall(tostring, v)
  return ok and type(s) == "string" and s or ""
end

local function keyless(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (rank[ta] or 4) < (rank[tb] or 4) end
  if ta == "number" or ta == "string" then return a < b end
  return safestr(a) < safestr(b)
end

local cell -- forward: a value on one line

local function keystr(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not keywords[k] then return k end
  return "[" .. cell(k) .. "]"
end

local columns -- forward: aligned columns for dumps and info lists
local special -- forward: recognises dumps and info lists

local function tbl(v, st, indent, col)
  local mt = getmetatable(v)
  if type(mt) == "table" and rawget(mt, "__tostring") then
    local ok, s = pcall(tostring, v)
    if ok and type(s) == "string" then return s end
  end
  if st.path[v] then return "<cycle>" end
  if st.level >= st.depth then return "{...}" end
  local sp = special(v, st)
  if sp then return sp end
  st.path[v] = true
  st.level = st.level + 1
  local n = 0
  while rawget(v, n + 1) ~= nil do n = n + 1 end
  local keys = {}
  for k in next, v do
    if not (type(k) == "number" and k >= 1 and k <= n and k == floor(k)) then
      keys[#keys + 1] = k
    end
  end
  sort(keys, keyless)
  local items, total, short = {}, n + #keys, true
  local limit = st.items
  for i = 1, n do
    if #items >= limit then break end
    local s = st.fmt(rawget(v, i), st, indent + 2, indent + 2)
    if #s > 24 or s:find("\n", 1, true) then short = false end
    items[#items + 1] = s
  end
  for _, k in ipairs(keys) do
    if #items >= limit then break end
    local ks = keystr(k) .. " = "
    items[#items + 1] = ks .. st.fmt(rawget(v, k), st, indent + 2, indent + 2 + #ks)
    short = false
  end
  st.path[v] = nil
  st.level = st.level - 1
  if total > #items then items[#items + 1] = fmt("... (%d more)", total - #items) end
  if #items == 0 then return "{}" end
  local one = "{ " .. concat(items, ", ") .. " }"
  if not one:find("\n", 1, true) and col + #one <= st.width then return one end
  local pad = rep(" ", indent + 2)
  if short then
    -- a long array of short scalars: several to a line
    local lines, line = {}, pad
    for i, s in ipairs(items) do
      local piece = s .. (i < #items and "," or "")
      if #line > #pad and #line + 1 + #piece > st.width then
        lines[#lines + 1] = line
        line = pad .. piece
      else
        line = line .. (#line > #pad and " " or "") .. piece
      end
    end
    lines[#lines + 1] = line
    return "{\n" .. concat(lines, "\n") .. "\n" .. rep(" ", indent) .. "}"
  end
  return "{\n" .. pad .. concat(items, ",\n" .. pad) .. ",\n" .. rep(" ", indent) .. "}"
end

local function any(v, st, indent, col)
  if type(v) == "table" then return tbl(v, st, indent, col) end
  return scalar(v, st.level == 0 and indent == 0)
end

-- One cell of a column: scalars as usual, tables on one line.
function cell(v)
  if type(v) ~= "table" then return scalar(v) end
  local sub = { path = {}, level = 0, depth = 3, items = 16, width = huge, fmt = any }
  return (tbl(v, sub, 0, 0):gsub("\n%s*", " "))
end

-- ---------------------------------------------------------------------------
-- Columns

-- A line of cells, numbers right-aligned; groups separated by " | ".
function columns(header, rows, groups, footer)
  local w, numeric = {}, {}
  for c = 1, #header do
    w[c] = #header[c]
    numeric[c] = true
  end
  for _, r in ipairs(rows) do
    for c = 1, #header do
      local s = r[c] or ""
      local len = #s:gsub("[\128-\191]", "")
      if len > w[c] then w[c] = len end
      if s ~= "" and not s:match("^%-?[%d%.]+$") and not s:match("^%d+/%d+$") then
        numeric[c] = false
      end
    end
  end
  local function line(cells)
    local out = {}
    for c = 1, #header do
      local s = cells[c] or ""
      local padn = w[c] - #s:gsub("[\128-\191]", "")
      local sep = c == 1 and "" or (groups and groups[c] and " | " or "  ")
      if numeric[c] then
        out[#out + 1] = sep .. rep(" ", padn) .. s
      elseif c == #header then
        out[#out + 1] = sep .. s
      else
        out[#out + 1] = sep .. s .. rep(" ", padn)
      end
    end
    return (concat(out):gsub("%s+$", ""))
  end
  local lines = { line(header) }
  for _, r in ipairs(rows) do lines[#lines + 1] = line(r) end
  if footer then lines[#lines + 1] = footer end
  return concat(lines, "\n")
end
pp.columns = columns

local function sum(vals)
  if M.sum then
    local ok, s = pcall(M.sum, vals)
    if ok then return s end
  end
  return nil
end

local function entry_order(a, b)
  local ka, kb = a.key, b.key
  if type(ka) == type(kb) and (type(ka) == "number" or type(ka) == "string") then
    return ka < kb
  end
  if type(ka) == "cdata" and type(kb) == "cdata" then return ka < kb end
  return keyless(cell(ka), cell(kb))
end

-- Field names for the cells of a key or value: the Type's order, else sorted.
local function split_fields(sample, T)
  if type(sample) ~= "table" then return nil end
  local f = pp.fields(T)
  if f then
    local known, out = {}, {}
    for _, n in ipairs(f) do
      if sample[n] ~= nil and not known[n] then out[#out + 1] = n; known[n] = true end
    end
    for k in pairs(sample) do
      if type(k) == "string" and not known[k] then out[#out + 1] = k end
    end
    return out
  end
  local out = {}
  for k in pairs(sample) do if type(k) == "string" then out[#out + 1] = k end end
  if #out == 0 then return nil end
  sort(out)
  return out
end

-- entries: a list of {key =, value =}. info: map (a handle, for types and
-- per-CPU), total (entries that exist, when more than listed).
local function dump(entries, info, st)
  info = info or {}
  local m = info.map
  local kt, vt, percpu
  if m then
    pcall(function()
      kt = m:key_type()
      vt = m:value_type()
      percpu = tostring(m.type):find("percpu", 1, true) ~= nil
    end)
  end
  local list = {}
  for i = 1, #entries do list[i] = entries[i] end
  local ok = pcall(sort, list, entry_order)
  if not ok then list = entries end
  local total = info.total or #list
  local shown = math.min(#list, st.rows)
  if #list == 0 then
    return (m and ("map '" .. tostring(m.name) .. "': ") or "") .. "no entries"
  end

  local first = list[1]
  local kf = split_fields(first.key, kt)
  local ncpu, vsample = nil, first.value
  if type(first.value) == "table" and (percpu or info.percpu) and rawget(first.value, 1) ~= nil then
    ncpu = #first.value
    vsample = first.value[1]
  end
  local vf = split_fields(vsample, vt)

  local header, groups = {}, {}
  if kf then for _, f in ipairs(kf) do header[#header + 1] = f end
  else header[1] = "key" end
  local nk = #header
  groups[nk + 1] = true
  if ncpu and not vf and ncpu <= 8 then
    for c = 0, ncpu - 1 do header[#header + 1] = "cpu" .. c end
    header[#header + 1] = "sum"
  elseif ncpu and not vf then
    header[#header + 1] = "sum"
    header[#header + 1] = "per CPU"
  elseif vf then
    for _, f in ipairs(vf) do header[#header + 1] = f end
  else
    header[#header + 1] = "value"
  end

  local rows = {}
  for i = 1, shown do
    local e, r = list[i], {}
    if kf then
      for _, f in ipairs(kf) do r[#r + 1] = cell(type(e.key) == "table" and e.key[f]) end
    else
      r[1] = cell(e.key)
    end
    local v = e.value
    if ncpu and type(v) == "table" then
      local s = sum(v)
      if vf then
        for _, f in ipairs(vf) do r[#r + 1] = cell(type(s) == "table" and s[f]) end
      elseif ncpu <= 8 then
        for c = 1, ncpu do r[#r + 1] = cell(v[c]) end
        r[#r + 1] = cell(s)
      else
        r[#r + 1] = cell(s)
        r[#r + 1] = cell(v)
      end
    elseif vf then
      for _, f in ipairs(vf) do r[#r + 1] = cell(type(v) == "table" and v[f]) end
    else
      r[#r + 1] = cell(v)
    end
    rows[i] = r
  end
  local foot
  if total > shown then
    foot = fmt("... %d more (%d entries; {rows = %d} shows all)", total - shown, total, total)
  else
    foot = fmt("%d %s", total, total == 1 and "entry" or "entries")
  end
  if ncpu and vf then foot = foot .. fmt("; values summed over %d CPUs", ncpu) end
  return columns(header, rows, groups, foot)
end

function pp.dump(entries, info, opts)
  return dump(entries, info, pp.state(opts))
end

-- ---------------------------------------------------------------------------
-- bpf.maps(), bpf.programs(), bpf.links(): like bpftool's show

local function size(n)
  n = tonumber(n)
  if not n then return "" end
  if n >= 1048576 then return fmt("%.1fM", n / 1048576):gsub("%.0M", "M") end
  if n >= 1024 then return fmt("%.1fK", n / 1024):gsub("%.0K", "K") end
  return fmt("%dB", n)
end

local function pins(p)
  if type(p) == "table" then return concat(p, " ") end
  return p and tostring(p) or ""
end

local function is_list_of(t, test)
  local n = #t
  if n == 0 or next(t, n > 0 and n or nil) ~= nil then return false end
  for i = 1, n do
    local e = rawget(t, i)
    if type(e) ~= "table" or getmetatable(e) or not test(e) then return false end
  end
  return true
end

local function info_kind(t)
  if is_list_of(t, function(e) return type(e.id) == "number" and e.max_entries ~= nil end) then
    return "map"
  end
  if is_list_of(t, function(e) return type(e.id) == "number" and e.prog_id ~= nil end) then
    return "link"
  end
  if is_list_of(t, function(e)
    return type(e.id) == "number" and (e.tag ~= nil or e.run_time_ns ~= nil)
  end) then
    return "prog"
  end
end

local function str(v) return v == nil and "" or tostring(v) end

function pp.maps(list)
  if #list == 0 then return "no maps" end
  local rows = {}
  local sorted = {}
  for i, e in ipairs(list) do sorted[i] = e end
  sort(sorted, function(a, b) return a.id < b.id end)
  local any_pin, any_mem = false, false
  for _, e in ipairs(sorted) do
    local k = e.key_type or e.key or (e.key_size and e.key_size .. "B")
    local v = e.value_type or e.value or (e.value_size and e.value_size .. "B")
    if type(k) ~= "string" then k = typename(k, e.key_size) end
    if type(v) ~= "string" then v = typename(v, e.value_size) end
    local n = e.entries or e.count
    local r = { str(e.id), str(e.type), str(e.name), str(k) .. "→" .. str(v),
      (n and (number(n) .. "/") or "") .. str(e.max_entries), size(e.memlock or e.bytes_memlock),
      pins(e.pinned or e.pins) }
    if r[6] ~= "" then any_mem = true end
    if r[7] ~= "" then any_pin = true end
    rows[#rows + 1] = r
  end
  local header = { "id", "type", "name", "key→value", "entries", "memlock", "pinned" }
  if not any_pin then header[7] = nil end
  if not any_mem and not any_pin then header[6] = nil end
  return columns(header, rows, nil, fmt("%d map%s", #rows, #rows == 1 and "" or "s"))
end

local function generic(list, pref, what)
  local sorted = {}
  for i, e in ipairs(list) do sorted[i] = e end
  sort(sorted, function(a, b) return a.id < b.id end)
  local cols, seen = {}, {}
  for _, c in ipairs(pref) do
    for _, e in ipairs(sorted) do
      if e[c] ~= nil then cols[#cols + 1] = c; seen[c] = true; break end
    end
  end
  local rows = {}
  for _, e in ipairs(sorted) do
    local r = {}
    for i, c in ipairs(cols) do
      local v = e[c]
      if c == "pinned" then
        r[i] = pins(v)
      elseif type(v) == "table" and #v > 0 and type(v[1]) ~= "table" then
        local parts = {}
        for j, x in ipairs(v) do parts[j] = tostring(x) end
        r[i] = concat(parts, ",")
      else
        r[i] = type(v) == "table" and cell(v) or str(v)
      end
    end
    rows[#rows + 1] = r
  end
  if #rows == 0 then return "no " .. what .. "s" end
  return columns(cols, rows, nil, fmt("%d %s%s", #rows, what, #rows == 1 and "" or "s"))
end

function pp.programs(list)
  return generic(list, { "id", "type", "name", "tag", "run_cnt", "run_time_ns",
    "xlated_len", "jited_len", "memlock", "map_ids", "pinned" }, "program")
end

function pp.links(list)
  return generic(list, { "id", "type", "prog_id", "attach_type", "target", "ifindex",
    "cgroup_id", "pinned" }, "link")
end

local by_name = {
  ["bpfhost.maplist"] = "map", ["bpfhost.proglist"] = "prog", ["bpfhost.linklist"] = "link",
  ["bpfhost.dump"] = "dump",
}

function special(v, st)
  local kind = by_name[mtname(v)] or info_kind(v)
  if kind == "dump" then
    local mt = getmetatable(v)
    local m = type(mt) == "table" and rawget(mt, "__map") or nil
    return dump(v, m and { map = m } or nil, st)
  end
  if kind == "map" then return pp.maps(v) end
  if kind == "prog" then return pp.programs(v) end
  if kind == "link" then return pp.links(v) end
  if is_list_of(v, function(e)
    local n = 0
    for _ in next, e do n = n + 1 end
    return n == 2 and e.key ~= nil and e.value ~= nil
  end) then
    return dump(v, nil, st)
  end
end

-- ---------------------------------------------------------------------------
-- Entry points

function pp.state(opts)
  local st = { path = {}, level = 0, fmt = any }
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("pp: opts must be a table, got " .. type(opts), 3)
    end
    for k in pairs(opts) do
      if not option_names[k] then
        error(fmt("pp: unknown option '%s' (known: depth, items, rows, width)", tostring(k)), 3)
      end
    end
  end
  for k, d in pairs(defaults) do
    local x = opts and opts[k]
    if x ~= nil and (type(x) ~= "number" or x < 1 or x ~= floor(x)) then
      error(fmt("pp: %s must be a positive integer, got %s", k, tostring(x)), 3)
    end
    st[k] = x or d
  end
  return st
end

function pp.format(v, opts)
  local st = pp.state(opts)
  return any(v, st, 0, 0)
end

function pp.print(v, opts)
  io.stdout:write(pp.format(v, opts), "\n")
end

return pp
