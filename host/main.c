/* main.c: the bpfhost executable, laid out like lua.c and luajit.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>
#include <luajit.h>

#include "bh.h"
#include "host.h"

/* bytes of garbage the collector may let pile up past the live heap: Go's
 * minimum heap target (see bindings/gc.c); bpf.gc_floor(0) turns it off */
#define HOST_GC_FLOOR (4 << 20)

static const char *progname = "bpfhost";

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s [options] [script.lua [args...]]\n"
		"  -e CODE     run CODE\n"
		"  -l NAME     require library NAME\n"
		"  -i          enter the REPL after running the script\n"
		"  -v          show versions (bpfhost, libbpf, LuaJIT, kernel)\n"
		"  -d          show libbpf's debug output\n"
		"  --features  what this kernel supports, and the privileges at hand\n"
		"  --help      show this help\n"
		"  --          stop handling options\n"
		"  -           run the script from stdin\n"
		"With no script, on a terminal: the REPL. Needs root or CAP_BPF.\n"
		"Exit status: 0 success, 1 error, 2 usage error, 130 stopped by SIGINT, 143 by\n"
		"SIGTERM.\n",
		progname);
}

static void l_message(const char *msg)
{
	fprintf(stderr, "%s: %s\n", progname, msg);
	fflush(stderr);
}

/* ------------------------------------------------------------------------ */
/* -- Running code -------------------------------------------------------- */

/*
 * Message handler: error objects print through __tostring, with their hint
 * and the tail of a verifier log; then the traceback.
 */
static int msghandler(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	if (!msg) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
			luaL_Buffer b;

			luaL_buffinit(L, &b);
			luaL_addvalue(&b);
			if (lua_istable(L, 1)) {
				lua_getfield(L, 1, "hint");
				if (lua_type(L, -1) == LUA_TSTRING) {
					luaL_addstring(&b, "\n  hint: ");
					luaL_addvalue(&b);
				} else {
					lua_pop(L, 1);
				}
				lua_getfield(L, 1, "log");
				if (lua_type(L, -1) == LUA_TSTRING) {
					size_t n;
					const char *log = lua_tolstring(L, -1, &n);
					const char *p = log + n;
					int lines = 0;

					while (p > log && lines < 16)
						if (*--p == '\n')
							lines++;
					lua_pushfstring(L, "\n  log (%s):\n%s", p > log ?
								"last lines; err.log has all" : "",
							p > log ? p + 1 : log);
					lua_remove(L, -2);
					luaL_addvalue(&b);
				} else {
					lua_pop(L, 1);
				}
			}
			luaL_pushresult(&b);
			msg = lua_tostring(L, -1);
		} else {
			msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
		}
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
}

int host_docall(lua_State *L, int narg, int nres)
{
	int status;
	int base = lua_gettop(L) - narg;

	lua_pushcfunction(L, msghandler);
	lua_insert(L, base);
	host_sig_install(L);
	status = lua_pcall(L, narg, nres, base);
	host_sig_remove();
	lua_remove(L, base);
	return status;
}

void host_report(lua_State *L, int status)
{
	if (status && !lua_isnil(L, -1)) {
		const char *msg = lua_tostring(L, -1);

		if (!msg)
			msg = "(error object is not a string)";
		fflush(stdout); /* what ran before the error comes first */
		l_message(msg);
		lua_pop(L, 1);
	}
}

static int dochunk(lua_State *L, int status)
{
	if (status == 0)
		status = host_docall(L, 0, 0);
	host_report(L, status);
	return status;
}

/* -l NAME: require NAME and keep the result as the global NAME. */
static int dolibrary(lua_State *L, const char *name)
{
	int status;

	lua_getglobal(L, "require");
	lua_pushstring(L, name);
	status = host_docall(L, 1, 1);
	if (status == 0)
		lua_setglobal(L, name);
	host_report(L, status);
	return status;
}

/* arg as lua.c lays it out: arg[0] the script, negatives before, positives after. */
static void create_argtable(lua_State *L, char **argv, int argc, int script)
{
	int i;

	if (script == argc)
		script = 0;
	lua_createtable(L, argc - script - 1 > 0 ? argc - script - 1 : 0, script + 1);
	for (i = 0; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i - script);
	}
	lua_setglobal(L, "arg");
}

static int handle_script(lua_State *L, char **argv, int argc, int script)
{
	const char *fname = argv[script];
	int status, n, i;

	if (!strcmp(fname, "-") && strcmp(argv[script - 1], "--"))
		fname = NULL;
	status = luaL_loadfile(L, fname);
	if (status == 0) {
		n = argc - script - 1;
		luaL_checkstack(L, n + 3, "too many arguments to script");
		for (i = script + 1; i < argc; i++)
			lua_pushstring(L, argv[i]);
		status = host_docall(L, n, 0);
	}
	host_report(L, status);
	return status;
}

static int print_versions(void)
{
	struct utsname u;

	printf("bpfhost %s\n", BH_VERSION);
	printf("libbpf %s\n", libbpf_version_string());
#ifdef LUAJIT_VERSION
	printf("%s\n", LUAJIT_VERSION);
#else
	printf("%s\n", LUA_RELEASE);
#endif
	if (!uname(&u))
		printf("kernel %s %s\n", u.release, u.machine);
	fflush(stdout);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* -- Main ---------------------------------------------------------------- */

enum { HAS_E = 1, HAS_I = 2, HAS_V = 4, HAS_D = 8, HAS_F = 16 };

/* Returns the index of the script, argc when none, or -1 on a usage error. */
static int collectargs(char **argv, int argc, int *flags)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (a[0] != '-')
			return i;
		if (!strcmp(a, "--"))
			return i + 1 < argc ? i + 1 : argc;
		if (!strcmp(a, "-"))
			return i;
		if (!strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		}
		if (!strcmp(a, "--features")) {
			*flags |= HAS_F;
		} else if (!strcmp(a, "-i")) {
			*flags |= HAS_I;
		} else if (!strcmp(a, "-v")) {
			*flags |= HAS_V;
		} else if (!strcmp(a, "-d")) {
			*flags |= HAS_D;
		} else if (!strcmp(a, "-e") || !strcmp(a, "-l")) {
			if (a[1] == 'e')
				*flags |= HAS_E;
			if (++i >= argc) {
				fprintf(stderr, "%s: '%s' needs an argument\n", progname, a);
				return -1;
			}
		} else if ((a[1] == 'e' || a[1] == 'l') && a[2]) {
			if (a[1] == 'e')
				*flags |= HAS_E;
		} else {
			fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
			return -1;
		}
	}
	return argc;
}

static int runargs(lua_State *L, char **argv, int n)
{
	int i;

	for (i = 1; i < n; i++) {
		const char *a = argv[i];
		const char *v = NULL;

		if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l') || a[2] == '-')
			continue;
		v = a[2] ? a + 2 : argv[++i];
		if (a[1] == 'e') {
			if (dochunk(L, luaL_loadbuffer(L, v, strlen(v), "=(command line)")))
				return 1;
		} else if (dolibrary(L, v)) {
			return 1;
		}
	}
	return 0;
}

/* help(...): bpfhost.repl's, loaded on first use so that start-up stays light. */
static int l_help(lua_State *L)
{
	int n = lua_gettop(L);

	lua_getglobal(L, "require");
	lua_pushliteral(L, "bpfhost.repl");
	lua_call(L, 1, 1);
	lua_getfield(L, -1, "help");
	lua_insert(L, 1);
	lua_pop(L, 1);
	lua_call(L, n, LUA_MULTRET);
	return lua_gettop(L);
}

static void open_bpfhost(lua_State *L)
{
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, luaopen_bpfhost);
	lua_setfield(L, -2, "bpfhost");
	lua_pop(L, 2);
	lua_getglobal(L, "require");
	lua_pushliteral(L, "bpfhost");
	lua_call(L, 1, 1);
	/* the host's VM: a floor under the GC's headroom (bindings/gc.c) */
	lua_getfield(L, -1, "gc_floor");
	lua_pushnumber(L, HOST_GC_FLOOR);
	lua_call(L, 1, 0);
	lua_setglobal(L, "bpf");
	/* the host's only other global; the module adds none */
	lua_pushcfunction(L, l_help);
	lua_setglobal(L, "help");
}

/*
 * LeakSanitizer (make check) cannot see into LuaJIT's heap (its own mmap'd
 * arenas), so what a live Lua state holds looks unreachable to it. An exit
 * that leaves the state open (os.exit without close) keeps all of that on
 * purpose: no leak check then. Every other exit closes the state first.
 */
#if defined(__SANITIZE_ADDRESS__)
#define BH_LSAN_HOOK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BH_LSAN_HOOK 1
#endif
#endif
static int state_open;
#ifdef BH_LSAN_HOOK
BH_API int __lsan_is_turned_off(void);
BH_API int __lsan_is_turned_off(void)
{
	return state_open;
}
#endif

struct smain {
	int argc;
	char **argv;
	int status;
};

static int pmain(lua_State *L)
{
	struct smain *s = lua_touserdata(L, 1);
	char **argv = s->argv;
	int argc = s->argc;
	int flags = 0;
	int script = collectargs(argv, argc, &flags);
	const char *why;

	if (script < 0) {
		usage(stderr);
		s->status = 2;
		return 0;
	}
	if (flags & HAS_D)
		bh_set_debug(1);
	if (flags & HAS_F) {
		s->status = host_features();
		return 0;
	}
	if ((flags & HAS_V) && script == argc && !(flags & (HAS_E | HAS_I))) {
		s->status = print_versions();
		return 0;
	}
	if (flags & HAS_V)
		print_versions();
	/* everything from here runs Lua against the kernel: fail fast, in one line */
	if (!host_privileged(&why)) {
		l_message(why);
		s->status = 1;
		return 0;
	}
	lua_gc(L, LUA_GCSTOP, 0);
	luaL_openlibs(L);
	lua_gc(L, LUA_GCRESTART, 0);
	open_bpfhost(L);
	create_argtable(L, argv, argc, script);
	if (runargs(L, argv, script)) {
		s->status = 1;
		return 0;
	}
	if (script < argc && handle_script(L, argv, argc, script)) {
		s->status = 1;
		return 0;
	}
	if (flags & HAS_I) {
		s->status = host_repl(L);
	} else if (script == argc && !(flags & (HAS_E | HAS_V))) {
		if (isatty(0)) {
			s->status = host_repl(L);
		} else {
			/* no script, stdin not a terminal: run stdin as the script */
			if (dochunk(L, luaL_loadfile(L, NULL)))
				s->status = 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct smain s = { argc, argv, 0 };
	lua_State *L;
	int status, sig;

	if (argv[0] && argv[0][0])
		progname = "bpfhost";
	L = luaL_newstate();
	if (!L) {
		l_message("cannot create state: not enough memory");
		return 1;
	}
	state_open = 1;
	status = lua_cpcall(L, pmain, &s);
	if (status) {
		host_report(L, status);
		s.status = 1;
	}
	/* lua_close runs every __gc: links are destroyed, objects closed */
	lua_close(L);
	state_open = 0;
	sig = host_sig_status();
	if (s.status == 1 && sig)
		return sig;
	return s.status;
}
