/* prog.c: bpfhost.prog, a program of a loaded object, and attaching it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bh.h"

static struct bh_prog *prog_checkraw(lua_State *L, int idx)
{
	return bh_checkud(L, idx, BH_PROG_MT);
}

static struct bh_prog *prog_check_op(lua_State *L, int idx, const char *op)
{
	struct bh_prog *p = prog_checkraw(L, idx);

	if (!p->prog || !p->parent || !p->parent->obj)
		luaL_error(L, "%s program '%s': its object is closed", op, p->name);
	return p;
}

struct bh_prog *bh_prog_check(lua_State *L, int idx)
{
	return prog_check_op(L, idx, "use");
}

static struct bh_prog *prog_check_loaded(lua_State *L, int idx, const char *op)
{
	struct bh_prog *p = prog_check_op(L, idx, op);

	if (!p->parent->loaded)
		luaL_error(L, "%s program '%s': the object is not loaded yet (call obj:load() first)",
			   op, p->name);
	return p;
}

void bh_prog_push(lua_State *L, int objidx, struct bpf_program *prog)
{
	struct bh_prog *p;

	if (objidx < 0)
		objidx = lua_gettop(L) + objidx + 1;
	p = bh_newud(L, sizeof(*p));
	memset(p, 0, sizeof(*p));
	p->prog = prog;
	p->parent = lua_touserdata(L, objidx);
	snprintf(p->name, sizeof(p->name), "%s", bpf_program__name(prog));
	luaL_getmetatable(L, BH_PROG_MT);
	lua_setmetatable(L, -2);
	lua_createtable(L, 0, 1);
	lua_pushvalue(L, objidx);
	lua_setfield(L, -2, "parent");
	bh_setuv(L, -2);
}

/* Push the parent object of the program at idx. */
static void push_parent(lua_State *L, int idx)
{
	bh_getuv(L, idx);
	lua_getfield(L, -1, "parent");
	lua_remove(L, -2);
}

/* The attach kind of a program, from its section, for messages. */
static const char *sec_kind(const struct bpf_program *prog, char *buf, size_t n)
{
	const char *sec = bpf_program__section_name(prog);
	size_t i;

	for (i = 0; sec[i] && sec[i] != '/' && sec[i] != '.' && i + 1 < n; i++)
		buf[i] = sec[i];
	buf[i] = '\0';
	if (!strcmp(buf, "tp"))
		return "tracepoint";
	return buf;
}

/* Turn a failed attach into an error object that says what is missing. */
static __attribute__((noreturn)) void attach_fail(lua_State *L, struct bh_prog *p,
						  const char *kind, int err)
{
	char op[48];
	const char *reason = NULL, *hint = NULL;

	snprintf(op, sizeof(op), "attach %s", kind);
	if (!strncmp(kind, "kprobe", 6) || !strncmp(kind, "kretprobe", 9) ||
	    !strncmp(kind, "ksyscall", 8)) {
		if (err == ENOENT || err == EOPNOTSUPP || err == EINVAL)
			reason = "this kernel has no kprobe support (CONFIG_KPROBES)";
	} else if (!strcmp(kind, "tracepoint") && err == ENOENT) {
		reason = "no such tracepoint (or tracefs is not mounted)";
		hint = "tracepoints are listed in /sys/kernel/tracing/events";
	}
	bh_fail_msg(L, op, "program", p->name, err, reason, hint, NULL);
}

/* Attach by SEC(); pushes the link, or nil when the SEC names no target. */
static int prog_attach_common(lua_State *L, int auto_only)
{
	struct bh_prog *p = prog_check_loaded(L, 1, "attach");
	char kb[24];
	const char *kind = sec_kind(p->prog, kb, sizeof(kb));
	struct bpf_link *link;
	int err;

	bh_ensure_tracefs();
	link = bpf_program__attach(p->prog);
	if (!link) {
		err = errno;
		if (err == EOPNOTSUPP && auto_only) {
			lua_pushnil(L);
			return 1;
		}
		if (err == EOPNOTSUPP)
			bh_fail_msg(L, "attach", "program", p->name, err,
				    "its SEC() does not say where to attach",
				    "use an explicit form: attach_xdp, attach_tc, attach_cgroup, "
				    "attach_uprobe, ...",
				    NULL);
		attach_fail(L, p, kind, err);
	}
	push_parent(L, 1);
	bh_link_push(L, lua_gettop(L), link, p->name, kind);
	return 1;
}

int bh_prog_attach_pcall(lua_State *L)
{
	return prog_attach_common(L, 1);
}

static int prog_attach(lua_State *L)
{
	return prog_attach_common(L, 0);
}

static int prog_attach_tracepoint(lua_State *L)
{
	struct bh_prog *p = prog_check_loaded(L, 1, "attach_tracepoint");
	const char *cat = luaL_checkstring(L, 2);
	const char *name = luaL_checkstring(L, 3);
	struct bpf_link *link;

	bh_ensure_tracefs();
	link = bpf_program__attach_tracepoint(p->prog, cat, name);
	if (!link)
		attach_fail(L, p, "tracepoint", errno);
	push_parent(L, 1);
	bh_link_push(L, lua_gettop(L), link, p->name, "tracepoint");
	return 1;
}

static int prog_attach_raw_tracepoint(lua_State *L)
{
	struct bh_prog *p = prog_check_loaded(L, 1, "attach_raw_tracepoint");
	const char *name = luaL_checkstring(L, 2);
	struct bpf_link *link;

	link = bpf_program__attach_raw_tracepoint(p->prog, name);
	if (!link)
		attach_fail(L, p, "raw_tracepoint", errno);
	push_parent(L, 1);
	bh_link_push(L, lua_gettop(L), link, p->name, "raw_tracepoint");
	return 1;
}

static int prog_index(lua_State *L)
{
	struct bh_prog *p = prog_checkraw(L, 1);
	const char *k = luaL_checkstring(L, 2);

	lua_getmetatable(L, 1);
	lua_getfield(L, -1, "__methods");
	lua_getfield(L, -1, k);
	if (!lua_isnil(L, -1))
		return 1;
	lua_settop(L, 2);
	if (!strcmp(k, "name")) {
		lua_pushstring(L, p->name);
		return 1;
	}
	if (!p->prog || !p->parent || !p->parent->obj) {
		lua_pushnil(L);
		return 1;
	}
	if (!strcmp(k, "section"))
		lua_pushstring(L, bpf_program__section_name(p->prog));
	else if (!strcmp(k, "type"))
		lua_pushstring(L, libbpf_bpf_prog_type_str(bpf_program__type(p->prog)));
	else if (!strcmp(k, "fd"))
		lua_pushinteger(L, p->parent->loaded ? bpf_program__fd(p->prog) : -1);
	else
		lua_pushnil(L);
	return 1;
}

static int prog_tostring(lua_State *L)
{
	struct bh_prog *p = prog_checkraw(L, 1);

	if (!p->prog || !p->parent || !p->parent->obj)
		lua_pushfstring(L, "program '%s' (object closed)", p->name);
	else
		lua_pushfstring(L, "program '%s' %s", p->name, bpf_program__section_name(p->prog));
	return 1;
}

static const luaL_Reg prog_meta[] = {
	{ "__tostring", prog_tostring },
	{ "__index", prog_index },
	{ NULL, NULL },
};

static const luaL_Reg prog_methods[] = {
	{ "attach", prog_attach },
	{ "attach_tracepoint", prog_attach_tracepoint },
	{ "attach_raw_tracepoint", prog_attach_raw_tracepoint },
	{ NULL, NULL },
};

void bh_prog_init(lua_State *L)
{
	bh_newmetatable(L, BH_PROG_MT, prog_meta, NULL);
	lua_newtable(L);
	bh_setfuncs(L, prog_methods, 0);
	lua_setfield(L, -2, "__methods");
	lua_pop(L, 1);
}
