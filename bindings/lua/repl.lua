-- bpfhost.repl: what the REPL does in Lua: completion, printing results, help.
--
-- complete(text) -> word, candidates[, display]: text is the line up to the
-- cursor; word is its tail being completed, each candidate replaces it.
-- show(width, source, ...) -> the string that prints the results of a statement.
-- help([x]) prints the API, or what x is and what it does.
local M = ...

local type, next, rawget, getmetatable, pcall, tostring, select =
  type, next, rawget, getmetatable, pcall, tostring, select
local fmt, concat, sort = string.format, table.concat, table.sort

local pp = require "bpfhost.pretty"
local R = {}

local function mtname(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__name") or nil
end

-- ---------------------------------------------------------------------------
-- Walking values without running user code

-- Properties served by a C __index function, beside its __methods.
local props = {
  ["bpfhost.prog"] = { "name", "section", "type", "fd", "autoload", "id" },
  ["bpfhost.link"] = { "program", "kind", "fd", "attached" },
  ["bpfhost.type"] = { "name", "size" },
}

-- v[k] where that runs no user code: raw tables, __index tables, and the
-- module's own C __index functions (bpfhost.* userdata, never a proxy,
-- whose reads are map lookups).
local function get(v, k)
  local depth = 0
  while v ~= nil and depth < 8 do
    local t = type(v)
    if t == "table" then
      local x = rawget(v, k)
      if x ~= nil then return x end
    end
    local mt = getmetatable(v)
    if type(mt) ~= "table" then return nil end
    local idx = rawget(mt, "__index")
    if type(idx) == "function" then
      local name = rawget(mt, "__name")
      if t == "userdata" and type(name) == "string" and name:match("^bpfhost%.")
        and name ~= "bpfhost.proxy" then
        local ok, x = pcall(idx, v, k)
        return ok and x or nil
      end
      return nil
    end
    v = idx
    depth = depth + 1
  end
end

-- "a.b.c" from the globals; nil when any step is not there.
local function resolve(chain)
  local v = _G
  for seg in (chain .. "."):gmatch("([^%.]*)%.") do
    if not seg:match("^[%a_][%w_]*$") then return nil end
    v = get(v, seg)
    if v == nil then return nil end
  end
  return v
end

-- Names reachable with v.name (methods_only: v:name()).
local function names_of(v, methods_only)
  local out, seen = {}, {}
  local function add(k, val)
    if type(k) == "string" and not seen[k] and k:match("^[%a_][%w_]*$")
      and (not methods_only or type(val) == "function") then
      seen[k] = true
      out[#out + 1] = k
    end
  end
  local depth = 0
  while v ~= nil and depth < 8 do
    if type(v) == "table" then
      for k, val in next, v do add(k, val) end
    end
    local mt = getmetatable(v)
    if type(mt) ~= "table" then break end
    local methods = rawget(mt, "__methods")
    if type(methods) == "table" then
      for k, val in next, methods do add(k, val) end
    end
    local p = props[rawget(mt, "__name")]
    if p and not methods_only then
      for _, k in ipairs(p) do add(k, true) end
    end
    local idx = rawget(mt, "__index")
    if type(idx) ~= "table" then break end
    v = idx
    depth = depth + 1
  end
  return out
end

-- ---------------------------------------------------------------------------
-- Completion

local function filter(names, word, suffix)
  local out = {}
  local hidden = word:sub(1, 1) ~= "_"
  for _, n in ipairs(names) do
    if n:sub(1, #word) == word and not (hidden and n:sub(1, 1) == "_") then
      out[#out + 1] = n
    end
  end
  sort(out)
  local dedup, display = {}, {}
  for _, n in ipairs(out) do
    if dedup[#dedup] ~= n .. (suffix or "") then
      dedup[#dedup + 1] = n .. (suffix or "")
      display[#display + 1] = n
    end
  end
  return dedup, display
end

-- Where the line stands: "code", "string" (with the position of the open
-- quote) or "comment"; and the brackets still open, innermost last.
local function scan(text)
  local i, n = 1, #text
  local q, qpos
  local stack = {}
  while i <= n do
    local c = text:sub(i, i)
    if q then
      if c == "\\" then
        i = i + 1
      elseif c == q then
        q = nil
      end
    elseif c == '"' or c == "'" then
      q, qpos = c, i
    elseif c == "-" and text:sub(i + 1, i + 1) == "-" then
      return "comment"
    elseif c == "[" and text:match("^%[=*%[", i) then
      local eq = text:match("^%[(=*)%[", i)
      local e = text:find("]" .. eq .. "]", i, true)
      if not e then return "comment" end
      i = e + #eq + 1
    elseif c == "(" or c == "{" or c == "[" then
      stack[#stack + 1] = { c = c, pos = i }
    elseif c == ")" or c == "}" or c == "]" then
      stack[#stack] = nil
    end
    i = i + 1
  end
  if q then return "string", qpos, stack end
  return "code", nil, stack
end

local function keys_of(t)
  local out = {}
  if type(t) == "table" then
    for k in pairs(t) do if type(k) == "string" then out[#out + 1] = k end end
  end
  return out
end

-- Names that fit inside the string argument of the call before it.
local function string_names(before)
  before = before:gsub("%s+$", "")
  local chain, method = before:match("([%a_][%w_%.]*):([%a_][%w_]*)%s*%($")
  if chain then
    local obj = resolve(chain)
    if obj == nil then return nil end
    if method == "get_map" then
      local ok, t = pcall(function() return obj:maps() end)
      return ok and keys_of(t) or nil
    elseif method == "program" then
      local ok, t = pcall(function() return obj:programs() end)
      return ok and keys_of(t) or nil
    end
    return nil
  end
  local fchain, fname = before:match("([%a_][%w_%.]*)%.([%a_][%w_]*)%s*%($")
  if fchain and resolve(fchain) == M and fname == "map_by_name" and M.maps then
    local ok, list = pcall(M.maps)
    if not ok then return nil end
    local out = {}
    for _, e in ipairs(list) do
      if type(e.name) == "string" and e.name ~= "" then out[#out + 1] = e.name end
    end
    return out
  end
  return nil
end

-- The Type a table constructor stands for: m:update({...}, {...}) and friends.
local key_methods = { lookup = 1, delete = 1, lookup_and_delete = 1, update = 1 }
local value_methods = { push = 1, contains = 1 }

local function ctor_type(text, stack)
  local top = stack[#stack]
  if not top or top.c ~= "{" then return nil end
  local call = stack[#stack - 1]
  if not call or call.c ~= "(" then return nil end
  local callee = text:sub(1, call.pos - 1):match("([%a_][%w_%.:]*)%s*$")
  if not callee then return nil end
  local chain, method = callee:match("^(.-):([%a_][%w_]*)$")
  if not chain then return nil end
  local obj = resolve(chain)
  if obj == nil then return nil end
  -- which argument the constructor is: commas at depth 0 before it
  local args = text:sub(call.pos + 1, top.pos - 1)
    :gsub("%b()", ""):gsub("%b{}", ""):gsub("%b[]", ""):gsub('"[^"]*"', ""):gsub("'[^']*'", "")
  local argn = select(2, args:gsub(",", "")) + 1
  local ok, T = pcall(function()
    if mtname(obj) == "bpfhost.type" and method == "encode" and argn == 1 then return obj end
    if mtname(obj) ~= "bpfhost.map" then return nil end
    if key_methods[method] and argn == 1 then return obj:key_type() end
    if method == "update" and argn == 2 then return obj:value_type() end
    if value_methods[method] and argn == 1 then return obj:value_type() end
  end)
  return ok and T or nil, top.pos
end

local result_methods = { lookup = true, lookup_and_delete = true, peek = true, pop = true }

function R.complete(text)
  local state, qpos, stack = scan(text)
  if state == "comment" then return "", {} end
  if state == "string" then
    local word = text:sub(qpos + 1)
    local names = string_names(text:sub(1, qpos - 1))
    if not names then return word, {} end
    return word, filter(names, word, text:sub(qpos, qpos))
  end

  local word = text:match("[%a_][%w_]*$") or ""
  local pre = text:sub(1, #text - #word)

  -- a field name in a constructor for a struct key or value
  if pre:match("[{,]%s*$") then
    local T, open = ctor_type(text, stack)
    local fields = T and pp.fields(T)
    if fields then
      local given = {}
      for k in text:sub(open + 1):gmatch("([%a_][%w_]*)%s*=") do given[k] = true end
      local left = {}
      for _, f in ipairs(fields) do if not given[f] then left[#left + 1] = f end end
      return word, filter(left, word, " = ")
    end
  end

  -- the struct fields of what m:lookup(...) returns
  local chain, method, sep = pre:match("([%a_][%w_%.]*):([%a_][%w_]*)%s*%b()%s*([%.:])$")
  if chain and sep == "." and result_methods[method] then
    local obj = resolve(chain)
    if mtname(obj) == "bpfhost.map" then
      local ok, T = pcall(function() return obj:value_type() end)
      local fields = ok and pp.fields(T)
      if fields then return word, filter(fields, word) end
    end
    return word, {}
  end

  local base, s = pre:match("([%a_][%w_%.]*)([%.:])$")
  if base then
    if pre:sub(1, #pre - #base - 1):match("[%w_%)%]%.:\"']$") then return word, {} end
    local v = resolve(base)
    if v == nil then return word, {} end
    return word, filter(names_of(v, s == ":"), word)
  end
  if pre:match("[%.:%)%]\"']$") or pre:match("%d$") then return word, {} end
  local names = names_of(_G)
  for k in pairs(pp.keywords) do names[#names + 1] = k end
  return word, filter(names, word)
end

-- ---------------------------------------------------------------------------
-- Results

-- A dump knows nothing of its map; when the statement was `m:dump()`, the
-- map gives the struct fields their declared order and per-CPU values their
-- columns.
local function dump_of(src, v)
  if mtname(v) ~= "bpfhost.dump" or type(src) ~= "string" then return nil end
  local chain = src:match("^%s*=?%s*([%a_][%w_%.]*)%s*:%s*dump%s*%(%s*%)%s*;?%s*$")
  local m = chain and resolve(chain)
  return mtname(m) == "bpfhost.map" and m or nil
end

function R.show(width, src, ...)
  local n = select("#", ...)
  if n == 0 then return nil end
  local parts, multi = {}, false
  local opts = { width = width and width > 20 and width or 80 }
  for i = 1, n do
    local v = (select(i, ...))
    local m = n == 1 and dump_of(src, v)
    local s = m and pp.dump(v, { map = m }, opts) or pp.format(v, opts)
    parts[i] = s
    if s:find("\n", 1, true) then multi = true end
  end
  return concat(parts, multi and "\n" or "\t")
end

-- ---------------------------------------------------------------------------
-- Help

-- Signatures and one line each; README.md has the full story.
local docs = {
  ["bpf.open"] = { "(path [, opts])", "an object, not loaded; opts: pin_root, name, btf_custom_path, kconfig, log_size" },
  ["bpf.load"] = { "(path [, opts])", "open + load in one call" },
  ["bpf.map_create"] = { "{type =, key =, value =, max_entries =, name =, flags =}", "a new map" },
  ["bpf.map_by_id"] = { "(id)", "any map in the system, typed by its BTF" },
  ["bpf.map_by_name"] = { "(name)", "the one map with that name" },
  ["bpf.open_pinned"] = { "(path)", "the map, program or link pinned at path" },
  ["bpf.maps"] = { "()", "every map the kernel holds, printed like bpftool map show" },
  ["bpf.programs"] = { "()", "every program the kernel holds" },
  ["bpf.links"] = { "()", "every link the kernel holds" },
  ["bpf.lpm_key"] = { '("10.1.0.0/16")', "an LPM trie key" },
  ["bpf.kernel_type"] = { "(name)", "a Type from the running kernel's BTF" },
  ["bpf.sum"] = { "(values)", "sum of a per-CPU array (numbers, or tables field by field)" },
  ["bpf.sleep"] = { "(seconds)", "sleeps; Ctrl-C interrupts" },
  ["bpf.now"] = { "()", "monotonic time in seconds" },
  ["bpf.run"] = { "{sources =, every =, tick =, timeout =}", "the event loop; \"interrupted\", \"stopped\" or \"timeout\"" },
  ["bpf.poll"] = { "(sources, ms)", "waits for events on several buffers" },
  ["bpf.ringbuf"] = { "(map [, opts])", "a ring buffer reader" },
  ["bpf.perfbuf"] = { "(map [, opts])", "a perf buffer reader" },
  ["bpf.user_ringbuf"] = { "(map)", "a user ring buffer writer" },
  ["bpf.exporter"] = { "{listen =}", "a Prometheus exporter" },
  ["bpf.pp"] = { "(v [, opts])", "pretty-prints v (what the REPL shows); opts: width, rows, depth, items" },
  ["bpf.debug"] = { "(on)", "libbpf's own messages to stderr (as bpfhost -d)" },
  ["bpf.libbpf_version"] = { "()", "the libbpf version string" },
  ["bpf.gc_floor"] = { "([bytes])", "the GC floor (the host's is 4 MiB); sets it with bytes, 0 turns it off" },

  ["obj:load"] = { "()", "loads every program and map; returns obj" },
  ["obj:attach"] = { "()", "attaches every program by its SEC(); returns {name = link}" },
  ["obj:get_map"] = { "(name)", "the map handle" },
  ["obj:maps"] = { "()", "name-keyed table of map handles" },
  ["obj:program"] = { "(name)", "the program handle" },
  ["obj:programs"] = { "()", "name-keyed table of program handles" },
  ["obj:type"] = { "(name)", "a Type from the object's BTF" },
  ["obj:globals"] = { "(section)", "a view of a global data section" },
  ["obj:close"] = { "()", "detaches links, frees the object" },

  ["m:lookup"] = { "(key [, opts])", "the value, or nil when absent; opts: {raw = true}, {flags = \"lock\"}, {into = t} (set the value's fields in t, return t)" },
  ["m:update"] = { "(key, value [, flags])", "true; false when \"noexist\"/\"exist\" is not met" },
  ["m:delete"] = { "(key [, opts])", "true, or false when absent" },
  ["m:lookup_and_delete"] = { "(key [, opts])", "the value, removed atomically; nil when absent" },
  ["m:iterate"] = { "([opts])", "for k, v in m:iterate() do ... end" },
  ["m:drain"] = { "([opts])", "like iterate, removing what it yields" },
  ["m:count"] = { "()", "number of entries" },
  ["m:keys"] = { "()", "list of keys" },
  ["m:dump"] = { "()", "list of {key =, value =}; printed as columns" },
  ["m:clear"] = { "()", "removes every entry; returns how many" },
  ["m:lookup_batch"] = { "(keys)", "values, found" },
  ["m:update_batch"] = { "(t [, flags])", "writes many; returns how many" },
  ["m:delete_batch"] = { "(keys)", "deletes many; returns how many" },
  ["m:push"] = { "(v [, flags])", "queue, stack, bloom filter" },
  ["m:pop"] = { "()", "queue, stack; nil when empty" },
  ["m:peek"] = { "()", "queue, stack; nil when empty" },
  ["m:contains"] = { "(v)", "bloom filter membership" },
  ["m:mmap"] = { "()", "a view of an mmapable array" },
  ["m:proxy"] = { "()", "a table-like view: p[k], p[k] = v, p[k] = nil" },
  ["m:freeze"] = { "()", "makes the map read-only for user space" },
  ["m:info"] = { "()", "what the kernel says about the map" },
  ["m:pin"] = { "(path)", "pins on bpffs" },
  ["m:unpin"] = { "([path])", "removes the pin" },
  ["m:key_type"] = { "()", "the key's Type" },
  ["m:value_type"] = { "()", "the value's Type" },
  ["m:set_types"] = { "{key =, value =}", "types a map by hand" },
  ["m:close"] = { "()", "releases the handle" },

  ["p:attach"] = { "()", "attaches by SEC(); returns the link" },
  ["p:attach_tracepoint"] = { "(category, name)", "tracepoint link" },
  ["p:attach_raw_tracepoint"] = { "(name)", "raw tracepoint link" },
  ["p:attach_uprobe"] = { "{binary =, func = | offset =, retprobe =, pid =, cookie =}", "uprobe link" },
  ["p:attach_kprobe"] = { "{func =, offset =, retprobe =}", "kprobe/kretprobe link" },
  ["p:attach_xdp"] = { '(ifname [, "skb"|"drv"|"hw"])', "XDP link" },
  ["p:attach_tc"] = { "{ifname = | ifindex =, direction =, priority =, handle =, replace =, tcx =}", "tc link" },
  ["p:attach_cgroup"] = { "(path)", "cgroup link" },
  ["p:attach_iter"] = { "()", "iterator link; it:read() gives its output" },
  ["p:test_run"] = { "{data =, repeat =}", "{retval =, data =, duration =}" },

  ["link:detach"] = { "()", "detaches; idempotent" },
  ["link:close"] = { "()", "detaches; idempotent" },
  ["link:pin"] = { "(path)", "pins on bpffs" },
  ["link:unpin"] = { "()", "removes the pin" },
  ["link:info"] = { "()", "{id, type, prog_id, program, kind, fd}" },
  ["link:read"] = { "()", "an iterator link's output as a string" },

  ["T:encode"] = { "(value)", "the bytes" },
  ["T:decode"] = { "(bytes)", "the value" },
}
R.docs = docs

-- The userdata types, the letter their methods go by, and what makes one.
local kinds = {
  { mt = "bpfhost.object", letter = "obj", title = "Objects (obj = bpf.open(path))" },
  { mt = "bpfhost.map", letter = "m", title = "Maps (m = obj:get_map(name), bpf.map_by_name(name))",
    fields = "m.name m.type m.key_size m.value_size m.max_entries m.flags m.fd m.id" },
  { mt = "bpfhost.prog", letter = "p", title = "Programs (p = obj:program(name))",
    fields = "p.name p.section p.type p.fd" },
  { mt = "bpfhost.link", letter = "link", title = "Links (link = p:attach())" },
  { mt = "bpfhost.type", letter = "T", title = "Types (T = m:value_type(), obj:type(name))",
    fields = "T.name T.size tostring(T)" },
}

local function methods_of(mtn)
  local mt = debug.getregistry()[mtn]
  if type(mt) ~= "table" then return {} end
  local t = rawget(mt, "__methods")
  if type(t) ~= "table" then
    local pm = rawget(mt, "__props_mt")
    t = type(pm) == "table" and rawget(pm, "__index") or rawget(mt, "__index")
  end
  local out = {}
  if type(t) == "table" then
    for k, v in pairs(t) do
      if type(k) == "string" and type(v) == "function" and k:sub(1, 1) ~= "_" then
        out[#out + 1] = k
      end
    end
  end
  sort(out)
  return out
end

local function line(name, doc)
  local sig = name .. (doc and doc[1] or "(...)")
  local desc = doc and doc[2] or "see README.md"
  if #sig > 34 then return fmt("  %s\n  %-34s %s", sig, "", desc) end
  return fmt("  %-34s %s", sig, desc)
end

local function module_lines(out)
  local names = {}
  for k, v in pairs(M) do
    if type(k) == "string" and type(v) == "function" and k:sub(1, 1) ~= "_" then
      names[#names + 1] = k
    end
  end
  sort(names)
  for _, k in ipairs(names) do out[#out + 1] = line("bpf." .. k, docs["bpf." .. k]) end
end

local function kind_lines(out, kind)
  out[#out + 1] = kind.title
  for _, k in ipairs(methods_of(kind.mt)) do
    local name = kind.letter .. ":" .. k
    out[#out + 1] = line(name, docs[name])
  end
  if kind.fields then out[#out + 1] = "  fields: " .. kind.fields end
end

local function overview()
  local out = {
    fmt("bpfhost %s, libbpf %s. help(x) describes a handle or a function.", M._VERSION,
      M.libbpf_version and M.libbpf_version() or "?"),
    "",
    "Module (bpf = require \"bpfhost\")",
  }
  module_lines(out)
  for _, kind in ipairs(kinds) do
    out[#out + 1] = ""
    kind_lines(out, kind)
  end
  out[#out + 1] = ""
  out[#out + 1] = "REPL: results print without `return`; Tab completes names, methods, map names"
  out[#out + 1] = "and struct fields; Ctrl-C cancels the line or the running statement; Ctrl-D leaves."
  return concat(out, "\n")
end

-- The documented name of a function value, by identity.
local function name_of_function(f)
  for k, v in pairs(M) do
    if v == f then return "bpf." .. k end
  end
  for _, kind in ipairs(kinds) do
    local mt = debug.getregistry()[kind.mt]
    if type(mt) == "table" then
      local t = rawget(mt, "__methods")
      if type(t) ~= "table" then
        local pm = rawget(mt, "__props_mt")
        t = type(pm) == "table" and rawget(pm, "__index") or rawget(mt, "__index")
      end
      if type(t) == "table" then
        for k, v in pairs(t) do
          if v == f then return kind.letter .. ":" .. k end
        end
      end
    end
  end
  if f == R.help then return "help" end
end

local function describe(x)
  if x == nil then return overview() end
  if x == M then return overview() end
  local t = type(x)
  if t == "function" then
    local name = name_of_function(x)
    if name == "help" then return "help([x]): the API, or what x is and what it does" end
    if name then return (line(name, docs[name]):gsub("^  ", "")) end
    local info = debug.getinfo(x, "S")
    return fmt("a function defined at %s (not part of the bpfhost API)",
      info.what == "C" and "[C]" or (info.short_src .. ":" .. info.linedefined))
  end
  if t == "string" then
    local found = {}
    for name, doc in pairs(docs) do
      if name == x or name:match("[%.:]([%w_]+)$") == x then found[#found + 1] = line(name, doc) end
    end
    sort(found)
    if #found > 0 then return concat(found, "\n") end
    return fmt("no help for '%s'; help() lists the API", x)
  end
  local name = mtname(x)
  for _, kind in ipairs(kinds) do
    if name == kind.mt then
      local out = { pp.format(x), "" }
      kind_lines(out, kind)
      return concat(out, "\n")
    end
  end
  if name == "bpfhost.dump" then
    return "the entries of a map, a list of {key =, value =} (m:dump()); printed as columns"
  elseif name == "bpfhost.maplist" or name == "bpfhost.proglist" or name == "bpfhost.linklist" then
    return "what the kernel holds, a list of info tables (bpf.maps(), bpf.programs(), bpf.links())"
  elseif name == "bpfhost.error" or (t == "table" and rawget(x, "op") and rawget(x, "message")) then
    return "an error object: op, name, code, errno, message, hint, log"
  end
  if t == "table" then
    local keys = names_of(x)
    sort(keys)
    return fmt("a table with %d fields%s", #keys, #keys > 0 and (": " .. concat(keys, " ", 1,
      math.min(#keys, 20)) .. (#keys > 20 and " ..." or "")) or "")
  end
  return fmt("no help for a %s value; help() lists the API", name or t)
end

function R.help(...)
  if select("#", ...) > 1 then error("help: one argument at most", 2) end
  io.stdout:write(describe((...)), "\n")
end

return R
