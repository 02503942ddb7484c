/*
 * lualib.c: the parts of the module written in Lua (bindings/lua/NAME.lua),
 * compiled into the C module as strings so that the module stays one file.
 * Each is a package.preload entry "bpfhost.<name>"; its chunk gets the
 * module table as its first argument. The ones in autoload run at open.
 */
#include <string.h>

#include "bh.h"
#include "lua_modules.h" /* generated: struct { name, src, len } lua_modules[] */

static const char *const autoload[] = { "pp", NULL };

#ifndef BH_LUAJIT
/*
 * The FFI halves: LuaJIT's only. Other Luas get nil from their loaders
 * without compiling them (they may hold LuaJIT syntax, like 1ULL); C then
 * does the work itself.
 */
static const char *const luajit_only[] = { "mapops", "ringview", "mmapview", "codecgen", NULL };
#endif

static int preload_loader(lua_State *L)
{
	size_t i = (size_t)lua_tointeger(L, lua_upvalueindex(1));
	char chunkname[64];

#ifndef BH_LUAJIT
	for (int j = 0; luajit_only[j]; j++) {
		if (!strcmp(lua_modules[i].name, luajit_only[j])) {
			lua_pushnil(L);
			return 1;
		}
	}
#endif
	snprintf(chunkname, sizeof(chunkname), "=bpfhost.%s", lua_modules[i].name);
	if (luaL_loadbuffer(L, lua_modules[i].src, lua_modules[i].len, chunkname))
		return lua_error(L);
	lua_pushvalue(L, lua_upvalueindex(2)); /* the module table */
	lua_pushstring(L, lua_modules[i].name);
	lua_call(L, 2, 1);
	return 1;
}

/* The module table is at -1. */
void bh_lualib_init(lua_State *L)
{
	size_t i;
	int j;

	lua_getglobal(L, "package");
	if (!lua_istable(L, -1)) {
		lua_pop(L, 1);
		return;
	}
	lua_getfield(L, -1, "preload");
	for (i = 0; lua_modules[i].name; i++) {
		char full[64];

		snprintf(full, sizeof(full), "bpfhost.%s", lua_modules[i].name);
		lua_pushinteger(L, (lua_Integer)i);
		lua_pushvalue(L, -4);
		lua_pushcclosure(L, preload_loader, 2);
		lua_setfield(L, -2, full);
	}
	lua_pop(L, 2);
	for (j = 0; autoload[j]; j++) {
		lua_getglobal(L, "require");
		lua_pushfstring(L, "bpfhost.%s", autoload[j]);
		lua_call(L, 1, 0);
	}
}
