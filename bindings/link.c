/* link.c: bpfhost.link, an attachment owned by the script until detached. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bh.h"

static struct bh_link *link_checkraw(lua_State *L, int idx)
{
	return bh_checkud(L, idx, BH_LINK_MT);
}

static struct bh_link *link_check_op(lua_State *L, int idx, const char *op)
{
	struct bh_link *l = link_checkraw(L, idx);

	if (!l->link)
		luaL_error(L, "%s link of '%s': link is detached", op, l->name);
	return l;
}

/*
 * Push a link handle owning link. The object at objidx (if any) keeps it in
 * its links list, so that closing the object, or the host exiting, destroys
 * it; the link keeps the object alive in turn.
 */
void bh_link_push(lua_State *L, int objidx, struct bpf_link *link, const char *name,
		  const char *kind)
{
	struct bh_link *l;

	if (objidx < 0)
		objidx = lua_gettop(L) + objidx + 1;
	l = bh_newud(L, sizeof(*l));
	memset(l, 0, sizeof(*l));
	l->link = link;
	snprintf(l->name, sizeof(l->name), "%s", name ? name : "?");
	snprintf(l->kind, sizeof(l->kind), "%s", kind ? kind : "?");
	luaL_getmetatable(L, BH_LINK_MT);
	lua_setmetatable(L, -2);
	lua_createtable(L, 0, 1);
	if (objidx) {
		lua_pushvalue(L, objidx);
		lua_setfield(L, -2, "parent");
	}
	bh_setuv(L, -2);
	if (objidx) {
		bh_getuv(L, objidx);
		lua_getfield(L, -1, "links");
		lua_pushvalue(L, -3);
		lua_rawseti(L, -2, (int)bh_rawlen(L, -2) + 1);
		lua_pop(L, 2);
	}
}

/* Destroy the link at idx if it is one and still attached. Never raises. */
int bh_link_close_ud(lua_State *L, int idx)
{
	struct bh_link *l = bh_testud(L, idx, BH_LINK_MT);
	struct bpf_link *link;

	if (!l || !l->link)
		return 0;
	link = l->link;
	l->link = NULL;
	bpf_link__destroy(link);
	return 1;
}

static int link_detach(lua_State *L)
{
	link_checkraw(L, 1);
	bh_link_close_ud(L, 1);
	lua_pushboolean(L, 1);
	return 1;
}

static int link_gc(lua_State *L)
{
	bh_link_close_ud(L, 1);
	return 0;
}

static int link_pin(lua_State *L)
{
	struct bh_link *l = link_check_op(L, 1, "pin");
	const char *path = luaL_checkstring(L, 2);

	if (bh_ensure_bpffs())
		bh_fail_msg(L, "pin", "link", l->name, errno, "bpffs is not mounted at /sys/fs/bpf",
			    NULL, NULL);
	if (bpf_link__pin(l->link, path))
		bh_fail(L, "pin", "link", l->name, errno, NULL, NULL);
	lua_pushboolean(L, 1);
	return 1;
}

static int link_unpin(lua_State *L)
{
	struct bh_link *l = link_check_op(L, 1, "unpin");

	if (bpf_link__unpin(l->link))
		bh_fail(L, "unpin", "link", l->name, errno, NULL, NULL);
	lua_pushboolean(L, 1);
	return 1;
}

static int link_info(lua_State *L)
{
	struct bh_link *l = link_check_op(L, 1, "info");
	struct bpf_link_info info;
	uint32_t len = sizeof(info);
	const char *t;

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(bpf_link__fd(l->link), &info, &len))
		bh_fail(L, "info", "link", l->name, errno, NULL, NULL);
	lua_createtable(L, 0, 6);
	lua_pushinteger(L, info.id);
	lua_setfield(L, -2, "id");
	t = libbpf_bpf_link_type_str(info.type);
	lua_pushstring(L, t ? t : "unknown");
	lua_setfield(L, -2, "type");
	lua_pushinteger(L, info.prog_id);
	lua_setfield(L, -2, "prog_id");
	lua_pushstring(L, l->name);
	lua_setfield(L, -2, "program");
	lua_pushstring(L, l->kind);
	lua_setfield(L, -2, "kind");
	lua_pushinteger(L, bpf_link__fd(l->link));
	lua_setfield(L, -2, "fd");
	return 1;
}

static int link_tostring(lua_State *L)
{
	struct bh_link *l = link_checkraw(L, 1);

	if (!l->link)
		lua_pushfstring(L, "link %s '%s' (detached)", l->kind, l->name);
	else
		lua_pushfstring(L, "link %s '%s' fd %d", l->kind, l->name, bpf_link__fd(l->link));
	return 1;
}

static const luaL_Reg link_meta[] = {
	{ "__gc", link_gc },
	{ "__tostring", link_tostring },
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
	{ NULL, NULL },
};

void bh_link_init(lua_State *L)
{
	bh_newmetatable(L, BH_LINK_MT, link_meta, link_methods);
	lua_pop(L, 1);
}
