/*
 * globals.c: bpfhost.globals, the variables of one data section of an object
 * (.rodata, .data, .bss, .data.NAME, .kconfig) by name, typed by BTF.
 *
 * Before load a variable lives in libbpf's image of the section (what the
 * map will be created with); after load .data/.bss variables live in the
 * map's memory, mmap'd by libbpf and shared with the kernel, so reads and
 * writes are plain memory accesses: no syscall. .rodata is frozen at load.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "bh.h"

#define BH_GLOBALS_MT "bpfhost.globals"
#define UV_PARENT 1
#define UV_TYPES  2

struct gvar {
	const char *name;      /* in the object's BTF: valid while the object is open */
	uint32_t off, size;
	uint32_t type_id;      /* of the variable's type in the object's BTF */
	struct bh_type *t;     /* compiled on first use, anchored in the uservalue */
};

struct bh_globals {
	struct bh_object *parent;
	struct bpf_map *map;
	uint32_t nvars;
	uint32_t maxsize;      /* largest variable: the scratch size */
	struct gvar *vars;
	unsigned char *scratch;
	int rdonly;            /* .rodata*, .kconfig: read-only once loaded */
	int live;              /* after load: 1 the image is the map's memory, -1 use syscalls */
	char section[64];
};

/*
 * Raise a plain argument error. Unlike luaL_error it adds no position: these
 * are raised from metamethods, where the position would be a guess.
 */
static int gerror(lua_State *L, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	lua_pushvfstring(L, fmt, ap);
	va_end(ap);
	return lua_error(L);
}

/* ------------------------------------------------------------------------ */
/* -- Finding a section --------------------------------------------------- */

static int is_data_section(const char *name)
{
	return !strncmp(name, ".data", 5) || !strncmp(name, ".bss", 4) ||
	       !strncmp(name, ".rodata", 7) || !strcmp(name, ".kconfig");
}

/* The sections of obj that hold variables, "a, b", pushed. */
static void push_sections(lua_State *L, struct bpf_object *obj)
{
	const struct btf *btf = bpf_object__btf(obj);
	struct bpf_map *m;
	luaL_Buffer b;
	int first = 1;

	luaL_buffinit(L, &b);
	bpf_object__for_each_map(m, obj) {
		const char *n = bpf_map__name(m);
		const char *dot;

		if (!bpf_map__is_internal(m) || !n)
			continue;
		dot = strchr(n, '.');
		if (!dot || !btf || btf__find_by_name_kind(btf, dot, BTF_KIND_DATASEC) < 0)
			continue;
		if (!first)
			luaL_addstring(&b, ", ");
		luaL_addstring(&b, dot);
		first = 0;
	}
	if (first)
		luaL_addstring(&b, "none");
	luaL_pushresult(&b);
}

/* The internal map of section: libbpf names it "<obj prefix><section>". */
static struct bpf_map *find_section_map(struct bpf_object *obj, const char *section)
{
	struct bpf_map *m;
	size_t sl = strlen(section);

	m = bpf_object__find_map_by_name(obj, section);
	if (m && bpf_map__is_internal(m))
		return m;
	bpf_object__for_each_map(m, obj) {
		const char *n = bpf_map__name(m);
		size_t nl;

		if (!bpf_map__is_internal(m) || !n)
			continue;
		nl = strlen(n);
		if (nl >= sl && !strcmp(n + nl - sl, section) && strchr(n, '.') == n + nl - sl)
			return m;
	}
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* -- The handle ---------------------------------------------------------- */

static struct bh_globals *globals_checkraw(lua_State *L, int idx)
{
	return bh_checkud(L, idx, BH_GLOBALS_MT);
}

/*
 * The metamethods get the metatable as upvalue 1: recognising the handle is
 * one pointer comparison, not a lookup by name.
 */
static struct bh_globals *globals_check(lua_State *L, int idx, const char *op)
{
	struct bh_globals *g = lua_touserdata(L, idx);

	if (unlikely(!g || !lua_getmetatable(L, idx)))
		g = globals_checkraw(L, idx);
	else if (unlikely(!lua_rawequal(L, -1, lua_upvalueindex(1))))
		g = globals_checkraw(L, idx);
	else
		lua_pop(L, 1);

	if (!g->parent || !g->parent->obj)
		gerror(L, "%s %s: its object is closed", op, g->section);
	return g;
}

/*
 * Push the globals view of section of the object at objidx, the same one
 * each time (cached in the object's uservalue).
 */
void bh_globals_push(lua_State *L, int objidx, const char *section, const char *op)
{
	struct bh_object *o = bh_object_check(L, objidx);
	const struct btf *btf = bpf_object__btf(o->obj);
	const struct btf_type *sec;
	const struct btf_var_secinfo *vsi;
	struct bh_globals *g;
	struct bpf_map *map;
	int32_t sid;
	uint32_t i, n;
	int idx;

	if (objidx < 0)
		objidx = lua_gettop(L) + objidx + 1;
	bh_getuv(L, objidx);
	lua_getfield(L, -1, "globals");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, -3, "globals");
	}
	lua_remove(L, -2);
	lua_getfield(L, -1, section);
	if (!lua_isnil(L, -1)) {
		lua_remove(L, -2);
		return;
	}
	lua_pop(L, 1); /* cache */

	if (!is_data_section(section)) {
		push_sections(L, o->obj);
		gerror(L, "%s: '%s' is not a data section (sections with variables: %s)", op,
			   section, lua_tostring(L, -1));
	}
	map = find_section_map(o->obj, section);
	sid = btf ? btf__find_by_name_kind(btf, section, BTF_KIND_DATASEC) : -1;
	if (!map || sid < 0) {
		push_sections(L, o->obj);
		gerror(L, "%s: object '%s' has no variables in %s (sections with variables: %s)",
			   op, o->path, section, lua_tostring(L, -1));
	}
	sec = btf__type_by_id(btf, (uint32_t)sid);
	n = btf_vlen(sec);

	g = bh_newud(L, sizeof(*g));
	memset(g, 0, sizeof(*g));
	idx = lua_gettop(L);
	luaL_getmetatable(L, BH_GLOBALS_MT);
	lua_setmetatable(L, idx);
	/* uservalue: [1] the object, [2] position -> Type, and name -> position */
	lua_createtable(L, 2, (int)n);
	lua_pushvalue(L, objidx);
	lua_rawseti(L, -2, UV_PARENT);
	lua_newtable(L);
	lua_rawseti(L, -2, UV_TYPES);
	bh_setuv(L, idx);
	snprintf(g->section, sizeof(g->section), "%s", section);
	g->map = map;
	g->rdonly = !strncmp(section, ".rodata", 7) || !strcmp(section, ".kconfig");
	g->vars = calloc(n ? n : 1, sizeof(*g->vars));
	if (!g->vars)
		gerror(L, "%s %s: out of memory", op, section);

	bh_getuv(L, idx);
	vsi = btf_var_secinfos(sec);
	for (i = 0; i < n; i++, vsi++) {
		const struct btf_type *v = btf__type_by_id(btf, vsi->type);

		if (!v || !btf_is_var(v))
			continue; /* functions of .ksyms */
		g->vars[g->nvars].name = btf__name_by_offset(btf, v->name_off);
		g->vars[g->nvars].off = vsi->offset;
		g->vars[g->nvars].size = vsi->size;
		g->vars[g->nvars].type_id = v->type;
		if (vsi->size > g->maxsize)
			g->maxsize = vsi->size;
		lua_pushinteger(L, g->nvars);
		lua_setfield(L, -2, btf__name_by_offset(btf, v->name_off));
		g->nvars++;
	}
	lua_pop(L, 1);
	g->scratch = malloc(g->maxsize ? g->maxsize : 1);
	if (!g->scratch)
		gerror(L, "%s %s: out of memory", op, section);
	g->parent = o;

	lua_pushvalue(L, idx);
	lua_setfield(L, -3, section); /* cache it */
	lua_remove(L, -2);
}

static void push_var_names(lua_State *L, struct bh_globals *g)
{
	luaL_Buffer b;
	uint32_t i;

	luaL_buffinit(L, &b);
	for (i = 0; i < g->nvars; i++) {
		if (i)
			luaL_addstring(&b, ", ");
		luaL_addstring(&b, g->vars[i].name);
	}
	if (!g->nvars)
		luaL_addstring(&b, "none");
	luaL_pushresult(&b);
}

/* Compile the type of variable i of g (the handle at idx) on first use. */
static struct gvar *var_ready(lua_State *L, int idx, struct bh_globals *g, uint32_t i,
			      const char *op)
{
	struct gvar *v = &g->vars[i];

	if (!v->t) {
		bh_getuv(L, idx);
		lua_rawgeti(L, -1, UV_TYPES);
		v->t = bh_type_new(L, bpf_object__btf(g->parent->obj), v->type_id);
		lua_rawseti(L, -2, (int)i + 1);
		lua_pop(L, 2);
		if (v->t->root->size != v->size)
			gerror(L, "%s %s '%s': BTF says %d bytes, the section %d", op, g->section,
				   v->name, (int)v->t->root->size, (int)v->size);
	}
	return v;
}

/* The variable named at kidx of g (the handle at idx); raises listing the names. */
static struct gvar *find_var(lua_State *L, int idx, struct bh_globals *g, int kidx, const char *op)
{
	lua_Integer i;

	if (lua_type(L, kidx) != LUA_TSTRING)
		gerror(L, "%s %s: variable names are strings, got %s", op, g->section,
			   luaL_typename(L, kidx));
	bh_getuv(L, idx);
	lua_pushvalue(L, kidx);
	lua_rawget(L, -2);
	if (lua_isnil(L, -1)) {
		push_var_names(L, g);
		gerror(L, "%s %s '%s': no such variable (variables: %s)", op, g->section,
			   lua_tostring(L, kidx), lua_tostring(L, -1));
	}
	i = lua_tointeger(L, -1);
	lua_pop(L, 2);
	if (likely(g->vars[i].t))
		return &g->vars[i];
	return var_ready(L, idx, g, (uint32_t)i, op);
}

/*
 * Where the section's bytes are: libbpf's image before load, the map's
 * shared mapping after (object.c remaps the image at load). NULL after
 * load when the section could not be mapped: then syscalls are used. The
 * handle is at idx.
 */
static unsigned char *section_base(lua_State *L, int idx, struct bh_globals *g, size_t *size)
{
	const void *p;

	if (g->parent->loaded && !g->live) {
		bh_getuv(L, idx);
		lua_rawgeti(L, -1, UV_PARENT);
		bh_getuv(L, -1);
		lua_getfield(L, -1, "live");
		lua_getfield(L, -1, bpf_map__name(g->map));
		g->live = lua_toboolean(L, -1) ? 1 : -1;
		lua_pop(L, 5);
	}
	if (g->parent->loaded && g->live < 0)
		return NULL;
	p = bpf_map__initial_value(g->map, size);
	return (unsigned char *)(uintptr_t)p;
}

/* A codec context without zeroing its path stack (only depth entries are read). */
static inline void cctx(struct bh_cctx *c, lua_State *L, const char *op, const char *sec,
			const char *name)
{
	c->L = L;
	c->op = op;
	c->what = sec;
	c->name = name;
	c->root = "value";
	c->depth = 0;
}

/* Push the value of variable v. */
static void read_var(lua_State *L, int idx, struct bh_globals *g, struct gvar *v, const char *name)
{
	struct bh_cctx c;
	size_t size = 0;
	unsigned char *base = section_base(L, idx, g, &size);

	cctx(&c, L, "get", g->section, name);
	if (!base) {
		unsigned char *all = lua_newuserdata(L, bpf_map__value_size(g->map));
		uint32_t zero = 0;

		if (bpf_map_lookup_elem(bpf_map__fd(g->map), &zero, all))
			bh_fail(L, "get", g->section, name, errno, NULL, NULL);
		bh_decode(&c, v->t->root, all + v->off);
		lua_remove(L, -2);
		return;
	}
	if (v->off + v->size > size)
		gerror(L, "get %s '%s': the variable lies outside the section", g->section, name);
	bh_decode(&c, v->t->root, base + v->off);
}

static int globals_index(lua_State *L)
{
	struct bh_globals *g = globals_check(L, 1, "get");
	struct gvar *v = find_var(L, 1, g, 2, "get");

	read_var(L, 1, g, v, lua_tostring(L, 2));
	return 1;
}

/*
 * Copy size bytes into the live section: one store for naturally aligned
 * scalars, so that the program never sees half of a counter.
 */
static void store(unsigned char *dst, const unsigned char *src, uint32_t size)
{
	uintptr_t a = (uintptr_t)dst;

	if (size == 8 && !(a & 7)) {
		uint64_t x;

		memcpy(&x, src, 8);
		__atomic_store_n((uint64_t *)dst, x, __ATOMIC_RELAXED);
	} else if (size == 4 && !(a & 3)) {
		uint32_t x;

		memcpy(&x, src, 4);
		__atomic_store_n((uint32_t *)dst, x, __ATOMIC_RELAXED);
	} else if (size == 2 && !(a & 1)) {
		uint16_t x;

		memcpy(&x, src, 2);
		__atomic_store_n((uint16_t *)dst, x, __ATOMIC_RELAXED);
	} else {
		memcpy(dst, src, size);
	}
}

static int globals_newindex(lua_State *L)
{
	struct bh_globals *g = globals_check(L, 1, "set");
	struct gvar *v = find_var(L, 1, g, 2, "set");
	const char *name = lua_tostring(L, 2);
	struct bh_cctx c;
	size_t size = 0;
	unsigned char *base;

	cctx(&c, L, "set", g->section, name);
	if (g->rdonly && g->parent->loaded)
		gerror(L, "set %s '%s': the object is loaded; %s is read-only after load (set it "
			   "before obj:load())", g->section, name, g->section);
	if (!strcmp(g->section, ".kconfig"))
		gerror(L, "set .kconfig '%s': kconfig values come from the kernel or the "
			   "'kconfig' open option", name);
	/* encode first: a bad value leaves the variable as it was */
	bh_encode(&c, v->t->root, 3, g->scratch);
	base = section_base(L, 1, g, &size);
	if (!base) {
		unsigned char *all = lua_newuserdata(L, bpf_map__value_size(g->map));
		uint32_t zero = 0;

		if (bpf_map_lookup_elem(bpf_map__fd(g->map), &zero, all))
			bh_fail(L, "set", g->section, name, errno, NULL, NULL);
		memcpy(all + v->off, g->scratch, v->size);
		if (bpf_map_update_elem(bpf_map__fd(g->map), &zero, all, 0))
			bh_fail(L, "set", g->section, name, errno, NULL, NULL);
		return 0;
	}
	if (v->off + v->size > size)
		gerror(L, "set %s '%s': the variable lies outside the section", g->section, name);
	store(base + v->off, g->scratch, v->size);
	return 0;
}

/* g(): a table of every variable's current value, for pairs. */
static int globals_call(lua_State *L)
{
	struct bh_globals *g = globals_check(L, 1, "get");
	uint32_t i;

	lua_createtable(L, 0, (int)g->nvars);
	for (i = 0; i < g->nvars; i++) {
		struct gvar *v = var_ready(L, 1, g, i, "get");

		read_var(L, 1, g, v, v->name);
		lua_setfield(L, -2, v->name);
	}
	return 1;
}

#if LUA_VERSION_NUM >= 502
static int globals_pairs(lua_State *L)
{
	globals_call(L);
	lua_getglobal(L, "next");
	lua_insert(L, -2);
	lua_pushnil(L);
	return 3;
}
#endif

static int globals_gc(lua_State *L)
{
	struct bh_globals *g = lua_touserdata(L, 1);

	if (g) {
		free(g->vars);
		free(g->scratch);
		g->vars = NULL;
		g->scratch = NULL;
		g->parent = NULL;
	}
	return 0;
}

static int globals_tostring(lua_State *L)
{
	struct bh_globals *g = globals_checkraw(L, 1);

	if (!g->parent || !g->parent->obj)
		lua_pushfstring(L, "globals %s (object closed)", g->section);
	else
		lua_pushfstring(L, "globals %s of object '%s' (%d variables)", g->section,
				bpf_object__name(g->parent->obj), (int)g->nvars);
	return 1;
}

static const luaL_Reg globals_meta[] = {
	{ "__index", globals_index },
	{ "__newindex", globals_newindex },
	{ "__call", globals_call },
	{ "__gc", globals_gc },
	{ "__tostring", globals_tostring },
#if LUA_VERSION_NUM >= 502
	{ "__pairs", globals_pairs },
#endif
	{ NULL, NULL },
};

void bh_globals_init(lua_State *L)
{
	bh_newmetatable(L, BH_GLOBALS_MT, globals_meta, NULL);
	lua_pushvalue(L, -1);
	bh_setfuncs(L, globals_meta, 1); /* again, with the metatable as upvalue */
	lua_pop(L, 1);
}
