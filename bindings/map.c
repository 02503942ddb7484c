/* map.c: bpfhost.map, map handles and their operations. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bh.h"

#define ITER_MAGIC 0x62686974u

/* ------------------------------------------------------------------------ */
/* -- Checking ------------------------------------------------------------ */

static int map_is_percpu(uint32_t type)
{
	return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
	       type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

static const char *map_type_name(uint32_t type)
{
	const char *s = libbpf_bpf_map_type_str((enum bpf_map_type)type);

	return s ? s : "unknown";
}

static __attribute__((noinline, noreturn)) void map_badself(lua_State *L, const char *op)
{
	const char *msg = lua_pushfstring(L, "bpfhost.map expected, got %s (call it as m:%s(...))",
					  luaL_typename(L, 1), op);

	luaL_argerror(L, 1, msg);
	abort();
}

static struct bh_map *map_toud(lua_State *L, int idx)
{
	struct bh_map *m = lua_touserdata(L, idx);

	if (!m || lua_type(L, idx) != LUA_TUSERDATA || bh_rawlen(L, idx) != sizeof(*m) ||
	    m->magic != BH_MAP_MAGIC)
		return NULL;
	return m;
}

static void map_refresh_props(lua_State *L, int idx, struct bh_map *m);

/*
 * Size the scratch buffers of m and compile its key and value plans (from
 * btf when kid/vid are set, raw bytes otherwise) into the uservalue of the
 * map userdata at idx. m->type, key_size and value_size are set.
 */
static void map_setup(lua_State *L, int idx, struct bh_map *m, const struct btf *btf, uint32_t kid,
		      uint32_t vid, const char *op)
{
	size_t total;

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
	if (btf && vid)
		m->vtype = bh_type_new(L, btf, vid);
	else
		m->vtype = bh_type_raw(L, m->value_size);
	lua_setfield(L, -2, "vtype");
	lua_pop(L, 1);
	if (m->ktype->root->size != m->key_size || m->vtype->root->size != m->value_size)
		luaL_error(L, "%s map '%s': BTF types do not match the map's sizes", op, m->name);
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
	int fd;

	if (m->closed)
		luaL_error(L, "%s map '%s': map is closed", op, m->name);
	if (!m->map)
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
	map_setup(L, idx, m, btf, btf ? bpf_map__btf_key_type_id(m->map) : 0,
		  btf ? bpf_map__btf_value_type_id(m->map) : 0, op);
	m->fd = fd;
	map_refresh_props(L, idx, m);
}

static void map_prepare(lua_State *L, struct bh_map *m, const char *op)
{
	map_prepare_at(L, 1, m, op);
}

static inline struct bh_map *map_self(lua_State *L, const char *op)
{
	struct bh_map *m = map_toud(L, 1);

	if (unlikely(!m))
		map_badself(L, op);
	if (unlikely(m->fd < 0))
		map_prepare(L, m, op);
	return m;
}

struct bh_map *bh_map_check(lua_State *L, int idx)
{
	struct bh_map *m = map_toud(L, idx);

	if (!m) {
		const char *msg = lua_pushfstring(L, "bpfhost.map expected, got %s",
						  luaL_typename(L, idx));

		luaL_argerror(L, idx, msg);
	}
	if (m->fd < 0) {
		map_prepare_at(L, idx, m, "use");
	}
	return m;
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

		if (d < 0 || d != (lua_Number)(uint64_t)d)
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

static const char *const lookup_opts[] = { "raw", "flags", NULL };

/* Options at idx: nil, a flags string/integer, or a table {flags =, raw =}. */
static uint64_t parse_opts(lua_State *L, int idx, const char *op, struct bh_map *m, int *raw)
{
	uint64_t flags;

	*raw = 0;
	if (lua_type(L, idx) != LUA_TTABLE)
		return parse_flags(L, idx, op, m);
	bh_opt_check(L, idx, op, lookup_opts);
	*raw = bh_opt_bool(L, idx, "raw", 0);
	lua_getfield(L, idx, "flags");
	flags = parse_flags(L, lua_gettop(L), op, m);
	lua_pop(L, 1);
	return flags;
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
}

static inline void map_enc_key(lua_State *L, struct bh_map *m, const char *op, int idx, void *dst,
			       int raw)
{
	struct bh_cctx c;
	struct bh_plan rp;

	cctx_init(&c, L, op, m, "key");
	if (unlikely(raw)) {
		raw_plan(&rp, m->key_size);
		bh_encode(&c, &rp, idx, dst);
	} else {
		bh_encode(&c, m->ktype->root, idx, dst);
	}
}

static inline void map_enc_value(lua_State *L, struct bh_map *m, const char *op, int idx, int raw)
{
	struct bh_cctx c;
	struct bh_plan rp;

	cctx_init(&c, L, op, m, "value");
	if (unlikely(raw)) {
		raw_plan(&rp, m->ncpus ? m->value_bufsz : m->value_size);
		bh_encode(&c, &rp, idx, m->vbuf);
	} else if (m->ncpus) {
		bh_encode_percpu(&c, m->vtype->root, idx, m->vbuf, m->ncpus);
	} else {
		bh_encode(&c, m->vtype->root, idx, m->vbuf);
	}
}

static inline void map_dec_key(lua_State *L, struct bh_map *m, const void *src, int raw)
{
	struct bh_cctx c;

	cctx_init(&c, L, "decode", m, "key");
	if (unlikely(raw))
		lua_pushlstring(L, src, m->key_size);
	else
		bh_decode(&c, m->ktype->root, src);
}

static inline void map_dec_value(lua_State *L, struct bh_map *m, const void *src, int raw)
{
	struct bh_cctx c;

	cctx_init(&c, L, "decode", m, "value");
	if (unlikely(raw))
		lua_pushlstring(L, src, m->ncpus ? m->value_bufsz : m->value_size);
	else if (m->ncpus)
		bh_decode_percpu(&c, m->vtype->root, src, m->ncpus);
	else
		bh_decode(&c, m->vtype->root, src);
}

static __attribute__((noinline, noreturn)) void map_fail(lua_State *L, struct bh_map *m,
							 const char *op, int err)
{
	if (err == EINVAL && op && !strcmp(op, "delete") &&
	    (m->type == BPF_MAP_TYPE_ARRAY || m->type == BPF_MAP_TYPE_PERCPU_ARRAY))
		bh_fail_msg(L, op, "map", m->name, err,
			    "array elements cannot be deleted (update them to zero instead)", NULL,
			    NULL);
	bh_fail(L, op, "map", m->name, err, NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* -- Operations ---------------------------------------------------------- */

static int map_lookup(lua_State *L)
{
	struct bh_map *m = map_self(L, "lookup");
	uint64_t flags = 0;
	int raw = 0, err;

	if (unlikely(lua_gettop(L) > 2))
		flags = parse_opts(L, 3, "lookup", m, &raw);
	map_enc_key(L, m, "lookup", 2, m->kbuf, raw);
	err = bpf_map_lookup_elem_flags(m->fd, m->kbuf, m->vbuf, flags);
	if (unlikely(err)) {
		err = errno;
		if (err == ENOENT) {
			lua_pushnil(L);
			return 1;
		}
		map_fail(L, m, "lookup", err);
	}
	map_dec_value(L, m, m->vbuf, raw);
	return 1;
}

static int map_update(lua_State *L)
{
	struct bh_map *m = map_self(L, "update");
	uint64_t flags = 0;
	int raw = 0, err;

	if (unlikely(lua_gettop(L) > 3))
		flags = parse_opts(L, 4, "update", m, &raw);
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
		map_fail(L, m, "update", err);
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int map_delete(lua_State *L)
{
	struct bh_map *m = map_self(L, "delete");
	int raw = 0, err;

	if (unlikely(lua_gettop(L) > 2))
		parse_opts(L, 3, "delete", m, &raw);
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

/* ------------------------------------------------------------------------ */
/* -- Iteration ----------------------------------------------------------- */

/*
 * Iteration streams the map in chunks held by an iterator userdata (its
 * memory is bounded by the chunk, whatever the map's size). Where the kernel
 * has BPF_MAP_LOOKUP_BATCH the cursor is the kernel's bucket (or index)
 * cursor: every bucket is visited once, so no key is yielded twice and the
 * walk ends whatever other writers do. Elsewhere it falls back to
 * get_next_key, and stops (complete = false) instead of restarting when the
 * key it stands on was deleted under it.
 */
struct bh_iter {
	uint32_t magic;
	struct bh_map *m;         /* kept alive by the uservalue */
	int mode;                 /* ITER_BATCH, ITER_NEXTKEY */
	int eof, done, complete, started, raw, have_prev;
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
	/* keep cursors across a regrow */
	q = p + chunk * (size_t)it->kstride + chunk * (size_t)it->vstride;
	q = (unsigned char *)(((uintptr_t)q + 7) & ~(uintptr_t)7);
	if (it->keys) {
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

static void iter_fill_batch(lua_State *L, struct bh_iter *it)
{
	struct bh_map *m = it->m;
	DECLARE_LIBBPF_OPTS(bpf_map_batch_opts, opts);
	uint32_t count;
	int err;

	for (;;) {
		count = it->chunk;
		err = bpf_map_lookup_batch(m->fd, it->started ? it->cur_in : NULL, it->cur_out,
					   it->keys, it->vals, &count, &opts);
		if (!err)
			break;
		err = errno;
		if (err == ENOENT) {
			it->eof = 1;
			break;
		}
		if (err == ENOSPC && count == 0 && it->chunk < ITER_CHUNK_MAX) {
			if (iter_alloc(it, it->chunk * 2))
				bh_fail(L, "iterate", "map", m->name, ENOMEM, NULL, NULL);
			continue;
		}
		if (!it->started && (err == EINVAL || err == ENOTSUP || err == EOPNOTSUPP ||
				     err == 524 /* ENOTSUPP */)) {
			it->mode = ITER_NEXTKEY;
			it->n = 0;
			return;
		}
		bh_fail(L, "iterate", "map", m->name, err, NULL, NULL);
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
		if (it->have_prev) {
			/* stand on a key that still exists, or stop: never restart */
			if (bpf_map_lookup_elem(m->fd, it->prev, it->vals) && errno == ENOENT) {
				it->complete = 0;
				it->eof = it->done = 1;
				break;
			}
		}
		err = bpf_map_get_next_key(m->fd, it->have_prev ? it->prev : NULL, it->next);
		if (err) {
			err = errno;
			if (err == ENOENT) {
				it->eof = 1;
				break;
			}
			bh_fail(L, "iterate", "map", m->name, err, NULL, NULL);
		}
		memcpy(it->prev, it->next, m->key_size);
		it->have_prev = 1;
		if (bpf_map_lookup_elem(m->fd, it->next,
					it->vals + (size_t)count * it->vstride)) {
			err = errno;
			if (err == ENOENT)
				continue; /* deleted between the two calls: skip it */
			bh_fail(L, "iterate", "map", m->name, err, NULL, NULL);
		}
		memcpy(it->keys + (size_t)count * it->kstride, it->next, m->key_size);
		count++;
		if (it->yielded + count > (uint64_t)m->max_entries * 4 + 1024) {
			/* a writer keeps adding behind us faster than we read */
			it->complete = 0;
			it->eof = it->done = 1;
			break;
		}
	}
	it->started = 1;
	it->n = count;
	it->pos = 0;
}

static int iter_next(lua_State *L)
{
	struct bh_iter *it = iter_check(L, 1);
	struct bh_map *m = it->m;

	if (it->pos >= it->n) {
		if (it->eof || it->done) {
			it->done = 1;
			iter_free(it);
			return 0;
		}
		if (m->fd < 0)
			luaL_error(L, "iterate map '%s': map was closed during iteration", m->name);
		if (it->mode == ITER_BATCH)
			iter_fill_batch(L, it);
		if (it->mode == ITER_NEXTKEY)
			iter_fill_nextkey(L, it);
		if (it->n == 0) {
			it->done = 1;
			iter_free(it);
			return 0;
		}
	}
	map_dec_key(L, m, it->keys + (size_t)it->pos * it->kstride, it->raw);
	map_dec_value(L, m, it->vals + (size_t)it->pos * it->vstride, it->raw);
	it->pos++;
	it->yielded++;
	return 2;
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
		lua_pushnumber(L, (lua_Number)it->yielded);
	else if (!strcmp(k, "done"))
		lua_pushboolean(L, it->done);
	else
		lua_pushnil(L);
	return 1;
}

static const char *const iterate_opts[] = { "raw", "chunk", NULL };

static int map_iterate(lua_State *L)
{
	struct bh_map *m = map_self(L, "iterate");
	struct bh_iter *it;
	uint32_t chunk = 1024;

	bh_opt_check(L, 2, "iterate", iterate_opts);
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "chunk");
		if (!lua_isnil(L, -1)) {
			lua_Number d = lua_tonumber(L, -1);

			if (d < 1 || d > ITER_CHUNK_MAX || d != (lua_Number)(uint32_t)d)
				luaL_error(L, "iterate map '%s': chunk must be an integer 1..%d",
					   m->name, ITER_CHUNK_MAX);
			chunk = (uint32_t)d;
		}
		lua_pop(L, 1);
	}
	if (m->type == BPF_MAP_TYPE_RINGBUF || m->type == BPF_MAP_TYPE_USER_RINGBUF ||
	    m->type == BPF_MAP_TYPE_PERF_EVENT_ARRAY || m->type == BPF_MAP_TYPE_QUEUE ||
	    m->type == BPF_MAP_TYPE_STACK || m->type == BPF_MAP_TYPE_BLOOM_FILTER)
		luaL_error(L, "iterate map '%s': a %s map has no keys to iterate", m->name,
			   map_type_name(m->type));
	if (chunk > m->max_entries && m->max_entries >= ITER_CHUNK_MIN)
		chunk = m->max_entries;
	lua_pushcfunction(L, iter_next);
	it = bh_newud(L, sizeof(*it));
	memset(it, 0, sizeof(*it));
	it->magic = ITER_MAGIC;
	it->m = m;
	it->complete = 1;
	it->raw = bh_opt_bool(L, 2, "raw", 0);
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
		bh_fail(L, "iterate", "map", m->name, ENOMEM, NULL, NULL);
	lua_pushnil(L);
	return 3;
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
	lua_createtable(L, 0, 8); /* ud, mt, template, props_mt, props */
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

/*
 * Push a handle for the map behind fd (owned when owns), typed by the BTF the
 * kernel holds for it, or raw bytes when it has none.
 */
void bh_map_push_fd(lua_State *L, int fd, int owns, const char *op)
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
	if (info.btf_id && (info.btf_key_type_id || info.btf_value_type_id)) {
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

static const char *const set_types_opts[] = { "key", "value", NULL };

/* Resolve the Type for one side of set_types; pushes it (or nothing: NULL). */
static struct bh_type *types_arg(lua_State *L, struct bh_map *m, const char *side, uint32_t size)
{
	struct bh_type *t = NULL;

	lua_getfield(L, 2, side);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return NULL;
	}
	if (lua_type(L, -1) == LUA_TSTRING) {
		const struct btf *btf =
			m->parent && m->parent->obj ? bpf_object__btf(m->parent->obj) : NULL;

		t = bh_type_from_spec(L, btf, lua_tostring(L, -1), "set_types");
		lua_remove(L, -2);
	} else if (bh_testud(L, -1, BH_TYPE_MT)) {
		t = bh_type_check(L, -1);
	} else {
		luaL_error(L, "set_types map '%s': %s must be a Type or a type name, got %s", m->name,
			   side, luaL_typename(L, -1));
	}
	if (t->root->size != size)
		luaL_error(L, "set_types map '%s': %s type %s has %d bytes, the map's %ss have %d",
			   m->name, side, t->root->cname, (int)t->root->size, side, (int)size);
	return t;
}

/* m:set_types{key =, value =}: type a map's keys and values by hand. */
static int map_set_types(lua_State *L)
{
	struct bh_map *m = map_self(L, "set_types");
	struct bh_type *kt, *vt;
	int kidx;

	luaL_checktype(L, 2, LUA_TTABLE);
	bh_opt_check(L, 2, "set_types", set_types_opts);
	kt = types_arg(L, m, "key", m->key_size);
	kidx = lua_gettop(L);
	vt = types_arg(L, m, "value", m->value_size);
	bh_getuv(L, 1);
	if (vt) {
		lua_pushvalue(L, -2);
		lua_setfield(L, -2, "vtype");
		m->vtype = vt;
	}
	if (kt) {
		lua_pushvalue(L, kidx);
		lua_setfield(L, -2, "ktype");
		m->ktype = kt;
	}
	lua_settop(L, 1);
	map_refresh_props(L, 1, m);
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

static int map_close(lua_State *L)
{
	struct bh_map *m = map_toud(L, 1);

	if (!m)
		map_badself(L, "close");
	if (m->owns_fd && m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	m->closed = 1;
	free(m->kbuf);
	m->kbuf = m->kbuf2 = m->vbuf = NULL;
	lua_pushboolean(L, 1);
	return 1;
}

static int map_gc(lua_State *L)
{
	struct bh_map *m = map_toud(L, 1);

	if (m) {
		if (m->owns_fd && m->fd >= 0)
			close(m->fd);
		m->fd = -1;
		m->closed = 1;
		free(m->kbuf);
		m->kbuf = m->kbuf2 = m->vbuf = NULL;
	}
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
	{ "iterate", map_iterate },
	{ "key_type", map_key_type },
	{ "set_types", map_set_types },
	{ "value_type", map_value_type },
	{ "close", map_close },
	{ NULL, NULL },
};

static const luaL_Reg iter_meta[] = {
	{ "__gc", iter_gc },
	{ "__index", iter_index },
	{ "__call", iter_next },
	{ NULL, NULL },
};

static const luaL_Reg map_funcs[] = {
	{ "map_by_id", l_map_by_id },
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
	lua_setfield(L, -2, "__index");
	lua_setfield(L, -2, "__props_mt");
	lua_pop(L, 1);

	luaL_newmetatable(L, "bpfhost.iter");
	bh_setfuncs(L, iter_meta, 0);
	lua_pushliteral(L, "bpfhost.iter");
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);
}
