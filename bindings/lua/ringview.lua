-- bpfhost.ringview: the FFI half of bpfhost.ringbuf (bindings/ringbuf.c).
--
-- C maps the rings, copies records out through libbpf and keeps the books;
-- the loops that hand records to Lua handlers live here, so that LuaJIT
-- compiles them together with the handler: no C-to-Lua call per record.
--
--   raw / typed   hand over a ring's batch (records C copied out), as
--                 strings or as tables C decoded; the batch head moves
--                 before each handler call
--   view          walks the ring's own pages: the handler gets a typed
--                 pointer into the ring, valid until it returns; the
--                 consumer position moves once it has returned
--   records       the pull iterator of a view consumer
--
-- Handlers are called directly (no pcall): an error goes to whoever polled,
-- with its traceback; C's cleanup puts the consumer position right.
local bpf = ...
if not jit then return nil end -- the FFI is LuaJIT's: other Luas get C's hand-over, no view

local ffi = require "ffi"
local bit = require "bit"
local codecgen = require "bpfhost.codecgen"

local band = bit.band
local cast, fstring, tonumber, error = ffi.cast, ffi.string, tonumber, error

-- Must match struct rb_shared in ringbuf.c (checked by size in setup).
if not pcall(ffi.typeof, "struct bh_rb_shared") then
  ffi.cdef [[
struct bh_rb_shared {
  uint8_t *buf;
  uint32_t head, tail;
  uint64_t *cons;
  const uint64_t *prod;
  const uint8_t *data;
  uint64_t mask;
  uint64_t pending;
  uint32_t size;
  int32_t stop;
  int32_t in_view;
  int32_t spare;
};
]]
end

local shared_ptr = ffi.typeof("struct bh_rb_shared *")
local u32p = ffi.typeof("const uint32_t *")

local BUSY = 0x80000000
local DISCARD = 0x40000000
local LEN = 0x3fffffff

local M = {}

local function shared(lud, size)
  if ffi.sizeof("struct bh_rb_shared") ~= size then
    error("bpfhost.ringview: struct bh_rb_shared is " .. ffi.sizeof("struct bh_rb_shared") ..
      " bytes here, " .. size .. " in C", 2)
  end
  return cast(shared_ptr, lud)
end
M.shared = shared

-- One ctype per declaration, shared with the maps' fast path.
local ctype = codecgen.ctype

-- The view of a ring: its shared block and the pointer type of its records.
-- The walk in M.view reads a record's header, then its data, with plain
-- loads: right under x86-64's ordering (loads are not reordered with
-- loads), not under arm64's, where it would need barriers LuaJIT cannot
-- emit. So the view is for x86-64 only.
function M.setup(lud, size, decl)
  if jit.arch ~= "x64" then
    error("ringbuf: view: needs x86-64 (this is " .. jit.arch .. "); copy records instead", 0)
  end
  return shared(lud, size), ctype(decl)
end

-- Batch records are {u32 len, u32 0, data padded to 8}.
function M.raw(sh, fn, name)
  local buf = sh.buf
  local head, tail = sh.head, sh.tail
  local n = 0
  while head < tail do
    local len = cast(u32p, buf + head)[0]
    local rec = buf + head + 8
    head = head + 8 + band(len + 7, -8)
    sh.head = head
    n = n + 1
    if fn(fstring(rec, len), name) == false or sh.stop ~= 0 then return n, true end
  end
  return n, false
end

-- fill(ring, i, t) decodes up to a few hundred records from the head into t.
function M.typed(sh, fn, name, fill, t, ring, i)
  local n = 0
  while true do
    local k = fill(ring, i, t)
    if k == 0 then return n, false end
    local buf, head = sh.buf, sh.head
    for j = 1, k do
      local len = cast(u32p, buf + head)[0]
      head = head + 8 + band(len + 7, -8)
      sh.head = head
      n = n + 1
      if fn(t[j], name) == false or sh.stop ~= 0 then return n, true end
    end
  end
end

-- Copied-out records decoded by a decoder generated for their type (see
-- "Generated codecs" in codec.c).
local function bad_size(name, len, tname, size)
  error(("ringbuf '%s': a record of %d bytes does not match %s (%d bytes); " ..
    "give no type for variable-size records"):format(name, len, tname, size), 0)
end

function M.decoded(sh, fn, name, ct, dec, size, tname)
  local buf = sh.buf
  local head, tail = sh.head, sh.tail
  local n = 0
  while head < tail do
    local len = cast(u32p, buf + head)[0]
    local rec = buf + head + 8
    head = head + 8 + band(len + 7, -8)
    sh.head = head
    if len ~= size then bad_size(name, len, tname, size) end
    n = n + 1
    if fn(dec(cast(ct, rec)), name) == false or sh.stop ~= 0 then return n, true end
  end
  return n, false
end

-- The pointer type and decoder function for a record type, or nil when the
-- generated source does not load (C decodes then).
M.decoder = codecgen.decoder

-- Up to max records straight from the ring; n, stopped. The common record
-- (committed, not discarded, of the type's size) has a header equal to the
-- size: one compare. The consumer position is published every 64 records
-- and at the end (sh.pending always says how far the handlers got, for C
-- to publish if one raises): fewer stores to the cache line the producer
-- reads on every reservation.
function M.view(sh, ct, fn, name, max, tname)
  local cons = tonumber(sh.cons[0])
  local prod = tonumber(sh.prod[0])
  local data, mask, size = sh.data, tonumber(sh.mask), sh.size
  local step = band(size + 15, -8)
  local n = 0
  local consp = sh.cons
  while cons < prod and n < max do
    local p = data + band(cons, mask)
    local len = cast(u32p, p)[0]
    local nxt
    if len == size then
      nxt = cons + step
      sh.pending = nxt
      n = n + 1
      if fn(cast(ct, p + 8), name) == false or sh.stop ~= 0 then
        consp[0] = nxt
        return n, true
      end
    else
      if band(len, BUSY) ~= 0 then break end
      nxt = cons + band(band(len, LEN) + 15, -8)
      sh.pending = nxt
      if band(len, DISCARD) == 0 then
        consp[0] = nxt
        bad_size(name, band(len, LEN), tname, size)
      end
    end
    cons = nxt
    if band(n, 63) == 0 then consp[0] = cons end
  end
  consp[0] = cons
  return n, false
end

-- for rec, name in ring:records(ms): the record in hand is released (its
-- space given back to the kernel) when the loop asks for the next one.
function M.records(ring, shs, cts, names, tnames, n, wait, ms)
  local held
  local i = 1
  return function()
    if held then
      if held.stop == 0 then held.cons[0] = held.pending end
      held.in_view = 0
      held = nil
    end
    while true do
      for k = 0, n - 1 do
        local j = (i + k - 1) % n + 1
        local sh = shs[j]
        if sh.stop ~= 0 then return nil end
        local cons, prod = tonumber(sh.cons[0]), tonumber(sh.prod[0])
        local data, mask = sh.data, tonumber(sh.mask)
        while cons < prod do
          local p = data + band(cons, mask)
          local len = cast(u32p, p)[0]
          if band(len, BUSY) ~= 0 then break end
          local nxt = cons + band(band(len, LEN) + 15, -8)
          sh.pending = nxt
          if band(len, DISCARD) == 0 then
            if band(len, LEN) ~= sh.size then
              sh.cons[0] = nxt
              bad_size(names[j], band(len, LEN), tnames[j], sh.size)
            end
            sh.in_view = 1
            held = sh
            i = j % n + 1
            return cast(cts[j], p + 8), names[j]
          end
          sh.cons[0] = nxt
          cons = nxt
        end
      end
      if not wait(ring, ms) then return nil end
    end
  end
end

return M
