/* repl.c: the interactive loop, in the way of lua.c, over libedit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <editline/readline.h>

#include "bh.h"
#include "host.h"

#define PROMPT  "bpf> "
#define PROMPT2 "...> "

static char *read_line(const char *prompt, int tty)
{
	if (tty)
		return readline(prompt);
	{
		char buf[4096];
		size_t n;

		if (!fgets(buf, sizeof(buf), stdin))
			return NULL;
		n = strlen(buf);
		if (n && buf[n - 1] == '\n')
			buf[n - 1] = '\0';
		return strdup(buf);
	}
}

/* LuaJIT (and 5.1) mark an incomplete chunk with '<eof>' at the end of the message. */
static int incomplete(lua_State *L, int status)
{
	if (status == LUA_ERRSYNTAX) {
		size_t lmsg;
		const char *msg = lua_tolstring(L, -1, &lmsg);

		if (lmsg >= 7 && strstr(msg, "'<eof>'") == msg + lmsg - 7) {
			lua_pop(L, 1);
			return 1;
		}
		if (lmsg >= 5 && strstr(msg, "<eof>") == msg + lmsg - 5) {
			lua_pop(L, 1);
			return 1;
		}
	}
	return 0;
}

/* Compile the buffered input: first as an expression, then as statements. */
static int load_input(lua_State *L, const char *code, int *need_more)
{
	const char *c = code[0] == '=' ? code + 1 : code;
	int status;

	*need_more = 0;
	lua_pushfstring(L, "return %s", c);
	status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_objlen(L, -1), "=stdin");
	lua_remove(L, -2);
	if (status == 0)
		return 0;
	lua_pop(L, 1);
	status = luaL_loadbuffer(L, c, strlen(c), "=stdin");
	if (incomplete(L, status)) {
		*need_more = 1;
		return status;
	}
	return status;
}

static void print_results(lua_State *L, int base)
{
	int n = lua_gettop(L) - base, i;

	if (n <= 0)
		return;
	lua_getglobal(L, "bpf");
	lua_getfield(L, -1, "pp");
	lua_remove(L, -2);
	for (i = 1; i <= n; i++) {
		if (lua_isfunction(L, -1)) {
			lua_pushvalue(L, -1);
			lua_pushvalue(L, base + i);
			if (lua_pcall(L, 1, 1, 0) == 0 && lua_isstring(L, -1)) {
				fputs(lua_tostring(L, -1), stdout);
				fputc('\n', stdout);
				lua_pop(L, 1);
				continue;
			}
			lua_pop(L, 1);
		}
		lua_getglobal(L, "tostring");
		lua_pushvalue(L, base + i);
		lua_call(L, 1, 1);
		fputs(lua_tostring(L, -1), stdout);
		fputc(i < n ? '\t' : '\n', stdout);
		lua_pop(L, 1);
	}
	fflush(stdout);
	lua_settop(L, base);
}

int host_repl(lua_State *L)
{
	int tty = isatty(0);
	luaL_Buffer *unused = NULL;
	char *acc = NULL;
	size_t acclen = 0;

	(void)unused;
	for (;;) {
		char *line = read_line(acc ? PROMPT2 : PROMPT, tty);
		int need_more, status, base;
		char *nacc;

		if (!line)
			break;
		if (!acc && !*line) {
			free(line);
			continue;
		}
		nacc = realloc(acc, acclen + strlen(line) + 2);
		if (!nacc) {
			free(line);
			break;
		}
		if (!acc)
			nacc[0] = '\0';
		acc = nacc;
		if (acclen)
			strcat(acc, "\n");
		strcat(acc, line);
		acclen = strlen(acc);
		free(line);
		base = lua_gettop(L);
		status = load_input(L, acc, &need_more);
		if (need_more)
			continue;
		if (tty)
			add_history(acc);
		free(acc);
		acc = NULL;
		acclen = 0;
		if (status == 0)
			status = host_docall(L, 0, LUA_MULTRET);
		if (status) {
			host_report(L, status);
			lua_settop(L, base);
		} else {
			print_results(L, base);
		}
		bh_interrupted = 0;
	}
	free(acc);
	if (tty)
		fputc('\n', stdout);
	return 0;
}
