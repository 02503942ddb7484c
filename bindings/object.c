/* object.c: bpfhost.object, an ELF object opened and loaded through libbpf. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bh.h"

/* ------------------------------------------------------------------------ */
/* -- Checking ------------------------------------------------------------ */

static struct bh_object *object_checkraw(lua_State *L, int idx)
{
	return bh_checkud(L, idx, BH_OBJECT_MT);
}

static struct bh_object *object_check_op(lua_State *L, int idx, const char *op)
{
	struct bh_object *o = object_checkraw(L, idx);

	if (!o->obj)
		luaL_error(L, "%s object '%s': object is closed", op, o->path ? o->path : "?");
	return o;
}

struct bh_object *bh_object_check(lua_State *L, int idx)
{
	return object_check_op(L, idx, "use");
}

/* Push field k of the object's uservalue table (maps, progs, links). */
static void object_uvfield(lua_State *L, int idx, const char *k)
{
	bh_getuv(L, idx);
	lua_getfield(L, -1, k);
	lua_remove(L, -2);
}

/* ------------------------------------------------------------------------ */
/* -- Open, load, close --------------------------------------------------- */

static const char *const open_opts[] = { "pin_root", "name", "btf_custom_path", "kconfig", NULL };

static const char *opt_string(lua_State *L, int idx, const char *k, const char *fn)
{
	const char *s = NULL;

	if (!lua_istable(L, idx))
		return NULL;
	lua_getfield(L, idx, k);
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "%s: option '%s' must be a string, got %s", fn, k,
				   luaL_typename(L, -1));
		s = lua_tostring(L, -1);
	}
	lua_pop(L, 1); /* the string stays alive in the options table */
	return s;
}

/* bpf.open(path[, opts]): pushes the object. */
static struct bh_object *object_open(lua_State *L, const char *fn)
{
	const char *path = luaL_checkstring(L, 1);
	const char *pin_root, *name, *btf_path, *kconfig;
	struct bh_object *o;
	struct bpf_object *obj;
	const char *log;
	int err;

	bh_opt_check(L, 2, fn, open_opts);
	pin_root = opt_string(L, 2, "pin_root", fn);
	name = opt_string(L, 2, "name", fn);
	btf_path = opt_string(L, 2, "btf_custom_path", fn);
	kconfig = opt_string(L, 2, "kconfig", fn);

	o = bh_newud(L, sizeof(*o));
	memset(o, 0, sizeof(*o));
	luaL_getmetatable(L, BH_OBJECT_MT);
	lua_setmetatable(L, -2);
	lua_createtable(L, 0, 3);
	lua_newtable(L);
	lua_setfield(L, -2, "maps");
	lua_newtable(L);
	lua_setfield(L, -2, "progs");
	lua_newtable(L);
	lua_setfield(L, -2, "links");
	bh_setuv(L, -2);
	o->path = strdup(path);
	if (!o->path)
		bh_fail(L, "open", "object", path, ENOMEM, NULL, NULL);

	if (access(path, R_OK)) {
		err = errno;
		bh_fail_msg(L, "open", "object", path, err,
			    err == ENOENT ? "no such file" : NULL,
			    err == ENOENT ? "BPF objects are built into build/bpf/ by make" : NULL,
			    NULL);
	}
	if (pin_root && bh_ensure_bpffs())
		bh_fail_msg(L, "open", "object", path, errno, "bpffs is not mounted at /sys/fs/bpf",
			    "mount -t bpf bpf /sys/fs/bpf", NULL);
	{
		LIBBPF_OPTS(bpf_object_open_opts, oo, .object_name = name,
			    .pin_root_path = pin_root, .btf_custom_path = btf_path,
			    .kconfig = kconfig);

		bh_log_begin();
		obj = bpf_object__open_file(path, &oo);
		err = obj ? 0 : errno;
		log = bh_log_end();
	}
	if (!obj)
		bh_fail_msg(L, "open", "object", path, err,
			    err == EINVAL || err == ENOEXEC || err == EILSEQ ?
				    "not a valid BPF object file" : NULL,
			    NULL, log);
	o->obj = obj;
	return o;
}

static int l_open(lua_State *L)
{
	object_open(L, "open");
	return 1;
}

/* The program the verifier refused, from libbpf's log, for the message. */
static const char *failed_prog(const char *log, char *buf, size_t n)
{
	const char *p = log ? strstr(log, "prog '") : NULL;

	while (p) {
		const char *q = strchr(p + 6, '\'');

		if (q && strstr(q, "failed to load")) {
			size_t len = (size_t)(q - p - 6);

			if (len >= n)
				len = n - 1;
			memcpy(buf, p + 6, len);
			buf[len] = '\0';
			return buf;
		}
		p = strstr(p + 6, "prog '");
	}
	return NULL;
}

static void reset_maps(lua_State *L, int idx)
{
	object_uvfield(L, idx, "maps");
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		bh_map_reset(L, lua_gettop(L));
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

static void object_do_load(lua_State *L, int idx, struct bh_object *o, int close_on_fail)
{
	const char *log;
	char pname[64], reason[160];
	int err;

	if (o->loaded)
		luaL_error(L, "load object '%s': already loaded", o->path);
	bh_log_begin();
	err = bpf_object__load(o->obj);
	log = bh_log_end();
	if (err) {
		const char *prog = failed_prog(log, pname, sizeof(pname));
		char *logcopy = log ? strdup(log) : NULL;

		err = -err;
		if (close_on_fail) {
			bpf_object__close(o->obj);
			o->obj = NULL;
		}
		if (prog)
			snprintf(reason, sizeof(reason), "program '%s' was rejected", prog);
		lua_pushstring(L, logcopy);
		free(logcopy);
		bh_fail_msg(L, "load", "object", o->path, err, prog ? reason : NULL,
			    err == EPERM ? "needs root, or CAP_BPF and CAP_PERFMON; tracing "
					   "programs (fentry/fexit/lsm) need BPF trampolines"
					 : NULL,
			    lua_tostring(L, -1));
	}
	o->loaded = 1;
	reset_maps(L, idx);
}

static int object_load(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "load");

	object_do_load(L, 1, o, 0);
	lua_settop(L, 1);
	return 1;
}

/* bpf.load(path[, opts]): open and load; a failed load closes what it opened. */
static int l_load(lua_State *L)
{
	struct bh_object *o = object_open(L, "load");

	object_do_load(L, lua_gettop(L), o, 1);
	return 1;
}

/* Close every link of the object at idx, then drop its handles' fds. */
static void object_release(lua_State *L, int idx, struct bh_object *o)
{
	int n, i;

	object_uvfield(L, idx, "links");
	n = (int)bh_rawlen(L, -1);
	for (i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, i);
		bh_link_close_ud(L, lua_gettop(L));
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	if (o->obj) {
		struct bpf_object *obj = o->obj;

		o->obj = NULL;
		reset_maps(L, idx);
		bpf_object__close(obj);
	}
}

static int object_close(lua_State *L)
{
	struct bh_object *o = object_checkraw(L, 1);

	if (o->busy)
		luaL_error(L, "close object '%s': one of its buffers is being polled", o->path);
	object_release(L, 1, o);
	lua_pushboolean(L, 1);
	return 1;
}

/* __gc never raises and never calls Lua: links and maps are C-side closes. */
static int object_gc(lua_State *L)
{
	struct bh_object *o = lua_touserdata(L, 1);

	if (!o)
		return 0;
	object_release(L, 1, o);
	free(o->path);
	o->path = NULL;
	return 0;
}

static int object_tostring(lua_State *L)
{
	struct bh_object *o = object_checkraw(L, 1);

	if (!o->obj)
		lua_pushfstring(L, "object '%s' (closed)", o->path ? o->path : "?");
	else
		lua_pushfstring(L, "object '%s' (%s)", bpf_object__name(o->obj),
				o->loaded ? "loaded" : "not loaded");
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Maps and programs --------------------------------------------------- */

static void push_names(lua_State *L, struct bh_object *o, int maps)
{
	luaL_Buffer b;
	int first = 1;

	luaL_buffinit(L, &b);
	if (maps) {
		struct bpf_map *m;

		bpf_object__for_each_map(m, o->obj) {
			if (!first)
				luaL_addstring(&b, ", ");
			luaL_addstring(&b, bpf_map__name(m));
			first = 0;
		}
	} else {
		struct bpf_program *p;

		bpf_object__for_each_program(p, o->obj) {
			if (!first)
				luaL_addstring(&b, ", ");
			luaL_addstring(&b, bpf_program__name(p));
			first = 0;
		}
	}
	if (first)
		luaL_addstring(&b, "none");
	luaL_pushresult(&b);
}

/* Push the cached handle for map, creating it on first use. */
static void push_map_handle(lua_State *L, int idx, struct bpf_map *map)
{
	const char *name = bpf_map__name(map);

	object_uvfield(L, idx, "maps");
	lua_getfield(L, -1, name);
	if (!lua_isnil(L, -1)) {
		struct bh_map *m = lua_touserdata(L, -1);

		if (m && !m->closed) {
			lua_remove(L, -2);
			return;
		}
	}
	lua_pop(L, 1);
	bh_map_push(L, idx, map);
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, name);
	lua_remove(L, -2);
}

static int object_get_map(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "get_map");
	const char *name = luaL_checkstring(L, 2);
	struct bpf_map *map = bpf_object__find_map_by_name(o->obj, name);

	if (!map) {
		push_names(L, o, 1);
		return luaL_error(L, "get_map: no map '%s' in object '%s' (maps: %s)", name,
				  o->path, lua_tostring(L, -1));
	}
	push_map_handle(L, 1, map);
	return 1;
}

static int object_maps(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "maps");
	struct bpf_map *map;

	lua_newtable(L);
	bpf_object__for_each_map(map, o->obj) {
		push_map_handle(L, 1, map);
		lua_setfield(L, -2, bpf_map__name(map));
	}
	return 1;
}

static void push_prog_handle(lua_State *L, int idx, struct bpf_program *prog)
{
	const char *name = bpf_program__name(prog);

	object_uvfield(L, idx, "progs");
	lua_getfield(L, -1, name);
	if (!lua_isnil(L, -1)) {
		lua_remove(L, -2);
		return;
	}
	lua_pop(L, 1);
	bh_prog_push(L, idx, prog);
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, name);
	lua_remove(L, -2);
}

static int object_program(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "program");
	const char *name = luaL_checkstring(L, 2);
	struct bpf_program *prog = bpf_object__find_program_by_name(o->obj, name);

	if (!prog) {
		push_names(L, o, 0);
		return luaL_error(L, "program: no program '%s' in object '%s' (programs: %s)", name,
				  o->path, lua_tostring(L, -1));
	}
	push_prog_handle(L, 1, prog);
	return 1;
}

static int object_programs(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "programs");
	struct bpf_program *prog;

	lua_newtable(L);
	bpf_object__for_each_program(prog, o->obj) {
		push_prog_handle(L, 1, prog);
		lua_setfield(L, -2, bpf_program__name(prog));
	}
	return 1;
}

/* obj:type(name): a Type from the object's BTF, or a built-in scalar. */
static int object_type(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "type");
	const char *name = luaL_checkstring(L, 2);

	bh_type_from_spec(L, bpf_object__btf(o->obj), name, "type");
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Attach -------------------------------------------------------------- */

/*
 * Attach every loaded program whose SEC() says where. Programs that need a
 * target (xdp, tc, cgroup, bare uprobe) are left for their explicit attach.
 * If one attach fails, the links made by this call are destroyed before the
 * error is raised: nothing stays half-attached.
 */
static int object_attach(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "attach");
	struct bpf_program *prog;
	int result;

	if (!o->loaded)
		luaL_error(L, "attach object '%s': not loaded (call obj:load() first)", o->path);
	lua_newtable(L);
	result = lua_gettop(L);
	bpf_object__for_each_program(prog, o->obj) {
		struct bh_prog *p;
		int pidx;

		if (!bpf_program__autoload(prog) || !bpf_program__autoattach(prog))
			continue;
		push_prog_handle(L, 1, prog);
		pidx = lua_gettop(L);
		p = lua_touserdata(L, pidx);
		lua_pushcfunction(L, bh_prog_attach_pcall);
		lua_pushvalue(L, pidx);
		if (lua_pcall(L, 1, 1, 0)) {
			/* undo: destroy what this call attached, then re-raise */
			lua_pushnil(L);
			while (lua_next(L, result)) {
				bh_link_close_ud(L, lua_gettop(L));
				lua_pop(L, 1);
			}
			return lua_error(L);
		}
		if (!lua_isnil(L, -1))
			lua_setfield(L, result, p->name);
		else
			lua_pop(L, 1);
		lua_settop(L, result);
	}
	return 1;
}

/* ------------------------------------------------------------------------ */

static const luaL_Reg object_meta[] = {
	{ "__gc", object_gc },
	{ "__tostring", object_tostring },
#if LUA_VERSION_NUM >= 504
	{ "__close", object_gc },
#endif
	{ NULL, NULL },
};

static const luaL_Reg object_methods[] = {
	{ "load", object_load },
	{ "attach", object_attach },
	{ "get_map", object_get_map },
	{ "maps", object_maps },
	{ "program", object_program },
	{ "type", object_type },
	{ "programs", object_programs },
	{ "close", object_close },
	{ NULL, NULL },
};

static const luaL_Reg object_funcs[] = {
	{ "open", l_open },
	{ "load", l_load },
	{ NULL, NULL },
};

void bh_object_init(lua_State *L)
{
	bh_newmetatable(L, BH_OBJECT_MT, object_meta, object_methods);
	lua_pop(L, 1);
	bh_setfuncs(L, object_funcs, 0);
}
