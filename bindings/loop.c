/* loop.c: waiting (bpf.sleep, bpf.run), signals, time, and on-demand mounts. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
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
 * During a wait the module installs its own SIGINT/SIGTERM handler (so waits
 * end promptly under plain luajit too) and restores the previous one after.
 * The signals stay blocked except inside ppoll/epoll_pwait, so a signal that
 * arrives between the flag check and the wait cannot be lost.
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
	/* a signal the parent told us to ignore stays ignored */
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
	/* unblock first: a pending signal lands in our handler, not the old one */
	sigprocmask(SIG_SETMASK, &g->omask, NULL);
	sigaction(SIGINT, &g->oint, NULL);
	sigaction(SIGTERM, &g->oterm, NULL);
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
static __attribute__((noreturn)) void raise_interrupted(lua_State *L, const char *op)
{
	char reason[48];

	snprintf(reason, sizeof(reason), "interrupted by %s", signame(bh_interrupted));
	bh_fail_msg(L, op, NULL, NULL, EINTR, reason, NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* -- Time ---------------------------------------------------------------- */

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int l_now(lua_State *L)
{
	lua_pushnumber(L, mono_now());
	return 1;
}

/*
 * Sleep up to secs (< 0: forever) or until a signal. Returns 1 when the time
 * ran out, 0 when interrupted (bh_interrupted set).
 */
static int wait_for(double secs)
{
	struct sigguard g;
	double end = secs < 0 ? INFINITY : mono_now() + secs;
	int ret = 1;

	guard_begin(&g);
	for (;;) {
		double left = end - mono_now();
		struct timespec ts, *tsp = NULL;

		if (bh_interrupted) {
			ret = 0;
			break;
		}
		if (left <= 0)
			break;
		if (!isinf(left)) {
			ts.tv_sec = (time_t)left;
			ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
			tsp = &ts;
		}
		ppoll(NULL, 0, tsp, &g.waitmask);
	}
	guard_end(&g);
	if (bh_interrupted)
		ret = 0;
	return ret;
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
		raise_interrupted(L, "sleep");
	return 0;
}

/* ------------------------------------------------------------------------ */
/* -- bpf.run ------------------------------------------------------------- */

static const char *const run_opts[] = { "sources", "every", "tick", "timeout", NULL };

/*
 * bpf.run{sources =, every =, tick =, timeout =} -> "interrupted" | "stopped"
 * | "timeout". A tick that raises ends the loop with its error.
 */
static int l_run(lua_State *L)
{
	double every = 0, timeout = -1, now, deadline, next_tick;
	int has_tick;

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
	if (has_tick && !lua_isfunction(L, -1) && !lua_isuserdata(L, -1) && !lua_istable(L, -1))
		luaL_error(L, "run: tick must be a function, got %s", luaL_typename(L, -1));
	if (has_tick && every <= 0)
		luaL_error(L, "run: tick needs every (seconds between ticks)");
	lua_getfield(L, 1, "sources");
	if (!lua_isnil(L, -1)) {
		if (!lua_istable(L, -1))
			luaL_error(L, "run: sources must be a list, got %s", luaL_typename(L, -1));
		if (bh_rawlen(L, -1) > 0)
			luaL_error(L, "run: event sources are not supported yet");
	}
	lua_settop(L, 1);
	lua_getfield(L, 1, "tick"); /* 2: tick */

	now = mono_now();
	deadline = timeout >= 0 ? now + timeout : INFINITY;
	next_tick = every > 0 ? now + every : INFINITY;
	for (;;) {
		double wake = next_tick < deadline ? next_tick : deadline;

		if (bh_interrupted || !wait_for(isinf(wake) ? -1 : fmax(wake - mono_now(), 0))) {
			bh_interrupt_consume(L);
			lua_pushliteral(L, "interrupted");
			return 1;
		}
		now = mono_now();
		if (now >= next_tick) {
			lua_pushvalue(L, 2);
			lua_call(L, 0, 1);
			if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
				lua_pushliteral(L, "stopped");
				return 1;
			}
			lua_pop(L, 1);
			next_tick += every;
			now = mono_now();
			if (next_tick <= now)
				next_tick = now + every;
		}
		if (now >= deadline) {
			lua_pushliteral(L, "timeout");
			return 1;
		}
	}
}

static const luaL_Reg loop_funcs[] = {
	{ "now", l_now },
	{ "sleep", l_sleep },
	{ "run", l_run },
	{ NULL, NULL },
};

void bh_loop_init(lua_State *L)
{
	bh_setfuncs(L, loop_funcs, 0);
}
