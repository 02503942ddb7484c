-- busted output handler: the plain terminal output, then one last line
-- "N passed, N failed" (errors count as failed) for make test and CI.
return function(options)
  local busted = require 'busted'
  local handler = require 'busted.outputHandlers.plainTerminal'(options)

  busted.subscribe({ 'suite', 'end' }, function()
    local failed = handler.failuresCount + handler.errorsCount
    io.write(('%d passed, %d failed\n'):format(handler.successesCount, failed))
    io.flush()
    return nil, true
  end)
  return handler
end
