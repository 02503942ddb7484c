local h = require "helper"

-- Run the host with a shell-quoted argument string; returns stdout+stderr and status.
local function host(args)
  return h.sh(h.host .. " " .. args .. " 2>&1")
end

local function tmpscript(src)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  return path
end

describe("host", function()
  context("arguments", function()
    it("-v prints the versions of bpfhost, libbpf, LuaJIT and the kernel", function()
      local out, status = host("-v")
      assert.equal(0, status)
      assert.matches("^bpfhost %d+%.%d+%.%d+\n", out)
      assert.matches("\nlibbpf v?%d+%.%d+", out)
      assert.matches("\nLuaJIT 2%.1", out)
      assert.matches("\nkernel %S+", out)
    end)

    it("-e runs code with the module preloaded and as the global bpf", function()
      local out, status = host([[-e 'print(require("bpfhost") == bpf, type(bpf.open))']])
      assert.equal(0, status)
      assert.equal("true\tfunction\n", out)
    end)

    it("lays out arg as luajit does", function()
      local s = tmpscript("print(arg[0] == ... and 'x' or arg[0], arg[1], arg[2], #arg, arg[-1] ~= nil)")
      local out, status = host(s .. " a b")
      assert.equal(0, status)
      assert.equal(s .. "\ta\tb\t2\ttrue\n", out)
      os.remove(s)
    end)

    it("passes script arguments as ...", function()
      local s = tmpscript("print(select('#', ...), ...)")
      local out = host(s .. " one two")
      assert.equal("2\tone\ttwo\n", out)
      os.remove(s)
    end)

    it("- reads the script from stdin", function()
      local out, status = h.sh("echo 'print(1 + 1, arg[1])' | " .. h.host .. " - x 2>&1")
      assert.equal(0, status)
      assert.equal("2\tx\n", out)
    end)

    it("an uncaught error prints the message and a traceback, and exits 1", function()
      local s = tmpscript("local function f() error('boom') end\nf()\n")
      local out, status = host(s)
      assert.equal(1, status)
      assert.matches("^bpfhost: .-:1: boom\nstack traceback:\n", out)
      os.remove(s)
    end)

    it("an error object prints through __tostring", function()
      local out, status = host([[-e 'bpf.open("/nonexistent.bpf.o")']])
      assert.equal(1, status)
      assert.matches("^bpfhost: open object '/nonexistent.bpf.o': no such file %(ENOENT%)\n", out)
      assert.matches("hint: BPF objects are built", out)
      assert.matches("stack traceback:", out)
    end)

    it("a usage error exits 2", function()
      local out, status = host("--bogus")
      assert.equal(2, status)
      assert.matches("unrecognized option '%-%-bogus'", out)
      out, status = host("-e")
      assert.equal(2, status)
      assert.matches("'%-e' needs an argument", out)
    end)

    it("a syntax error in the script exits 1", function()
      local s = tmpscript("x = = 1")
      local _, status = host(s)
      assert.equal(1, status)
      os.remove(s)
    end)

    it("-i runs the REPL after the script, reading piped stdin", function()
      local s = tmpscript("x = 41")
      local out, status = h.sh("printf 'x + 1\\n' | " .. h.host .. " -i " .. s .. " 2>&1")
      assert.equal(0, status)
      assert.matches("42", out)
      os.remove(s)
    end)
  end)

  context("#root kernel", function()
    it("runs the execve counter, and SIGINT ends it cleanly within a second with no link left", function()
      local log = os.tmpname()
      -- env --default-signal: a background job of a non-interactive shell ignores SIGINT
      local out = h.sh(([[
        env --default-signal=INT %s scripts/execve_counter.lua 1 >%s 2>&1 &
        pid=$!
        sleep 1.6; /bin/true; /bin/true; sleep 1.2
        t0=$(date +%%s%%N); kill -INT $pid; wait $pid; st=$?; t1=$(date +%%s%%N)
        echo "status=$st ms=$(( (t1 - t0) / 1000000 ))"
        bpftool prog show name count_execve | grep -c count_execve || true
      ]]):format(h.host, log))
      local f = io.open(log); local text = f:read("*a"); f:close(); os.remove(log)
      local status, ms = out:match("status=(%d+) ms=(%d+)")
      assert.equal("0", status, text)
      assert.is_true(tonumber(ms) < 1000, "took " .. ms .. " ms")
      assert.matches("\n0\n$", "\n" .. out:match("\n([^\n]*\n)$"))
      local counts = {}
      for n in text:gmatch("execve_counter (%d+)") do counts[#counts + 1] = tonumber(n) end
      assert.is_true(#counts >= 2, text)
      assert.is_true(counts[#counts] > counts[1], text)
      assert.matches("stopped %(interrupted%)", text)
    end)

    it("SIGINT during bpf.sleep exits 130 and leaves no link", function()
      local s = tmpscript([[
        local o = bpf.load(arg[1]); o:attach(); print("ready"); io.stdout:flush(); bpf.sleep(30)]])
      local out = h.sh(([[
        env --default-signal=INT %s %s %s >/dev/null 2>&1 &
        pid=$!; sleep 1; kill -INT $pid; wait $pid; echo "status=$?"
        bpftool prog show name count_execve | grep -c count_execve || true
      ]]):format(h.host, s, h.obj("execve_counter")))
      os.remove(s)
      assert.matches("status=130", out)
      assert.matches("\n0\n$", out)
    end)

    it("SIGTERM ends bpf.run with 'interrupted'", function()
      local s = tmpscript([[print(bpf.run{every = 0.05, tick = function() end})]])
      local out = h.sh(("%s %s & pid=$!; sleep 0.5; kill -TERM $pid; wait $pid; echo status=$?")
        :format(h.host, s))
      os.remove(s)
      assert.matches("interrupted\nstatus=0", out)
    end)
  end)
end)
