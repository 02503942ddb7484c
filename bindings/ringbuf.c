/*
 * ringbuf.c: bpfhost.ringbuf, a consumer of one or more BPF ring buffers,
 * and bpfhost.user_ringbuf, a producer into a user ring buffer.
 *
 * Two ways to hand records to Lua, chosen per consumer:
 *
 * - copying (the default): libbpf's ring_buffer__consume calls rb_sample,
 *   which copies each record into the ring's batch and returns 0, or
 *   RB_FULL once the batch holds RB_BATCH bytes (libbpf has advanced the
 *   consumer position past that record by then, so nothing is lost or seen
 *   twice). After libbpf returns, the records go to the handler as strings
 *   or decoded tables: under LuaJIT by a loop in bindings/lua/ringview.lua
 *   that reads the batch through the FFI, otherwise by a C loop; both call
 *   the handler directly (no pcall) and advance the batch's head before each
 *   call, so that a raising handler leaves the rest queued.
 * - view (LuaJIT only): the ring's pages are mapped here and ringview.lua
 *   walks them itself, handing the handler a typed pointer into the ring,
 *   valid until it returns. The consumer position moves past a record only
 *   after its handler returned; rb_shared.pending says where it goes if the
 *   handler raised instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bh.h"

#define RB_BATCH    (256 * 1024) /* bytes copied out before libbpf is told to stop */
#define RB_FULL     (-0x62686266) /* rb_sample: batch full; not an errno */
#define RB_FILL_MAX 256           /* typed records decoded per fill */
#define RB_VIEW_MAX 65536         /* records per view drain, between interrupt checks */
#define RB_MAX_VIEW_RING (1u << 30)

#define RB_HDR_SZ   8             /* batch records, like the kernel's: {u32 len, u32} */

/*
 * What ringview.lua reads and writes through the FFI; its cdef must match
 * (the sizes are compared when the Lua half loads).
 */
struct rb_shared {
	/* copying: the batch, records as {u32 len, u32 0, data padded to 8} */
	uint8_t *buf;
	uint32_t head; /* next record to hand over */
	uint32_t tail; /* end of the copied records */
	/* view: the ring itself */
	uint64_t *cons;
	const uint64_t *prod;
	const uint8_t *data;
	uint64_t mask;
	uint64_t pending; /* where the consumer position goes once the record in hand is done */
	uint32_t size;    /* view: bytes of the record type */
	int32_t stop;     /* closed, or closing from a handler: hand over nothing more */
	int32_t in_view;  /* records(): a view record is in the loop body's hands */
	int32_t spare;
};

struct bh_ringbuf;

/* One ring of a consumer. Freed only by __gc: ringview.lua may hold rb_shared. */
struct rb_ring {
	struct rb_shared sh;         /* first: the Lua half casts a pointer to it */
	struct bh_ringbuf *owner;
	struct ring_buffer *lrb;     /* copying: libbpf's consumer of this one ring */
	size_t cap;                  /* bytes allocated at sh.buf */
	void *cons_page;             /* view: the consumer page (read-write) */
	void *prod_pages;            /* view: producer page + data mapped twice */
	size_t prod_len;
	const struct bh_plan *plan;  /* NULL: raw strings; the Type sits in the uservalue */
	struct bh_object *obj;       /* the map's object (busy while polling), or NULL */
	int fd;                      /* our dup of the ring map */
	int lost_fd;                 /* our dup of the drop counter map, or -1 */
	int lost_percpu;
	uint64_t oom;                /* records libbpf handed over that did not fit in memory */
	uint64_t records;            /* records handed to Lua */
	uint64_t lost_final;         /* the drop counter as it was at close */
	char name[BPF_OBJ_NAME_LEN];
	char lost_name[BPF_OBJ_NAME_LEN];
};

struct bh_ringbuf {
	struct bh_source src;        /* first: bpf.poll and bpf.run see a bh_source */
	struct rb_ring **rings;
	int n;
	int epfd;                    /* one epoll over every ring map; -1 once closed */
	int closed;
	int polling;                 /* a poll, bpf.poll or bpf.run is handing over records */
	int close_pending;           /* closed from a handler: released when polling ends */
	int unmap_at_gc;             /* a view record was out at close: unmap in __gc */
	int view;
	int rr;                      /* the ring handed over first next time */
	int ncpus;
};

struct bh_user_ringbuf {
	struct user_ring_buffer *urb; /* NULL once closed */
	int fd;                       /* our dup of the map */
	int epfd;                     /* waits for room (EPOLLOUT) */
	uint32_t max;                 /* the map's max_entries */
	const struct bh_plan *plan;   /* NULL: bytes only */
	unsigned char *scratch;
	size_t scratch_cap;
	char name[BPF_OBJ_NAME_LEN];
};

static const struct bh_source_ops ringbuf_ops;

/* ------------------------------------------------------------------------ */
/* -- Checking ------------------------------------------------------------ */

static struct bh_ringbuf *ringbuf_checkraw(lua_State *L, int idx)
{
	return bh_checkud(L, idx, BH_RINGBUF_MT);
}

static const char *ringbuf_name(struct bh_ringbuf *rb)
{
	return rb->n ? rb->rings[0]->name : "?";
}

static struct bh_ringbuf *ringbuf_check(lua_State *L, int idx, const char *op)
{
	struct bh_ringbuf *rb = ringbuf_checkraw(L, idx);

	if (rb->closed || rb->close_pending)
		luaL_error(L, "%s ringbuf '%s': ringbuf is closed", op, ringbuf_name(rb));
	return rb;
}

/* ------------------------------------------------------------------------ */
/* -- Releasing ----------------------------------------------------------- */

static uint64_t ring_lost(struct rb_ring *r, int ncpus);

static void ring_unmap(struct rb_ring *r)
{
	if (r->cons_page)
		munmap(r->cons_page, (size_t)getpagesize());
	if (r->prod_pages)
		munmap(r->prod_pages, r->prod_len);
	r->cons_page = r->prod_pages = NULL;
	r->sh.cons = NULL;
	r->sh.prod = NULL;
	r->sh.data = NULL;
}

/* Move the consumer position past a view record whose handler is done. */
static void ring_commit(struct rb_ring *r)
{
	if (r->sh.cons && !r->sh.in_view && r->sh.pending > *r->sh.cons)
		__atomic_store_n(r->sh.cons, r->sh.pending, __ATOMIC_RELEASE);
}

/* C only (also from __gc and while an error unwinds): never raises, never calls Lua. */
static void ringbuf_release(struct bh_ringbuf *rb)
{
	int i;

	for (i = 0; i < rb->n; i++) {
		struct rb_ring *r = rb->rings[i];

		r->sh.stop = 1;
		if (r->lrb) {
			ring_buffer__free(r->lrb);
			r->lrb = NULL;
		}
		free(r->sh.buf);
		r->sh.buf = NULL;
		r->sh.head = r->sh.tail = 0;
		r->cap = 0;
		if (r->sh.in_view) {
			/* the loop body may still read the record: keep the pages */
			if (r->sh.cons && r->sh.pending > *r->sh.cons)
				__atomic_store_n(r->sh.cons, r->sh.pending, __ATOMIC_RELEASE);
			rb->unmap_at_gc = 1;
		} else {
			ring_commit(r);
			ring_unmap(r);
		}
		if (r->fd >= 0)
			close(r->fd);
		if (r->lost_fd >= 0) {
			r->lost_final = ring_lost(r, rb->ncpus) - r->oom;
			close(r->lost_fd);
		}
		r->fd = r->lost_fd = -1;
	}
	if (rb->epfd >= 0)
		close(rb->epfd);
	rb->epfd = -1;
	rb->closed = 1;
	rb->close_pending = 0;
}

static int ringbuf_close(lua_State *L)
{
	struct bh_ringbuf *rb = ringbuf_checkraw(L, 1);
	int i;

	if (rb->polling) {
		/* from a handler: libbpf or ringview.lua is still walking the ring */
		rb->close_pending = 1;
		for (i = 0; i < rb->n; i++)
			rb->rings[i]->sh.stop = 1;
	} else if (!rb->closed) {
		ringbuf_release(rb);
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int ringbuf_gc(lua_State *L)
{
	struct bh_ringbuf *rb = lua_touserdata(L, 1);
	int i;

	if (!rb)
		return 0;
	if (!rb->closed)
		ringbuf_release(rb);
	for (i = 0; i < rb->n; i++) {
		ring_unmap(rb->rings[i]);
		free(rb->rings[i]);
	}
	free(rb->rings);
	rb->rings = NULL;
	rb->n = 0;
	return 0;
}

static int ringbuf_tostring(lua_State *L)
{
	struct bh_ringbuf *rb = ringbuf_checkraw(L, 1);

	if (rb->closed || rb->close_pending)
		lua_pushfstring(L, "ringbuf '%s' (closed)", ringbuf_name(rb));
	else if (rb->n > 1)
		lua_pushfstring(L, "ringbuf '%s' (+%d more, epoll fd %d)", ringbuf_name(rb),
				rb->n - 1, rb->epfd);
	else
		lua_pushfstring(L, "ringbuf '%s' (fd %d)", ringbuf_name(rb), rb->rings[0]->fd);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Copying records out (inside libbpf: no Lua here) -------------------- */

static int batch_reserve(struct rb_ring *r, size_t need)
{
	size_t cap = r->cap ? r->cap : RB_BATCH + 4096;
	void *p;

	while (cap < r->sh.tail + need)
		cap *= 2;
	if (cap > UINT32_MAX)
		return -1;
	if (cap == r->cap)
		return 0;
	p = realloc(r->sh.buf, cap);
	if (!p)
		return -1;
	r->sh.buf = p;
	r->cap = cap;
	return 0;
}

static int rb_sample(void *ctx, void *data, size_t len)
{
	struct rb_ring *r = ctx;
	size_t need = RB_HDR_SZ + ((len + 7) & ~(size_t)7);
	uint8_t *p;

	if (r->sh.tail + need > r->cap && batch_reserve(r, need)) {
		/* libbpf counts this record as consumed whatever we return */
		r->oom++;
		return r->sh.tail ? RB_FULL : 0;
	}
	p = r->sh.buf + r->sh.tail;
	*(uint32_t *)p = (uint32_t)len;
	*(uint32_t *)(p + 4) = 0;
	memcpy(p + RB_HDR_SZ, data, len);
	r->sh.tail += (uint32_t)need;
	return r->sh.tail >= RB_BATCH ? RB_FULL : 0;
}

static int ring_queued(struct rb_ring *r)
{
	return r->sh.head < r->sh.tail;
}

/* Copy what the ring holds into the (empty) batch, up to RB_BATCH bytes. */
static void ring_consume(lua_State *L, struct rb_ring *r)
{
	int ret;

	r->sh.head = r->sh.tail = 0;
	ret = ring_buffer__consume(r->lrb);
	if (ret < 0 && ret != RB_FULL)
		bh_fail(L, "consume", "ringbuf", r->name, -ret, NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* -- Handing records to Lua ---------------------------------------------- */

/* The per-ring table in the uservalue of the consumer at idx: pushes it. */
static void push_ringinfo(lua_State *L, int idx, int i)
{
	bh_getuv(L, idx);
	lua_rawgeti(L, -1, i + 1);
	lua_remove(L, -2);
}

/* Push the ringview function name, or nothing and return 0 without the Lua half. */
static int push_lib(lua_State *L, int idx, const char *fname)
{
	bh_getuv(L, idx);
	lua_getfield(L, -1, "lib");
	lua_remove(L, -2);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	lua_getfield(L, -1, fname);
	lua_remove(L, -2);
	return 1;
}

static __attribute__((noreturn)) void bad_size(lua_State *L, struct rb_ring *r, uint32_t len)
{
	luaL_error(L, "ringbuf '%s': a record of %d bytes does not match %s (%d bytes); "
		      "give no type for variable-size records",
		   r->name, (int)len, r->plan->cname ? r->plan->cname : "its type",
		   (int)r->plan->size);
	abort();
}

/* Push the record at the batch's head as a value, and move the head past it. */
static void pop_record(lua_State *L, struct rb_ring *r)
{
	const uint8_t *p = r->sh.buf + r->sh.head;
	uint32_t len = *(const uint32_t *)p;

	/* the head moves first: a record that fails to decode is not seen again */
	r->sh.head += RB_HDR_SZ + ((len + 7) & ~7u);
	r->records++;
	if (!r->plan) {
		lua_pushlstring(L, (const char *)p + RB_HDR_SZ, len);
	} else {
		struct bh_cctx c = { L, "decode", "ringbuf", r->name, "record", 0, { { 0 } } };

		if (len != r->plan->size)
			bad_size(L, r, len);
		bh_decode(&c, r->plan, p + RB_HDR_SZ);
	}
}

/* The C way: one lua_call per record. */
static long deliver_c(lua_State *L, struct rb_ring *r, int hidx, int *stop)
{
	long n = 0;
	int top = lua_gettop(L);

	lua_pushstring(L, r->name); /* top + 1 */
	while (ring_queued(r) && !r->sh.stop) {
		lua_pushvalue(L, hidx);
		pop_record(L, r);
		lua_pushvalue(L, top + 1);
		lua_call(L, 2, 1);
		n++;
		if (lua_isboolean(L, -1) && !lua_toboolean(L, -1))
			*stop = 1;
		lua_pop(L, 1);
		if (*stop || bh_interrupted)
			break;
	}
	lua_settop(L, top);
	return n;
}

/*
 * fill(ring, i, t) -> k: decode up to RB_FILL_MAX records from the head of
 * ring i's batch into t[1..k], leaving the head where it is (ringview.lua
 * moves it before each handler call). A record of the wrong size is only
 * raised about when it comes first, after its predecessors were handed over.
 */
static int ringbuf_fill(lua_State *L)
{
	struct bh_ringbuf *rb = ringbuf_checkraw(L, 1);
	int i = (int)lua_tointeger(L, 2) - 1, k = 0;
	struct rb_ring *r;
	uint32_t off;

	if (rb->closed || i < 0 || i >= rb->n || rb->rings[i]->sh.stop) {
		lua_pushinteger(L, 0);
		return 1;
	}
	r = rb->rings[i];
	off = r->sh.head;
	while (off < r->sh.tail && k < RB_FILL_MAX) {
		const uint8_t *p = r->sh.buf + off;
		uint32_t len = *(const uint32_t *)p;
		struct bh_cctx c = { L, "decode", "ringbuf", r->name, "record", 0, { { 0 } } };

		if (len != r->plan->size) {
			if (k)
				break;
			r->sh.head = off + RB_HDR_SZ + ((len + 7) & ~7u);
			bad_size(L, r, len);
		}
		bh_decode(&c, r->plan, p + RB_HDR_SZ);
		lua_rawseti(L, 3, ++k);
		off += RB_HDR_SZ + ((len + 7) & ~7u);
	}
	lua_pushinteger(L, k);
	return 1;
}

/* Hand over the batch of ring i (consumer at idx) to the handler at hidx. */
static long deliver(lua_State *L, int idx, struct bh_ringbuf *rb, int i, int hidx, int *stop)
{
	struct rb_ring *r = rb->rings[i];
	int top = lua_gettop(L);
	long n;
	int has_dec;

	push_ringinfo(L, idx, i);                /* top + 1 */
	lua_getfield(L, top + 1, "dec");
	has_dec = !lua_isnil(L, -1);
	lua_pop(L, 1);
	if (has_dec) {
		push_lib(L, idx, "decoded");
		lua_getfield(L, top + 1, "sh");
		lua_pushvalue(L, hidx);
		lua_pushstring(L, r->name);
		lua_getfield(L, top + 1, "ct");
		lua_getfield(L, top + 1, "dec");
		lua_pushinteger(L, r->plan->size);
		lua_pushstring(L, r->plan->cname);
		/* decoded(sh, fn, name, ct, dec, size, tname) */
		lua_call(L, 7, 2);
	} else if (!push_lib(L, idx, r->plan ? "typed" : "raw")) {
		lua_settop(L, top);
		return deliver_c(L, r, hidx, stop);
	} else {
		lua_getfield(L, top + 1, "sh"); /* the rb_shared cdata */
		lua_pushvalue(L, hidx);
		lua_pushstring(L, r->name);
		if (r->plan) {
			lua_getfield(L, top + 1, "fill");
			lua_getfield(L, top + 1, "t");
			lua_pushvalue(L, idx);
			lua_pushinteger(L, i + 1);
			/* typed(sh, fn, name, fill, t, ring, i) */
			lua_call(L, 7, 2);
		} else {
			/* raw(sh, fn, name) */
			lua_call(L, 3, 2);
		}
	}
	n = (long)lua_tonumber(L, -2);
	if (lua_toboolean(L, -1))
		*stop = 1;
	r->records += (uint64_t)n;
	lua_settop(L, top);
	return n;
}

/* View: let ringview.lua walk the ring itself, at most max records. */
static long deliver_view(lua_State *L, int idx, struct bh_ringbuf *rb, int i, int hidx, long max,
			 int *stop)
{
	struct rb_ring *r = rb->rings[i];
	int top = lua_gettop(L);
	long n;

	r->sh.in_view = 0;
	ring_commit(r);
	push_ringinfo(L, idx, i);                /* top + 1 */
	push_lib(L, idx, "view");
	lua_getfield(L, top + 1, "sh");
	lua_getfield(L, top + 1, "ct");
	lua_pushvalue(L, hidx);
	lua_pushstring(L, r->name);
	lua_pushinteger(L, (lua_Integer)max);
	lua_pushstring(L, r->plan->cname);
	/* view(sh, ct, fn, name, max, tname) */
	lua_call(L, 6, 2);
	n = (long)lua_tonumber(L, -2);
	if (lua_toboolean(L, -1))
		*stop = 1;
	r->records += (uint64_t)n;
	lua_settop(L, top);
	return n;
}

/* Everything ring i holds now, at most about budget records. */
static long ring_pump(lua_State *L, int idx, struct bh_ringbuf *rb, int i, int hidx, long budget,
		      int *stop)
{
	struct rb_ring *r = rb->rings[i];
	long n = 0;

	if (rb->view) {
		while (n < budget && !*stop && !bh_interrupted && !r->sh.stop) {
			long k = deliver_view(L, idx, rb, i, hidx,
					      budget - n < RB_VIEW_MAX ? budget - n : RB_VIEW_MAX,
					      stop);

			n += k;
			if (!k)
				break;
		}
		return n;
	}
	for (;;) {
		if (*stop || bh_interrupted || r->sh.stop)
			break;
		if (!ring_queued(r)) {
			/* queued records always go; fresh ones only within the budget */
			if (n >= budget)
				break;
			ring_consume(L, r);
			if (!ring_queued(r))
				break;
		}
		n += deliver(L, idx, rb, i, hidx, stop);
	}
	return n;
}

/* ------------------------------------------------------------------------ */
/* -- Source protocol (bpf.poll, bpf.run, ring:poll) ---------------------- */

static int rs_fd(struct bh_source *s)
{
	return ((struct bh_ringbuf *)s)->epfd;
}

static int rs_queued(struct bh_source *s)
{
	struct bh_ringbuf *rb = (struct bh_ringbuf *)s;
	int i;

	for (i = 0; i < rb->n; i++)
		if (!rb->view && ring_queued(rb->rings[i]))
			return 1;
	return 0;
}

static void rs_begin(lua_State *L, struct bh_source *s, const char *op)
{
	struct bh_ringbuf *rb = (struct bh_ringbuf *)s;
	int i;

	if (rb->closed || rb->close_pending)
		luaL_error(L, "%s: ringbuf '%s' is closed", op, ringbuf_name(rb));
	if (rb->polling)
		luaL_error(L, "%s: ringbuf '%s' is already being polled (a handler cannot poll "
			      "its own ring)",
			   op, ringbuf_name(rb));
	rb->polling = 1;
	for (i = 0; i < rb->n; i++) {
		struct rb_ring *r = rb->rings[i];

		if (r->obj)
			r->obj->busy++;
		r->sh.in_view = 0;
		ring_commit(r);
	}
}

static void rs_end(struct bh_source *s)
{
	struct bh_ringbuf *rb = (struct bh_ringbuf *)s;
	int i;

	for (i = 0; i < rb->n; i++) {
		struct rb_ring *r = rb->rings[i];

		/* a view handler that raised: its record is done with */
		ring_commit(r);
		if (r->obj)
			r->obj->busy--;
	}
	rb->polling = 0;
	if (rb->close_pending)
		ringbuf_release(rb);
}

static long rs_dispatch(lua_State *L, int idx, struct bh_source *s, int hidx, long budget,
			int *stop)
{
	struct bh_ringbuf *rb = (struct bh_ringbuf *)s;
	long n = 0;
	int k;

	for (k = 0; k < rb->n && !*stop && !bh_interrupted; k++) {
		int i = (rb->rr + k) % rb->n;

		n += ring_pump(L, idx, rb, i, hidx, budget - n > 0 ? budget - n : 0, stop);
		if (rb->close_pending)
			*stop = 1;
	}
	if (rb->n)
		rb->rr = (rb->rr + 1) % rb->n;
	return n;
}

static const struct bh_source_ops ringbuf_ops = {
	.fd = rs_fd,
	.queued = rs_queued,
	.begin = rs_begin,
	.end = rs_end,
	.dispatch = rs_dispatch,
};

/* ------------------------------------------------------------------------ */
/* -- Methods ------------------------------------------------------------- */

/* ring:poll(ms, fn) -> records handed over. */
static int ringbuf_poll(lua_State *L)
{
	int ms;

	ringbuf_check(L, 1, "poll");
	ms = bh_check_ms(L, 2, "poll");
	if (lua_gettop(L) < 3)
		luaL_error(L, "poll: a handler is needed: ring:poll(ms, function(rec, name) ... end)");
	lua_settop(L, 3);
	lua_pushinteger(L, (lua_Integer)bh_source_poll(L, 1, 3, ms, "poll"));
	return 1;
}

/*
 * Wait up to ms (-1: no limit) for any ring of rb: 1 when something may be
 * there, 0 once the time is up. Raises on SIGINT/SIGTERM.
 */
static int ringbuf_wait(lua_State *L, struct bh_ringbuf *rb, int ms)
{
	return bh_wait_readable(L, rb->epfd, ms, "records", "ringbuf", ringbuf_name(rb));
}

/* Iterator of ring:records(ms), copying: upvalues ring, ms. */
static int ringbuf_records_iter(lua_State *L)
{
	struct bh_ringbuf *rb = lua_touserdata(L, lua_upvalueindex(1));
	int ms = (int)lua_tointeger(L, lua_upvalueindex(2));
	int k;

	for (;;) {
		int any = 0;

		/* a ring closed in the loop body ends the loop */
		if (rb->closed || rb->close_pending)
			return 0;
		if (rb->polling)
			luaL_error(L, "records: ringbuf '%s' is being polled", ringbuf_name(rb));
		for (k = 0; k < rb->n; k++) {
			int i = (rb->rr + k) % rb->n;
			struct rb_ring *r = rb->rings[i];

			if (ring_queued(r)) {
				rb->rr = i;
				pop_record(L, r);
				lua_pushstring(L, r->name);
				return 2;
			}
		}
		for (k = 0; k < rb->n; k++) {
			ring_consume(L, rb->rings[k]);
			any |= ring_queued(rb->rings[k]);
		}
		if (!any && (!ms || !ringbuf_wait(L, rb, ms)))
			return 0;
	}
}

/* wait(ring, ms) for ringview.lua's records iterator: true when something may be there. */
static int ringbuf_view_wait(lua_State *L)
{
	struct bh_ringbuf *rb = ringbuf_checkraw(L, 1);
	int ms = (int)lua_tointeger(L, 2);

	if (rb->closed || rb->close_pending) {
		lua_pushboolean(L, 0);
		return 1;
	}
	if (rb->polling)
		luaL_error(L, "records: ringbuf '%s' is being polled", ringbuf_name(rb));
	lua_pushboolean(L, ms && ringbuf_wait(L, rb, ms));
	return 1;
}

/* ring:records(ms): for rec, name in ring:records(100) do ... end. */
static int ringbuf_records(lua_State *L)
{
	struct bh_ringbuf *rb = ringbuf_check(L, 1, "records");
	int ms = bh_check_ms(L, 2, "records"), i;

	if (rb->polling)
		luaL_error(L, "records: ringbuf '%s' is being polled", ringbuf_name(rb));
	if (!rb->view) {
		lua_pushvalue(L, 1);
		lua_pushinteger(L, ms);
		lua_pushcclosure(L, ringbuf_records_iter, 2);
		return 1;
	}
	/* a loop that ended with break held its last record until now */
	for (i = 0; i < rb->n; i++) {
		rb->rings[i]->sh.in_view = 0;
		ring_commit(rb->rings[i]);
	}
	/* records(ring, shs, cts, names, tnames, n, wait, ms) */
	push_lib(L, 1, "records");
	lua_pushvalue(L, 1);
	lua_createtable(L, rb->n, 0);
	lua_createtable(L, rb->n, 0);
	lua_createtable(L, rb->n, 0);
	lua_createtable(L, rb->n, 0);
	for (i = 0; i < rb->n; i++) {
		push_ringinfo(L, 1, i);
		lua_getfield(L, -1, "sh");
		lua_rawseti(L, -6, i + 1);
		lua_getfield(L, -1, "ct");
		lua_rawseti(L, -5, i + 1);
		lua_pop(L, 1);
		lua_pushstring(L, rb->rings[i]->name);
		lua_rawseti(L, -3, i + 1);
		lua_pushstring(L, rb->rings[i]->plan->cname);
		lua_rawseti(L, -2, i + 1);
	}
	lua_pushinteger(L, rb->n);
	lua_pushcfunction(L, ringbuf_view_wait);
	lua_pushinteger(L, ms);
	lua_call(L, 8, 1);
	return 1;
}

static uint64_t ring_lost(struct rb_ring *r, int ncpus)
{
	uint64_t sum = r->oom;
	uint32_t zero = 0;
	int i;

	if (r->lost_fd < 0)
		return sum + r->lost_final;
	if (r->lost_percpu) {
		uint64_t vals[ncpus > 0 ? ncpus : 1];

		if (!bpf_map_lookup_elem(r->lost_fd, &zero, vals))
			for (i = 0; i < ncpus; i++)
				sum += vals[i];
	} else {
		uint64_t v;

		if (!bpf_map_lookup_elem(r->lost_fd, &zero, &v))
			sum += v;
	}
	return sum;
}

/* ring:stats() -> {name = {records =, lost =, lost_map =}, ...} */
static int ringbuf_stats(lua_State *L)
{
	struct bh_ringbuf *rb = ringbuf_checkraw(L, 1);
	int i;

	lua_createtable(L, 0, rb->n);
	for (i = 0; i < rb->n; i++) {
		struct rb_ring *r = rb->rings[i];

		lua_createtable(L, 0, 3);
		lua_pushinteger(L, (lua_Integer)r->records);
		lua_setfield(L, -2, "records");
		lua_pushinteger(L, (lua_Integer)ring_lost(r, rb->ncpus));
		lua_setfield(L, -2, "lost");
		if (r->lost_name[0]) {
			lua_pushstring(L, r->lost_name);
			lua_setfield(L, -2, "lost_map");
		}
		lua_setfield(L, -2, r->name);
	}
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Creating ------------------------------------------------------------ */

static const char *const ringbuf_opts[] = { "type", "view", "lost", NULL };

struct ring_args {
	struct bh_map *m;
	int type_idx; /* 0: none */
	int lost_idx; /* 0: by the default name */
	int view;
};

/* Check the map at idx and the options at oidx (before any syscall). */
static void ring_args(lua_State *L, int idx, int oidx, const char *fn, struct ring_args *a)
{
	int t;

	memset(a, 0, sizeof(*a));
	a->m = bh_map_check(L, idx);
	if (a->m->type != BPF_MAP_TYPE_RINGBUF)
		luaL_error(L, "%s: map '%s' is a %s map, not a ringbuf", fn, a->m->name,
			   libbpf_bpf_map_type_str((enum bpf_map_type)a->m->type) ?
				   libbpf_bpf_map_type_str((enum bpf_map_type)a->m->type) :
				   "unknown");
	bh_opt_check(L, oidx, fn, ringbuf_opts);
	if (lua_type(L, oidx) != LUA_TTABLE)
		return;
	lua_getfield(L, oidx, "type");
	t = lua_type(L, -1);
	if (t != LUA_TNIL) {
		if (t != LUA_TSTRING && !bh_testud(L, -1, BH_TYPE_MT))
			luaL_error(L, "%s: option 'type' must be a Type or a type name, got %s", fn,
				   luaL_typename(L, -1));
		a->type_idx = lua_gettop(L);
	} else {
		lua_pop(L, 1);
	}
	lua_getfield(L, oidx, "view");
	if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
		luaL_error(L, "%s: option 'view' must be a boolean, got %s", fn,
			   luaL_typename(L, -1));
	a->view = lua_toboolean(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, oidx, "lost");
	t = lua_type(L, -1);
	if (t == LUA_TNIL) {
		lua_pop(L, 1);
	} else {
		if (t != LUA_TSTRING && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) &&
		    !(t == LUA_TUSERDATA))
			luaL_error(L, "%s: option 'lost' must be a map, a map name or false, got %s",
				   fn, luaL_typename(L, -1));
		if (t == LUA_TUSERDATA)
			bh_map_check(L, lua_gettop(L));
		a->lost_idx = lua_gettop(L);
	}
}

/* The drop counter map of ring r: check it and keep a dup of its fd. */
static void ring_set_lost(lua_State *L, struct rb_ring *r, int fd, uint32_t type, uint32_t ksz,
			  uint32_t vsz, const char *name, const char *fn)
{
	if ((type != BPF_MAP_TYPE_PERCPU_ARRAY && type != BPF_MAP_TYPE_ARRAY) || ksz != 4 ||
	    vsz != 8)
		luaL_error(L, "%s: drop counter map '%s' must be a (per-CPU) array of u64 "
			      "with u32 keys",
			   fn, name);
	r->lost_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (r->lost_fd < 0)
		bh_fail(L, fn, "map", name, errno, NULL, NULL);
	r->lost_percpu = type == BPF_MAP_TYPE_PERCPU_ARRAY;
	snprintf(r->lost_name, sizeof(r->lost_name), "%s", name);
}

static void ring_find_lost(lua_State *L, struct rb_ring *r, struct ring_args *a, const char *fn)
{
	const struct bpf_map *lm;
	const char *name;
	char defname[BPF_OBJ_NAME_LEN + 8];
	int fd;

	if (a->lost_idx && lua_type(L, a->lost_idx) == LUA_TBOOLEAN)
		return;
	if (a->lost_idx && lua_type(L, a->lost_idx) == LUA_TUSERDATA) {
		struct bh_map *lmap = bh_map_check(L, a->lost_idx);

		ring_set_lost(L, r, lmap->fd, lmap->type, lmap->key_size, lmap->value_size,
			      lmap->name, fn);
		return;
	}
	if (a->lost_idx) {
		name = lua_tostring(L, a->lost_idx);
	} else {
		snprintf(defname, sizeof(defname), "%s_lost", r->name);
		name = defname;
	}
	lm = a->m->parent && a->m->parent->obj ?
		     bpf_object__find_map_by_name(a->m->parent->obj, name) : NULL;
	fd = lm ? bpf_map__fd(lm) : -1;
	if (fd < 0) {
		if (a->lost_idx)
			luaL_error(L, "%s: no drop counter map '%s' beside ringbuf '%s'", fn, name,
				   r->name);
		return;
	}
	ring_set_lost(L, r, fd, bpf_map__type(lm), bpf_map__key_size(lm),
		      bpf_map__value_size(lm), bpf_map__name(lm), fn);
}

static void ring_map_view(lua_State *L, struct rb_ring *r, uint32_t max, const char *fn)
{
	size_t page = (size_t)getpagesize();

	if (max > RB_MAX_VIEW_RING)
		luaL_error(L, "%s: view: ringbuf '%s' is larger than 1 GiB", fn, r->name);
	if (r->plan->size > max / 2)
		luaL_error(L, "%s: view: records of %d bytes do not fit ringbuf '%s'", fn,
			   (int)r->plan->size, r->name);
	r->cons_page = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	if (r->cons_page == MAP_FAILED) {
		r->cons_page = NULL;
		bh_fail(L, fn, "ringbuf", r->name, errno, NULL, NULL);
	}
	r->prod_len = page + 2 * (size_t)max;
	r->prod_pages = mmap(NULL, r->prod_len, PROT_READ, MAP_SHARED, r->fd, (off_t)page);
	if (r->prod_pages == MAP_FAILED) {
		r->prod_pages = NULL;
		bh_fail(L, fn, "ringbuf", r->name, errno, NULL, NULL);
	}
	r->sh.cons = r->cons_page;
	r->sh.prod = r->prod_pages;
	r->sh.data = (const uint8_t *)r->prod_pages + page;
	r->sh.mask = max - 1;
	r->sh.pending = __atomic_load_n(r->sh.cons, __ATOMIC_ACQUIRE);
	r->sh.size = r->plan->size;
}

/* ring_add's undo: a ring whose adding failed half-way leaves nothing behind. */
struct ring_undo {
	struct bh_ringbuf *rb;
	struct rb_ring *r;
};

static void ring_undo(struct ring_undo *u)
{
	struct rb_ring *r = u->r;

	if (!r)
		return;
	if (r->lrb)
		ring_buffer__free(r->lrb);
	ring_unmap(r);
	if (r->fd >= 0)
		close(r->fd);
	if (r->lost_fd >= 0)
		close(r->lost_fd);
	free(r->sh.buf);
	u->rb->n--;
	free(r);
}

/*
 * Add the ring map at idx with options at oidx to the consumer at ud. The
 * ring is released again if anything fails before it is complete.
 */
static void ring_add(lua_State *L, struct bh_ringbuf *rb, int ud, int idx, int oidx, const char *fn)
{
	BH_SCOPE(struct ring_undo, undo, ring_undo);
	struct ring_args a;
	struct rb_ring *r, **rings;
	struct epoll_event ev;
	const struct btf *btf;
	int info, i;

	undo->rb = rb;
	ring_args(L, idx, oidx, fn, &a);
	if (rb->n && a.view != rb->view && lua_type(L, oidx) == LUA_TTABLE) {
		lua_getfield(L, oidx, "view");
		if (!lua_isnil(L, -1))
			luaL_error(L, "%s: every ring of a consumer is read the same way (view = %s)",
				   fn, rb->view ? "true" : "false");
		lua_pop(L, 1);
	}
	for (i = 0; i < rb->n; i++)
		if (rb->rings[i]->fd >= 0 && !strcmp(rb->rings[i]->name, a.m->name) &&
		    rb->rings[i]->obj == a.m->parent)
			luaL_error(L, "%s: ringbuf '%s' is already in this consumer", fn, a.m->name);

	/* the uservalue's entry: {map =, type =, lost =, sh =, ct =, fill =, t =} */
	lua_createtable(L, 0, 7);
	info = lua_gettop(L);
	lua_pushvalue(L, idx);
	lua_setfield(L, info, "map");
	if (a.lost_idx && lua_type(L, a.lost_idx) == LUA_TUSERDATA) {
		lua_pushvalue(L, a.lost_idx);
		lua_setfield(L, info, "lost");
	}

	rings = realloc(rb->rings, sizeof(*rings) * (size_t)(rb->n + 1));
	if (!rings)
		luaL_error(L, "%s: out of memory", fn);
	rb->rings = rings;
	r = calloc(1, sizeof(*r));
	if (!r)
		luaL_error(L, "%s: out of memory", fn);
	r->fd = r->lost_fd = -1;
	r->owner = rb;
	snprintf(r->name, sizeof(r->name), "%s", a.m->name);
	rb->rings[rb->n++] = r;
	undo->r = r;
	if (rb->n == 1)
		rb->view = a.view;

	if (a.type_idx) {
		struct bh_type *t;

		if (lua_type(L, a.type_idx) == LUA_TSTRING) {
			btf = a.m->parent && a.m->parent->obj ? bpf_object__btf(a.m->parent->obj)
							      : NULL;
			t = bh_type_from_spec(L, btf, lua_tostring(L, a.type_idx), fn);
		} else {
			t = bh_type_check(L, a.type_idx);
			lua_pushvalue(L, a.type_idx);
		}
		if (!t->root->size)
			luaL_error(L, "%s: type %s has no size", fn, t->root->cname);
		lua_setfield(L, info, "type");
		r->plan = t->root;
	}
	if (rb->view && !r->plan)
		luaL_error(L, "%s: view needs a type (the records' C type)", fn);

	r->obj = a.m->parent;
	r->fd = fcntl(a.m->fd, F_DUPFD_CLOEXEC, 3);
	if (r->fd < 0)
		bh_fail(L, fn, "ringbuf", r->name, errno, NULL, NULL);
	ring_find_lost(L, r, &a, fn);

	if (rb->view) {
		ring_map_view(L, r, a.m->max_entries, fn);
		push_lib(L, ud, "setup");
		lua_pushlightuserdata(L, &r->sh);
		lua_pushinteger(L, (lua_Integer)sizeof(r->sh));
		if (!bh_push_ffi_decl(L, r->plan))
			luaL_error(L, "ringbuf: view: arrays nest too deeply");
		lua_call(L, 3, 2); /* setup(shared, size, decl) -> sh, ct */
		lua_setfield(L, info, "ct");
		lua_setfield(L, info, "sh");
	} else {
		r->lrb = ring_buffer__new(r->fd, rb_sample, r, NULL);
		if (!r->lrb)
			bh_fail(L, fn, "ringbuf", r->name, errno, NULL, NULL);
		if (push_lib(L, ud, "shared")) {
			lua_pushlightuserdata(L, &r->sh);
			lua_pushinteger(L, (lua_Integer)sizeof(r->sh));
			lua_call(L, 2, 1);
			lua_setfield(L, info, "sh");
		}
		if (r->plan && push_lib(L, ud, "decoder")) {
			if (bh_push_ffi_decl(L, r->plan) && bh_push_lua_decoder(L, r->plan)) {
				lua_call(L, 2, 2); /* decoder(decl, src) -> ct, dec */
				lua_setfield(L, info, "dec");
				lua_setfield(L, info, "ct");
			} else {
				lua_settop(L, info);
			}
		}
		if (r->plan) {
			lua_pushcfunction(L, ringbuf_fill);
			lua_setfield(L, info, "fill");
			lua_createtable(L, RB_FILL_MAX, 0);
			lua_setfield(L, info, "t");
		}
	}
	ev.events = EPOLLIN;
	ev.data.u32 = (uint32_t)(rb->n - 1);
	if (epoll_ctl(rb->epfd, EPOLL_CTL_ADD, r->fd, &ev))
		bh_fail(L, fn, "ringbuf", r->name, errno, NULL, NULL);
	bh_getuv(L, ud);
	lua_pushvalue(L, info);
	lua_rawseti(L, -2, rb->n);
	undo->r = NULL; /* complete */
	lua_settop(L, info - 1);
}

/* bpf.ringbuf(map[, {type =, view =, lost =}]) */
static int l_ringbuf(lua_State *L)
{
	struct ring_args a;
	struct bh_ringbuf *rb;

	bh_map_check(L, 1);
	lua_settop(L, 2);
	ring_args(L, 1, 2, "ringbuf", &a); /* everything checked before anything exists */
	lua_settop(L, 2);
	rb = bh_newud(L, sizeof(*rb)); /* 3 */
	memset(rb, 0, sizeof(*rb));
	rb->src.ops = &ringbuf_ops;
	rb->epfd = -1;
	rb->ncpus = libbpf_num_possible_cpus();
	luaL_getmetatable(L, BH_RINGBUF_MT);
	lua_setmetatable(L, 3);
	lua_newtable(L);
	lua_getglobal(L, "require");
	lua_pushliteral(L, "bpfhost.ringview");
	if (!lua_pcall(L, 1, 1, 0) && lua_istable(L, -1)) {
		/* the FFI half: faster hand-over, and the view */
		lua_setfield(L, -2, "lib");
	} else if (a.view) {
		luaL_error(L, "ringbuf: view needs LuaJIT's FFI (%s)",
			   lua_isstring(L, -1) ? lua_tostring(L, -1) : "this Lua has none");
	} else {
		lua_pop(L, 1);
	}
	bh_setuv(L, 3);
	if (rb->ncpus <= 0)
		luaL_error(L, "ringbuf: cannot read the number of possible CPUs");
	rb->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (rb->epfd < 0)
		bh_fail(L, "ringbuf", "ringbuf", a.m->name, errno, NULL, NULL);
	ring_add(L, rb, 3, 1, 2, "ringbuf");
	lua_settop(L, 3);
	return 1;
}

/* ring:add(map[, opts]) -> ring */
static int ringbuf_add(lua_State *L)
{
	struct bh_ringbuf *rb = ringbuf_check(L, 1, "add");

	if (rb->polling)
		luaL_error(L, "add: ringbuf '%s' is being polled", ringbuf_name(rb));
	lua_settop(L, 3);
	ring_add(L, rb, 1, 2, 3, "add");
	lua_settop(L, 1);
	return 1;
}

/* ring.lost, ring.count, ring.name, ring.view, ring.fd; methods first. */
static int ringbuf_index(lua_State *L)
{
	struct bh_ringbuf *rb = ringbuf_checkraw(L, 1);
	const char *k = luaL_checkstring(L, 2);
	int i;

	lua_getmetatable(L, 1);
	lua_getfield(L, -1, "__methods");
	lua_getfield(L, -1, k);
	if (!lua_isnil(L, -1))
		return 1;
	lua_settop(L, 2);
	if (!strcmp(k, "name")) {
		lua_pushstring(L, ringbuf_name(rb));
	} else if (!strcmp(k, "view")) {
		lua_pushboolean(L, rb->view);
	} else if (!strcmp(k, "count") || !strcmp(k, "lost")) {
		uint64_t sum = 0;

		for (i = 0; i < rb->n; i++)
			sum += k[0] == 'c' ? rb->rings[i]->records : ring_lost(rb->rings[i], rb->ncpus);
		lua_pushinteger(L, (lua_Integer)sum);
	} else if (!strcmp(k, "fd")) {
		lua_pushinteger(L, rb->epfd);
	} else {
		lua_pushnil(L);
	}
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- User ring buffers --------------------------------------------------- */

static const char *const user_opts[] = { "type", NULL };
static const char *const submit_opts[] = { "wait", NULL };

static struct bh_user_ringbuf *user_check(lua_State *L, int idx, const char *op)
{
	struct bh_user_ringbuf *u = bh_checkud(L, idx, BH_USER_RINGBUF_MT);

	if (!u->urb)
		luaL_error(L, "%s user_ringbuf '%s': user_ringbuf is closed", op, u->name);
	return u;
}

static void user_release(struct bh_user_ringbuf *u)
{
	if (u->urb) {
		user_ring_buffer__free(u->urb);
		u->urb = NULL;
	}
	if (u->fd >= 0)
		close(u->fd);
	if (u->epfd >= 0)
		close(u->epfd);
	u->fd = u->epfd = -1;
	free(u->scratch);
	u->scratch = NULL;
	u->scratch_cap = 0;
}

static int user_close(lua_State *L)
{
	user_release(bh_checkud(L, 1, BH_USER_RINGBUF_MT));
	lua_pushboolean(L, 1);
	return 1;
}

static int user_gc(lua_State *L)
{
	struct bh_user_ringbuf *u = lua_touserdata(L, 1);

	if (u)
		user_release(u);
	return 0;
}

static int user_tostring(lua_State *L)
{
	struct bh_user_ringbuf *u = bh_checkud(L, 1, BH_USER_RINGBUF_MT);

	if (!u->urb)
		lua_pushfstring(L, "user_ringbuf '%s' (closed)", u->name);
	else
		lua_pushfstring(L, "user_ringbuf '%s' (fd %d)", u->name, u->fd);
	return 1;
}

/* bpf.user_ringbuf(map[, {type =}]) */
static int l_user_ringbuf(lua_State *L)
{
	struct bh_map *m = bh_map_check(L, 1);
	struct bh_user_ringbuf *u;
	struct epoll_event ev = { .events = EPOLLOUT };
	int tidx = 0;

	if (m->type != BPF_MAP_TYPE_USER_RINGBUF)
		luaL_error(L, "user_ringbuf: map '%s' is a %s map, not a user_ringbuf", m->name,
			   libbpf_bpf_map_type_str((enum bpf_map_type)m->type) ?
				   libbpf_bpf_map_type_str((enum bpf_map_type)m->type) :
				   "unknown");
	bh_opt_check(L, 2, "user_ringbuf", user_opts);
	lua_settop(L, 2);
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "type");
		if (!lua_isnil(L, -1)) {
			if (lua_type(L, -1) != LUA_TSTRING && !bh_testud(L, -1, BH_TYPE_MT))
				luaL_error(L, "user_ringbuf: option 'type' must be a Type or a "
					      "type name, got %s",
					   luaL_typename(L, -1));
			tidx = 3;
		}
	}
	u = bh_newud(L, sizeof(*u));
	memset(u, 0, sizeof(*u));
	u->fd = u->epfd = -1;
	u->max = m->max_entries;
	snprintf(u->name, sizeof(u->name), "%s", m->name);
	luaL_getmetatable(L, BH_USER_RINGBUF_MT);
	lua_setmetatable(L, -2);
	lua_createtable(L, 0, 2);
	lua_pushvalue(L, 1);
	lua_setfield(L, -2, "map");
	if (tidx) {
		struct bh_type *t;

		if (lua_type(L, tidx) == LUA_TSTRING) {
			const struct btf *btf = m->parent && m->parent->obj ?
							bpf_object__btf(m->parent->obj) : NULL;

			t = bh_type_from_spec(L, btf, lua_tostring(L, tidx), "user_ringbuf");
		} else {
			t = bh_type_check(L, tidx);
			lua_pushvalue(L, tidx);
		}
		u->plan = t->root;
		lua_setfield(L, -2, "type");
	}
	bh_setuv(L, -2);
	u->fd = fcntl(m->fd, F_DUPFD_CLOEXEC, 3);
	if (u->fd < 0)
		bh_fail(L, "user_ringbuf", "map", m->name, errno, NULL, NULL);
	u->urb = user_ring_buffer__new(u->fd, NULL);
	if (!u->urb)
		bh_fail(L, "user_ringbuf", "map", m->name, errno, NULL, NULL);
	u->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (u->epfd < 0 || epoll_ctl(u->epfd, EPOLL_CTL_ADD, u->fd, &ev))
		bh_fail(L, "user_ringbuf", "map", m->name, errno, NULL, NULL);
	return 1;
}

#define NO_WAIT (-2)

/* The wait option at idx: NO_WAIT, -1 for no limit (true), or milliseconds. */
static int submit_wait(lua_State *L, int idx)
{
	int ms = NO_WAIT;

	bh_opt_check(L, idx, "submit", submit_opts);
	if (!lua_istable(L, idx))
		return NO_WAIT;
	lua_getfield(L, idx, "wait");
	if (lua_isboolean(L, -1))
		ms = lua_toboolean(L, -1) ? -1 : NO_WAIT;
	else if (!lua_isnil(L, -1))
		ms = bh_check_ms(L, lua_gettop(L), "submit");
	lua_pop(L, 1);
	return ms;
}

static void *user_reserve_wait(lua_State *L, struct bh_user_ringbuf *u, uint32_t size, int wait_ms)
{
	struct bh_guard g __attribute__((cleanup(bh_guard_end))) = { .on = 0 };
	double end = bh_mono_now() + wait_ms / 1000.0;
	void *p;

	p = user_ring_buffer__reserve(u->urb, size);
	if (p || errno != ENOSPC || wait_ms == NO_WAIT)
		return p;
	bh_guard_begin(&g);
	for (;;) {
		struct epoll_event ev;
		int left = -1, r;

		if (wait_ms >= 0) {
			left = bh_ms_left(end);
			if (left <= 0) {
				errno = ENOSPC;
				return NULL;
			}
		}
		r = bh_epoll_wait(u->epfd, &ev, 1, left);
		/* the guard ends before raising: Lua 5.4 runs no cleanup */
		if (r == -1) {
			bh_guard_end(&g);
			bh_raise_interrupted(L, "submit");
		}
		p = user_ring_buffer__reserve(u->urb, size);
		if (p || errno != ENOSPC)
			return p;
		/* room, but not enough: the kernel wakes us on any drain; do not spin */
		if (r > 0 && bh_epoll_wait(-1, NULL, 0, 1) == -1) {
			bh_guard_end(&g);
			bh_raise_interrupted(L, "submit");
		}
	}
}

/* up:submit(value[, {wait = ms | true}]) -> true, or false when the ring is full. */
static int user_submit(lua_State *L)
{
	struct bh_user_ringbuf *u = user_check(L, 1, "submit");
	const void *src;
	size_t len;
	void *p;
	int wait_ms;

	luaL_checkany(L, 2);
	wait_ms = submit_wait(L, 3);
	if (lua_type(L, 2) == LUA_TSTRING) {
		src = lua_tolstring(L, 2, &len);
		if (!len)
			luaL_error(L, "submit user_ringbuf '%s': an empty record", u->name);
	} else {
		struct bh_cctx c = { L, "submit", "user_ringbuf", u->name, "record", 0, { { 0 } } };

		if (!u->plan)
			luaL_error(L, "submit user_ringbuf '%s': record must be a string of bytes "
				      "(or give the user_ringbuf a type), got %s",
				   u->name, luaL_typename(L, 2));
		len = u->plan->size;
		if (len > u->scratch_cap) {
			unsigned char *s = realloc(u->scratch, len);

			if (!s)
				luaL_error(L, "submit user_ringbuf '%s': out of memory", u->name);
			u->scratch = s;
			u->scratch_cap = len;
		}
		bh_encode(&c, u->plan, 2, u->scratch);
		src = u->scratch;
	}
	/* a record and its 8-byte header, rounded to 8, must fit the ring */
	if (len > u->max || ((len + 7) & ~(size_t)7) + 8 > u->max)
		luaL_error(L, "submit user_ringbuf '%s': a record of %d bytes does not fit "
			      "(the ring holds %s bytes)",
			   u->name, (int)len, bh_numstr(L, u->max));
	/* encoded before reserving: nothing can raise with a reservation open */
	p = user_reserve_wait(L, u, (uint32_t)len, wait_ms);
	if (!p) {
		if (errno == ENOSPC) {
			lua_pushboolean(L, 0);
			return 1;
		}
		bh_fail(L, "submit", "user_ringbuf", u->name, errno, NULL, NULL);
	}
	memcpy(p, src, len);
	user_ring_buffer__submit(u->urb, p);
	lua_pushboolean(L, 1);
	return 1;
}

static int user_index(lua_State *L)
{
	struct bh_user_ringbuf *u = bh_checkud(L, 1, BH_USER_RINGBUF_MT);
	const char *k = luaL_checkstring(L, 2);

	lua_getmetatable(L, 1);
	lua_getfield(L, -1, "__methods");
	lua_getfield(L, -1, k);
	if (!lua_isnil(L, -1))
		return 1;
	lua_settop(L, 2);
	if (!strcmp(k, "name"))
		lua_pushstring(L, u->name);
	else if (!strcmp(k, "fd"))
		lua_pushinteger(L, u->fd);
	else
		lua_pushnil(L);
	return 1;
}

/* ------------------------------------------------------------------------ */

static const luaL_Reg ringbuf_meta[] = {
	{ "__gc", ringbuf_gc },
	{ "__tostring", ringbuf_tostring },
	{ "__index", ringbuf_index },
#if LUA_VERSION_NUM >= 504
	{ "__close", ringbuf_close },
#endif
	{ NULL, NULL },
};

static const luaL_Reg ringbuf_methods[] = {
	{ "poll", ringbuf_poll },
	{ "records", ringbuf_records },
	{ "add", ringbuf_add },
	{ "stats", ringbuf_stats },
	{ "close", ringbuf_close },
	{ NULL, NULL },
};

static const luaL_Reg user_meta[] = {
	{ "__gc", user_gc },
	{ "__tostring", user_tostring },
	{ "__index", user_index },
#if LUA_VERSION_NUM >= 504
	{ "__close", user_close },
#endif
	{ NULL, NULL },
};

static const luaL_Reg user_methods[] = {
	{ "submit", user_submit },
	{ "close", user_close },
	{ NULL, NULL },
};

static const luaL_Reg ringbuf_funcs[] = {
	{ "ringbuf", l_ringbuf },
	{ "user_ringbuf", l_user_ringbuf },
	{ NULL, NULL },
};

void bh_ringbuf_init(lua_State *L)
{
	bh_newmetatable(L, BH_RINGBUF_MT, ringbuf_meta, NULL);
	lua_newtable(L);
	bh_setfuncs(L, ringbuf_methods, 0);
	lua_setfield(L, -2, "__methods");
	lua_pushinteger(L, (lua_Integer)sizeof(struct rb_shared));
	lua_setfield(L, -2, "__shared_size");
	lua_pop(L, 1);
	bh_newmetatable(L, BH_USER_RINGBUF_MT, user_meta, NULL);
	lua_newtable(L);
	bh_setfuncs(L, user_methods, 0);
	lua_setfield(L, -2, "__methods");
	lua_pop(L, 1);
	bh_setfuncs(L, ringbuf_funcs, 0);
}
