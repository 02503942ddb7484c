-- The REPL driven as a person would: keys into a pseudo-terminal (tmux), the
-- screen read back. Each test gets its own HOME and a tmux server whose
-- socket lives in it, and removes both.
local h = require "helper"
local bpf = require "bpfhost"

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local Term = {}
Term.__index = Term

-- Start cmd (a shell command line) in a 200x50 terminal, in this directory,
-- with a fresh HOME (setup(home) runs before); the exit status lands in a
-- file when it ends.
local function term(cmd, setup)
  local t = setmetatable({}, Term)
  t.home = os.tmpname()
  os.remove(t.home)
  assert(h.sh("mkdir -m 0700 " .. q(t.home)) ~= nil)
  t.sock = t.home .. "/tmux.sock" -- a private server, gone with the directory
  if setup then setup(t.home) end
  t.status = t.home .. "/status"
  local line = ("env HOME=%s TERM=xterm %s; echo \"exit=$?\" > %s; sleep 30"):format(
    q(t.home), cmd, q(t.status))
  local out, st = h.sh(("tmux -S %s new-session -d -c \"$(pwd)\" -x 200 -y 50 %s 2>&1")
    :format(q(t.sock), q(line)))
  assert(st == 0, out)
  return t
end

function Term:tmux(args)
  return h.sh(("tmux -S %s %s 2>&1"):format(q(self.sock), args))
end

function Term:type(text)
  self:tmux("send-keys -t 0 -l " .. q(text))
end

function Term:key(...)
  self:tmux("send-keys -t 0 " .. table.concat({ ... }, " "))
end

function Term:line(text)
  self:type(text)
  self:key("Enter")
end

-- The screen, trailing blanks and empty lines dropped: an empty prompt is
-- the end of it as "bpf>".
function Term:screen()
  local out = self:tmux("capture-pane -p -J -t 0 -S -200")
  return (out:gsub("[ \t]+\n", "\n"):gsub("%s+$", ""))
end

-- Wait until the screen matches pattern (Lua pattern); returns the screen
-- and the seconds it took, or fails with the screen.
function Term:wait(pattern, timeout)
  local t0 = bpf.now()
  local s
  repeat
    s = self:screen()
    if s:find(pattern) then return s, bpf.now() - t0 end
    bpf.sleep(0.02)
  until bpf.now() - t0 > (timeout or 5)
  error(("screen never matched %q:\n%s"):format(pattern, s), 2)
end

-- Prompts seen so far: a fresh prompt after n of them means the REPL is back.
function Term:prompts()
  local n = 0
  for _ in self:screen():gmatch("bpf>") do n = n + 1 end
  return n
end

-- Type a line and wait for the prompt after it; returns the screen.
function Term:run(text, timeout)
  local n = self:prompts()
  self:line(text)
  local t0 = bpf.now()
  local s
  repeat
    s = self:screen()
    if self:prompts() > n and s:find("bpf>$") then return s end
    bpf.sleep(0.02)
  until bpf.now() - t0 > (timeout or 5)
  error(("no prompt after %q:\n%s"):format(text, s), 2)
end

function Term:exit_status(timeout)
  local t0 = bpf.now()
  repeat
    local f = io.open(self.status)
    if f then
      local s = f:read("*a")
      f:close()
      local n = s:match("exit=(%d+)")
      if n then return tonumber(n) end
    end
    bpf.sleep(0.02)
  until bpf.now() - t0 > (timeout or 5)
  return nil
end

function Term:close()
  self:tmux("kill-server")
  h.sh("rm -rf " .. q(self.home))
end

local function repl(args, setup)
  return term(h.host .. (args and (" " .. args) or ""), setup)
end

describe("repl", function()
  local t

  after_each(function()
    if t then t:close() end
    t = nil
  end)

  context("arguments", function()
    it("without CAP_BPF says so in one line on the terminal and exits 1", function()
      local nocaps = h.is_root and "setpriv --inh-caps=-all --bounding-set=-all " or ""
      t = term(nocaps .. h.host)
      assert.equal(1, t:exit_status())
      local s = t:screen()
      assert.equal("bpfhost: needs root, or CAP_BPF (with CAP_PERFMON for tracing, "
        .. "CAP_NET_ADMIN for XDP/tc): this process has neither CAP_BPF nor CAP_SYS_ADMIN", s)
    end)
  end)

  context("#root terminal", function()
    it("prints the value of an expression without return, several separated", function()
      t = repl()
      t:wait("bpf>$")
      t:line("1 + 41")
      t:wait("bpf> 1 %+ 41\n42\nbpf>$")
      t:line("'a', {b = 1, 2}, nil")
      t:wait('\n"a"%s+{ 2, b = 1 }%s+nil\nbpf>$')
      t:line("= 7")
      t:wait("\n7\nbpf>$")
    end)

    it("runs a three-line for loop, with a continuation prompt", function()
      t = repl()
      t:wait("bpf>$")
      t:line("for i = 1, 3 do")
      t:wait("%.%.%.>$")
      t:line("  print(i * 10)")
      t:wait("%.%.%.>$")
      t:line("end")
      local s = t:wait("bpf>$")
      assert.matches("bpf> for i = 1, 3 do\n%.%.%.>   print%(i %* 10%)\n%.%.%.> end\n10\n20\n30\nbpf>$", s)
    end)

    it("tab-completes m:loo to m:lookup", function()
      t = repl()
      t:wait("bpf>$")
      t:run('m = bpf.map_create{type = "hash", key = "u32", value = "u64", max_entries = 8}')
      t:line("m:update(1, 99)")
      t:wait("\ntrue\nbpf>$")
      t:type("m:loo")
      t:key("Tab")
      t:wait("bpf> m:lookup$")
      t:line("(1)")
      t:wait("bpf> m:lookup%(1%)\n99\nbpf>$")
    end)

    it("lists the candidates when there are several, and completes globals", function()
      t = repl()
      t:wait("bpf>$")
      t:type("bpf.map_")
      t:key("Tab")
      local s = t:wait("bpf> bpf%.map_$")
      assert.matches("map_by_id%s+map_by_name%s+map_create", s)
      t:key("C-u")
      t:type("collectg")
      t:key("Tab")
      t:wait("bpf> collectgarbage$")
    end)

    it("completes the map names of a loaded object and the fields of a struct value", function()
      t = repl()
      t:wait("bpf>$")
      t:run(("o = bpf.load(%q)"):format(h.obj("test_maps")))
      t:type('s = o:get_map("name_st')
      t:key("Tab")
      t:wait('bpf> s = o:get_map%("name_stats"$')
      t:run(")")
      t:type('bpf.map_by_name("name_st')
      t:key("Tab")
      t:wait('bpf> bpf%.map_by_name%("name_stats"$')
      t:key("C-u")
      t:type('o:program("to')
      t:key("Tab")
      t:wait('bpf> o:program%("touch"$')
      t:key("C-u")
      t:type('s:update("bash", {pack')
      t:key("Tab")
      t:wait('bpf> s:update%("bash", {packets =$')
      t:line('3, comm = "bash"})')
      t:wait("\ntrue\nbpf>$")
      t:type('s:lookup("bash").co')
      t:key("Tab")
      t:wait('bpf> s:lookup%("bash"%)%.comm$')
      t:key("Enter")
      t:wait('\n"bash"\nbpf>$')
      t:line("s:dump()")
      local screen = t:wait("1 entry\nbpf>$")
      -- the REPL knows the map: fields in their declared order
      assert.matches('\nkey%s+| packets%s+bytes%s+flags%s+comm\n"bash"%s+|%s+3%s+0%s+0%s+"bash"\n1 entry\n', screen)
      t:run("p = o:get_map('pcpu'); p:update(7, 5)")
      t:line("p:dump()")
      screen = t:wait("1 entry\nbpf>$")
      assert.matches("\nkey | cpu0 .* sum\n  7 |%s+5 .*\n1 entry\n", screen)
      t:line("o:close()")
      t:wait("\ntrue\nbpf>$")
    end)

    it("Ctrl-C during bpf.sleep(10) returns to the prompt within a second", function()
      t = repl()
      t:wait("bpf>$")
      t:line("bpf.sleep(10)")
      t:wait("bpf> bpf%.sleep%(10%)$")
      bpf.sleep(0.3)
      local before = t:prompts()
      local t0 = bpf.now()
      t:key("C-c")
      local s
      repeat
        bpf.sleep(0.01)
        s = t:screen()
      until t:prompts() > before or bpf.now() - t0 > 5
      local took = bpf.now() - t0
      assert.is_true(took < 1, ("took %.2f s:\n%s"):format(took, s))
      assert.matches("interrupted\nbpf>$", s)
      t:line("1 + 1")
      t:wait("\n2\nbpf>$")
    end)

    it("Ctrl-C interrupts bpf.run and a Lua loop that calls functions", function()
      t = repl()
      t:wait("bpf>$")
      t:line("bpf.run{every = 0.05, tick = function() end}")
      bpf.sleep(0.3)
      t:key("C-c")
      t:wait('"interrupted"\nbpf>$')
      t:line("while true do local s = tostring(os.clock()) end")
      bpf.sleep(0.3)
      t:key("C-c")
      t:wait("interrupted\nbpf>$")
      t:line("2 + 2")
      t:wait("\n4\nbpf>$")
    end)

    it("Ctrl-C cancels the line being typed, and a chunk being continued", function()
      t = repl()
      t:wait("bpf>$")
      t:type("error('typed, never run')")
      t:key("C-c")
      t:wait("bpf>$")
      t:line("for i = 1, 2 do")
      t:wait("%.%.%.>$")
      t:key("C-c")
      t:wait("bpf>$")
      t:line("3 * 3")
      local s = t:wait("\n9\nbpf>$")
      assert.is_nil(s:find("typed, never run\n", 1, true))
    end)

    it("Ctrl-D leaves with status 0 and writes the history with mode 0600", function()
      t = repl()
      t:wait("bpf>$")
      t:run("x = 'remembered'")
      t:key("C-d")
      assert.equal(0, t:exit_status())
      local mode = h.sh("stat -c %a " .. q(t.home .. "/.bpfhost_history"))
      assert.equal("600\n", mode)
      local f = assert(io.open(t.home .. "/.bpfhost_history"))
      local text = f:read("*a")
      f:close()
      assert.matches("remembered", text)
    end)

    it("recalls history from an earlier session, and keeps it bounded", function()
      t = repl()
      t:wait("bpf>$")
      t:run("x_recalled = 1")
      t:key("C-d")
      assert.equal(0, t:exit_status())
      local path = t.home .. "/.bpfhost_history"
      local f = assert(io.open(path))
      local first = f:read("*a")
      f:close()
      t:close()
      -- again, after 1500 more entries in the format the line editor wrote
      local libedit = first:match("^_HiStOrY_V2_\n") ~= nil
      t = repl(nil, function(home)
        local h2 = assert(io.open(home .. "/.bpfhost_history", "w"))
        h2:write(first)
        for i = 1, 1500 do
          h2:write(libedit and ("old_%d\\040=\\040%d\n"):format(i, i) or ("old_%d = %d\n"):format(i, i))
        end
        h2:write(libedit and "x_recalled\\040=\\0402\n" or "x_recalled = 2\n")
        h2:close()
        os.execute("chmod 0644 " .. q(home .. "/.bpfhost_history"))
      end)
      t:wait("bpf>$")
      t:key("Up")
      t:wait("bpf> x_recalled = 2$")
      t:key("Up")
      t:wait("bpf> old_1500 = 1500$")
      t:key("Enter")
      t:wait("bpf> old_1500 = 1500\nbpf>$")
      t:line("old_1500 + 1")
      t:wait("\n1501\nbpf>$")
      t:key("C-d")
      assert.equal(0, t:exit_status())
      local n = 0
      for _ in io.lines(t.home .. "/.bpfhost_history") do n = n + 1 end
      assert.is_true(n <= 1001, n .. " lines")
      assert.is_true(n >= 900, n .. " lines")
      assert.equal("600\n", h.sh("stat -c %a " .. q(t.home .. "/.bpfhost_history")))
    end)

    it("prints errors with their message and stays", function()
      t = repl()
      t:wait("bpf>$")
      t:line("bpf.open('/nonexistent.bpf.o')")
      t:wait("open object '/nonexistent.bpf.o': no such file %(ENOENT%)")
      t:line("x = = 1")
      t:wait("unexpected symbol near '='")
      t:line("help(bpf.open)")
      t:wait("bpf%.open%(path %[, opts%]%)%s+an object, not loaded")
      t:line("error('last')")
      t:wait("stdin:1: last\n")
      t:key("C-d")
      assert.equal(0, t:exit_status())
    end)

    it("-i enters the REPL after the script, with its globals", function()
      local s = os.tmpname()
      local f = assert(io.open(s, "w"))
      f:write("answer = 42\n")
      f:close()
      t = repl("-i " .. q(s))
      t:wait("bpf>$")
      t:line("answer")
      t:wait("\n42\nbpf>$")
      os.remove(s)
    end)
  end)
end)
