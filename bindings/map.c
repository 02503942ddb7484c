/* map.c: bpfhost.map, map handles and their operations. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "bh.h"

#define ITER_MAGIC  0x62686974u
#define PROXY_MAGIC 0x62687078u
#define BPF_FS_MAGIC_ 0xcafe4a11

/* ------------------------------------------------------------------------ */
/* -- Map types ----------------------------------------------------------- */

static int map_is_percpu(uint32_t type)
{
	return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
	       type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

static unsigned special_of(uint32_t type)
{
	switch (type) {
	case BPF_MAP_TYPE_QUEUE:
	case BPF_MAP_TYPE_STACK:
		return BH_MS_KEYLESS;
	case BPF_MAP_TYPE_BLOOM_FILTER:
		return BH_MS_KEYLESS | BH_MS_BLOOM;
	case BPF_MAP_TYPE_RINGBUF:
	case BPF_MAP_TYPE_USER_RINGBUF:
		return BH_MS_EVENTS;
	case BPF_MAP_TYPE_PERF_EVENT_ARRAY:
		return BH_MS_EVENTS | BH_MS_ARRAY;
	case BPF_MAP_TYPE_ARRAY:
	case BPF_MAP_TYPE_PERCPU_ARRAY:
		return BH_MS_ARRAY | BH_MS_NODELETE;
	case BPF_MAP_TYPE_ARRAY_OF_MAPS:
		return BH_MS_ARRAY | BH_MS_FDMAP;
	case BPF_MAP_TYPE_HASH_OF_MAPS:
		return BH_MS_FDMAP;
	case BPF_MAP_TYPE_PROG_ARRAY:
		return BH_MS_ARRAY | BH_MS_FDPROG;
	case BPF_MAP_TYPE_LPM_TRIE:
		return BH_MS_LPM;
	}
	return 0;
}

const char *bh_map_type_name(uint32_t type)
{
	const char *s = libbpf_bpf_map_type_str((enum bpf_map_type)type);

	return s ? s : "unknown";
}

#define map_type_name bh_map_type_name

/* The map type named s ("hash", "lru_percpu_hash", ...), or -1. */
static int map_type_by_name(const char *s)
{
	int t;

	for (t = 0; t < 64; t++) {
		const char *n = libbpf_bpf_map_type_str((enum bpf_map_type)t);

		if (n && !strcmp(n, s))
			return t;
	}
	return -1;
}

/* "a" or "an" before a map type name: "an array map", "a hash map". */
static const char *article(const char *word)
{
	return strchr("aeiou", word[0]) ? "an" : "a";
}

/* ------------------------------------------------------------------------ */
/* -- Checking ------------------------------------------------------------ */

static __attribute__((noinline, noreturn)) void map_badself(lua_State *L, const char *op)
{
	const char *msg = lua_pushfstring(L, "bpfhost.map expected, got %s (call it as m:%s(...))",
					  bh_typename(L, 1), op);

	luaL_argerror(L, 1, msg);
	abort();
}

static inline struct bh_map *map_toud(lua_State *L, int idx)
{
	struct bh_map *m = lua_touserdata(L, idx);

	/* light userdata has length 0, so the size test also rules it out */
	if (!m || bh_rawlen(L, idx) != sizeof(*m) || m->magic != BH_MAP_MAGIC)
		return NULL;
	return m;
}

struct bh_map *bh_map_testud(lua_State *L, int idx)
{
	return map_toud(L, idx);
}

static void map_refresh_props(lua_State *L, int idx, struct bh_map *m);
static void map_fast_code(struct bh_map *m);

/*
 * Size the scratch buffers of m and compile its key and value plans (from
 * btf when kid/vid are set, raw bytes otherwise) into the uservalue of the
 * map userdata at idx. m->type, key_size and value_size are set.
 */
static void map_setup(lua_State *L, int idx, struct bh_map *m, const struct btf *btf, uint32_t kid,
		      uint32_t vid, const char *op)
{
	size_t total;

	m->special = special_of(m->type);
	m->ncpus = 0;
	m->value_bufsz = m->value_size;
	if (map_is_percpu(m->type)) {
		m->ncpus = libbpf_num_possible_cpus();
		if (m->ncpus <= 0)
			luaL_error(L, "%s map '%s': cannot read the number of possible CPUs", op,
				   m->name);
		m->value_bufsz = ((m->value_size + 7) & ~7u) * (uint32_t)m->ncpus;
	}
	free(m->kbuf);
	total = (size_t)m->key_size * 2 + m->value_bufsz + 16;
	m->kbuf = calloc(1, total);
	if (!m->kbuf)
		luaL_error(L, "%s map '%s': out of memory", op, m->name);
	m->kbuf2 = m->kbuf + m->key_size;
	m->vbuf = m->kbuf + ((m->key_size * 2 + 7) & ~7u);

	bh_getuv(L, idx);
	if (btf && kid)
		m->ktype = bh_type_new(L, btf, kid);
	else
		m->ktype = bh_type_raw(L, m->key_size);
	lua_setfield(L, -2, "ktype");
	if (btf && vid && !(m->special & (BH_MS_FDMAP | BH_MS_FDPROG)))
		m->vtype = bh_type_new(L, btf, vid);
	else
		m->vtype = bh_type_raw(L, m->value_size);
	lua_setfield(L, -2, "vtype");
	lua_pop(L, 1);
	if (m->ktype->root->size != m->key_size || m->vtype->root->size != m->value_size)
		luaL_error(L, "%s map '%s': BTF types do not match the map's sizes", op, m->name);
	map_fast_code(m);
}

/*
 * libbpf creates some map types (queue, stack, map-in-map, perf_event_array,
 * ...) without BTF, as older kernels refused it, and zeroes their type ids;
 * the types are still in the map's definition in the object's .maps section:
 * member "key" or "value" is a pointer to the type (absent for
 * __uint(key_size, n) definitions and for the __array of map-in-map values).
 */
static uint32_t map_def_type(const struct btf *btf, const char *map_name, const char *member,
			     uint32_t size)
{
	const struct btf_var_secinfo *vs;
	const struct btf_type *sec;
	int id = btf__find_by_name_kind(btf, ".maps", BTF_KIND_DATASEC);
	int i, j;

	if (id < 0 || !(sec = btf__type_by_id(btf, (uint32_t)id)))
		return 0;
	vs = btf_var_secinfos(sec);
	for (i = 0; i < btf_vlen(sec); i++, vs++) {
		const struct btf_type *var = btf__type_by_id(btf, vs->type), *def;
		const struct btf_member *mb;

		if (!var || !btf_is_var(var) ||
		    strcmp(btf__name_by_offset(btf, var->name_off), map_name))
			continue;
		def = btf__type_by_id(btf, var->type);
		while (def && (btf_is_typedef(def) || btf_is_mod(def)))
			def = btf__type_by_id(btf, def->type);
		if (!def || !btf_is_struct(def))
			return 0;
		mb = btf_members(def);
		for (j = 0; j < btf_vlen(def); j++, mb++) {
			const struct btf_type *pt = btf__type_by_id(btf, mb->type);

			if (strcmp(btf__name_by_offset(btf, mb->name_off), member))
				continue;
			if (!pt || !btf_is_ptr(pt) || btf__resolve_size(btf, pt->type) != size)
				return 0;
			return pt->type;
		}
		return 0;
	}
	return 0;
}

/*
 * Make an object's map usable: the first call after load reads its fd and
 * sizes and compiles the codec plans; later calls only come here when the
 * handle is closed. The map userdata is at idx.
 */
static __attribute__((noinline)) void map_prepare_at(lua_State *L, int idx, struct bh_map *m,
						    const char *op)
{
	const struct btf *btf;
	uint32_t kid, vid;
	int fd;

	if (m->closed || !m->map)
		luaL_error(L, "%s map '%s': map is closed", op, m->name);
	if (m->parent && !m->parent->obj)
		luaL_error(L, "%s map '%s': its object is closed", op, m->name);
	if (m->parent && !m->parent->loaded)
		luaL_error(L, "%s map '%s': the object is not loaded yet (call obj:load() first)", op,
			   m->name);
	fd = bpf_map__fd(m->map);
	if (fd < 0)
		luaL_error(L, "%s map '%s': map was not created at load", op, m->name);

	m->type = bpf_map__type(m->map);
	m->key_size = bpf_map__key_size(m->map);
	m->value_size = bpf_map__value_size(m->map);
	m->max_entries = bpf_map__max_entries(m->map);
	m->map_flags = bpf_map__map_flags(m->map);
	btf = bpf_object__btf(m->parent->obj);
	kid = btf ? bpf_map__btf_key_type_id(m->map) : 0;
	vid = btf ? bpf_map__btf_value_type_id(m->map) : 0;
	if (btf && !kid && m->key_size)
		kid = map_def_type(btf, bpf_map__name(m->map), "key", m->key_size);
	if (btf && !vid && m->value_size)
		vid = map_def_type(btf, bpf_map__name(m->map), "value", m->value_size);
	map_setup(L, idx, m, btf, kid, vid, op);
	m->fd = fd;
	map_refresh_props(L, idx, m);
}

static inline struct bh_map *map_self(lua_State *L, const char *op)
{
	struct bh_map *m = map_toud(L, 1);

	if (unlikely(!m))
		map_badself(L, op);
	if (unlikely(m->fd < 0))
		map_prepare_at(L, 1, m, op);
	return m;
}

struct bh_map *bh_map_check(lua_State *L, int idx)
{
	struct bh_map *m = map_toud(L, idx);

	if (!m) {
		const char *msg = lua_pushfstring(L, "bpfhost.map expected, got %s",
						  bh_typename(L, idx));

		luaL_argerror(L, idx, msg);
	}
	if (m->fd < 0)
		map_prepare_at(L, idx, m, "use");
	return m;
}

/* Refuse an operation the map's type does not have, pointing at the right one. */
static __attribute__((noinline)) void map_refuse(lua_State *L, struct bh_map *m, const char *op)
{
	const char *t = map_type_name(m->type);

	if (m->special & BH_MS_EVENTS)
		luaL_error(L, "%s map '%s': a %s map is read with %s, not with map operations", op,
			   m->name, t,
			   m->type == BPF_MAP_TYPE_RINGBUF	 ? "bpf.ringbuf(map)" :
			   m->type == BPF_MAP_TYPE_USER_RINGBUF ? "bpf.user_ringbuf(map)" :
								  "bpf.perfbuf(map)");
	if (m->special & BH_MS_BLOOM)
		luaL_error(L, "%s map '%s': a bloom_filter map has no keys (use m:push(v), "
			      "m:contains(v))",
			   op, m->name);
	if (m->special & BH_MS_KEYLESS)
		luaL_error(L, "%s map '%s': a %s map has no keys (use m:push(v), m:pop(), m:peek())",
			   op, m->name, t);
	luaL_error(L, "%s map '%s': not supported by %s %s map", op, m->name, article(t), t);
}

static inline void cctx_init(struct bh_cctx *c, lua_State *L, const char *op, struct bh_map *m,
			     const char *root)
{
	c->L = L;
	c->op = op;
	c->what = "map";
	c->name = m->name;
	c->root = root;
	c->depth = 0;
}

/* ------------------------------------------------------------------------ */
/* -- Flags and options --------------------------------------------------- */

static const struct {
	const char *name;
	uint64_t val;
} flag_names[] = {
	{ "any", BPF_ANY },
	{ "noexist", BPF_NOEXIST },
	{ "exist", BPF_EXIST },
	{ "lock", BPF_F_LOCK },
};

static uint64_t parse_flags(lua_State *L, int idx, const char *op, struct bh_map *m)
{
	uint64_t flags = 0;
	const char *s, *p;
	size_t len;

	switch (lua_type(L, idx)) {
	case LUA_TNONE:
	case LUA_TNIL:
		return 0;
	case LUA_TNUMBER: {
		lua_Number d = lua_tonumber(L, idx);

		if (d < 0 || d >= 18446744073709551616.0 || d != (lua_Number)(uint64_t)d)
			luaL_error(L, "%s map '%s': flags must be a name or a non-negative integer",
				   op, m->name);
		return (uint64_t)d;
	}
	case LUA_TSTRING:
		break;
	default:
		luaL_error(L, "%s map '%s': flags must be a string or an integer, got %s", op,
			   m->name, luaL_typename(L, idx));
	}
	s = lua_tolstring(L, idx, &len);
	for (p = s; p <= s + len;) {
		const char *e = memchr(p, '|', (size_t)(s + len - p));
		size_t n, i;
		int found = 0;

		if (!e)
			e = s + len;
		while (p < e && *p == ' ')
			p++;
		n = (size_t)(e - p);
		while (n && p[n - 1] == ' ')
			n--;
		for (i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++) {
			if (strlen(flag_names[i].name) == n && !strncmp(flag_names[i].name, p, n)) {
				flags |= flag_names[i].val;
				found = 1;
			}
		}
		if (!found) {
			lua_pushlstring(L, p, n);
			luaL_error(L, "%s map '%s': unknown flag '%s' (any, noexist, exist, lock)", op,
				   m->name, lua_tostring(L, -1));
		}
		p = e + 1;
	}
	if ((flags & BPF_NOEXIST) && (flags & BPF_EXIST))
		luaL_error(L, "%s map '%s': flags 'noexist' and 'exist' exclude each other", op,
			   m->name);
	return flags;
}

/*
 * "into": lookup's value set in the caller's table instead of a new one, so
 * that a loop polling a struct value allocates no table per call (LuaJIT's
 * fast path, mapops.lua, writes the fields straight from the buffer). Only
 * for values that decode to tables: structs, unions, arrays, per-CPU values.
 */
static void into_check(lua_State *L, struct bh_map *m, const char *op, int raw)
{
	enum bh_kind k = m->vtype->root->kind;

	if (raw)
		luaL_error(L, "%s map '%s': options 'into' and 'raw' exclude each other (raw "
			      "values are strings)", op, m->name);
	if (m->ncpus)
		return;
	if ((k != BH_K_STRUCT && k != BH_K_UNION && k != BH_K_ARRAY) ||
	    (m->special & (BH_MS_FDMAP | BH_MS_FDPROG)))
		luaL_error(L, "%s map '%s': option 'into' needs a value that decodes to a table "
			      "(a struct, union, array or per-CPU value; this map's value is %s, "
			      "which decodes to %s)",
			   op, m->name, m->vtype->root->cname,
			   k == BH_K_CHARS || k == BH_K_BYTES || k == BH_K_RAW ? "a string"
			   : k == BH_K_BOOL ? "a boolean" : (m->special & (BH_MS_FDMAP | BH_MS_FDPROG)) ? "an id"
			   : "a number");
}

/* Each entry of the table at src set in the table at dst (through __newindex, as any assignment). */
static void into_copy(lua_State *L, int src, int dst)
{
	lua_pushnil(L);
	while (lua_next(L, src)) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_settable(L, dst);
	}
}

/*
 * The decoded value on top becomes the into table of the options at optidx:
 * each of its entries set there, the rest of that table left as it is. A
 * per-CPU value's struct elements go into the tables already at t[i], when
 * there are, so that polling per-CPU stats makes no table either.
 */
static void into_fill(lua_State *L, struct bh_map *m, int optidx)
{
	int v = lua_gettop(L), i;
	enum bh_kind k = m->vtype->root->kind;

	lua_getfield(L, optidx, "into");
	if (!m->ncpus || (k != BH_K_STRUCT && k != BH_K_UNION)) {
		into_copy(L, v, v + 1);
	} else {
		for (i = 1; i <= m->ncpus; i++) {
			lua_rawgeti(L, v, i);   /* v + 2: CPU i's value */
			lua_pushinteger(L, i);
			lua_gettable(L, v + 1); /* v + 3: t[i] */
			if (lua_istable(L, -1)) {
				into_copy(L, v + 2, v + 3);
				lua_pop(L, 2);
			} else {
				lua_pop(L, 1);
				lua_pushinteger(L, i);
				lua_insert(L, -2);
				lua_settable(L, v + 1);
			}
		}
	}
	lua_replace(L, v);
}

static const char *const lookup_opts[] = { "raw", "flags", NULL };
static const char *const into_opts[] = { "raw", "flags", "into", NULL };

/*
 * Options at idx: nil, a flags string/integer, or a table {flags =, raw =},
 * and into = (a table) when into is not NULL: *into tells whether it was
 * given (into_fill() finds it).
 */
static uint64_t parse_opts(lua_State *L, int idx, const char *op, struct bh_map *m, int *raw,
			   int *into)
{
	uint64_t flags;

	*raw = 0;
	if (into)
		*into = 0;
	if (lua_type(L, idx) != LUA_TTABLE)
		return parse_flags(L, idx, op, m);
	/*
	 * One pass over the table: no lua_getfield (it would intern its key on
	 * every call) and no separate check for unknown names.
	 */
	flags = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		size_t n;
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &n) : NULL;

		if (k && n == 3 && !memcmp(k, "raw", 3)) {
			*raw = lua_toboolean(L, -1);
		} else if (k && n == 5 && !memcmp(k, "flags", 5)) {
			flags = parse_flags(L, lua_gettop(L), op, m);
		} else if (k && n == 4 && !memcmp(k, "into", 4) && into) {
			if (!lua_istable(L, -1))
				luaL_error(L, "%s map '%s': into: expected a table, got %s", op,
					   m->name, luaL_typename(L, -1));
			*into = 1;
		} else {
			lua_pop(L, 2);
			/* raises, naming the key */
			bh_opt_check(L, idx, op, into ? into_opts : lookup_opts);
		}
		lua_pop(L, 1);
	}
	if (into && *into)
		into_check(L, m, op, *raw);
	return flags;
}

/* ------------------------------------------------------------------------ */
/* -- LPM trie keys ------------------------------------------------------- */

/*
 * "10.1.0.0/16" or "2001:db8::/32" into prefixlen (host order u32) and the
 * address bytes; *alen is 4 or 16. Returns 0, or -1 with why in err.
 */
static int parse_cidr(const char *s, uint32_t *plen, unsigned char addr[16], size_t *alen,
		      const char **why)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	unsigned long pl;
	char *end;

	if (n == 0 || n >= sizeof(buf)) {
		*why = "is not an address";
		return -1;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, addr) == 1) {
		*alen = 4;
	} else if (inet_pton(AF_INET6, buf, addr) == 1) {
		*alen = 16;
	} else {
		*why = "is not an IPv4 or IPv6 address";
		return -1;
	}
	if (!slash) {
		*plen = (uint32_t)(*alen * 8);
		return 0;
	}
	pl = strtoul(slash + 1, &end, 10);
	if (end == slash + 1 || *end || pl > *alen * 8) {
		*why = *alen == 4 ? "has a bad prefix length (0..32)" :
				    "has a bad prefix length (0..128)";
		return -1;
	}
	*plen = (uint32_t)pl;
	return 0;
}

/* bpf.lpm_key("10.1.0.0/16") -> {prefixlen = 16, data = "\10\1\0\0"} */
static int l_lpm_key(lua_State *L)
{
	const char *s = luaL_checkstring(L, 1);
	unsigned char addr[16];
	const char *why;
	uint32_t plen;
	size_t alen;

	if (parse_cidr(s, &plen, addr, &alen, &why))
		luaL_error(L, "lpm_key: '%s' %s", s, why);
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, plen);
	lua_setfield(L, -2, "prefixlen");
	lua_pushlstring(L, (const char *)addr, alen);
	lua_setfield(L, -2, "data");
	return 1;
}

/*
 * An LPM key given as a CIDR string, or as {prefixlen =, data =} to a map
 * without key BTF: packed as the kernel's struct bpf_lpm_trie_key (u32
 * prefixlen, then the address bytes). Returns 1 if it handled the key.
 */
static int lpm_enc_key(lua_State *L, struct bh_map *m, const char *op, int idx, unsigned char *dst)
{
	unsigned char addr[16];
	uint32_t plen;
	size_t alen;
	const char *why;

	if (lua_type(L, idx) == LUA_TSTRING) {
		const char *s = lua_tostring(L, idx);

		if (m->ktype->root->kind == BH_K_RAW && bh_rawlen(L, idx) == m->key_size &&
		    !strchr(s, '/') && !strchr(s, '.') && !strchr(s, ':'))
			return 0; /* exact-size raw bytes */
		if (parse_cidr(s, &plen, addr, &alen, &why))
			luaL_error(L, "%s map '%s': key: '%s' %s", op, m->name, s, why);
	} else if (lua_type(L, idx) == LUA_TTABLE && m->ktype->root->kind == BH_K_RAW) {
		size_t n;
		const char *d;
		lua_Number pl;

		lua_getfield(L, idx, "prefixlen");
		lua_getfield(L, idx, "data");
		if (lua_type(L, -2) != LUA_TNUMBER || lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "%s map '%s': key: an LPM key is {prefixlen = n, data = bytes} "
				      "or a string like \"10.0.0.0/8\"",
				   op, m->name);
		pl = lua_tonumber(L, -2);
		d = lua_tolstring(L, -1, &n);
		if (n != m->key_size - 4)
			luaL_error(L, "%s map '%s': key.data: %d bytes given, the map's keys hold %d",
				   op, m->name, (int)n, (int)m->key_size - 4);
		if (pl < 0 || pl > n * 8 || pl != (lua_Number)(uint32_t)pl)
			luaL_error(L, "%s map '%s': key.prefixlen: must be an integer 0..%d", op,
				   m->name, (int)n * 8);
		plen = (uint32_t)pl;
		memcpy(dst, &plen, 4);
		memcpy(dst + 4, d, n);
		lua_pop(L, 2);
		return 1;
	} else {
		return 0;
	}
	if (alen + 4 != m->key_size)
		luaL_error(L, "%s map '%s': key: '%s' is an IPv%d prefix, the map's keys hold %d "
			      "address bytes",
			   op, m->name, lua_tostring(L, idx), alen == 4 ? 4 : 6, (int)m->key_size - 4);
	memset(dst, 0, m->key_size);
	memcpy(dst, &plen, 4);
	memcpy(dst + 4, addr, alen);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Encode / decode through the map's plans ----------------------------- */

static void raw_plan(struct bh_plan *p, uint32_t size)
{
	memset(p, 0, sizeof(*p));
	p->kind = BH_K_RAW;
	p->size = size;
	p->count = size;
	p->cname = "raw bytes";
	p->flags = BH_PLAN_RAW_OPT;
}

/* ------------------------------------------------------------------------ */
/* -- Scalar fast paths --------------------------------------------------- */

/*
 * Most keys and values are integers of 4 or 8 bytes, and the per-call cost
 * of a map op must stay small beside its one syscall (DESIGN "Performance").
 * These put a Lua number into such an integer, and back, without the
 * codec's general machinery. They take only the cases they are sure of
 * (an integral number in range; 64-bit values within 2^53) and return 0 for
 * everything else, which the codec then encodes to the same bytes or
 * refuses with its own error message.
 */
static inline int enc_int_fast(lua_State *L, const struct bh_plan *p, int idx, void *dst)
{
	if (p->kind != BH_K_INT || lua_type(L, idx) != LUA_TNUMBER)
		return 0;
#if LUA_VERSION_NUM >= 503
	if (!lua_isinteger(L, idx))
		return 0;
	{
		lua_Integer i = lua_tointeger(L, idx);

		switch (p->size) {
		case 4:
			if (p->is_signed ? (i < INT32_MIN || i > INT32_MAX) : (i < 0 || i > UINT32_MAX))
				return 0;
			if (p->is_signed) {
				int32_t x = (int32_t)i;

				memcpy(dst, &x, 4);
			} else {
				uint32_t x = (uint32_t)i;

				memcpy(dst, &x, 4);
			}
			return 1;
		case 8:
			if (!p->is_signed && i < 0)
				return 0;
			memcpy(dst, &i, 8);
			return 1;
		}
		return 0;
	}
#else
	{
		lua_Number d = lua_tonumber(L, idx);

		switch (p->size) {
		case 4:
			if (p->is_signed) {
				int32_t x;

				if (!(d >= -2147483648.0 && d <= 2147483647.0))
					return 0;
				x = (int32_t)d;
				if ((lua_Number)x != d)
					return 0;
				memcpy(dst, &x, 4);
			} else {
				uint32_t x;

				if (!(d >= 0.0 && d <= 4294967295.0))
					return 0;
				x = (uint32_t)d;
				if ((lua_Number)x != d)
					return 0;
				memcpy(dst, &x, 4);
			}
			return 1;
		case 8: {
			int64_t x;

			if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0))
				return 0;
			x = (int64_t)d;
			if ((lua_Number)x != d || (!p->is_signed && x < 0))
				return 0;
			memcpy(dst, &x, 8);
			return 1;
		}
		}
		return 0;
	}
#endif
}

static inline void push_int(lua_State *L, int64_t v)
{
#if LUA_VERSION_NUM >= 503
	lua_pushinteger(L, (lua_Integer)v);
#else
	lua_pushnumber(L, (lua_Number)v);
#endif
}

/* The codec's rule: 64-bit values beyond 2^53 decode to cdata (or 5.4 integers). */
static inline int dec_int_fast(lua_State *L, const struct bh_plan *p, const void *src)
{
	if (p->kind != BH_K_INT)
		return 0;
	switch (p->size) {
	case 4:
		if (p->is_signed) {
			int32_t x;

			memcpy(&x, src, 4);
			push_int(L, x);
		} else {
			uint32_t x;

			memcpy(&x, src, 4);
			push_int(L, x);
		}
		return 1;
	case 8: {
		uint64_t u;

		memcpy(&u, src, 8);
		if (p->is_signed ? ((int64_t)u < -(1LL << 53) || (int64_t)u > (1LL << 53))
				 : u > (1ULL << 53))
			return 0;
		push_int(L, (int64_t)u);
		return 1;
	}
	}
	return 0;
}

/* An integer plan of 1, 2, 4 or 8 bytes as size * 2 + signed, for FFI reads; 0 otherwise. */
static int int_code(const struct bh_plan *p)
{
	if (p->kind != BH_K_INT || (p->size != 1 && p->size != 2 && p->size != 4 && p->size != 8))
		return 0;
	return (int)p->size * 2 + (p->is_signed ? 1 : 0);
}

/*
 * m->fast, for the LuaJIT fast path of lookup/update/delete
 * (bindings/lua/mapops.lua), on maps with nothing special but being an
 * array (index below max_entries, no delete: 0x10000); 0 for the others.
 * Key code | value code << 8 | 0x10000 when both are integers (the value
 * not per-CPU). Else 0x20000 (BH_FAST_GEN) when both sides are typed (not
 * raw bytes) and the key is an integer or the map no array: the value, and
 * a key that is not an integer, go through the codecs generated for their
 * Types (bindings/lua/codecgen.lua); the key code is 0 for a generated key.
 * Kept up to date wherever the plans change.
 */
#define BH_FAST_GEN 0x20000

static void map_fast_code(struct bh_map *m)
{
	const struct bh_plan *kp = m->ktype->root, *vp = m->vtype->root;
	int k = int_code(kp), v = int_code(vp), array = !!(m->special & BH_MS_ARRAY);

	m->fast = 0;
	if (m->special & ~(unsigned)(BH_MS_ARRAY | BH_MS_NODELETE))
		return;
	if (k && v && !m->ncpus) {
		m->fast = k | v << 8 | (array ? 0x10000 : 0);
		return;
	}
	if (kp->kind == BH_K_RAW || vp->kind == BH_K_RAW || (!k && array))
		return;
	m->fast = k | BH_FAST_GEN | (array ? 0x10000 : 0);
}

static inline void array_index_check(lua_State *L, struct bh_map *m, const char *op,
				     const void *dst)
{
	uint32_t i;

	if ((m->special & BH_MS_ARRAY) && m->key_size == 4) {
		memcpy(&i, dst, 4);
		if (unlikely(i >= m->max_entries))
			luaL_error(L, "%s map '%s': key: index %s is out of range (0..%s)", op,
				   m->name, bh_numstr(L, i), bh_numstr(L, m->max_entries - 1));
	}
}

static __attribute__((noinline)) void map_enc_key_special(lua_State *L, struct bh_map *m,
							  const char *op, int idx, void *dst,
							  int raw)
{
	struct bh_cctx c;
	struct bh_plan rp;

	if (m->special & (BH_MS_KEYLESS | BH_MS_EVENTS))
		map_refuse(L, m, op);
	if ((m->special & BH_MS_LPM) && !raw && lpm_enc_key(L, m, op, idx, dst))
		return;
	cctx_init(&c, L, op, m, "key");
	if (raw) {
		raw_plan(&rp, m->key_size);
		bh_encode(&c, &rp, idx, dst);
	} else {
		bh_encode(&c, m->ktype->root, idx, dst);
	}
	array_index_check(L, m, op, dst);
}

static __attribute__((noinline)) void map_enc_key_slow(lua_State *L, struct bh_map *m,
						       const char *op, int idx, void *dst, int raw)
{
	struct bh_cctx c;
	struct bh_plan rp;

	if (unlikely(m->special)) {
		map_enc_key_special(L, m, op, idx, dst, raw);
		return;
	}
	cctx_init(&c, L, op, m, "key");
	if (unlikely(raw)) {
		raw_plan(&rp, m->key_size);
		bh_encode(&c, &rp, idx, dst);
	} else {
		bh_encode(&c, m->ktype->root, idx, dst);
	}
}

/* The fast path inline in every op, the rest (and the big codec context) out of line. */
static inline __attribute__((always_inline)) void map_enc_key(lua_State *L, struct bh_map *m,
							      const char *op, int idx, void *dst,
							      int raw)
{
	if (likely(!raw && !(m->special & ~(unsigned)(BH_MS_ARRAY | BH_MS_NODELETE))) &&
	    enc_int_fast(L, m->ktype->root, idx, dst)) {
		array_index_check(L, m, op, dst);
		return;
	}
	map_enc_key_slow(L, m, op, idx, dst, raw);
}

/* A map-in-map or prog_array value: a handle (its fd) or an fd number. */
static void enc_fd_value(lua_State *L, struct bh_map *m, const char *op, int idx, void *dst)
{
	struct bh_map *inner = map_toud(L, idx);
	uint32_t fd;

	if (inner && (m->special & BH_MS_FDMAP)) {
		if (inner->fd < 0)
			map_prepare_at(L, idx, inner, op);
		fd = (uint32_t)inner->fd;
	} else if ((m->special & BH_MS_FDPROG) && bh_testud(L, idx, BH_PROG_MT)) {
		struct bh_prog *p = bh_prog_check(L, idx);
		int pfd = bh_prog_fd(p);

		if (pfd < 0)
			luaL_error(L, "%s map '%s': value: program '%s' is not loaded", op, m->name,
				   p->name);
		fd = (uint32_t)pfd;
	} else if (lua_type(L, idx) == LUA_TNUMBER) {
		lua_Number d = lua_tonumber(L, idx);

		if (d < 0 || d > 2147483647.0 || d != (lua_Number)(int)d)
			luaL_error(L, "%s map '%s': value: %s is not a file descriptor", op, m->name,
				   lua_tostring(L, idx));
		fd = (uint32_t)d;
	} else {
		luaL_error(L, "%s map '%s': value: expected a %s handle or an fd, got %s", op,
			   m->name, (m->special & BH_MS_FDMAP) ? "map" : "program",
			   luaL_typename(L, idx));
		return;
	}
	memcpy(dst, &fd, 4);
}

static __attribute__((noinline)) void map_enc_value_slow(lua_State *L, struct bh_map *m,
							 const char *op, int idx, int raw)
{
	struct bh_cctx c;
	struct bh_plan rp;

	cctx_init(&c, L, op, m, "value");
	if (unlikely(raw)) {
		raw_plan(&rp, m->ncpus ? m->value_bufsz : m->value_size);
		bh_encode(&c, &rp, idx, m->vbuf);
	} else if (unlikely(m->special & (BH_MS_FDMAP | BH_MS_FDPROG))) {
		enc_fd_value(L, m, op, idx, m->vbuf);
	} else if (m->ncpus) {
		bh_encode_percpu(&c, m->vtype->root, idx, m->vbuf, m->ncpus);
	} else {
		bh_encode(&c, m->vtype->root, idx, m->vbuf);
	}
}

static inline __attribute__((always_inline)) void map_enc_value(lua_State *L, struct bh_map *m,
								const char *op, int idx, int raw)
{
	if (likely(!raw && !m->ncpus && !(m->special & (BH_MS_FDMAP | BH_MS_FDPROG))) &&
	    enc_int_fast(L, m->vtype->root, idx, m->vbuf))
		return;
	map_enc_value_slow(L, m, op, idx, raw);
}

static void lpm_dec_raw(lua_State *L, struct bh_map *m, const unsigned char *src)
{
	uint32_t plen;

	memcpy(&plen, src, 4);
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, plen);
	lua_setfield(L, -2, "prefixlen");
	lua_pushlstring(L, (const char *)src + 4, m->key_size - 4);
	lua_setfield(L, -2, "data");
}

static __attribute__((noinline)) void map_dec_key_slow(lua_State *L, struct bh_map *m,
						       const void *src, int raw)
{
	struct bh_cctx c;

	cctx_init(&c, L, "decode", m, "key");
	if (unlikely(raw))
		lua_pushlstring(L, src, m->key_size);
	else if (unlikely((m->special & BH_MS_LPM) && m->ktype->root->kind == BH_K_RAW &&
			  m->key_size > 4))
		lpm_dec_raw(L, m, src);
	else
		bh_decode(&c, m->ktype->root, src);
}

static inline __attribute__((always_inline)) void map_dec_key(lua_State *L, struct bh_map *m,
							      const void *src, int raw)
{
	if (likely(!raw) && dec_int_fast(L, m->ktype->root, src))
		return;
	map_dec_key_slow(L, m, src, raw);
}

static __attribute__((noinline)) void map_dec_value_slow(lua_State *L, struct bh_map *m,
							 const void *src, int raw)
{
	struct bh_cctx c;

	cctx_init(&c, L, "decode", m, "value");
	if (unlikely(raw)) {
		lua_pushlstring(L, src, m->ncpus ? m->value_bufsz : m->value_size);
	} else if (unlikely(m->special & (BH_MS_FDMAP | BH_MS_FDPROG))) {
		uint32_t id;

		memcpy(&id, src, 4);
		lua_pushinteger(L, id);
	} else if (m->ncpus) {
		bh_decode_percpu(&c, m->vtype->root, src, m->ncpus);
	} else {
		bh_decode(&c, m->vtype->root, src);
	}
}

static inline __attribute__((always_inline)) void map_dec_value(lua_State *L, struct bh_map *m,
								const void *src, int raw)
{
	if (likely(!raw && !m->ncpus && !(m->special & (BH_MS_FDMAP | BH_MS_FDPROG))) &&
	    dec_int_fast(L, m->vtype->root, src))
		return;
	map_dec_value_slow(L, m, src, raw);
}


static __attribute__((noinline, noreturn)) void map_fail(lua_State *L, struct bh_map *m,
							 const char *op, int err)
{
	char hint[160];

	/* EPERM on a map op is never about privileges once the map is open */
	if (err == EPERM && m->fd >= 0 && bh_fdinfo(m->fd, "frozen") > 0)
		bh_fail_msg(L, op, "map", m->name, err, "map is frozen (read-only for user space)",
			    "m:freeze() cannot be undone; BPF programs can still write the map",
			    NULL);
	/* rdonly/wronly live in the fd's access mode (the map's flags drop them) */
	if (err == EPERM && m->fd >= 0 && (fcntl(m->fd, F_GETFL) & O_ACCMODE) == O_RDONLY)
		bh_fail_msg(L, op, "map", m->name, err,
			    "this handle is read-only (the map was made or opened rdonly)", NULL, NULL);
	if (err == EPERM && m->fd >= 0 && (fcntl(m->fd, F_GETFL) & O_ACCMODE) == O_WRONLY)
		bh_fail_msg(L, op, "map", m->name, err,
			    "this handle is write-only (the map was made or opened wronly)", NULL, NULL);
	if ((err == 524 /* ENOTSUPP */ || err == EOPNOTSUPP) && !strcmp(op, "lookup_and_delete"))
		bh_fail_msg(L, op, "map", m->name, err,
			    lua_pushfstring(L, "%s %s map has no atomic lookup_and_delete",
					    article(map_type_name(m->type)), map_type_name(m->type)),
			    "m:lookup(key) then m:delete(key), or m:drain()", NULL);
	if (err == E2BIG && !strcmp(op, "update")) {
		snprintf(hint, sizeof(hint),
			 "max_entries is %u; delete entries first, or raise max_entries before load",
			 m->max_entries);
		bh_fail_msg(L, op, "map", m->name, err, "map is full", hint, NULL);
	}
	if (err == E2BIG && !strcmp(op, "push"))
		bh_fail_msg(L, op, "map", m->name, err, "map is full",
			    "push(v, \"exist\") overwrites the oldest element", NULL);
	if (err == EINVAL && !strcmp(op, "update") && (m->special & (BH_MS_FDMAP | BH_MS_FDPROG)))
		bh_fail_msg(L, op, "map", m->name, err,
			    (m->special & BH_MS_FDMAP) ?
				    "the map does not match the inner map's definition" :
				    "the program cannot go in this prog_array (type or attach mismatch)",
			    NULL, NULL);
	bh_fail(L, op, "map", m->name, err, NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* -- Single-element operations ------------------------------------------- */

/* A refusal of a call that took flags: "lock" on a map without a spin lock says so. */
static __attribute__((noinline, noreturn)) void map_fail_flags(lua_State *L, struct bh_map *m,
							       const char *op, int err,
							       uint64_t flags)
{
	if (err == EINVAL && (flags & BPF_F_LOCK))
		bh_fail_msg(L, op, "map", m->name, err,
			    "flag \"lock\" needs a value holding a struct bpf_spin_lock", NULL, NULL);
	map_fail(L, m, op, err);
}

static int map_lookup(lua_State *L)
{
	struct bh_map *m = map_self(L, "lookup");
	uint64_t flags = 0;
	int raw = 0, into = 0, err;

	if (unlikely(lua_gettop(L) > 2))
		flags = parse_opts(L, 3, "lookup", m, &raw, &into);
	map_enc_key(L, m, "lookup", 2, m->kbuf, raw);
	err = bpf_map_lookup_elem_flags(m->fd, m->kbuf, m->vbuf, flags);
	if (unlikely(err)) {
		err = errno;
		if (err == ENOENT) {
			lua_pushnil(L);
			return 1;
		}
		map_fail_flags(L, m, "lookup", err, flags);
	}
	map_dec_value(L, m, m->vbuf, raw);
	if (unlikely(into))
		into_fill(L, m, 3);
	return 1;
}

static int map_update(lua_State *L)
{
	struct bh_map *m = map_self(L, "update");
	uint64_t flags = 0;
	int raw = 0, err;

	if (unlikely(lua_gettop(L) > 3))
		flags = parse_opts(L, 4, "update", m, &raw, NULL);
	if (unlikely(lua_isnoneornil(L, 3)))
		luaL_error(L, "update map '%s': value missing (use m:delete(key) to remove)",
			   m->name);
	map_enc_key(L, m, "update", 2, m->kbuf, raw);
	map_enc_value(L, m, "update", 3, raw);
	err = bpf_map_update_elem(m->fd, m->kbuf, m->vbuf, flags);
	if (unlikely(err)) {
		err = errno;
		if ((err == EEXIST && (flags & 3) == BPF_NOEXIST) ||
		    (err == ENOENT && (flags & 3) == BPF_EXIST)) {
			lua_pushboolean(L, 0);
			return 1;
		}
		map_fail_flags(L, m, "update", err, flags);
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int map_delete(lua_State *L)
{
	struct bh_map *m = map_self(L, "delete");
	int raw = 0, err;

	if (unlikely(lua_gettop(L) > 2))
		parse_opts(L, 3, "delete", m, &raw, NULL);
	if (unlikely(m->special & BH_MS_NODELETE))
		luaL_error(L, "delete map '%s': array elements cannot be deleted (update them to "
			      "zero, or m:clear() them all)",
			   m->name);
	map_enc_key(L, m, "delete", 2, m->kbuf, raw);
	err = bpf_map_delete_elem(m->fd, m->kbuf);
	if (unlikely(err)) {
		err = errno;
		if (err == ENOENT) {
			lua_pushboolean(L, 0);
			return 1;
		}
		map_fail(L, m, "delete", err);
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int map_lookup_and_delete(lua_State *L)
{
	struct bh_map *m = map_self(L, "lookup_and_delete");
	uint64_t flags = 0;
	int raw = 0, into = 0, err;

	if (lua_gettop(L) > 2)
		flags = parse_opts(L, 3, "lookup_and_delete", m, &raw, &into);
	if (m->special & BH_MS_NODELETE)
		luaL_error(L, "lookup_and_delete map '%s': array elements cannot be deleted",
			   m->name);
	map_enc_key(L, m, "lookup_and_delete", 2, m->kbuf, raw);
	err = bpf_map_lookup_and_delete_elem_flags(m->fd, m->kbuf, m->vbuf, flags);
	if (err) {
		err = errno;
		if (err == ENOENT) {
			lua_pushnil(L);
			return 1;
		}
		map_fail_flags(L, m, "lookup_and_delete", err, flags);
	}
	map_dec_value(L, m, m->vbuf, raw);
	if (into)
		into_fill(L, m, 3);
	return 1;
}

/* queue, stack and bloom filter: values without keys */
static struct bh_map *keyless_self(lua_State *L, const char *op, int bloom_ok, int queue_ok)
{
	struct bh_map *m = map_self(L, op);
	int bloom = !!(m->special & BH_MS_BLOOM);

	if (m->special & BH_MS_EVENTS)
		map_refuse(L, m, op);
	if (!(m->special & BH_MS_KEYLESS))
		luaL_error(L, "%s map '%s': only queue, stack and bloom_filter maps have %s (this "
			      "is %s %s map)",
			   op, m->name, op, article(map_type_name(m->type)), map_type_name(m->type));
	if ((bloom && !bloom_ok) || (!bloom && !queue_ok))
		map_refuse(L, m, op);
	return m;
}

static int map_push(lua_State *L)
{
	struct bh_map *m = keyless_self(L, "push", 1, 1);
	uint64_t flags;
	int err;

	if (lua_isnoneornil(L, 2))
		luaL_error(L, "push map '%s': value missing", m->name);
	flags = parse_flags(L, 3, "push", m);
	if (flags & ~(uint64_t)(BPF_EXIST | BPF_ANY))
		luaL_error(L, "push map '%s': flags are \"any\" or \"exist\" (overwrite the oldest)",
			   m->name);
	map_enc_value(L, m, "push", 2, 0);
	err = bpf_map_update_elem(m->fd, NULL, m->vbuf, flags);
	if (err)
		map_fail(L, m, "push", errno);
	lua_pushboolean(L, 1);
	return 1;
}

static int keyless_get(lua_State *L, const char *op, int del)
{
	struct bh_map *m = keyless_self(L, op, 0, 1);
	int err;

	err = del ? bpf_map_lookup_and_delete_elem(m->fd, NULL, m->vbuf)
		  : bpf_map_lookup_elem(m->fd, NULL, m->vbuf);
	if (err) {
		err = errno;
		if (err == ENOENT) {
			lua_pushnil(L);
			return 1;
		}
		map_fail(L, m, op, err);
	}
	map_dec_value(L, m, m->vbuf, 0);
	return 1;
}

static int map_pop(lua_State *L)
{
	return keyless_get(L, "pop", 1);
}

static int map_peek(lua_State *L)
{
	return keyless_get(L, "peek", 0);
}

static int map_contains(lua_State *L)
{
	struct bh_map *m = keyless_self(L, "contains", 1, 0);
	int err;

	map_enc_value(L, m, "contains", 2, 0);
	err = bpf_map_lookup_elem(m->fd, NULL, m->vbuf);
	if (err) {
		err = errno;
		if (err != ENOENT)
			map_fail(L, m, "contains", err);
	}
	lua_pushboolean(L, err == 0);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Iteration ----------------------------------------------------------- */

/*
 * Iteration streams the map in chunks held by an iterator userdata (its
 * memory is bounded by the chunk, whatever the map's size). Where the kernel
 * has BPF_MAP_LOOKUP_BATCH the cursor is the kernel's bucket (or index)
 * cursor: every bucket is visited once, so no key is yielded twice and the
 * walk ends whatever other writers do. Elsewhere it falls back to
 * get_next_key, and stops (complete = false) instead of restarting when the
 * key it stands on was deleted under it. A drain uses the same machinery
 * with BPF_MAP_LOOKUP_AND_DELETE_BATCH (each element read and deleted under
 * its bucket lock: nothing is lost between the two).
 */
struct bh_iter {
	uint32_t magic;
	struct bh_map *m;         /* kept alive by the uservalue */
	int mode;                 /* ITER_BATCH, ITER_NEXTKEY */
	int eof, done, complete, started, raw, have_prev, drain;
	const char *op;
	uint32_t chunk, n, pos;
	uint32_t kstride, vstride;
	uint64_t yielded;
	unsigned char *keys, *vals;
	unsigned char *cur_in, *cur_out; /* batch cursors */
	unsigned char *prev, *next;      /* get_next_key keys */
};

enum { ITER_BATCH, ITER_NEXTKEY };

#define ITER_CHUNK_MIN 64
#define ITER_CHUNK_MAX 65536

static void iter_free(struct bh_iter *it)
{
	free(it->keys);
	it->keys = it->vals = NULL;
	it->cur_in = it->cur_out = it->prev = it->next = NULL;
}

static int iter_alloc(struct bh_iter *it, uint32_t chunk)
{
	struct bh_map *m = it->m;
	size_t ks = m->key_size, cs = ks > 8 ? ks : 8;
	size_t total = chunk * (size_t)it->kstride + chunk * (size_t)it->vstride + 4 * cs + 64;
	unsigned char *p = calloc(1, total), *q;

	if (!p)
		return -ENOMEM;
	q = p + chunk * (size_t)it->kstride + chunk * (size_t)it->vstride;
	q = (unsigned char *)(((uintptr_t)q + 7) & ~(uintptr_t)7);
	if (it->keys) {
		/* keep the cursors across a regrow */
		memcpy(q, it->cur_in, 4 * cs);
		free(it->keys);
	}
	it->keys = p;
	it->vals = p + chunk * (size_t)it->kstride;
	it->cur_in = q;
	it->cur_out = q + cs;
	it->prev = q + 2 * cs;
	it->next = q + 3 * cs;
	it->chunk = chunk;
	return 0;
}

static struct bh_iter *iter_check(lua_State *L, int idx)
{
	struct bh_iter *it = lua_touserdata(L, idx);

	if (!it || bh_rawlen(L, idx) != sizeof(*it) || it->magic != ITER_MAGIC)
		luaL_argerror(L, idx, "map iterator expected");
	return it;
}

static int batch_unsupported(int err)
{
	return err == EINVAL || err == ENOTSUP || err == EOPNOTSUPP || err == 524 /* ENOTSUPP */;
}

static void iter_fill_batch(lua_State *L, struct bh_iter *it)
{
	struct bh_map *m = it->m;
	DECLARE_LIBBPF_OPTS(bpf_map_batch_opts, opts);
	uint32_t count;
	int err;

	for (;;) {
		count = it->chunk;
		if (it->drain)
			err = bpf_map_lookup_and_delete_batch(m->fd, it->started ? it->cur_in : NULL,
							      it->cur_out, it->keys, it->vals,
							      &count, &opts);
		else
			err = bpf_map_lookup_batch(m->fd, it->started ? it->cur_in : NULL,
						   it->cur_out, it->keys, it->vals, &count, &opts);
		if (!err)
			break;
		err = errno;
		if (err == ENOENT) {
			it->eof = 1;
			break;
		}
		if (err == ENOSPC && count == 0 && it->chunk < ITER_CHUNK_MAX) {
			/* one bucket holds more than a chunk: grow and retry */
			if (iter_alloc(it, it->chunk * 2))
				bh_fail(L, it->op, "map", m->name, ENOMEM, NULL, NULL);
			continue;
		}
		if (!it->started && batch_unsupported(err)) {
			it->mode = ITER_NEXTKEY;
			it->n = 0;
			return;
		}
		map_fail(L, m, it->op, err);
	}
	it->started = 1;
	memcpy(it->cur_in, it->cur_out, m->key_size > 8 ? m->key_size : 8);
	it->n = count;
	it->pos = 0;
}

static void iter_fill_nextkey(lua_State *L, struct bh_iter *it)
{
	struct bh_map *m = it->m;
	uint32_t count = 0;
	int err;

	while (count < it->chunk) {
		unsigned char *val = it->vals + (size_t)count * it->vstride;

		if (it->have_prev && !it->drain && !(m->special & BH_MS_ARRAY)) {
			/*
			 * stand on a key that still exists, or stop: never restart
			 * (array indexes always have a next one: empty prog_array
			 * slots are skipped, not a reason to stop)
			 */
			if (bpf_map_lookup_elem(m->fd, it->prev, m->vbuf) && errno == ENOENT) {
				it->complete = 0;
				it->eof = 1;
				break;
			}
		}
		/* a drain deletes what it read, so it always takes the first key */
		err = bpf_map_get_next_key(m->fd, it->have_prev && !it->drain ? it->prev : NULL,
					   it->next);
		if (err) {
			err = errno;
			if (err == ENOENT) {
				it->eof = 1;
				break;
			}
			map_fail(L, m, it->op, err);
		}
		memcpy(it->prev, it->next, m->key_size);
		it->have_prev = 1;
		if (it->drain) {
			err = bpf_map_lookup_and_delete_elem(m->fd, it->next, val);
			if (err && batch_unsupported(errno)) {
				/* no atomic lookup-and-delete for this type: read, then delete */
				err = bpf_map_lookup_elem(m->fd, it->next, val);
				if (!err && bpf_map_delete_elem(m->fd, it->next) && errno != ENOENT)
					map_fail(L, m, it->op, errno);
			}
		} else {
			err = bpf_map_lookup_elem(m->fd, it->next, val);
		}
		if (err) {
			err = errno;
			if (err == ENOENT)
				continue; /* deleted between the two calls: skip it */
			map_fail(L, m, it->op, err);
		}
		memcpy(it->keys + (size_t)count * it->kstride, it->next, m->key_size);
		count++;
		if (it->yielded + count > (uint64_t)m->max_entries * 4 + 1024) {
			/* a writer keeps adding behind us faster than we read */
			it->complete = 0;
			it->eof = 1;
			break;
		}
	}
	it->started = 1;
	it->n = count;
	it->pos = 0;
}

/* Fetch the next chunk; returns how many elements it holds (0: the end). */
static uint32_t iter_fill(lua_State *L, struct bh_iter *it)
{
	struct bh_map *m = it->m;

	it->n = it->pos = 0;
	if (it->eof || it->done)
		return 0;
	if (m->fd < 0) {
		/* no position: the caller is the iterator, wherever the loop is */
		lua_pushfstring(L, "%s map '%s': map was closed during iteration", it->op, m->name);
		lua_error(L);
	}
	if (it->mode == ITER_BATCH)
		iter_fill_batch(L, it);
	if (it->mode == ITER_NEXTKEY)
		iter_fill_nextkey(L, it);
	return it->n;
}

static void iter_finish(struct bh_iter *it)
{
	it->done = 1;
	iter_free(it);
}

static int iter_next(lua_State *L)
{
	struct bh_iter *it = iter_check(L, 1);
	struct bh_map *m = it->m;

	if (it->pos >= it->n) {
		if (!iter_fill(L, it)) {
			iter_finish(it);
			return 0;
		}
	}
	map_dec_key(L, m, it->keys + (size_t)it->pos * it->kstride, it->raw);
	map_dec_value(L, m, it->vals + (size_t)it->pos * it->vstride, it->raw);
	it->pos++;
	it->yielded++;
	return 2;
}

/*
 * it:fill(ks, vs) for bpfhost.mapiter (bindings/lua/mapiter.lua): fetch the
 * next chunk and decode it into ks[1..n], vs[1..n]; returns n, 0 at the end.
 * The Lua side hands the elements out (compiled with the loop body: no C
 * call per element) and calls this again only once it has handed out the
 * whole chunk, so the chunk before counts as yielded.
 */
static int iter_fill_l(lua_State *L)
{
	struct bh_iter *it = iter_check(L, 1);
	struct bh_map *m = it->m;
	uint32_t i, n;

	it->yielded += it->n;
	n = iter_fill(L, it);
	if (!n) {
		iter_finish(it);
		lua_pushinteger(L, 0);
		return 1;
	}
	if (lua_isnone(L, 2)) {
		/*
		 * The chunk as it is, for FFI reads (integer keys and values
		 * under LuaJIT): valid until the next fill, held by it.
		 */
		lua_pushinteger(L, n);
		lua_pushlightuserdata(L, it->keys);
		lua_pushlightuserdata(L, it->vals);
		it->pos = n;
		return 3;
	}
	for (i = 0; i < n; i++) {
		map_dec_key(L, m, it->keys + (size_t)i * it->kstride, it->raw);
		lua_rawseti(L, 2, (int)i + 1);
		map_dec_value(L, m, it->vals + (size_t)i * it->vstride, it->raw);
		lua_rawseti(L, 3, (int)i + 1);
	}
	it->pos = n;
	lua_pushinteger(L, n);
	return 1;
}

static int iter_gc(lua_State *L)
{
	struct bh_iter *it = lua_touserdata(L, 1);

	if (it && it->magic == ITER_MAGIC)
		iter_free(it);
	return 0;
}

static int iter_index(lua_State *L)
{
	struct bh_iter *it = iter_check(L, 1);
	const char *k = luaL_checkstring(L, 2);

	if (!strcmp(k, "complete"))
		lua_pushboolean(L, it->done && it->complete);
	else if (!strcmp(k, "count"))
		lua_pushinteger(L, (lua_Integer)it->yielded);
	else if (!strcmp(k, "done"))
		lua_pushboolean(L, it->done);
	else if (!strcmp(k, "what")) /* for the Lua state's __tostring */
		lua_pushfstring(L, "%s of map '%s'", it->drain ? "drain" : "iteration", it->m->name);
	else
		lua_pushnil(L);
	return 1;
}

static int iter_tostring(lua_State *L)
{
	struct bh_iter *it = iter_check(L, 1);

	lua_pushfstring(L, "%s of map '%s': %d seen%s", it->drain ? "drain" : "iteration",
			it->m->name, (int)it->yielded,
			it->done ? (it->complete ? ", complete" : ", incomplete") : "");
	return 1;
}

static const char *const iterate_opts[] = { "raw", "chunk", NULL };

/*
 * Push a new iterator userdata over the map at index 1 (which it keeps
 * alive). opts at optidx (may be none).
 */
static struct bh_iter *iter_new(lua_State *L, struct bh_map *m, const char *op, int optidx,
				int drain)
{
	struct bh_iter *it;
	uint32_t chunk = 1024;

	if (m->special & (BH_MS_KEYLESS | BH_MS_EVENTS))
		map_refuse(L, m, op);
	if (drain && (m->special & BH_MS_NODELETE))
		luaL_error(L, "%s map '%s': array elements cannot be deleted (m:clear() zeroes them)",
			   op, m->name);
	if (optidx) {
		bh_opt_check(L, optidx, op, iterate_opts);
		if (lua_istable(L, optidx)) {
			lua_getfield(L, optidx, "chunk");
			if (!lua_isnil(L, -1)) {
				lua_Number d = lua_tonumber(L, -1);

				if (d < 1 || d > ITER_CHUNK_MAX || d != (lua_Number)(uint32_t)d)
					luaL_error(L, "%s map '%s': chunk must be an integer 1..%d",
						   op, m->name, ITER_CHUNK_MAX);
				chunk = (uint32_t)d;
			}
			lua_pop(L, 1);
		}
	}
	if (chunk > m->max_entries && m->max_entries >= ITER_CHUNK_MIN)
		chunk = m->max_entries;
	it = bh_newud(L, sizeof(*it));
	memset(it, 0, sizeof(*it));
	it->magic = ITER_MAGIC;
	it->m = m;
	it->op = op;
	it->drain = drain;
	it->complete = 1;
	it->raw = optidx ? bh_opt_bool(L, optidx, "raw", 0) : 0;
	/* the kernel's batch layout: packed keys, packed values (per-CPU: value_bufsz) */
	it->kstride = m->key_size;
	it->vstride = m->ncpus ? m->value_bufsz : m->value_size;
	it->mode = ITER_BATCH;
	luaL_getmetatable(L, "bpfhost.iter");
	lua_setmetatable(L, -2);
	lua_createtable(L, 1, 0);
	lua_pushvalue(L, 1);
	lua_rawseti(L, -2, 1);
	bh_setuv(L, -2);
	if (iter_alloc(it, chunk))
		bh_fail(L, op, "map", m->name, ENOMEM, NULL, NULL);
	return it;
}

/*
 * Push bpfhost.mapiter's factory (cached in the registry); 0 when it cannot
 * be had (no require, no preload), and then nothing is pushed.
 */
static int push_iter_factory(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, "bpfhost.mapiter.factory");
	if (lua_isfunction(L, -1))
		return 1;
	lua_pop(L, 1);
	lua_getglobal(L, "require");
	if (!lua_isfunction(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	lua_pushliteral(L, "bpfhost.mapiter");
	if (lua_pcall(L, 1, 1, 0) || !lua_isfunction(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	lua_pushvalue(L, -1);
	lua_setfield(L, LUA_REGISTRYINDEX, "bpfhost.mapiter.factory");
	return 1;
}

/* iterate and drain: the iterator, its state, nil (see bpfhost.mapiter). */
static int iter_start(lua_State *L, struct bh_map *m, const char *op, int drain)
{
	struct bh_iter *it;

	lua_settop(L, 2);
	if (push_iter_factory(L)) {
		it = iter_new(L, m, op, 2, drain);
		lua_pushcfunction(L, iter_fill_l);
		if (!it->raw && !m->ncpus && !(m->special & (BH_MS_FDMAP | BH_MS_FDPROG | BH_MS_LPM)) &&
		    int_code(m->ktype->root) && int_code(m->vtype->root)) {
			lua_pushinteger(L, int_code(m->ktype->root));
			lua_pushinteger(L, int_code(m->vtype->root));
		} else {
			lua_pushnil(L);
			lua_pushnil(L);
		}
		lua_call(L, 4, 3);
		return 3;
	}
	/* element by element through C */
	lua_pushcfunction(L, iter_next);
	iter_new(L, m, op, 2, drain);
	lua_pushnil(L);
	return 3;
}

static int map_iterate(lua_State *L)
{
	return iter_start(L, map_self(L, "iterate"), "iterate", 0);
}

static int map_drain(lua_State *L)
{
	return iter_start(L, map_self(L, "drain"), "drain", 1);
}

/* What count/keys/dump/clear collect. */
enum { COLLECT_COUNT, COLLECT_KEYS, COLLECT_DUMP };

static int collect(lua_State *L, const char *op, int what, int drain)
{
	struct bh_map *m = map_self(L, op);
	struct bh_iter *it;
	int tidx = 0, itidx, raw = 0;
	lua_Number total = 0;
	uint32_t i;

	if (what == COLLECT_COUNT && !drain && (m->special & BH_MS_ARRAY) &&
	    !(m->special & (BH_MS_FDMAP | BH_MS_FDPROG | BH_MS_EVENTS))) {
		lua_pushinteger(L, m->max_entries);
		return 1;
	}
	if (what != COLLECT_COUNT) {
		lua_newtable(L);
		tidx = lua_gettop(L);
		if (what == COLLECT_DUMP) {
			/* its own metatable: __map lets the printer lay out the map's types */
			lua_createtable(L, 0, 2);
			lua_pushliteral(L, "bpfhost.dump");
			lua_setfield(L, -2, "__name");
			lua_pushvalue(L, 1);
			lua_setfield(L, -2, "__map");
			lua_setmetatable(L, tidx);
		}
	}
	it = iter_new(L, m, op, lua_istable(L, 2) ? 2 : 0, drain);
	itidx = lua_gettop(L);
	raw = it->raw;
	while (iter_fill(L, it)) {
		for (i = 0; i < it->n; i++) {
			const unsigned char *k = it->keys + (size_t)i * it->kstride;

			total++;
			if (what == COLLECT_KEYS) {
				map_dec_key(L, m, k, raw);
				lua_rawseti(L, tidx, (int)total);
			} else if (what == COLLECT_DUMP) {
				lua_createtable(L, 0, 2);
				map_dec_key(L, m, k, raw);
				lua_setfield(L, -2, "key");
				map_dec_value(L, m, it->vals + (size_t)i * it->vstride, raw);
				lua_setfield(L, -2, "value");
				lua_rawseti(L, tidx, (int)total);
			}
		}
	}
	iter_finish(it);
	lua_settop(L, itidx - 1);
	if (what == COLLECT_COUNT)
		lua_pushinteger(L, (lua_Integer)total);
	return 1;
}

static int map_count(lua_State *L)
{
	return collect(L, "count", COLLECT_COUNT, 0);
}

static int map_keys(lua_State *L)
{
	return collect(L, "keys", COLLECT_KEYS, 0);
}

static int map_dump(lua_State *L)
{
	return collect(L, "dump", COLLECT_DUMP, 0);
}

/*
 * m:clear(): removes every element (arrays: zeroes every element); returns
 * how many. Queues and stacks are popped empty.
 */
static int map_clear(lua_State *L)
{
	struct bh_map *m = map_self(L, "clear");
	lua_Number n = 0;
	uint32_t i;

	if (m->special & BH_MS_EVENTS)
		map_refuse(L, m, "clear");
	if (m->special & BH_MS_BLOOM)
		luaL_error(L, "clear map '%s': a bloom_filter cannot be cleared (create a new one)",
			   m->name);
	if (m->special & BH_MS_KEYLESS) {
		while (!bpf_map_lookup_and_delete_elem(m->fd, NULL, m->vbuf))
			n++;
		if (errno != ENOENT)
			map_fail(L, m, "clear", errno);
		lua_pushinteger(L, (lua_Integer)n);
		return 1;
	}
	if (m->special & BH_MS_NODELETE) {
		memset(m->vbuf, 0, m->value_bufsz);
		for (i = 0; i < m->max_entries; i++) {
			if (bpf_map_update_elem(m->fd, &i, m->vbuf, BPF_ANY))
				map_fail(L, m, "clear", errno);
		}
		lua_pushinteger(L, m->max_entries);
		return 1;
	}
	lua_settop(L, 1);
	return collect(L, "clear", COLLECT_COUNT, 1);
}

/* ------------------------------------------------------------------------ */
/* -- Batch operations ---------------------------------------------------- */

#define BATCH 1024

/*
 * Scratch for a batch: a userdata, so that a raising encode frees it with
 * the garbage collector. Pushed on the stack.
 */
static unsigned char *batch_scratch(lua_State *L, struct bh_map *m, size_t n, size_t *vstride)
{
	*vstride = m->ncpus ? m->value_bufsz : m->value_size;
	return lua_newuserdata(L, n * (m->key_size + *vstride) + 8);
}

/* Keys of the list at idx: each an element of a Lua array. */
static uint32_t list_len(lua_State *L, int idx, const char *op, struct bh_map *m)
{
	if (lua_type(L, idx) != LUA_TTABLE)
		luaL_error(L, "%s map '%s': expected a list of keys, got %s", op, m->name,
			   luaL_typename(L, idx));
	return (uint32_t)bh_rawlen(L, idx);
}

/* m:lookup_batch(keys) -> values (nil where absent), number found */
static int map_lookup_batch(lua_State *L)
{
	struct bh_map *m = map_self(L, "lookup_batch");
	uint32_t n, i, found = 0;
	int raw = 0;

	if (m->special & (BH_MS_KEYLESS | BH_MS_EVENTS))
		map_refuse(L, m, "lookup_batch");
	n = list_len(L, 2, "lookup_batch", m);

	if (lua_gettop(L) > 2)
		parse_opts(L, 3, "lookup_batch", m, &raw, NULL);
	lua_settop(L, 3);
	lua_createtable(L, (int)n, 0); /* 4 */
	for (i = 1; i <= n; i++) {
		lua_rawgeti(L, 2, (int)i);
		map_enc_key(L, m, "lookup_batch", 5, m->kbuf, raw);
		if (bpf_map_lookup_elem(m->fd, m->kbuf, m->vbuf)) {
			if (errno != ENOENT)
				map_fail(L, m, "lookup_batch", errno);
			lua_pop(L, 1);
			continue;
		}
		lua_pop(L, 1);
		map_dec_value(L, m, m->vbuf, raw);
		lua_rawseti(L, 4, (int)i);
		found++;
	}
	lua_pushinteger(L, found);
	return 2;
}

/* Raise the error of a batch: done elements went through, key is the one that failed. */
static __attribute__((noreturn)) void batch_fail(lua_State *L, struct bh_map *m, const char *op,
						 int err, lua_Number done, const void *key)
{
	char hint[200];

	snprintf(hint, sizeof(hint), "%.0f element%s before this one went through", done,
		 done == 1 ? "" : "s");
	bh_error_push(L, op, "map", m->name, err,
		      err == E2BIG && !strcmp(op, "update_batch") ? "map is full" : NULL, hint,
		      NULL);
	lua_pushinteger(L, (lua_Integer)done);
	lua_setfield(L, -2, "done");
	if (key) {
		map_dec_key(L, m, key, 0);
		lua_setfield(L, -2, "key");
	}
	lua_error(L);
	abort();
}

/*
 * m:update_batch(t [, flags]): t is a list of {key, value} pairs or a table
 * key -> value. Returns how many were written; elements whose "noexist" /
 * "exist" condition fails are skipped and their keys returned as a list.
 * Other refusals raise with err.done and err.key.
 */
static int map_update_batch(lua_State *L)
{
	struct bh_map *m = map_self(L, "update_batch");
	DECLARE_LIBBPF_OPTS(bpf_map_batch_opts, opts);
	uint64_t flags = parse_flags(L, 3, "update_batch", m);
	int pairs_form, skipidx, base, eof = 0, fallback = 0;
	size_t vstride;
	unsigned char *buf;
	lua_Number done = 0;
	uint32_t n, i = 0, listn = 0;
	struct bh_cctx c;

	if (m->special & (BH_MS_KEYLESS | BH_MS_EVENTS))
		map_refuse(L, m, "update_batch");
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 3);
	lua_rawgeti(L, 2, 1);
	pairs_form = lua_istable(L, -1);
	lua_pop(L, 1);
	if (pairs_form) {
		uint32_t all = 0;

		listn = (uint32_t)bh_rawlen(L, 2);
		/* a list of pairs with other keys besides: those would be lost */
		lua_pushnil(L);
		while (lua_next(L, 2)) {
			lua_pop(L, 1);
			all++;
		}
		if (all != listn)
			luaL_error(L, "update_batch map '%s': a list of {key, value} pairs (%d) with "
				      "%d other keys: give one form, pairs or key = value",
				   m->name, (int)listn, (int)(all - listn));
	}
	lua_newtable(L);
	skipidx = lua_gettop(L); /* keys skipped by noexist/exist */
	buf = batch_scratch(L, m, BATCH, &vstride);
	opts.elem_flags = flags;
	/* BPF_MAP_UPDATE_BATCH takes only BPF_F_LOCK: conditions go element by element */
	fallback = (flags & (BPF_NOEXIST | BPF_EXIST)) != 0;
	lua_pushnil(L); /* base: lua_next's key (table form), a placeholder otherwise */
	base = lua_gettop(L);
	while (!eof) {
		/* encode up to BATCH elements */
		for (n = 0; n < BATCH; n++) {
			unsigned char *kd = buf + (size_t)n * m->key_size;
			unsigned char *vd = buf + (size_t)BATCH * m->key_size + (size_t)n * vstride;
			int kidx, vidx;

			if (pairs_form) {
				if (i >= listn) {
					eof = 1;
					break;
				}
				lua_rawgeti(L, 2, (int)++i);
				if (!lua_istable(L, -1))
					luaL_error(L, "update_batch map '%s': element %d: expected "
						      "{key, value}, got %s",
						   m->name, (int)i, luaL_typename(L, -1));
				lua_rawgeti(L, base + 1, 1);
				lua_rawgeti(L, base + 1, 2);
				kidx = base + 2;
				vidx = base + 3;
			} else {
				if (!lua_next(L, 2)) {
					lua_pushnil(L); /* lua_next popped the key */
					eof = 1;
					break;
				}
				kidx = base;
				vidx = base + 1;
			}
			if (likely(!m->ncpus && !(m->special & (BH_MS_FDMAP | BH_MS_FDPROG))) &&
			    enc_int_fast(L, m->vtype->root, vidx, vd)) {
				map_enc_key(L, m, "update_batch", kidx, kd, 0);
				lua_settop(L, base);
				continue;
			}
			if (lua_isnil(L, vidx))
				luaL_error(L, "update_batch map '%s': element %d has no value", m->name,
					   (int)(done + n + 1));
			map_enc_key(L, m, "update_batch", kidx, kd, 0);
			cctx_init(&c, L, "update_batch", m, "value");
			if (m->special & (BH_MS_FDMAP | BH_MS_FDPROG))
				enc_fd_value(L, m, "update_batch", vidx, vd);
			else if (m->ncpus)
				bh_encode_percpu(&c, m->vtype->root, vidx, vd, m->ncpus);
			else
				bh_encode(&c, m->vtype->root, vidx, vd);
			lua_settop(L, base);
		}
		/* write them, skipping elements whose condition fails */
		{
			uint32_t off = 0;

			while (off < n) {
				uint32_t cnt = n - off;
				unsigned char *kd = buf + (size_t)off * m->key_size;
				unsigned char *vd = buf + (size_t)BATCH * m->key_size +
						    (size_t)off * vstride;
				int err = 0;

				if (!fallback) {
					uint32_t want = cnt;

					err = bpf_map_update_batch(m->fd, kd, vd, &cnt, &opts);
					/*
					 * The kernel writes count back only once it has started
					 * on the elements: an untouched count means nothing was
					 * written (no batch op for this type, or flags it does
					 * not take), so go one element at a time from here.
					 */
					if (err && cnt == want && batch_unsupported(errno))
						fallback = 1;
				}
				if (fallback) {
					/* no batch op for this type: one element at a time */
					cnt = 0;
					err = 0;
					while (off + cnt < n) {
						if (bpf_map_update_elem(m->fd,
									kd + (size_t)cnt * m->key_size,
									vd + (size_t)cnt * vstride,
									flags)) {
							err = -1;
							break;
						}
						cnt++;
					}
				}
				if (!err) {
					done += n - off;
					break;
				}
				err = errno;
				done += cnt;
				off += cnt;
				if ((err == EEXIST && (flags & 3) == BPF_NOEXIST) ||
				    (err == ENOENT && (flags & 3) == BPF_EXIST)) {
					map_dec_key(L, m, buf + (size_t)off * m->key_size, 0);
					lua_rawseti(L, skipidx, (int)bh_rawlen(L, skipidx) + 1);
					off++;
					continue;
				}
				batch_fail(L, m, "update_batch", err, done,
					   buf + (size_t)off * m->key_size);
			}
		}
	}
	lua_pushinteger(L, (lua_Integer)done);
	if (bh_rawlen(L, skipidx)) {
		lua_pushvalue(L, skipidx);
		return 2;
	}
	return 1;
}

/*
 * m:delete_batch(keys): returns how many were deleted, and the list of keys
 * that were absent when there are any.
 */
static int map_delete_batch(lua_State *L)
{
	struct bh_map *m = map_self(L, "delete_batch");
	DECLARE_LIBBPF_OPTS(bpf_map_batch_opts, opts);
	uint32_t n, i = 0;
	int absidx, fallback = 0;
	size_t vstride;
	unsigned char *buf;
	lua_Number done = 0;

	if (m->special & (BH_MS_KEYLESS | BH_MS_EVENTS))
		map_refuse(L, m, "delete_batch");
	if (m->special & BH_MS_NODELETE)
		luaL_error(L, "delete_batch map '%s': array elements cannot be deleted", m->name);
	n = list_len(L, 2, "delete_batch", m);
	lua_settop(L, 2);
	lua_newtable(L);
	absidx = 3;
	buf = batch_scratch(L, m, BATCH, &vstride);
	while (i < n) {
		uint32_t cnt = 0, off = 0;

		while (cnt < BATCH && i < n) {
			lua_rawgeti(L, 2, (int)++i);
			map_enc_key(L, m, "delete_batch", lua_gettop(L),
				    buf + (size_t)cnt * m->key_size, 0);
			lua_pop(L, 1);
			cnt++;
		}
		while (off < cnt) {
			uint32_t k = cnt - off;
			unsigned char *kd = buf + (size_t)off * m->key_size;
			int err = 0;

			if (!fallback) {
				uint32_t want = k;

				err = bpf_map_delete_batch(m->fd, kd, &k, &opts);
				if (err && k == want && batch_unsupported(errno))
					fallback = 1; /* nothing deleted: see update_batch */
			}
			if (fallback) {
				k = 0;
				err = 0;
				while (off + k < cnt) {
					if (bpf_map_delete_elem(m->fd, kd + (size_t)k * m->key_size)) {
						err = -1;
						break;
					}
					k++;
				}
			}
			if (!err) {
				done += cnt - off;
				break;
			}
			err = errno;
			done += k;
			off += k;
			if (err == ENOENT) {
				map_dec_key(L, m, buf + (size_t)off * m->key_size, 0);
				lua_rawseti(L, absidx, (int)bh_rawlen(L, absidx) + 1);
				off++;
				continue;
			}
			batch_fail(L, m, "delete_batch", err, done, buf + (size_t)off * m->key_size);
		}
	}
	lua_pushinteger(L, (lua_Integer)done);
	if (bh_rawlen(L, absidx)) {
		lua_pushvalue(L, absidx);
		return 2;
	}
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Administration ------------------------------------------------------ */

static int map_freeze(lua_State *L)
{
	struct bh_map *m = map_self(L, "freeze");

	if (bpf_map_freeze(m->fd)) {
		int err = errno;

		if (err == EBUSY)
			bh_fail_msg(L, "freeze", "map", m->name, err,
				    "the map is mmap'd writable (a view from m:mmap())",
				    "close the writable views first (v:close()); views made after "
				    "freeze are read-only", NULL);
		map_fail(L, m, "freeze", err);
	}
	lua_pushboolean(L, 1);
	return 1;
}

static void setint(lua_State *L, const char *k, lua_Number v)
{
	lua_pushinteger(L, (lua_Integer)v);
	lua_setfield(L, -2, k);
}

static int map_info(lua_State *L)
{
	struct bh_map *m = map_self(L, "info");
	struct bpf_map_info info;
	uint32_t len = sizeof(info);
	long long v;

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(m->fd, &info, &len))
		map_fail(L, m, "info", errno);
	lua_createtable(L, 0, 16);
	setint(L, "id", info.id);
	lua_pushstring(L, info.name);
	lua_setfield(L, -2, "name");
	lua_pushstring(L, map_type_name(info.type));
	lua_setfield(L, -2, "type");
	setint(L, "key_size", info.key_size);
	setint(L, "value_size", info.value_size);
	setint(L, "max_entries", info.max_entries);
	setint(L, "flags", info.map_flags);
	setint(L, "btf_id", info.btf_id);
	setint(L, "btf_key_type_id", info.btf_key_type_id);
	setint(L, "btf_value_type_id", info.btf_value_type_id);
	setint(L, "map_extra", (lua_Number)info.map_extra);
	setint(L, "ifindex", info.ifindex);
	v = bh_fdinfo(m->fd, "frozen");
	lua_pushboolean(L, v > 0);
	lua_setfield(L, -2, "frozen");
	v = bh_fdinfo(m->fd, "memlock");
	if (v >= 0)
		setint(L, "memlock", (lua_Number)v);
	lua_pushstring(L, m->ktype->root->cname);
	lua_setfield(L, -2, "key_type");
	lua_pushstring(L, m->vtype->root->cname);
	lua_setfield(L, -2, "value_type");
	if (m->pin_path || (m->map && bpf_map__is_pinned(m->map))) {
		lua_pushstring(L, m->pin_path ? m->pin_path : bpf_map__pin_path(m->map));
		lua_setfield(L, -2, "pinned");
	}
	return 1;
}

/*
 * Pins go on bpffs (mounted on demand at /sys/fs/bpf): the directory of path,
 * or with is_dir path itself (its parent while it does not exist: libbpf
 * makes it), must be there. Raises "<op> <kind> '<name>': ..." otherwise, so
 * that the reason is not left to a bare EINVAL at load.
 */
void bh_check_bpffs(lua_State *L, const char *op, const char *kind, const char *name,
		    const char *path, int is_dir)
{
	char dir[4096];
	struct statfs st;
	int r;

	if (strlen(path) >= sizeof(dir) || path[0] != '/')
		luaL_error(L, "%s %s '%s': the path must be absolute, got '%s'", op, kind, name,
			   path);
	if (!strncmp(path, "/sys/fs/bpf/", 12) || !strcmp(path, "/sys/fs/bpf"))
		bh_ensure_bpffs();
	snprintf(dir, sizeof(dir), "%s", path);
	r = is_dir ? statfs(dir, &st) : -1;
	if (r && (!is_dir || errno == ENOENT))
		r = statfs(dirname(dir), &st);
	if (r)
		bh_fail_msg(L, op, kind, name, errno,
			    lua_pushfstring(L, "the directory of '%s' does not exist", path),
			    "pins go under /sys/fs/bpf (bpffs)", NULL);
	if ((unsigned long)st.f_type != BPF_FS_MAGIC_)
		bh_fail_msg(L, op, kind, name, EINVAL,
			    lua_pushfstring(L, "'%s' is not on bpffs", path),
			    "pins go under /sys/fs/bpf (mount -t bpf bpf DIR)", NULL);
}

static int map_pin(lua_State *L)
{
	struct bh_map *m = map_self(L, "pin");
	const char *path = luaL_checkstring(L, 2);
	int err;

	bh_check_bpffs(L, "pin", "map", m->name, path, 0);
	/* libbpf keeps one pin per map of an object (a bare EINVAL otherwise) */
	if (m->map && bpf_map__is_pinned(m->map) && bpf_map__pin_path(m->map) &&
	    strcmp(bpf_map__pin_path(m->map), path))
		bh_fail_msg(L, "pin", "map", m->name, EINVAL,
			    lua_pushfstring(L, "it is pinned at '%s' already",
					    bpf_map__pin_path(m->map)),
			    "a map of an object has one pin: m:unpin() first", NULL);
	if (m->map)
		err = bpf_map__pin(m->map, path);
	else
		err = bpf_obj_pin(m->fd, path);
	if (err) {
		err = errno;
		bh_fail_msg(L, "pin", "map", m->name, err,
			    err == EEXIST ? "the path exists already" : NULL,
			    err == EEXIST ? "unpin or remove the old pin first" : NULL, NULL);
	}
	if (!m->map) {
		free(m->pin_path);
		m->pin_path = strdup(path);
	}
	lua_pushboolean(L, 1);
	return 1;
}

static __attribute__((noreturn)) void unpin_fail(lua_State *L, struct bh_map *m, int err,
						  const char *path)
{
	bh_fail_msg(L, "unpin", "map", m->name, err,
		    err == ENOENT ? lua_pushfstring(L, "nothing is pinned at '%s'", path) : NULL,
		    NULL, NULL);
}

static int map_unpin(lua_State *L)
{
	struct bh_map *m = map_self(L, "unpin");
	const char *path = luaL_optstring(L, 2, NULL);

	if (m->map) {
		/* libbpf keeps pin_path after an unpin: is_pinned says whether it holds */
		const char *at = bpf_map__pin_path(m->map);

		if (!path && !bpf_map__is_pinned(m->map))
			luaL_error(L, "unpin map '%s': the map is not pinned", m->name);
		if (path && bpf_map__is_pinned(m->map) && at && strcmp(at, path))
			bh_fail_msg(L, "unpin", "map", m->name, EINVAL,
				    lua_pushfstring(L, "it is pinned at '%s', not at '%s'", at, path),
				    NULL, NULL);
		if (bpf_map__unpin(m->map, path))
			unpin_fail(L, m, errno, path ? path : at);
		/* forget the path: the next pin may go elsewhere */
		bpf_map__set_pin_path(m->map, NULL);
	} else {
		if (!path)
			path = m->pin_path;
		if (!path)
			luaL_error(L, "unpin map '%s': not pinned by this handle (give the path)",
				   m->name);
		if (unlink(path))
			unpin_fail(L, m, errno, path);
		if (m->pin_path && !strcmp(path, m->pin_path)) {
			free(m->pin_path);
			m->pin_path = NULL;
		}
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int map_key_type(lua_State *L)
{
	map_self(L, "key_type");
	bh_getuv(L, 1);
	lua_getfield(L, -1, "ktype");
	return 1;
}

static int map_value_type(lua_State *L)
{
	map_self(L, "value_type");
	bh_getuv(L, 1);
	lua_getfield(L, -1, "vtype");
	return 1;
}

static const char *const set_types_opts[] = { "key", "value", NULL };

/* The Type at the top of the stack for a side: a Type, or a type name (replaced). */
static struct bh_type *type_arg(lua_State *L, struct bh_map *m, const char *op, const char *side,
				uint32_t size)
{
	struct bh_type *t = NULL;

	if (lua_type(L, -1) == LUA_TSTRING) {
		const struct btf *btf =
			m->parent && m->parent->obj ? bpf_object__btf(m->parent->obj) : NULL;

		t = bh_type_from_spec(L, btf, lua_tostring(L, -1), op);
		lua_remove(L, -2);
	} else if (bh_testud(L, -1, BH_TYPE_MT)) {
		t = bh_type_check(L, -1);
	} else {
		luaL_error(L, "%s map '%s': %s must be a Type or a type name, got %s", op, m->name,
			   side, luaL_typename(L, -1));
	}
	if (t->root->size != size)
		luaL_error(L, "%s map '%s': %s type %s has %d bytes, the map's %ss have %d", op,
			   m->name, side, t->root->cname, (int)t->root->size, side, (int)size);
	return t;
}

/* Give the map at idx the Type at the top of the stack (popped) for side. */
static void set_type_side(lua_State *L, int idx, struct bh_map *m, int key)
{
	struct bh_type *t = bh_type_check(L, -1);

	bh_getuv(L, idx);
	lua_insert(L, -2);
	lua_setfield(L, -2, key ? "ktype" : "vtype");
	lua_pop(L, 1);
	if (key)
		m->ktype = t;
	else
		m->vtype = t;
	map_fast_code(m);
}

/* m:set_types{key =, value =}: type a map's keys and values by hand. */
static int map_set_types(lua_State *L)
{
	struct bh_map *m = map_self(L, "set_types");

	luaL_checktype(L, 2, LUA_TTABLE);
	bh_opt_check(L, 2, "set_types", set_types_opts);
	lua_settop(L, 2);
	lua_getfield(L, 2, "key");
	if (!lua_isnil(L, 3))
		type_arg(L, m, "set_types", "key", m->key_size);
	lua_getfield(L, 2, "value");
	if (!lua_isnil(L, 4))
		type_arg(L, m, "set_types", "value", m->value_size);
	/* both checked before either is set */
	if (!lua_isnil(L, 4))
		set_type_side(L, 1, m, 0);
	else
		lua_pop(L, 1);
	if (!lua_isnil(L, 3))
		set_type_side(L, 1, m, 1);
	lua_settop(L, 1);
	map_refresh_props(L, 1, m);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Proxy --------------------------------------------------------------- */

/*
 * m:proxy() is a table-like view, kept apart from the handle's methods:
 * p[k] looks up, p[k] = v updates, p[k] = nil deletes; pairs(p) under 5.4,
 * p:pairs() or p() under LuaJIT. The key "pairs" reads the method, so a
 * string-keyed map looks that one key up with m:lookup("pairs").
 */
static void proxy_push_map(lua_State *L, int idx)
{
	if (!lua_touserdata(L, idx) || bh_rawlen(L, idx) != sizeof(uint32_t) ||
	    *(uint32_t *)lua_touserdata(L, idx) != PROXY_MAGIC)
		luaL_argerror(L, idx, "map proxy expected");
	bh_getuv(L, idx);
	lua_rawgeti(L, -1, 1);
	lua_remove(L, -2);
}

static int proxy_pairs(lua_State *L)
{
	proxy_push_map(L, 1);
	lua_replace(L, 1);
	lua_settop(L, 1);
	return map_iterate(L);
}

static int proxy_index(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "pairs")) {
		lua_pushcfunction(L, proxy_pairs);
		return 1;
	}
	proxy_push_map(L, 1);
	lua_replace(L, 1);
	lua_settop(L, 2);
	return map_lookup(L);
}

static int proxy_newindex(lua_State *L)
{
	proxy_push_map(L, 1);
	lua_replace(L, 1);
	lua_settop(L, 3);
	if (lua_isnil(L, 3)) {
		lua_settop(L, 2);
		map_delete(L);
	} else {
		map_update(L);
	}
	return 0;
}

static int proxy_len(lua_State *L)
{
	proxy_push_map(L, 1);
	lua_replace(L, 1);
	lua_settop(L, 1);
	return map_count(L);
}

static int proxy_tostring(lua_State *L)
{
	struct bh_map *m;

	proxy_push_map(L, 1);
	m = map_toud(L, -1);
	lua_pushfstring(L, "proxy of map '%s'", m ? m->name : "?");
	return 1;
}

static int map_proxy(lua_State *L)
{
	uint32_t *p;

	map_self(L, "proxy");
	p = bh_newud(L, sizeof(*p));
	*p = PROXY_MAGIC;
	luaL_getmetatable(L, "bpfhost.proxy");
	lua_setmetatable(L, -2);
	lua_createtable(L, 1, 0);
	lua_pushvalue(L, 1);
	lua_rawseti(L, -2, 1);
	bh_setuv(L, -2);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Handles ------------------------------------------------------------- */

static void map_refresh_props(lua_State *L, int idx, struct bh_map *m)
{
	struct bpf_map_info info;
	uint32_t len = sizeof(info);

	if (!lua_getmetatable(L, idx))
		return;
	lua_getfield(L, -1, "__index");
	lua_pushstring(L, m->name);
	lua_setfield(L, -2, "name");
	lua_pushstring(L, map_type_name(m->type));
	lua_setfield(L, -2, "type");
	lua_pushinteger(L, m->key_size);
	lua_setfield(L, -2, "key_size");
	lua_pushinteger(L, m->value_size);
	lua_setfield(L, -2, "value_size");
	lua_pushinteger(L, m->max_entries);
	lua_setfield(L, -2, "max_entries");
	lua_pushinteger(L, m->map_flags);
	lua_setfield(L, -2, "flags");
	lua_pushinteger(L, m->fd);
	lua_setfield(L, -2, "fd");
	memset(&info, 0, sizeof(info));
	if (m->fd >= 0 && !bpf_obj_get_info_by_fd(m->fd, &info, &len))
		lua_pushinteger(L, info.id);
	else
		lua_pushnil(L);
	lua_setfield(L, -2, "id");
	lua_pop(L, 2);
}

/*
 * Push a new map userdata in a closed state with its own metatable (a copy
 * of the template, with __index a per-handle table of properties that falls
 * back to the shared methods).
 */
/*
 * Push bpfhost.mapops's methods (bindings/lua/mapops.lua: LuaJIT's FFI fast
 * path of lookup, update and delete, falling back to the C ones), made once
 * from the C methods table at -1 and cached in the registry; 0 when there
 * are none (not LuaJIT, no require, no libbpf for the FFI), pushing nothing.
 */
static int push_fast_methods(lua_State *L)
{
	int top = lua_gettop(L);

	lua_getfield(L, LUA_REGISTRYINDEX, "bpfhost.mapops.methods");
	if (lua_istable(L, -1))
		return 1;
	if (lua_toboolean(L, -1) == 0 && !lua_isnil(L, -1)) {
		lua_pop(L, 1); /* tried before: false */
		return 0;
	}
	lua_pop(L, 1);
	lua_pushboolean(L, 0);
	lua_setfield(L, LUA_REGISTRYINDEX, "bpfhost.mapops.methods");
	lua_getglobal(L, "require");
	if (!lua_isfunction(L, -1))
		goto none;
	lua_pushliteral(L, "bpfhost.mapops");
	if (lua_pcall(L, 1, 1, 0) || !lua_isfunction(L, -1))
		goto none;
	lua_pushvalue(L, top);
	lua_pushinteger(L, (lua_Integer)sizeof(struct bh_map));
	lua_pushinteger(L, BH_MAP_MAGIC);
	if (lua_pcall(L, 3, 1, 0) || !lua_istable(L, -1))
		goto none;
	lua_pushvalue(L, -1);
	lua_setfield(L, LUA_REGISTRYINDEX, "bpfhost.mapops.methods");
	return 1;
none:
	lua_settop(L, top);
	return 0;
}

static struct bh_map *map_newud(lua_State *L)
{
	struct bh_map *m = bh_newud(L, sizeof(*m));

	memset(m, 0, sizeof(*m));
	m->magic = BH_MAP_MAGIC;
	m->fd = -1;
	m->closed = 1;
	lua_createtable(L, 0, 8); /* metatable */
	luaL_getmetatable(L, BH_MAP_MT);
	lua_pushnil(L);
	while (lua_next(L, -2)) { /* ud, mt, template, k, v */
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -5);
	}
	lua_getfield(L, -1, "__props_mt");
	lua_getfield(L, -1, "__index");
	lua_createtable(L, 0, 48); /* ud, mt, template, props_mt, methods, props */
	/*
	 * The methods themselves too: then m:lookup in a trace is one hash
	 * lookup, not a miss in props (a chain walk) and a second table.
	 */
	lua_pushnil(L);
	while (lua_next(L, -3)) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -4);
	}
	lua_pushvalue(L, -2);
	if (push_fast_methods(L)) { /* ..., methods, props, methods, fast */
		lua_pushnil(L);
		while (lua_next(L, -2)) { /* ..., props, methods, fast, k, v */
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, -6);
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	lua_remove(L, -2); /* ud, mt, template, props_mt, props */
	lua_insert(L, -2);
	lua_setmetatable(L, -2);
	lua_setfield(L, -3, "__index");
	lua_pop(L, 1);
	lua_setmetatable(L, -2);
	lua_createtable(L, 0, 3);
	bh_setuv(L, -2);
	return m;
}

void bh_map_push(lua_State *L, int objidx, struct bpf_map *map)
{
	struct bh_map *m;
	const char *name = bpf_map__name(map);

	if (objidx < 0)
		objidx = lua_gettop(L) + objidx + 1;
	m = map_newud(L);
	m->map = map;
	m->parent = lua_touserdata(L, objidx);
	m->closed = 0;
	m->type = bpf_map__type(map);
	m->key_size = bpf_map__key_size(map);
	m->value_size = bpf_map__value_size(map);
	m->max_entries = bpf_map__max_entries(map);
	m->map_flags = bpf_map__map_flags(map);
	snprintf(m->name, sizeof(m->name), "%s", name ? name : "?");
	bh_getuv(L, -1);
	lua_pushvalue(L, objidx);
	lua_setfield(L, -2, "parent");
	lua_pop(L, 1);
	if (m->parent->loaded)
		map_prepare_at(L, lua_gettop(L), m, "get_map");
	else
		map_refresh_props(L, lua_gettop(L), m);
}

static void map_push_fd(lua_State *L, int fd, int owns, const char *op, int kernel_btf);

/*
 * Push a handle for the map behind fd (owned when owns), typed by the BTF the
 * kernel holds for it, or raw bytes when it has none.
 */
void bh_map_push_fd(lua_State *L, int fd, int owns, const char *op)
{
	map_push_fd(L, fd, owns, op, 1);
}

/* The same, raw bytes unless kernel_btf (map_create types the handle itself). */
static void map_push_fd(lua_State *L, int fd, int owns, const char *op, int kernel_btf)
{
	struct bpf_map_info info;
	uint32_t len = sizeof(info);
	struct btf **hold = NULL;
	struct bh_map *m;
	int idx;

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
		int err = errno;

		if (owns)
			close(fd);
		bh_fail(L, op, "map", NULL, err, NULL, NULL);
	}
	m = map_newud(L);
	idx = lua_gettop(L);
	m->owns_fd = owns;
	m->fd = fd; /* closed by __gc from here on, if owned */
	m->closed = 0;
	m->type = info.type;
	m->key_size = info.key_size;
	m->value_size = info.value_size;
	m->max_entries = info.max_entries;
	m->map_flags = info.map_flags;
	snprintf(m->name, sizeof(m->name), "%s", info.name[0] ? info.name : "(no name)");
	if (kernel_btf && info.btf_id && (info.btf_key_type_id || info.btf_value_type_id)) {
		struct btf *btf = btf__load_from_kernel_by_id(info.btf_id);

		if (btf)
			hold = bh_btf_hold(L, btf); /* freed even if compiling raises */
	}
	map_setup(L, idx, m, hold ? *hold : NULL, info.btf_key_type_id, info.btf_value_type_id,
		  op);
	if (hold) {
		btf__free(*hold);
		*hold = NULL;
		lua_pop(L, 1);
	}
	map_refresh_props(L, idx, m);
}

/* bpf.map_by_id(id): any map in the system, typed by its BTF. */
static int l_map_by_id(lua_State *L)
{
	lua_Number d = luaL_checknumber(L, 1);
	char reason[64];
	int fd;

	if (d < 1 || d > 4294967295.0 || d != (lua_Number)(uint32_t)d)
		luaL_argerror(L, 1, "a map id (a positive integer)");
	fd = bpf_map_get_fd_by_id((uint32_t)d);
	if (fd < 0) {
		int err = errno;

		snprintf(reason, sizeof(reason), "no map with id %u", (uint32_t)d);
		bh_fail_msg(L, "map_by_id", NULL, NULL, err, err == ENOENT ? reason : NULL, NULL,
			    NULL);
	}
	bh_map_push_fd(L, fd, 1, "map_by_id");
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- bpf.map_create ------------------------------------------------------ */

static const struct {
	const char *name;
	uint32_t val;
} create_flags[] = {
	{ "no_prealloc", BPF_F_NO_PREALLOC },
	{ "no_common_lru", BPF_F_NO_COMMON_LRU },
	{ "numa_node", BPF_F_NUMA_NODE },
	{ "rdonly", BPF_F_RDONLY },
	{ "wronly", BPF_F_WRONLY },
	{ "stack_build_id", BPF_F_STACK_BUILD_ID },
	{ "zero_seed", BPF_F_ZERO_SEED },
	{ "rdonly_prog", BPF_F_RDONLY_PROG },
	{ "wronly_prog", BPF_F_WRONLY_PROG },
	{ "clone", BPF_F_CLONE },
	{ "mmapable", BPF_F_MMAPABLE },
	{ "preserve_elems", BPF_F_PRESERVE_ELEMS },
	{ "inner_map", BPF_F_INNER_MAP },
};

/*
 * Map creation flags from names joined by "|" ("no_prealloc|mmapable";
 * spaces around a name and empty names are ignored), for map_create and
 * set_flags. An unknown name raises "<op>[ map '<name>']: unknown flag ...".
 */
uint32_t bh_map_flag_names(lua_State *L, const char *s, size_t len, const char *op,
			   const char *name)
{
	uint32_t flags = 0;
	const char *p;
	size_t i;

	for (p = s; p <= s + len;) {
		const char *e = memchr(p, '|', (size_t)(s + len - p));
		size_t n;
		int found = 0;

		if (!e)
			e = s + len;
		while (p < e && *p == ' ')
			p++;
		n = (size_t)(e - p);
		while (n && p[n - 1] == ' ')
			n--;
		for (i = 0; i < sizeof(create_flags) / sizeof(create_flags[0]); i++)
			if (strlen(create_flags[i].name) == n && !strncmp(create_flags[i].name, p, n)) {
				flags |= create_flags[i].val;
				found = 1;
			}
		if (!found && n) {
			luaL_Buffer b;

			lua_pushlstring(L, p, n);
			luaL_buffinit(L, &b);
			for (i = 0; i < sizeof(create_flags) / sizeof(create_flags[0]); i++) {
				if (i)
					luaL_addstring(&b, ", ");
				luaL_addstring(&b, create_flags[i].name);
			}
			luaL_pushresult(&b);
			if (name)
				luaL_error(L, "%s map '%s': unknown flag '%s' (%s)", op, name,
					   lua_tostring(L, -2), lua_tostring(L, -1));
			luaL_error(L, "%s: unknown flag '%s' (%s)", op, lua_tostring(L, -2),
				   lua_tostring(L, -1));
		}
		p = e + 1;
	}
	return flags;
}

static uint32_t parse_create_flags(lua_State *L, int idx)
{
	const char *s;
	size_t len;

	if (lua_isnil(L, idx))
		return 0;
	if (lua_type(L, idx) == LUA_TNUMBER) {
		lua_Number d = lua_tonumber(L, idx);

		if (d < 0 || d != (lua_Number)(uint32_t)d)
			luaL_error(L, "map_create: flags must be names or a non-negative integer");
		return (uint32_t)d;
	}
	if (lua_type(L, idx) != LUA_TSTRING)
		luaL_error(L, "map_create: flags must be a string like \"no_prealloc|mmapable\", "
			      "got %s",
			   luaL_typename(L, idx));
	s = lua_tolstring(L, idx, &len);
	return bh_map_flag_names(L, s, len, "map_create", NULL);
}

/* key/value of map_create at the top: a size, a type name or a Type. Returns the size. */
static uint32_t create_side(lua_State *L, const char *side, int *typed)
{
	*typed = 0;
	switch (lua_type(L, -1)) {
	case LUA_TNIL:
		return 0;
	case LUA_TNUMBER: {
		lua_Number d = lua_tonumber(L, -1);

		if (d < 0 || d > (1 << 30) || d != (lua_Number)(uint32_t)d)
			luaL_error(L, "map_create: %s size must be an integer 0..2^30", side);
		return (uint32_t)d;
	}
	case LUA_TSTRING: {
		struct bh_type *t = bh_type_from_spec(L, NULL, lua_tostring(L, -1), "map_create");

		lua_remove(L, -2);
		*typed = 1;
		return t->root->size;
	}
	default:
		if (bh_testud(L, -1, BH_TYPE_MT)) {
			*typed = 1;
			return bh_type_check(L, -1)->root->size;
		}
		luaL_error(L, "map_create: %s must be a size, a type name or a Type, got %s", side,
			   luaL_typename(L, -1));
	}
	return 0;
}

static const char *const create_opts[] = { "type", "key", "value", "max_entries", "name", "flags",
					    "inner_map", "map_extra", "numa_node", NULL };

/*
 * The map with BTF written from its Types (slots 3 and 4: bh_type_to_btf),
 * so that other readers see it typed: its fd, or -1 when the Types have no
 * faithful BTF or the kernel takes the map only without it (then it is made
 * as before, typed for this handle only). Needs both sides typed (arrays:
 * the value).
 */
static int create_typed(lua_State *L, int type, const char *name, uint32_t ksize, uint32_t vsize,
			uint32_t max_entries, struct bpf_map_create_opts *o, int ktyped, int vtyped)
{
	struct btf *btf;
	int kid, vid, fd = -1;
	int array = type == BPF_MAP_TYPE_ARRAY || type == BPF_MAP_TYPE_PERCPU_ARRAY;

	/* maps without keys (queue, stack, bloom_filter) take no BTF */
	if (!vtyped || !(ktyped || array) || !ksize || o->inner_map_fd)
		return -1;
	btf = btf__new_empty();
	if (!btf)
		return -1;
	vid = bh_type_to_btf(btf, bh_type_check(L, 4));
	if (ktyped)
		kid = bh_type_to_btf(btf, bh_type_check(L, 3));
	else /* an array's u32 index: the one bh_type_to_btf gave the value's arrays */
		kid = btf__find_by_name_kind(btf, "unsigned int", BTF_KIND_INT);
	if (vid > 0 && kid > 0 && !btf__load_into_kernel(btf)) {
		o->btf_fd = (uint32_t)btf__fd(btf);
		o->btf_key_type_id = (uint32_t)kid;
		o->btf_value_type_id = (uint32_t)vid;
		fd = bpf_map_create((enum bpf_map_type)type, name, ksize, vsize, max_entries, o);
		o->btf_fd = o->btf_key_type_id = o->btf_value_type_id = 0;
	}
	btf__free(btf); /* the map holds the kernel's BTF object */
	return fd;
}

/*
 * bpf.map_create{type =, key =, value =, max_entries =, name =, flags =,
 * inner_map =, map_extra =, numa_node =}: a map outside any object, closed
 * with its handle.
 */
static int l_map_create(lua_State *L)
{
	LIBBPF_OPTS(bpf_map_create_opts, o);
	const char *tname, *name = NULL;
	uint32_t ksize, vsize, max_entries = 0;
	int type, ktyped, vtyped, fd, idx;
	struct bh_map *m;
	lua_Number d;

	luaL_checktype(L, 1, LUA_TTABLE);
	bh_opt_check(L, 1, "map_create", create_opts);
	lua_settop(L, 1);
	lua_getfield(L, 1, "type"); /* 2 */
	tname = lua_tostring(L, 2);
	if (!tname)
		luaL_error(L, "map_create: type is required (\"hash\", \"array\", \"lru_hash\", ...)");
	type = map_type_by_name(tname);
	if (type < 0)
		luaL_error(L, "map_create: unknown map type '%s'", tname);
	lua_getfield(L, 1, "key"); /* 3: key spec or Type */
	ksize = create_side(L, "key", &ktyped);
	lua_getfield(L, 1, "value"); /* 4 */
	vsize = create_side(L, "value", &vtyped);
	lua_getfield(L, 1, "max_entries"); /* 5 */
	if (!lua_isnil(L, 5)) {
		d = lua_tonumber(L, 5);
		if (lua_type(L, 5) != LUA_TNUMBER || d < 0 || d != (lua_Number)(uint32_t)d)
			luaL_error(L, "map_create: max_entries must be a non-negative integer");
		max_entries = (uint32_t)d;
	}
	lua_getfield(L, 1, "name"); /* 6 */
	if (!lua_isnil(L, 6)) {
		size_t n, i;

		name = luaL_checklstring(L, 6, &n);
		if (n >= BPF_OBJ_NAME_LEN)
			luaL_error(L, "map_create: name '%s' is longer than %d characters", name,
				   BPF_OBJ_NAME_LEN - 1);
		for (i = 0; i < n; i++)
			if (!(name[i] == '_' || name[i] == '.' || (name[i] >= 'a' && name[i] <= 'z') ||
			      (name[i] >= 'A' && name[i] <= 'Z') || (name[i] >= '0' && name[i] <= '9')))
				luaL_error(L, "map_create: name '%s': only letters, digits, '_' and "
					      "'.' are allowed",
					   name);
	}
	lua_getfield(L, 1, "flags"); /* 7 */
	o.map_flags = parse_create_flags(L, 7);
	lua_getfield(L, 1, "inner_map"); /* 8 */
	if (!lua_isnil(L, 8)) {
		struct bh_map *inner = map_toud(L, 8);

		if (type != BPF_MAP_TYPE_ARRAY_OF_MAPS && type != BPF_MAP_TYPE_HASH_OF_MAPS)
			luaL_error(L, "map_create: inner_map is only for array_of_maps and "
				      "hash_of_maps");
		if (!inner)
			luaL_error(L, "map_create: inner_map must be a map handle, got %s",
				   luaL_typename(L, 8));
		if (inner->fd < 0)
			map_prepare_at(L, 8, inner, "map_create");
		o.inner_map_fd = (uint32_t)inner->fd;
		vsize = 4;
	} else if (type == BPF_MAP_TYPE_ARRAY_OF_MAPS || type == BPF_MAP_TYPE_HASH_OF_MAPS) {
		luaL_error(L, "map_create: a %s map needs inner_map = <a map handle of the inner "
			      "map's shape>",
			   tname);
	}
	lua_getfield(L, 1, "map_extra"); /* 9 */
	if (!lua_isnil(L, 9))
		o.map_extra = (uint64_t)luaL_checknumber(L, 9);
	lua_getfield(L, 1, "numa_node"); /* 10 */
	if (!lua_isnil(L, 10)) {
		o.numa_node = (uint32_t)luaL_checknumber(L, 10);
		o.map_flags |= BPF_F_NUMA_NODE;
	}
	/* the kernel's rules, checked here so that the error says what to change */
	switch (type) {
	case BPF_MAP_TYPE_PROG_ARRAY:
	case BPF_MAP_TYPE_PERF_EVENT_ARRAY:
	case BPF_MAP_TYPE_CGROUP_ARRAY:
		if (!ksize)
			ksize = 4;
		if (!vsize)
			vsize = 4;
		break;
	case BPF_MAP_TYPE_ARRAY_OF_MAPS:
	case BPF_MAP_TYPE_ARRAY:
	case BPF_MAP_TYPE_PERCPU_ARRAY:
		if (ksize && ksize != 4)
			luaL_error(L, "map_create: %s %s map's keys are u32 indexes (key = 4)",
				   article(tname), tname);
		ksize = 4;
		break;
	case BPF_MAP_TYPE_LPM_TRIE:
		/* the kernel requires it: nodes are allocated on insert */
		o.map_flags |= BPF_F_NO_PREALLOC;
		if (ksize <= 4)
			luaL_error(L, "map_create: an lpm_trie key is u32 prefixlen + address bytes "
				      "(key = 8 for IPv4, 20 for IPv6)");
		break;
	case BPF_MAP_TYPE_QUEUE:
	case BPF_MAP_TYPE_STACK:
	case BPF_MAP_TYPE_BLOOM_FILTER:
		if (ksize)
			luaL_error(L, "map_create: a %s map has no keys (leave key out)", tname);
		break;
	case BPF_MAP_TYPE_RINGBUF:
	case BPF_MAP_TYPE_USER_RINGBUF:
		if (ksize || vsize)
			luaL_error(L, "map_create: a %s map has no keys or values; max_entries is "
				      "its size in bytes (a power of 2, a multiple of the page size)",
				   tname);
		break;
	}
	if (!max_entries)
		luaL_error(L, "map_create: max_entries is required (and > 0)");
	if (type != BPF_MAP_TYPE_QUEUE && type != BPF_MAP_TYPE_STACK &&
	    type != BPF_MAP_TYPE_BLOOM_FILTER && type != BPF_MAP_TYPE_RINGBUF &&
	    type != BPF_MAP_TYPE_USER_RINGBUF && !ksize)
		luaL_error(L, "map_create: key is required (a size, a type name or a Type)");
	if (type != BPF_MAP_TYPE_RINGBUF && type != BPF_MAP_TYPE_USER_RINGBUF && !vsize)
		luaL_error(L, "map_create: value is required (a size, a type name or a Type)");

	fd = create_typed(L, type, name, ksize, vsize, max_entries, &o, ktyped, vtyped);
	if (fd < 0)
		fd = bpf_map_create((enum bpf_map_type)type, name, ksize, vsize, max_entries, &o);
	if (fd < 0)
		bh_fail(L, "map_create", "map", name ? name : tname, errno,
			errno == EINVAL ? "check the sizes and flags against this map type's rules"
					: NULL,
			NULL);
	/* typed below by the Types given, which the map's BTF was written from */
	map_push_fd(L, fd, 1, "map_create", 0);
	idx = lua_gettop(L);
	m = map_toud(L, idx);
	if (ktyped) {
		lua_pushvalue(L, 3);
		set_type_side(L, idx, m, 1);
	}
	if (vtyped && !(m->special & (BH_MS_FDMAP | BH_MS_FDPROG))) {
		lua_pushvalue(L, 4);
		set_type_side(L, idx, m, 0);
	}
	map_refresh_props(L, idx, m);
	return 1;
}

/*
 * Called by the object (handle at idx) when it loads or closes: drop the
 * cached fd so the next call goes through map_prepare, which reports the
 * closed object or picks up the new fd and sizes.
 */
void bh_map_reset(lua_State *L, int idx)
{
	struct bh_map *m = map_toud(L, idx);

	if (m && !m->owns_fd) {
		m->fd = -1;
		if (!m->closed && m->parent && m->parent->obj && m->parent->loaded)
			map_prepare_at(L, idx, m, "load");
		else
			map_refresh_props(L, idx, m);
	}
}

static void map_release(struct bh_map *m)
{
	if (m->owns_fd && m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	m->closed = 1;
	free(m->kbuf);
	m->kbuf = m->kbuf2 = m->vbuf = NULL;
	free(m->pin_path);
	m->pin_path = NULL;
}

static int map_close(lua_State *L)
{
	struct bh_map *m = map_toud(L, 1);

	if (!m)
		map_badself(L, "close");
	map_release(m);
	map_refresh_props(L, 1, m);
	lua_pushboolean(L, 1);
	return 1;
}

static int map_gc(lua_State *L)
{
	struct bh_map *m = map_toud(L, 1);

	if (m)
		map_release(m);
	return 0;
}

static int map_tostring(lua_State *L)
{
	struct bh_map *m = map_toud(L, 1);

	if (!m)
		return 0;
	if (m->closed)
		lua_pushfstring(L, "map '%s' (closed)", m->name);
	else if (m->parent && !m->parent->obj)
		lua_pushfstring(L, "map '%s' (object closed)", m->name);
	else if (m->fd < 0)
		lua_pushfstring(L, "map '%s' %s (not loaded)", m->name, map_type_name(m->type));
	else
		lua_pushfstring(L, "map '%s' %s %s->%s max %d fd %d", m->name,
				map_type_name(m->type), m->ktype->root->cname,
				m->vtype->root->cname, (int)m->max_entries, m->fd);
	return 1;
}

static const luaL_Reg map_meta[] = {
	{ "__gc", map_gc },
	{ "__tostring", map_tostring },
#if LUA_VERSION_NUM >= 504
	{ "__close", map_gc },
#endif
	{ NULL, NULL },
};

static const luaL_Reg map_methods[] = {
	{ "lookup", map_lookup },
	{ "update", map_update },
	{ "delete", map_delete },
	{ "lookup_and_delete", map_lookup_and_delete },
	{ "push", map_push },
	{ "pop", map_pop },
	{ "peek", map_peek },
	{ "contains", map_contains },
	{ "iterate", map_iterate },
	{ "drain", map_drain },
	{ "count", map_count },
	{ "keys", map_keys },
	{ "dump", map_dump },
	{ "clear", map_clear },
	{ "lookup_batch", map_lookup_batch },
	{ "update_batch", map_update_batch },
	{ "delete_batch", map_delete_batch },
	{ "freeze", map_freeze },
	{ "info", map_info },
	{ "pin", map_pin },
	{ "unpin", map_unpin },
	{ "proxy", map_proxy },
	{ "key_type", map_key_type },
	{ "value_type", map_value_type },
	{ "set_types", map_set_types },
	{ "close", map_close },
	{ NULL, NULL },
};

static const luaL_Reg iter_meta[] = {
	{ "__gc", iter_gc },
	{ "__index", iter_index },
	{ "__call", iter_next },
	{ "__tostring", iter_tostring },
	{ NULL, NULL },
};

static const luaL_Reg proxy_meta[] = {
	{ "__index", proxy_index },
	{ "__newindex", proxy_newindex },
	{ "__len", proxy_len },
	{ "__call", proxy_pairs },
	{ "__pairs", proxy_pairs },
	{ "__tostring", proxy_tostring },
	{ NULL, NULL },
};

static const luaL_Reg map_funcs[] = {
	{ "map_by_id", l_map_by_id },
	{ "map_create", l_map_create },
	{ "lpm_key", l_lpm_key },
	{ NULL, NULL },
};

void bh_map_init(lua_State *L)
{
	bh_setfuncs(L, map_funcs, 0);
	luaL_newmetatable(L, BH_MAP_MT);
	bh_setfuncs(L, map_meta, 0);
	lua_pushliteral(L, BH_MAP_MT);
	lua_setfield(L, -2, "__name");
	lua_createtable(L, 0, 1); /* __props_mt = { __index = methods } */
	lua_newtable(L);
	bh_setfuncs(L, map_methods, 0);
	bh_mmap_init(L);
	bh_mapcfg_register(L);
	lua_setfield(L, -2, "__index");
	lua_setfield(L, -2, "__props_mt");
	lua_pop(L, 1);

	luaL_newmetatable(L, "bpfhost.iter");
	bh_setfuncs(L, iter_meta, 0);
	lua_pushliteral(L, "bpfhost.iter");
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);

	luaL_newmetatable(L, "bpfhost.proxy");
	bh_setfuncs(L, proxy_meta, 0);
	lua_pushliteral(L, "bpfhost.proxy");
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);

	/* marks m:dump() results, for the pretty printer */
	luaL_newmetatable(L, "bpfhost.dump");
	lua_pushliteral(L, "bpfhost.dump");
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);
}
