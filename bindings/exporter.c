/*
 * exporter.c: bpfhost.exporter, a Prometheus endpoint. libmicrohttpd does
 * the HTTP; it runs without a thread of its own, driven from our loop
 * through its epoll fd (MHD_USE_EPOLL, MHD_run, MHD_get_timeout).
 *
 * No Lua runs inside an MHD callback. A GET /metrics is suspended in the
 * access handler; after MHD_run returns, the exporter renders once for every
 * suspended request (concurrent scrapes share one rendering), gives each its
 * response and resumes it, and MHD_run sends them. A render error is raised
 * to whoever called serve, after the waiting clients got a 500.
 *
 * The metric definitions and the rendering are Lua (bindings/lua/exporter.lua);
 * this file also holds the label decoders that need C: inet addresses,
 * interface names, errno and syscall names, ksyms, cgroup paths, and label
 * escaping.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <dlfcn.h>
#include <microhttpd.h>

#include "bh.h"
#include "syscall_names.h" /* generated from <asm/unistd.h>: bh_syscall_names[] */

/* ------------------------------------------------------------------------ */
/* -- Payloads ------------------------------------------------------------ */

/* One rendering, shared by the responses made from it; freed with the last. */
struct body {
	size_t refs;
	size_t len;
	char data[];
};

enum { REQ_NEW, REQ_WAIT, REQ_READY, REQ_DONE };

/* A /metrics request, from the access handler's first call to MHD's completion callback. */
struct req {
	int state;
	unsigned status;
	struct MHD_Connection *conn;
	struct MHD_Response *resp; /* REQ_READY: what the handler queues */
	struct req *next;          /* REQ_WAIT: the exporter's pending list */
};

struct bh_exporter {
	struct MHD_Daemon *d; /* NULL once closed */
	int epfd;             /* MHD's epoll fd (MHD owns it) */
	int busy;             /* > 0 while the Lua render runs */
	int close_later;      /* close() called from the render: done when serve returns */
	struct req *pending;  /* suspended GET /metrics, waiting for a render */
	struct body *cached;  /* last rendering, reused for `cache` seconds */
	double cached_at, cache;
	double scrapes;       /* /metrics responses given */
	double last_render;   /* seconds the last render took, from start to end */
	double slice;         /* seconds a render may run before it gives the loop back */
	double max_slice;     /* the longest the loop was held by one slice of a render */
	int rendering;        /* a render is under way in the thread uv.render_co */
	double render_started;
	char addr[80];        /* "127.0.0.1:9435", the port as bound */
	char host[48];
	int port;
};

/*
 * libmicrohttpd is opened with dlopen at the first bpf.exporter(), not
 * linked: it brings GnuTLS along, and loading that costs every bpfhost
 * start-up about 3 ms that only an exporter needs.
 */
static struct {
	int loaded;
	struct MHD_Daemon *(*start_daemon)(unsigned int flags, uint16_t port,
					   MHD_AcceptPolicyCallback apc, void *apc_cls,
					   MHD_AccessHandlerCallback dh, void *dh_cls, ...);
	void (*stop_daemon)(struct MHD_Daemon *d);
	enum MHD_Result (*run)(struct MHD_Daemon *d);
	enum MHD_Result (*get_timeout)(struct MHD_Daemon *d, MHD_UNSIGNED_LONG_LONG *t);
	const union MHD_DaemonInfo *(*get_daemon_info)(struct MHD_Daemon *d,
						       enum MHD_DaemonInfoType type, ...);
	void (*suspend_connection)(struct MHD_Connection *c);
	void (*resume_connection)(struct MHD_Connection *c);
	enum MHD_Result (*queue_response)(struct MHD_Connection *c, unsigned int status,
					  struct MHD_Response *r);
	struct MHD_Response *(*create_response_from_buffer)(size_t size, void *buf,
							    enum MHD_ResponseMemoryMode mode);
	struct MHD_Response *(*create_response_from_buffer_with_free_callback_cls)(
		size_t size, const void *buf, MHD_ContentReaderFreeCallback crfc,
		void *crfc_cls);
	enum MHD_Result (*add_response_header)(struct MHD_Response *r, const char *h,
					       const char *v);
	void (*destroy_response)(struct MHD_Response *r);
} mhd;

/* NULL, or why libmicrohttpd cannot be used. */
static const char *mhd_load(void)
{
	static const char *const sonames[] = { "libmicrohttpd.so.12", "libmicrohttpd.so", NULL };
	void *h = NULL;
	int i;

	if (mhd.loaded)
		return NULL;
	for (i = 0; !h && sonames[i]; i++)
		h = dlopen(sonames[i], RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return "libmicrohttpd is not installed (Debian: libmicrohttpd12)";
#define SYM(f)                                                   \
	do {                                                     \
		*(void **)&mhd.f = dlsym(h, "MHD_" #f);          \
		if (!mhd.f)                                      \
			return "libmicrohttpd lacks MHD_" #f;    \
	} while (0)
	SYM(start_daemon);
	SYM(stop_daemon);
	SYM(run);
	SYM(get_timeout);
	SYM(get_daemon_info);
	SYM(suspend_connection);
	SYM(resume_connection);
	SYM(queue_response);
	SYM(create_response_from_buffer);
	SYM(create_response_from_buffer_with_free_callback_cls);
	SYM(add_response_header);
	SYM(destroy_response);
#undef SYM
	mhd.loaded = 1;
	return NULL;
}

/* Marks a connection whose response was queued on the handler's first call. */
static char req_answered;

/* ------------------------------------------------------------------------ */
/* -- Responses ----------------------------------------------------------- */

static struct body *body_new(const char *s, size_t len)
{
	struct body *b = malloc(sizeof(*b) + len + 1);

	if (!b)
		return NULL;
	b->refs = 1;
	b->len = len;
	memcpy(b->data, s, len);
	b->data[len] = '\0';
	return b;
}

static void body_unref(void *p)
{
	struct body *b = p;

	if (b && !--b->refs)
		free(b);
}

#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CT_TEXT    "text/plain; charset=utf-8"
#define CT_HTML    "text/html; charset=utf-8"

/* A response over b (which it references until MHD is done with it), or NULL. */
static struct MHD_Response *resp_from_body(struct body *b, const char *ctype)
{
	struct MHD_Response *r;

	r = mhd.create_response_from_buffer_with_free_callback_cls(b->len, b->data, body_unref, b);
	if (!r)
		return NULL;
	b->refs++;
	mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	return r;
}

static enum MHD_Result respond_static(struct MHD_Connection *conn, unsigned status,
				      const char *text, const char *ctype, int allow)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = mhd.create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
	if (!r)
		return MHD_NO;
	mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	if (allow)
		mhd.add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = mhd.queue_response(conn, status, r);
	mhd.destroy_response(r);
	return ret;
}

static const char index_page[] =
	"<!DOCTYPE html>\n<html><head><title>bpfhost exporter</title></head>\n"
	"<body><h1>bpfhost exporter</h1>\n"
	"<p>Metrics from BPF maps, in the Prometheus text format: "
	"<a href=\"/metrics\">/metrics</a></p>\n</body></html>\n";

/* ------------------------------------------------------------------------ */
/* -- MHD callbacks (no Lua here) ----------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct bh_exporter *ex = cls;
	struct req *r = *con_cls;
	int get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
	enum MHD_Result ret;

	(void)version;
	(void)upload;
	if (!r) {
		/* headers only so far: everything but GET /metrics is answered now */
		if (strcmp(url, "/metrics")) {
			*con_cls = &req_answered;
			if (strcmp(url, "/"))
				return respond_static(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n",
						      CT_TEXT, 0);
			if (!get)
				return respond_static(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
						      "method not allowed\n", CT_TEXT, 1);
			return respond_static(conn, MHD_HTTP_OK, index_page, CT_HTML, 0);
		}
		if (!get) {
			*con_cls = &req_answered;
			return respond_static(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
					      "method not allowed\n", CT_TEXT, 1);
		}
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		r->conn = conn;
		*con_cls = r;
		return MHD_YES;
	}
	if (*upload_size) {
		*upload_size = 0; /* a body on a GET: ignored */
		return MHD_YES;
	}
	if ((void *)r == (void *)&req_answered)
		return MHD_YES;
	switch (r->state) {
	case REQ_NEW:
		r->state = REQ_WAIT;
		r->next = ex->pending;
		ex->pending = r;
		mhd.suspend_connection(conn);
		return MHD_YES;
	case REQ_READY:
		ret = mhd.queue_response(conn, r->status, r->resp);
		mhd.destroy_response(r->resp);
		r->resp = NULL;
		r->state = REQ_DONE;
		return ret;
	}
	return MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct bh_exporter *ex = cls;
	struct req *r = *con_cls, **pp;

	(void)conn;
	(void)toe;
	if (!r || (void *)r == (void *)&req_answered)
		return;
	if (r->state == REQ_WAIT) {
		for (pp = &ex->pending; *pp; pp = &(*pp)->next) {
			if (*pp == r) {
				*pp = r->next;
				break;
			}
		}
	}
	if (r->resp)
		mhd.destroy_response(r->resp);
	free(r);
	*con_cls = NULL;
}

/* ------------------------------------------------------------------------ */
/* -- Rendering and resuming ---------------------------------------------- */

/*
 * Give every pending request a response made from b (status, ctype), or a
 * bare 503 when that fails, and resume it. MHD_run sends them.
 */
static void answer_pending(struct bh_exporter *ex, struct body *b, unsigned status,
			   const char *ctype)
{
	struct req *r;

	while ((r = ex->pending)) {
		ex->pending = r->next;
		r->next = NULL;
		r->resp = b ? resp_from_body(b, ctype) : NULL;
		r->status = status;
		if (!r->resp) {
			r->resp = mhd.create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
			r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
		}
		if (status == MHD_HTTP_OK)
			ex->scrapes++;
		r->state = REQ_READY;
		mhd.resume_connection(r->conn);
	}
}

/* The render thread of the exporter at exidx (uv.render_co), pushed. */
static lua_State *render_thread(lua_State *L, int exidx)
{
	lua_State *co;

	bh_getuv(L, exidx);
	lua_getfield(L, -1, "render_co");
	co = lua_tothread(L, -1);
	lua_remove(L, -2);
	return co;
}

static void set_render_thread(lua_State *L, int exidx, int idx)
{
	if (idx < 0)
		idx = lua_gettop(L) + idx + 1;
	bh_getuv(L, exidx);
	lua_pushvalue(L, idx);
	lua_setfield(L, -2, "render_co");
	lua_pop(L, 1);
}

/* uv.render_co = nil: the thread goes to the collector. The stack is left as it is. */
static void clear_render_thread(lua_State *L, int exidx)
{
	bh_getuv(L, exidx);
	lua_pushnil(L);
	lua_setfield(L, -2, "render_co");
	lua_pop(L, 1);
}

/*
 * Render for the pending requests, one slice at a time. The exporter is at
 * exidx. The render (ex:_render_paced, Lua) runs in a thread of its own and
 * yields once it has run for ex->slice seconds, so that a scrape of a large
 * map holds the loop for one slice, not for the whole render: the loop
 * serves its other sources and comes back (ex:timeout() is 0 meanwhile).
 * Returns 0 (done, or a slice done), or -1 with the render's error at the
 * top of the stack (the clients got a 500).
 */
static int render_pending(lua_State *L, struct bh_exporter *ex, int exidx)
{
	struct body *b;
	double t0 = bh_mono_now(), took;
	int top = lua_gettop(L), base, status, nargs = 0, traced = 0;
	lua_State *co;

	if (!ex->rendering) {
		if (ex->cache > 0 && ex->cached && t0 - ex->cached_at < ex->cache) {
			answer_pending(ex, ex->cached, MHD_HTTP_OK, CT_METRICS);
			return 0;
		}
		co = lua_newthread(L);
		set_render_thread(L, exidx, -1);
		lua_getfield(L, exidx, "_render_paced");
		lua_xmove(L, co, 1);
		nargs = 2; /* ex, slice */
		ex->rendering = 1;
		ex->render_started = t0;
	} else {
		co = render_thread(L, exidx);
		if (!co) {
			lua_settop(L, top);
			ex->rendering = 0;
			return 0;
		}
	}
	/*
	 * Resumed through coroutine.resume (ex:_resume), not lua_resume: with
	 * LuaJIT 2.1-beta3's JIT on, a render that raised an error left through
	 * lua_resume crashed the VM now and then (the exporter spec: most runs of
	 * that test alone). Its results go back onto co, where the code below
	 * reads them: what render returned, or (false) the error it died of.
	 */
	base = lua_gettop(L);
	lua_getfield(L, exidx, "_resume");
	lua_pushthread(co);
	lua_xmove(co, L, 1);
	if (nargs) {
		lua_pushvalue(L, exidx);
		lua_pushnumber(L, ex->slice);
	}
	ex->busy++;
	if (lua_pcall(L, 1 + nargs, LUA_MULTRET, 0)) {
		lua_xmove(L, co, 1); /* resume itself failed: its message */
		status = -1;
	} else if (lua_status(co) == LUA_YIELD) {
		status = LUA_YIELD;
	} else {
		int n = lua_gettop(L) - base;

		status = lua_toboolean(L, base + 1) ? 0 : -1;
		lua_xmove(L, co, n - 1);
	}
	ex->busy--;
	took = bh_mono_now() - t0;
	if (took > ex->max_slice)
		ex->max_slice = took;
	if (status == LUA_YIELD) {
		lua_settop(co, 0);
		lua_settop(L, top);
		return 0;
	}
	/*
	 * uv.render_co keeps co (and the strings on its stack: msg below) alive
	 * until the render's result is read: cleared at the end, not before, or a
	 * collection while the traceback or the body is made frees the thread.
	 */
	ex->rendering = 0;
	lua_settop(L, top);
	/* the render's results: true and the text, or false and the error with its traceback */
	if (status == 0 && !lua_toboolean(co, 1)) {
		traced = 1;
		status = -1;
	} else if (status == 0 && lua_type(co, -1) != LUA_TSTRING) {
		lua_pushfstring(co, "exporter: render gave a %s, not a string", luaL_typename(co, -1));
		status = -1;
	}
	if (status != 0) {
		const char *msg = lua_tostring(co, -1);
		const char *nl;
		char text[512];

		if (!msg && luaL_callmeta(co, -1, "__tostring"))
			msg = lua_tostring(co, -1);
		if (!msg)
			msg = "(error object)";
		nl = strchr(msg, '\n');
		snprintf(text, sizeof(text), "render failed: %.*s\n",
			 nl ? (int)(nl - msg) : (int)strlen(msg), msg);
		b = body_new(text, strlen(text));
		answer_pending(ex, b, MHD_HTTP_INTERNAL_SERVER_ERROR, CT_TEXT);
		body_unref(b);
		/* the error with the render's own traceback, for whoever serves */
		if (traced)
			lua_pushstring(L, msg);
		else
			luaL_traceback(L, co, msg, 0);
		lua_settop(co, 0);
		clear_render_thread(L, exidx);
		return -1;
	}
	{
		size_t len;
		const char *s = lua_tolstring(co, -1, &len);

		b = body_new(s, len);
		answer_pending(ex, b, MHD_HTTP_OK, CT_METRICS);
		if (b && ex->cache > 0) {
			body_unref(ex->cached);
			ex->cached = b;
			ex->cached_at = ex->render_started;
		} else {
			body_unref(b);
		}
	}
	lua_settop(co, 0);
	clear_render_thread(L, exidx);
	ex->last_render = bh_mono_now() - ex->render_started;
	return 0;
}

/*
 * One round: let MHD do its work, then render for what it suspended. A few
 * rounds at most, so that a flood of scrapes cannot keep the loop here.
 * Returns 0, or -1 with an error at the top of the stack.
 */
static int exporter_step(lua_State *L, struct bh_exporter *ex, int exidx)
{
	int round;

	mhd.run(ex->d);
	for (round = 0; ex->pending && round < 4; round++) {
		if (render_pending(L, ex, exidx)) {
			mhd.run(ex->d);
			return -1;
		}
		mhd.run(ex->d);
		if (ex->rendering)
			break; /* one slice per step: the loop has other work */
	}
	return 0;
}

/* Milliseconds until MHD wants to run again (pending renders: now), or -1 for no limit. */
static long long exporter_timeout(struct bh_exporter *ex)
{
	MHD_UNSIGNED_LONG_LONG t;

	if (ex->pending || ex->rendering)
		return 0;
	if (mhd.get_timeout(ex->d, &t) == MHD_YES)
		return t > (MHD_UNSIGNED_LONG_LONG)INT32_MAX ? INT32_MAX : (long long)t;
	return -1;
}

/* ------------------------------------------------------------------------ */
/* -- Lifetime ------------------------------------------------------------ */

static void exporter_stop(struct bh_exporter *ex)
{
	struct MHD_Daemon *d = ex->d;

	if (!d)
		return;
	/* MHD must not be stopped with suspended connections: answer them first */
	if (ex->pending) {
		static const char gone[] = "exporter closed\n";
		struct body *b = body_new(gone, sizeof(gone) - 1);

		answer_pending(ex, b, MHD_HTTP_SERVICE_UNAVAILABLE, CT_TEXT);
		body_unref(b);
		mhd.run(d);
	}
	ex->d = NULL;
	ex->epfd = -1;
	ex->rendering = 0; /* a render in progress is abandoned with its thread */
	mhd.stop_daemon(d); /* closes the listening socket too */
	body_unref(ex->cached);
	ex->cached = NULL;
}

static struct bh_exporter *exporter_checkraw(lua_State *L, int idx)
{
	return bh_checkud(L, idx, BH_EXPORTER_MT);
}

static struct bh_exporter *exporter_check(lua_State *L, int idx, const char *op)
{
	struct bh_exporter *ex = exporter_checkraw(L, idx);

	if (!ex->d || ex->close_later)
		luaL_error(L, "%s exporter: exporter is closed", op);
	return ex;
}

static int exporter_close(lua_State *L)
{
	struct bh_exporter *ex = exporter_checkraw(L, 1);

	if (ex->busy) {
		/* from its own render: MHD is between rounds; serve closes it on return */
		ex->close_later = 1;
	} else {
		exporter_stop(ex);
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int exporter_tostring(lua_State *L)
{
	struct bh_exporter *ex = exporter_checkraw(L, 1);

	if (ex->d)
		lua_pushfstring(L, BH_EXPORTER_MT ": http://%s/metrics", ex->addr);
	else
		lua_pushliteral(L, BH_EXPORTER_MT ": (closed)");
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Signals during serve ------------------------------------------------ */

/*
 * As loop.c's waits: SIGINT/SIGTERM get our handler and stay blocked but
 * inside ppoll, so a signal between the flag check and the wait is not lost.
 * (Replaced by the loop's own sources once bpf.run has them.)
 */
struct sigguard {
	struct sigaction oint, oterm;
	sigset_t omask, waitmask;
};

static void on_signal(int sig)
{
	bh_interrupted = sig;
}

static void guard_begin(struct sigguard *g)
{
	struct sigaction sa;
	sigset_t block;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &g->omask);
	sigaction(SIGINT, NULL, &g->oint);
	sigaction(SIGTERM, NULL, &g->oterm);
	if (g->oint.sa_handler != SIG_IGN)
		sigaction(SIGINT, &sa, NULL);
	if (g->oterm.sa_handler != SIG_IGN)
		sigaction(SIGTERM, &sa, NULL);
	g->waitmask = g->omask;
	sigdelset(&g->waitmask, SIGINT);
	sigdelset(&g->waitmask, SIGTERM);
}

static void guard_end(struct sigguard *g)
{
	sigprocmask(SIG_SETMASK, &g->omask, NULL);
	sigaction(SIGINT, &g->oint, NULL);
	sigaction(SIGTERM, &g->oterm, NULL);
}

/* ------------------------------------------------------------------------ */
/* -- Methods ------------------------------------------------------------- */

/*
 * ex:serve([ms]) -> scrapes answered. Serves for up to ms milliseconds
 * (default 0: what is ready now, without waiting: what bpf.run calls when
 * ex:fd() is readable or ex:timeout() has passed). SIGINT/SIGTERM end a
 * wait with an EINTR error object; a render error is raised after the
 * clients got a 500.
 */
static int exporter_serve(lua_State *L)
{
	struct bh_exporter *ex = exporter_check(L, 1, "serve");
	lua_Number ms = 0;
	double end, before = ex->scrapes;
	struct sigguard g;
	int failed = 0;

	if (!lua_isnoneornil(L, 2)) {
		if (lua_type(L, 2) != LUA_TNUMBER)
			luaL_error(L, "serve exporter: ms must be a number of milliseconds, got %s",
				   luaL_typename(L, 2));
		ms = lua_tonumber(L, 2);
		if (ms != ms || ms < 0 || isinf(ms))
			luaL_error(L, "serve exporter: ms must be a finite number >= 0");
	}
	if (ex->busy)
		luaL_error(L, "serve exporter: called from its own render");
	lua_settop(L, 1);
	if (ms == 0) {
		/* what is ready now, as an outer loop's source: no wait, no signal handling */
		if (exporter_step(L, ex, 1))
			failed = 1;
		goto out;
	}
	end = bh_mono_now() + ms / 1000.0;
	guard_begin(&g);
	for (;;) {
		struct pollfd pfd = { .fd = ex->epfd, .events = POLLIN };
		struct timespec ts;
		long long t, left;

		if (exporter_step(L, ex, 1)) {
			failed = 1;
			break;
		}
		if (ex->close_later || bh_interrupted)
			break;
		left = (long long)ceil((end - bh_mono_now()) * 1000.0);
		if (left <= 0)
			break;
		t = exporter_timeout(ex);
		if (t < 0 || t > left)
			t = left;
		ts.tv_sec = (time_t)(t / 1000);
		ts.tv_nsec = (long)(t % 1000) * 1000000L;
		ppoll(&pfd, 1, &ts, &g.waitmask);
	}
	guard_end(&g);
out:
	if (ex->close_later) {
		ex->close_later = 0;
		exporter_stop(ex);
	}
	if (failed)
		return lua_error(L);
	if (ms > 0 && bh_interrupted) {
		char reason[48];

		snprintf(reason, sizeof(reason), "interrupted by %s",
			 bh_interrupted == SIGTERM ? "SIGTERM" : "SIGINT");
		bh_fail_msg(L, "serve exporter", NULL, NULL, EINTR, reason, NULL, NULL);
	}
	lua_pushinteger(L, (lua_Integer)(ex->scrapes - before));
	return 1;
}

/* ex:fd() -> the fd to wait on (readable when there is work for ex:serve(0)) */
static int exporter_fd(lua_State *L)
{
	struct bh_exporter *ex = exporter_check(L, 1, "fd");

	lua_pushinteger(L, ex->epfd);
	return 1;
}

/* ex:timeout() -> ms until ex:serve(0) must run again, or nil for none */
static int exporter_timeout_l(lua_State *L)
{
	struct bh_exporter *ex = exporter_check(L, 1, "timeout");
	long long t = exporter_timeout(ex);

	if (t < 0)
		lua_pushnil(L);
	else
		lua_pushinteger(L, (lua_Integer)t);
	return 1;
}

/* ex:address() -> "127.0.0.1:9435", host, port */
static int exporter_address(lua_State *L)
{
	struct bh_exporter *ex = exporter_check(L, 1, "address");

	lua_pushstring(L, ex->addr);
	lua_pushstring(L, ex->host);
	lua_pushinteger(L, ex->port);
	return 3;
}

/* ex:stats() -> {scrapes =, connections =, render_seconds =} */
static int exporter_stats(lua_State *L)
{
	struct bh_exporter *ex = exporter_check(L, 1, "stats");
	const union MHD_DaemonInfo *di;

	lua_createtable(L, 0, 3);
	lua_pushinteger(L, (lua_Integer)ex->scrapes);
	lua_setfield(L, -2, "scrapes");
	lua_pushnumber(L, ex->last_render);
	lua_setfield(L, -2, "render_seconds");
	lua_pushnumber(L, ex->max_slice);
	lua_setfield(L, -2, "max_slice_seconds");
	lua_pushboolean(L, ex->rendering);
	lua_setfield(L, -2, "rendering");
	di = mhd.get_daemon_info(ex->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	lua_pushinteger(L, di ? (lua_Integer)di->num_connections : 0);
	lua_setfield(L, -2, "connections");
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- bpf.exporter -------------------------------------------------------- */

static const char *const exporter_opts[] = { "listen",	     "connection_limit", "per_ip_limit",
					     "timeout",	     "memory_limit",	 "cache",
					     "slice",	     NULL };

/* An integer option lo..hi (def when absent). */
static lua_Number opt_num(lua_State *L, int idx, const char *k, lua_Number def, lua_Number lo,
			  lua_Number hi, int integral)
{
	lua_Number v = def;

	lua_getfield(L, idx, k);
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TNUMBER)
			luaL_error(L, "exporter: %s must be a number, got %s", k,
				   luaL_typename(L, -1));
		v = lua_tonumber(L, -1);
		if (v != v || v < lo || v > hi || (integral && v != floor(v)))
			luaL_error(L, "exporter: %s must be %s %s..%s", k,
				   integral ? "an integer" : "a number", bh_numstr(L, lo),
				   bh_numstr(L, hi));
	}
	lua_pop(L, 1);
	return v;
}

/*
 * Parse "127.0.0.1:9435", "[::1]:9435", "localhost:9435" or "0.0.0.0:9435"
 * into ss. Numeric hosts only: no DNS in a constructor.
 */
static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *sl, char *host,
			size_t hostsz)
{
	const char *colon, *hs, *he;
	char *endp;
	unsigned long port;
	char h[64];

	if (*s == '[') {
		hs = s + 1;
		he = strchr(hs, ']');
		if (!he || he[1] != ':')
			return -1;
		colon = he + 1;
	} else {
		hs = s;
		colon = strrchr(s, ':');
		if (!colon)
			return -1;
		he = colon;
	}
	if ((size_t)(he - hs) >= sizeof(h) || !colon[1])
		return -1;
	memcpy(h, hs, (size_t)(he - hs));
	h[he - hs] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &endp, 10);
	if (*endp || errno || port > 65535 || colon[1] < '0' || colon[1] > '9')
		return -1;
	if (!strcmp(h, "localhost"))
		strcpy(h, "127.0.0.1");
	memset(ss, 0, sizeof(*ss));
	if (*s != '[' && inet_pton(AF_INET, h, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;

		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		*sl = sizeof(*in);
	} else if (*s == '[' &&
		   inet_pton(AF_INET6, h, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*sl = sizeof(*in6);
	} else {
		return -1;
	}
	snprintf(host, hostsz, "%s", h);
	return 0;
}

/* bpf.exporter{listen =, connection_limit =, per_ip_limit =, timeout =, memory_limit =, cache =, slice =} */
static int l_exporter(lua_State *L)
{
	const char *listen_s = "127.0.0.1:9435";
	struct sockaddr_storage ss;
	socklen_t sl;
	unsigned conn_limit, ip_limit, timeout;
	size_t mem_limit;
	double cache, slice;
	struct bh_exporter *ex;
	const union MHD_DaemonInfo *di;
	char host[48], where[80];
	const char *why;
	int fd, one = 1, err, v6;

	lua_settop(L, 1);
	/*
	 * The metric definitions (ex:counter, ...) are Lua, loaded on the first
	 * bpf.exporter() rather than when the module opens: start-up stays light.
	 */
	lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
	lua_getfield(L, -1, "bpfhost.exporter");
	if (lua_isnil(L, -1)) {
		lua_getglobal(L, "require");
		lua_pushliteral(L, "bpfhost.exporter");
		lua_call(L, 1, 0);
	}
	lua_settop(L, 1);
	bh_opt_check(L, 1, "exporter", exporter_opts);
	if (lua_isnil(L, 1)) {
		lua_newtable(L);
		lua_replace(L, 1);
	}
	lua_getfield(L, 1, "listen");
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "exporter: listen must be a string \"address:port\", got %s",
				   luaL_typename(L, -1));
		listen_s = lua_tostring(L, -1);
	}
	if (parse_listen(listen_s, &ss, &sl, host, sizeof(host)))
		luaL_error(L,
			   "exporter: listen: '%s' is not a numeric address and port "
			   "(\"127.0.0.1:9435\", \"[::1]:9435\", \"0.0.0.0:9435\")",
			   listen_s);
	conn_limit = (unsigned)opt_num(L, 1, "connection_limit", 64, 1, 65536, 1);
	ip_limit = (unsigned)opt_num(L, 1, "per_ip_limit", 16, 1, 65536, 1);
	timeout = (unsigned)opt_num(L, 1, "timeout", 10, 1, 86400, 1);
	mem_limit = (size_t)opt_num(L, 1, "memory_limit", 32768, 4096, 16 << 20, 1);
	cache = opt_num(L, 1, "cache", 0, 0, 86400, 0);
	slice = opt_num(L, 1, "slice", 0.005, 0.0001, 60, 0);
	v6 = ss.ss_family == AF_INET6;
	why = mhd_load();
	if (why)
		bh_fail_msg(L, "exporter", NULL, NULL, ENOENT, why, NULL, NULL);

	ex = bh_newud(L, sizeof(*ex));
	memset(ex, 0, sizeof(*ex));
	ex->epfd = -1;
	ex->cache = cache;
	ex->slice = slice;
	luaL_getmetatable(L, BH_EXPORTER_MT);
	lua_setmetatable(L, -2);
	lua_newtable(L);
	bh_setuv(L, -2);

	/* our own socket, so that a refused bind says why (MHD would only give NULL) */
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		bh_fail(L, "exporter", "listen", listen_s, errno, NULL, NULL);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (v6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 128)) {
		err = errno;
		close(fd);
		bh_fail(L, "exporter", "listen", listen_s, err,
			err == EADDRINUSE ? "another process listens there; pick another port "
					    "(\":0\" takes a free one, see ex:address())" :
					    NULL,
			NULL);
	}
	sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	ex->port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
			      ((struct sockaddr_in *)&ss)->sin_port);
	snprintf(ex->host, sizeof(ex->host), "%s", host);
	snprintf(where, sizeof(where), v6 ? "[%s]:%d" : "%s:%d", host, ex->port);
	snprintf(ex->addr, sizeof(ex->addr), "%s", where);

	ex->d = mhd.start_daemon(
		MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | (v6 ? MHD_USE_IPv6 : 0), 0, NULL, NULL,
		on_request, ex, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, conn_limit,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, ip_limit, MHD_OPTION_CONNECTION_TIMEOUT, timeout,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem_limit, MHD_OPTION_NOTIFY_COMPLETED,
		on_completed, ex, MHD_OPTION_END);
	if (!ex->d) {
		close(fd);
		bh_fail_msg(L, "exporter", "listen", ex->addr, EINVAL, "libmicrohttpd did not start",
			    NULL, NULL);
	}
	di = mhd.get_daemon_info(ex->d, MHD_DAEMON_INFO_EPOLL_FD);
	if (!di || di->epoll_fd < 0) {
		exporter_stop(ex);
		bh_fail_msg(L, "exporter", "listen", ex->addr, ENOTSUP,
			    "libmicrohttpd has no epoll fd", NULL, NULL);
	}
	ex->epfd = di->epoll_fd;
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Label decoders ------------------------------------------------------ */

/* An unsigned 64-bit value at idx: a number, or a decimal/0x string (how the Lua side passes cdata). */
static uint64_t check_u64(lua_State *L, int idx)
{
	if (lua_type(L, idx) == LUA_TNUMBER) {
		lua_Number d = lua_tonumber(L, idx);

		return d < 0 ? (uint64_t)(int64_t)d : (uint64_t)d;
	}
	return strtoull(luaL_checkstring(L, idx), NULL, 0);
}

/* syscall_name(nr) -> "openat", or nil */
static int d_syscall(lua_State *L)
{
	lua_Number nr = luaL_checknumber(L, 1);
	size_t n = sizeof(bh_syscall_names) / sizeof(bh_syscall_names[0]);

	if (nr >= 0 && nr < (lua_Number)n && nr == floor(nr) && bh_syscall_names[(size_t)nr])
		lua_pushstring(L, bh_syscall_names[(size_t)nr]);
	else
		lua_pushnil(L);
	return 1;
}

/* errno_name(n) -> "ENOENT" (for n or -n), or nil */
static int d_errno(lua_State *L)
{
	lua_Number n = luaL_checknumber(L, 1);
	const char *s;

	if (n != floor(n) || n > 4095 || n < -4095) {
		lua_pushnil(L);
		return 1;
	}
	s = bh_errname((int)n);
	if (strcmp(s, "EUNKNOWN"))
		lua_pushstring(L, s);
	else
		lua_pushnil(L);
	return 1;
}

/* ifname(index) -> "eth0", or nil */
static int d_ifname(lua_State *L)
{
	lua_Number n = luaL_checknumber(L, 1);
	char name[IF_NAMESIZE];

	if (n > 0 && n <= 0x7fffffff && n == floor(n) && if_indextoname((unsigned)n, name))
		lua_pushstring(L, name);
	else
		lua_pushnil(L);
	return 1;
}

/*
 * inet(v) -> "10.0.0.1" | "2001:db8::1": v is a u32 as it sits in memory (a
 * __be32 read by the codec), a byte string of 4 or 16 bytes, or a Lua array
 * of 4 u32 or 16 u8 (in6_addr's members). nil for anything else.
 */
static int d_inet(lua_State *L)
{
	unsigned char a[16];
	char out[INET6_ADDRSTRLEN];
	int fam = 0;

	switch (lua_type(L, 1)) {
	case LUA_TNUMBER: {
		uint32_t v = (uint32_t)check_u64(L, 1);

		memcpy(a, &v, 4); /* the bytes as the program stored them */
		fam = AF_INET;
		break;
	}
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(L, 1, &n);

		if (n == 4 || n == 16) {
			memcpy(a, s, n);
			fam = n == 4 ? AF_INET : AF_INET6;
		}
		break;
	}
	case LUA_TTABLE: {
		size_t n = bh_rawlen(L, 1), i;

		if (n != 4 && n != 16)
			break;
		for (i = 0; i < n; i++) {
			lua_Number d;

			lua_rawgeti(L, 1, (int)i + 1);
			d = lua_tonumber(L, -1);
			lua_pop(L, 1);
			if (n == 4) {
				uint32_t w = (uint32_t)d;

				memcpy(a + 4 * i, &w, 4);
			} else {
				a[i] = (unsigned char)d;
			}
		}
		fam = AF_INET6;
		break;
	}
	}
	if (!fam || !inet_ntop(fam, a, out, sizeof(out))) {
		lua_pushnil(L);
		return 1;
	}
	lua_pushstring(L, out);
	return 1;
}

/* -- cgroup paths: cgroup v2 id = inode of the cgroup's directory -- */

/*
 * nftw's callback cannot push to Lua (an allocation error would longjmp out
 * of nftw and leak its directory fds): it collects into a C list first.
 */
struct cg_ent {
	uint64_t ino;
	size_t off; /* into walk.text */
};

static struct {
	struct cg_ent *ents;
	size_t n, cap;
	char *text;
	size_t tlen, tcap;
	size_t rootlen;
	int failed;
} walk;

static int walk_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	const char *rel = path[walk.rootlen] ? path + walk.rootlen : "/";
	size_t len = strlen(rel) + 1;

	(void)ftw;
	if (flag != FTW_D)
		return 0;
	if (walk.n == walk.cap) {
		size_t nc = walk.cap ? walk.cap * 2 : 256;
		struct cg_ent *ne = realloc(walk.ents, nc * sizeof(*ne));

		if (!ne)
			return walk.failed = 1;
		walk.ents = ne;
		walk.cap = nc;
	}
	if (walk.tlen + len > walk.tcap) {
		size_t nc = walk.tcap ? walk.tcap * 2 : 16384;
		char *nt;

		while (nc < walk.tlen + len)
			nc *= 2;
		nt = realloc(walk.text, nc);
		if (!nt)
			return walk.failed = 1;
		walk.text = nt;
		walk.tcap = nc;
	}
	memcpy(walk.text + walk.tlen, rel, len);
	walk.ents[walk.n].ino = (uint64_t)st->st_ino;
	walk.ents[walk.n].off = walk.tlen;
	walk.n++;
	walk.tlen += len;
	return 0;
}

/* The cgroup2 mount point (from /proc/self/mountinfo), or NULL. */
static int cgroup2_root(char *out, size_t outsz)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int found = 0;

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		char mnt[1024], fstype[64];
		const char *sep = strstr(line, " - ");

		if (!sep || sscanf(sep + 3, "%63s", fstype) != 1 || strcmp(fstype, "cgroup2"))
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %1023s", mnt) == 1) {
			snprintf(out, outsz, "%s", mnt);
			found = 1;
		}
	}
	fclose(f);
	return found;
}

/* Protected: push the table {[ino] = path} of the list given as light userdata. */
static int cg_push(lua_State *L)
{
	const struct cg_ent *ents = lua_touserdata(L, 1);
	const char *text = lua_touserdata(L, 2);
	size_t i, n = (size_t)lua_tonumber(L, 3);

	lua_createtable(L, 0, (int)n);
	for (i = 0; i < n; i++) {
		lua_pushinteger(L, (lua_Integer)ents[i].ino);
		lua_pushstring(L, text + ents[i].off);
		lua_rawset(L, -3);
	}
	return 1;
}

/* cgroups() -> {[id] = "/system.slice/x.service"}, root; nil when cgroup2 is not mounted */
static int d_cgroups(lua_State *L)
{
	char root[1024], *text;
	struct cg_ent *ents;
	int err;

	if (!cgroup2_root(root, sizeof(root))) {
		lua_pushnil(L);
		return 1;
	}
	memset(&walk, 0, sizeof(walk));
	walk.rootlen = strlen(root);
	nftw(root, walk_one, 16, FTW_PHYS | FTW_MOUNT);
	if (walk.failed) {
		free(walk.ents);
		free(walk.text);
		bh_fail(L, "exporter cgroup", NULL, NULL, ENOMEM, NULL, NULL);
	}
	/* pushing can raise: do it protected, so the lists are freed in any case */
	ents = walk.ents;
	text = walk.text;
	lua_pushcfunction(L, cg_push);
	lua_pushlightuserdata(L, ents);
	lua_pushlightuserdata(L, text);
	lua_pushinteger(L, (lua_Integer)walk.n);
	memset(&walk, 0, sizeof(walk));
	err = lua_pcall(L, 3, 1, 0);
	free(ents);
	free(text);
	if (err)
		return lua_error(L);
	lua_pushstring(L, root);
	return 2;
}

/* -- ksyms from /proc/kallsyms -- */

struct ksyms {
	size_t n;
	uint64_t *addr;
	char **name; /* into text */
	char *text;
};

static int ksyms_gc(lua_State *L)
{
	struct ksyms *k = luaL_checkudata(L, 1, "bpfhost.ksyms");

	free(k->addr);
	free(k->name);
	free(k->text);
	memset(k, 0, sizeof(*k));
	return 0;
}

struct ksym_ent {
	uint64_t addr;
	char *name;
};

static int ksym_cmp(const void *a, const void *b)
{
	const struct ksym_ent *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* kallsyms() -> a ksyms table (userdata); raises when /proc/kallsyms hides addresses */
static int d_kallsyms(lua_State *L)
{
	struct ksyms *k = lua_newuserdata(L, sizeof(*k));
	struct ksym_ent *ents = NULL;
	size_t cap = 0, n = 0, tlen = 0, tcap = 0, i;
	FILE *f;
	char line[512];

	memset(k, 0, sizeof(*k));
	luaL_getmetatable(L, "bpfhost.ksyms");
	lua_setmetatable(L, -2);
	f = fopen("/proc/kallsyms", "re");
	if (!f)
		bh_fail(L, "exporter ksym", "file", "/proc/kallsyms", errno, NULL, NULL);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long a;
		char type, name[256];
		size_t nl;

		if (sscanf(line, "%llx %c %255s", &a, &type, name) != 3 || !a)
			continue;
		if (type != 't' && type != 'T' && type != 'w' && type != 'W')
			continue; /* code only: what an ip or a function address points into */
		nl = strlen(name) + 1;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 65536;
			struct ksym_ent *ne = realloc(ents, nc * sizeof(*ents));

			if (!ne)
				goto nomem;
			ents = ne;
			cap = nc;
		}
		if (tlen + nl > tcap) {
			/* names are offsets into text until it stops moving */
			size_t ntc = tcap ? tcap * 2 : 1 << 20;
			char *nt = realloc(k->text, ntc);

			if (!nt)
				goto nomem;
			k->text = nt;
			tcap = ntc;
		}
		memcpy(k->text + tlen, name, nl);
		ents[n].addr = a;
		ents[n].name = (char *)(uintptr_t)tlen;
		n++;
		tlen += nl;
	}
	fclose(f);
	if (!n) {
		free(ents);
		bh_fail_msg(L, "exporter ksym", "file", "/proc/kallsyms", EPERM,
			    "addresses are hidden (kptr_restrict)", "run as root", NULL);
	}
	qsort(ents, n, sizeof(*ents), ksym_cmp);
	k->addr = malloc(n * sizeof(*k->addr));
	k->name = malloc(n * sizeof(*k->name));
	if (!k->addr || !k->name) {
		free(ents);
		bh_fail(L, "exporter ksym", NULL, NULL, ENOMEM, NULL, NULL);
	}
	for (i = 0; i < n; i++) {
		k->addr[i] = ents[i].addr;
		k->name[i] = k->text + (uintptr_t)ents[i].name;
	}
	k->n = n;
	free(ents);
	return 1;
nomem:
	free(ents);
	fclose(f);
	return bh_fail(L, "exporter ksym", NULL, NULL, ENOMEM, NULL, NULL);
}

/* ksym(ksyms, addr) -> "vfs_read" or "vfs_read+0x1a"; nil below the first symbol */
static int d_ksym(lua_State *L)
{
	struct ksyms *k = luaL_checkudata(L, 1, "bpfhost.ksyms");
	uint64_t a = check_u64(L, 2);
	size_t lo = 0, hi = k->n;

	if (!k->n || a < k->addr[0]) {
		lua_pushnil(L);
		return 1;
	}
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (k->addr[mid] <= a)
			lo = mid;
		else
			hi = mid;
	}
	if (a == k->addr[lo]) {
		lua_pushstring(L, k->name[lo]);
	} else {
		char off[24];

		snprintf(off, sizeof(off), "%llx", (unsigned long long)(a - k->addr[lo]));
		lua_pushfstring(L, "%s+0x%s", k->name[lo], off);
	}
	return 1;
}

/* -- Label escaping -- */

/* Length of the valid UTF-8 sequence at s[i] (n bytes in all), or 0. */
static size_t utf8_len(const unsigned char *s, size_t i, size_t n)
{
	unsigned char c = s[i];
	size_t len = 0, j;

	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	if (!len || i + len > n)
		return 0;
	for (j = 1; j < len; j++)
		if ((s[i + j] & 0xc0) != 0x80)
			return 0;
	/* overlongs, surrogates and beyond U+10FFFF */
	if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f) ||
	    (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f))
		return 0;
	return len;
}

/*
 * escape(s) -> s as a label value: \ " and newline escaped; bytes that are
 * not UTF-8 become U+FFFD (Prometheus refuses a scrape with invalid UTF-8).
 * s itself when nothing changes, which is the common case: no allocation.
 */
static int d_escape(lua_State *L)
{
	size_t n, i = 0, len;
	const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
	luaL_Buffer b;

	while (i < n) {
		unsigned char c = s[i];

		if (c == '\\' || c == '"' || c == '\n')
			break;
		if (c < 0x80) {
			i++;
		} else {
			len = utf8_len(s, i, n);
			if (!len)
				break;
			i += len;
		}
	}
	if (i == n) {
		lua_settop(L, 1);
		return 1;
	}
	luaL_buffinit(L, &b);
	luaL_addlstring(&b, (const char *)s, i);
	while (i < n) {
		unsigned char c = s[i];

		if (c < 0x80) {
			if (c == '\\')
				luaL_addstring(&b, "\\\\");
			else if (c == '"')
				luaL_addstring(&b, "\\\"");
			else if (c == '\n')
				luaL_addstring(&b, "\\n");
			else
				luaL_addchar(&b, (char)c);
			i++;
		} else if ((len = utf8_len(s, i, n))) {
			luaL_addlstring(&b, (const char *)s + i, len);
			i += len;
		} else {
			luaL_addstring(&b, "\xef\xbf\xbd");
			i++;
		}
	}
	luaL_pushresult(&b);
	return 1;
}

/* state(v) -> true (an open exporter), false (closed), nil (not an exporter) */
static int d_state(lua_State *L)
{
	struct bh_exporter *ex = bh_testud(L, 1, BH_EXPORTER_MT);

	if (ex)
		lua_pushboolean(L, ex->d && !ex->close_later);
	else
		lua_pushnil(L);
	return 1;
}

/* is_map(v) -> true when v is a map handle */
static int d_is_map(lua_State *L)
{
	lua_pushboolean(L, bh_map_testud(L, 1) != NULL);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Init ---------------------------------------------------------------- */

static const luaL_Reg exporter_meta[] = {
	{ "__gc", exporter_close },
	{ "__close", exporter_close },
	{ "__tostring", exporter_tostring },
	{ NULL, NULL },
};

static const luaL_Reg exporter_methods[] = {
	{ "serve", exporter_serve },	 { "fd", exporter_fd },
	{ "timeout", exporter_timeout_l }, { "address", exporter_address },
	{ "stats", exporter_stats },	 { "close", exporter_close },
	{ NULL, NULL },
};

static const luaL_Reg decoders[] = {
	{ "syscall", d_syscall },   { "errno", d_errno },	  { "ifname", d_ifname },
	{ "inet", d_inet },	    { "cgroups", d_cgroups },	  { "kallsyms", d_kallsyms },
	{ "ksym", d_ksym },	    { "escape", d_escape },	  { "is_map", d_is_map },
	{ "state", d_state },
	{ NULL, NULL },
};

/*
 * The module table is at -1. bpf.exporter is C; bpfhost.exporter (Lua) adds
 * the metric methods to the same __index table, taking it and the decoders
 * from bpf._exporter, which it removes.
 */
void bh_exporter_init(lua_State *L)
{
	luaL_newmetatable(L, "bpfhost.ksyms");
	lua_pushcfunction(L, ksyms_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);

	bh_newmetatable(L, BH_EXPORTER_MT, exporter_meta, exporter_methods);
	lua_createtable(L, 0, 2);
	lua_getfield(L, -2, "__index");
	lua_setfield(L, -2, "methods");
	lua_newtable(L);
	bh_setfuncs(L, decoders, 0);
	lua_setfield(L, -2, "decoders");
	lua_setfield(L, -3, "_exporter");
	lua_pop(L, 1);

	lua_pushcfunction(L, l_exporter);
	lua_setfield(L, -2, "exporter");
}
