/* sig.c: SIGINT/SIGTERM while a script runs, in the way of lua.c. */
#include <signal.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "bh.h"
#include "host.h"

static lua_State *globalL;

/*
 * The actions in place before host_sig_install, put back by
 * host_sig_remove: the REPL keeps its own SIGINT handler between
 * statements, so that a Ctrl-C there cancels a line instead of ending it.
 */
static struct sigaction saved_int, saved_term;
static int saved;

/* The hook raises in Lua code; compiled traces ignore it, waits read bh_interrupted. */
static void lstop(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	lua_sethook(L, NULL, 0, 0);
	luaL_error(L, "interrupted!");
}

static void laction(int sig)
{
	struct sigaction dfl;

	bh_interrupted = sig;
	/* a second signal ends the process the default way */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigaction(sig, &dfl, NULL);
	if (globalL)
		lua_sethook(globalL, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void host_sig_install(lua_State *L)
{
	struct sigaction sa;

	globalL = L;
	bh_interrupt_hook = lstop;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = laction;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, NULL, &saved_int);
	sigaction(SIGTERM, NULL, &saved_term);
	saved = 1;
	/* respect a parent that told us to ignore these */
	if (saved_int.sa_handler != SIG_IGN)
		sigaction(SIGINT, &sa, NULL);
	if (saved_term.sa_handler != SIG_IGN)
		sigaction(SIGTERM, &sa, NULL);
}

void host_sig_remove(void)
{
	struct sigaction old;

	if (!saved)
		return;
	saved = 0;
	/* laction may already have reset a signal to SIG_DFL: restore in any case */
	if (!sigaction(SIGINT, NULL, &old) && old.sa_handler != SIG_IGN)
		sigaction(SIGINT, &saved_int, NULL);
	if (!sigaction(SIGTERM, NULL, &old) && old.sa_handler != SIG_IGN)
		sigaction(SIGTERM, &saved_term, NULL);
}

/* After a statement in the REPL: forget a signal it did not consume. */
void host_sig_clear(lua_State *L)
{
	if (lua_gethook(L) == lstop)
		lua_sethook(L, NULL, 0, 0);
	bh_interrupted = 0;
}

/* The exit status a pending signal asks for (128 + signo), or 0. */
int host_sig_status(void)
{
	return bh_interrupted ? 128 + bh_interrupted : 0;
}
