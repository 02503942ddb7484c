/*
 * perfbuf.c: bpfhost.perfbuf, a consumer of a BPF_MAP_TYPE_PERF_EVENT_ARRAY
 * through libbpf's perf_buffer (one perf ring per CPU).
 *
 * libbpf's sample callback returns void, so it cannot be told to stop: it
 * copies every record into the batch, and the batch is handed over after
 * each perf_buffer__consume_buffer (one CPU's ring, whose size bounds the
 * batch). Lost-sample reports are counted per CPU in C and given to on_lost
 * after libbpf returns. No Lua runs inside libbpf.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "bh.h"

#define PB_HDR_SZ 8 /* batch records: {u32 len, s32 cpu, data padded to 8} */

struct bh_perfbuf {
	struct bh_source src;        /* first: bpf.poll and bpf.run see a bh_source */
	struct perf_buffer *pb;      /* NULL once closed */
	struct bh_object *obj;       /* the map's object (busy while polling), or NULL */
	const struct bh_plan *plan;  /* NULL: raw strings; the Type sits in the uservalue */
	int fd;                      /* our dup of the map */
	int closed, polling, close_pending;
	size_t nbuf, rr;
	uint8_t *buf;
	size_t head, tail, cap;
	int ncpus;
	uint64_t *lost;              /* per CPU, since creation */
	uint64_t *lost_new;          /* per CPU, not given to on_lost yet */
	int has_new_lost;
	uint64_t oom;                /* samples that did not fit in memory */
	uint64_t records;
	char name[BPF_OBJ_NAME_LEN];
};

static const struct bh_source_ops perfbuf_ops;

static struct bh_perfbuf *perfbuf_checkraw(lua_State *L, int idx)
{
	return bh_checkud(L, idx, BH_PERFBUF_MT);
}

static struct bh_perfbuf *perfbuf_check(lua_State *L, int idx, const char *op)
{
	struct bh_perfbuf *pb = perfbuf_checkraw(L, idx);

	if (pb->closed || pb->close_pending)
		luaL_error(L, "%s perfbuf '%s': perfbuf is closed", op, pb->name);
	return pb;
}

/* ------------------------------------------------------------------------ */
/* -- Releasing ----------------------------------------------------------- */

/* C only: never raises, never calls Lua. Counters stay readable. */
static void perfbuf_release(struct bh_perfbuf *pb)
{
	if (pb->pb) {
		perf_buffer__free(pb->pb);
		pb->pb = NULL;
	}
	if (pb->fd >= 0)
		close(pb->fd);
	pb->fd = -1;
	free(pb->buf);
	pb->buf = NULL;
	pb->head = pb->tail = pb->cap = 0;
	pb->closed = 1;
	pb->close_pending = 0;
}

static int perfbuf_close(lua_State *L)
{
	struct bh_perfbuf *pb = perfbuf_checkraw(L, 1);

	if (pb->polling)
		pb->close_pending = 1; /* from a handler: released when the poll ends */
	else if (!pb->closed)
		perfbuf_release(pb);
	lua_pushboolean(L, 1);
	return 1;
}

static int perfbuf_gc(lua_State *L)
{
	struct bh_perfbuf *pb = lua_touserdata(L, 1);

	if (!pb)
		return 0;
	if (!pb->closed)
		perfbuf_release(pb);
	free(pb->lost);
	free(pb->lost_new);
	pb->lost = pb->lost_new = NULL;
	return 0;
}

static int perfbuf_tostring(lua_State *L)
{
	struct bh_perfbuf *pb = perfbuf_checkraw(L, 1);

	if (pb->closed || pb->close_pending)
		lua_pushfstring(L, "perfbuf '%s' (closed)", pb->name);
	else
		lua_pushfstring(L, "perfbuf '%s' (%d CPU rings)", pb->name, (int)pb->nbuf);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Inside libbpf: copy, count, nothing else ---------------------------- */

static void pb_sample(void *ctx, int cpu, void *data, __u32 size)
{
	struct bh_perfbuf *pb = ctx;
	size_t need = PB_HDR_SZ + (((size_t)size + 7) & ~(size_t)7);
	uint8_t *p;

	if (pb->tail + need > pb->cap) {
		size_t cap = pb->cap ? pb->cap : 65536;
		void *nb;

		while (cap < pb->tail + need)
			cap *= 2;
		nb = cap > UINT32_MAX ? NULL : realloc(pb->buf, cap);
		if (!nb) {
			pb->oom++;
			return;
		}
		pb->buf = nb;
		pb->cap = cap;
	}
	p = pb->buf + pb->tail;
	*(uint32_t *)p = size;
	*(int32_t *)(p + 4) = cpu;
	memcpy(p + PB_HDR_SZ, data, size);
	pb->tail += need;
}

static void pb_lost(void *ctx, int cpu, __u64 cnt)
{
	struct bh_perfbuf *pb = ctx;

	if (cpu < 0 || cpu >= pb->ncpus)
		cpu = 0;
	pb->lost[cpu] += cnt;
	pb->lost_new[cpu] += cnt;
	pb->has_new_lost = 1;
}

static int pb_queued(struct bh_perfbuf *pb)
{
	return pb->head < pb->tail;
}

static void pb_consume(lua_State *L, struct bh_perfbuf *pb, size_t i)
{
	int err;

	pb->head = pb->tail = 0;
	err = perf_buffer__consume_buffer(pb->pb, i);
	if (err < 0 && err != -ENOENT)
		bh_fail(L, "consume", "perfbuf", pb->name, -err, NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* -- Handing over -------------------------------------------------------- */

/* Push the record at the head (value, cpu) and move the head past it. */
static void pb_pop(lua_State *L, struct bh_perfbuf *pb)
{
	const uint8_t *p = pb->buf + pb->head;
	uint32_t len = *(const uint32_t *)p;
	int cpu = *(const int32_t *)(p + 4);

	pb->head += PB_HDR_SZ + ((len + 7) & ~7u);
	pb->records++;
	if (!pb->plan) {
		lua_pushlstring(L, (const char *)p + PB_HDR_SZ, len);
	} else {
		struct bh_cctx c = { L, "decode", "perfbuf", pb->name, "record", 0, { { 0 } } };

		/* the kernel pads samples so that size + 4 is a multiple of 8 */
		if (len < pb->plan->size || len >= pb->plan->size + 8)
			luaL_error(L, "perfbuf '%s': a record of %d bytes does not match %s (%d "
				      "bytes); give no type for variable-size records",
				   pb->name, (int)len, pb->plan->cname, (int)pb->plan->size);
		bh_decode(&c, pb->plan, p + PB_HDR_SZ);
	}
	lua_pushinteger(L, cpu);
}

/* Give the lost counts that came in to on_lost(cpu, n), if there is one. */
static void pb_report_lost(lua_State *L, int idx, struct bh_perfbuf *pb)
{
	int cpu;

	if (!pb->has_new_lost)
		return;
	pb->has_new_lost = 0;
	bh_getuv(L, idx);
	lua_getfield(L, -1, "on_lost");
	lua_remove(L, -2);
	if (lua_isnil(L, -1)) {
		memset(pb->lost_new, 0, sizeof(*pb->lost_new) * (size_t)pb->ncpus);
		lua_pop(L, 1);
		return;
	}
	for (cpu = 0; cpu < pb->ncpus; cpu++) {
		uint64_t n = pb->lost_new[cpu];

		if (!n)
			continue;
		pb->lost_new[cpu] = 0;
		lua_pushvalue(L, -1);
		lua_pushinteger(L, cpu);
		lua_pushinteger(L, (lua_Integer)n);
		lua_call(L, 2, 0);
	}
	lua_pop(L, 1);
}

static long pb_deliver(lua_State *L, struct bh_perfbuf *pb, int hidx, int *stop)
{
	long n = 0;

	while (pb_queued(pb) && !pb->close_pending) {
		lua_pushvalue(L, hidx);
		pb_pop(L, pb);
		lua_call(L, 2, 1);
		n++;
		if (lua_isboolean(L, -1) && !lua_toboolean(L, -1))
			*stop = 1;
		lua_pop(L, 1);
		if (*stop || bh_interrupted)
			break;
	}
	if (pb->close_pending)
		*stop = 1;
	return n;
}

/* ------------------------------------------------------------------------ */
/* -- Source protocol ----------------------------------------------------- */

static int ps_fd(struct bh_source *s)
{
	struct bh_perfbuf *pb = (struct bh_perfbuf *)s;

	return pb->pb ? perf_buffer__epoll_fd(pb->pb) : -1;
}

/*
 * A perf fd's readiness is used up by whoever polls it first (perf_poll
 * swaps it to 0), and an epoll nesting libbpf's may be that one: so instead
 * of trusting readiness, look into the CPU rings themselves (copying what
 * they hold into the batch, where it counts as queued).
 */
static int ps_queued(struct bh_source *s)
{
	struct bh_perfbuf *pb = (struct bh_perfbuf *)s;
	size_t k;

	for (k = 0; pb->pb && !pb_queued(pb) && k < pb->nbuf; k++) {
		pb->head = pb->tail = 0;
		perf_buffer__consume_buffer(pb->pb, (pb->rr + k) % pb->nbuf);
	}
	return pb_queued(pb) || pb->has_new_lost;
}

static void ps_begin(lua_State *L, struct bh_source *s, const char *op)
{
	struct bh_perfbuf *pb = (struct bh_perfbuf *)s;

	if (pb->closed || pb->close_pending)
		luaL_error(L, "%s: perfbuf '%s' is closed", op, pb->name);
	if (pb->polling)
		luaL_error(L, "%s: perfbuf '%s' is already being polled (a handler cannot poll "
			      "its own buffer)",
			   op, pb->name);
	pb->polling = 1;
	if (pb->obj)
		pb->obj->busy++;
}

static void ps_end(struct bh_source *s)
{
	struct bh_perfbuf *pb = (struct bh_perfbuf *)s;

	if (pb->obj)
		pb->obj->busy--;
	pb->polling = 0;
	if (pb->close_pending)
		perfbuf_release(pb);
}

/*
 * Everything the CPU rings hold now. The budget is not applied: a perf ring
 * reports readiness once per wake-up, so what is left behind might not be
 * looked at again until the next sample.
 */
static long ps_dispatch(lua_State *L, int idx, struct bh_source *s, int hidx, long budget,
			int *stop)
{
	struct bh_perfbuf *pb = (struct bh_perfbuf *)s;
	long n = 0;
	size_t k;

	n += pb_deliver(L, pb, hidx, stop);
	pb_report_lost(L, idx, pb);
	for (k = 0; k < pb->nbuf && !*stop && !bh_interrupted && !pb->close_pending; k++) {
		pb_consume(L, pb, (pb->rr + k) % pb->nbuf);
		n += pb_deliver(L, pb, hidx, stop);
		pb_report_lost(L, idx, pb);
	}
	if (pb->nbuf)
		pb->rr = (pb->rr + 1) % pb->nbuf;
	if (pb->close_pending)
		*stop = 1;
	return n;
}

static const struct bh_source_ops perfbuf_ops = {
	.fd = ps_fd,
	.queued = ps_queued,
	.begin = ps_begin,
	.end = ps_end,
	.dispatch = ps_dispatch,
};

/* ------------------------------------------------------------------------ */
/* -- Methods ------------------------------------------------------------- */

/* perf:poll(ms, fn) -> records handed over; fn(rec, cpu). */
static int perfbuf_poll(lua_State *L)
{
	int ms;

	perfbuf_check(L, 1, "poll");
	ms = bh_check_ms(L, 2, "poll");
	if (lua_gettop(L) < 3)
		luaL_error(L, "poll: a handler is needed: perf:poll(ms, function(rec, cpu) ... end)");
	lua_settop(L, 3);
	lua_pushinteger(L, (lua_Integer)bh_source_poll(L, 1, 3, ms, "poll"));
	return 1;
}

/* Wait up to ms for a wake-up: 1 on one, 0 when the time is up. */
static int perfbuf_wait(lua_State *L, struct bh_perfbuf *pb, int ms)
{
	return bh_wait_readable(L, perf_buffer__epoll_fd(pb->pb), ms, "records", "perfbuf",
				pb->name);
}

/* Iterator of perf:records(ms): upvalues perfbuf, ms; yields rec, cpu. */
static int perfbuf_records_iter(lua_State *L)
{
	struct bh_perfbuf *pb = lua_touserdata(L, lua_upvalueindex(1));
	int ms = (int)lua_tointeger(L, lua_upvalueindex(2));

	for (;;) {
		size_t k;

		if (pb->closed || pb->close_pending)
			return 0;
		if (pb->polling)
			luaL_error(L, "records: perfbuf '%s' is being polled", pb->name);
		pb_report_lost(L, lua_upvalueindex(1), pb);
		if (pb->closed)
			return 0;
		if (pb_queued(pb)) {
			pb_pop(L, pb);
			return 2;
		}
		for (k = 0; k < pb->nbuf && !pb_queued(pb); k++) {
			pb_consume(L, pb, (pb->rr + k) % pb->nbuf);
			if (pb_queued(pb))
				pb->rr = (pb->rr + k + 1) % pb->nbuf;
		}
		if (pb_queued(pb) || pb->has_new_lost)
			continue;
		if (!ms || !perfbuf_wait(L, pb, ms))
			return 0;
	}
}

static int perfbuf_records(lua_State *L)
{
	struct bh_perfbuf *pb = perfbuf_check(L, 1, "records");
	int ms = bh_check_ms(L, 2, "records");

	if (pb->polling)
		luaL_error(L, "records: perfbuf '%s' is being polled", pb->name);
	lua_pushvalue(L, 1);
	lua_pushinteger(L, ms);
	lua_pushcclosure(L, perfbuf_records_iter, 2);
	return 1;
}

/* perf:lost_by_cpu() -> {[cpu] = n} for the CPUs that lost samples. */
static int perfbuf_lost_by_cpu(lua_State *L)
{
	struct bh_perfbuf *pb = perfbuf_checkraw(L, 1);
	int cpu;

	lua_newtable(L);
	for (cpu = 0; pb->lost && cpu < pb->ncpus; cpu++) {
		if (!pb->lost[cpu])
			continue;
		lua_pushinteger(L, (lua_Integer)pb->lost[cpu]);
		lua_rawseti(L, -2, cpu);
	}
	return 1;
}

static int perfbuf_index(lua_State *L)
{
	struct bh_perfbuf *pb = perfbuf_checkraw(L, 1);
	const char *k = luaL_checkstring(L, 2);

	lua_getmetatable(L, 1);
	lua_getfield(L, -1, "__methods");
	lua_getfield(L, -1, k);
	if (!lua_isnil(L, -1))
		return 1;
	lua_settop(L, 2);
	if (!strcmp(k, "name")) {
		lua_pushstring(L, pb->name);
	} else if (!strcmp(k, "lost")) {
		uint64_t sum = pb->oom;
		int cpu;

		for (cpu = 0; pb->lost && cpu < pb->ncpus; cpu++)
			sum += pb->lost[cpu];
		lua_pushinteger(L, (lua_Integer)sum);
	} else if (!strcmp(k, "count")) {
		lua_pushinteger(L, (lua_Integer)pb->records);
	} else if (!strcmp(k, "fd")) {
		lua_pushinteger(L, pb->pb ? perf_buffer__epoll_fd(pb->pb) : -1);
	} else {
		lua_pushnil(L);
	}
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Creating ------------------------------------------------------------ */

static const char *const perfbuf_opts[] = { "type", "pages", "on_lost", NULL };

/* bpf.perfbuf(map[, {type =, pages =, on_lost =}]) */
static int l_perfbuf(lua_State *L)
{
	struct bh_map *m = bh_map_check(L, 1);
	struct bh_perfbuf *pb;
	size_t pages = 64;
	int tidx = 0, lidx = 0, ncpus;

	if (m->type != BPF_MAP_TYPE_PERF_EVENT_ARRAY)
		luaL_error(L, "perfbuf: map '%s' is a %s map, not a perf_event_array", m->name,
			   libbpf_bpf_map_type_str((enum bpf_map_type)m->type) ?
				   libbpf_bpf_map_type_str((enum bpf_map_type)m->type) :
				   "unknown");
	bh_opt_check(L, 2, "perfbuf", perfbuf_opts);
	lua_settop(L, 2);
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "pages"); /* 3 */
		if (!lua_isnil(L, 3)) {
			lua_Number d = lua_tonumber(L, 3);

			if (lua_type(L, 3) != LUA_TNUMBER || d < 1 || d > 65536 ||
			    d != (lua_Number)(size_t)d || ((size_t)d & ((size_t)d - 1)))
				luaL_error(L, "perfbuf: option 'pages' must be a power of 2 from 1 "
					      "to 65536 (pages per CPU)");
			pages = (size_t)d;
		}
		lua_getfield(L, 2, "on_lost"); /* 4 */
		if (!lua_isnil(L, 4)) {
			if (!lua_isfunction(L, 4))
				luaL_error(L, "perfbuf: option 'on_lost' must be a function, got %s",
					   luaL_typename(L, 4));
			lidx = 4;
		}
		lua_getfield(L, 2, "type"); /* 5 */
		if (!lua_isnil(L, 5)) {
			if (lua_type(L, 5) != LUA_TSTRING && !bh_testud(L, 5, BH_TYPE_MT))
				luaL_error(L, "perfbuf: option 'type' must be a Type or a type name, "
					      "got %s",
					   luaL_typename(L, 5));
			tidx = 5;
		}
	}
	ncpus = libbpf_num_possible_cpus();
	if (ncpus <= 0)
		luaL_error(L, "perfbuf: cannot read the number of possible CPUs");

	pb = bh_newud(L, sizeof(*pb));
	memset(pb, 0, sizeof(*pb));
	pb->src.ops = &perfbuf_ops;
	pb->fd = -1;
	pb->ncpus = ncpus;
	snprintf(pb->name, sizeof(pb->name), "%s", m->name);
	luaL_getmetatable(L, BH_PERFBUF_MT);
	lua_setmetatable(L, -2);
	lua_createtable(L, 0, 3);
	lua_pushvalue(L, 1);
	lua_setfield(L, -2, "map");
	if (lidx) {
		lua_pushvalue(L, lidx);
		lua_setfield(L, -2, "on_lost");
	}
	if (tidx) {
		struct bh_type *t;

		if (lua_type(L, tidx) == LUA_TSTRING) {
			const struct btf *btf = m->parent && m->parent->obj ?
							bpf_object__btf(m->parent->obj) : NULL;

			t = bh_type_from_spec(L, btf, lua_tostring(L, tidx), "perfbuf");
		} else {
			t = bh_type_check(L, tidx);
			lua_pushvalue(L, tidx);
		}
		pb->plan = t->root;
		lua_setfield(L, -2, "type");
	}
	bh_setuv(L, -2);
	pb->lost = calloc((size_t)ncpus, sizeof(*pb->lost));
	pb->lost_new = calloc((size_t)ncpus, sizeof(*pb->lost_new));
	if (!pb->lost || !pb->lost_new)
		luaL_error(L, "perfbuf: out of memory");
	pb->obj = m->parent;
	pb->fd = fcntl(m->fd, F_DUPFD_CLOEXEC, 3);
	if (pb->fd < 0)
		bh_fail(L, "perfbuf", "map", m->name, errno, NULL, NULL);
	bh_log_begin();
	pb->pb = perf_buffer__new(pb->fd, pages, pb_sample, pb_lost, pb, NULL);
	if (!pb->pb) {
		int err = errno;
		const char *log = bh_log_end();

		bh_fail(L, "perfbuf", "map", m->name, err,
			err == EPERM || err == EACCES ? "needs CAP_PERFMON (or root)" : NULL, log);
	}
	bh_log_end();
	pb->nbuf = perf_buffer__buffer_cnt(pb->pb);
	return 1;
}

/* ------------------------------------------------------------------------ */

static const luaL_Reg perfbuf_meta[] = {
	{ "__gc", perfbuf_gc },
	{ "__tostring", perfbuf_tostring },
	{ "__index", perfbuf_index },
#if LUA_VERSION_NUM >= 504
	{ "__close", perfbuf_close },
#endif
	{ NULL, NULL },
};

static const luaL_Reg perfbuf_methods[] = {
	{ "poll", perfbuf_poll },
	{ "records", perfbuf_records },
	{ "lost_by_cpu", perfbuf_lost_by_cpu },
	{ "close", perfbuf_close },
	{ NULL, NULL },
};

static const luaL_Reg perfbuf_funcs[] = {
	{ "perfbuf", l_perfbuf },
	{ NULL, NULL },
};

void bh_perfbuf_init(lua_State *L)
{
	bh_newmetatable(L, BH_PERFBUF_MT, perfbuf_meta, NULL);
	lua_newtable(L);
	bh_setfuncs(L, perfbuf_methods, 0);
	lua_setfield(L, -2, "__methods");
	lua_pop(L, 1);
	bh_setfuncs(L, perfbuf_funcs, 0);
}
