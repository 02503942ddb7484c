/* link.c: bpfhost.link, an attachment owned by the script until detached. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/if_link.h>

#include "bh.h"

/* ------------------------------------------------------------------------ */
/* -- Netlink attachments ------------------------------------------------- */

/*
 * tc filters and XDP programs attached without a BPF link stay attached
 * when the process dies. Every live one is on this list, so that an exit
 * (normal, by error, or through the host's signal path) detaches them even
 * when the Lua state is never closed. Only the process that attached them
 * detaches them: a forked child's exit must not.
 */
static struct bh_link *tracked;
static int atexit_done;

/*
 * clsact qdiscs created by attach_tc, per interface, with the number of our
 * filters on them: the last one to go removes the qdisc it created.
 */
static struct qdisc_ref {
	int ifindex;
	int refs;
} qdiscs[64];

static void untrack(struct bh_link *l)
{
	struct bh_link **pp;

	for (pp = &tracked; *pp; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	l->next = NULL;
}

static struct qdisc_ref *qdisc_find(int ifindex)
{
	size_t i;

	for (i = 0; i < sizeof(qdiscs) / sizeof(qdiscs[0]); i++)
		if (qdiscs[i].refs > 0 && qdiscs[i].ifindex == ifindex)
			return &qdiscs[i];
	return NULL;
}

/* A filter on ifindex goes: the last one removes the qdisc attach_tc made. */
static void qdisc_put(int ifindex)
{
	struct qdisc_ref *q = qdisc_find(ifindex);

	if (q && --q->refs == 0) {
		DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
				    .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);

		bpf_tc_hook_destroy(&hook);
	}
}

/* A filter on ifindex comes; returns whether it holds a qdisc reference. */
static int qdisc_get(int ifindex, int created)
{
	struct qdisc_ref *q = qdisc_find(ifindex);
	size_t i;

	if (q) {
		q->refs++;
		return 1;
	}
	if (!created)
		return 0;
	for (i = 0; i < sizeof(qdiscs) / sizeof(qdiscs[0]); i++) {
		if (qdiscs[i].refs == 0) {
			qdiscs[i].ifindex = ifindex;
			qdiscs[i].refs = 1;
			return 1;
		}
	}
	return 0; /* table full: the qdisc stays, empty, after the last filter */
}

/* Release what l owns. Never raises, never calls Lua; safe at exit. */
static void link_release(struct bh_link *l)
{
	int impl = l->impl;

	l->impl = BH_LINK_NONE;
	switch (impl) {
	case BH_LINK_LIBBPF: {
		struct bpf_link *link = l->link;

		l->link = NULL;
		bpf_link__destroy(link);
		break;
	}
	case BH_LINK_FD:
		close(l->fd);
		l->fd = -1;
		break;
	case BH_LINK_TC: {
		DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = l->ifindex,
				    .attach_point = (enum bpf_tc_attach_point)l->flags);
		DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = l->handle,
				    .priority = l->priority);

		untrack(l);
		bpf_tc_detach(&hook, &opts);
		if (l->qref)
			qdisc_put(l->ifindex);
		l->qref = 0;
		break;
	}
	case BH_LINK_XDP: {
		/* only if it is still ours: another may have replaced it since */
		DECLARE_LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = l->fd);

		untrack(l);
		bpf_xdp_detach(l->ifindex, l->flags, &opts);
		close(l->fd);
		l->fd = -1;
		break;
	}
	default:
		break;
	}
}

static void detach_all_at_exit(void)
{
	int pid = (int)getpid();
	struct bh_link *l = tracked, *next;

	tracked = NULL;
	for (; l; l = next) {
		next = l->next;
		l->next = NULL;
		if (l->owner == pid)
			link_release(l);
	}
}

static void track(struct bh_link *l, int created)
{
	if (!atexit_done) {
		atexit(detach_all_at_exit);
		atexit_done = 1;
	}
	l->owner = (int)getpid();
	l->next = tracked;
	tracked = l;
	if (l->impl == BH_LINK_TC)
		l->qref = qdisc_get(l->ifindex, created);
}

/* ------------------------------------------------------------------------ */
/* -- Handles ------------------------------------------------------------- */

static struct bh_link *link_checkraw(lua_State *L, int idx)
{
	return bh_checkud(L, idx, BH_LINK_MT);
}

static struct bh_link *link_check_op(lua_State *L, int idx, const char *op)
{
	struct bh_link *l = link_checkraw(L, idx);

	if (l->impl == BH_LINK_NONE)
		luaL_error(L, "%s link '%s': link is detached", op, l->name);
	return l;
}

/* The kernel link fd behind l, or -1 for netlink attachments. */
static int link_fd(const struct bh_link *l)
{
	/* libbpf's usdt link is a set of uprobe links; its own fd field is meaningless */
	if (l->impl == BH_LINK_LIBBPF)
		return strcmp(l->kind, "usdt") ? bpf_link__fd(l->link) : -1;
	if (l->impl == BH_LINK_FD)
		return l->fd;
	return -1;
}

static struct bh_link *link_kernel(lua_State *L, int idx, const char *op)
{
	struct bh_link *l = link_check_op(L, idx, op);

	if (link_fd(l) < 0)
		luaL_error(L, "%s link '%s': this %s attachment is not one BPF link, so it cannot %s",
			   op, l->name, l->kind, op);
	return l;
}

/*
 * Push a link handle in a closed state. The object at objidx (if any) keeps
 * it in its links list, so that closing the object, or the host exiting,
 * destroys it; the link keeps the object alive in turn.
 */
static int link_new(lua_State *L)
{
	struct bh_link *l = bh_newud(L, sizeof(*l));

	memset(l, 0, sizeof(*l));
	l->fd = -1;
	luaL_getmetatable(L, BH_LINK_MT);
	lua_setmetatable(L, -2);
	lua_createtable(L, 0, 1);
	if (!lua_isnil(L, 1)) {
		lua_pushvalue(L, 1);
		lua_setfield(L, -2, "parent");
	}
	bh_setuv(L, -2);
	if (!lua_isnil(L, 1)) {
		bh_getuv(L, 1);
		lua_getfield(L, -1, "links");
		lua_pushvalue(L, -3);
		lua_rawseti(L, -2, (int)bh_rawlen(L, -2) + 1);
		lua_pop(L, 2);
	}
	return 1;
}

struct bh_link *bh_link_adopt(lua_State *L, int objidx, const struct bh_link *tmpl, int created)
{
	struct bh_link *l;

	if (objidx < 0)
		objidx = lua_gettop(L) + objidx + 1;
	lua_pushcfunction(L, link_new);
	if (objidx)
		lua_pushvalue(L, objidx);
	else
		lua_pushnil(L);
	if (lua_pcall(L, 1, 1, 0)) {
		struct bh_link tmp = *tmpl;

		if (tmp.impl == BH_LINK_TC && created) {
			/* the qdisc we made goes with the filter */
			tmp.qref = qdisc_get(tmp.ifindex, 1);
		}
		link_release(&tmp);
		lua_error(L);
	}
	l = lua_touserdata(L, -1);
	*l = *tmpl;
	l->next = NULL;
	l->qref = 0;
	if (l->impl == BH_LINK_TC || l->impl == BH_LINK_XDP)
		track(l, created);
	return l;
}

void bh_link_push(lua_State *L, int objidx, struct bpf_link *link, const char *name,
		  const char *kind)
{
	struct bh_link tmpl;

	memset(&tmpl, 0, sizeof(tmpl));
	tmpl.impl = BH_LINK_LIBBPF;
	tmpl.link = link;
	tmpl.fd = -1;
	snprintf(tmpl.name, sizeof(tmpl.name), "%s", name ? name : "?");
	snprintf(tmpl.kind, sizeof(tmpl.kind), "%s", kind ? kind : "?");
	bh_link_adopt(L, objidx, &tmpl, 0);
}

/* Destroy the link at idx if it is one and still attached. Never raises. */
int bh_link_close_ud(lua_State *L, int idx)
{
	struct bh_link *l = bh_testud(L, idx, BH_LINK_MT);

	if (!l || l->impl == BH_LINK_NONE)
		return 0;
	link_release(l);
	return 1;
}

/* Drop the link at idx from its object's links list (so detached links do not pile up). */
static void link_forget(lua_State *L, int idx)
{
	int n, i;

	bh_getuv(L, idx);
	lua_getfield(L, -1, "parent");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 2);
		return;
	}
	bh_getuv(L, -1);
	lua_getfield(L, -1, "links"); /* uv, parent, puv, links */
	n = lua_istable(L, -1) ? (int)bh_rawlen(L, -1) : 0;
	for (i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, i);
		if (lua_rawequal(L, -1, idx)) {
			lua_pop(L, 1);
			lua_rawgeti(L, -1, n);
			lua_rawseti(L, -2, i);
			lua_pushnil(L);
			lua_rawseti(L, -2, n);
			break;
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 4);
}

static int link_detach(lua_State *L)
{
	link_checkraw(L, 1);
	if (bh_link_close_ud(L, 1))
		link_forget(L, 1);
	lua_pushboolean(L, 1);
	return 1;
}

static int link_gc(lua_State *L)
{
	bh_link_close_ud(L, 1);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* -- Methods ------------------------------------------------------------- */

static int link_pin(lua_State *L)
{
	struct bh_link *l = link_kernel(L, 1, "pin");
	const char *path = luaL_checkstring(L, 2);

	if (l->impl == BH_LINK_LIBBPF && bpf_link__pin_path(l->link))
		luaL_error(L, "pin link '%s': it is pinned at '%s' already (unpin it first)", l->name,
			   bpf_link__pin_path(l->link));

	if (bh_ensure_bpffs())
		bh_fail_msg(L, "pin", "link", l->name, errno, "bpffs is not mounted at /sys/fs/bpf",
			    NULL, NULL);
	if (l->impl == BH_LINK_LIBBPF ? bpf_link__pin(l->link, path) : bpf_obj_pin(l->fd, path)) {
		int err = errno;
		char reason[300];

		snprintf(reason, sizeof(reason), "cannot pin at '%s': %s", path, strerror(err));
		bh_fail_msg(L, "pin", "link", l->name, err, reason,
			    err == EEXIST ? "something is pinned there already" :
			    err == ENOENT || err == EPERM ?
					  "the path must be on bpffs (/sys/fs/bpf/...) and its "
					  "directory must exist" : NULL,
			    NULL);
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int link_unpin(lua_State *L)
{
	struct bh_link *l = link_kernel(L, 1, "unpin");
	const char *path = luaL_optstring(L, 2, NULL);

	if (l->impl == BH_LINK_LIBBPF && !path) {
		if (bpf_link__unpin(l->link))
			bh_fail_msg(L, "unpin", "link", l->name, errno,
				    errno == EINVAL ? "it is not pinned" : NULL, NULL, NULL);
	} else {
		if (!path)
			luaL_error(L, "unpin link '%s': give the path it was pinned at", l->name);
		if (unlink(path))
			bh_fail(L, "unpin", "link", l->name, errno, NULL, NULL);
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* libbpf 1.1 knows link types up to perf_event/kprobe_multi; newer kernels have more. */
static const char *link_type_name(uint32_t type)
{
	static const char *const later[] = { "struct_ops", "netfilter", "tcx", "uprobe_multi",
					     "netkit", "sockmap" };
	const char *t = libbpf_bpf_link_type_str((enum bpf_link_type)type);

	if (t)
		return t;
	if (type >= 9 && type < 9 + sizeof(later) / sizeof(later[0]))
		return later[type - 9];
	return "unknown";
}

static void setint(lua_State *L, const char *k, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, k);
}

/* link:info(): what the kernel says about the link, plus kind-specific fields. */
static int link_info(lua_State *L)
{
	struct bh_link *l = link_check_op(L, 1, "info");
	struct bpf_link_info info;
	uint32_t len = sizeof(info);
	char tp_name[256] = "";
	const char *t;
	int fd = link_fd(l);

	lua_createtable(L, 0, 8);
	lua_pushstring(L, l->name);
	lua_setfield(L, -2, "program");
	lua_pushstring(L, l->kind);
	lua_setfield(L, -2, "kind");
	if (fd < 0 && l->impl == BH_LINK_LIBBPF) {
		/* several kernel attachments behind one libbpf link (usdt): no one link id */
		lua_pushstring(L, l->kind);
		lua_setfield(L, -2, "type");
		return 1;
	}
	if (fd < 0) {
		/* a netlink attachment: what we know ourselves */
		char ifname[IF_NAMESIZE];

		lua_pushstring(L, l->impl == BH_LINK_TC ? "tc" : "xdp");
		lua_setfield(L, -2, "type");
		setint(L, "ifindex", l->ifindex);
		if (if_indextoname((unsigned)l->ifindex, ifname)) {
			lua_pushstring(L, ifname);
			lua_setfield(L, -2, "ifname");
		}
		if (l->impl == BH_LINK_TC) {
			lua_pushstring(L, l->flags == BPF_TC_INGRESS ? "ingress" : "egress");
			lua_setfield(L, -2, "direction");
			setint(L, "handle", l->handle);
			setint(L, "priority", l->priority);
		}
		return 1;
	}
	memset(&info, 0, sizeof(info));
	if (!strcmp(l->kind, "raw_tp") || !strcmp(l->kind, "tp_btf")) {
		info.raw_tracepoint.tp_name = (uint64_t)(uintptr_t)tp_name;
		info.raw_tracepoint.tp_name_len = sizeof(tp_name);
	}
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		bh_fail(L, "info", "link", l->name, errno, NULL, NULL);
	setint(L, "id", info.id);
	t = link_type_name(info.type);
	lua_pushstring(L, t);
	lua_setfield(L, -2, "type");
	setint(L, "prog_id", info.prog_id);
	setint(L, "fd", fd);
	switch (info.type) {
	case BPF_LINK_TYPE_RAW_TRACEPOINT:
		if (tp_name[0]) {
			lua_pushstring(L, tp_name);
			lua_setfield(L, -2, "tp_name");
		}
		break;
	case BPF_LINK_TYPE_CGROUP:
		setint(L, "cgroup_id", (lua_Integer)info.cgroup.cgroup_id);
		t = libbpf_bpf_attach_type_str(info.cgroup.attach_type);
		lua_pushstring(L, t ? t : "unknown");
		lua_setfield(L, -2, "attach_type");
		break;
	case BPF_LINK_TYPE_XDP:
		setint(L, "ifindex", info.xdp.ifindex);
		break;
	case BPF_LINK_TYPE_TRACING:
		t = libbpf_bpf_attach_type_str(info.tracing.attach_type);
		lua_pushstring(L, t ? t : "unknown");
		lua_setfield(L, -2, "attach_type");
		break;
	default:
		break;
	}
	return 1;
}

/* link:update_prog(p): swap the program of a live link, atomically. */
static int link_update_prog(lua_State *L)
{
	struct bh_link *l = link_kernel(L, 1, "update_prog");
	struct bh_prog *p = bh_prog_check(L, 2);
	int pfd = -1;

	if ((p->parent && !p->parent->loaded) || (pfd = bh_prog_fd(p)) < 0)
		luaL_error(L, "update_prog link '%s': program '%s' is not loaded", l->name,
			   p->name);
	/* a program opened from a pin has no bpf_program: the link's fd takes it */
	if (l->impl == BH_LINK_LIBBPF ? (p->prog ? bpf_link__update_program(l->link, p->prog)
						 : bpf_link_update(bpf_link__fd(l->link), pfd, NULL))
				      : bpf_link_update(l->fd, pfd, NULL)) {
		int err = errno;

		bh_fail_msg(L, "update_prog", "link", l->name, err,
			    err == EINVAL || err == EOPNOTSUPP ?
				    "the kernel cannot swap the program of this kind of link, or "
				    "the new program does not fit its attach point" : NULL,
			    NULL, NULL);
	}
	snprintf(l->name, sizeof(l->name), "%s", p->name);
	lua_settop(L, 1);
	return 1;
}

/*
 * link:read(): one pass of an iterator link, as a string. Each call runs the
 * iterator afresh.
 */
static int link_read(lua_State *L)
{
	struct bh_link *l = link_check_op(L, 1, "read");
	luaL_Buffer b;
	int fd;

	if (strcmp(l->kind, "iter"))
		luaL_error(L, "read link '%s': not an iterator link (it is a %s link)", l->name,
			   l->kind);
	fd = bpf_iter_create(link_fd(l));
	if (fd < 0)
		bh_fail(L, "read", "link", l->name, errno, NULL, NULL);
	luaL_buffinit(L, &b);
	for (;;) {
		char *p = luaL_prepbuffer(&b);
		ssize_t n = read(fd, p, LUAL_BUFFERSIZE);

		if (n < 0) {
			int err = errno;

			if (err == EINTR || err == EAGAIN)
				continue;
			close(fd);
			bh_fail(L, "read", "link", l->name, err, NULL, NULL);
		}
		if (n == 0)
			break;
		luaL_addsize(&b, (size_t)n);
	}
	close(fd);
	luaL_pushresult(&b);
	return 1;
}

static int link_index(lua_State *L)
{
	struct bh_link *l = link_checkraw(L, 1);
	const char *k = luaL_checkstring(L, 2);

	lua_getmetatable(L, 1);
	lua_getfield(L, -1, "__methods");
	lua_getfield(L, -1, k);
	if (!lua_isnil(L, -1))
		return 1;
	lua_settop(L, 2);
	if (!strcmp(k, "program"))
		lua_pushstring(L, l->name);
	else if (!strcmp(k, "kind"))
		lua_pushstring(L, l->kind);
	else if (!strcmp(k, "fd"))
		lua_pushinteger(L, l->impl == BH_LINK_NONE ? -1 : link_fd(l));
	else if (!strcmp(k, "attached"))
		lua_pushboolean(L, l->impl != BH_LINK_NONE);
	else
		lua_pushnil(L);
	return 1;
}

static int link_tostring(lua_State *L)
{
	struct bh_link *l = link_checkraw(L, 1);

	if (l->impl == BH_LINK_NONE)
		lua_pushfstring(L, "link %s '%s' (detached)", l->kind, l->name);
	else if (link_fd(l) >= 0)
		lua_pushfstring(L, "link %s '%s' fd %d", l->kind, l->name, link_fd(l));
	else
		lua_pushfstring(L, "link %s '%s' ifindex %d", l->kind, l->name, l->ifindex);
	return 1;
}

static const luaL_Reg link_meta[] = {
	{ "__gc", link_gc },
	{ "__tostring", link_tostring },
	{ "__index", link_index },
#if LUA_VERSION_NUM >= 504
	{ "__close", link_gc },
#endif
	{ NULL, NULL },
};

static const luaL_Reg link_methods[] = {
	{ "detach", link_detach },
	{ "close", link_detach },
	{ "pin", link_pin },
	{ "unpin", link_unpin },
	{ "info", link_info },
	{ "update_prog", link_update_prog },
	{ "read", link_read },
	{ NULL, NULL },
};

void bh_link_init(lua_State *L)
{
	bh_newmetatable(L, BH_LINK_MT, link_meta, NULL);
	lua_newtable(L);
	bh_setfuncs(L, link_methods, 0);
	lua_setfield(L, -2, "__methods");
	lua_pop(L, 1);
}
