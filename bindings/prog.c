/* prog.c: bpfhost.prog, a program of an object: settings before load, attaching, test runs. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/syscall.h>
#include <linux/if_link.h>
#include <linux/perf_event.h>

#include "bh.h"

/* tcx attach points (kernel 6.6); the uapi headers libbpf 1.1 builds with may predate them. */
#define BH_TCX_INGRESS 46
#define BH_TCX_EGRESS  47

/* ------------------------------------------------------------------------ */
/* -- Checking ------------------------------------------------------------ */

static struct bh_prog *prog_checkraw(lua_State *L, int idx)
{
	return bh_checkud(L, idx, BH_PROG_MT);
}

/*
 * A program from bpf.open_pinned has no object (prog and parent NULL) and
 * its own fd (-1 once closed): it attaches where the kernel takes a program
 * fd (xdp, tc, cgroup, raw tracepoints) and runs test_run; what needs
 * libbpf's view of a program from its object says so (need_object).
 */
static int is_pinned(const struct bh_prog *p)
{
	return !p->parent;
}

/* The program's fd: < 0 when not loaded, closed, or its object is. */
int bh_prog_fd(const struct bh_prog *p)
{
	if (is_pinned(p))
		return p->fd;
	return p->prog && p->parent->obj ? bpf_program__fd(p->prog) : -1;
}

static enum bpf_prog_type prog_type(const struct bh_prog *p)
{
	return is_pinned(p) ? (enum bpf_prog_type)p->type : bpf_program__type(p->prog);
}

static struct bh_prog *prog_check_op(lua_State *L, int idx, const char *op)
{
	struct bh_prog *p = prog_checkraw(L, idx);

	if (is_pinned(p)) {
		if (p->fd < 0)
			luaL_error(L, "%s program '%s': it is closed", op, p->name);
		return p;
	}
	if (!p->prog || !p->parent->obj)
		luaL_error(L, "%s program '%s': its object is closed", op, p->name);
	return p;
}

/* For what only a program of an object can do (libbpf attaches through it). */
static void need_object(lua_State *L, struct bh_prog *p, const char *op)
{
	if (is_pinned(p))
		luaL_error(L, "%s program '%s': a program opened from a pin has no object to do "
			      "that through (it takes attach_xdp, attach_tc, attach_cgroup with an "
			      "attach type, attach_raw_tracepoint and test_run)", op, p->name);
}

struct bh_prog *bh_prog_check(lua_State *L, int idx)
{
	return prog_check_op(L, idx, "use");
}

/* Arguments are checked first (so that their errors need no kernel), then this. */
static void need_loaded(lua_State *L, struct bh_prog *p, const char *op)
{
	if (is_pinned(p))
		return; /* loaded, or it could not be pinned */
	if (!p->parent->loaded)
		luaL_error(L, "%s program '%s': the object is not loaded yet (call obj:load() first)",
			   op, p->name);
	if (bpf_program__fd(p->prog) < 0)
		luaL_error(L, "%s program '%s': it was not loaded (autoload is off)", op, p->name);
}

static struct bh_prog *prog_check_loaded(lua_State *L, int idx, const char *op)
{
	struct bh_prog *p = prog_check_op(L, idx, op);

	need_loaded(L, p, op);
	return p;
}

/* prog_check_op, for a program of an object (need_object). */
static struct bh_prog *prog_check_obj(lua_State *L, int idx, const char *op)
{
	struct bh_prog *p = prog_check_op(L, idx, op);

	need_object(L, p, op);
	return p;
}

/* prog_check_obj, then need_loaded: for what checks no argument first. */
static struct bh_prog *prog_check_obj_loaded(lua_State *L, int idx, const char *op)
{
	struct bh_prog *p = prog_check_obj(L, idx, op);

	need_loaded(L, p, op);
	return p;
}

static struct bh_prog *prog_check_unloaded(lua_State *L, int idx, const char *op)
{
	struct bh_prog *p = prog_check_op(L, idx, op);

	if (is_pinned(p))
		luaL_error(L, "%s program '%s': a program opened from a pin is loaded already", op,
			   p->name);
	if (p->parent->loaded)
		luaL_error(L, "%s program '%s': the object is already loaded (program settings "
			   "apply before obj:load())", op, p->name);
	return p;
}

/*
 * Push a program handle named name with fd (-1 for a program of an object)
 * and its uservalue table, whose field key is set to the value on top (which
 * is popped): "parent", the object; or "path", the pin.
 */
static struct bh_prog *prog_newud(lua_State *L, const char *name, int fd, const char *key)
{
	struct bh_prog *p = bh_newud(L, sizeof(*p));

	memset(p, 0, sizeof(*p));
	p->fd = fd;
	snprintf(p->name, sizeof(p->name), "%s", name);
	luaL_getmetatable(L, BH_PROG_MT);
	lua_setmetatable(L, -2);
	lua_createtable(L, 0, 1);
	lua_pushvalue(L, -3);
	lua_setfield(L, -2, key);
	bh_setuv(L, -2);
	lua_remove(L, -2);
	return p;
}

void bh_prog_push(lua_State *L, int objidx, struct bpf_program *prog)
{
	struct bh_prog *p;

	if (objidx < 0)
		objidx = lua_gettop(L) + objidx + 1;
	lua_pushvalue(L, objidx);
	p = prog_newud(L, bpf_program__name(prog), -1, "parent");
	p->prog = prog;
	p->parent = lua_touserdata(L, objidx);
}

/* Push the parent object of the program at idx. */
static void push_parent(lua_State *L, int idx)
{
	bh_getuv(L, idx);
	lua_getfield(L, -1, "parent");
	lua_remove(L, -2);
}

/* Push a handle for link (made for the program at 1); the object keeps it. */
static int push_link(lua_State *L, struct bh_prog *p, struct bpf_link *link, const char *kind)
{
	push_parent(L, 1);
	bh_link_push(L, lua_gettop(L), link, p->name, kind);
	return 1;
}

static int adopt_link(lua_State *L, struct bh_link *tmpl, int created)
{
	push_parent(L, 1);
	bh_link_adopt(L, lua_gettop(L), tmpl, created);
	return 1;
}

static void link_tmpl(struct bh_link *t, struct bh_prog *p, const char *kind, int impl)
{
	memset(t, 0, sizeof(*t));
	t->fd = -1;
	t->impl = impl;
	snprintf(t->name, sizeof(t->name), "%s", p->name);
	snprintf(t->kind, sizeof(t->kind), "%s", kind);
}

/* ------------------------------------------------------------------------ */
/* -- Options ------------------------------------------------------------- */

/* Field k of the option table at idx as an integer in [lo, hi]; def when absent. */
static lua_Integer opt_int(lua_State *L, int idx, const char *fn, const char *k, lua_Integer def,
			   lua_Integer lo, lua_Integer hi)
{
	lua_Integer v = def;

	if (lua_type(L, idx) != LUA_TTABLE)
		return def;
	lua_getfield(L, idx, k);
	if (!lua_isnil(L, -1)) {
		lua_Number d;

		if (lua_type(L, -1) != LUA_TNUMBER)
			luaL_error(L, "%s: option '%s' must be an integer, got %s", fn, k,
				   luaL_typename(L, -1));
		d = lua_tonumber(L, -1);
		if (d != (lua_Number)(lua_Integer)d || d < (lua_Number)lo || d > (lua_Number)hi)
			luaL_error(L, "%s: option '%s' must be an integer in [%s, %s], got %s", fn, k,
				   bh_numstr(L, (lua_Number)lo), bh_numstr(L, (lua_Number)hi),
				   bh_numstr(L, d));
		v = (lua_Integer)d;
	}
	lua_pop(L, 1);
	return v;
}

static const char *opt_str(lua_State *L, int idx, const char *fn, const char *k)
{
	const char *s = NULL;

	if (lua_type(L, idx) != LUA_TTABLE)
		return NULL;
	lua_getfield(L, idx, k);
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "%s: option '%s' must be a string, got %s", fn, k,
				   luaL_typename(L, -1));
		s = lua_tostring(L, -1);
	}
	lua_pop(L, 1); /* the string stays alive in the option table */
	return s;
}

static int opt_boolean(lua_State *L, int idx, const char *fn, const char *k, int def)
{
	int v = def;

	if (lua_type(L, idx) != LUA_TTABLE)
		return def;
	lua_getfield(L, idx, k);
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TBOOLEAN)
			luaL_error(L, "%s: option '%s' must be a boolean, got %s", fn, k,
				   luaL_typename(L, -1));
		v = lua_toboolean(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

static void need_table(lua_State *L, int idx, const char *fn)
{
	if (lua_type(L, idx) != LUA_TTABLE)
		luaL_error(L, "%s: options must be a table, got %s", fn, luaL_typename(L, idx));
}

/*
 * An interface given by name or index, at idx (or option field k when k).
 * Pushes nothing; returns the index.
 */
static int check_ifindex(lua_State *L, int idx, const char *fn, const char *what)
{
	char name[IF_NAMESIZE];

	if (lua_type(L, idx) == LUA_TNUMBER) {
		lua_Number d = lua_tonumber(L, idx);

		if (d < 1 || d > 0x7fffffff || d != (lua_Number)(int)d)
			luaL_error(L, "%s: %s must be an interface name or a positive index, got %s",
				   fn, what, bh_numstr(L, d));
		if (!if_indextoname((unsigned)d, name))
			luaL_error(L, "%s: no interface with index %d", fn, (int)d);
		return (int)d;
	}
	if (lua_type(L, idx) == LUA_TSTRING) {
		size_t n;
		const char *s = lua_tolstring(L, idx, &n);
		unsigned i;

		if (!n || n >= IF_NAMESIZE)
			luaL_error(L, "%s: '%s' is not an interface name (1 to %d characters)", fn, s,
				   IF_NAMESIZE - 1);
		i = if_nametoindex(s);
		if (!i)
			luaL_error(L, "%s: no interface '%s' (in this network namespace)", fn, s);
		return (int)i;
	}
	return luaL_error(L, "%s: %s must be an interface name or index, got %s", fn, what,
			  luaL_typename(L, idx));
}

/* ------------------------------------------------------------------------ */
/* -- Kernel features and failures ----------------------------------------- */

static int have_kprobes(void)
{
	if (!access("/sys/bus/event_source/devices/kprobe/type", F_OK))
		return 1;
	bh_ensure_tracefs();
	return !access("/sys/kernel/tracing/kprobe_events", F_OK) ||
	       !access("/sys/kernel/debug/tracing/kprobe_events", F_OK);
}

static int have_uprobes(void)
{
	if (!access("/sys/bus/event_source/devices/uprobe/type", F_OK))
		return 1;
	bh_ensure_tracefs();
	return !access("/sys/kernel/tracing/uprobe_events", F_OK) ||
	       !access("/sys/kernel/debug/tracing/uprobe_events", F_OK);
}

static int is_kprobe_kind(const char *kind)
{
	return !strcmp(kind, "kprobe") || !strcmp(kind, "kretprobe") || !strcmp(kind, "ksyscall") ||
	       !strcmp(kind, "kretsyscall");
}

static __attribute__((noreturn)) void no_kprobes(lua_State *L, struct bh_prog *p, const char *kind)
{
	bh_fail_msg(L, "attach", kind, p->name, EOPNOTSUPP,
		    "this kernel has no kprobe support (CONFIG_KPROBES)",
		    "trace with a tracepoint, raw_tp or tp_btf program instead", NULL);
}

/* The attach kind of a program, from its section, for messages. */
static const char *sec_kind(const struct bpf_program *prog, char *buf, size_t n)
{
	const char *sec = bpf_program__section_name(prog);
	size_t i;

	if (*sec == '?')
		sec++;
	for (i = 0; sec[i] && sec[i] != '/' && sec[i] != '.' && sec[i] != '+' && i + 1 < n; i++)
		buf[i] = sec[i];
	buf[i] = '\0';
	if (!strcmp(buf, "tp"))
		return "tracepoint";
	if (!strcmp(buf, "raw_tracepoint"))
		return "raw_tp";
	if (!strcmp(buf, "classifier"))
		return "tc";
	return buf;
}

/* Turn a failed attach into an error object that says what is missing. */
static __attribute__((noreturn)) void attach_fail(lua_State *L, struct bh_prog *p,
						  const char *kind, int err, const char *reason,
						  const char *hint)
{
	if (is_kprobe_kind(kind) && !have_kprobes())
		no_kprobes(L, p, kind);
	if (!reason) {
		if ((!strcmp(kind, "uprobe") || !strcmp(kind, "uretprobe") || !strcmp(kind, "usdt")) &&
		    !have_uprobes()) {
			reason = "this kernel has no uprobe support (CONFIG_UPROBES)";
			err = EOPNOTSUPP;
		} else if (!strcmp(kind, "tracepoint") && err == ENOENT) {
			reason = "no such tracepoint (or tracefs is not mounted)";
			hint = "tracepoints are listed in /sys/kernel/tracing/events";
		} else if (!strcmp(kind, "raw_tp") && err == ENOENT) {
			reason = "no such raw tracepoint";
			hint = "raw tracepoints are the tracepoint names without their category: "
			       "\"sys_enter\", \"sched_switch\"";
		} else if ((!strcmp(kind, "fentry") || !strcmp(kind, "fexit") ||
			    !strcmp(kind, "fmod_ret") || !strcmp(kind, "lsm") ||
			    !strcmp(kind, "freplace")) &&
			   (err == EPERM || err == EOPNOTSUPP || err == ENOTSUP || err == 524)) {
			reason = "this kernel refuses BPF trampolines (fentry/fexit/fmod_ret/lsm)";
		}
	}
	bh_fail_msg(L, "attach", kind, p->name, err, reason, hint, NULL);
}

/* ------------------------------------------------------------------------ */
/* -- Settings before load ------------------------------------------------ */

static int prog_set_autoload(lua_State *L)
{
	struct bh_prog *p = prog_check_unloaded(L, 1, "set_autoload");
	int on;

	luaL_checktype(L, 2, LUA_TBOOLEAN);
	on = lua_toboolean(L, 2);
	if (bpf_program__set_autoload(p->prog, on))
		bh_fail(L, "set_autoload", "program", p->name, errno, NULL, NULL);
	lua_settop(L, 1);
	return 1;
}

/*
 * p:set_attach_target(func[, target_prog]): the kernel function (fentry,
 * fexit, tp_btf: the tracepoint) or, with target_prog, the BPF function
 * (freplace) to attach to. Kept by the object, so a reload for a longer
 * verifier log sees it too.
 */
static int prog_set_attach_target(lua_State *L)
{
	struct bh_prog *p = prog_check_unloaded(L, 1, "set_attach_target");
	const char *func = luaL_checkstring(L, 2);
	int tfd = 0;

	if (!lua_isnoneornil(L, 3)) {
		struct bh_prog *t = bh_prog_check(L, 3);

		if ((t->parent && !t->parent->loaded) || (tfd = bh_prog_fd(t)) < 0)
			luaL_error(L, "set_attach_target program '%s': target program '%s' is not "
				   "loaded", p->name, t->name);
	}
	if (bpf_program__set_attach_target(p->prog, tfd, func))
		bh_fail_msg(L, "set_attach_target", "program", p->name, errno,
			    errno == ESRCH || errno == ENOENT ? "no such function in the kernel's "
							       "(or the target's) BTF" : NULL,
			    NULL, NULL);
	push_parent(L, 1);
	bh_object_cfg(L, lua_gettop(L), "target");
	lua_createtable(L, 2, 0);
	lua_pushvalue(L, 2);
	lua_rawseti(L, -2, 1);
	if (!lua_isnoneornil(L, 3)) {
		lua_pushvalue(L, 3);
		lua_rawseti(L, -2, 2);
	}
	lua_setfield(L, -2, p->name);
	lua_settop(L, 1);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Attach by SEC() and the plain forms ---------------------------------- */

/* Iterators over one map's elements cannot attach without that map. */
static int iter_needs_map(const struct bpf_program *prog)
{
	const char *sec = bpf_program__section_name(prog);

	return !strcmp(sec, "iter/bpf_map_elem") || !strcmp(sec, "iter/bpf_sk_storage_map") ||
	       !strcmp(sec, "iter/sockmap") || !strcmp(sec, "iter.s/bpf_map_elem");
}

/* Attach by SEC(); pushes the link, or nil when the SEC names no target. */
static int prog_attach_common(lua_State *L, int auto_only)
{
	struct bh_prog *p = prog_check_obj_loaded(L, 1, "attach");
	char kb[24];
	const char *kind = sec_kind(p->prog, kb, sizeof(kb));
	struct bpf_link *link;
	int err;

	if (is_kprobe_kind(kind) && !have_kprobes())
		no_kprobes(L, p, kind);
	if (!strcmp(kind, "iter") && iter_needs_map(p->prog)) {
		if (auto_only) {
			lua_pushnil(L);
			return 1;
		}
		luaL_error(L, "attach program '%s': this iterator needs a map: "
			   "p:attach_iter{map = m}", p->name);
	}
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
				    "attach_uprobe, attach_usdt, attach_perf_event, ...",
				    NULL);
		attach_fail(L, p, kind, err, NULL, NULL);
	}
	return push_link(L, p, link, kind);
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
	struct bh_prog *p = prog_check_obj_loaded(L, 1, "attach_tracepoint");
	const char *cat = luaL_checkstring(L, 2);
	const char *name = luaL_checkstring(L, 3);
	struct bpf_link *link;

	bh_ensure_tracefs();
	link = bpf_program__attach_tracepoint(p->prog, cat, name);
	if (!link)
		attach_fail(L, p, "tracepoint", errno, NULL, NULL);
	return push_link(L, p, link, "tracepoint");
}

static int prog_attach_raw_tracepoint(lua_State *L)
{
	struct bh_prog *p = prog_check_loaded(L, 1, "attach_raw_tracepoint");
	const char *name = luaL_checkstring(L, 2);
	struct bpf_link *link;

	if (is_pinned(p)) {
		struct bh_link t;

		link_tmpl(&t, p, "raw_tp", BH_LINK_FD);
		t.fd = bpf_raw_tracepoint_open(name, p->fd);
		if (t.fd < 0)
			attach_fail(L, p, "raw_tp", errno, NULL, NULL);
		return adopt_link(L, &t, 0);
	}
	link = bpf_program__attach_raw_tracepoint(p->prog, name);
	if (!link)
		attach_fail(L, p, "raw_tp", errno, NULL, NULL);
	return push_link(L, p, link, "raw_tp");
}

/* p:attach_trace(): tp_btf, fentry, fexit, fmod_ret, freplace; the target was fixed at load. */
static int prog_attach_trace(lua_State *L)
{
	struct bh_prog *p = prog_check_obj(L, 1, "attach_trace");
	char kb[24];
	const char *kind = sec_kind(p->prog, kb, sizeof(kb));
	enum bpf_prog_type t = bpf_program__type(p->prog);
	struct bpf_link *link;

	if (t != BPF_PROG_TYPE_TRACING && t != BPF_PROG_TYPE_EXT)
		luaL_error(L, "attach_trace program '%s': a %s program is not a tracing program "
			   "(tp_btf, fentry, fexit, fmod_ret)", p->name, libbpf_bpf_prog_type_str(t));
	need_loaded(L, p, "attach_trace");
	link = bpf_program__attach_trace(p->prog);
	if (!link)
		attach_fail(L, p, kind, errno, NULL, NULL);
	return push_link(L, p, link, kind);
}

static int prog_attach_lsm(lua_State *L)
{
	struct bh_prog *p = prog_check_obj(L, 1, "attach_lsm");
	struct bpf_link *link;

	if (bpf_program__type(p->prog) != BPF_PROG_TYPE_LSM)
		luaL_error(L, "attach_lsm program '%s': a %s program is not an lsm program", p->name,
			   libbpf_bpf_prog_type_str(bpf_program__type(p->prog)));
	need_loaded(L, p, "attach_lsm");
	link = bpf_program__attach_lsm(p->prog);
	if (!link)
		attach_fail(L, p, "lsm", errno, NULL,
			    errno == EINVAL ? "is \"bpf\" in the kernel's lsm= list?" : NULL);
	return push_link(L, p, link, "lsm");
}

static const char *const kprobe_opts[] = { "func", "offset", "retprobe", NULL };

/* p:attach_kprobe{func =, offset =, retprobe =} */
static int prog_attach_kprobe(lua_State *L)
{
	struct bh_prog *p = prog_check_obj(L, 1, "attach_kprobe");
	const char *func;
	lua_Integer off;
	int ret;
	const char *kind;
	struct bpf_link *link;

	need_table(L, 2, "attach_kprobe");
	bh_opt_check(L, 2, "attach_kprobe", kprobe_opts);
	func = opt_str(L, 2, "attach_kprobe", "func");
	off = opt_int(L, 2, "attach_kprobe", "offset", 0, 0, 0x7fffffff);
	ret = opt_boolean(L, 2, "attach_kprobe", "retprobe",
			  !strncmp(bpf_program__section_name(p->prog), "kretprobe", 9));
	if (!func)
		luaL_error(L, "attach_kprobe: option 'func' (the kernel function) is required");
	need_loaded(L, p, "attach_kprobe");
	kind = ret ? "kretprobe" : "kprobe";
	if (!have_kprobes())
		no_kprobes(L, p, kind);
	{
		LIBBPF_OPTS(bpf_kprobe_opts, ko, .offset = (size_t)off, .retprobe = ret);

		link = bpf_program__attach_kprobe_opts(p->prog, func, &ko);
	}
	if (!link)
		attach_fail(L, p, kind, errno,
			    errno == ENOENT ? "no such kernel function (or it cannot be probed)" : NULL,
			    NULL);
	return push_link(L, p, link, kind);
}

static const char *const uprobe_opts[] = { "binary", "func", "offset", "retprobe", "pid",
					   "cookie", NULL };

/* p:attach_uprobe{binary =, func = | offset =, retprobe =, pid =, cookie =} */
static int prog_attach_uprobe(lua_State *L)
{
	struct bh_prog *p = prog_check_obj(L, 1, "attach_uprobe");
	const char *bin, *func;
	lua_Integer off, pid, cookie;
	int ret;
	const char *kind;
	struct bpf_link *link;
	char reason[320];

	need_table(L, 2, "attach_uprobe");
	bh_opt_check(L, 2, "attach_uprobe", uprobe_opts);
	bin = opt_str(L, 2, "attach_uprobe", "binary");
	func = opt_str(L, 2, "attach_uprobe", "func");
	off = opt_int(L, 2, "attach_uprobe", "offset", 0, 0, (lua_Integer)1 << 52);
	pid = opt_int(L, 2, "attach_uprobe", "pid", -1, -1, 0x7fffffff);
	cookie = opt_int(L, 2, "attach_uprobe", "cookie", 0, 0, (lua_Integer)1 << 52);
	ret = opt_boolean(L, 2, "attach_uprobe", "retprobe",
			  !strncmp(bpf_program__section_name(p->prog), "uretprobe", 9));
	if (!bin)
		luaL_error(L, "attach_uprobe: option 'binary' (a path, or a library name) is required");
	if (!func && !off)
		luaL_error(L, "attach_uprobe: give option 'func' (a function name) or 'offset'");
	need_loaded(L, p, "attach_uprobe");
	kind = ret ? "uretprobe" : "uprobe";
	if (strchr(bin, '/') && access(bin, R_OK)) {
		int err = errno;

		bh_fail_msg(L, "attach", kind, p->name, err,
			    lua_pushfstring(L, "cannot read binary '%s'", bin), NULL, NULL);
	}
	{
		LIBBPF_OPTS(bpf_uprobe_opts, uo, .retprobe = ret, .func_name = func,
			    .bpf_cookie = (uint64_t)cookie);

		bh_ensure_tracefs();
		link = bpf_program__attach_uprobe_opts(p->prog, (pid_t)pid, bin, (size_t)off, &uo);
	}
	if (!link) {
		int err = errno;

		if (func && (err == ENOENT || err == ESRCH)) {
			snprintf(reason, sizeof(reason), "no function '%s' in '%s'", func, bin);
			attach_fail(L, p, kind, err, reason, "the binary's symbols: nm -D BINARY");
		}
		attach_fail(L, p, kind, err, NULL, NULL);
	}
	return push_link(L, p, link, kind);
}

static const char *const usdt_opts[] = { "binary", "provider", "name", "pid", "cookie", NULL };

/* p:attach_usdt{binary =, provider =, name =, pid =, cookie =} */
static int prog_attach_usdt(lua_State *L)
{
	struct bh_prog *p = prog_check_obj(L, 1, "attach_usdt");
	const char *bin, *prov, *name;
	lua_Integer pid, cookie;
	struct bpf_link *link;
	char reason[320];

	need_table(L, 2, "attach_usdt");
	bh_opt_check(L, 2, "attach_usdt", usdt_opts);
	bin = opt_str(L, 2, "attach_usdt", "binary");
	prov = opt_str(L, 2, "attach_usdt", "provider");
	name = opt_str(L, 2, "attach_usdt", "name");
	pid = opt_int(L, 2, "attach_usdt", "pid", -1, -1, 0x7fffffff);
	cookie = opt_int(L, 2, "attach_usdt", "cookie", 0, 0, (lua_Integer)1 << 52);
	if (!bin || !prov || !name)
		luaL_error(L, "attach_usdt: options 'binary', 'provider' and 'name' are required");
	need_loaded(L, p, "attach_usdt");
	if (strchr(bin, '/') && access(bin, R_OK)) {
		int err = errno;

		bh_fail_msg(L, "attach", "usdt", p->name, err,
			    lua_pushfstring(L, "cannot read binary '%s'", bin), NULL, NULL);
	}
	{
		LIBBPF_OPTS(bpf_usdt_opts, uo, .usdt_cookie = (uint64_t)cookie);

		bh_ensure_tracefs();
		link = bpf_program__attach_usdt(p->prog, (pid_t)pid, bin, prov, name, &uo);
	}
	if (!link) {
		int err = errno;

		if (err == ENOENT) {
			snprintf(reason, sizeof(reason), "no USDT probe %s:%s in '%s'", prov, name,
				 bin);
			attach_fail(L, p, "usdt", err, reason, "list them: readelf -n BINARY");
		}
		attach_fail(L, p, "usdt", err, NULL,
			    err == EINVAL ? "is it a program with SEC(\"usdt\") that includes "
					    "<bpf/usdt.bpf.h>?" : NULL);
	}
	return push_link(L, p, link, "usdt");
}

/* ------------------------------------------------------------------------ */
/* -- Network attach points ----------------------------------------------- */

static const char *const xdp_opts[] = { "replace", NULL };

static void xdp_busy(lua_State *L, struct bh_prog *p, int ifindex, int err)
{
	uint32_t id = 0;
	char ifname[IF_NAMESIZE] = "?";

	if_indextoname((unsigned)ifindex, ifname);
	bpf_xdp_query_id(ifindex, 0, &id);
	attach_fail(L, p, "xdp", err,
		    lua_pushfstring(L, "interface '%s' already has an XDP program (id %d)", ifname,
				    (int)id),
		    "swap the program of a link with link:update_prog(p); replace one attached "
		    "without a link with {replace = true}");
}

/*
 * p:attach_xdp(ifname | ifindex[, mode[, {replace = bool}]]): a BPF link by
 * default (the kernel refuses a second program: EBUSY); with replace, a
 * netlink attachment that replaces the interface's program, detached on
 * close only while it is still ours.
 */
static int prog_attach_xdp(lua_State *L)
{
	struct bh_prog *p = prog_check_op(L, 1, "attach_xdp");
	const char *mode = luaL_optstring(L, 3, NULL);
	uint32_t flags = 0;
	int ifindex, replace, pfd, err;
	char ifname[IF_NAMESIZE] = "?";
	struct bh_link t;

	if (mode && !strcmp(mode, "skb"))
		flags = XDP_FLAGS_SKB_MODE;
	else if (mode && !strcmp(mode, "drv"))
		flags = XDP_FLAGS_DRV_MODE;
	else if (mode && !strcmp(mode, "hw"))
		flags = XDP_FLAGS_HW_MODE;
	else if (mode)
		luaL_error(L, "attach_xdp: mode must be \"skb\", \"drv\" or \"hw\", got \"%s\"", mode);
	bh_opt_check(L, 4, "attach_xdp", xdp_opts);
	replace = opt_boolean(L, 4, "attach_xdp", "replace", 0);
	if (prog_type(p) != BPF_PROG_TYPE_XDP)
		luaL_error(L, "attach_xdp program '%s': a %s program is not an XDP program", p->name,
			   libbpf_bpf_prog_type_str(prog_type(p)));
	need_loaded(L, p, "attach_xdp");
	pfd = bh_prog_fd(p);
	ifindex = check_ifindex(L, 2, "attach_xdp", "the interface");
	if_indextoname((unsigned)ifindex, ifname);
	link_tmpl(&t, p, "xdp", replace ? BH_LINK_XDP : BH_LINK_FD);
	t.ifindex = ifindex;
	t.flags = flags;
	if (replace) {
		t.fd = fcntl(pfd, F_DUPFD_CLOEXEC, 3);
		if (t.fd < 0)
			bh_fail(L, "attach", "xdp", p->name, errno, NULL, NULL);
		if (bpf_xdp_attach(ifindex, pfd, flags, NULL)) {
			err = errno;
			close(t.fd);
			if (err == EBUSY || err == EEXIST)
				xdp_busy(L, p, ifindex, err);
			goto fail;
		}
	} else {
		LIBBPF_OPTS(bpf_link_create_opts, lo, .flags = flags);

		t.fd = bpf_link_create(pfd, ifindex, BPF_XDP, &lo);
		if (t.fd < 0) {
			err = errno;
			if (err == EBUSY || err == EEXIST)
				xdp_busy(L, p, ifindex, err);
			goto fail;
		}
	}
	return adopt_link(L, &t, 0);
fail:
	{
		const char *reason = NULL;

		if (flags == XDP_FLAGS_HW_MODE && (err == EOPNOTSUPP || err == EINVAL))
			reason = lua_pushfstring(L, "the driver of '%s' has no XDP offload (mode \"hw\")",
						 ifname);
		else if (flags == XDP_FLAGS_DRV_MODE && (err == EOPNOTSUPP || err == EINVAL))
			reason = lua_pushfstring(L, "the driver of '%s' has no native XDP (mode "
						 "\"drv\"); use \"skb\"", ifname);
		attach_fail(L, p, "xdp", err, reason, NULL);
	}
}

static const char *const tc_opts[] = { "ifname", "ifindex", "direction", "priority", "handle",
				       "replace", "tcx", NULL };

/*
 * p:attach_tc{ifname = | ifindex =, direction = "ingress" | "egress",
 * priority =, handle =, replace =, tcx =}: a direct-action filter on the
 * interface's clsact qdisc (made when missing, removed with the last filter
 * that needed it), or with tcx = true a tcx BPF link (kernel 6.6).
 */
static int prog_attach_tc(lua_State *L)
{
	struct bh_prog *p = prog_check_op(L, 1, "attach_tc");
	const char *dir;
	lua_Integer prio, handle;
	int ingress, replace, tcx, ifindex, created = 0, pfd;
	enum bpf_prog_type pt = prog_type(p);
	struct bh_link t;

	need_table(L, 2, "attach_tc");
	bh_opt_check(L, 2, "attach_tc", tc_opts);
	dir = opt_str(L, 2, "attach_tc", "direction");
	prio = opt_int(L, 2, "attach_tc", "priority", 0, 0, 0xffff);
	handle = opt_int(L, 2, "attach_tc", "handle", 0, 0, 0xffffffffLL);
	replace = opt_boolean(L, 2, "attach_tc", "replace", 0);
	tcx = opt_boolean(L, 2, "attach_tc", "tcx", 0);
	if (!dir || !strcmp(dir, "ingress"))
		ingress = 1;
	else if (!strcmp(dir, "egress"))
		ingress = 0;
	else
		return luaL_error(L, "attach_tc: direction must be \"ingress\" or \"egress\", got "
				  "\"%s\"", dir);
	if (replace && (!prio || !handle))
		luaL_error(L, "attach_tc: replace needs the 'handle' and 'priority' of the filter "
			   "to replace");
	if (tcx && (prio || handle || replace))
		luaL_error(L, "attach_tc: a tcx link has no priority, handle or replace");
	lua_getfield(L, 2, "ifname");
	lua_getfield(L, 2, "ifindex");
	if (lua_isnil(L, -2) == lua_isnil(L, -1))
		luaL_error(L, "attach_tc: give one of 'ifname' or 'ifindex'");
	if (pt != BPF_PROG_TYPE_SCHED_CLS)
		luaL_error(L, "attach_tc program '%s': a %s program is not a tc (sched_cls) "
			   "program", p->name, libbpf_bpf_prog_type_str(pt));
	need_loaded(L, p, "attach_tc");
	pfd = bh_prog_fd(p);
	ifindex = check_ifindex(L, lua_isnil(L, -2) ? -1 : -2, "attach_tc", "the interface");
	lua_pop(L, 2);

	if (tcx) {
		link_tmpl(&t, p, "tcx", BH_LINK_FD);
		t.fd = bpf_link_create(pfd, ifindex,
				       (enum bpf_attach_type)(ingress ? BH_TCX_INGRESS : BH_TCX_EGRESS),
				       NULL);
		if (t.fd < 0)
			attach_fail(L, p, "tcx", errno,
				    errno == EINVAL ? "this kernel has no tcx links (6.6 and later)" :
						      NULL, NULL);
		return adopt_link(L, &t, 0);
	}
	{
		DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
				    .attach_point = ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS);
		DECLARE_LIBBPF_OPTS(bpf_tc_opts, to, .prog_fd = pfd, .handle = (uint32_t)handle,
				    .priority = (uint32_t)prio,
				    .flags = replace ? BPF_TC_F_REPLACE : 0);
		int err = bpf_tc_hook_create(&hook);

		if (err && err != -EEXIST)
			attach_fail(L, p, "tc", -err, "cannot create the clsact qdisc", NULL);
		created = !err;
		err = bpf_tc_attach(&hook, &to);
		if (err) {
			if (created) {
				DECLARE_LIBBPF_OPTS(bpf_tc_hook, all, .ifindex = ifindex,
						    .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);

				bpf_tc_hook_destroy(&all);
			}
			attach_fail(L, p, "tc", -err,
				    -err == EEXIST ? "a filter with this handle and priority exists "
						     "(pass replace = true to replace it)" : NULL,
				    NULL);
		}
		link_tmpl(&t, p, "tc", BH_LINK_TC);
		t.ifindex = ifindex;
		t.flags = ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
		t.handle = to.handle;
		t.priority = to.priority;
	}
	return adopt_link(L, &t, created);
}

/* An attach type by libbpf's name ("cgroup_inet_egress"), or with "cgroup_" left off. */
static int attach_type_by_name(const char *s)
{
	int i;

	for (i = 0; i < 128; i++) {
		const char *n = libbpf_bpf_attach_type_str((enum bpf_attach_type)i);

		if (!n)
			continue;
		if (!strcmp(n, s) || (!strncmp(n, "cgroup_", 7) && !strcmp(n + 7, s)))
			return i;
	}
	return -1;
}

/* p:attach_cgroup(path[, attach_type]): a BPF link on a cgroup v2 directory. */
static int prog_attach_cgroup(lua_State *L)
{
	struct bh_prog *p = prog_check_op(L, 1, "attach_cgroup");
	const char *path = luaL_checkstring(L, 2);
	const char *tname = luaL_optstring(L, 3, NULL);
	int type = -1, cfd, err;
	struct bh_link t;

	if (tname) {
		type = attach_type_by_name(tname);
		if (type < 0)
			luaL_error(L, "attach_cgroup: unknown attach type '%s' (e.g. "
				   "\"cgroup_inet_ingress\", \"cgroup_inet_egress\", "
				   "\"cgroup_inet_sock_create\")", tname);
	}
	need_loaded(L, p, "attach_cgroup");
	if (type < 0 && is_pinned(p))
		luaL_error(L, "attach_cgroup program '%s': give the attach type (a program opened "
			      "from a pin does not say which it was loaded for), e.g. "
			      "\"cgroup_inet_ingress\"", p->name);
	cfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cfd < 0) {
		err = errno;
		bh_fail_msg(L, "attach", "cgroup", p->name, err,
			    lua_pushfstring(L, "cannot open cgroup '%s': %s", path, strerror(err)),
			    "a cgroup v2 directory, e.g. /sys/fs/cgroup/unified/NAME or "
			    "/sys/fs/cgroup/NAME", NULL);
	}
	if (type < 0) {
		struct bpf_link *link = bpf_program__attach_cgroup(p->prog, cfd);

		err = errno;
		close(cfd);
		if (!link)
			goto fail;
		return push_link(L, p, link, "cgroup");
	}
	link_tmpl(&t, p, "cgroup", BH_LINK_FD);
	t.fd = bpf_link_create(bh_prog_fd(p), cfd, (enum bpf_attach_type)type, NULL);
	err = errno;
	close(cfd);
	if (t.fd < 0)
		goto fail;
	return adopt_link(L, &t, 0);
fail:
	attach_fail(L, p, "cgroup", err,
		    err == EBADF || err == EINVAL ?
			    lua_pushfstring(L, "'%s' is not a cgroup v2 directory, or the program "
					    "does not fit this attach type", path) : NULL,
		    NULL);
}

static const char *const iter_opts[] = { "map", NULL };

/* p:attach_iter([{map = m}]): an iterator link; link:read() runs it. */
static int prog_attach_iter(lua_State *L)
{
	struct bh_prog *p = prog_check_obj(L, 1, "attach_iter");
	union bpf_iter_link_info li;
	struct bpf_link *link;

	bh_opt_check(L, 2, "attach_iter", iter_opts);
	memset(&li, 0, sizeof(li));
	if (bpf_program__type(p->prog) != BPF_PROG_TYPE_TRACING ||
	    bpf_program__expected_attach_type(p->prog) != BPF_TRACE_ITER)
		luaL_error(L, "attach_iter program '%s': not an iterator (SEC(\"iter/...\"))", p->name);
	if (iter_needs_map(p->prog)) {
		if (lua_istable(L, 2))
			lua_getfield(L, 2, "map");
		else
			lua_pushnil(L);
		if (lua_isnil(L, -1))
			luaL_error(L, "attach_iter program '%s': this iterator needs a map: "
				   "p:attach_iter{map = m}", p->name);
		lua_pop(L, 1);
	}
	need_loaded(L, p, "attach_iter");
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "map");
		if (!lua_isnil(L, -1)) {
			struct bh_map *m = bh_map_check(L, lua_gettop(L));

			li.map.map_fd = (uint32_t)m->fd;
		}
		lua_pop(L, 1);
	}
	{
		LIBBPF_OPTS(bpf_iter_attach_opts, io, .link_info = &li,
			    .link_info_len = sizeof(li));

		link = bpf_program__attach_iter(p->prog, li.map.map_fd ? &io : NULL);
	}
	if (!link)
		attach_fail(L, p, "iter", errno, NULL, NULL);
	return push_link(L, p, link, "iter");
}

/* Perf events by name, for attach_perf_event{event = ...}. */
static const struct {
	const char *name;
	uint32_t type;
	uint64_t config;
} perf_events[] = {
	{ "cpu-clock", PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK },
	{ "task-clock", PERF_TYPE_SOFTWARE, PERF_COUNT_SW_TASK_CLOCK },
	{ "page-faults", PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS },
	{ "context-switches", PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CONTEXT_SWITCHES },
	{ "cpu-migrations", PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_MIGRATIONS },
	{ "minor-faults", PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS_MIN },
	{ "major-faults", PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS_MAJ },
	{ "cpu-cycles", PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES },
	{ "instructions", PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS },
	{ "cache-references", PERF_TYPE_HARDWARE, PERF_COUNT_HW_CACHE_REFERENCES },
	{ "cache-misses", PERF_TYPE_HARDWARE, PERF_COUNT_HW_CACHE_MISSES },
	{ "branch-instructions", PERF_TYPE_HARDWARE, PERF_COUNT_HW_BRANCH_INSTRUCTIONS },
	{ "branch-misses", PERF_TYPE_HARDWARE, PERF_COUNT_HW_BRANCH_MISSES },
};

static const char *const perf_opts[] = { "event", "type", "config", "period", "freq", "cpu",
					 "pid", NULL };

/*
 * p:attach_perf_event{event = "cpu-clock" | type =, config =, period = | freq =,
 * cpu =, pid =}: one perf event (give cpu, pid or both), the program run on
 * each sample.
 */
static int prog_attach_perf_event(lua_State *L)
{
	struct bh_prog *p = prog_check_obj(L, 1, "attach_perf_event");
	struct perf_event_attr attr;
	const char *ev;
	lua_Integer period, freq, cpu, pid;
	struct bpf_link *link;
	int pfd;
	size_t i;

	need_table(L, 2, "attach_perf_event");
	bh_opt_check(L, 2, "attach_perf_event", perf_opts);
	memset(&attr, 0, sizeof(attr));
	attr.size = sizeof(attr);
	ev = opt_str(L, 2, "attach_perf_event", "event");
	if (ev) {
		for (i = 0; i < sizeof(perf_events) / sizeof(perf_events[0]); i++)
			if (!strcmp(perf_events[i].name, ev))
				break;
		if (i == sizeof(perf_events) / sizeof(perf_events[0]))
			luaL_error(L, "attach_perf_event: unknown event '%s' (known: cpu-clock, "
				   "task-clock, page-faults, context-switches, cpu-migrations, "
				   "minor-faults, major-faults, cpu-cycles, instructions, "
				   "cache-references, cache-misses, branch-instructions, "
				   "branch-misses; or give type and config)", ev);
		attr.type = perf_events[i].type;
		attr.config = perf_events[i].config;
	} else {
		lua_getfield(L, 2, "type");
		if (lua_isnil(L, -1))
			luaL_error(L, "attach_perf_event: give 'event' (a name) or 'type' and 'config'");
		lua_pop(L, 1);
		attr.type = (uint32_t)opt_int(L, 2, "attach_perf_event", "type", 0, 0, 0xffffffffLL);
		attr.config = (uint64_t)opt_int(L, 2, "attach_perf_event", "config", 0, 0,
						(lua_Integer)1 << 52);
	}
	period = opt_int(L, 2, "attach_perf_event", "period", 0, 0, (lua_Integer)1 << 52);
	freq = opt_int(L, 2, "attach_perf_event", "freq", 0, 0, 0x7fffffff);
	cpu = opt_int(L, 2, "attach_perf_event", "cpu", -1, -1, 0x7fffffff);
	pid = opt_int(L, 2, "attach_perf_event", "pid", -1, -1, 0x7fffffff);
	if (period && freq)
		luaL_error(L, "attach_perf_event: give 'period' or 'freq', not both");
	if (cpu < 0 && pid < 0)
		luaL_error(L, "attach_perf_event: give 'cpu' (one CPU, every process), 'pid' (one "
			   "process, 0 for this one) or both");
	if (cpu >= libbpf_num_possible_cpus())
		luaL_error(L, "attach_perf_event: no CPU %d (this machine has %d)", (int)cpu,
			   libbpf_num_possible_cpus());
	if (freq) {
		attr.freq = 1;
		attr.sample_freq = (uint64_t)freq;
	} else {
		attr.sample_period = period ? (uint64_t)period : 1;
	}
	if (bpf_program__type(p->prog) != BPF_PROG_TYPE_PERF_EVENT)
		luaL_error(L, "attach_perf_event program '%s': a %s program is not a perf_event "
			   "program", p->name, libbpf_bpf_prog_type_str(bpf_program__type(p->prog)));
	need_loaded(L, p, "attach_perf_event");
	pfd = (int)syscall(__NR_perf_event_open, &attr, (pid_t)pid, (int)cpu, -1,
			   PERF_FLAG_FD_CLOEXEC);
	if (pfd < 0) {
		int err = errno;

		attach_fail(L, p, "perf_event", err,
			    err == ENOENT && attr.type == PERF_TYPE_HARDWARE ?
				    "this machine has no hardware PMU for that event (a VM?)" :
			    err == ENODEV ? "no such CPU" :
			    err == ESRCH ? "no such process" : NULL,
			    err == EACCES || err == EPERM ?
				    "needs CAP_PERFMON (or kernel.perf_event_paranoid)" : NULL);
	}
	link = bpf_program__attach_perf_event(p->prog, pfd);
	if (!link) {
		int err = errno;

		close(pfd);
		attach_fail(L, p, "perf_event", err, NULL, NULL);
	}
	/* the link owns pfd from here: bpf_link__destroy closes it */
	return push_link(L, p, link, "perf_event");
}

/* ------------------------------------------------------------------------ */
/* -- Test runs ----------------------------------------------------------- */

/* The kernel's context type for test runs of a program type, or NULL. */
static const char *ctx_type_name(enum bpf_prog_type t)
{
	switch (t) {
	case BPF_PROG_TYPE_XDP:
		return "struct xdp_md";
	case BPF_PROG_TYPE_SCHED_CLS:
	case BPF_PROG_TYPE_SCHED_ACT:
	case BPF_PROG_TYPE_SOCKET_FILTER:
	case BPF_PROG_TYPE_CGROUP_SKB:
	case BPF_PROG_TYPE_LWT_IN:
	case BPF_PROG_TYPE_LWT_OUT:
	case BPF_PROG_TYPE_LWT_XMIT:
	case BPF_PROG_TYPE_LWT_SEG6LOCAL:
	case BPF_PROG_TYPE_FLOW_DISSECTOR:
		return "struct __sk_buff";
	case BPF_PROG_TYPE_SK_LOOKUP:
		return "struct bpf_sk_lookup";
	default:
		return NULL;
	}
}

static const char *const run_opts[] = { "data", "ctx", "repeat", "data_size_out", "flags", "cpu",
					NULL };

/*
 * Encode the ctx option (at -1: a string of bytes, a table for the program
 * type's context struct, or for raw_tp an array of u64 arguments) into a new
 * buffer userdata. Pushes the Type used (or nil) and the buffer.
 */
static void *encode_ctx(lua_State *L, struct bh_prog *p, size_t *len)
{
	int cidx = lua_gettop(L);
	enum bpf_prog_type t = prog_type(p);
	const char *tn = ctx_type_name(t);
	struct bh_type *ty;
	void *buf;

	if (lua_type(L, cidx) == LUA_TSTRING) {
		const char *s = lua_tolstring(L, cidx, len);

		lua_pushnil(L);
		buf = lua_newuserdata(L, *len ? *len : 1);
		memcpy(buf, s, *len);
		return buf;
	}
	if (lua_type(L, cidx) != LUA_TTABLE)
		luaL_error(L, "test_run program '%s': ctx must be a string of bytes or a table, got %s",
			   p->name, luaL_typename(L, cidx));
	if (t == BPF_PROG_TYPE_RAW_TRACEPOINT || t == BPF_PROG_TYPE_TRACING) {
		int n = (int)bh_rawlen(L, cidx);
		char spec[32];

		if (n < 1 || n > 12)
			luaL_error(L, "test_run program '%s': ctx for a %s program is an array of 1 to "
				   "12 u64 arguments", p->name, libbpf_bpf_prog_type_str(t));
		snprintf(spec, sizeof(spec), "u64[%d]", n);
		ty = bh_type_from_spec(L, NULL, spec, "test_run");
	} else if (tn) {
		ty = bh_type_from_spec(L, bh_vmlinux_btf(L, "test_run"), tn, "test_run");
	} else {
		return (void *)(uintptr_t)luaL_error(L, "test_run program '%s': give ctx as a string "
						     "of bytes for a %s program", p->name,
						     libbpf_bpf_prog_type_str(t));
	}
	{
		struct bh_cctx c = { L, "test_run", "program", p->name, "ctx", 0, { { 0 } } };

		*len = ty->root->size;
		buf = lua_newuserdata(L, *len ? *len : 1);
		bh_encode(&c, ty->root, cidx, buf);
	}
	return buf;
}

/*
 * p:test_run{data =, ctx =, repeat =, data_size_out =, flags =, cpu =}:
 * BPF_PROG_TEST_RUN. Returns {retval =, duration = (ns per run), data =
 * (output packet), ctx = (output context, decoded like the input)}.
 */
static int prog_test_run(lua_State *L)
{
	struct bh_prog *p = prog_check_op(L, 1, "test_run");
	size_t dlen = 0, clen = 0;
	const char *data = NULL;
	void *ctx_in = NULL, *ctx_out = NULL, *dout = NULL;
	struct bh_type *cty = NULL;
	lua_Integer rep, dsz, flags, cpu;
	int top, err;

	need_table(L, 2, "test_run");
	bh_opt_check(L, 2, "test_run", run_opts);
	lua_getfield(L, 2, "data");
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "test_run: option 'data' must be a string of bytes, got %s",
				   luaL_typename(L, -1));
		data = lua_tolstring(L, -1, &dlen);
	}
	lua_pop(L, 1); /* data stays alive in the option table */
	rep = opt_int(L, 2, "test_run", "repeat", 1, 0, 0x7fffffff);
	dsz = opt_int(L, 2, "test_run", "data_size_out", (lua_Integer)dlen + 4096, 0, 1 << 30);
	flags = opt_int(L, 2, "test_run", "flags", 0, 0, 0xffffffffLL);
	cpu = opt_int(L, 2, "test_run", "cpu", -1, -1, 0x7fffffff);
	prog_check_loaded(L, 1, "test_run");
	if (cpu >= 0)
		flags |= BPF_F_TEST_RUN_ON_CPU;
	lua_getfield(L, 2, "ctx");
	if (!lua_isnil(L, -1)) {
		ctx_in = encode_ctx(L, p, &clen); /* ctx, Type or nil, buffer */
		cty = lua_isnil(L, -2) ? NULL : lua_touserdata(L, -2);
		ctx_out = lua_newuserdata(L, clen ? clen : 1);
	}
	if (data)
		dout = lua_newuserdata(L, dsz ? (size_t)dsz : 1);
	top = lua_gettop(L);
	{
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = data, .data_size_in = (uint32_t)dlen,
			    .data_out = dout, .data_size_out = data ? (uint32_t)dsz : 0,
			    .ctx_in = ctx_in, .ctx_size_in = (uint32_t)clen, .ctx_out = ctx_out,
			    .ctx_size_out = ctx_out ? (uint32_t)clen : 0, .repeat = (int)rep,
			    .flags = (uint32_t)flags, .cpu = cpu >= 0 ? (uint32_t)cpu : 0);

		err = bpf_prog_test_run_opts(bh_prog_fd(p), &o);
		if (err) {
			const char *reason = NULL, *hint = NULL;

			err = errno;
			if (err == 524 || err == EOPNOTSUPP)
				reason = lua_pushfstring(L, "%s programs cannot be test-run on this "
							 "kernel", libbpf_bpf_prog_type_str(
								 prog_type(p)));
			else if (err == ENOSPC && data && o.data_size_out > (uint32_t)dsz)
				reason = lua_pushfstring(L, "the output packet has %d bytes, "
							 "data_size_out is %d", (int)o.data_size_out,
							 (int)dsz);
			else if (err == EINVAL && data && dlen < 14)
				reason = lua_pushfstring(L, "the kernel refused %d bytes of data (a "
							 "packet needs at least an Ethernet header, "
							 "14 bytes)", (int)dlen);
			else if (err == EINVAL)
				hint = "check data (size, headers) and ctx against what this program "
				       "type accepts";
			bh_fail_msg(L, "test_run", "program", p->name, err, reason, hint, NULL);
		}
		lua_settop(L, top);
		lua_createtable(L, 0, 4);
		lua_pushinteger(L, (lua_Integer)o.retval);
		lua_setfield(L, -2, "retval");
		lua_pushinteger(L, (lua_Integer)o.duration);
		lua_setfield(L, -2, "duration");
		if (data) {
			lua_pushlstring(L, dout, o.data_size_out < (uint32_t)dsz ? o.data_size_out :
										   (size_t)dsz);
			lua_setfield(L, -2, "data");
		}
		if (ctx_out) {
			size_t n = o.ctx_size_out < clen ? o.ctx_size_out : clen;

			if (cty && n == clen) {
				struct bh_cctx c = { L, "test_run", "program", p->name, "ctx", 0,
						     { { 0 } } };

				bh_decode(&c, cty->root, ctx_out);
			} else {
				lua_pushlstring(L, ctx_out, n);
			}
			lua_setfield(L, -2, "ctx");
		}
	}
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Fields -------------------------------------------------------------- */

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
	if (is_pinned(p)) {
		struct bpf_prog_info info;
		uint32_t len = sizeof(info);

		memset(&info, 0, sizeof(info));
		if (!strcmp(k, "type"))
			lua_pushstring(L, libbpf_bpf_prog_type_str(prog_type(p)));
		else if (!strcmp(k, "fd"))
			lua_pushinteger(L, p->fd);
		else if (!strcmp(k, "id") && p->fd >= 0 && !bpf_obj_get_info_by_fd(p->fd, &info, &len))
			lua_pushinteger(L, info.id);
		else if (!strcmp(k, "path")) {
			bh_getuv(L, 1);
			lua_getfield(L, -1, "path");
		} else
			lua_pushnil(L);
		return 1;
	}
	if (!p->prog || !p->parent->obj) {
		lua_pushnil(L);
		return 1;
	}
	if (!strcmp(k, "section")) {
		lua_pushstring(L, bpf_program__section_name(p->prog));
	} else if (!strcmp(k, "type")) {
		lua_pushstring(L, libbpf_bpf_prog_type_str(bpf_program__type(p->prog)));
	} else if (!strcmp(k, "fd")) {
		int fd = p->parent->loaded ? bpf_program__fd(p->prog) : -1;

		lua_pushinteger(L, fd < 0 ? -1 : fd);
	} else if (!strcmp(k, "autoload")) {
		lua_pushboolean(L, bpf_program__autoload(p->prog));
	} else if (!strcmp(k, "id")) {
		struct bpf_prog_info info;
		uint32_t len = sizeof(info);
		int fd = p->parent->loaded ? bpf_program__fd(p->prog) : -1;

		memset(&info, 0, sizeof(info));
		if (fd >= 0 && !bpf_obj_get_info_by_fd(fd, &info, &len))
			lua_pushinteger(L, info.id);
		else
			lua_pushnil(L);
	} else {
		lua_pushnil(L);
	}
	return 1;
}

static int prog_tostring(lua_State *L)
{
	struct bh_prog *p = prog_checkraw(L, 1);

	if (is_pinned(p)) {
		bh_getuv(L, 1);
		lua_getfield(L, -1, "path");
		lua_pushfstring(L, "program '%s' %s pinned at %s%s", p->name,
				libbpf_bpf_prog_type_str(prog_type(p)), lua_tostring(L, -1),
				p->fd < 0 ? " (closed)" : "");
	} else if (!p->prog || !p->parent->obj)
		lua_pushfstring(L, "program '%s' (object closed)", p->name);
	else
		lua_pushfstring(L, "program '%s' %s", p->name, bpf_program__section_name(p->prog));
	return 1;
}

/*
 * A pinned program's fd also lives in a userdata of its own ("fdbox" in the
 * handle's uservalue), whose __gc closes it once the handle is collected.
 * Program handles have no __gc themselves: one on every program handle kept
 * objects, and their fds, past the collections that used to free them
 * (spec/stress_spec.lua).
 */
#define BH_PROGFD_MT "bpfhost.progfd"

static int progfd_gc(lua_State *L)
{
	int *fd = lua_touserdata(L, 1);

	if (*fd >= 0)
		close(*fd);
	*fd = -1;
	return 0;
}

/* The fd of the pinned program at idx is closed: in its box too, so that __gc leaves it alone. */
static void prog_fd_closed(lua_State *L, int idx)
{
	int *box;

	bh_getuv(L, idx);
	lua_getfield(L, -1, "fdbox");
	box = lua_touserdata(L, -1);
	if (box)
		*box = -1;
	lua_pop(L, 2);
}

/*
 * p:close(): a program opened from a pin lets go of its fd (links made from
 * it stay); true. Programs of an object close with it.
 */
static int prog_close(lua_State *L)
{
	struct bh_prog *p = prog_checkraw(L, 1);

	if (!is_pinned(p))
		luaL_error(L, "close program '%s': programs of an object close with it "
			      "(obj:close())", p->name);
	if (p->fd >= 0) {
		prog_fd_closed(L, 1);
		close(p->fd);
	}
	p->fd = -1;
	lua_pushboolean(L, 1);
	return 1;
}

/*
 * Push a handle for the program behind fd (owned from here on), opened from
 * the pin at path: bpf.open_pinned.
 */
void bh_prog_push_fd(lua_State *L, int fd, const char *path)
{
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);
	struct bh_prog *p;

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
		int err = errno;

		close(fd);
		bh_fail(L, "open_pinned", "program", path, err, NULL, NULL);
	}
	lua_pushstring(L, path);
	p = prog_newud(L, info.name[0] ? info.name : "(no name)", fd, "path");
	p->type = info.type;
	bh_getuv(L, -1);
	*(int *)lua_newuserdata(L, sizeof(int)) = fd;
	luaL_getmetatable(L, BH_PROGFD_MT);
	lua_setmetatable(L, -2);
	lua_setfield(L, -2, "fdbox");
	lua_pop(L, 1);
}

static const luaL_Reg prog_meta[] = {
	{ "__tostring", prog_tostring },
	{ "__index", prog_index },
	{ NULL, NULL },
};

static const luaL_Reg prog_methods[] = {
	{ "set_autoload", prog_set_autoload },
	{ "set_attach_target", prog_set_attach_target },
	{ "attach", prog_attach },
	{ "attach_tracepoint", prog_attach_tracepoint },
	{ "attach_raw_tracepoint", prog_attach_raw_tracepoint },
	{ "attach_trace", prog_attach_trace },
	{ "attach_lsm", prog_attach_lsm },
	{ "attach_kprobe", prog_attach_kprobe },
	{ "attach_uprobe", prog_attach_uprobe },
	{ "attach_usdt", prog_attach_usdt },
	{ "attach_xdp", prog_attach_xdp },
	{ "attach_tc", prog_attach_tc },
	{ "attach_cgroup", prog_attach_cgroup },
	{ "attach_iter", prog_attach_iter },
	{ "attach_perf_event", prog_attach_perf_event },
	{ "test_run", prog_test_run },
	{ "close", prog_close },
	{ NULL, NULL },
};

static const luaL_Reg progfd_meta[] = {
	{ "__gc", progfd_gc },
	{ NULL, NULL },
};

void bh_prog_init(lua_State *L)
{
	bh_newmetatable(L, BH_PROGFD_MT, progfd_meta, NULL);
	lua_pop(L, 1);
	bh_newmetatable(L, BH_PROG_MT, prog_meta, NULL);
	lua_newtable(L);
	bh_setfuncs(L, prog_methods, 0);
	lua_setfield(L, -2, "__methods");
	lua_pop(L, 1);
}
