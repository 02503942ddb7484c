-- bpfhost as a rock: the Lua module (for the Lua LuaRocks runs for: LuaJIT
-- with --lua-version=5.1, Lua 5.4 with --lua-version=5.4) and the bpfhost
-- executable (it always embeds LuaJIT). One build description: this calls
-- the Makefile's targets with LuaRocks' variables, as luaposix does.
--
--   luarocks --lua-version=5.4 make rockspec/bpfhost-scm-1.rockspec --tree T
--   (luarocks make alone finds this file)
--   luarocks --lua-version=5.1 make rockspec/bpfhost-scm-1.rockspec --tree T \
--     LUA=/usr/bin/luajit LUA_INCDIR=/usr/include/luajit-2.1
--
-- The version is the Makefile's VERSION (bpf._VERSION, bpfhost -v); "scm"
-- says this rockspec builds whatever the working tree holds.
rockspec_format = "3.0"
package = "bpfhost"
version = "scm-1"

source = {
   url = "git+file:///work/main",
   branch = "main",
}

description = {
   summary = "Lua over libbpf: load, attach and read BPF programs, maps and ring buffers",
   detailed = [[
bpfhost drives real, C-compiled BPF programs from Lua: it opens and loads a
.bpf.o with libbpf, reads and writes its maps with keys and values typed
from BTF, attaches its programs and waits for events. It is a Lua C module
(require "bpfhost") and an executable that embeds LuaJIT (bpfhost
script.lua). Needs Linux with BTF, and root or CAP_BPF + CAP_PERFMON.]],
   homepage = "file:///work/main",
   -- the project states no license yet; its BPF programs say GPL-2.0
   license = "not stated (BPF programs: GPL-2.0)",
   labels = { "bpf", "ebpf", "libbpf", "linux", "tracing" },
}

-- LuaJIT 2.1 (5.1) or Lua 5.4: the module uses LuaJIT's 5.2 extras or 5.4's API.
dependencies = {
   "lua >= 5.1, < 5.5",
}

-- What the C build links or includes; a missing one stops LuaRocks with its
-- own message naming it (Debian 12: libbpf-dev, libelf-dev, zlib1g-dev,
-- libluajit-5.1-dev, libmicrohttpd-dev, libedit-dev). libmicrohttpd and
-- libedit are opened with dlopen at run time (the exporter, the REPL):
-- only their headers are needed here.
external_dependencies = {
   LIBBPF = { header = "bpf/libbpf.h", library = "bpf" },
   LIBELF = { header = "libelf.h", library = "elf" },
   ZLIB = { header = "zlib.h", library = "z" },
   LUAJIT = { header = "luajit-2.1/luajit.h", library = "luajit-5.1" },
   MICROHTTPD = { header = "microhttpd.h" },
   LIBEDIT = { header = "histedit.h" },
}

build = {
   type = "make",
   makefile = "Makefile",
   build_target = "host bindings",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LIBFLAG = "$(LIBFLAG)",
      LUA_INCDIR = "$(LUA_INCDIR)",
      LUA = "$(LUA)",
      LDFLAGS = "-L$(LIBBPF_LIBDIR) -L$(LIBELF_LIBDIR) -L$(ZLIB_LIBDIR) -L$(LUAJIT_LIBDIR)",
   },
   install_target = "install-rock",
   install_variables = {
      INST_PREFIX = "$(PREFIX)",
      INST_BINDIR = "$(BINDIR)",
      INST_LIBDIR = "$(LIBDIR)",
      LUA = "$(LUA)",
      LUA_INCDIR = "$(LUA_INCDIR)",
   },
}
