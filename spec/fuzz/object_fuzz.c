/*
 * object_fuzz.c: libFuzzer harness for opening and loading BPF objects. An
 * input is the bytes of an ELF file (the seeds are the fixture objects):
 * bpf.open_mem(bytes, {pin_root = a private bpffs directory}), a look at
 * its maps and programs, obj:load() against the real kernel, obj:close().
 * Every refusal must be a clean error (an error object with a message, or
 * an argument error string); anything else aborts (a finding), as do the
 * sanitizers. Pins a mutated object asks for land in the private directory,
 * emptied after each input. Needs root (it loads), and runs in a memory
 * cgroup of its own (1 GiB).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>

#include "bh.h"

void __lsan_disable(void);
void __lsan_enable(void);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static char pin_dir[128];

static const char harness[] =
	"local bpf = require 'bpfhost'\n"
	"local pin_root = ...\n"
	"local function clean(err, what)\n"
	"  if type(err) == 'string' then return end\n"
	"  assert(type(err) == 'table' and type(err.message) == 'string' and err.code,\n"
	"    what .. ': not an error object: ' .. tostring(err))\n"
	"end\n"
	"return function(bytes)\n"
	"  local ok, o = pcall(bpf.open_mem, bytes, {pin_root = pin_root})\n"
	"  if not ok then return clean(o, 'open_mem') end\n"
	"  for _, m in pairs(o:maps()) do local _ = m.key_size, m.value_size, m.type end\n"
	"  for _, p in pairs(o:programs()) do local _ = p.section, p.type end\n"
	"  local ok2, err = pcall(o.load, o)\n"
	"  if ok2 then\n"
	"    for _, m in pairs(o:maps()) do pcall(m.count, m) end\n"
	"  else\n"
	"    clean(err, 'load')\n"
	"  end\n"
	"  assert(o:close() == true)\n"
	"end\n";

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "object_fuzz: %s: %s\n", what, msg ? msg : "");
	abort();
}

static void empty_pin_dir(void)
{
	DIR *d = opendir(pin_dir);
	struct dirent *de;
	char path[512];

	if (!d)
		return;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", pin_dir, de->d_name);
			unlink(path);
		}
	closedir(d);
}

static void remove_pin_dir(void)
{
	empty_pin_dir();
	rmdir(pin_dir);
}

/*
 * A mutated max_entries asks the kernel for gigabytes, and gets them: the
 * whole run goes into a memory cgroup (BPF memory is charged to it since
 * 5.11), so that such a map fails with ENOMEM instead of waking the OOM
 * killer of the machine.
 */
static char cg_dir[128], cg_root[128];

static int write_file(const char *dir, const char *file, const char *v)
{
	char path[256];
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	f = fopen(path, "we");
	if (!f)
		return -1;
	ok = fputs(v, f) >= 0;
	return fclose(f) || !ok ? -1 : 0;
}

static void leave_cgroup(void)
{
	char pid[32];

	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	write_file(cg_root, "cgroup.procs", pid);
	rmdir(cg_dir);
}

static void enter_cgroup(void)
{
	static const char *const roots[][2] = {
		{ "/sys/fs/cgroup/memory", "memory.limit_in_bytes" },
		{ "/sys/fs/cgroup/unified", "memory.max" },
		{ "/sys/fs/cgroup", "memory.max" },
	};
	char pid[32];
	size_t i;

	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	for (i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
		snprintf(cg_dir, sizeof(cg_dir), "%s/bpfhost-fuzz-%d", roots[i][0], (int)getpid());
		if (mkdir(cg_dir, 0700))
			continue;
		if (!write_file(cg_dir, roots[i][1], "1073741824\n") &&
		    !write_file(cg_dir, "cgroup.procs", pid)) {
			snprintf(cg_root, sizeof(cg_root), "%s", roots[i][0]);
			atexit(leave_cgroup);
			return;
		}
		rmdir(cg_dir);
	}
	die("no memory cgroup to run in", "huge maps would exhaust the machine's memory");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (bh_ensure_bpffs())
		die("bpffs", "cannot mount /sys/fs/bpf");
	snprintf(pin_dir, sizeof(pin_dir), "/sys/fs/bpf/bpfhost-fuzz-%d", (int)getpid());
	if (mkdir(pin_dir, 0700))
		die("mkdir", pin_dir);
	atexit(remove_pin_dir);
	enter_cgroup();
	__lsan_disable(); /* the state lives for the whole run, in a heap LSan cannot see */
	L = luaL_newstate();
	luaL_openlibs(L);
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, luaopen_bpfhost);
	lua_setfield(L, -2, "bpfhost");
	lua_pop(L, 2);
	if (luaL_loadbuffer(L, harness, sizeof(harness) - 1, "=object_fuzz"))
		die("harness", lua_tostring(L, -1));
	lua_pushstring(L, pin_dir);
	if (lua_pcall(L, 1, 1, 0))
		die("harness", lua_tostring(L, -1));
	lua_setfield(L, LUA_REGISTRYINDEX, "object_fuzz");
	lua_gc(L, LUA_GCCOLLECT, 0);
	__lsan_enable();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lua_getfield(L, LUA_REGISTRYINDEX, "object_fuzz");
	lua_pushlstring(L, (const char *)data, size);
	if (lua_pcall(L, 1, 0, 0))
		die("property", lua_tostring(L, -1));
	lua_gc(L, LUA_GCCOLLECT, 0);
	empty_pin_dir();
	return 0;
}
