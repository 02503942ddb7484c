/*
 * loop.c: waiting (bpf.sleep, bpf.poll, bpf.run and every buffer's poll),
 * signals, time, and on-demand mounts.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "bh.h"

volatile sig_atomic_t bh_interrupted;
lua_Hook bh_interrupt_hook;

/* ------------------------------------------------------------------------ */
/* -- Mounts -------------------------------------------------------------- */

#define BPF_FS_MAGIC_ 0xcafe4a11

int bh_ensure_tracefs(void)
{
	if (!access("/sys/kernel/tracing/events", F_OK) ||
	    !access("/sys/kernel/debug/tracing/events", F_OK))
		return 0;
	mkdir("/sys/kernel/tracing", 0755);
	return mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL) ? -1 : 0;
}

int bh_ensure_bpffs(void)
{
	struct statfs st;

	if (!statfs("/sys/fs/bpf", &st) && (unsigned long)st.f_type == BPF_FS_MAGIC_)
		return 0;
	mkdir("/sys/fs/bpf", 0755);
	return mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") ? -1 : 0;
}


/* ------------------------------------------------------------------------ */
/* -- Signals ------------------------------------------------------------- */

/*
 * A guard spans a whole wait, bpf.poll or bpf.run, handlers included: our
 * SIGINT/SIGTERM handler only sets bh_interrupted (no Lua hook), so a signal
 * that lands in a handler, compiled or not, ends the loop once the handler
 * returns, and bpf.run can return "interrupted" instead of an error. The
 * previous handlers come back in bh_guard_end, which the callers run from a
 * cleanup attribute: loop.c, ringbuf.c and perfbuf.c are built with
 * -fexceptions so that a Lua error unwinding through them (LuaJIT unwinds
 * with the C ABI's unwinder) still restores the handlers, the busy counts
 * and the deferred closes. Lua 5.4 longjmps past C frames: waits that run
 * Lua keep their state in a BH_SCOPE (bh.h), and the others end the guard
 * before they raise.
 *
 * The signals are blocked only from the flag check into epoll_pwait/ppoll,
 * which unblock them atomically: a signal cannot slip in between.
 */
static void on_signal(int sig)
{
	if (bh_interrupted) {
		/* a second one, with the first not handled yet: the default action */
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	bh_interrupted = sig;
}

void bh_guard_begin(struct bh_guard *g)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, NULL, &g->oint);
	sigaction(SIGTERM, NULL, &g->oterm);
	/* a signal the parent told us to ignore stays ignored */
	if (g->oint.sa_handler != SIG_IGN)
		sigaction(SIGINT, &sa, NULL);
	if (g->oterm.sa_handler != SIG_IGN)
		sigaction(SIGTERM, &sa, NULL);
	g->on = 1;
}

void bh_guard_end(struct bh_guard *g)
{
	if (!g->on)
		return;
	g->on = 0;
	sigaction(SIGINT, &g->oint, NULL);
	sigaction(SIGTERM, &g->oterm, NULL);
}

static void guard_cleanup(struct bh_guard *g)
{
	bh_guard_end(g);
}

/* The wait that saw the signal handles it: clear the flag and the host's hook. */
void bh_interrupt_consume(lua_State *L)
{
	bh_interrupted = 0;
	if (bh_interrupt_hook && lua_gethook(L) == bh_interrupt_hook)
		lua_sethook(L, NULL, 0, 0);
}

static const char *signame(int sig)
{
	return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "signal";
}

/* Raise the "interrupted" error object; the flag stays set for the host. */
void bh_raise_interrupted(lua_State *L, const char *op)
{
	char reason[48];

	snprintf(reason, sizeof(reason), "interrupted by %s", signame(bh_interrupted));
	bh_fail_msg(L, op, NULL, NULL, EINTR, reason, NULL, NULL);
}

/*
 * Wait up to timeout_ms (< 0: no limit) for epfd (or, with epfd < 0, only
 * for the time to pass). Returns the number of events (> 0), 0 when the time
 * ran out or another signal woke us, -1 on SIGINT/SIGTERM (bh_interrupted is
 * set), -2 on a failure (errno set).
 */
int bh_epoll_wait(int epfd, struct epoll_event *ev, int maxev, int timeout_ms)
{
	sigset_t block, old, waitmask;
	int n, err;

	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &old);
	if (bh_interrupted) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		return -1;
	}
	waitmask = old;
	sigdelset(&waitmask, SIGINT);
	sigdelset(&waitmask, SIGTERM);
	if (epfd >= 0) {
		n = epoll_pwait(epfd, ev, maxev, timeout_ms, &waitmask);
	} else {
		struct timespec ts, *tsp = NULL;

		if (timeout_ms >= 0) {
			ts.tv_sec = timeout_ms / 1000;
			ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000;
			tsp = &ts;
		}
		n = ppoll(NULL, 0, tsp, &waitmask);
	}
	err = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (bh_interrupted)
		return -1;
	if (n < 0) {
		if (err == EINTR)
			return 0;
		errno = err;
		return -2;
	}
	return n;
}

/* ------------------------------------------------------------------------ */
/* -- Time ---------------------------------------------------------------- */

double bh_mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int l_now(lua_State *L)
{
	lua_pushnumber(L, bh_mono_now());
	return 1;
}

/* Milliseconds until end (rounded up, so a wait never ends early); -1 for none. */
int bh_ms_left(double end)
{
	double left;

	if (isinf(end))
		return -1;
	left = ceil((end - bh_mono_now()) * 1000.0);
	if (left <= 0)
		return 0;
	return left > 86400000.0 ? 86400000 : (int)left;
}

int bh_wait_readable(lua_State *L, int epfd, int ms, const char *op, const char *kind,
		     const char *name)
{
	struct bh_guard g __attribute__((cleanup(guard_cleanup))) = { .on = 0 };
	double end = ms < 0 ? INFINITY : bh_mono_now() + ms / 1000.0;
	struct epoll_event ev;
	int r, left = ms < 0 ? -1 : ms;

	bh_guard_begin(&g);
	for (;;) {
		r = bh_epoll_wait(epfd, &ev, 1, left);
		if (r < 0) {
			int err = errno;

			bh_guard_end(&g); /* before raising: Lua 5.4 runs no cleanup */
			if (r == -1)
				bh_raise_interrupted(L, op);
			bh_fail(L, op, kind, name, err, NULL, NULL);
		}
		if (r > 0)
			return 1;
		if (ms >= 0) {
			left = bh_ms_left(end);
			if (left <= 0)
				return 0;
		}
	}
}

/*
 * Sleep up to secs (< 0: forever) or until a signal. Returns 1 when the time
 * ran out, 0 when interrupted (bh_interrupted set).
 */
static int wait_for(double secs)
{
	struct bh_guard g __attribute__((cleanup(guard_cleanup))) = { .on = 0 };
	double end = secs < 0 ? INFINITY : bh_mono_now() + secs;

	bh_guard_begin(&g);
	for (;;) {
		int ms = bh_ms_left(end);

		if (bh_interrupted)
			return 0;
		if (!ms)
			return 1;
		if (bh_epoll_wait(-1, NULL, 0, ms) == -1)
			return 0;
	}
}

static double check_seconds(lua_State *L, int idx, const char *fn, const char *what)
{
	lua_Number d;

	if (lua_type(L, idx) != LUA_TNUMBER)
		luaL_error(L, "%s: %s must be a number of seconds, got %s", fn, what,
			   luaL_typename(L, idx));
	d = lua_tonumber(L, idx);
	if (d != d || d < 0 || isinf(d))
		luaL_error(L, "%s: %s must be a finite number >= 0", fn, what);
	return d;
}

/* bpf.sleep(seconds): raises an EINTR error object on SIGINT/SIGTERM. */
static int l_sleep(lua_State *L)
{
	double secs = check_seconds(L, 1, "sleep", "the argument");

	if (!wait_for(secs))
		bh_raise_interrupted(L, "sleep");
	return 0;
}

/* ------------------------------------------------------------------------ */
/* -- Event sources ------------------------------------------------------- */

/* Records one dispatch hands over at most before the loop looks at timers. */
#define SOURCE_BUDGET 65536
/* Records one poll() hands over at most, so that a busy ring cannot pin it. */
#define POLL_BUDGET (1L << 20)
#define MAX_SOURCES 64

struct bh_source *bh_source_test(lua_State *L, int idx)
{
	struct bh_source *s = bh_testud(L, idx, BH_RINGBUF_MT);

	if (!s)
		s = bh_testud(L, idx, BH_PERFBUF_MT);
	return s;
}

/* Timeouts of poll methods: milliseconds, -1 (or nil) for no limit. */
int bh_check_ms(lua_State *L, int idx, const char *fn)
{
	lua_Number d;

	if (lua_isnoneornil(L, idx))
		return -1;
	if (lua_type(L, idx) != LUA_TNUMBER)
		luaL_error(L, "%s: timeout must be a number of milliseconds, got %s", fn,
			   luaL_typename(L, idx));
	d = lua_tonumber(L, idx);
	if (d == -1)
		return -1;
	if (d != d || d < 0 || d > 86400000.0)
		luaL_error(L, "%s: timeout must be milliseconds from 0 to 86400000, or -1 "
			      "for no limit", fn);
	return (int)ceil(d);
}

/* The handler at idx: a function, or a table/userdata with __call. */
static void check_handler(lua_State *L, int idx, const char *fn, const char *where)
{
	if (lua_isfunction(L, idx))
		return;
	if (luaL_getmetafield(L, idx, "__call")) {
		lua_pop(L, 1);
		return;
	}
	luaL_error(L, "%s: %s must be a function, got %s", fn, where, luaL_typename(L, idx));
}

/*
 * The sources in flight. A buffer (ringbuf, perfbuf) is a bh_source: begun
 * ones are ended on every way out, errors included (BH_SCOPE),
 * before the guard gives the signals back. Any other source is a value with
 * methods fd() (an fd readable when it has work), serve(0) (do that work
 * now) and optionally timeout() (ms until serve(0) must run anyway, or nil):
 * bpf.exporter is one.
 */
struct srcset {
	struct bh_guard g;
	int epfd;
	int n;
	struct bh_source *s[MAX_SOURCES]; /* NULL for a Lua-level source */
	int idx[MAX_SOURCES];             /* stack index of the source */
	int hidx[MAX_SOURCES];            /* stack index of its handler, 0 for none */
	int fd[MAX_SOURCES];
	int begun[MAX_SOURCES];
};

static void srcset_cleanup(struct srcset *set)
{
	int i;

	for (i = set->n - 1; i >= 0; i--) {
		if (set->begun[i]) {
			set->begun[i] = 0;
			set->s[i]->ops->end(set->s[i]);
		}
	}
	if (set->epfd >= 0) {
		close(set->epfd);
		set->epfd = -1;
	}
	bh_guard_end(&set->g);
}

/* Call method name of the source at idx with nargs arguments above it. */
static void call_method(lua_State *L, int idx, const char *name, int nargs, int nres)
{
	lua_getfield(L, idx, name);
	lua_insert(L, -1 - nargs);
	lua_pushvalue(L, idx);
	lua_insert(L, -1 - nargs);
	lua_call(L, nargs + 1, nres);
}

/* Does the value at idx have a method name? */
static int has_method(lua_State *L, int idx, const char *name)
{
	int t = lua_type(L, idx), ok;

	if (t != LUA_TTABLE && t != LUA_TUSERDATA)
		return 0;
	lua_getfield(L, idx, name);
	ok = lua_isfunction(L, -1);
	lua_pop(L, 1);
	return ok;
}

/*
 * Read the list of sources at idx (each a source, or {buffer, handler})
 * onto the stack, then begin the buffers (which raises on a closed or busy
 * one).
 */
static void srcset_read(lua_State *L, struct srcset *set, int idx, const char *fn, int need_handler)
{
	int n = (int)bh_rawlen(L, idx), i, j;

	if (n > MAX_SOURCES)
		luaL_error(L, "%s: at most %d sources", fn, MAX_SOURCES);
	luaL_checkstack(L, 2 * n + 8, "too many sources");
	for (i = 1; i <= n; i++) {
		struct bh_source *s = NULL;
		int k = set->n;

		lua_rawgeti(L, idx, i);
		set->hidx[k] = 0;
		set->fd[k] = -1;
		if (lua_istable(L, -1) && !has_method(L, -1, "serve")) {
			int t = lua_gettop(L);

			lua_rawgeti(L, t, 1);
			lua_rawgeti(L, t, 2);
			lua_remove(L, t);
			s = bh_source_test(L, -2);
			if (!s)
				luaL_error(L, "%s: sources[%d][1] must be a ringbuf or perfbuf, got %s",
					   fn, i, luaL_typename(L, -2));
			lua_pushfstring(L, "the handler of sources[%d]", i);
			check_handler(L, -2, fn, lua_tostring(L, -1));
			lua_pop(L, 1);
			set->hidx[k] = lua_gettop(L);
			set->idx[k] = lua_gettop(L) - 1;
		} else if ((s = bh_source_test(L, -1))) {
			if (need_handler)
				luaL_error(L, "%s: sources[%d] needs a handler: {source, function(rec) "
					      "... end}",
					   fn, i);
			set->idx[k] = lua_gettop(L);
		} else if (has_method(L, -1, "fd") && has_method(L, -1, "serve")) {
			set->idx[k] = lua_gettop(L);
			call_method(L, set->idx[k], "fd", 0, 1);
			if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) < 0)
				luaL_error(L, "%s: sources[%d]:fd() must give a file descriptor, got %s",
					   fn, i, luaL_typename(L, -1));
			set->fd[k] = (int)lua_tointeger(L, -1);
			lua_pop(L, 1);
		} else {
			luaL_error(L, "%s: sources[%d] must be a ringbuf, a perfbuf, {source, handler} "
				      "or a value with fd and serve methods (an exporter), got %s",
				   fn, i, luaL_typename(L, -1));
		}
		for (j = 0; s && j < set->n; j++)
			if (set->s[j] == s)
				luaL_error(L, "%s: sources[%d] is listed twice", fn, i);
		set->s[k] = s;
		set->begun[k] = 0;
		set->n++;
	}
	/* every argument is checked: now the state changes */
	for (i = 0; i < set->n; i++) {
		if (!set->s[i])
			continue;
		set->s[i]->ops->begin(L, set->s[i], fn);
		set->begun[i] = 1;
	}
}

static void srcset_epoll(lua_State *L, struct srcset *set, const char *fn)
{
	int i;

	set->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (set->epfd < 0)
		bh_fail(L, fn, NULL, NULL, errno, NULL, NULL);
	for (i = 0; i < set->n; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
		int fd = set->s[i] ? set->s[i]->ops->fd(set->s[i]) : set->fd[i];

		if (epoll_ctl(set->epfd, EPOLL_CTL_ADD, fd, &ev))
			bh_fail(L, fn, NULL, NULL, errno, NULL, NULL);
	}
}

static long dispatch(lua_State *L, struct srcset *set, int i, long budget, int *stop)
{
	return set->s[i]->ops->dispatch(L, set->idx[i], set->s[i], set->hidx[i], budget, stop);
}

/* Milliseconds until the Lua-level source i wants serve(0), or -1. */
static int source_timeout(lua_State *L, struct srcset *set, int i)
{
	lua_Number t;

	if (!has_method(L, set->idx[i], "timeout"))
		return -1;
	call_method(L, set->idx[i], "timeout", 0, 1);
	/* nil (no deadline) must not read as 0, which would spin the loop */
	t = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
	lua_pop(L, 1);
	if (t != t || t < 0)
		return -1;
	return t > 86400000.0 ? 86400000 : (int)ceil(t);
}

/*
 * src:serve(0) for a Lua-level source. It raises an EINTR error of its own
 * when a signal lands in it: that one ends the loop as "interrupted"; any
 * other error goes on as it is.
 */
static void source_serve(lua_State *L, struct srcset *set, int i)
{
	lua_getfield(L, set->idx[i], "serve");
	lua_pushvalue(L, set->idx[i]);
	lua_pushinteger(L, 0);
	if (lua_pcall(L, 2, 0, 0)) {
		if (bh_interrupted) {
			lua_pop(L, 1);
			return;
		}
		lua_error(L);
	}
}

/*
 * src:poll(ms, fn) for every buffer type: hand over what is ready; when
 * nothing is, wait up to ms for it. Returns the count; SIGINT/SIGTERM raise.
 */
long bh_source_poll(lua_State *L, int idx, int hidx, int timeout_ms, const char *fn)
{
	struct bh_source *s = bh_source_test(L, idx);
	double end = timeout_ms < 0 ? INFINITY : bh_mono_now() + timeout_ms / 1000.0;
	long n = 0;
	int stop = 0;

	check_handler(L, hidx, fn, "the handler");
	BH_SCOPE(struct srcset, set, srcset_cleanup);
	set->epfd = -1;
	set->s[0] = s;
	set->idx[0] = idx;
	set->hidx[0] = hidx;
	set->n = 1;
	s->ops->begin(L, s, fn);
	set->begun[0] = 1;
	bh_guard_begin(&set->g);
	for (;;) {
		struct epoll_event ev;
		int ms, r;

		n += dispatch(L, set, 0, POLL_BUDGET - n, &stop);
		if (n || stop || bh_interrupted)
			break;
		ms = bh_ms_left(end);
		if (!ms)
			break;
		r = bh_epoll_wait(s->ops->fd(s), &ev, 1, ms);
		if (r == -2)
			bh_fail(L, fn, NULL, NULL, errno, NULL, NULL);
		if (r == -1)
			break;
	}
	if (bh_interrupted)
		bh_raise_interrupted(L, fn);
	BH_SCOPE_END(set);
	return n;
}

/*
 * bpf.poll(sources, ms) -> n, ready: one wait over every source; what is
 * ready goes to its handler; ready sources given without one come back in
 * the list ready.
 */
static int l_poll(lua_State *L)
{
	struct epoll_event ev[MAX_SOURCES];
	int timeout_ms, i, r, stop = 0, nready = 0, found = 0;
	char ready[MAX_SOURCES] = { 0 };
	double end;
	long n = 0;

	luaL_checktype(L, 1, LUA_TTABLE);
	timeout_ms = bh_check_ms(L, 2, "poll");
	end = timeout_ms < 0 ? INFINITY : bh_mono_now() + timeout_ms / 1000.0;
	lua_settop(L, 2);
	BH_SCOPE(struct srcset, set, srcset_cleanup);
	set->epfd = -1;
	srcset_read(L, set, 1, "poll", 0);
	srcset_epoll(L, set, "poll");
	bh_guard_begin(&set->g);
	/* records already copied out wake no epoll: look at them first */
	for (i = 0; i < set->n; i++) {
		if (set->s[i] && set->s[i]->ops->queued(set->s[i])) {
			ready[i] = 1;
			found = 1;
		}
	}
	for (;;) {
		int ms = found ? 0 : bh_ms_left(end);

		r = bh_epoll_wait(set->epfd, ev, set->n ? set->n : 1, ms);
		if (r == -2)
			bh_fail(L, "poll", NULL, NULL, errno, NULL, NULL);
		if (r == -1)
			bh_raise_interrupted(L, "poll");
		for (i = 0; i < r; i++)
			ready[ev[i].data.u32] = 1;
		if (r > 0 || found || !bh_ms_left(end))
			break;
	}
	lua_newtable(L); /* ready */
	for (i = 0; i < set->n && !stop; i++) {
		if (!ready[i])
			continue;
		if (set->hidx[i]) {
			n += dispatch(L, set, i, POLL_BUDGET, &stop);
			if (bh_interrupted)
				bh_raise_interrupted(L, "poll");
		} else {
			lua_pushvalue(L, set->idx[i]);
			lua_rawseti(L, -2, ++nready);
		}
	}
	lua_pushinteger(L, (lua_Integer)n);
	lua_insert(L, -2);
	return 2;
}

/* ------------------------------------------------------------------------ */
/* -- bpf.run ------------------------------------------------------------- */

static const char *const run_opts[] = { "sources", "every", "tick", "timeout", NULL };

/*
 * bpf.run{sources =, every =, tick =, timeout =} -> "interrupted" | "stopped"
 * | "timeout". A handler or tick that raises ends the loop with its error.
 */
static int l_run(lua_State *L)
{
	struct epoll_event ev[MAX_SOURCES];
	double every = 0, timeout = -1, now, deadline, next_tick;
	double due[MAX_SOURCES]; /* Lua-level sources: when serve(0) must run anyway */
	int has_tick, has_sources = 0, tick_idx, i;

	luaL_checktype(L, 1, LUA_TTABLE);
	bh_opt_check(L, 1, "run", run_opts);
	lua_getfield(L, 1, "every");
	if (!lua_isnil(L, -1)) {
		every = check_seconds(L, -1, "run", "every");
		if (every <= 0)
			luaL_error(L, "run: every must be > 0");
	}
	lua_getfield(L, 1, "timeout");
	if (!lua_isnil(L, -1))
		timeout = check_seconds(L, -1, "run", "timeout");
	lua_getfield(L, 1, "tick");
	has_tick = !lua_isnil(L, -1);
	if (has_tick)
		check_handler(L, lua_gettop(L), "run", "tick");
	if (has_tick && every <= 0)
		luaL_error(L, "run: tick needs every (seconds between ticks)");
	if (!has_tick && every > 0) {
		char secs[32]; /* lua_pushfstring has no %g under 5.4 */

		snprintf(secs, sizeof(secs), "%g", every);
		luaL_error(L, "run: every needs tick (the function to call every %s seconds)", secs);
	}
	lua_getfield(L, 1, "sources");
	if (!lua_isnil(L, -1)) {
		if (!lua_istable(L, -1))
			luaL_error(L, "run: sources must be a list, got %s", luaL_typename(L, -1));
		has_sources = 1;
	}
	lua_settop(L, 1);
	lua_getfield(L, 1, "tick"); /* 2: tick */
	tick_idx = 2;
	lua_getfield(L, 1, "sources"); /* 3: sources */
	BH_SCOPE(struct srcset, set, srcset_cleanup);
	set->epfd = -1;
	if (has_sources)
		srcset_read(L, set, 3, "run", 1);
	srcset_epoll(L, set, "run");
	bh_guard_begin(&set->g);

	now = bh_mono_now();
	deadline = timeout >= 0 ? now + timeout : INFINITY;
	next_tick = every > 0 ? now + every : INFINITY;
	for (i = 0; i < set->n; i++) {
		int stop = 0;

		/* records left copied out by an earlier poll wake no epoll */
		due[i] = set->s[i] ? INFINITY : now;
		if (set->s[i] && set->s[i]->ops->queued(set->s[i]))
			dispatch(L, set, i, SOURCE_BUDGET, &stop);
		if (stop) {
			lua_pushliteral(L, "stopped");
			return 1;
		}
	}
	for (;;) {
		double wake = next_tick < deadline ? next_tick : deadline;
		int r;

		if (bh_interrupted)
			break;
		now = bh_mono_now();
		for (i = 0; i < set->n && !bh_interrupted; i++) {
			int t;

			if (set->s[i] || now < due[i])
				continue;
			source_serve(L, set, i);
			t = source_timeout(L, set, i);
			due[i] = t < 0 ? INFINITY : bh_mono_now() + t / 1000.0;
		}
		if (bh_interrupted)
			break;
		if (now >= next_tick) {
			lua_pushvalue(L, tick_idx);
			lua_call(L, 0, 1);
			if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
				lua_pushliteral(L, "stopped");
				return 1;
			}
			lua_pop(L, 1);
			next_tick += every;
			now = bh_mono_now();
			if (next_tick <= now)
				next_tick = now + every;
			continue;
		}
		if (now >= deadline) {
			lua_pushliteral(L, "timeout");
			return 1;
		}
		for (i = 0; i < set->n; i++)
			if (due[i] < wake)
				wake = due[i];
		r = bh_epoll_wait(set->epfd, ev, set->n ? set->n : 1, bh_ms_left(wake));
		if (r == -2)
			bh_fail(L, "run", NULL, NULL, errno, NULL, NULL);
		for (i = 0; i < r && !bh_interrupted; i++) {
			int k = (int)ev[i].data.u32, stop = 0;

			if (!set->s[k]) {
				due[k] = 0; /* served at the top of the loop */
				continue;
			}
			dispatch(L, set, k, SOURCE_BUDGET, &stop);
			if (stop) {
				lua_pushliteral(L, "stopped");
				return 1;
			}
		}
	}
	bh_interrupt_consume(L);
	lua_pushliteral(L, "interrupted");
	return 1;
}

static const luaL_Reg loop_funcs[] = {
	{ "now", l_now },
	{ "sleep", l_sleep },
	{ "poll", l_poll },
	{ "run", l_run },
	{ NULL, NULL },
};

void bh_loop_init(lua_State *L)
{
	bh_setfuncs(L, loop_funcs, 0);
}
