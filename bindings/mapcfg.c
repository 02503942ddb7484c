/*
 * mapcfg.c: map settings that apply before the object is loaded (sizes,
 * type, flags, inner map, pin path, reusing another map). They are methods
 * of map handles, registered into map.c's methods table by
 * bh_mapcfg_register; each one changes libbpf's definition of the map, which
 * the kernel sees when obj:load() creates it.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "bh.h"

/* A map handle of an object that is open but not loaded, at idx. */
static struct bh_map *cfg_check(lua_State *L, int idx, const char *op)
{
	struct bh_map *m = lua_touserdata(L, idx);

	if (!m || lua_type(L, idx) != LUA_TUSERDATA || bh_rawlen(L, idx) != sizeof(*m) ||
	    m->magic != BH_MAP_MAGIC) {
		const char *msg = lua_pushfstring(L, "bpfhost.map expected, got %s (call it as "
						  "m:%s(...))", luaL_typename(L, idx), op);

		luaL_argerror(L, idx, msg);
	}
	if (m->closed)
		luaL_error(L, "%s map '%s': map is closed", op, m->name);
	if (!m->map || !m->parent)
		luaL_error(L, "%s map '%s': only maps of an object that is open and not yet loaded "
			   "can be configured", op, m->name);
	if (!m->parent->obj)
		luaL_error(L, "%s map '%s': its object is closed", op, m->name);
	if (m->parent->loaded)
		luaL_error(L, "%s map '%s': the object is already loaded (map settings apply before "
			   "obj:load())", op, m->name);
	return m;
}

/* Re-read libbpf's definition into the handle's fields (m.type, m.max_entries...). */
static void cfg_refresh(lua_State *L, int idx, struct bh_map *m)
{
	m->type = bpf_map__type(m->map);
	m->key_size = bpf_map__key_size(m->map);
	m->value_size = bpf_map__value_size(m->map);
	m->max_entries = bpf_map__max_entries(m->map);
	m->map_flags = bpf_map__map_flags(m->map);
	bh_map_reset(L, idx);
}

static uint32_t check_u32(lua_State *L, int idx, const char *op, const char *what, uint32_t lo)
{
	lua_Number d = luaL_checknumber(L, idx);

	if (d != (lua_Number)(uint32_t)d || d < lo)
		luaL_error(L, "%s: %s must be an integer in [%d, 4294967295], got %s", op, what,
			   (int)lo, bh_numstr(L, d));
	return (uint32_t)d;
}

static int map_set_max_entries(lua_State *L)
{
	struct bh_map *m = cfg_check(L, 1, "set_max_entries");
	uint32_t n = check_u32(L, 2, "set_max_entries", "max_entries", 1);

	if (bpf_map__set_max_entries(m->map, n))
		bh_fail(L, "set_max_entries", "map", m->name, errno, NULL, NULL);
	cfg_refresh(L, 1, m);
	lua_settop(L, 1);
	return 1;
}

/* A map type by libbpf's name ("hash", "lru_percpu_hash") or number. */
static int map_set_type(lua_State *L)
{
	struct bh_map *m = cfg_check(L, 1, "set_type");
	int t = -1, i;

	if (lua_type(L, 2) == LUA_TNUMBER) {
		t = (int)check_u32(L, 2, "set_type", "the type", 1);
		if (!libbpf_bpf_map_type_str((enum bpf_map_type)t))
			luaL_error(L, "set_type map '%s': unknown map type %d", m->name, t);
	} else {
		const char *s = luaL_checkstring(L, 2);

		for (i = 1; i < 256; i++) {
			const char *n = libbpf_bpf_map_type_str((enum bpf_map_type)i);

			if (n && !strcmp(n, s)) {
				t = i;
				break;
			}
		}
		if (t < 0)
			luaL_error(L, "set_type map '%s': unknown map type '%s' (e.g. \"hash\", "
				   "\"lru_hash\", \"percpu_array\")", m->name, s);
	}
	if (bpf_map__set_type(m->map, (enum bpf_map_type)t))
		bh_fail(L, "set_type", "map", m->name, errno, NULL, NULL);
	cfg_refresh(L, 1, m);
	lua_settop(L, 1);
	return 1;
}

/* m:set_flags(flags): an integer, or names joined by "|": "no_prealloc|rdonly_prog". */
static int map_set_flags(lua_State *L)
{
	struct bh_map *m = cfg_check(L, 1, "set_flags");
	uint32_t flags = 0;

	if (lua_type(L, 2) == LUA_TNUMBER) {
		flags = check_u32(L, 2, "set_flags", "flags", 0);
	} else {
		size_t len;
		const char *s = luaL_checklstring(L, 2, &len);

		flags = bh_map_flag_names(L, s, len, "set_flags", m->name);
	}
	if (bpf_map__set_map_flags(m->map, flags))
		bh_fail(L, "set_flags", "map", m->name, errno, NULL, NULL);
	cfg_refresh(L, 1, m);
	lua_settop(L, 1);
	return 1;
}

/*
 * m:set_inner_map(inner): a map-in-map's inner map template, a live map
 * handle. libbpf keeps its fd until load, so the object keeps the handle.
 */
static int map_set_inner_map(lua_State *L)
{
	struct bh_map *m = cfg_check(L, 1, "set_inner_map");
	struct bh_map *in = bh_map_check(L, 2);
	uint32_t t = bpf_map__type(m->map);

	if (t != BPF_MAP_TYPE_ARRAY_OF_MAPS && t != BPF_MAP_TYPE_HASH_OF_MAPS)
		luaL_error(L, "set_inner_map map '%s': a %s map holds no maps (array_of_maps and "
			   "hash_of_maps do)", m->name, libbpf_bpf_map_type_str((enum bpf_map_type)t));
	if (bpf_map__set_inner_map_fd(m->map, in->fd))
		bh_fail_msg(L, "set_inner_map", "map", m->name, errno,
			    errno == EINVAL ? "it already has an inner map" : NULL, NULL, NULL);
	bh_getuv(L, 1);
	lua_getfield(L, -1, "parent");
	bh_object_cfg(L, lua_gettop(L), "inner");
	lua_pushvalue(L, 2);
	lua_setfield(L, -2, m->name);
	lua_settop(L, 1);
	return 1;
}

/*
 * m:set_pin_path(path | nil): at load, reuse the map pinned at path if there
 * is one (it must match), else create it and pin it there.
 */
static int map_set_pin_path(lua_State *L)
{
	struct bh_map *m = cfg_check(L, 1, "set_pin_path");
	const char *path = luaL_optstring(L, 2, NULL);

	if (path && strncmp(path, "/", 1))
		luaL_error(L, "set_pin_path map '%s': '%s' is not an absolute path on bpffs", m->name,
			   path);
	if (path && bh_ensure_bpffs())
		bh_fail_msg(L, "set_pin_path", "map", m->name, errno,
			    "bpffs is not mounted at /sys/fs/bpf", "mount -t bpf bpf /sys/fs/bpf",
			    NULL);
	if (path)
		bh_check_bpffs(L, "set_pin_path", "map", m->name, path, 0);
	if (bpf_map__set_pin_path(m->map, path))
		bh_fail(L, "set_pin_path", "map", m->name, errno, NULL, NULL);
	lua_settop(L, 1);
	return 1;
}

/*
 * m:reuse(other | path): the object uses an existing map (a live handle, or
 * the map pinned at path) instead of creating this one.
 */
static int map_reuse(lua_State *L)
{
	struct bh_map *m = cfg_check(L, 1, "reuse");
	int fd, err;

	if (lua_type(L, 2) == LUA_TSTRING) {
		const char *path = lua_tostring(L, 2);

		fd = bpf_obj_get(path);
		if (fd < 0) {
			err = errno;
			bh_fail_msg(L, "reuse", "map", m->name, err,
				    err == ENOENT ? lua_pushfstring(L, "nothing pinned at '%s'", path)
						  : lua_pushfstring(L, "cannot open the pin '%s'", path),
				    NULL, NULL);
		}
		err = bpf_map__reuse_fd(m->map, fd) ? errno : 0;
		close(fd);
	} else {
		struct bh_map *o = bh_map_check(L, 2);

		if (o == m)
			luaL_error(L, "reuse map '%s': a map cannot reuse itself", m->name);
		err = bpf_map__reuse_fd(m->map, o->fd) ? errno : 0;
	}
	if (err)
		bh_fail_msg(L, "reuse", "map", m->name, err,
			    err == EINVAL || err == EBADF ? "not a BPF map" : NULL, NULL, NULL);
	bh_getuv(L, 1);
	lua_getfield(L, -1, "parent");
	bh_object_cfg(L, lua_gettop(L), "reuse");
	lua_pushvalue(L, 2);
	lua_setfield(L, -2, m->name);
	cfg_refresh(L, 1, m);
	lua_settop(L, 1);
	return 1;
}

static const luaL_Reg mapcfg_methods[] = {
	{ "set_max_entries", map_set_max_entries },
	{ "set_type", map_set_type },
	{ "set_flags", map_set_flags },
	{ "set_inner_map", map_set_inner_map },
	{ "set_pin_path", map_set_pin_path },
	{ "reuse", map_reuse },
	{ NULL, NULL },
};

void bh_mapcfg_register(lua_State *L)
{
	bh_setfuncs(L, mapcfg_methods, 0);
}
