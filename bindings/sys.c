/*
 * sys.c: what the kernel holds, whoever made it: bpf.maps(), bpf.programs(),
 * bpf.links(), bpf.map_by_name(), bpf.open_pinned().
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "bh.h"

/* ------------------------------------------------------------------------ */
/* -- What an fd is ------------------------------------------------------- */

enum { OBJ_UNKNOWN, OBJ_MAP, OBJ_PROG, OBJ_LINK };

#define BPF_FS_MAGIC_ 0xcafe4a11

/* The kind of BPF object behind fd, from /proc/self/fdinfo. */
static int fd_kind(int fd)
{
	char path[64], line[128];
	int kind = OBJ_UNKNOWN;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (!f)
		return OBJ_UNKNOWN;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "map_type:", 9)) {
			kind = OBJ_MAP;
			break;
		}
		if (!strncmp(line, "link_type:", 10)) {
			kind = OBJ_LINK;
			break;
		}
		if (!strncmp(line, "prog_type:", 10)) {
			kind = OBJ_PROG;
			break;
		}
	}
	fclose(f);
	return kind;
}

static uint32_t fd_id(int fd, int kind)
{
	union {
		struct bpf_map_info map;
		struct bpf_prog_info prog;
		struct bpf_link_info link;
	} info;
	uint32_t len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (kind == OBJ_MAP)
		len = sizeof(info.map);
	else if (kind == OBJ_PROG)
		len = sizeof(info.prog);
	else if (kind == OBJ_LINK)
		len = sizeof(info.link);
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return 0;
	return kind == OBJ_MAP ? info.map.id : kind == OBJ_PROG ? info.prog.id : info.link.id;
}

/* ------------------------------------------------------------------------ */
/* -- Pinned paths -------------------------------------------------------- */

/*
 * Walk bpffs (when mounted) and fill the table at tidx with
 * "map:<id>" / "prog:<id>" / "link:<id>" -> list of paths. Bounded in depth
 * and in the number of entries, so a huge bpffs cannot stall a listing.
 */
static void scan_pins(lua_State *L, int tidx, const char *dir, int depth, int *budget)
{
	DIR *d;
	struct dirent *e;

	if (depth > 6 || *budget <= 0)
		return;
	d = opendir(dir);
	if (!d)
		return;
	while ((e = readdir(d)) && *budget > 0) {
		char path[4096];
		struct stat st;
		int fd, kind;
		uint32_t id;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (lstat(path, &st))
			continue;
		(*budget)--;
		if (S_ISDIR(st.st_mode)) {
			scan_pins(L, tidx, path, depth + 1, budget);
			continue;
		}
		fd = bpf_obj_get(path);
		if (fd < 0)
			continue;
		kind = fd_kind(fd);
		id = fd_id(fd, kind);
		close(fd);
		if (!id || kind == OBJ_UNKNOWN)
			continue;
		lua_pushfstring(L, "%s:%d", kind == OBJ_MAP ? "map" : kind == OBJ_PROG ? "prog" : "link",
				(int)id);
		lua_pushvalue(L, -1);
		lua_rawget(L, tidx);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			lua_newtable(L);
			lua_pushvalue(L, -2);
			lua_pushvalue(L, -2);
			lua_rawset(L, tidx);
		}
		lua_pushstring(L, path);
		lua_rawseti(L, -2, (int)bh_rawlen(L, -2) + 1);
		lua_pop(L, 2);
	}
	closedir(d);
}

/* Push the pins table (see scan_pins). */
static void push_pins(lua_State *L)
{
	int budget = 4096;

	lua_newtable(L);
	if (!access("/sys/fs/bpf", R_OK))
		scan_pins(L, lua_gettop(L), "/sys/fs/bpf", 0, &budget);
}

/* t.pinned = pins["kind:id"] when there is one; t at -1, pins at pidx. */
static void set_pinned(lua_State *L, int pidx, const char *kind, uint32_t id)
{
	lua_pushfstring(L, "%s:%d", kind, (int)id);
	lua_rawget(L, pidx);
	if (lua_isnil(L, -1))
		lua_pop(L, 1);
	else
		lua_setfield(L, -2, "pinned");
}

static void setnum(lua_State *L, const char *k, lua_Number v)
{
	lua_pushinteger(L, (lua_Integer)v);
	lua_setfield(L, -2, k);
}

static void setstr(lua_State *L, const char *k, const char *v)
{
	if (!v)
		return;
	lua_pushstring(L, v);
	lua_setfield(L, -2, k);
}

/* ------------------------------------------------------------------------ */
/* -- bpf.maps() ---------------------------------------------------------- */

/* Push the name of type_id in the kernel BTF object btf_id (cached at cidx), or nil. */
static void push_type_name(lua_State *L, int cidx, uint32_t btf_id, uint32_t type_id)
{
	const struct btf_type *t;
	struct btf **hold;
	const char *n;

	lua_rawgeti(L, cidx, (int)btf_id);
	hold = lua_touserdata(L, -1);
	lua_pop(L, 1); /* the cache keeps the holder alive */
	if (!hold) {
		struct btf *btf = btf__load_from_kernel_by_id(btf_id);

		if (!btf) {
			lua_pushnil(L);
			return;
		}
		hold = bh_btf_hold(L, btf);
		lua_rawseti(L, cidx, (int)btf_id);
	}
	t = btf__type_by_id(*hold, type_id);
	n = t ? btf__name_by_offset(*hold, t->name_off) : NULL;
	if (!t) {
		lua_pushnil(L);
	} else if (btf_is_struct(t) && n && *n) {
		lua_pushfstring(L, "struct %s", n);
	} else if (btf_is_union(t) && n && *n) {
		lua_pushfstring(L, "union %s", n);
	} else if (btf_is_array(t)) {
		const struct btf_array *a = btf_array(t);
		const struct btf_type *et = btf__type_by_id(*hold, a->type);
		const char *en = et ? btf__name_by_offset(*hold, et->name_off) : NULL;

		lua_pushfstring(L, "%s[%d]", en && *en ? en : "?", (int)a->nelems);
	} else if (n && *n) {
		lua_pushstring(L, n);
	} else {
		lua_pushnil(L);
	}
}

/* Count a hash-like map's entries with batch lookups, or -1 when it cannot. */
static long long count_entries(int fd, const struct bpf_map_info *info)
{
	DECLARE_LIBBPF_OPTS(bpf_map_batch_opts, opts);
	size_t vs = info->value_size;
	uint32_t chunk = 256, count, cursor[2] = { 0, 0 }, next[2];
	long long total = 0;
	void *keys, *vals;
	int started = 0, err;

	switch (info->type) {
	case BPF_MAP_TYPE_HASH:
	case BPF_MAP_TYPE_LRU_HASH:
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH:
		break;
	default:
		return -1;
	}
	if (info->max_entries > (1u << 20))
		return -1;
	if (info->type == BPF_MAP_TYPE_PERCPU_HASH || info->type == BPF_MAP_TYPE_LRU_PERCPU_HASH)
		vs = ((vs + 7) & ~(size_t)7) * (size_t)libbpf_num_possible_cpus();
	for (;;) {
		keys = malloc((size_t)chunk * info->key_size);
		vals = malloc((size_t)chunk * vs);
		if (!keys || !vals) {
			free(keys);
			free(vals);
			return -1;
		}
		count = chunk;
		err = bpf_map_lookup_batch(fd, started ? cursor : NULL, next, keys, vals, &count,
					   &opts);
		free(keys);
		free(vals);
		if (err && errno == ENOSPC && count == 0 && chunk < 65536) {
			chunk *= 4;
			continue;
		}
		if (err && errno != ENOENT)
			return -1;
		total += count;
		if (err)
			return total;
		cursor[0] = next[0];
		cursor[1] = next[1];
		started = 1;
	}
}

static int l_maps(lua_State *L)
{
	uint32_t id = 0;
	int n = 0, pidx, cidx;

	lua_settop(L, 0);
	push_pins(L);
	pidx = 1;
	lua_newtable(L); /* btf cache */
	cidx = 2;
	lua_newtable(L);
	while (!bpf_map_get_next_id(id, &id)) {
		struct bpf_map_info info;
		uint32_t len = sizeof(info);
		long long v;
		int fd = bpf_map_get_fd_by_id(id);

		if (fd < 0)
			continue; /* gone since */
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
			close(fd);
			continue;
		}
		lua_createtable(L, 0, 16);
		setnum(L, "id", info.id);
		setstr(L, "name", info.name);
		setstr(L, "type", bh_map_type_name(info.type));
		setnum(L, "key_size", info.key_size);
		setnum(L, "value_size", info.value_size);
		setnum(L, "max_entries", info.max_entries);
		setnum(L, "flags", info.map_flags);
		if (info.btf_id) {
			setnum(L, "btf_id", info.btf_id);
			if (info.btf_key_type_id) {
				push_type_name(L, cidx, info.btf_id, info.btf_key_type_id);
				lua_setfield(L, -2, "key_type");
			}
			if (info.btf_value_type_id) {
				push_type_name(L, cidx, info.btf_id, info.btf_value_type_id);
				lua_setfield(L, -2, "value_type");
			}
		}
		v = bh_fdinfo(fd, "memlock");
		if (v >= 0)
			setnum(L, "memlock", (lua_Number)v);
		v = bh_fdinfo(fd, "frozen");
		lua_pushboolean(L, v > 0);
		lua_setfield(L, -2, "frozen");
		if (info.type == BPF_MAP_TYPE_ARRAY || info.type == BPF_MAP_TYPE_PERCPU_ARRAY)
			v = info.max_entries;
		else
			v = count_entries(fd, &info);
		if (v >= 0)
			setnum(L, "entries", (lua_Number)v);
		set_pinned(L, pidx, "map", info.id);
		close(fd);
		lua_rawseti(L, -2, ++n);
	}
	luaL_getmetatable(L, "bpfhost.maplist");
	lua_setmetatable(L, -2);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- bpf.programs() ------------------------------------------------------ */

static int l_programs(lua_State *L)
{
	uint32_t id = 0;
	int n = 0, pidx;

	lua_settop(L, 0);
	push_pins(L);
	pidx = 1;
	lua_newtable(L);
	while (!bpf_prog_get_next_id(id, &id)) {
		struct bpf_prog_info info;
		uint32_t len = sizeof(info), map_ids[64], i, nmaps;
		char tag[17];
		const char *t;
		int fd = bpf_prog_get_fd_by_id(id);

		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		info.nr_map_ids = 64;
		info.map_ids = (uint64_t)(uintptr_t)map_ids;
		if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
			close(fd);
			continue;
		}
		lua_createtable(L, 0, 16);
		setnum(L, "id", info.id);
		setstr(L, "name", info.name);
		t = libbpf_bpf_prog_type_str(info.type);
		setstr(L, "type", t ? t : "unknown");
		for (i = 0; i < 8; i++)
			snprintf(tag + 2 * i, 3, "%02x", info.tag[i]);
		setstr(L, "tag", tag);
		setnum(L, "loaded_at", (lua_Number)info.load_time);
		setnum(L, "uid", info.created_by_uid);
		setnum(L, "xlated_len", info.xlated_prog_len);
		setnum(L, "jited_len", info.jited_prog_len);
		if (info.btf_id)
			setnum(L, "btf_id", info.btf_id);
		setnum(L, "run_cnt", (lua_Number)info.run_cnt);
		setnum(L, "run_time_ns", (lua_Number)info.run_time_ns);
		setnum(L, "verified_insns", info.verified_insns);
		nmaps = info.nr_map_ids < 64 ? info.nr_map_ids : 64;
		lua_createtable(L, (int)nmaps, 0);
		for (i = 0; i < nmaps; i++) {
			lua_pushinteger(L, map_ids[i]);
			lua_rawseti(L, -2, (int)i + 1);
		}
		lua_setfield(L, -2, "map_ids");
		set_pinned(L, pidx, "prog", info.id);
		close(fd);
		lua_rawseti(L, -2, ++n);
	}
	luaL_getmetatable(L, "bpfhost.proglist");
	lua_setmetatable(L, -2);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- bpf.links() --------------------------------------------------------- */

static int l_links(lua_State *L)
{
	uint32_t id = 0;
	int n = 0, pidx;

	lua_settop(L, 0);
	push_pins(L);
	pidx = 1;
	lua_newtable(L);
	while (!bpf_link_get_next_id(id, &id)) {
		struct bpf_link_info info;
		uint32_t len = sizeof(info);
		char name[256];
		const char *t;
		int fd = bpf_link_get_fd_by_id(id);

		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		name[0] = '\0';
		if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
			close(fd);
			continue;
		}
		if (info.type == BPF_LINK_TYPE_RAW_TRACEPOINT || info.type == BPF_LINK_TYPE_ITER) {
			/* a second call with a buffer for the name */
			struct bpf_link_info again;

			memset(&again, 0, sizeof(again));
			len = sizeof(again);
			if (info.type == BPF_LINK_TYPE_RAW_TRACEPOINT) {
				again.raw_tracepoint.tp_name = (uint64_t)(uintptr_t)name;
				again.raw_tracepoint.tp_name_len = sizeof(name);
			} else {
				again.iter.target_name = (uint64_t)(uintptr_t)name;
				again.iter.target_name_len = sizeof(name);
			}
			if (bpf_obj_get_info_by_fd(fd, &again, &len))
				name[0] = '\0';
		}
		lua_createtable(L, 0, 8);
		setnum(L, "id", info.id);
		t = libbpf_bpf_link_type_str(info.type);
		setstr(L, "type", t ? t : "unknown");
		setnum(L, "prog_id", info.prog_id);
		if (name[0])
			setstr(L, "target", name);
		switch (info.type) {
		case BPF_LINK_TYPE_TRACING:
			setstr(L, "attach_type", libbpf_bpf_attach_type_str(info.tracing.attach_type));
			break;
		case BPF_LINK_TYPE_CGROUP:
			setnum(L, "cgroup_id", (lua_Number)info.cgroup.cgroup_id);
			setstr(L, "attach_type", libbpf_bpf_attach_type_str(info.cgroup.attach_type));
			break;
		case BPF_LINK_TYPE_NETNS:
			setnum(L, "netns_ino", info.netns.netns_ino);
			setstr(L, "attach_type", libbpf_bpf_attach_type_str(info.netns.attach_type));
			break;
		case BPF_LINK_TYPE_XDP:
			setnum(L, "ifindex", info.xdp.ifindex);
			break;
		}
		set_pinned(L, pidx, "link", info.id);
		close(fd);
		lua_rawseti(L, -2, ++n);
	}
	luaL_getmetatable(L, "bpfhost.linklist");
	lua_setmetatable(L, -2);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Finding one --------------------------------------------------------- */

/* bpf.map_by_name(name): the one map with that name, typed by its BTF. */
static int l_map_by_name(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	uint32_t id = 0, found = 0, nfound = 0;
	luaL_Buffer ids;
	char reason[128];

	luaL_buffinit(L, &ids);
	while (!bpf_map_get_next_id(id, &id)) {
		struct bpf_map_info info;
		uint32_t len = sizeof(info);
		int fd = bpf_map_get_fd_by_id(id);

		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		if (!bpf_obj_get_info_by_fd(fd, &info, &len) && !strcmp(info.name, name)) {
			char b[16];

			snprintf(b, sizeof(b), "%s%u", nfound ? ", " : "", id);
			luaL_addstring(&ids, b);
			found = id;
			nfound++;
		}
		close(fd);
	}
	luaL_pushresult(&ids);
	if (!nfound) {
		snprintf(reason, sizeof(reason), "no map named '%.40s'", name);
		bh_fail_msg(L, "map_by_name", NULL, NULL, ENOENT, reason,
			    strlen(name) >= BPF_OBJ_NAME_LEN ?
				    "the kernel keeps only the first 15 characters of a map name" :
				    "bpf.maps() lists the maps there are",
			    NULL);
	}
	if (nfound > 1)
		return luaL_error(L, "map_by_name: %d maps are named '%s' (ids %s): use "
				     "bpf.map_by_id(id)",
				  (int)nfound, name, lua_tostring(L, -1));
	{
		int fd = bpf_map_get_fd_by_id(found);

		if (fd < 0)
			bh_fail(L, "map_by_name", "map", name, errno, NULL, NULL);
		bh_map_push_fd(L, fd, 1, "map_by_name");
	}
	return 1;
}

/* bpf.open_pinned(path): the map, program or link pinned there. */
static int l_open_pinned(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	int fd, kind, err;

	if (!strncmp(path, "/sys/fs/bpf", 11))
		bh_ensure_bpffs();
	fd = bpf_obj_get(path);
	if (fd < 0) {
		struct statfs st;
		const char *why = NULL;

		err = errno;
		/* the kernel says EACCES for a path that is no BPF object (not a lack of privileges) */
		if (err == ENOENT)
			why = lua_pushfstring(L, "nothing is pinned at '%s'", path);
		else if (!statfs(path, &st) && (unsigned long)st.f_type != BPF_FS_MAGIC_)
			why = lua_pushfstring(L, "'%s' is not on bpffs", path);
		else if (err == EACCES && !geteuid())
			why = lua_pushfstring(L, "'%s' is not a pinned map, program or link", path);
		bh_fail_msg(L, "open_pinned", NULL, NULL, err, why,
			    why ? "pins live on bpffs (/sys/fs/bpf); bpf.maps() lists pinned maps" :
				  NULL,
			    NULL);
	}
	kind = fd_kind(fd);
	switch (kind) {
	case OBJ_MAP: {
		struct bh_map *m;

		bh_map_push_fd(L, fd, 1, "open_pinned");
		m = bh_map_testud(L, -1);
		if (m && !m->pin_path)
			m->pin_path = strdup(path); /* for m:info().pinned and m:unpin() */
		return 1;
	}
	case OBJ_LINK: {
		struct bpf_link *link;

		close(fd);
		link = bpf_link__open(path);
		if (!link)
			bh_fail(L, "open_pinned", "link", path, errno, NULL, NULL);
		bh_link_push(L, 0, link, path, "pinned");
		return 1;
	}
	case OBJ_PROG:
		bh_prog_push_fd(L, fd, path);
		return 1;
	default:
		close(fd);
		return luaL_error(L, "open_pinned: '%s' is not a map, program or link", path);
	}
}

static const luaL_Reg sys_funcs[] = {
	{ "maps", l_maps },
	{ "programs", l_programs },
	{ "links", l_links },
	{ "map_by_name", l_map_by_name },
	{ "open_pinned", l_open_pinned },
	{ NULL, NULL },
};

void bh_sys_init(lua_State *L)
{
	bh_setfuncs(L, sys_funcs, 0);
	/* mark listings for the pretty printer */
	luaL_newmetatable(L, "bpfhost.maplist");
	lua_pushliteral(L, "bpfhost.maplist");
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);
	luaL_newmetatable(L, "bpfhost.proglist");
	lua_pushliteral(L, "bpfhost.proglist");
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);
	luaL_newmetatable(L, "bpfhost.linklist");
	lua_pushliteral(L, "bpfhost.linklist");
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);
}
