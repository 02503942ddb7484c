/*
 * gc.c: bpf.gc_floor(), a floor under the collector's headroom.
 *
 * Lua's collector starts a cycle once the heap has grown by pause% of what
 * the last cycle left live. A bpfhost script's live heap is small (the
 * module and an object are about 160 KB), so at the default pause of 200 a
 * loop that decodes a struct per lookup runs a whole cycle every few hundred
 * lookups, and every cycle marks everything live and sweeps the string
 * table: in scripts/bench/codec.lua that was most of what a new table for a
 * 64-byte struct cost. Go paces its collector the same way and keeps a 4 MB
 * minimum heap target for the same reason; this is that floor. After each
 * cycle the pause is raised so that the next one starts no sooner than
 * floor bytes past the heap the cycle left, never lower than the pause the
 * script had (a collectgarbage("setpause") while the floor is set becomes
 * that pause). It costs at most floor bytes of garbage held a while longer.
 *
 * How the end of a cycle is seen: a sentinel userdata nothing refers to,
 * whose __gc applies the floor and makes the next sentinel. Each carries
 * the generation it was made in; a sentinel of an older generation (the
 * floor was set again, or turned off) makes none. The state lives in the
 * registry; its own __gc runs only at lua_close, and stops the chain there
 * (LuaJIT's lua_close finalizes again while finalizers make new userdata).
 *
 * LuaJIT only: Lua 5.4 ignores lua_gc calls made from a finalizer, and has
 * its generational mode for short-lived garbage instead.
 */
#include <dlfcn.h>

#include "bh.h"

#define GC_STATE    "bpfhost.gc_floor"
#define GC_SENTINEL "bpfhost.gc_sentinel"
/* 1 GiB: beyond that a floor is a leak, and pause * heap could overflow */
#define GC_FLOOR_MAX ((lua_Number)(1 << 30))

struct gc_state {
	size_t floor;	/* bytes; 0: off */
	unsigned gen;	/* of the sentinel that may apply it */
	int base_pause; /* the script's pause, restored when the floor goes */
	int set_pause;	/* the pause this file set last */
	int closing;
};

#ifdef BH_LUAJIT
static struct gc_state *gc_state(lua_State *L)
{
	struct gc_state *st;

	lua_getfield(L, LUA_REGISTRYINDEX, GC_STATE);
	st = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return st;
}

static int gc_getpause(lua_State *L)
{
	int p = lua_gc(L, LUA_GCSETPAUSE, 200);

	lua_gc(L, LUA_GCSETPAUSE, p);
	return p;
}

/* The pause that starts the next cycle floor bytes past the heap now. */
static void gc_apply(lua_State *L, struct gc_state *st)
{
	size_t heap = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
	int cur = gc_getpause(L), pause = st->base_pause;

	if (cur != st->set_pause)
		st->base_pause = pause = cur;
	if (heap > 0) {
		/* threshold = heap / 100 * pause >= heap + floor */
		size_t need = (heap + st->floor) / (heap / 100 + 1) + 1;

		if (need > 100000)
			need = 100000;
		if ((int)need > pause)
			pause = (int)need;
	}
	lua_gc(L, LUA_GCSETPAUSE, pause);
	st->set_pause = pause;
}

static void gc_sentinel(lua_State *L, unsigned gen)
{
	unsigned *g = lua_newuserdata(L, sizeof(*g));

	*g = gen;
	luaL_getmetatable(L, GC_SENTINEL);
	lua_setmetatable(L, -2);
	lua_pop(L, 1);
}

/* A cycle has ended: apply the floor and wait for the next one. */
static int sentinel_gc(lua_State *L)
{
	unsigned *g = lua_touserdata(L, 1);
	struct gc_state *st = gc_state(L);

	if (!st || st->closing || !st->floor || *g != st->gen)
		return 0;
	gc_apply(L, st);
	gc_sentinel(L, st->gen);
	return 0;
}

/*
 * Keep this code mapped to the end of the process. lua_close finalizes
 * until no finalizer makes new userdata, and by then the package library
 * may have dlclose'd the module (plain luajit): a sentinel made in that
 * first round would run code that is gone in the next one.
 */
static void gc_pin_module(void)
{
	static int pinned;
	Dl_info di;

	if (pinned)
		return;
	pinned = 1;
	if (dladdr((void *)gc_pin_module, &di) && di.dli_fname)
		dlopen(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
}

static int state_gc(lua_State *L)
{
	struct gc_state *st = lua_touserdata(L, 1);

	st->closing = 1;
	return 0;
}
#endif

/* bpf.gc_floor([bytes]): the floor before the call; sets it when given. */
static int l_gc_floor(lua_State *L)
{
#ifdef BH_LUAJIT
	struct gc_state *st = gc_state(L);
	size_t old = st->floor;
	lua_Number n;

	if (lua_isnoneornil(L, 1)) {
		lua_pushnumber(L, (lua_Number)old);
		return 1;
	}
	if (lua_type(L, 1) != LUA_TNUMBER)
		return luaL_error(
			L, "gc_floor: bytes must be a number (0 turns the floor off), got %s",
			luaL_typename(L, 1));
	n = lua_tonumber(L, 1);
	if (!(n >= 0 && n <= GC_FLOOR_MAX) || n != (lua_Number)(size_t)n)
		return luaL_error(L,
				  "gc_floor: bytes must be an integer from 0 to %d (1 GiB), got %s",
				  1 << 30, lua_tostring(L, 1));
	st->gen++;
	if (!old)
		st->base_pause = st->set_pause = gc_getpause(L);
	st->floor = (size_t)n;
	if (st->floor) {
		gc_pin_module();
		gc_apply(L, st);
		gc_sentinel(L, st->gen);
	} else if (old) {
		/* off: the script's pause again, unless it set one since */
		if (gc_getpause(L) == st->set_pause)
			lua_gc(L, LUA_GCSETPAUSE, st->base_pause);
	}
	lua_pushnumber(L, (lua_Number)old);
	return 1;
#else
	return luaL_error(L,
			  "gc_floor: needs LuaJIT (Lua %d.%d runs no lua_gc from a finalizer); "
			  "collectgarbage(\"generational\") serves short-lived garbage there",
			  LUA_VERSION_NUM / 100, LUA_VERSION_NUM % 100);
#endif
}

void bh_gc_init(lua_State *L)
{
#ifdef BH_LUAJIT
	struct gc_state *st;

	if (!gc_state(L)) {
		luaL_newmetatable(L, GC_SENTINEL);
		lua_pushcfunction(L, sentinel_gc);
		lua_setfield(L, -2, "__gc");
		lua_pop(L, 1);
		st = lua_newuserdata(L, sizeof(*st));
		*st = (struct gc_state){0};
		lua_newtable(L);
		lua_pushcfunction(L, state_gc);
		lua_setfield(L, -2, "__gc");
		lua_setmetatable(L, -2);
		lua_setfield(L, LUA_REGISTRYINDEX, GC_STATE);
	}
#endif
	lua_pushcfunction(L, l_gc_floor);
	lua_setfield(L, -2, "gc_floor");
}
