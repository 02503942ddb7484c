-- busted output handler: the plain terminal output, then one last line
-- "N passed, N failed" (errors count as failed) for make test and CI.
-- make test runs one suite per Lua: BPFHOST_SUITE names it in that line,
-- and BPFHOST_COUNTS is a file the counts are added to ("suite passed
-- failed"), for the total make prints last.
return function(options)
  local busted = require 'busted'
  local handler = require 'busted.outputHandlers.plainTerminal'(options)
  local suite, counts = os.getenv("BPFHOST_SUITE"), os.getenv("BPFHOST_COUNTS")

  busted.subscribe({ 'suite', 'end' }, function()
    local failed = handler.failuresCount + handler.errorsCount
    io.write(('%s%d passed, %d failed\n'):format(suite and suite .. ": " or "",
      handler.successesCount, failed))
    io.flush()
    if counts then
      local f = assert(io.open(counts, "a"))
      f:write(("%s %d %d\n"):format(suite or "busted", handler.successesCount, failed))
      f:close()
    end
    return nil, true
  end)
  return handler
end
