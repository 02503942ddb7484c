/*
 * repl.c: the interactive loop, in the way of lua.c.
 *
 * Line editing is libedit's (its native histedit API), opened with dlopen
 * when the REPL starts so that one-shot runs (`bpfhost -e ...`) do not pay
 * for loading it and the libraries it needs. GNU readline is opt-in at build
 * time (make READLINE=1). Without a terminal, or without libedit, lines are
 * read plainly from stdin.
 *
 * Completion, result printing and help are Lua (bindings/lua/repl.lua,
 * "bpfhost.repl"); this file owns the terminal, signals and history.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wchar.h>

#include <lua.h>
#include <lauxlib.h>
#include <luajit.h>

#ifdef BH_READLINE
#include <readline/readline.h>
#include <readline/history.h>
#else
#include <histedit.h>
#endif

#include "bh.h"
#include "host.h"

#define PROMPT       "bpf> "
#define PROMPT2      "...> "
#define HISTORY_FILE ".bpfhost_history"
#define HISTORY_MAX  1000

/* ------------------------------------------------------------------------ */
/* -- Signals while reading ----------------------------------------------- */

/*
 * While a line is read, SIGINT cancels it and SIGTERM leaves the REPL. The
 * handlers only set flags; the signals stay blocked except inside ppoll, so
 * one that arrives just before the wait is not lost. Between statements
 * these handlers stay in place (host_docall swaps in the host's for the
 * duration of a statement, and puts ours back).
 */
static volatile sig_atomic_t got_int, got_term, got_winch;

static void on_signal(int sig)
{
	if (sig == SIGINT)
		got_int = 1;
	else if (sig == SIGTERM)
		got_term = 1;
	else if (sig == SIGWINCH)
		got_winch = 1;
}

static void install_handlers(void)
{
	struct sigaction sa, old;
	static const int sigs[] = { SIGINT, SIGTERM, SIGWINCH };
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		/*
		 * SIGINT and SIGTERM make a plain read return EINTR. SIGWINCH
		 * stays installed while statements run, so it restarts what they
		 * wait in (ppoll, which reads the terminal, never restarts).
		 */
		sa.sa_flags = sigs[i] == SIGWINCH ? SA_RESTART : 0;
		if (!sigaction(sigs[i], NULL, &old) && old.sa_handler != SIG_IGN)
			sigaction(sigs[i], &sa, NULL);
	}
}

static void block_signals(sigset_t *old)
{
	sigset_t s;

	sigemptyset(&s);
	sigaddset(&s, SIGINT);
	sigaddset(&s, SIGTERM);
	sigaddset(&s, SIGWINCH);
	sigprocmask(SIG_BLOCK, &s, old);
}

/* Set when the line being read was cancelled by SIGINT (or SIGTERM). */
static int cancelled;
static sigset_t wait_mask; /* the mask to wait with: ours minus the three */

/*
 * Wait for a byte on fd with the signals open. Returns 1 with *c, 0 at EOF,
 * -1 on error, and -2 when a signal asks to cancel the line.
 */
static int wait_byte(int fd, unsigned char *c, void (*resize)(void))
{
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t n;

		if (got_int || got_term) {
			cancelled = 1;
			return -2;
		}
		if (got_winch) {
			got_winch = 0;
			if (resize)
				resize();
		}
		if (ppoll(&p, 1, NULL, &wait_mask) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		n = read(fd, c, 1);
		if (n == 1)
			return 1;
		if (n == 0)
			return 0;
		if (errno != EINTR && errno != EAGAIN)
			return -1;
	}
}

/* ------------------------------------------------------------------------ */
/* -- History file -------------------------------------------------------- */

static char *history_path(void)
{
	const char *home = getenv("HOME");
	char *p;

	if (!home || !*home) {
		struct passwd *pw = getpwuid(getuid());

		home = pw ? pw->pw_dir : NULL;
	}
	if (!home)
		return NULL;
	p = malloc(strlen(home) + sizeof(HISTORY_FILE) + 2);
	if (p)
		sprintf(p, "%s/%s", home, HISTORY_FILE);
	return p;
}

/*
 * Open the history file for writing, created (or tightened) to mode 0600:
 * it holds whatever was typed, keys and values included.
 */
static FILE *history_create(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	FILE *f;

	if (fd < 0)
		return NULL;
	if (fchmod(fd, 0600) || !(f = fdopen(fd, "w"))) {
		close(fd);
		return NULL;
	}
	return f;
}

/* ------------------------------------------------------------------------ */
/* -- Completion ---------------------------------------------------------- */

static lua_State *replL;
static int helper_idx; /* stack index of the bpfhost.repl table in host_repl */

static int term_columns(void)
{
	struct winsize ws;

	if (!ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) && ws.ws_col > 0)
		return ws.ws_col;
	return 80;
}

static int pcall_complete(lua_State *L)
{
	lua_getfield(L, 1, "complete");
	lua_pushvalue(L, 2);
	lua_call(L, 1, 3);
	return 3;
}

/*
 * What completing the word that ends text (the line up to the cursor)
 * does: *wordlen bytes are the word, *ins (malloc'd, or NULL) replaces it,
 * and when there is nothing to insert but several candidates, *list (a
 * malloc'd, NUL-separated, double-NUL-terminated block) shows them. Returns
 * the number of candidates. Completion runs Lua only under pcall: nothing
 * may longjmp through the line editor.
 */
static int complete_text(const char *text, size_t len, size_t *wordlen, char **ins, char **list)
{
	lua_State *L = replL;
	int top = lua_gettop(L), n = 0, i;
	size_t wl, clen = 0, total = 0;
	const char *first = NULL;

	*wordlen = 0;
	*ins = *list = NULL;
	if (!L || !helper_idx)
		return 0;
	lua_pushcfunction(L, pcall_complete);
	lua_pushvalue(L, helper_idx);
	lua_pushlstring(L, text, len);
	if (lua_pcall(L, 2, 3, 0) || !lua_isstring(L, -3) || !lua_istable(L, -2)) {
		lua_settop(L, top);
		return 0;
	}
	lua_tolstring(L, -3, &wl);
	*wordlen = wl;
	n = (int)lua_objlen(L, -2);
	/* the longest common prefix of the candidates */
	for (i = 1; i <= n; i++) {
		size_t l, k;
		const char *s;

		lua_rawgeti(L, -2, i);
		s = lua_tolstring(L, -1, &l);
		lua_pop(L, 1);
		if (!s)
			continue;
		if (!first) {
			first = s; /* anchored by the table */
			clen = l;
			continue;
		}
		for (k = 0; k < clen && k < l && s[k] == first[k]; k++)
			;
		clen = k;
	}
	if (first && clen > wl) {
		*ins = strndup(first, clen);
	} else if (n > 1) {
		int t = lua_istable(L, -1) ? -1 : -2; /* display forms, or the candidates */
		char *p;

		for (i = 1; i <= n; i++) {
			size_t l = 0;

			lua_rawgeti(L, t, i);
			lua_tolstring(L, -1, &l);
			lua_pop(L, 1);
			total += l + 1;
		}
		*list = p = malloc(total + 1);
		if (p) {
			for (i = 1; i <= n; i++) {
				size_t l = 0;
				const char *s;

				lua_rawgeti(L, t, i);
				s = lua_tolstring(L, -1, &l);
				if (s)
					memcpy(p, s, l);
				p += s ? l : 0;
				*p++ = '\0';
				lua_pop(L, 1);
			}
			*p = '\0';
		}
	}
	lua_settop(L, top);
	return n;
}

/* Print NUL-separated words in columns below the line being edited. */
static void show_list(FILE *f, const char *list)
{
	const char *s;
	size_t w = 0, n = 0, i = 0;
	int cols = term_columns(), per;

	for (s = list; *s; s += strlen(s) + 1, n++)
		if (strlen(s) > w)
			w = strlen(s);
	w += 2;
	per = (int)(cols / w) > 0 ? (int)(cols / w) : 1;
	fputc('\n', f);
	if (n > 200) {
		fprintf(f, "(%zu candidates; type more of the name)\n", n);
		return;
	}
	for (s = list; *s; s += strlen(s) + 1) {
		i++;
		if (i % per == 0 || i == n)
			fprintf(f, "%s\n", s);
		else
			fprintf(f, "%-*s", (int)w, s);
	}
}

/* ------------------------------------------------------------------------ */
/* -- Line editors -------------------------------------------------------- */

struct editor {
	int (*open)(const char *hist);
	char *(*read)(const char *prompt); /* malloc'd, no newline; NULL at EOF */
	void (*add)(const char *line);
	void (*save)(const char *hist);
	void (*close)(void);
};

/* -- Plain stdin (no terminal, or no line editor) ------------------------ */

static int plain_open(const char *hist)
{
	(void)hist;
	return 0;
}

static char *plain_read(const char *prompt)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (isatty(STDIN_FILENO)) {
		fputs(prompt, stdout);
		fflush(stdout);
	}
	/* SIGINT interrupts the read (no SA_RESTART) */
	n = getline(&line, &cap, stdin);
	if (n < 0) {
		if (got_int || got_term) {
			cancelled = 1;
			clearerr(stdin);
			if (!line)
				line = strdup("");
			else
				line[0] = '\0';
			return line;
		}
		free(line);
		return NULL;
	}
	if (n && line[n - 1] == '\n')
		line[n - 1] = '\0';
	return line;
}

static void plain_nop(const char *s)
{
	(void)s;
}

static void plain_close(void)
{
}

static const struct editor plain_editor = { plain_open, plain_read, plain_nop, plain_nop,
					    plain_close };

#ifdef BH_READLINE
/* -- GNU readline (make READLINE=1) -------------------------------------- */

static void rl_resize(void)
{
	rl_resize_terminal();
}

static int rl_getc_bh(FILE *f)
{
	unsigned char c;
	int r = wait_byte(fileno(f), &c, rl_resize);

	if (r == 1)
		return c;
	if (r == -2)
		return '\n'; /* accept the line; host_repl discards it */
	return EOF;
}

static int rl_complete_bh(int count, int key)
{
	size_t wl;
	char *ins, *list;
	int n;

	(void)count;
	(void)key;
	n = complete_text(rl_line_buffer, (size_t)rl_point, &wl, &ins, &list);
	if (ins) {
		rl_begin_undo_group();
		rl_delete_text(rl_point - (int)wl, rl_point);
		rl_point -= (int)wl;
		rl_insert_text(ins);
		rl_end_undo_group();
		free(ins);
	} else if (list) {
		show_list(rl_outstream, list);
		free(list);
		rl_on_new_line();
	} else if (n == 0) {
		rl_ding();
	}
	return 0;
}

static int rl_open_bh(const char *hist)
{
	rl_readline_name = "bpfhost";
	rl_catch_signals = 0;
	rl_catch_sigwinch = 0;
	rl_getc_function = rl_getc_bh;
	rl_bind_key('\t', rl_complete_bh);
	using_history();
	stifle_history(HISTORY_MAX);
	if (hist)
		read_history(hist);
	return 0;
}

static char *rl_read_bh(const char *prompt)
{
	return readline(prompt);
}

static void rl_add_bh(const char *line)
{
	add_history(line);
}

static void rl_save_bh(const char *hist)
{
	FILE *f;

	/* created 0600 first: write_history keeps the mode of a file that exists */
	if (hist && (f = history_create(hist))) {
		fclose(f);
		write_history(hist);
	}
}

static void rl_close_bh(void)
{
}

static const struct editor rl_editor = { rl_open_bh, rl_read_bh, rl_add_bh, rl_save_bh,
					 rl_close_bh };

#else
/* -- libedit, through dlopen --------------------------------------------- */

static struct {
	void *lib;
	__typeof__(el_init) *init;
	__typeof__(el_end) *end;
	__typeof__(el_gets) *gets;
	__typeof__(el_set) *set;
	__typeof__(el_source) *source;
	__typeof__(el_line) *line;
	__typeof__(el_insertstr) *insertstr;
	__typeof__(el_deletestr) *deletestr;
	__typeof__(el_resize) *resize;
	__typeof__(history_init) *hinit;
	__typeof__(history_end) *hend;
	__typeof__(history) *history;
} ed;

static EditLine *el;
static History *hist_h;
static const char *cur_prompt = PROMPT;

static char *el_prompt(EditLine *e)
{
	(void)e;
	return (char *)cur_prompt;
}

static void el_resize_bh(void)
{
	ed.resize(el);
}

/* Bytes from the terminal to wide characters, with the signals handled. */
static int el_getc_bh(EditLine *e, wchar_t *wc)
{
	char buf[MB_LEN_MAX];
	size_t n = 0;

	(void)e;
	for (;;) {
		unsigned char c;
		mbstate_t st;
		size_t k;
		int r = wait_byte(STDIN_FILENO, &c, el_resize_bh);

		if (r == -2) {
			*wc = L'\n'; /* accept the line; host_repl discards it */
			return 1;
		}
		if (r <= 0)
			return r;
		buf[n++] = (char)c;
		memset(&st, 0, sizeof(st));
		k = mbrtowc(wc, buf, n, &st);
		if (k == (size_t)-2 && n < sizeof(buf))
			continue;
		if (k == (size_t)-1 || k == (size_t)-2)
			*wc = (wchar_t)(unsigned char)buf[0];
		return 1;
	}
}

/* Characters (not bytes) in the last len bytes of UTF-8 text. */
static int utf8_chars(const char *s, size_t len)
{
	int n = 0;
	size_t i;

	for (i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			n++;
	return n;
}

static unsigned char el_complete_bh(EditLine *e, int ch)
{
	const LineInfo *li = ed.line(e);
	size_t wl;
	char *ins, *list;
	int n;

	(void)ch;
	n = complete_text(li->buffer, (size_t)(li->cursor - li->buffer), &wl, &ins, &list);
	if (ins) {
		ed.deletestr(e, utf8_chars(li->cursor - wl, wl));
		ed.insertstr(e, ins);
		free(ins);
		return CC_REFRESH;
	}
	if (list) {
		show_list(stdout, list);
		free(list);
		return CC_REDISPLAY;
	}
	return n ? CC_NORM : CC_REFRESH_BEEP;
}

static int el_open_bh(const char *hist)
{
	HistEvent ev;
	static const char *const names[] = { "libedit.so.2", "libedit.so", NULL };
	int i;

	for (i = 0; names[i] && !ed.lib; i++)
		ed.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!ed.lib)
		return -1;
#define SYM(f, s) (*(void **)&ed.f = dlsym(ed.lib, s))
	if (!SYM(init, "el_init") || !SYM(end, "el_end") || !SYM(gets, "el_gets") ||
	    !SYM(set, "el_set") || !SYM(source, "el_source") || !SYM(line, "el_line") ||
	    !SYM(insertstr, "el_insertstr") || !SYM(deletestr, "el_deletestr") ||
	    !SYM(resize, "el_resize") || !SYM(hinit, "history_init") ||
	    !SYM(hend, "history_end") || !SYM(history, "history")) {
		dlclose(ed.lib);
		ed.lib = NULL;
		return -1;
	}
#undef SYM
	setlocale(LC_CTYPE, "");
	el = ed.init("bpfhost", stdin, stdout, stderr);
	if (!el)
		return -1;
	hist_h = ed.hinit();
	if (hist_h) {
		ed.history(hist_h, &ev, H_SETSIZE, HISTORY_MAX);
		ed.history(hist_h, &ev, H_SETUNIQUE, 1);
		if (hist)
			ed.history(hist_h, &ev, H_LOAD, hist);
		ed.set(el, EL_HIST, ed.history, hist_h);
	}
	ed.set(el, EL_SIGNAL, 0); /* ours handle SIGINT/SIGWINCH; see wait_byte */
	ed.set(el, EL_EDITOR, "emacs");
	ed.set(el, EL_PROMPT, el_prompt);
	ed.set(el, EL_GETCFN, el_getc_bh);
	ed.set(el, EL_ADDFN, "bh-complete", "complete a Lua name", el_complete_bh);
	ed.set(el, EL_BIND, "^I", "bh-complete", NULL);
	ed.source(el, NULL); /* ~/.editrc */
	return 0;
}

static char *el_read_bh(const char *prompt)
{
	int n = 0;
	const char *s;
	char *line;

	cur_prompt = prompt;
	s = ed.gets(el, &n);
	if (!s || n <= 0)
		return NULL;
	line = strdup(s);
	if (line && n > 0 && line[strlen(line) - 1] == '\n')
		line[strlen(line) - 1] = '\0';
	return line;
}

static void el_add_bh(const char *line)
{
	HistEvent ev;

	if (hist_h)
		ed.history(hist_h, &ev, H_ENTER, line);
}

static void el_save_bh(const char *hist)
{
	HistEvent ev;
	FILE *f;

	if (!hist_h || !hist || !(f = history_create(hist)))
		return;
	ed.history(hist_h, &ev, H_SAVE_FP, f);
	fclose(f);
}

static void el_close_bh(void)
{
	if (el)
		ed.end(el); /* puts the terminal back */
	if (hist_h)
		ed.hend(hist_h);
	el = NULL;
	hist_h = NULL;
}

static const struct editor el_editor = { el_open_bh, el_read_bh, el_add_bh, el_save_bh,
					 el_close_bh };
#endif

/* ------------------------------------------------------------------------ */
/* -- Evaluation ---------------------------------------------------------- */

/* LuaJIT (and 5.1) mark an incomplete chunk with '<eof>' at the end of the message. */
static int incomplete(lua_State *L, int status)
{
	if (status == LUA_ERRSYNTAX) {
		size_t lmsg;
		const char *msg = lua_tolstring(L, -1, &lmsg);

		if (lmsg >= 7 && !strcmp(msg + lmsg - 7, "'<eof>'"))
			return 1;
	}
	return 0;
}

enum { LOAD_OK, LOAD_MORE, LOAD_ERR };

/*
 * Compile the buffered input: first as an expression (so that results print
 * without `return`; a leading `=` is still accepted), then as statements.
 * Input is incomplete when either form ends early: `x = {` and `{` both
 * wait for more. On LOAD_OK the function is at the top; on LOAD_ERR the
 * statement form's message.
 */
static int load_input(lua_State *L, const char *code)
{
	const char *c = code[0] == '=' ? code + 1 : code;
	int more, status;

	lua_pushfstring(L, "return %s", c);
	status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_objlen(L, -1), "=stdin");
	lua_remove(L, -2);
	if (status == 0) {
		/*
		 * The same through select, which keeps every result and keeps the
		 * call out of tail position: an error in it still says where.
		 */
		lua_pushfstring(L, "return select(1, %s\n)", c);
		if (luaL_loadbuffer(L, lua_tostring(L, -1), lua_objlen(L, -1), "=stdin") == 0) {
			lua_remove(L, -2); /* the select form replaces the plain one */
			lua_remove(L, -2);
		} else {
			lua_pop(L, 2);
		}
		return LOAD_OK;
	}
	more = incomplete(L, status);
	lua_pop(L, 1);
	status = luaL_loadbuffer(L, c, strlen(c), "=stdin");
	if (status == 0)
		return LOAD_OK;
	if (more || incomplete(L, status)) {
		lua_pop(L, 1);
		return LOAD_MORE;
	}
	return LOAD_ERR;
}

/* (helper, source, results...) -> helper.show(width, source, results...) */
static int pcall_show(lua_State *L)
{
	int n = lua_gettop(L) - 1;

	lua_getfield(L, 1, "show");
	lua_insert(L, 2);
	lua_pushinteger(L, term_columns());
	lua_insert(L, 3);
	lua_call(L, n + 1, 1);
	return 1;
}

/*
 * Print the results above base through bpfhost.repl's show (pp), or
 * tostring. src is the statement, which tells show what a m:dump() came from.
 */
static void print_results(lua_State *L, int base, const char *src)
{
	int n = lua_gettop(L) - base, i;

	if (n <= 0)
		return;
	if (helper_idx) {
		lua_pushcfunction(L, pcall_show);
		lua_pushvalue(L, helper_idx);
		lua_pushstring(L, src);
		for (i = 1; i <= n; i++)
			lua_pushvalue(L, base + i);
		if (lua_pcall(L, n + 2, 1, 0) == 0) {
			if (lua_isstring(L, -1)) {
				fputs(lua_tostring(L, -1), stdout);
				fputc('\n', stdout);
			}
			fflush(stdout);
			lua_settop(L, base);
			return;
		}
		fprintf(stderr, "bpfhost: printing the result failed: %s\n",
			lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
		lua_pop(L, 1);
	}
	for (i = 1; i <= n; i++) {
		lua_getglobal(L, "tostring");
		lua_pushvalue(L, base + i);
		if (lua_pcall(L, 1, 1, 0) || !lua_isstring(L, -1)) {
			lua_pop(L, 1);
			lua_pushfstring(L, "(%s)", luaL_typename(L, base + i));
		}
		fputs(lua_tostring(L, -1), stdout);
		fputc(i < n ? '\t' : '\n', stdout);
		lua_pop(L, 1);
	}
	fflush(stdout);
	lua_settop(L, base);
}

/*
 * A statement stopped by Ctrl-C says so in one line; other errors print as
 * in a script (message, hint, traceback).
 */
static void report_error(lua_State *L, int was_interrupted)
{
	if (was_interrupted) {
		fputs("interrupted\n", stderr);
		fflush(stderr);
		lua_pop(L, 1);
		return;
	}
	host_report(L, 1);
}

static int pcall_require(lua_State *L)
{
	lua_getglobal(L, "require");
	lua_pushliteral(L, "bpfhost.repl");
	lua_call(L, 1, 1);
	return 1;
}

/* Append line to the chunk being gathered. */
static char *append(char *acc, const char *line)
{
	size_t a = acc ? strlen(acc) : 0, l = strlen(line);
	char *n = realloc(acc, a + l + 2);

	if (!n) {
		free(acc);
		return NULL;
	}
	if (a)
		n[a++] = '\n';
	memcpy(n + a, line, l + 1);
	return n;
}

int host_repl(lua_State *L)
{
	const struct editor *ed_ops = &plain_editor;
	char *hist = NULL, *acc = NULL;
	sigset_t omask;
	int tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
	int top = lua_gettop(L), status = 0;

	/* the helper table stays at helper_idx for the whole session */
	lua_pushcfunction(L, pcall_require);
	if (lua_pcall(L, 0, 1, 0) || !lua_istable(L, -1)) {
		fprintf(stderr, "bpfhost: REPL helpers unavailable (%s); printing with tostring\n",
			lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
		lua_pop(L, 1);
		helper_idx = 0;
	} else {
		helper_idx = lua_gettop(L);
	}
	replL = L;

	if (tty) {
		hist = history_path();
#ifdef BH_READLINE
		ed_ops = &rl_editor;
#else
		ed_ops = &el_editor;
#endif
		if (ed_ops->open(hist)) {
			fprintf(stderr, "bpfhost: libedit not found: no line editing or history\n");
			ed_ops = &plain_editor;
		}
	}
	install_handlers();
	if (tty)
		printf("bpfhost %s, %s. help() lists the API; Ctrl-D leaves.\n", BH_VERSION,
		       LUAJIT_VERSION);

	for (;;) {
		char *line;
		int base, loaded;

		got_int = got_term = 0;
		cancelled = 0;
		block_signals(&omask);
		wait_mask = omask;
		sigdelset(&wait_mask, SIGINT);
		sigdelset(&wait_mask, SIGTERM);
		sigdelset(&wait_mask, SIGWINCH);
		if (ed_ops == &plain_editor)
			sigprocmask(SIG_SETMASK, &omask, NULL); /* getline waits with them open */
		line = ed_ops->read(acc ? PROMPT2 : PROMPT);
		sigprocmask(SIG_SETMASK, &omask, NULL);
		if (got_term) {
			free(line);
			status = 128 + SIGTERM;
			break;
		}
		if (cancelled) {
			/* Ctrl-C: drop the line and any chunk being continued */
			free(line);
			free(acc);
			acc = NULL;
			if (ed_ops == &plain_editor && tty)
				fputc('\n', stdout);
			continue;
		}
		if (!line)
			break;
		if (!acc && !line[strspn(line, " \t")]) {
			free(line);
			continue;
		}
		acc = append(acc, line);
		free(line);
		if (!acc)
			break;
		base = lua_gettop(L);
		loaded = load_input(L, acc);
		if (loaded == LOAD_MORE)
			continue;
		ed_ops->add(acc);
		ed_ops->save(hist);
		if (loaded == LOAD_ERR) {
			host_report(L, 1);
			lua_settop(L, base);
		} else {
			int rc = host_docall(L, 0, LUA_MULTRET);

			fflush(stdout); /* what the statement printed comes before its error */
			if (rc) {
				report_error(L, bh_interrupted != 0);
				lua_settop(L, base);
			} else {
				print_results(L, base, acc);
			}
			host_sig_clear(L);
		}
		free(acc);
		acc = NULL;
	}
	free(acc);
	ed_ops->close();
	free(hist);
	if (tty && !got_term)
		fputc('\n', stdout);
	fflush(stdout);
	replL = NULL;
	helper_idx = 0;
	lua_settop(L, top);
	return status;
}
