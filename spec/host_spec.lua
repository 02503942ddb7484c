local h = require "helper"

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

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

-- A prefix that runs a command without any capability (and, as root, also
-- as nobody: see unprivileged below).
local nocaps = h.is_root and "setpriv --inh-caps=-all --bounding-set=-all " or ""

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

    it("--help lists every option and the exit codes, and exits 0", function()
      local out, status = host("--help")
      assert.equal(0, status)
      assert.matches("^usage: bpfhost %[options%] %[script%.lua %[args%.%.%.%]%]\n", out)
      for _, opt in ipairs{ "-e CODE", "-l NAME", "-i", "-v", "-d", "--features", "--help", "--", "-  " } do
        assert.truthy(out:find("\n  " .. opt, 1, true), opt .. " missing from:\n" .. out)
      end
      assert.matches("130", out)
    end)

    it("has a man page that renders, covering every option and exit status", function()
      local out, status = h.sh("MANWIDTH=80 man --warnings=w -l host/bpfhost.1 2>&1")
      assert.equal(0, status, out)
      assert.is_nil(out:find("troff:", 1, true), out)
      assert.matches("^BPFHOST%(1%)", out)
      for _, opt in ipairs{ "-e code", "-l name", "-i", "-v", "-d", "--features", "--help" } do
        assert.matches("\n       " .. opt:gsub("%-", "%%-") .. "%s", out)
      end
      for _, code in ipairs{ "0", "1", "2", "130, 143" } do
        assert.matches("\n       " .. code .. "%s", out)
      end
      assert.matches("~/%.bpfhost_history", out)
    end)

    it("a usage error exits 2 and says what is wrong", function()
      local out, status = host("--bogus")
      assert.equal(2, status)
      assert.matches("^bpfhost: unrecognized option '%-%-bogus'\nusage:", out)
      out, status = host("-e")
      assert.equal(2, status)
      assert.matches("'%-e' needs an argument", out)
      out, status = host("-l")
      assert.equal(2, status)
      assert.matches("'%-l' needs an argument", out)
      out, status = host("-x")
      assert.equal(2, status)
      assert.matches("unrecognized option '%-x'", out)
    end)

    it("--features reports types, attach kinds, BTF, mounts and privileges", function()
      local out, status = host("--features")
      assert.equal(0, status, out)
      assert.matches("^bpfhost %S+, libbpf %S+, kernel %S+ %S+\n", out)
      for _, label in ipairs{ "privileges", "BTF", "bpffs", "tracefs", "map types", "prog types", "attach" } do
        assert.matches("\n" .. label .. "%s+%S", out)
      end
      if h.is_root then
        assert.matches("\nprivileges%s+uid 0; CAP_BPF", out)
        assert.matches("\nmap types%s+hash array ", out)
        assert.matches("\nprog types%s+socket_filter kprobe ", out)
        assert.matches("\nattach%s+tracepoint raw_tp ", out)
        -- what it says of kprobes is what attaching one does
        local attach = out:match("\nattach%s+([^\n]*)")
        local o = require("bpfhost").load(h.obj("test_prog"))
        local ok, err = pcall(function() return o:program("on_read"):attach_kprobe{func = "vfs_read"} end)
        if ok then err:detach() end
        o:close()
        assert.equal(ok, (" " .. attach .. " "):find(" kprobe ") ~= nil, tostring(err))
        if not ok then assert.matches("no kprobe: ", out) end
      end
      local lines = select(2, out:gsub("\n", ""))
      assert.is_true(lines <= 40, "a short report, got " .. lines .. " lines")
    end)

    it("--features without privileges says what it could not probe, and exits 0", function()
      local out, status = h.sh(nocaps .. h.host .. " --features 2>&1")
      assert.equal(0, status, out)
      assert.matches("\nprivileges%s+[^\n]*no BPF capabilities", out)
      assert.matches("%(bpf%(%) refused: run as root or with CAP_BPF%)", out)
      assert.matches("\nmap types%s+%(not probed: needs CAP_BPF%)", out)
      assert.matches("\nattach%s+%(not probed: needs CAP_BPF%)", out)
    end)

    it("without CAP_BPF every way of running code fails at once in one line, exit 1", function()
      local s = tmpscript("print('ran')")
      local line = "^bpfhost: needs root, or CAP_BPF %(with CAP_PERFMON for tracing, "
        .. "CAP_NET_ADMIN for XDP/tc%): this process has neither CAP_BPF nor CAP_SYS_ADMIN\n$"
      for _, args in ipairs{
        "-e " .. q("print('ran')"),
        s,
        "-i " .. s .. " </dev/null",
        "- <" .. s,
        "<" .. s,
        "-l string",
      } do
        local out, status = h.sh(nocaps .. h.host .. " " .. args .. " 2>&1")
        assert.equal(1, status, args .. ": " .. out)
        assert.matches(line, out)
      end
      if h.is_root then
        -- and as an ordinary user
        local out, status = h.sh("setpriv --reuid=65534 --regid=65534 --clear-groups "
          .. h.host .. " -e " .. q("print('ran')") .. " 2>&1")
        assert.equal(1, status, out)
        assert.matches(line, out)
      end
      os.remove(s)
    end)
  end)

  context("#root running code", function()
    it("-e runs code with the module preloaded and as the global bpf", function()
      local out, status = host([[-e 'print(require("bpfhost") == bpf, type(bpf.open))']])
      assert.equal(0, status)
      assert.equal("true\tfunction\n", out)
    end)

    it("-e and -l run in order, -l sets the module as a global", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert(h.sh("mkdir " .. q(dir)))
      local f = assert(io.open(dir .. "/bhmod.lua", "w"))
      f:write("io.write('loaded ') return { v = 7 }")
      f:close()
      local out, status = h.sh(("LUA_PATH=%s %s -e %s -l bhmod -e %s 2>&1")
        :format(q(dir .. "/?.lua"), h.host, q("io.write('first ')"), q("print(bhmod.v)")))
      h.sh("rm -rf " .. q(dir))
      assert.equal(0, status, out)
      assert.equal("first loaded 7\n", out)
      out, status = host("-l no_such_module_here")
      assert.equal(1, status)
      assert.matches("module 'no_such_module_here' not found", out)
    end)

    it("lays out arg as luajit does", function()
      local s = tmpscript("print(arg[0] == ... and 'x' or arg[0], arg[1], arg[2], #arg, arg[-1] ~= nil)")
      local out, status = host(s .. " a b")
      assert.equal(0, status)
      assert.equal(s .. "\ta\tb\t2\ttrue\n", out)
      out = host("-e 'x = 1' " .. s .. " c")
      assert.equal(s .. "\tc\tnil\t1\ttrue\n", out)
      os.remove(s)
    end)

    it("passes script arguments as ...", function()
      local s = tmpscript("print(select('#', ...), ...)")
      local out = host(s .. " one two")
      assert.equal("2\tone\ttwo\n", out)
      out = host("-- " .. s .. " -e x")
      assert.equal("2\t-e\tx\n", out)
      os.remove(s)
    end)

    it("- reads the script from stdin, and so does a pipe with no script", function()
      local out, status = h.sh("echo 'print(1 + 1, arg[1])' | " .. h.host .. " - x 2>&1")
      assert.equal(0, status)
      assert.equal("2\tx\n", out)
      out, status = h.sh("echo 'print(3)' | " .. h.host .. " 2>&1")
      assert.equal(0, status)
      assert.equal("3\n", out)
    end)

    it("an uncaught error prints the message and a traceback, and exits 1", function()
      local s = tmpscript("local function f() error('boom') end\nf()\n")
      local out, status = host(s)
      assert.equal(1, status)
      assert.matches("^bpfhost: .-:1: boom\nstack traceback:\n", out)
      os.remove(s)
    end)

    it("an error object prints through __tostring with its hint", function()
      local out, status = host([[-e 'bpf.open("/nonexistent.bpf.o")']])
      assert.equal(1, status)
      assert.matches("^bpfhost: open object '/nonexistent.bpf.o': no such file %(ENOENT%)\n", out)
      assert.matches("hint: BPF objects are built", out)
      assert.matches("stack traceback:", out)
    end)

    it("a syntax error or a missing script exits 1", function()
      local s = tmpscript("x = = 1")
      local out, status = host(s)
      assert.equal(1, status)
      assert.matches("unexpected symbol near '='", out)
      os.remove(s)
      out, status = host("/nonexistent/script.lua")
      assert.equal(1, status)
      assert.matches("cannot open /nonexistent/script%.lua", out)
    end)

    it("-d shows libbpf's own messages", function()
      local code = q(("bpf.load(%q):close()"):format(h.obj("test_maps")))
      local quiet = host("-e " .. code)
      local loud, status = host("-d -e " .. code)
      assert.equal(0, status, loud)
      assert.is_nil(quiet:find("libbpf: ", 1, true))
      assert.matches("libbpf: ", loud)
    end)

    it("help() lists the API and help(x) describes a handle or a function", function()
      local out, status = host([[-e 'help()']])
      assert.equal(0, status)
      assert.matches("\nModule %(bpf = require \"bpfhost\"%)\n", out)
      assert.matches("\n  bpf%.open%(path %[, opts%]%)%s+an object, not loaded", out)
      assert.matches("\n  m:lookup%(key %[, opts%]%)%s+the value, or nil when absent", out)
      assert.matches("\n  bpf%.pp%(v %[, opts%]%)", out)
      out = host(([[-e 'help(bpf.load(%q):get_map("name_stats"))']]):format(h.obj("test_maps")))
      assert.matches("^map 'name_stats' hash char%[16%]→struct stats 0/64\n\nMaps", out)
      assert.matches("\n  m:update%(key, value %[, flags%]%)", out)
      out = host([[-e 'help(bpf.map_create)']])
      assert.matches("^bpf%.map_create{type =, key =, value =", out)
      out = host([[-e 'help("lookup")']])
      assert.matches("^  m:lookup%(key", out)
      out = host([[-e 'help(print)']])
      assert.matches("^a function defined at %[C%] %(not part of the bpfhost API%)", out)
      out = host([[-e 'help(42)']])
      assert.matches("^no help for a number value", out)
    end)

    it("-i runs the REPL after the script, reading piped stdin", function()
      local s = tmpscript("x = 41")
      local out, status = h.sh("printf 'x + 1\\n' | " .. h.host .. " -i " .. s .. " 2>&1")
      assert.equal(0, status)
      assert.equal("42\n", out)
      os.remove(s)
    end)

    it("the piped REPL prints results, continues chunks, reports errors and goes on", function()
      local input = table.concat({
        "1, 'two', {3}",
        "for i = 1, 2 do",
        "  print(i)",
        "end",
        "error('boom')",
        "= 5",
        "local t = {",
        "  a = 1 }",
        "t",
        "bpf.pp({b = 2})",
        "",
      }, "\n")
      local s = tmpscript(input)
      local out, status = h.sh(h.host .. " -i < " .. s .. " 2>&1")
      os.remove(s)
      assert.equal(0, status, out)
      assert.equal('1\t"two"\t{ 3 }\n1\n2\nbpfhost: stdin:1: boom\nstack traceback:\n',
        out:sub(1, 58))
      assert.matches("\n5\nnil\n{ b = 2 }\n$", out)
    end)
  end)

  context("#root kernel", function()
    it("the example scripts refuse bad arguments with a usage line and status 2, before touching the kernel", function()
      local cases = {
        {"execve_counter.lua", "nan"}, {"execve_counter.lua", "0"}, {"execve_counter.lua", "x"},
        {"execsnoop.lua", "-t inf"}, {"execsnoop.lua", "-t nan"}, {"execsnoop.lua", "-p 0"},
        {"opensnoop.lua", "-t inf"}, {"xdp_count.lua", "abc"}, {"xdp_count.lua", "53 abc"},
        {"xdp_count.lua", "53 -5"}, {"xdp_count.lua", "53 1 pass"}, {"exporter.lua", "nope"},
      }
      for _, c in ipairs(cases) do
        local out, status = h.sh(("%s scripts/%s %s 2>&1"):format(h.host, c[1], c[2]))
        assert.equal(2, status, c[1] .. " " .. c[2] .. ": " .. out)
        assert.matches("usage: " .. c[1]:gsub("%p", "%%%0"), out)
        assert.is_nil(out:find("traceback"), out)
      end
    end)

    it("runs the execve counter, and SIGINT ends it cleanly within a second with no link left", function()
      local log = os.tmpname()
      -- env --default-signal: a background job of a non-interactive shell ignores SIGINT
      local out = h.sh(([[
        env --default-signal=INT BPFHOST_OBJ_DIR=%s %s scripts/execve_counter.lua 1 >%s 2>&1 &
        pid=$!
        sleep 1.6; /bin/true; /bin/true; sleep 1.2
        t0=$(date +%%s%%N); kill -INT $pid; wait $pid; st=$?; t1=$(date +%%s%%N)
        echo "status=$st ms=$(( (t1 - t0) / 1000000 ))"
        bpftool prog show name count_execve | grep -c count_execve || true
      ]]):format(h.build .. "/bpf", h.host, log))
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

    it("SIGINT in a Lua loop exits 130; SIGTERM in bpf.sleep exits 143", function()
      local s = tmpscript([[print("ready") io.stdout:flush()
        local n = 0 while true do n = n + #tostring(os.clock()) end]])
      local out = h.sh(([[
        env --default-signal=INT %s %s >/dev/null 2>&1 & pid=$!
        sleep 0.5; kill -INT $pid; wait $pid; echo "status=$?"
        %s -e 'bpf.sleep(30)' >/dev/null 2>&1 & pid=$!
        sleep 0.5; kill -TERM $pid; wait $pid; echo "status=$?"
      ]]):format(h.host, s, h.host))
      os.remove(s)
      assert.matches("^status=130\nstatus=143\n$", out)
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
