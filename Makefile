# bpfhost: a LuaJIT host and Lua module over libbpf.
# Out of tree: everything goes to $(O); `make clean` is `rm -rf $(O)`.

VERSION    := 0.1.0

O          ?= build
V          ?= 0
CC         ?= cc
CLANG      ?= clang
BPFTOOL    ?= bpftool
PKG_CONFIG ?= pkg-config
BUSTED     ?= busted
# The Lua the module is built for, and the specs run under: LuaJIT (the
# default; $(O)/lib/bpfhost.so) or Lua 5.4 (LUA=lua5.4; $(O)/lua5.4/bpfhost.so).
# Its version is asked of the interpreter (LuaRocks passes its path). The
# host, $(O)/bpfhost, always embeds LuaJIT.
LUA        ?= luajit
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
SHAREDIR   ?= $(PREFIX)/share/bpfhost
# Where each module goes: the cpath directories of /usr/local's LuaJIT and Lua 5.4.
LUAJIT_CMODDIR ?= $(PREFIX)/lib/lua/5.1
LUA54_CMODDIR  ?= $(PREFIX)/lib/lua/5.4

ifeq ($(V),1)
Q :=
msg :=
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/' \
	  -e 's/ppc64le/powerpc/' -e 's/mips.*/mips/' -e 's/riscv64/riscv/' -e 's/s390x/s390/')

LUAJIT_CFLAGS := $(shell $(PKG_CONFIG) --cflags luajit 2>/dev/null)
LUAJIT_LIBS   := $(shell $(PKG_CONFIG) --libs luajit 2>/dev/null)
LIBBPF_CFLAGS := $(shell $(PKG_CONFIG) --cflags libbpf 2>/dev/null)
LIBBPF_LIBS   := $(shell $(PKG_CONFIG) --libs libbpf 2>/dev/null)
# The exporter's HTTP side (bindings/exporter.c): its header only, since
# exporter.c opens the library with dlopen when the first exporter starts.
MHD_CFLAGS    := $(shell $(PKG_CONFIG) --cflags libmicrohttpd 2>/dev/null)
# The REPL's line editor: libedit, opened with dlopen when the REPL starts
# (so one-shot runs do not load it); READLINE=1 links GNU readline instead.
READLINE ?= 0
ifeq ($(READLINE),1)
LIBEDIT_CFLAGS := -DBH_READLINE
LIBEDIT_LIBS  := -lreadline
else
LIBEDIT_CFLAGS := $(shell $(PKG_CONFIG) --cflags libedit 2>/dev/null)
LIBEDIT_LIBS  :=
endif

LUA_ABI := $(shell $(LUA) -e 'io.write((_VERSION:match("%d+%.%d+")))' 2>/dev/null)
ifeq ($(LUA_ABI),5.4)
LUA54_CFLAGS  := $(shell $(PKG_CONFIG) --cflags lua5.4 2>/dev/null)
else ifneq ($(filter 5.2 5.3,$(LUA_ABI)),)
$(error bpfhost builds for LuaJIT 2.1 or Lua 5.4; $(LUA) is Lua $(LUA_ABI))
endif

# LuaRocks passes LUA_INCDIR; then it wins over pkg-config for the Lua it
# names. The 5.1 module is LuaJIT's (it uses LuaJIT's 5.2 extras): a plain
# Lua 5.1 include directory, without luajit.h, leaves pkg-config's luajit.
ifneq ($(LUA_INCDIR),)
ifeq ($(LUA_ABI),5.4)
LUA54_CFLAGS  := -I$(LUA_INCDIR)
else ifneq ($(wildcard $(LUA_INCDIR)/luajit.h),)
LUAJIT_CFLAGS := -I$(LUA_INCDIR)
endif
endif

CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Wno-unused-parameter -Wshadow -Wstrict-prototypes \
	   -Wmissing-prototypes -Wpointer-arith
BH_CFLAGS := $(CFLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -fPIC -fvisibility=hidden \
	     -DBH_VERSION='"$(VERSION)"' $(LUAJIT_CFLAGS) $(LIBBPF_CFLAGS) $(MHD_CFLAGS) -MMD -MP
LIBFLAG ?= -shared
LDFLAGS ?=

BINDINGS_SRC := $(wildcard bindings/*.c)
LUA_SRC      := $(wildcard bindings/lua/*.lua)
HOST_SRC     := $(wildcard host/*.c)
BPF_SRC      := $(wildcard bpf/*.bpf.c)

BINDINGS_OBJ := $(BINDINGS_SRC:%.c=$(O)/%.o)
HOST_OBJ     := $(HOST_SRC:%.c=$(O)/%.o)
BPF_OBJ      := $(BPF_SRC:bpf/%.c=$(O)/bpf/%.o)

MODULE_JIT := $(O)/lib/bpfhost.so
MODULE_54  := $(O)/lua5.4/bpfhost.so
BINDINGS_OBJ_54 := $(BINDINGS_SRC:%.c=$(O)/lua5.4/%.o)
ifeq ($(LUA_ABI),5.4)
MODULE := $(MODULE_54)
LUA_CMODDIR ?= $(LUA54_CMODDIR)
else
MODULE := $(MODULE_JIT)
LUA_CMODDIR ?= $(LUAJIT_CMODDIR)
endif
HOST   := $(O)/bpfhost

VMLINUX_BTF ?= /sys/kernel/btf/vmlinux
ifeq ($(VMLINUX_H),)
VMLINUX_H := $(O)/vmlinux.h
GEN_VMLINUX := 1
endif

# clang -target bpf does not search the host's system include dirs; add
# them after everything else, as libbpf-bootstrap does.
CLANG_SYS_INCLUDES = $(shell $(CLANG) -v -E - </dev/null 2>&1 \
	| sed -n '/<...> search starts here:/,/End of search list./{ s| \(/.*\)|-idirafter \1|p }')
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Wno-unused-function \
	      -I$(dir $(VMLINUX_H)) -Ibpf $(CLANG_SYS_INCLUDES)

.DELETE_ON_ERROR:
.PHONY: all host bindings bpf test run bench check clean deps install install-rock uninstall

all: bindings host bpf

bindings: $(MODULE)
host: $(HOST)
bpf: $(BPF_OBJ) $(O)/test_uprobe_target $(O)/bench/ring_c

$(O) $(O)/lib $(O)/bindings $(O)/host $(O)/bpf $(O)/lua5.4/bindings:
	$(Q)mkdir -p $@

$(O)/bindings/%.o: bindings/%.c | $(O)/bindings
	$(call msg,CC,$@)
	$(Q)$(CC) $(BH_CFLAGS) -c $< -o $@

# Lua parts of the module, embedded as C strings (see bindings/lualib.c).
$(O)/bindings/lua_modules.h: $(LUA_SRC) Makefile | $(O)/bindings
	$(call msg,GEN,$@)
	$(Q){ for f in $(LUA_SRC); do \
		n=$$(basename $$f .lua); \
		printf 'static const char lua_src_%s[] =\n' "$$n"; \
		od -An -v -tx1 $$f | sed -e 's/ /\\x/g' -e 's/^/"/' -e 's/$$/"/'; \
		printf ';\n'; \
	done; \
	printf 'static const struct { const char *name; const char *src; size_t len; } lua_modules[] = {\n'; \
	for f in $(LUA_SRC); do \
		n=$$(basename $$f .lua); \
		printf '\t{ "%s", lua_src_%s, sizeof(lua_src_%s) - 1 },\n' "$$n" "$$n" "$$n"; \
	done; \
	printf '\t{ 0, 0, 0 },\n};\n'; } > $@.tmp && mv $@.tmp $@

# A Lua error raised by a handler unwinds through these units' frames
# (LuaJIT uses the C ABI unwinder): -fexceptions runs their cleanup
# attributes on the way (signal handlers back, busy counts, deferred close).
$(O)/bindings/loop.o $(O)/bindings/ringbuf.o $(O)/bindings/perfbuf.o: BH_CFLAGS += -fexceptions

$(O)/bindings/lualib.o: $(O)/bindings/lua_modules.h
$(O)/bindings/lualib.o: BH_CFLAGS += -I$(O)/bindings

# Syscall names for the exporter's labels, from this system's <asm/unistd.h>.
$(O)/bindings/syscall_names.h: Makefile | $(O)/bindings
	$(call msg,GEN,$@)
	$(Q){ printf 'static const char *const bh_syscall_names[] = {\n'; \
		echo '#include <asm/unistd.h>' | $(CC) -E -dM - \
		| sed -n 's/^#define __NR_\([a-z0-9_]*\) \([0-9][0-9]*\)$$/\t[\2] = "\1",/p' | sort -t'[' -k2 -n; \
		printf '};\n'; } > $@.tmp && mv $@.tmp $@

$(O)/bindings/exporter.o: $(O)/bindings/syscall_names.h
$(O)/bindings/exporter.o: BH_CFLAGS += -I$(O)/bindings

$(O)/host/%.o: host/%.c | $(O)/host
	$(call msg,CC,$@)
	$(Q)$(CC) $(BH_CFLAGS) $(LIBEDIT_CFLAGS) -Ibindings -c $< -o $@

# The module never links libluajit: the interpreter that loads it provides it.
$(MODULE_JIT): $(BINDINGS_OBJ) | $(O)/lib
	$(call msg,LD,$@)
	$(Q)$(CC) $(LIBFLAG) $(LDFLAGS) -o $@ $^ $(LIBBPF_LIBS) -lelf -lz

# The Lua 5.4 module: the same sources against Lua 5.4's headers (no -fexceptions:
# 5.4's errors longjmp, and the units that must undo things on an error use
# to-be-closed slots there; see BH_SCOPE in bh.h). It never links liblua either.
$(O)/lua5.4/bindings/%.o: bindings/%.c | $(O)/lua5.4/bindings
	$(call msg,CC,$@)
	$(Q)$(CC) $(filter-out $(LUAJIT_CFLAGS),$(BH_CFLAGS)) $(LUA54_CFLAGS) -I$(O)/bindings -c $< -o $@

$(O)/lua5.4/bindings/lualib.o: $(O)/bindings/lua_modules.h
$(O)/lua5.4/bindings/exporter.o: $(O)/bindings/syscall_names.h

$(MODULE_54): $(BINDINGS_OBJ_54)
	$(call msg,LD,$@)
	$(Q)$(CC) $(LIBFLAG) $(LDFLAGS) -o $@ $^ $(LIBBPF_LIBS) -lelf -lz

$(HOST): $(HOST_OBJ) $(BINDINGS_OBJ) | $(O)
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LUAJIT_LIBS) $(LIBBPF_LIBS) -lelf -lz $(LIBEDIT_LIBS) -lm -ldl

ifeq ($(GEN_VMLINUX),1)
$(VMLINUX_H): | $(O)
	$(call msg,GEN,$@)
	$(Q)$(BPFTOOL) btf dump file $(VMLINUX_BTF) format c > $@.tmp && mv $@.tmp $@
endif

$(O)/bpf/%.bpf.o: bpf/%.bpf.c $(VMLINUX_H) $(wildcard bpf/*.h) | $(O)/bpf
	$(call msg,CLANG,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# A small user-space binary the uprobe specs attach to.
$(O)/test_uprobe_target: spec/fixtures/uprobe_target.c | $(O)
	$(call msg,CC,$@)
	$(Q)$(CC) -O0 -g -o $@ $<

# The ring benchmark's C side (libbpf baseline, test_run from another process).
$(O)/bench/ring_c: scripts/bench/ring_c.c | $(O)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(O)/bench
	$(Q)$(CC) $(CFLAGS) $(WARN) -std=gnu11 $(LIBBPF_CFLAGS) -o $@ $< $(LIBBPF_LIBS) -lelf -lz

# ---- running -------------------------------------------------------------

SPECS ?= spec
BUSTED_OUT   := -o spec/support/summary.lua
ifneq ($(shell id -u),0)
BUSTED_OUT   += --exclude-tags=root
endif
BUSTED_FLAGS := --lua=$(LUA) --cpath='$(dir $(MODULE))?.so' $(BUSTED_OUT)

# make test runs the specs under LuaJIT, then under Lua 5.4; LUA=x on the
# command line (or in the environment) runs them under x alone. Each run
# adds its counts to $(O)/test-counts; the last line is their sum.
ifeq ($(origin LUA),file)
TEST_LUAS ?= luajit lua5.4
else
TEST_LUAS ?= $(LUA)
endif
# Spec files one runtime cannot load: codec_spec's oracle is LuaJIT's FFI
# (its 64-bit rows are cdata literals; lua54_spec checks the codec under 5.4
# against string.pack), lua54_spec is written in 5.4 (<close>, integers).
SPECS_LUAJIT_ONLY ?= codec_spec
SPECS_LUA54_ONLY  ?= lua54_spec
WHY_LUAJIT_ONLY   := its oracle is LuaJIT's FFI; lua54_spec checks the codec instead
WHY_LUA54_ONLY    := it is Lua 5.4 code

# test and run do the whole set-up: missing packages, then a build in a
# sub-make (so that pkg-config is asked after the packages are there).
test: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)for l in $(TEST_LUAS); do $(MAKE) --no-print-directory LUA=$$l bindings || exit 1; done
ifneq ($(shell id -u),0)
	@echo "make test: not root, so the #root specs (everything touching the kernel) are skipped"
endif
	$(Q)rm -f $(O)/test-counts; st=0; \
	for l in $(TEST_LUAS); do \
		if [ "$$($$l -e 'io.write(jit and 1 or 0)')" = 1 ]; then \
			cpath='$(MODULE_JIT:%/bpfhost.so=%)/?.so'; skip=$(SPECS_LUA54_ONLY); \
			why="$(WHY_LUA54_ONLY)"; \
		else \
			cpath='$(MODULE_54:%/bpfhost.so=%)/?.so'; skip=$(SPECS_LUAJIT_ONLY); \
			why="$(WHY_LUAJIT_ONLY)"; \
		fi; \
		specs=; for s in $(SPECS); do case $$s in *$$skip*) ;; *) specs="$$specs $$s" ;; esac; done; \
		echo "make test: the specs under $$l; not $$skip: $$why"; \
		[ -n "$$specs" ] || { echo "$$l 0 0" >> $(O)/test-counts; continue; }; \
		BPFHOST_BUILD=$(O) BPFHOST_SUITE=$$l BPFHOST_COUNTS=$(O)/test-counts \
			$(BUSTED) --lua=$$l --cpath="$$cpath" --exclude-pattern="$$skip" \
			$(BUSTED_OUT) $$specs || st=1; \
		grep -q "^$$l " $(O)/test-counts 2>/dev/null || \
			{ echo "make test: the run under $$l ended early"; echo "$$l 0 1" >> $(O)/test-counts; st=1; }; \
	done; \
	awk '{ p += $$2; f += $$3 } END { printf "%d passed, %d failed\n", p, f }' $(O)/test-counts; \
	exit $$st

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(HOST) scripts/execve_counter.lua

bench: all
	$(Q)BPFHOST_BUILD=$(O) $(HOST) scripts/bench.lua $(BENCH)

# ---- checks: sanitizers, valgrind, fuzzers (make check) -------------------
#
# make check builds two more trees under $(O) and runs, in order:
#   check-asan      every spec with host and module built with ASan+UBSan
#                   ($(O)/asan; LuaJIT itself stays unsanitized);
#   check-valgrind  spec/support/memcheck.lua (codec, map ops, batches, ring
#                   buffers, object lifetimes) under valgrind memcheck, with
#                   the plain module: no error, no definite leak;
#   check-fuzz      each libFuzzer harness of spec/fuzz/ for FUZZ_TIME seconds
#                   ($(O)/fuzz, built by clang), from spec/fuzz/corpus/.
# Suppressions: spec/support/lsan.supp and valgrind.supp, each line justified.

ASAN_O    := $(O)/asan
FUZZ_O    := $(O)/fuzz
SAN_FLAGS ?= -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_SAN  ?= -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_TIME ?= 20
VALGRIND  ?= valgrind
STRESS_STEPS ?= 100000
# The ASan runtime of $(CC): preloaded into plain luajit, which is not linked with it.
ASAN_RT    = $(shell $(CC) -print-file-name=libasan.so)
LUAJIT_BIN = $(shell command -v luajit)
# luajit under busted gets the runtime through a wrapper first on PATH (so
# specs that start plain luajit get it too); LUA_INIT then takes LD_PRELOAD
# out of the environment again, so that no other program a spec starts
# (bash, tc, curl: curl deadlocks with ASan preloaded) inherits it. The
# sanitized host is linked with the runtime and needs no preload.
CHECK_LUA_INIT := local ok, ffi = pcall(require, "ffi") if ok then ffi.cdef "int unsetenv(const char *)" ffi.C.unsetenv "LD_PRELOAD" end
CHECK_ASAN_OPTIONS := detect_leaks=1:allocator_may_return_null=1:abort_on_error=0:print_summary=1
CHECK_LSAN_OPTIONS := suppressions=$(CURDIR)/spec/support/lsan.supp:print_suppressions=0
CHECK_UBSAN_OPTIONS := halt_on_error=1:print_stacktrace=1
VALGRIND_FLAGS := --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
		  --show-leak-kinds=definite --suppressions=spec/support/valgrind.supp -q

.PHONY: check-asan check-valgrind check-fuzz fuzzers

check: all
	$(Q)$(MAKE) --no-print-directory check-asan
	$(Q)$(MAKE) --no-print-directory check-valgrind
	$(Q)$(MAKE) --no-print-directory check-fuzz
	@echo "make check: passed (ASan+UBSan specs, valgrind memcheck, fuzzers)"

check-asan:
	$(Q)$(MAKE) --no-print-directory O=$(ASAN_O) CFLAGS='-O1 -g $(SAN_FLAGS)' \
		LDFLAGS='$(SAN_FLAGS)' all
	$(Q)mkdir -p $(ASAN_O)/wrap
	$(Q)printf '#!/bin/sh\n# make check: luajit with the ASan runtime preloaded\nLD_PRELOAD=%s exec %s "$$@"\n' \
		'$(ASAN_RT)' '$(LUAJIT_BIN)' > $(ASAN_O)/wrap/luajit && chmod +x $(ASAN_O)/wrap/luajit
	@echo "make check: every spec under ASan+UBSan ($(ASAN_O))"
	$(Q)PATH='$(abspath $(ASAN_O))/wrap':"$$PATH" LUA_INIT='$(CHECK_LUA_INIT)' \
		ASAN_OPTIONS='$(CHECK_ASAN_OPTIONS)' LSAN_OPTIONS='$(CHECK_LSAN_OPTIONS)' \
		UBSAN_OPTIONS='$(CHECK_UBSAN_OPTIONS)' BPFHOST_STRESS_STEPS=$(STRESS_STEPS) \
		BPFHOST_BUILD=$(ASAN_O) $(BUSTED) --lua=luajit --cpath='$(ASAN_O)/lib/?.so' \
		$(BUSTED_OUT) --exclude-pattern=lua54_spec $(SPECS)

# memcheck does not know what bpf() writes behind the pointers in its attr
# for some commands: spec/support/vgbpf.c (preloaded, test-only) tells it.
$(O)/vgbpf.so: spec/support/vgbpf.c | $(O)
	$(call msg,CC,$@)
	$(Q)$(CC) -O1 -g -shared -fPIC $(WARN) -o $@ $< -ldl

check-valgrind: all $(O)/vgbpf.so
	@echo "make check: spec/support/memcheck.lua under valgrind memcheck"
	$(Q)LD_PRELOAD='$(abspath $(O))/vgbpf.so' $(VALGRIND) $(VALGRIND_FLAGS) \
		$(LUAJIT_BIN) spec/support/memcheck.lua '$(abspath $(O))' > $(O)/valgrind.log 2>&1; \
		st=$$?; grep -v 'WARNING: unhandled eBPF command' $(O)/valgrind.log; \
		[ "$$st" = 0 ] || { echo "make check: valgrind failed ($$st)"; exit 1; }

# The harnesses link the bindings compiled by clang with libFuzzer's
# coverage; LuaJIT and libbpf are the system's, uninstrumented.
FUZZERS := codec_fuzz object_fuzz
FUZZ_BINDINGS_OBJ = $(BINDINGS_SRC:%.c=$(FUZZ_O)/%.o)

fuzzers: all
	$(Q)$(MAKE) -s --no-print-directory O=$(FUZZ_O) CC=$(CLANG) \
		CFLAGS='-O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link' $(FUZZ_BINDINGS_OBJ)
	$(Q)for f in $(FUZZERS); do \
		$(MAKE) --no-print-directory $(FUZZ_O)/$$f || exit 1; \
	done

$(FUZZ_O)/%_fuzz: spec/fuzz/%_fuzz.c $(FUZZ_BINDINGS_OBJ)
	$(call msg,LD,$@)
	$(Q)$(CLANG) -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer $(WARN) -std=gnu11 -D_GNU_SOURCE \
		-Ibindings $(LUAJIT_CFLAGS) $(LIBBPF_CFLAGS) \
		-DBH_FUZZ_BPF='"$(abspath $(O))/bpf"' -DBH_FUZZ_SRC='"$(CURDIR)/spec/fuzz"' \
		-o $@ $^ $(LUAJIT_LIBS) $(LIBBPF_LIBS) -lelf -lz -lm -ldl

# Each harness from its committed corpus, new finds in $(FUZZ_O)/corpus/NAME.
# FUZZ_TIME=300 make check-fuzz is the long run.
check-fuzz: fuzzers
	$(Q)for f in $(FUZZERS); do \
		n=$${f%_fuzz}; mkdir -p $(FUZZ_O)/corpus/$$n spec/fuzz/corpus/$$n; \
		echo "make check: $$f for $(FUZZ_TIME) s"; \
		ASAN_OPTIONS='$(CHECK_ASAN_OPTIONS)' UBSAN_OPTIONS='$(CHECK_UBSAN_OPTIONS)' \
		LSAN_OPTIONS='$(CHECK_LSAN_OPTIONS)' \
		$(FUZZ_O)/$$f -max_total_time=$(FUZZ_TIME) -timeout=60 -rss_limit_mb=4096 \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_O)/$$n- \
			$(FUZZ_O)/corpus/$$n spec/fuzz/corpus/$$n > $(FUZZ_O)/$$n.log 2>&1 \
		|| { tail -60 $(FUZZ_O)/$$n.log; echo "make check: $$f found something (above)"; exit 1; }; \
		grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|cov:' $(FUZZ_O)/$$n.log | tail -3; \
	done

clean:
	$(Q)rm -rf $(O)

# ---- dependencies (Debian 12 packages only) --------------------------------

DEB_PKGS := make gcc pkg-config clang llvm libbpf-dev libelf-dev zlib1g-dev \
	    luajit libluajit-5.1-dev bpftool lua-busted luarocks libedit-dev \
	    lua5.4 liblua5.4-dev iproute2 util-linux \
	    libmicrohttpd-dev prometheus curl \
	    valgrind libclang-rt-14-dev

deps:
	@missing=$$(for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else \
		echo "make deps: all packages present"; \
	fi

# ---- installation ----------------------------------------------------------

INSTALL ?= install

# The example scripts (scripts/bench.lua drives the benchmarks: not one) and
# the BPF objects they load, by the names they use.
EXAMPLES    := $(filter-out scripts/bench.lua,$(wildcard scripts/*.lua))
EXAMPLE_BPF := $(sort $(shell grep -oh '[a-z0-9_]*\.bpf\.o' $(EXAMPLES)))

# The module for $(LUA) goes to LUA_CMODDIR; the other one, when it was
# built (make LUA=lua5.4, or make test), to its own Lua's directory.
ifeq ($(LUA_ABI),5.4)
OTHER_MODULE  := $(MODULE_JIT)
OTHER_CMODDIR := $(LUAJIT_CMODDIR)
else
OTHER_MODULE  := $(MODULE_54)
OTHER_CMODDIR := $(LUA54_CMODDIR)
endif

# install: the host, the module(s), the man page (its version and paths
# filled in), and the examples under $(SHAREDIR): scripts/ and bpf/, where
# the scripts look for their objects when there is no build beside them.
install: all install-rock $(MODULE_JIT)
	$(INSTALL) -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(SHAREDIR)/scripts $(DESTDIR)$(SHAREDIR)/bpf
	$(Q)if [ -f $(OTHER_MODULE) ]; then \
		echo "$(INSTALL) -m 0755 $(OTHER_MODULE) $(DESTDIR)$(OTHER_CMODDIR)/bpfhost.so"; \
		$(INSTALL) -d $(DESTDIR)$(OTHER_CMODDIR) && \
		$(INSTALL) -m 0755 $(OTHER_MODULE) $(DESTDIR)$(OTHER_CMODDIR)/bpfhost.so; \
	fi
	sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@SHAREDIR@|$(SHAREDIR)|g' host/bpfhost.1 \
		> $(DESTDIR)$(MANDIR)/man1/bpfhost.1
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/bpfhost.1
	$(INSTALL) -m 0644 $(EXAMPLES) $(DESTDIR)$(SHAREDIR)/scripts
	$(INSTALL) -m 0644 $(EXAMPLE_BPF:%=$(O)/bpf/%) $(DESTDIR)$(SHAREDIR)/bpf

# What the rockspec installs: the host and the module for $(LUA), into
# LuaRocks' INST_BINDIR and INST_LIBDIR (it deploys them into its tree).
INST_BINDIR ?= $(BINDIR)
INST_LIBDIR ?= $(LUA_CMODDIR)
install-rock: host bindings
	$(INSTALL) -d $(DESTDIR)$(INST_BINDIR) $(DESTDIR)$(INST_LIBDIR)
	$(INSTALL) -m 0755 $(HOST) $(DESTDIR)$(INST_BINDIR)/bpfhost
	$(INSTALL) -m 0755 $(MODULE) $(DESTDIR)$(INST_LIBDIR)/bpfhost.so

# uninstall removes what install put there (directories it made stay, but
# $(SHAREDIR)'s own), whichever modules were built.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/bpfhost $(DESTDIR)$(LUA_CMODDIR)/bpfhost.so \
		$(DESTDIR)$(OTHER_CMODDIR)/bpfhost.so $(DESTDIR)$(MANDIR)/man1/bpfhost.1 \
		$(EXAMPLES:scripts/%=$(DESTDIR)$(SHAREDIR)/scripts/%) \
		$(EXAMPLE_BPF:%=$(DESTDIR)$(SHAREDIR)/bpf/%)
	rmdir $(DESTDIR)$(SHAREDIR)/scripts $(DESTDIR)$(SHAREDIR)/bpf $(DESTDIR)$(SHAREDIR) 2>/dev/null || true

-include $(BINDINGS_OBJ:.o=.d) $(BINDINGS_OBJ_54:.o=.d) $(HOST_OBJ:.o=.d)
