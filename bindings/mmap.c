/*
 * mmap.c: bpfhost.mmapview, an array map's memory mapped into the process
 * (maps created with BPF_F_MMAPABLE). v[i] reads and writes element i
 * through the codec with no syscall; v:ptr() gives the base address for
 * LuaJIT FFI code. The mapping keeps the map alive in the kernel, so the
 * view stays valid after the map handle or its object is closed, until the
 * view itself is closed or collected.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bh.h"

#define VIEW_MAGIC 0x62686d76u
#define VIEW_MT    "bpfhost.mmapview"

/* Its head is mirrored by struct bh_mmapview in bindings/lua/mmapview.lua (checked by size). */
struct bh_view {
	uint32_t magic;
	unsigned char *base; /* NULL once closed */
	size_t len;          /* mapped length */
	uint32_t stride;     /* round_up(value_size, 8) */
	uint32_t count;      /* max_entries */
	int writable;        /* 0: mapped read-only (a frozen or rdonly map) */
	struct bh_type *vtype; /* anchored in the uservalue */
	char name[BPF_OBJ_NAME_LEN];
};

/* Only the head of the context: the path stack is written as the codec descends. */
static inline void view_cctx(struct bh_cctx *c, lua_State *L, const char *op, struct bh_view *v)
{
	c->L = L;
	c->op = op;
	c->what = "mmap of map";
	c->name = v->name;
	c->root = "value";
	c->depth = 0;
}

static struct bh_view *view_checkraw(lua_State *L, int idx)
{
	struct bh_view *v = lua_touserdata(L, idx);

	if (!v || bh_rawlen(L, idx) != sizeof(*v) || v->magic != VIEW_MAGIC)
		luaL_argerror(L, idx, "mmap view expected");
	return v;
}

static struct bh_view *view_check(lua_State *L, int idx, const char *op)
{
	struct bh_view *v = view_checkraw(L, idx);

	if (!v->base)
		luaL_error(L, "%s mmap of map '%s': view is closed", op, v->name);
	return v;
}

/* Element index at idx: an integer 0..count-1. */
static uint32_t view_index(lua_State *L, struct bh_view *v, int idx, const char *op)
{
	lua_Number d = lua_tonumber(L, idx);

	if (d != d || d < 0 || d >= v->count || d != (lua_Number)(uint32_t)d)
		luaL_error(L, "%s mmap of map '%s': index %s is out of range (0..%d)", op, v->name,
			   lua_tostring(L, idx) ? lua_tostring(L, idx) : "?", (int)v->count - 1);
	return (uint32_t)d;
}

static int view_index_mm(lua_State *L)
{
	struct bh_view *v = view_checkraw(L, 1);

	if (lua_type(L, 2) == LUA_TNUMBER) {
		struct bh_cctx c;
		uint32_t i;

		view_check(L, 1, "read");
		view_cctx(&c, L, "read", v);
		i = view_index(L, v, 2, "read");
		bh_decode(&c, v->vtype->root, v->base + (size_t)i * v->stride);
		return 1;
	}
	if (lua_type(L, 2) == LUA_TSTRING) {
		const char *k = lua_tostring(L, 2);

		if (!strcmp(k, "count")) {
			lua_pushinteger(L, v->count);
			return 1;
		}
		if (!strcmp(k, "stride")) {
			lua_pushinteger(L, v->stride);
			return 1;
		}
		lua_getmetatable(L, 1);
		lua_getfield(L, -1, "__methods");
		lua_getfield(L, -1, k);
		return 1;
	}
	lua_pushnil(L);
	return 1;
}

static int view_newindex(lua_State *L)
{
	struct bh_view *v = view_check(L, 1, "write");
	struct bh_cctx c;
	unsigned char *tmp;
	uint32_t i;

	if (lua_type(L, 2) != LUA_TNUMBER)
		luaL_error(L, "write mmap of map '%s': index must be an integer, got %s", v->name,
			   luaL_typename(L, 2));
	i = view_index(L, v, 2, "write");
	if (!v->writable)
		luaL_error(L, "write mmap of map '%s': the view is read-only (the map is frozen, or "
			      "read-only for user space)",
			   v->name);
	view_cctx(&c, L, "write", v);
	/*
	 * Encode aside, then copy in one go: a program reading the element never
	 * sees the zeroed intermediate state of the encoder. 8-byte elements are
	 * one aligned store.
	 */
	tmp = lua_newuserdata(L, v->stride);
	bh_encode(&c, v->vtype->root, 3, tmp);
	if (v->vtype->root->size == 8) {
		uint64_t x;

		memcpy(&x, tmp, 8);
		__atomic_store_n((uint64_t *)(v->base + (size_t)i * v->stride), x, __ATOMIC_RELAXED);
	} else {
		memcpy(v->base + (size_t)i * v->stride, tmp, v->vtype->root->size);
	}
	return 0;
}

static int view_len(lua_State *L)
{
	struct bh_view *v = view_checkraw(L, 1);

	lua_pushinteger(L, v->count);
	return 1;
}

/* v:ptr(): the base address as a light userdata (for ffi.cast). */
static int view_ptr(lua_State *L)
{
	struct bh_view *v = view_check(L, 1, "ptr");

	lua_pushlightuserdata(L, v->base);
	return 1;
}

static int view_close(lua_State *L)
{
	struct bh_view *v = view_checkraw(L, 1);

	if (v->base) {
		munmap(v->base, v->len);
		v->base = NULL;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int view_gc(lua_State *L)
{
	struct bh_view *v = lua_touserdata(L, 1);

	if (v && v->magic == VIEW_MAGIC && v->base) {
		munmap(v->base, v->len);
		v->base = NULL;
	}
	return 0;
}

static int view_tostring(lua_State *L)
{
	struct bh_view *v = view_checkraw(L, 1);

	if (!v->base)
		lua_pushfstring(L, "mmap of map '%s' (closed)", v->name);
	else
		lua_pushfstring(L, "mmap of map '%s': %d x %s", v->name, (int)v->count,
				v->vtype->root->cname);
	return 1;
}

/*
 * Under LuaJIT, views of integer elements get the metatable of
 * bpfhost.mmapview (bindings/lua/mmapview.lua): its __index and
 * __newindex read and write through the FFI, so that v[i] compiles into the
 * caller's trace instead of a C call, and hand anything else (other keys,
 * errors, a closed view) to the C metamethods here. Pushes that metatable,
 * or returns 0 and pushes nothing.
 */
static int push_ffi_mt(lua_State *L, const struct bh_plan *p)
{
#ifdef BH_LUAJIT
	if (p->kind != BH_K_INT || (p->size != 1 && p->size != 2 && p->size != 4 && p->size != 8))
		return 0;
	lua_getfield(L, LUA_REGISTRYINDEX, "bpfhost.mmapview.ffi");
	if (!lua_isfunction(L, -1)) {
		lua_pop(L, 1);
		lua_getglobal(L, "require");
		if (!lua_isfunction(L, -1)) {
			lua_pop(L, 1);
			return 0;
		}
		lua_pushliteral(L, "bpfhost.mmapview");
		if (lua_pcall(L, 1, 1, 0) || !lua_isfunction(L, -1)) {
			lua_pop(L, 1);
			return 0;
		}
		lua_pushvalue(L, -1);
		lua_setfield(L, LUA_REGISTRYINDEX, "bpfhost.mmapview.ffi");
	}
	luaL_getmetatable(L, VIEW_MT);
	lua_pushinteger(L, p->size);
	lua_pushboolean(L, p->is_signed);
	lua_pushinteger(L, (lua_Integer)sizeof(struct bh_view));
	if (lua_pcall(L, 4, 1, 0) || !lua_istable(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	return 1;
#else
	(void)L;
	(void)p;
	return 0;
#endif
}

/* m:mmap(): the view of an mmapable array map (the map at index 1). */
static int map_mmap(lua_State *L)
{
	struct bh_map *m = bh_map_check(L, 1);
	struct bh_view *v;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), len;
	uint32_t stride;
	void *p;

	if (m->type != BPF_MAP_TYPE_ARRAY || !(m->map_flags & BPF_F_MMAPABLE))
		luaL_error(L, "mmap map '%s': only array maps made with the mmapable flag can be "
			      "mapped (this is %s %s map%s)",
			   m->name, m->type == BPF_MAP_TYPE_ARRAY ? "an" : "a", bh_map_type_name(m->type),
			   m->type == BPF_MAP_TYPE_ARRAY ? " without BPF_F_MMAPABLE" : "");
	stride = (m->value_size + 7) & ~7u;
	len = ((size_t)stride * m->max_entries + page - 1) & ~(page - 1);
	v = bh_newud(L, sizeof(*v));
	memset(v, 0, sizeof(*v));
	v->magic = VIEW_MAGIC;
	snprintf(v->name, sizeof(v->name), "%s", m->name);
	luaL_getmetatable(L, VIEW_MT);
	lua_setmetatable(L, -2);
	v->writable = 1;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
	if (p == MAP_FAILED) {
		int err = errno;

		/* a frozen map (or one made with rdonly) maps read-only */
		p = mmap(NULL, len, PROT_READ, MAP_SHARED, m->fd, 0);
		if (p == MAP_FAILED)
			bh_fail(L, "mmap", "map", m->name, err, NULL, NULL);
		v->writable = 0;
	}
	v->base = p;
	v->len = len;
	v->stride = stride;
	v->count = m->max_entries;
	v->vtype = m->vtype;
	lua_createtable(L, 0, 2); /* keep the map's value Type (and the map) alive */
	lua_pushvalue(L, 1);
	lua_setfield(L, -2, "map");
	bh_getuv(L, 1);
	lua_getfield(L, -1, "vtype");
	lua_remove(L, -2);
	lua_setfield(L, -2, "vtype");
	bh_setuv(L, -2);
	if (push_ffi_mt(L, v->vtype->root))
		lua_setmetatable(L, -2);
	return 1;
}

static const luaL_Reg view_meta[] = {
	{ "__index", view_index_mm },
	{ "__newindex", view_newindex },
	{ "__len", view_len },
	{ "__gc", view_gc },
	{ "__tostring", view_tostring },
#if LUA_VERSION_NUM >= 504
	{ "__close", view_gc },
#endif
	{ NULL, NULL },
};

static const luaL_Reg view_methods[] = {
	{ "ptr", view_ptr },
	{ "close", view_close },
	{ NULL, NULL },
};

/* The map methods table is at -1. */
void bh_mmap_init(lua_State *L)
{
	lua_pushcfunction(L, map_mmap);
	lua_setfield(L, -2, "mmap");
	luaL_newmetatable(L, VIEW_MT);
	bh_setfuncs(L, view_meta, 0);
	lua_pushliteral(L, VIEW_MT);
	lua_setfield(L, -2, "__name");
	lua_newtable(L);
	bh_setfuncs(L, view_methods, 0);
	lua_setfield(L, -2, "__methods");
	lua_pop(L, 1);
}
