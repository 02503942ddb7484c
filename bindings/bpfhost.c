/* bpfhost.c: the module table and the helpers every unit shares. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bh.h"

/* ------------------------------------------------------------------------ */
/* -- Helpers ------------------------------------------------------------- */

/* luaL_setfuncs for 5.1: register l into the table below nup upvalues. */
void bh_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
	int i;

	luaL_checkstack(L, nup + 1, "too many upvalues");
	for (; l->name; l++) {
		for (i = 0; i < nup; i++)
			lua_pushvalue(L, -nup);
		lua_pushcclosure(L, l->func, nup);
		lua_setfield(L, -(nup + 2), l->name);
	}
	lua_pop(L, nup);
}

/*
 * Create the metatable name (registered by name, __name set by hand) with
 * the metamethods meta and a separate __index table of methods. Leaves the
 * metatable on the stack.
 */
void bh_newmetatable(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods)
{
	luaL_newmetatable(L, name);
	bh_setfuncs(L, meta, 0);
	lua_pushstring(L, name);
	lua_setfield(L, -2, "__name");
	if (methods) {
		lua_newtable(L);
		bh_setfuncs(L, methods, 0);
		lua_setfield(L, -2, "__index");
	}
}

const char *bh_numstr(lua_State *L, lua_Number n)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%.14g", (double)n);
	lua_pushstring(L, buf);
	return lua_tostring(L, -1);
}

void *bh_testud(lua_State *L, int idx, const char *tname)
{
	void *p = lua_touserdata(L, idx);

	if (!p || !lua_getmetatable(L, idx))
		return NULL;
	luaL_getmetatable(L, tname);
	if (!lua_rawequal(L, -1, -2))
		p = NULL;
	lua_pop(L, 2);
	return p;
}

const char *bh_typename(lua_State *L, int idx)
{
	const char *n;

	if (lua_getmetatable(L, idx)) {
		lua_getfield(L, -1, "__name");
		n = lua_tostring(L, -1);
		lua_pop(L, 2);
		if (n)
			return n;
	}
	return luaL_typename(L, idx);
}

void *bh_checkud(lua_State *L, int idx, const char *tname)
{
	void *p = bh_testud(L, idx, tname);

	if (!p) {
		const char *msg = lua_pushfstring(L, "%s expected, got %s", tname,
						  bh_typename(L, idx));

		luaL_argerror(L, idx, msg);
	}
	return p;
}

/*
 * An option table at idx (or nil) must hold only names from known. Checked
 * before any syscall so that a typo is an error, never a silent default.
 */
int bh_opt_check(lua_State *L, int idx, const char *fn, const char *const known[])
{
	int t = lua_type(L, idx);

	if (t == LUA_TNONE || t == LUA_TNIL)
		return 0;
	if (t != LUA_TTABLE)
		return luaL_error(L, "%s: options must be a table, got %s", fn, luaL_typename(L, idx));
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k;
		int i, ok = 0;

		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			return luaL_error(L, "%s: option names are strings, got a %s", fn,
					  luaL_typename(L, -1));
		k = lua_tostring(L, -1);
		for (i = 0; known[i]; i++)
			if (!strcmp(k, known[i]))
				ok = 1;
		if (!ok) {
			luaL_Buffer b;

			luaL_buffinit(L, &b);
			for (i = 0; known[i]; i++) {
				if (i)
					luaL_addstring(&b, ", ");
				luaL_addstring(&b, known[i]);
			}
			luaL_pushresult(&b);
			return luaL_error(L, "%s: unknown option '%s' (known: %s)", fn, k,
					  lua_tostring(L, -1));
		}
	}
	return 1;
}

int bh_opt_bool(lua_State *L, int idx, const char *field, int def)
{
	int v = def;

	if (lua_type(L, idx) != LUA_TTABLE)
		return def;
	lua_getfield(L, idx, field);
	if (!lua_isnil(L, -1))
		v = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return v;
}

#ifndef BH_LUAJIT
/* BH_SCOPE under Lua 5.4 (see bh.h): a to-be-closed box holding the state. */
struct bh_scope {
	void (*fn)(void *);
	int done;
	max_align_t data[];
};

/* __close, and __gc for a coroutine that died with the box unclosed. */
static int scope_close(lua_State *L)
{
	struct bh_scope *s = lua_touserdata(L, 1);

	if (s && !s->done) {
		s->done = 1;
		s->fn(s->data);
	}
	return 0;
}

void *bh_scope_push(lua_State *L, size_t size, void (*fn)(void *))
{
	struct bh_scope *s = lua_newuserdatauv(L, sizeof(*s) + size, 0);

	s->fn = fn;
	s->done = 1; /* nothing to undo until the box is marked */
	memset(s->data, 0, size);
	if (luaL_newmetatable(L, "bpfhost.scope")) {
		lua_pushcfunction(L, scope_close);
		lua_setfield(L, -2, "__close");
		lua_pushcfunction(L, scope_close);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	lua_toclose(L, -1);
	s->done = 0;
	return s->data;
}
#endif

/*
 * A numeric field ("memlock", "frozen", ...) of /proc/self/fdinfo/<fd>, or
 * -1 when there is none: what the kernel tells of a BPF fd beyond its info.
 */
long long bh_fdinfo(int fd, const char *field)
{
	char path[64], line[256];
	size_t n = strlen(field);
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, field, n) && line[n] == ':') {
			v = strtoll(line + n + 1, NULL, 0);
			break;
		}
	}
	fclose(f);
	return v;
}

/* ------------------------------------------------------------------------ */
/* -- Module -------------------------------------------------------------- */

static int l_debug(lua_State *L)
{
	bh_set_debug(lua_toboolean(L, 1));
	return 0;
}

static int l_libbpf_version(lua_State *L)
{
	lua_pushstring(L, libbpf_version_string());
	return 1;
}

static const luaL_Reg funcs[] = {
	{ "debug", l_debug },
	{ "libbpf_version", l_libbpf_version },
	{ NULL, NULL },
};

int luaopen_bpfhost(lua_State *L)
{
	lua_newtable(L);
	bh_setfuncs(L, funcs, 0);
	lua_pushliteral(L, BH_VERSION);
	lua_setfield(L, -2, "_VERSION");

	bh_err_init(L);
	bh_codec_init(L);
	bh_object_init(L);
	bh_map_init(L);
	bh_prog_init(L);
	bh_link_init(L);
	bh_loop_init(L);
	bh_exporter_init(L);
	bh_ringbuf_init(L);
	bh_perfbuf_init(L);
	bh_sys_init(L);
	bh_gc_init(L);
	bh_lualib_init(L); /* last: Lua parts see the whole module */
	return 1;
}
