-- bpfhost.pp: bpf.pp, opened with the module. The printer itself
-- (bpfhost.pretty) is compiled on first use, so that start-up stays light.
local M = ...

local impl

local function pretty()
  impl = impl or require "bpfhost.pretty"
  return impl
end

-- bpf.pp(v [, opts]): writes v pretty-printed to stdout.
function M.pp(v, opts)
  return pretty().print(v, opts)
end

-- require "bpfhost.pp" gives the printer: format(v [, opts]) returns the string.
return setmetatable({}, { __index = function(_, k) return pretty()[k] end })
