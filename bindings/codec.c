/*
 * codec.c: the BTF-driven codec. A type is compiled once into a plan tree
 * (struct bh_plan, in an arena owned by a bpfhost.type userdata); encode and
 * decode walk the plan, never the BTF.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bh.h"

/* ------------------------------------------------------------------------ */
/* -- Arena --------------------------------------------------------------- */

struct chunk {
	struct chunk *next;
	size_t used, cap;
	max_align_t data[];
};

static void *aalloc(lua_State *L, struct bh_type *t, size_t n)
{
	struct chunk *c = t->arena;
	void *p;

	n = (n + 15) & ~(size_t)15;
	if (!c || c->used + n > c->cap) {
		size_t cap = n > 4000 ? n : 4000;

		c = malloc(sizeof(*c) + cap);
		if (!c)
			luaL_error(L, "out of memory compiling a type");
		c->next = t->arena;
		c->used = 0;
		c->cap = cap;
		t->arena = c;
	}
	p = (char *)c->data + c->used;
	c->used += n;
	memset(p, 0, n);
	return p;
}

static const char *astrdup(lua_State *L, struct bh_type *t, const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = aalloc(L, t, n);

	memcpy(d, s, n);
	return d;
}

static void arena_free(struct bh_type *t)
{
	struct chunk *c = t->arena, *next;

	for (; c; c = next) {
		next = c->next;
		free(c);
	}
	t->arena = NULL;
	t->root = NULL;
	free(t->decl);
	t->decl = NULL;
}

/* ------------------------------------------------------------------------ */
/* -- Compiling BTF into a plan ------------------------------------------- */

struct compiler {
	lua_State *L;
	const struct btf *btf;
	struct bh_type *ty;
	int depth;
	int kflag_aware;     /* -1 until known: does btf's producer mark signed enums? */
	int names;           /* stack index of the type's table of field names */
	int nnames;
};

static const struct btf_type *skip_mods(const struct btf *btf, uint32_t *id)
{
	const struct btf_type *t = btf__type_by_id(btf, *id);

	while (t && (btf_is_mod(t) || btf_is_typedef(t))) {
		*id = t->type;
		t = btf__type_by_id(btf, *id);
	}
	return t;
}

/* Kernel-managed members a script never writes: hidden from the codec. */
static int is_kernel_managed(const struct btf *btf, const struct btf_type *t)
{
	static const char *const names[] = { "bpf_spin_lock", "bpf_timer", "bpf_list_head",
					     "bpf_list_node", "bpf_rb_root", "bpf_rb_node",
					     "bpf_refcount", "bpf_wq", NULL };
	const char *n;
	int i;

	if (!btf_is_struct(t))
		return 0;
	n = btf__name_by_offset(btf, t->name_off);
	for (i = 0; n && names[i]; i++)
		if (!strcmp(n, names[i]))
			return 1;
	return 0;
}

/*
 * The C spelling of type id, as a message names it: "struct stats",
 * "counter_t", "u16[2][3]", "void *". Qualifiers are dropped.
 */
static void spell(const struct btf *btf, uint32_t id, char *buf, size_t n, int depth)
{
	const struct btf_type *t = btf__type_by_id(btf, id);
	const char *name;
	uint32_t dims[8];
	int ndims = 0, i;
	size_t len;

	if (!id) {
		snprintf(buf, n, "void");
		return;
	}
	if (!t || depth > 16) {
		snprintf(buf, n, "?");
		return;
	}
	name = btf__name_by_offset(btf, t->name_off);
	if (!name || !*name)
		name = "(anon)";
	switch (btf_kind(t)) {
	case BTF_KIND_STRUCT:
		snprintf(buf, n, "struct %s", name);
		return;
	case BTF_KIND_UNION:
		snprintf(buf, n, "union %s", name);
		return;
	case BTF_KIND_ENUM:
	case BTF_KIND_ENUM64:
		snprintf(buf, n, "enum %s", name);
		return;
	case BTF_KIND_CONST:
	case BTF_KIND_VOLATILE:
	case BTF_KIND_RESTRICT:
	case BTF_KIND_TYPE_TAG:
		spell(btf, t->type, buf, n, depth + 1);
		return;
	case BTF_KIND_PTR: {
		const struct btf_type *pt = btf__type_by_id(btf, t->type);

		while (pt && btf_is_mod(pt))
			pt = btf__type_by_id(btf, pt->type);
		if (pt && btf_is_func_proto(pt)) {
			snprintf(buf, n, "function pointer");
			return;
		}
		spell(btf, t->type, buf, n, depth + 1);
		len = strlen(buf);
		snprintf(buf + len, n - len, "%s*", buf[len ? len - 1 : 0] == '*' ? "" : " ");
		return;
	}
	case BTF_KIND_ARRAY:
		/* u16[2][3] is an array of 2 arrays of 3: the outer bound comes first */
		while (t && btf_is_array(t) && ndims < 8) {
			dims[ndims++] = btf_array(t)->nelems;
			id = btf_array(t)->type;
			t = btf__type_by_id(btf, id);
		}
		spell(btf, id, buf, n, depth + 1);
		for (i = 0; i < ndims; i++) {
			len = strlen(buf);
			snprintf(buf + len, n - len, "[%u]", dims[i]);
		}
		return;
	default:
		snprintf(buf, n, "%s", name);
	}
}

static const char *type_cname(struct compiler *c, uint32_t id)
{
	char buf[256];

	spell(c->btf, id, buf, sizeof(buf), 0);
	return astrdup(c->L, c->ty, buf);
}

static struct bh_plan *compile(struct compiler *c, uint32_t id);

static struct bh_plan *new_plan(struct compiler *c, enum bh_kind k, uint32_t size)
{
	struct bh_plan *p = aalloc(c->L, c->ty, sizeof(*p));

	p->kind = k;
	p->size = size;
	return p;
}

/* Named members of t once anonymous ones are flattened; *nunions counts the unions. */
static uint32_t count_members(struct compiler *c, const struct btf_type *t, int *nunions)
{
	const struct btf_member *m = btf_members(t);
	uint32_t i, n = 0;

	if (btf_is_union(t))
		(*nunions)++;
	for (i = 0; i < btf_vlen(t); i++, m++) {
		uint32_t mid = m->type;
		const struct btf_type *mt = skip_mods(c->btf, &mid);
		const char *name = btf__name_by_offset(c->btf, m->name_off);

		if (!mt || is_kernel_managed(c->btf, mt))
			continue;
		if ((!name || !*name) && btf_is_composite(mt)) {
			if (++c->depth > 64)
				luaL_error(c->L, "type nests too deeply");
			n += count_members(c, mt, nunions);
			c->depth--;
		} else if (name && *name) {
			n++;
		}
	}
	return n;
}

/*
 * Flatten the members of t into p->fields from *pos. Anonymous struct and
 * union members are inlined. Each union (t itself, or an anonymous one)
 * becomes a group; its fields record the group and which of the union's
 * members they come from (the fields of one anonymous struct inside a union
 * are one member), and a union nested in another's member records where it
 * sits, so that encode can refuse two members of any union.
 */
static void fill_members(struct compiler *c, struct bh_plan *p, const struct btf_type *t,
			 uint32_t base_bits, int group, int member, uint32_t *pos)
{
	const struct btf_member *m = btf_members(t);
	int is_union = btf_is_union(t);
	uint32_t i;

	if (is_union) {
		int g = ++p->ngroups;

		p->groups[g].parent = group;
		p->groups[g].member = member;
		group = g;
	}
	for (i = 0; i < btf_vlen(t); i++, m++) {
		uint32_t mid = m->type;
		const struct btf_type *mt = skip_mods(c->btf, &mid);
		const char *name = btf__name_by_offset(c->btf, m->name_off);
		uint32_t bits = base_bits + btf_member_bit_offset(t, i);
		uint32_t bsz = btf_member_bitfield_size(t, i);
		int mem = is_union ? (int)i + 1 : member;
		struct bh_field *f;

		if (!mt)
			luaL_error(c->L, "bad BTF: member type %d missing", (int)m->type);
		if (is_kernel_managed(c->btf, mt))
			continue;
		if ((!name || !*name) && btf_is_composite(mt)) {
			fill_members(c, p, mt, bits, group, mem, pos);
			continue;
		}
		if (!name || !*name)
			continue;
		f = &p->fields[(*pos)++];
		f->name = astrdup(c->L, c->ty, name);
		f->group = group;
		f->member = mem;
		f->plan = compile(c, m->type);
		/* Old-style (non-kflag) bitfields live in the int type itself. */
		if (!bsz && btf_is_int(mt) &&
		    (btf_int_bits(mt) != mt->size * 8 || btf_int_offset(mt))) {
			bsz = btf_int_bits(mt);
			bits += btf_int_offset(mt);
		}
		if (!bsz && (bits % 8))
			bsz = mt->size * 8;
		if (bsz) {
			if (f->plan->kind != BH_K_INT && f->plan->kind != BH_K_ENUM &&
			    f->plan->kind != BH_K_BOOL)
				luaL_error(c->L, "bad BTF: bitfield %s is not an integer", name);
			if (bsz > 64)
				luaL_error(c->L, "bad BTF: bitfield %s has %d bits", name, (int)bsz);
			f->off = bits / 8;
			f->bit_off = bits % 8;
			f->bit_size = (uint16_t)bsz;
		} else {
			f->off = bits / 8;
		}
	}
}

/*
 * Decode builds a struct's table through a Lua function compiled once per
 * struct: function(a1, ..., an) return {["f1"] = a1, ...} end. Its table
 * constructor copies a template that already holds every key (LuaJIT's
 * TDUP), so no key is hashed or inserted one by one, as lua_setfield would.
 * Pushes the function, or false for a struct with too many fields for the
 * arguments of one call.
 */
#define CTOR_MAX 120

static void make_ctor(struct compiler *c, const struct bh_plan *p)
{
	lua_State *L = c->L;
	luaL_Buffer b;
	uint32_t i;

	for (i = 0; i < p->count && p->count <= CTOR_MAX; i++)
		if (strspn(p->fields[i].name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					       "0123456789_") != strlen(p->fields[i].name))
			break;
	if (i < p->count || p->count > CTOR_MAX) {
		lua_pushboolean(L, 0);
		return;
	}
	luaL_buffinit(L, &b);
	luaL_addstring(&b, "return function(");
	for (i = 0; i < p->count; i++) {
		lua_pushfstring(L, i ? ",a%d" : "a%d", (int)i);
		luaL_addvalue(&b);
	}
	luaL_addstring(&b, ") return {");
	for (i = 0; i < p->count; i++) {
		/* C names are Lua names, but a few are Lua keywords: quote them all */
		lua_pushfstring(L, "[\"%s\"]=a%d,", p->fields[i].name, (int)i);
		luaL_addvalue(&b);
	}
	luaL_addstring(&b, "} end");
	luaL_pushresult(&b);
	if (luaL_loadbuffer(L, lua_tostring(L, -1), bh_rawlen(L, -1), "=codec") != 0)
		lua_error(L);
	lua_call(L, 0, 1);
	lua_remove(L, -2);
}

/*
 * In the type's table of names, from names_base + 1: the constructor
 * (make_ctor), then the field names as Lua strings. Encode matches a key by
 * pointer to these (Lua strings are interned, and these stay alive with the
 * Type).
 */
static void register_names(struct compiler *c, struct bh_plan *p)
{
	uint32_t i;

	p->names_ref = c->ty->names_ref;
	p->names_base = c->nnames;
	make_ctor(c, p);
	lua_rawseti(c->L, c->names, ++c->nnames);
	for (i = 0; i < p->count; i++) {
		lua_pushstring(c->L, p->fields[i].name);
		p->fields[i].name = lua_tostring(c->L, -1);
		lua_rawseti(c->L, c->names, ++c->nnames);
	}
}

static struct bh_plan *compile_composite(struct compiler *c, uint32_t id, const struct btf_type *t)
{
	struct bh_plan *p = new_plan(c, btf_is_union(t) ? BH_K_UNION : BH_K_STRUCT, t->size);
	int nunions = 0;
	uint32_t n = count_members(c, t, &nunions), pos = 0;

	p->cname = type_cname(c, id);
	p->fields = aalloc(c->L, c->ty, sizeof(struct bh_field) * (n ? n : 1));
	p->groups = aalloc(c->L, c->ty, sizeof(struct bh_group) * (size_t)(nunions + 1));
	fill_members(c, p, t, 0, 0, 0, &pos);
	p->count = pos;
	register_names(c, p);
	return p;
}

/*
 * A DATASEC (.bss, .data, .rodata: the value type of a global section's map)
 * is a struct whose fields are the section's variables, at their offsets.
 */
static struct bh_plan *compile_datasec(struct compiler *c, uint32_t id, const struct btf_type *t)
{
	struct bh_plan *p = new_plan(c, BH_K_STRUCT, t->size);
	const struct btf_var_secinfo *vi = btf_var_secinfos(t);
	uint32_t n = btf_vlen(t), pos = 0, i;

	p->cname = type_cname(c, id);
	p->fields = aalloc(c->L, c->ty, sizeof(struct bh_field) * (n ? n : 1));
	p->groups = aalloc(c->L, c->ty, sizeof(struct bh_group));
	for (i = 0; i < n; i++, vi++) {
		const struct btf_type *v = btf__type_by_id(c->btf, vi->type);
		struct bh_field *f;

		if (!v || !btf_is_var(v))
			continue;
		f = &p->fields[pos++];
		f->name = astrdup(c->L, c->ty, btf__name_by_offset(c->btf, v->name_off));
		f->off = vi->offset;
		f->plan = compile(c, v->type);
	}
	p->count = pos;
	register_names(c, p);
	return p;
}

static struct bh_plan *compile_int(struct compiler *c, uint32_t id, const struct btf_type *t)
{
	uint8_t enc = btf_int_encoding(t);
	struct bh_plan *p;

	if (enc & BTF_INT_BOOL)
		p = new_plan(c, BH_K_BOOL, t->size);
	else if (t->size == 1 || t->size == 2 || t->size == 4 || t->size == 8)
		p = new_plan(c, BH_K_INT, t->size);
	else
		p = new_plan(c, BH_K_BYTES, t->size); /* __int128 */
	p->is_signed = !!(enc & BTF_INT_SIGNED);
	p->cname = type_cname(c, id);
	return p;
}

/*
 * Producers that know BTF_KIND_ENUM64 (LLVM >= 15, pahole >= 1.24) mark signed
 * enums with kflag; older ones (Debian 12's clang 14) leave kflag 0 for all
 * and store values as s32. A BTF holding any ENUM64 or kflag enum is from the
 * former.
 */
static int kflag_aware(struct compiler *c)
{
	uint32_t i, n;

	if (c->kflag_aware >= 0)
		return c->kflag_aware;
	c->kflag_aware = 0;
	n = btf__type_cnt(c->btf);
	for (i = 1; i < n; i++) {
		const struct btf_type *t = btf__type_by_id(c->btf, i);

		if (t && (btf_is_enum64(t) || (btf_is_enum(t) && btf_kflag(t)))) {
			c->kflag_aware = 1;
			break;
		}
	}
	return c->kflag_aware;
}

static struct bh_plan *compile_enum(struct compiler *c, uint32_t id, const struct btf_type *t)
{
	struct bh_plan *p = new_plan(c, BH_K_ENUM, t->size);
	uint32_t i, n = btf_vlen(t);

	if (t->size != 1 && t->size != 2 && t->size != 4 && t->size != 8)
		luaL_error(c->L, "bad BTF: enum of %d bytes", (int)t->size);
	p->is_signed = btf_kflag(t);
	if (btf_is_enum(t) && !p->is_signed) {
		/*
		 * An 8-byte ENUM only comes from a producer without ENUM64,
		 * which cut the values to 32 bits. A 32-bit one with a value
		 * that reads negative as s32 is signed, unless its producer
		 * would have said so with kflag.
		 */
		if (t->size == 8)
			p->flags |= BH_PLAN_ENUM_CUT;
		for (i = 0; i < n && !p->is_signed; i++)
			if ((int32_t)btf_enum(t)[i].val < 0 && !kflag_aware(c))
				p->is_signed = 1;
	}
	p->cname = type_cname(c, id);
	p->count = n;
	p->enums = aalloc(c->L, c->ty, sizeof(struct bh_enumval) * (n ? n : 1));
	for (i = 0; i < n; i++) {
		if (btf_is_enum(t)) {
			const struct btf_enum *e = btf_enum(t) + i;

			p->enums[i].name =
				astrdup(c->L, c->ty, btf__name_by_offset(c->btf, e->name_off));
			p->enums[i].val = p->is_signed ? (int64_t)(int32_t)e->val
						       : (int64_t)(uint32_t)e->val;
		} else {
			const struct btf_enum64 *e = btf_enum64(t) + i;

			p->enums[i].name =
				astrdup(c->L, c->ty, btf__name_by_offset(c->btf, e->name_off));
			p->enums[i].val = (int64_t)btf_enum64_value(e);
		}
	}
	return p;
}

static struct bh_plan *compile_array(struct compiler *c, uint32_t id, const struct btf_type *t)
{
	const struct btf_array *a = btf_array(t);
	uint32_t eid = a->type;
	const struct btf_type *et = skip_mods(c->btf, &eid);
	struct bh_plan *p, *elem;
	const char *ename;

	if (!et)
		luaL_error(c->L, "bad BTF: array element type %d missing", (int)a->type);
	elem = compile(c, a->type);
	ename = btf__name_by_offset(c->btf, et->name_off);
	if (btf_is_int(et) && et->size == 1 && ename && !strcmp(ename, "char")) {
		p = new_plan(c, BH_K_CHARS, a->nelems);
	} else if (btf_is_int(et) && et->size == 1 && !(btf_int_encoding(et) & BTF_INT_SIGNED) &&
		   !(btf_int_encoding(et) & BTF_INT_BOOL)) {
		p = new_plan(c, BH_K_BYTES, a->nelems);
	} else {
		p = new_plan(c, BH_K_ARRAY, elem->size * a->nelems);
		p->elem = elem;
	}
	p->count = a->nelems;
	p->cname = type_cname(c, id);
	return p;
}

static struct bh_plan *compile(struct compiler *c, uint32_t id)
{
	uint32_t rid = id;
	const struct btf_type *t = skip_mods(c->btf, &rid);
	struct bh_plan *p = NULL;

	if (++c->depth > 64)
		luaL_error(c->L, "type nests too deeply");
	if (!t)
		luaL_error(c->L, "bad BTF: type %d missing", (int)id);
	switch (btf_kind(t)) {
	case BTF_KIND_INT:
		p = compile_int(c, id, t);
		break;
	case BTF_KIND_PTR:
		p = new_plan(c, BH_K_INT, sizeof(void *));
		p->cname = type_cname(c, id);
		break;
	case BTF_KIND_ENUM:
	case BTF_KIND_ENUM64:
		p = compile_enum(c, id, t);
		break;
	case BTF_KIND_FLOAT:
		if (t->size == 4 || t->size == 8) {
			p = new_plan(c, BH_K_FLOAT, t->size);
			p->cname = type_cname(c, id);
		} else {
			p = new_plan(c, BH_K_BYTES, t->size); /* long double */
			p->cname = type_cname(c, id);
			p->count = t->size;
		}
		break;
	case BTF_KIND_ARRAY:
		p = compile_array(c, id, t);
		break;
	case BTF_KIND_STRUCT:
	case BTF_KIND_UNION:
		p = compile_composite(c, id, t);
		break;
	case BTF_KIND_DATASEC:
		p = compile_datasec(c, id, t);
		break;
	case BTF_KIND_FWD:
		luaL_error(c->L, "type '%s' is incomplete (only declared)",
			   btf__name_by_offset(c->btf, t->name_off));
		break;
	case BTF_KIND_UNKN:
		luaL_error(c->L, "type void has no values");
		break;
	default:
		luaL_error(c->L, "BTF kind %d cannot type a value", btf_kind(t));
	}
	if (p->kind == BH_K_BYTES && !p->count)
		p->count = p->size;
	c->depth--;
	return p;
}

/* ------------------------------------------------------------------------ */
/* -- Type userdata ------------------------------------------------------- */

static struct bh_type *type_newud(lua_State *L)
{
	struct bh_type *t = bh_newud(L, sizeof(*t));

	memset(t, 0, sizeof(*t));
	luaL_getmetatable(L, BH_TYPE_MT);
	lua_setmetatable(L, -2);
	return t;
}

/* -- C declarations, for tostring(Type) ----------------------------------- */

struct strbuf {
	char *s;
	size_t len, cap;
};

static void sb_vprintf(void *ctx, const char *fmt, va_list ap)
{
	struct strbuf *b = ctx;
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return;
	if (b->len + (size_t)n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;
		char *ns;

		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		ns = realloc(b->s, cap);
		if (!ns)
			return;
		b->s = ns;
		b->cap = cap;
	}
	vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
	b->len += (size_t)n;
}

static void sb_printf(struct strbuf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	sb_vprintf(b, fmt, ap);
	va_end(ap);
}

/*
 * The C definition of a named struct, union or enum, one level deep (member
 * types by name; anonymous members inline), as a reader would write it.
 */
static char *make_decl(const struct btf *btf, uint32_t id)
{
	const struct btf_type *t = btf__type_by_id(btf, id);
	struct strbuf b = { 0 };
	struct btf_dump *d;
	const char *name;
	uint32_t i;

	while (t && (btf_is_mod(t) || btf_is_typedef(t))) {
		id = t->type;
		t = btf__type_by_id(btf, id);
	}
	if (!t || !(btf_is_composite(t) || btf_is_any_enum(t)))
		return NULL;
	name = btf__name_by_offset(btf, t->name_off);
	if (btf_is_any_enum(t)) {
		sb_printf(&b, "enum %s {\n", name && *name ? name : "");
		for (i = 0; i < btf_vlen(t); i++) {
			if (btf_is_enum(t)) {
				const struct btf_enum *e = btf_enum(t) + i;

				sb_printf(&b, "\t%s = %lld,\n", btf__name_by_offset(btf, e->name_off),
					  btf_kflag(t) ? (long long)e->val
						       : (long long)(uint32_t)e->val);
			} else {
				const struct btf_enum64 *e = btf_enum64(t) + i;

				sb_printf(&b, "\t%s = %llu,\n", btf__name_by_offset(btf, e->name_off),
					  (unsigned long long)btf_enum64_value(e));
			}
		}
		sb_printf(&b, "}");
		return b.s;
	}
	d = btf_dump__new(btf, sb_vprintf, &b, NULL);
	if (!d || libbpf_get_error(d))
		return NULL;
	sb_printf(&b, "%s %s {\n", btf_is_union(t) ? "union" : "struct", name && *name ? name : "");
	for (i = 0; i < btf_vlen(t); i++) {
		const struct btf_member *m = btf_members(t) + i;
		uint32_t bsz = btf_member_bitfield_size(t, i);
		LIBBPF_OPTS(btf_dump_emit_type_decl_opts, o,
			    .field_name = btf__name_by_offset(btf, m->name_off), .indent_level = 1);

		sb_printf(&b, "\t");
		btf_dump__emit_type_decl(d, m->type, &o);
		if (bsz)
			sb_printf(&b, ": %u", bsz);
		sb_printf(&b, ";\n");
	}
	sb_printf(&b, "}");
	btf_dump__free(d);
	return b.s;
}

/* Compile type_id of btf; pushes the Type userdata. */
struct bh_type *bh_type_new(lua_State *L, const struct btf *btf, uint32_t type_id)
{
	struct bh_type *t = type_newud(L);
	struct compiler c = { L, btf, t, 0, -1, 0, 0 };

	lua_newtable(L);
	lua_pushvalue(L, -1);
	t->names_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* released by type_gc */
	c.names = lua_gettop(L);
	luaL_checkstack(L, 16, "compiling a type");
	t->root = compile(&c, type_id);
	lua_pop(L, 1);
	if (t->root->kind == BH_K_STRUCT || t->root->kind == BH_K_UNION ||
	    t->root->kind == BH_K_ENUM)
		t->decl = make_decl(btf, type_id);
	return t;
}

/* -- Types by name ------------------------------------------------------- */

static const struct {
	const char *name;
	enum bh_kind kind;
	uint8_t size, is_signed;
} scalars[] = {
	{ "u8", BH_K_INT, 1, 0 },	    { "u16", BH_K_INT, 2, 0 },
	{ "u32", BH_K_INT, 4, 0 },	    { "u64", BH_K_INT, 8, 0 },
	{ "s8", BH_K_INT, 1, 1 },	    { "s16", BH_K_INT, 2, 1 },
	{ "s32", BH_K_INT, 4, 1 },	    { "s64", BH_K_INT, 8, 1 },
	{ "__u8", BH_K_INT, 1, 0 },	    { "__u16", BH_K_INT, 2, 0 },
	{ "__u32", BH_K_INT, 4, 0 },	    { "__u64", BH_K_INT, 8, 0 },
	{ "__s8", BH_K_INT, 1, 1 },	    { "__s16", BH_K_INT, 2, 1 },
	{ "__s32", BH_K_INT, 4, 1 },	    { "__s64", BH_K_INT, 8, 1 },
	{ "uint8_t", BH_K_INT, 1, 0 },	    { "uint16_t", BH_K_INT, 2, 0 },
	{ "uint32_t", BH_K_INT, 4, 0 },	    { "uint64_t", BH_K_INT, 8, 0 },
	{ "int8_t", BH_K_INT, 1, 1 },	    { "int16_t", BH_K_INT, 2, 1 },
	{ "int32_t", BH_K_INT, 4, 1 },	    { "int64_t", BH_K_INT, 8, 1 },
	{ "char", BH_K_INT, 1, 1 },	    { "signed char", BH_K_INT, 1, 1 },
	{ "unsigned char", BH_K_INT, 1, 0 }, { "short", BH_K_INT, 2, 1 },
	{ "unsigned short", BH_K_INT, 2, 0 }, { "int", BH_K_INT, 4, 1 },
	{ "unsigned int", BH_K_INT, 4, 0 }, { "unsigned", BH_K_INT, 4, 0 },
	{ "long", BH_K_INT, 8, 1 },	    { "unsigned long", BH_K_INT, 8, 0 },
	{ "long long", BH_K_INT, 8, 1 },    { "unsigned long long", BH_K_INT, 8, 0 },
	{ "size_t", BH_K_INT, 8, 0 },	    { "ssize_t", BH_K_INT, 8, 1 },
	{ "pointer", BH_K_INT, 8, 0 },	    { "void *", BH_K_INT, 8, 0 },
	{ "bool", BH_K_BOOL, 1, 0 },	    { "_Bool", BH_K_BOOL, 1, 0 },
	{ "float", BH_K_FLOAT, 4, 1 },	    { "double", BH_K_FLOAT, 8, 1 },
};

static struct bh_plan *scalar_plan(lua_State *L, struct bh_type *t, const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++) {
		if (!strcmp(scalars[i].name, name)) {
			struct bh_plan *p = aalloc(L, t, sizeof(*p));

			p->kind = scalars[i].kind;
			p->size = scalars[i].size;
			p->is_signed = scalars[i].is_signed;
			p->cname = scalars[i].name;
			return p;
		}
	}
	return NULL;
}

/* The BTF id of a named type: "struct x", "union x", "enum x", or a plain name. */
static int32_t find_named(const struct btf *btf, const char *name)
{
	int32_t id;

	if (!btf)
		return -1;
	if (!strncmp(name, "struct ", 7))
		return btf__find_by_name_kind(btf, name + 7, BTF_KIND_STRUCT);
	if (!strncmp(name, "union ", 6))
		return btf__find_by_name_kind(btf, name + 6, BTF_KIND_UNION);
	if (!strncmp(name, "enum ", 5)) {
		id = btf__find_by_name_kind(btf, name + 5, BTF_KIND_ENUM);
		return id > 0 ? id : btf__find_by_name_kind(btf, name + 5, BTF_KIND_ENUM64);
	}
	id = btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF);
	if (id > 0)
		return id;
	id = btf__find_by_name_kind(btf, name, BTF_KIND_INT);
	if (id > 0)
		return id;
	id = btf__find_by_name_kind(btf, name, BTF_KIND_FLOAT);
	if (id > 0)
		return id;
	id = btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT);
	if (id > 0)
		return id;
	id = btf__find_by_name_kind(btf, name, BTF_KIND_UNION);
	if (id > 0)
		return id;
	return btf__find_by_name_kind(btf, name, BTF_KIND_ENUM);
}

/*
 * A Type from its C spelling: a name found in btf (struct/union/enum tags,
 * typedefs, base types), else a built-in scalar ("u32", "s64", "double"),
 * followed by any number of [N]. Pushes the Type; raises naming fn.
 */
struct bh_type *bh_type_from_spec(lua_State *L, const struct btf *btf, const char *spec,
				  const char *fn)
{
	char base[128];
	uint32_t dims[8];
	int ndims = 0, i;
	const char *p, *br;
	size_t blen;
	struct bh_type *t;
	struct bh_plan *plan = NULL;
	int32_t id;
	char cname[192];

	while (*spec == ' ')
		spec++;
	br = strchr(spec, '[');
	blen = br ? (size_t)(br - spec) : strlen(spec);
	while (blen && spec[blen - 1] == ' ')
		blen--;
	if (!blen || blen >= sizeof(base))
		luaL_error(L, "%s: '%s' is not a type name", fn, spec);
	memcpy(base, spec, blen);
	base[blen] = '\0';
	for (p = br; p && *p;) {
		char *end;
		unsigned long n;

		if (*p == ' ') {
			p++;
			continue;
		}
		if (*p != '[' || ndims >= 8)
			luaL_error(L, "%s: cannot read type '%s'", fn, spec);
		n = strtoul(p + 1, &end, 10);
		if (end == p + 1 || *end != ']' || n == 0 || n > (1u << 24))
			luaL_error(L, "%s: bad array size in type '%s'", fn, spec);
		dims[ndims++] = (uint32_t)n;
		p = end + 1;
	}

	id = find_named(btf, base);
	if (id > 0) {
		t = bh_type_new(L, btf, (uint32_t)id);
		plan = t->root;
	} else {
		t = type_newud(L);
		plan = scalar_plan(L, t, base);
		if (!plan) {
			if (btf)
				luaL_error(L, "%s: no type '%s' in this BTF, and it is not a scalar "
					      "(u8..u64, s8..s64, int, char, bool, float, double, ...)",
					   fn, base);
			luaL_error(L, "%s: unknown type '%s' (scalars: u8..u64, s8..s64, int, char, "
				      "bool, float, double, ...)",
				   fn, base);
		}
		t->root = plan;
	}
	if (!ndims)
		return t;
	free(t->decl);
	t->decl = NULL;
	for (i = ndims - 1; i >= 0; i--) {
		struct bh_plan *a = aalloc(L, t, sizeof(*a));
		int is_char = plan->kind == BH_K_INT && plan->size == 1 &&
			      !strcmp(plan->cname, "char");
		size_t n;
		int j;

		if (is_char) {
			a->kind = BH_K_CHARS;
			a->size = dims[i];
		} else if (plan->kind == BH_K_INT && plan->size == 1 && !plan->is_signed) {
			a->kind = BH_K_BYTES;
			a->size = dims[i];
		} else {
			a->kind = BH_K_ARRAY;
			a->elem = plan;
			if ((uint64_t)plan->size * dims[i] > (1u << 30))
				luaL_error(L, "%s: type '%s' is too big", fn, spec);
			a->size = plan->size * dims[i];
		}
		a->count = dims[i];
		/* this level is base[dims[i]]...[dims[ndims - 1]] */
		n = (size_t)snprintf(cname, sizeof(cname), "%s", base);
		for (j = i; j < ndims && n < sizeof(cname); j++)
			n += (size_t)snprintf(cname + n, sizeof(cname) - n, "[%u]", dims[j]);
		a->cname = astrdup(L, t, cname);
		plan = a;
	}
	t->root = plan;
	return t;
}

/* A type without BTF: size raw bytes. Pushes the Type userdata. */
struct bh_type *bh_type_raw(lua_State *L, uint32_t size)
{
	struct bh_type *t = type_newud(L);
	struct bh_plan *p = aalloc(L, t, sizeof(*p));
	char buf[32];

	p->kind = BH_K_RAW;
	p->size = size;
	p->count = size;
	snprintf(buf, sizeof(buf), "%u bytes", size);
	p->cname = astrdup(L, t, buf);
	t->root = p;
	return t;
}

struct bh_type *bh_type_check(lua_State *L, int idx)
{
	struct bh_type *t = bh_checkud(L, idx, BH_TYPE_MT);

	if (!t->root)
		luaL_error(L, "type is released");
	return t;
}

static int type_gc(lua_State *L)
{
	struct bh_type *t = bh_checkud(L, 1, BH_TYPE_MT);

	arena_free(t);
	if (t->names_ref > 0)
		luaL_unref(L, LUA_REGISTRYINDEX, t->names_ref);
	t->names_ref = 0;
	return 0;
}

static int type_tostring(lua_State *L)
{
	struct bh_type *t = bh_checkud(L, 1, BH_TYPE_MT);

	if (!t->root)
		lua_pushliteral(L, "type (released)");
	else if (t->decl)
		lua_pushstring(L, t->decl);
	else
		lua_pushfstring(L, "%s", t->root->cname ? t->root->cname : "?");
	return 1;
}

/*
 * Type methods hold the Type metatable as upvalue 1, so that the check of
 * self is a pointer comparison rather than luaL_checkudata's lookup by name.
 */
static struct bh_type *type_self(lua_State *L)
{
	struct bh_type *t = lua_touserdata(L, 1);
	int same = t && lua_getmetatable(L, 1);

	if (same) {
		same = lua_rawequal(L, -1, lua_upvalueindex(1));
		lua_pop(L, 1);
	}
	if (!same)
		return bh_type_check(L, 1); /* raises, naming what it got */
	if (!t->root)
		luaL_error(L, "type is released");
	return t;
}

static int type_encode(lua_State *L)
{
	struct bh_type *t = type_self(L);
	struct bh_cctx c = { L, "encode", "type", t->root->cname, "value", 0, { { 0 } } };
	char small[256], *dst = small;

	luaL_checkany(L, 2);
	lua_settop(L, 2);
	if (t->root->size > sizeof(small))
		dst = lua_newuserdata(L, t->root->size); /* freed by GC */
	bh_encode(&c, t->root, 2, dst);
	lua_pushlstring(L, dst, t->root->size);
	return 1;
}

static int type_decode(lua_State *L)
{
	struct bh_type *t = type_self(L);
	struct bh_cctx c = { L, "decode", "type", t->root->cname, "value", 0, { { 0 } } };
	const char *s;
	size_t n;

	if (lua_type(L, 2) != LUA_TSTRING)
		luaL_error(L, "decode type '%s': expected a string of %d bytes, got %s",
			   t->root->cname, (int)t->root->size, luaL_typename(L, 2));
	s = lua_tolstring(L, 2, &n);
	if (n != t->root->size)
		luaL_error(L, "decode type '%s': %d bytes given, the type has %d", t->root->cname,
			   (int)n, (int)t->root->size);
	bh_decode(&c, t->root, s);
	return 1;
}

/* T.size, T.name, T:encode, T:decode (and T:__codegen); upvalues: encode, decode, __codegen. */
static int type_index(lua_State *L)
{
	struct bh_type *t = lua_touserdata(L, 1);
	const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";

	if (!t || !t->root)
		luaL_error(L, "type is released");
	if (!strcmp(k, "encode"))
		lua_pushvalue(L, lua_upvalueindex(1));
	else if (!strcmp(k, "decode"))
		lua_pushvalue(L, lua_upvalueindex(2));
	else if (!strcmp(k, "size"))
		lua_pushinteger(L, t->root->size);
	else if (!strcmp(k, "name"))
		lua_pushstring(L, t->root->cname);
	else if (!strcmp(k, "__codegen"))
		lua_pushvalue(L, lua_upvalueindex(3));
	else
		lua_pushnil(L);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Errors with a path -------------------------------------------------- */

#define MAXSEG ((int)(sizeof(((struct bh_cctx *)0)->seg) / \
		      sizeof(((struct bh_cctx *)0)->seg[0])))

int bh_codec_error(struct bh_cctx *c, const char *fmt, ...)
{
	lua_State *L = c->L;
	luaL_Buffer b;
	char msg[512];
	va_list ap;
	int i;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lua_checkstack(L, 8);
	luaL_buffinit(L, &b);
	if (c->name)
		lua_pushfstring(L, "%s %s '%s': ", c->op, c->what, c->name);
	else
		lua_pushfstring(L, "%s: ", c->op);
	luaL_addvalue(&b);
	luaL_addstring(&b, c->root);
	for (i = 0; i < c->depth && i < MAXSEG; i++) {
		if (c->seg[i].name) {
			luaL_addchar(&b, '.');
			luaL_addstring(&b, c->seg[i].name);
		} else {
			lua_pushfstring(L, "[%d]", (int)c->seg[i].idx);
			luaL_addvalue(&b);
		}
	}
	if (c->depth > MAXSEG)
		luaL_addstring(&b, "...");
	luaL_addstring(&b, ": ");
	luaL_addstring(&b, msg);
	luaL_pushresult(&b);
	lua_error(L);
	abort(); /* not reached */
}

static inline void push_seg(struct bh_cctx *c, const char *name, long idx)
{
	if (c->depth < MAXSEG) {
		c->seg[c->depth].name = name;
		c->seg[c->depth].idx = idx;
	}
	c->depth++;
}

/* s (len bytes) quoted for a message: at most max bytes, unprintable ones escaped. */
static void quote(const char *s, size_t len, char *buf, size_t n, size_t max)
{
	size_t i, o = 0;

	buf[o++] = '\'';
	for (i = 0; i < len && i < max && o + 6 < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '\'')
			buf[o++] = (char)ch;
		else
			o += (size_t)snprintf(buf + o, n - o, "\\%u", ch);
	}
	buf[o++] = '\'';
	buf[o] = '\0';
	if (i < len)
		snprintf(buf + o, n - o, "... (%zu bytes)", len);
}

/* A short rendering of the Lua value at idx, for messages. */
static const char *show(lua_State *L, int idx, char *buf, size_t n)
{
	switch (lua_type(L, idx)) {
	case LUA_TNUMBER: {
		lua_Number d = lua_tonumber(L, idx);
		int prec;

#if LUA_VERSION_NUM >= 503
		if (lua_isinteger(L, idx)) {
			snprintf(buf, n, "%lld", (long long)lua_tointeger(L, idx));
			return buf;
		}
#endif
		if (d != d)
			return "nan";
		if (isinf(d))
			return d > 0 ? "inf" : "-inf";
		/* whole numbers as integers (10, not 1e+01), up to 2^63 */
		if (d == floor(d) && fabs(d) < 9223372036854775808.0) {
			snprintf(buf, n, "%lld", (long long)d);
			return buf;
		}
		/* the shortest form that reads back */
		for (prec = 1; prec <= 17; prec++) {
			snprintf(buf, n, "%.*g", prec, d);
			if (strtod(buf, NULL) == d)
				break;
		}
		return buf;
	}
	case LUA_TSTRING: {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);

		quote(s, len, buf, n, 32);
		return buf;
	}
	case LUA_TBOOLEAN:
		return lua_toboolean(L, idx) ? "true" : "false";
	default:
		snprintf(buf, n, "a %s", luaL_typename(L, idx));
		return buf;
	}
}

/* ------------------------------------------------------------------------ */
/* -- 64-bit integers beyond 2^53 ----------------------------------------- */

#ifdef BH_LUAJIT
static char slot_key, boxu_key, boxs_key, unbox_key;

/*
 * LuaJIT's C API has no int64: the only way to make or read an int64_t /
 * uint64_t cdata is through the FFI, so this one small helper uses it. It
 * is called with the address of a slot (a userdata the registry anchors)
 * that C and the helper pass 64-bit values through: box_u() and box_s()
 * return the slot as uint64_t / int64_t cdata; unbox(v) returns 2 (a
 * uint64_t, left in the slot), 1 (an int64_t, in the slot), 3 and a number
 * (another numeric cdata), or 0 and the ctype's name.
 */
static const char helper_src[] =
	"local ffi = require 'ffi'\n"
	"local istype, typeof = ffi.istype, ffi.typeof\n"
	"local u64, i64 = typeof('uint64_t'), typeof('int64_t')\n"
	"local slot, islot = ffi.cast('uint64_t *', (...)), ffi.cast('int64_t *', (...))\n"
	"local cx, cxf, cb = typeof('complex'), typeof('complex float'), typeof('bool')\n"
	"local function box_u() return slot[0] end\n"
	"local function box_s() return islot[0] end\n"
	"local function unbox(v)\n"
	"  if istype(u64, v) then slot[0] = v return 2 end\n"
	"  if istype(i64, v) then islot[0] = v return 1 end\n"
	"  if not (istype(cx, v) or istype(cxf, v) or istype(cb, v)) then\n"
	"    local n = tonumber(v)\n"
	"    if type(n) == 'number' then return 3, n end\n"
	"  end\n"
	"  return 0, (tostring(typeof(v)):gsub('^ctype<(.*)>$', '%1'))\n"
	"end\n"
	"return box_u, box_s, unbox\n";

static uint64_t *box_slot(lua_State *L)
{
	uint64_t *slot;

	lua_pushlightuserdata(L, &slot_key);
	lua_rawget(L, LUA_REGISTRYINDEX);
	slot = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return slot;
}
#endif

static void push_u64(lua_State *L, uint64_t v, int is_signed)
{
#if LUA_VERSION_NUM >= 503
	lua_pushinteger(L, (lua_Integer)v);
	(void)is_signed;
#else
	int64_t s = (int64_t)v;
	uint64_t *slot;

	if (is_signed ? (s >= -(1LL << 53) && s <= (1LL << 53)) : (v <= (1ULL << 53))) {
		lua_pushnumber(L, is_signed ? (lua_Number)s : (lua_Number)v);
		return;
	}
#ifdef BH_LUAJIT
	slot = box_slot(L);
	if (slot) {
		*slot = v;
		lua_pushlightuserdata(L, is_signed ? &boxs_key : &boxu_key);
		lua_rawget(L, LUA_REGISTRYINDEX);
		lua_call(L, 0, 1);
		return;
	}
#endif
	(void)slot;
	lua_pushnumber(L, is_signed ? (lua_Number)s : (lua_Number)v);
#endif
}

/* ------------------------------------------------------------------------ */
/* -- Reading integers from Lua ------------------------------------------- */

typedef __int128 i128;

static int parse_int_string(const char *s, size_t len, i128 *out)
{
	const char *p = s, *end = s + len;
	int neg = 0, base = 10, digits = 0;
	i128 v = 0;

	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (p < end && (*p == '-' || *p == '+'))
		neg = *p++ == '-';
	if (end - p > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	for (; p < end; p++) {
		int d;

		if (*p >= '0' && *p <= '9')
			d = *p - '0';
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = *p - 'a' + 10;
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = *p - 'A' + 10;
		else
			return 0;
		v = v * base + d;
		if (v > ((i128)1 << 80))
			return 0;
		digits++;
	}
	if (!digits)
		return 0;
	*out = neg ? -v : v;
	return 1;
}

static const char *i128_str(i128 v, char *buf, size_t n)
{
	char tmp[64];
	int i = 0, neg = v < 0;
	unsigned __int128 u = neg ? -(unsigned __int128)v : (unsigned __int128)v;

	do {
		tmp[i++] = (char)('0' + (int)(u % 10));
		u /= 10;
	} while (u && i < 60);
	if (neg)
		tmp[i++] = '-';
	if ((size_t)i >= n)
		i = (int)n - 1;
	for (int j = 0; j < i; j++)
		buf[j] = tmp[i - 1 - j];
	buf[i] = '\0';
	return buf;
}

#ifdef BH_LUAJIT
/*
 * Unbox the cdata at idx through the FFI helper: returns its kind (see
 * helper_src) with *raw set for 64-bit integers; kind 3 leaves its number
 * pushed, kind 0 its ctype name; 1 and 2 push nothing.
 */
static int unbox_cdata(lua_State *L, int idx, uint64_t *raw)
{
	int kind;

	lua_pushlightuserdata(L, &unbox_key);
	lua_rawget(L, LUA_REGISTRYINDEX);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_pushliteral(L, "cdata");
		return 0;
	}
	lua_pushvalue(L, idx);
	lua_call(L, 1, 2);
	kind = (int)lua_tointeger(L, -2);
	lua_remove(L, -2);
	if (kind == 1 || kind == 2) {
		lua_pop(L, 1);
		*raw = *box_slot(L);
	}
	return kind;
}
#endif

static __attribute__((noinline, noreturn)) void enum_cut(struct bh_cctx *c,
							  const struct bh_plan *p, const char *s)
{
	bh_codec_error(c, "'%s': the BTF of %s holds its 64-bit values cut to 32 bits (made by "
			  "clang < 15): give the number",
		       s, p->cname);
}

/* Lua value at idx as an exact integer, or a codec error naming why not. */
static i128 get_int(struct bh_cctx *c, const struct bh_plan *p, int idx)
{
	lua_State *L = c->L;
	char sb[96];
	i128 v;

	switch (lua_type(L, idx)) {
	case LUA_TNUMBER: {
		lua_Number d;

#if LUA_VERSION_NUM >= 503
		if (lua_isinteger(L, idx)) {
			lua_Integer i = lua_tointeger(L, idx);

			/* 5.4: a u64 (or 64-bit unsigned enum) beyond 2^63 arrives as a negative integer */
			if (i < 0 && (p->kind == BH_K_INT || p->kind == BH_K_ENUM) && p->size == 8 &&
			    !p->is_signed)
				return (i128)(uint64_t)i;
			return i;
		}
#endif
		d = lua_tonumber(L, idx);
		if (unlikely(d != d || isinf(d) || d != floor(d)))
			bh_codec_error(c, "%s is not an integer", show(L, idx, sb, sizeof(sb)));
		if (unlikely(d >= 0x1p100 || d <= -0x1p100))
			bh_codec_error(c, "%s does not fit %s", show(L, idx, sb, sizeof(sb)),
				       p->cname);
		return (i128)d;
	}
	case LUA_TSTRING: {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		uint32_t i;

		if (p->kind == BH_K_ENUM) {
			for (i = 0; i < p->count; i++) {
				const char *n = p->enums[i].name;

				if (n[0] == s[0] && !strcmp(n, s) && strlen(n) == len) {
					if (p->flags & BH_PLAN_ENUM_CUT)
						enum_cut(c, p, n);
					return p->is_signed ? (i128)p->enums[i].val
							    : (i128)(uint64_t)p->enums[i].val;
				}
			}
		}
		if (!parse_int_string(s, len, &v)) {
			if (p->kind == BH_K_ENUM)
				bh_codec_error(c, "%s is not a value of %s",
					       show(L, idx, sb, sizeof(sb)),
					       p->cname);
			bh_codec_error(c, "%s is not an integer", show(L, idx, sb, sizeof(sb)));
		}
		return v;
	}
#ifdef BH_LUAJIT
	case 10: { /* LUA_TCDATA */
		uint64_t raw = 0;
		int kind = unbox_cdata(L, idx, &raw);

		if (kind == 3) {
			v = get_int(c, p, lua_gettop(L));
			lua_pop(L, 1);
			return v;
		}
		if (kind == 2)
			return (i128)raw;
		if (kind == 1)
			return (i128)(int64_t)raw;
		bh_codec_error(c, "cdata<%s> is not an integer", lua_tostring(L, -1));
	}
#endif
	default:
		if (p->kind == BH_K_ENUM)
			bh_codec_error(c, "expected an integer or a name of %s, got %s", p->cname,
				       luaL_typename(L, idx));
		bh_codec_error(c, "expected an integer, got %s", luaL_typename(L, idx));
	}
	return 0;
}

static __attribute__((noinline, noreturn)) void range_fail(struct bh_cctx *c,
							    const struct bh_plan *p, i128 v,
							    unsigned bits, i128 lo, i128 hi)
{
	char sb[48], a[48], b[48];

	if (!p->is_signed && v < 0)
		bh_codec_error(c, "%s is negative for an unsigned field",
			       i128_str(v, sb, sizeof(sb)));
	if (bits != p->size * 8)
		bh_codec_error(c, "%s does not fit a %u-bit field", i128_str(v, sb, sizeof(sb)),
			       bits);
	bh_codec_error(c, "%s does not fit %s (%s..%s)", i128_str(v, sb, sizeof(sb)), p->cname,
		       i128_str(lo, a, sizeof(a)), i128_str(hi, b, sizeof(b)));
}

/* 2^n as a double, n = 0..64. */
static inline double pow2(unsigned n)
{
	return n < 64 ? (double)(1ULL << n) : 18446744073709551616.0;
}

/*
 * The common case: a Lua number, integral and in range for bits (signed or
 * not), read without 128-bit arithmetic. Returns 1 with *out set, or 0 for
 * get_int and range_check to take it (and name what is wrong).
 */
static inline int int_fast(lua_State *L, int idx, unsigned bits, int is_signed, uint64_t *out)
{
	lua_Number d;
	int64_t i;

	if (lua_type(L, idx) != LUA_TNUMBER)
		return 0;
#if LUA_VERSION_NUM >= 503
	if (lua_isinteger(L, idx))
		return 0;
#endif
	d = lua_tonumber(L, idx);
	if (is_signed) {
		if (!(d >= -pow2(bits - 1) && d < pow2(bits - 1)))
			return 0;
	} else {
		if (!(d >= 0 && d < pow2(bits)))
			return 0;
		if (d >= 9223372036854775808.0) {
			*out = (uint64_t)d; /* doubles this big are integers */
			return 1;
		}
	}
	i = (int64_t)d;
	if ((lua_Number)i != d)
		return 0;
	*out = (uint64_t)i;
	return 1;
}

static inline void range_check(struct bh_cctx *c, const struct bh_plan *p, i128 v, unsigned bits)
{
	i128 lo, hi;

	if (p->is_signed) {
		lo = -((i128)1 << (bits - 1));
		hi = ((i128)1 << (bits - 1)) - 1;
	} else {
		lo = 0;
		hi = ((i128)1 << bits) - 1;
	}
	if (unlikely(v < lo || v > hi))
		range_fail(c, p, v, bits, lo, hi);
}

static inline void store_int(void *dst, uint32_t size, uint64_t u)
{
	switch (size) {
	case 1: *(uint8_t *)dst = (uint8_t)u; break;
	case 2: { uint16_t x = (uint16_t)u; memcpy(dst, &x, 2); break; }
	case 4: { uint32_t x = (uint32_t)u; memcpy(dst, &x, 4); break; }
	case 8: memcpy(dst, &u, 8); break;
	}
}

static inline uint64_t load_int(const void *src, uint32_t size, int is_signed)
{
	switch (size) {
	case 1:
		return is_signed ? (uint64_t)(int64_t)*(const int8_t *)src : *(const uint8_t *)src;
	case 2: {
		uint16_t x;

		memcpy(&x, src, 2);
		return is_signed ? (uint64_t)(int64_t)(int16_t)x : x;
	}
	case 4: {
		uint32_t x;

		memcpy(&x, src, 4);
		return is_signed ? (uint64_t)(int64_t)(int32_t)x : x;
	}
	default: {
		uint64_t x;

		memcpy(&x, src, 8);
		return x;
	}
	}
}

/* Bitfields: little-endian bit numbering, as on x86 and arm64. */
static uint64_t load_bits(const unsigned char *base, unsigned bit_off, unsigned nbits, int is_signed)
{
	unsigned char tmp[16] = { 0 };
	unsigned __int128 w;
	uint64_t v;
	unsigned nbytes = (bit_off + nbits + 7) / 8;

	memcpy(tmp, base, nbytes);
	memcpy(&w, tmp, sizeof(w));
	w >>= bit_off;
	v = nbits == 64 ? (uint64_t)w : (uint64_t)w & ((1ULL << nbits) - 1);
	if (is_signed && nbits < 64 && (v >> (nbits - 1)) & 1)
		v |= ~((1ULL << nbits) - 1);
	return v;
}

static void store_bits(unsigned char *base, unsigned bit_off, unsigned nbits, uint64_t v)
{
	unsigned char tmp[16] = { 0 };
	unsigned __int128 w, mask;
	unsigned nbytes = (bit_off + nbits + 7) / 8;

	memcpy(tmp, base, nbytes);
	memcpy(&w, tmp, sizeof(w));
	mask = (nbits == 64 ? ~(unsigned __int128)0 >> 64 : (((unsigned __int128)1 << nbits) - 1))
	       << bit_off;
	w = (w & ~mask) | (((unsigned __int128)v << bit_off) & mask);
	memcpy(tmp, &w, sizeof(w));
	memcpy(base, tmp, nbytes);
}

/* ------------------------------------------------------------------------ */
/* -- Encode -------------------------------------------------------------- */

static void enc(struct bh_cctx *c, const struct bh_plan *p, int idx, unsigned char *dst);

static void enc_bool(struct bh_cctx *c, const struct bh_plan *p, int idx, unsigned char *dst)
{
	if (lua_type(c->L, idx) != LUA_TBOOLEAN)
		bh_codec_error(c, "expected a boolean, got %s", luaL_typename(c->L, idx));
	store_int(dst, p->size, lua_toboolean(c->L, idx) ? 1 : 0);
}

static void enc_float(struct bh_cctx *c, const struct bh_plan *p, int idx, unsigned char *dst)
{
	lua_State *L = c->L;
	lua_Number d;
	char sb[64];

	if (lua_type(L, idx) == LUA_TNUMBER) {
		d = lua_tonumber(L, idx);
#ifdef BH_LUAJIT
	} else if (lua_type(L, idx) == 10) { /* LUA_TCDATA */
		uint64_t raw = 0;
		int kind = unbox_cdata(L, idx, &raw);

		if (kind == 0)
			bh_codec_error(c, "cdata<%s> is not a number", lua_tostring(L, -1));
		if (kind == 3) {
			d = lua_tonumber(L, -1);
			lua_pop(L, 1);
		} else {
			d = kind == 2 ? (lua_Number)raw : (lua_Number)(int64_t)raw;
		}
#endif
	} else {
		bh_codec_error(c, "expected a number, got %s", luaL_typename(L, idx));
	}
	if (p->size == 4) {
		float f;

		if (isfinite(d) && (d > 3.40282346638528859811704183484516925e+38 ||
				    d < -3.40282346638528859811704183484516925e+38)) {
			lua_pushnumber(L, d);
			bh_codec_error(c, "%s does not fit float", show(L, -1, sb, sizeof(sb)));
		}
		f = (float)d;
		memcpy(dst, &f, 4);
	} else {
		double x = (double)d;

		memcpy(dst, &x, 8);
	}
}

static void enc_chars(struct bh_cctx *c, const struct bh_plan *p, int idx, unsigned char *dst)
{
	size_t len;
	const char *s;

	if (lua_type(c->L, idx) != LUA_TSTRING)
		bh_codec_error(c, "expected a string, got %s", luaL_typename(c->L, idx));
	s = lua_tolstring(c->L, idx, &len);
	if (len > p->count)
		bh_codec_error(c, "%zu bytes do not fit %s", len, p->cname);
	memcpy(dst, s, len);
	memset(dst + len, 0, p->count - len);
}

/*
 * The key of a lua_next pass over an array (at -2) as an index 0..count-1,
 * or an error naming what is wrong with it.
 */
static uint32_t array_index(struct bh_cctx *c, const struct bh_plan *p, int tbl)
{
	lua_State *L = c->L;
	char sb[96];
	lua_Number d;

	if (lua_type(L, -2) != LUA_TNUMBER) {
		if (lua_type(L, -2) == LUA_TSTRING)
			bh_codec_error(c, "%s takes an array, got key %s", p->cname,
				       show(L, -2, sb, sizeof(sb)));
		bh_codec_error(c, "%s takes an array, got a %s key", p->cname,
			       luaL_typename(L, -2));
	}
	d = lua_tonumber(L, -2);
	if (d >= 1 && d <= p->count && d == floor(d))
		return (uint32_t)d - 1;
	if (bh_rawlen(L, tbl) > p->count)
		bh_codec_error(c, "%zu elements do not fit %s", (size_t)bh_rawlen(L, tbl),
			       p->cname);
	bh_codec_error(c, "index %s is out of range for %s (1..%u)", show(L, -2, sb, sizeof(sb)),
		       p->cname, p->count);
	return 0;
}

static void enc_bytes(struct bh_cctx *c, const struct bh_plan *p, int idx, unsigned char *dst)
{
	lua_State *L = c->L;

	if (lua_type(L, idx) == LUA_TSTRING) {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);

		if (len != p->count)
			bh_codec_error(c, "%zu bytes given, %s takes exactly %u", len, p->cname,
				       p->count);
		memcpy(dst, s, len);
		return;
	}
	if (lua_type(L, idx) != LUA_TTABLE)
		bh_codec_error(c, "expected a string of %u bytes, got %s", p->count,
			       luaL_typename(L, idx));
	memset(dst, 0, p->count);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		uint32_t i = array_index(c, p, idx);
		lua_Number d;
		char sb[64];

		push_seg(c, NULL, (long)i + 1);
		if (lua_type(L, -1) != LUA_TNUMBER)
			bh_codec_error(c, "expected a byte, got %s", luaL_typename(L, -1));
		d = lua_tonumber(L, -1);
		if (d != floor(d) || d < 0 || d > 255)
			bh_codec_error(c, "%s is not a byte (0..255)", show(L, -1, sb, sizeof(sb)));
		c->depth--;
		dst[i] = (unsigned char)d;
		lua_pop(L, 1);
	}
}

static void enc_raw(struct bh_cctx *c, const struct bh_plan *p, int idx, unsigned char *dst)
{
	lua_State *L = c->L;

	if (lua_type(L, idx) == LUA_TSTRING) {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);

		if (len != p->size && (p->flags & BH_PLAN_RAW_OPT))
			bh_codec_error(c, "%zu bytes given, raw takes exactly %u", len, p->size);
		if (len != p->size)
			bh_codec_error(c, "%zu bytes given, this map takes exactly %u (no BTF: give "
					  "a byte string, or set_types)",
				       len, p->size);
		memcpy(dst, s, len);
		return;
	}
	if (p->size == 1 || p->size == 2 || p->size == 4 || p->size == 8) {
		struct bh_plan ip = *p;
		char sb[96];
		i128 v;

		if (lua_type(L, idx) != LUA_TNUMBER && lua_type(L, idx) != 10)
			bh_codec_error(c, "expected a string of %u bytes or an integer, got %s",
				       p->size, luaL_typename(L, idx));
		ip.kind = BH_K_INT;
		v = get_int(c, &ip, idx);
		if (v < -((i128)1 << (p->size * 8 - 1)) || v > ((i128)1 << (p->size * 8)) - 1)
			bh_codec_error(c, "%s does not fit %u bytes", i128_str(v, sb, sizeof(sb)),
				       p->size);
		store_int(dst, p->size, (uint64_t)v);
		return;
	}
	bh_codec_error(c, "expected a string of %u bytes, got %s", p->size, luaL_typename(L, idx));
}

static void enc_array(struct bh_cctx *c, const struct bh_plan *p, int idx, unsigned char *dst)
{
	lua_State *L = c->L;
	const struct bh_plan *e = p->elem;

	if (lua_type(L, idx) != LUA_TTABLE)
		bh_codec_error(c, "expected an array (table) for %s, got %s", p->cname,
			       luaL_typename(L, idx));
	luaL_checkstack(L, 8, "value nests too deeply");
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		uint32_t i = array_index(c, p, idx);

		push_seg(c, NULL, (long)i + 1);
		/* bh_encode zeroed the whole value; a later key may not zero it again */
		if (e->kind == BH_K_STRUCT || e->kind == BH_K_UNION || e->kind == BH_K_ARRAY)
			memset(dst + (size_t)i * e->size, 0, e->size);
		enc(c, e, lua_gettop(L), dst + (size_t)i * e->size);
		c->depth--;
		lua_pop(L, 1);
	}
}

static inline int field_index(const struct bh_plan *p, const char *k, size_t klen)
{
	uint32_t i;

	for (i = 0; i < p->count; i++)
		if (p->fields[i].name == k)
			return (int)i;
	for (i = 0; i < p->count; i++) {
		const char *n = p->fields[i].name;

		if (n[0] == k[0] && !strncmp(n, k, klen) && n[klen] == '\0')
			return (int)i;
	}
	return -1;
}

/* Edit distance of a and b, or a large number when they are long or far apart. */
static int distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	int row[64], prev, tmp;

	if (la >= 63 || lb >= 63)
		return 99;
	for (j = 0; j <= lb; j++)
		row[j] = (int)j;
	for (i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = (int)i;
		for (j = 1; j <= lb; j++) {
			int best = prev + ((a[i - 1] | 0x20) != (b[j - 1] | 0x20));

			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			tmp = row[j];
			row[j] = best;
			prev = tmp;
		}
	}
	return row[lb];
}

/*
 * "unknown field 'pakets' (struct stats has packets, delta, seen, ...)": the
 * list holds at most four items, "..." counting as one, so a struct of up to
 * four fields is listed whole and a larger one by its first three. A field
 * name close to the unknown one that the list leaves out is suggested.
 */
#define LIST_FIELDS 4

static __attribute__((noinline, noreturn)) void unknown_field(struct bh_cctx *c,
							       const struct bh_plan *p,
							       const char *k)
{
	char list[320], hint[96];
	size_t pos = 0;
	uint32_t i, shown = p->count <= LIST_FIELDS ? p->count : LIST_FIELDS - 1;
	int best = -1, bestd = 3;

	list[0] = hint[0] = '\0';
	for (i = 0; i < shown; i++) {
		int n = snprintf(list + pos, sizeof(list) - pos, "%s%s", i ? ", " : "",
				 p->fields[i].name);

		if (n < 0 || (size_t)n >= sizeof(list) - pos)
			break;
		pos += (size_t)n;
	}
	if (shown < p->count && pos + 6 < sizeof(list))
		strcat(list, ", ...");
	for (i = shown; i < p->count; i++) {
		int d = distance(k, p->fields[i].name);

		if (d < bestd && (d < 2 || strlen(k) > 3)) {
			best = (int)i;
			bestd = d;
		}
	}
	if (best >= 0)
		snprintf(hint, sizeof(hint), "; did you mean '%s'?", p->fields[best].name);
	if (!p->count)
		bh_codec_error(c, "unknown field '%s' (%s has no fields)", k, p->cname);
	bh_codec_error(c, "unknown field '%s' (%s has %s%s)", k, p->cname, list, hint);
}

static inline void enc_field(struct bh_cctx *c, const struct bh_field *f, int idx,
			     unsigned char *dst)
{
	const struct bh_plan *p = f->plan;
	uint64_t fast;

	/* the common case, an integer field given a number in range, inline */
	if (likely(!f->bit_size && (p->kind == BH_K_INT || p->kind == BH_K_ENUM)) &&
	    int_fast(c->L, idx, p->size * 8, p->is_signed, &fast)) {
		store_int(dst + f->off, p->size, fast);
		return;
	}
	push_seg(c, f->name, 0);
	if (f->bit_size) {
		uint64_t u;
		i128 v;

		if (p->kind != BH_K_BOOL && int_fast(c->L, idx, f->bit_size, p->is_signed, &u)) {
			store_bits(dst + f->off, f->bit_off, f->bit_size, u);
			c->depth--;
			return;
		}
		if (p->kind == BH_K_BOOL) {
			if (lua_type(c->L, idx) != LUA_TBOOLEAN)
				bh_codec_error(c, "expected a boolean, got %s",
					       luaL_typename(c->L, idx));
			v = lua_toboolean(c->L, idx);
		} else {
			v = get_int(c, p, idx);
		}
		range_check(c, p, v, f->bit_size);
		store_bits(dst + f->off, f->bit_off, f->bit_size, (uint64_t)v);
	} else {
		enc(c, p, idx, dst + f->off);
	}
	c->depth--;
}

/*
 * Where encode tracks which member of each union a table gave: used[g] is
 * the member of group g, who[g] the field that chose it, rival[g] + 1 a
 * field that gave another member.
 */
struct unions {
	int *used, *who, *rival;
	int agree;           /* some union got two members: check they agree */
	int buf[3 * 16];
};

static void unions_init(lua_State *L, struct unions *u, int ngroups)
{
	size_t n = (size_t)ngroups + 1;

	u->agree = 0;
	if (n * 3 <= sizeof(u->buf) / sizeof(u->buf[0]))
		u->used = u->buf;
	else
		u->used = lua_newuserdata(L, 3 * n * sizeof(int)); /* on the stack till done */
	u->who = u->used + n;
	u->rival = u->who + n;
	memset(u->used, 0, 3 * n * sizeof(int));
}

/* Record field fi's member in every union around it; 1 if a union got a second one. */
static int unions_take(const struct bh_plan *p, struct unions *u, int fi)
{
	int g = p->fields[fi].group, m = p->fields[fi].member, clash = 0;

	while (g) {
		if (!u->used[g]) {
			u->used[g] = m;
			u->who[g] = fi;
		} else if (u->used[g] != m) {
			u->rival[g] = fi + 1;
			clash = 1;
		}
		m = p->groups[g].member;
		g = p->groups[g].parent;
	}
	return clash;
}

/*
 * Several members of one union were given (as a lookup returns them). They
 * are accepted when each reads back as given from the bytes encoded: encode
 * each field in such a union alone into tmp and compare its bytes (or bits).
 */
static void unions_check(struct bh_cctx *c, const struct bh_plan *p, const struct unions *u,
			 int idx, const unsigned char *dst)
{
	lua_State *L = c->L;
	unsigned char *tmp = lua_newuserdata(L, p->size ? p->size : 1);
	int top = lua_gettop(L);

	lua_pushnil(L);
	while (lua_next(L, idx)) {
		size_t klen;
		const char *k = lua_tolstring(L, -2, &klen);
		int fi = field_index(p, k, klen);
		const struct bh_field *f = &p->fields[fi];
		int g = f->group, m = f->member, bad;

		while (g && !u->rival[g]) {
			m = p->groups[g].member;
			g = p->groups[g].parent;
		}
		if (!g) {
			lua_settop(L, top + 1);
			continue;
		}
		if (f->bit_size) {
			memcpy(tmp, dst, p->size);
			enc_field(c, f, top + 2, tmp);
			bad = load_bits(tmp + f->off, f->bit_off, f->bit_size, 0) !=
			      load_bits(dst + f->off, f->bit_off, f->bit_size, 0);
		} else {
			memset(tmp + f->off, 0, f->plan->size);
			enc_field(c, f, top + 2, tmp);
			bad = memcmp(tmp + f->off, dst + f->off, f->plan->size) != 0;
		}
		if (bad) {
			int other = m == u->used[g] ? u->rival[g] - 1 : u->who[g];

			bh_codec_error(c, "'%s' and '%s' share a union: give one of them, or "
					  "values that agree",
				       p->fields[other].name, f->name);
		}
		lua_settop(L, top + 1);
	}
}

static __attribute__((noinline, noreturn)) void bad_struct_key(struct bh_cctx *c,
								const struct bh_plan *p)
{
	lua_State *L = c->L;
	char sb[64];

	if (lua_type(L, -2) == LUA_TNUMBER)
		bh_codec_error(c, "%s takes fields by name, got index %s", p->cname,
			       show(L, -2, sb, sizeof(sb)));
	bh_codec_error(c, "%s takes fields by name, got a %s key", p->cname, luaL_typename(L, -2));
}

static void enc_struct(struct bh_cctx *c, const struct bh_plan *p, int idx, unsigned char *dst)
{
	lua_State *L = c->L;
	struct unions u;
	int base = lua_gettop(L), top;

	if (unlikely(lua_type(L, idx) != LUA_TTABLE))
		bh_codec_error(c, "expected a table for %s, got %s", p->cname,
			       luaL_typename(L, idx));
	luaL_checkstack(L, 8, "value nests too deeply");
	if (p->ngroups)
		unions_init(L, &u, p->ngroups);
	top = lua_gettop(L);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k;
		size_t klen;
		int fi;

		if (unlikely(lua_type(L, -2) != LUA_TSTRING))
			bad_struct_key(c, p);
		k = lua_tolstring(L, -2, &klen);
		fi = field_index(p, k, klen);
		if (unlikely(fi < 0))
			unknown_field(c, p, k);
		if (p->fields[fi].group && unions_take(p, &u, fi))
			u.agree = 1;
		enc_field(c, &p->fields[fi], top + 2, dst);
		lua_settop(L, top + 1);
	}
	if (p->ngroups && u.agree)
		unions_check(c, p, &u, idx, dst);
	lua_settop(L, base);
}

static void enc(struct bh_cctx *c, const struct bh_plan *p, int idx, unsigned char *dst)
{
	switch (p->kind) {
	case BH_K_INT:
	case BH_K_ENUM: {
		uint64_t u;
		i128 v;

		if (likely(int_fast(c->L, idx, p->size * 8, p->is_signed, &u))) {
			store_int(dst, p->size, u);
			break;
		}
		v = get_int(c, p, idx);
		range_check(c, p, v, p->size * 8);
		store_int(dst, p->size, (uint64_t)v);
		break;
	}
	case BH_K_BOOL:
		enc_bool(c, p, idx, dst);
		break;
	case BH_K_FLOAT:
		enc_float(c, p, idx, dst);
		break;
	case BH_K_CHARS:
		enc_chars(c, p, idx, dst);
		break;
	case BH_K_BYTES:
		enc_bytes(c, p, idx, dst);
		break;
	case BH_K_RAW:
		enc_raw(c, p, idx, dst);
		break;
	case BH_K_ARRAY:
		enc_array(c, p, idx, dst);
		break;
	case BH_K_STRUCT:
	case BH_K_UNION:
		enc_struct(c, p, idx, dst);
		break;
	}
}

/* Encode the value at idx into dst (p->size bytes, padding zeroed). */
void bh_encode(struct bh_cctx *c, const struct bh_plan *p, int idx, void *dst)
{
	if (idx < 0)
		idx = lua_gettop(c->L) + idx + 1;
	if (p->kind != BH_K_INT && p->kind != BH_K_RAW && p->kind != BH_K_CHARS)
		memset(dst, 0, p->size);
	luaL_checkstack(c->L, 16, "value nests too deeply");
	enc(c, p, idx, dst);
}

/* ------------------------------------------------------------------------ */
/* -- Decode -------------------------------------------------------------- */

static void dec(struct bh_cctx *c, const struct bh_plan *p, const unsigned char *src);

static inline void dec_int(lua_State *L, const struct bh_plan *p, uint64_t u)
{
	if (p->size < 8 || (p->is_signed ? ((int64_t)u >= -(1LL << 53) && (int64_t)u <= (1LL << 53))
					   : u <= (1ULL << 53))) {
#if LUA_VERSION_NUM >= 503
		lua_pushinteger(L, (lua_Integer)u);
#else
		lua_pushnumber(L, p->is_signed ? (lua_Number)(int64_t)u : (lua_Number)u);
#endif
		return;
	}
	push_u64(L, u, p->is_signed);
}

static inline void dec_field(struct bh_cctx *c, const struct bh_field *f, const unsigned char *src)
{
	const struct bh_plan *p = f->plan;

	/* the common scalars inline; everything else through dec() */
	if (likely(!f->bit_size)) {
		const unsigned char *q = src + f->off;

		switch (p->kind) {
		case BH_K_INT:
		case BH_K_ENUM:
			if (p->size < 8) {
				uint64_t u = load_int(q, p->size, p->is_signed);

#if LUA_VERSION_NUM >= 503
				lua_pushinteger(c->L, (lua_Integer)u);
#else
				lua_pushnumber(c->L, p->is_signed ? (lua_Number)(int64_t)u
								  : (lua_Number)u);
#endif
				return;
			}
			dec_int(c->L, p, load_int(q, 8, 0));
			return;
		case BH_K_BOOL:
			lua_pushboolean(c->L, load_int(q, p->size, 0) != 0);
			return;
		default:
			dec(c, p, q);
			return;
		}
	}
	{
		uint64_t v = load_bits(src + f->off, f->bit_off, f->bit_size, f->plan->is_signed);

		if (f->plan->kind == BH_K_BOOL)
			lua_pushboolean(c->L, v != 0);
		else
			dec_int(c->L, f->plan, v);
	}
}

static void dec_fields(struct bh_cctx *c, const struct bh_plan *p, const unsigned char *src)
{
	lua_State *L = c->L;
	uint32_t i;
	int tbl;

	luaL_checkstack(L, (int)p->count + 8, "value nests too deeply");
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->names_ref);
	lua_rawgeti(L, -1, p->names_base + 1);
	if (lua_type(L, -1) == LUA_TFUNCTION) {
		lua_remove(L, -2); /* ctor */
		for (i = 0; i < p->count; i++)
			dec_field(c, &p->fields[i], src);
		lua_call(L, (int)p->count, 1);
		return;
	}
	/* too many fields for one call: key by key */
	lua_pop(L, 1);
	lua_createtable(L, 0, (int)p->count);
	lua_replace(L, -2);
	tbl = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->names_ref); /* tbl, names */
	for (i = 0; i < p->count; i++) {
		lua_rawgeti(L, tbl + 1, p->names_base + (int)i + 2);
		dec_field(c, &p->fields[i], src);
		lua_rawset(L, tbl);
	}
	lua_pop(L, 1);
}

static void dec(struct bh_cctx *c, const struct bh_plan *p, const unsigned char *src)
{
	lua_State *L = c->L;

	switch (p->kind) {
	case BH_K_INT:
	case BH_K_ENUM:
		dec_int(L, p, load_int(src, p->size, p->is_signed));
		break;
	case BH_K_BOOL:
		lua_pushboolean(L, load_int(src, p->size, 0) != 0);
		break;
	case BH_K_FLOAT:
		if (p->size == 4) {
			float f;

			memcpy(&f, src, 4);
			lua_pushnumber(L, f);
		} else {
			double d;

			memcpy(&d, src, 8);
			lua_pushnumber(L, d);
		}
		break;
	case BH_K_CHARS:
		lua_pushlstring(L, (const char *)src, strnlen((const char *)src, p->count));
		break;
	case BH_K_BYTES:
		lua_pushlstring(L, (const char *)src, p->count);
		break;
	case BH_K_RAW:
		lua_pushlstring(L, (const char *)src, p->size);
		break;
	case BH_K_ARRAY: {
		uint32_t i;

		luaL_checkstack(L, 8, "value nests too deeply");
		lua_createtable(L, (int)p->count, 0);
		for (i = 0; i < p->count; i++) {
			dec(c, p->elem, src + (size_t)i * p->elem->size);
			lua_rawseti(L, -2, (int)i + 1);
		}
		break;
	}
	case BH_K_STRUCT:
	case BH_K_UNION:
		dec_fields(c, p, src);
		break;
	}
}

/* Push the Lua value that src (p->size bytes) holds. */
void bh_decode(struct bh_cctx *c, const struct bh_plan *p, const void *src)
{
	luaL_checkstack(c->L, 16, "value nests too deeply");
	dec(c, p, src);
}

/* ------------------------------------------------------------------------ */
/* -- Per-CPU values ------------------------------------------------------ */

static size_t percpu_stride(const struct bh_plan *p)
{
	return ((size_t)p->size + 7) & ~(size_t)7;
}

/*
 * Could the value at idx be one value of p, rather than a per-CPU array of
 * them? Only the shape counts (encode checks the rest): a struct is a table
 * without [1], an array one whose [1] could be an element (or without [1]),
 * a scalar anything but a table.
 */
static int looks_like(lua_State *L, const struct bh_plan *p, int idx, int depth)
{
	int t = lua_type(L, idx), r;

	switch (p->kind) {
	case BH_K_STRUCT:
	case BH_K_UNION:
	case BH_K_ARRAY:
	case BH_K_BYTES:
		if (t == LUA_TSTRING)
			return p->kind == BH_K_BYTES;
		if (t != LUA_TTABLE)
			return 0;
		lua_rawgeti(L, idx, 1);
		if (lua_isnil(L, -1))
			r = 1;
		else if (p->kind == BH_K_STRUCT || p->kind == BH_K_UNION)
			r = 0;
		else if (p->kind == BH_K_BYTES)
			r = lua_type(L, -1) == LUA_TNUMBER;
		else
			r = depth > 16 || looks_like(L, p->elem, lua_gettop(L), depth + 1);
		lua_pop(L, 1);
		return r;
	case BH_K_CHARS:
		return t == LUA_TSTRING;
	default:
		return t != LUA_TTABLE;
	}
}

void bh_encode_percpu(struct bh_cctx *c, const struct bh_plan *p, int idx, void *dst, int ncpus)
{
	lua_State *L = c->L;
	size_t stride = percpu_stride(p);
	unsigned char *d = dst;
	int i, n = 0;

	if (idx < 0)
		idx = lua_gettop(L) + idx + 1;
	luaL_checkstack(L, 8, "value nests too deeply");
	if (lua_type(L, idx) != LUA_TTABLE || looks_like(L, p, idx, 0)) {
		memset(dst, 0, stride * (size_t)ncpus);
		bh_encode(c, p, idx, d);
		for (i = 1; i < ncpus; i++)
			memcpy(d + stride * (size_t)i, d, p->size);
		return;
	}
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		n++;
	}
	if (n != ncpus || (int)bh_rawlen(L, idx) != ncpus)
		bh_codec_error(c, "%d per-CPU values given, this map has %d possible CPUs "
				  "(give one value for all, or one per CPU)",
			       n, ncpus);
	memset(dst, 0, stride * (size_t)ncpus);
	for (i = 0; i < ncpus; i++) {
		lua_rawgeti(L, idx, i + 1);
		push_seg(c, NULL, i + 1);
		bh_encode(c, p, -1, d + stride * (size_t)i);
		c->depth--;
		lua_pop(L, 1);
	}
}

void bh_decode_percpu(struct bh_cctx *c, const struct bh_plan *p, const void *src, int ncpus)
{
	lua_State *L = c->L;
	size_t stride = percpu_stride(p);
	int i;

	lua_createtable(L, ncpus, 0);
	for (i = 0; i < ncpus; i++) {
		bh_decode(c, p, (const unsigned char *)src + stride * (size_t)i);
		lua_rawseti(L, -2, i + 1);
	}
}

/* ------------------------------------------------------------------------ */
/* -- Generated codecs (LuaJIT) ------------------------------------------- */

/*
 * Under LuaJIT the copying ring buffer (bindings/lua/ringview.lua) and the
 * map fast path (bindings/lua/mapops.lua) read and write values through Lua
 * generated here from a plan, which bindings/lua/codecgen.lua loads: an FFI
 * declaration of the type, a decoder that builds the value bh_decode builds,
 * and an encoder that writes the bytes bh_encode writes for plain input and
 * declines everything else (the C codec then does it all again and raises
 * its own error). LuaJIT compiles them into the caller's trace: a struct
 * decodes as one template copy and a load per field, where the C API pays a
 * call per field. The specs compare both with this codec over random values.
 */

/*
 * A C identifier, which the generated declaration and source hold as they
 * are; at most 100 bytes, so that the lines holding it fit gen_printf's.
 */
static int is_ident(const char *s)
{
	size_t i;

	if (!s || strlen(s) > 100 ||
	    !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
		return 0;
	for (i = 1; s[i]; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return 1;
}

/*
 * The FFI declaration: a packed union in which each field sits in its own
 * packed struct behind a pad of its offset, so that flattened anonymous
 * members and unions need no layout rebuilt.
 */
struct ffigen {
	luaL_Buffer b;
	int npad;
	int bad;             /* arrays nest deeper than written for */
};

static void ffi_member(struct ffigen *g, const struct bh_plan *p, const char *name);

static void ffi_scalar(struct ffigen *g, const struct bh_plan *p)
{
	char buf[32];

	switch (p->kind) {
	case BH_K_FLOAT:
		luaL_addstring(&g->b, p->size == 4 ? "float" : "double");
		return;
	case BH_K_BOOL:
		if (p->size == 1) {
			luaL_addstring(&g->b, "bool");
			return;
		}
		/* fall through */
	default:
		snprintf(buf, sizeof(buf), "%sint%u_t", p->is_signed ? "" : "u", p->size * 8);
		luaL_addstring(&g->b, buf);
	}
}

static void ffi_composite(struct ffigen *g, const struct bh_plan *p)
{
	char buf[64];
	uint32_t i;

	luaL_addstring(&g->b, "union __attribute__((packed)) { ");
	for (i = 0; i < p->count; i++) {
		const struct bh_field *f = &p->fields[i];

		/* LuaJIT declares bitfields in 32-bit units only: leave wider ones out */
		if (f->bit_size && f->bit_off + f->bit_size > 32)
			continue;
		if (!f->off && !f->bit_size) {
			ffi_member(g, f->plan, f->name);
			luaL_addstring(&g->b, "; ");
			continue;
		}
		luaL_addstring(&g->b, "struct __attribute__((packed)) { ");
		if (f->off) {
			snprintf(buf, sizeof(buf), "uint8_t __bh_p%d[%u]; ", g->npad++, f->off);
			luaL_addstring(&g->b, buf);
		}
		if (f->bit_size) {
			const char *sign = f->plan->is_signed && f->plan->kind != BH_K_BOOL ? "int"
											     : "uint";

			if (f->bit_off) {
				snprintf(buf, sizeof(buf), "%s32_t : %u; ", sign, f->bit_off);
				luaL_addstring(&g->b, buf);
			}
			snprintf(buf, sizeof(buf), "%s32_t ", sign);
			luaL_addstring(&g->b, buf);
			luaL_addstring(&g->b, f->name);
			snprintf(buf, sizeof(buf), " : %u; ", f->bit_size);
			luaL_addstring(&g->b, buf);
		} else {
			ffi_member(g, f->plan, f->name);
			luaL_addstring(&g->b, "; ");
		}
		luaL_addstring(&g->b, "}; ");
	}
	if (p->size) {
		snprintf(buf, sizeof(buf), "uint8_t __bh_p%d[%u]; ", g->npad++, p->size);
		luaL_addstring(&g->b, buf);
	}
	luaL_addstring(&g->b, "}");
}

static void ffi_member(struct ffigen *g, const struct bh_plan *p, const char *name)
{
	uint32_t dims[16];
	int nd = 0, i;
	char buf[32];

	while (p->kind == BH_K_ARRAY && nd < 15) {
		dims[nd++] = p->count;
		p = p->elem;
	}
	switch (p->kind) {
	case BH_K_ARRAY:
		g->bad = 1;
		break;
	case BH_K_CHARS:
		luaL_addstring(&g->b, "char");
		dims[nd++] = p->size;
		break;
	case BH_K_BYTES:
	case BH_K_RAW:
		luaL_addstring(&g->b, "uint8_t");
		dims[nd++] = p->size;
		break;
	case BH_K_STRUCT:
	case BH_K_UNION:
		ffi_composite(g, p);
		break;
	default:
		ffi_scalar(g, p);
	}
	luaL_addchar(&g->b, ' ');
	luaL_addstring(&g->b, name);
	for (i = 0; i < nd; i++) {
		snprintf(buf, sizeof(buf), "[%u]", dims[i]);
		luaL_addstring(&g->b, buf);
	}
}

/*
 * Push the declaration "const <type> *" for the plan (a scalar or an array
 * is member "value" of a union); 0, pushing nothing, when arrays nest
 * deeper than 15.
 */
int bh_push_ffi_decl(lua_State *L, const struct bh_plan *p)
{
	struct ffigen g;

	g.npad = 0;
	g.bad = 0;
	luaL_buffinit(L, &g.b);
	luaL_addstring(&g.b, "const ");
	if (p->kind == BH_K_STRUCT || p->kind == BH_K_UNION) {
		ffi_composite(&g, p);
		luaL_addstring(&g.b, " *");
	} else {
		luaL_addstring(&g.b, "union __attribute__((packed)) { ");
		ffi_member(&g, p, "value");
		luaL_addstring(&g.b, "; } *");
	}
	luaL_pushresult(&g.b);
	if (g.bad) {
		lua_pop(L, 1);
		return 0;
	}
	return 1;
}

/*
 * The decoder: the source of a chunk that takes (u64, s64, chars, fstring,
 * f32, f64) and returns function(p), p a pointer of the declared type,
 * building the same value bh_decode would; for a struct or union, also
 * function(p, t), which sets every field of that value in the table t and
 * returns t (lookup's "into"). Compiled with its caller, its
 * table need not even be allocated when the caller only reads fields.
 * Floats are read by f32(p, offset) and f64(p, offset), never as fields:
 * LuaJIT's FFI loads a NaN as it is, and some NaN payloads are the tags of
 * other Lua values (nil, for one); those read the bits first, and give the
 * canonical NaN, as lua_pushnumber does.
 */
struct gen {
	luaL_Buffer b;
	int budget; /* nodes left before the type counts as too big */
	const struct bh_plan *enums[32]; /* encoder: E[i + 1] maps enums[i]'s names to values */
	int nenums;
};

static void gen_add(struct gen *g, const char *s)
{
	luaL_addstring(&g->b, s);
}

static void gen_printf(struct gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void gen_printf(struct gen *g, const char *fmt, ...)
{
	char buf[640];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	luaL_addstring(&g->b, buf);
}

static int gen_fields(struct gen *g, const struct bh_plan *p, const char *access, uint32_t off,
		      const char *to);

/* p at access, at byte off from the decoder's pointer. */
static int gen_expr(struct gen *g, const struct bh_plan *p, const char *access, uint32_t off)
{
	char buf[320];
	uint32_t i;

	if (--g->budget < 0 || strlen(access) > 200)
		return 0;
	switch (p->kind) {
	case BH_K_INT:
	case BH_K_ENUM:
		if (p->size == 8)
			gen_printf(g, "%s(%s)", p->is_signed ? "s64" : "u64", access);
		else
			gen_add(g, access);
		return 1;
	case BH_K_BOOL:
		gen_printf(g, "(%s %s)", access, p->size == 1 ? "== true" : "~= 0");
		return 1;
	case BH_K_FLOAT:
		gen_printf(g, "f%u(p, %u)", p->size * 8, off);
		return 1;
	case BH_K_CHARS:
		gen_printf(g, "chars(%s, %u)", access, p->size);
		return 1;
	case BH_K_BYTES:
	case BH_K_RAW:
		gen_printf(g, "fstring(%s, %u)", access, p->size);
		return 1;
	case BH_K_ARRAY:
		gen_add(g, "{");
		for (i = 0; i < p->count; i++) {
			snprintf(buf, sizeof(buf), "%s[%u]", access, i);
			if (!gen_expr(g, p->elem, buf, off + i * p->elem->size))
				return 0;
			gen_add(g, ",");
		}
		gen_add(g, "}");
		return 1;
	case BH_K_STRUCT:
	case BH_K_UNION:
		gen_add(g, "{");
		if (!gen_fields(g, p, access, off, ""))
			return 0;
		gen_add(g, "}");
		return 1;
	}
	return 0;
}

/*
 * The fields of struct or union p at access, each as <to>["name"]=<expr>:
 * entries of a table constructor when to is "" (each ends with ','), else
 * assignments to the table named to (each ends a line).
 */
static int gen_fields(struct gen *g, const struct bh_plan *p, const char *access, uint32_t off,
		      const char *to)
{
	char buf[320];
	uint32_t i;

	for (i = 0; i < p->count; i++) {
		const struct bh_field *f = &p->fields[i];

		if (!is_ident(f->name))
			return 0;
		snprintf(buf, sizeof(buf), "%s[\"%s\"]", access, f->name);
		gen_printf(g, "%s[\"%s\"]=", to, f->name);
		if (f->bit_size) {
			if (f->bit_off + f->bit_size > 32)
				return 0;
			if (f->plan->kind == BH_K_BOOL)
				gen_printf(g, "(%s ~= 0)", buf);
			else
				gen_add(g, buf);
		} else if (!gen_expr(g, f->plan, buf, off + f->off)) {
			return 0;
		}
		gen_add(g, *to ? "\n" : ",");
	}
	return 1;
}

/* Push the decoder's source; 0, pushing nothing, for types it does not cover (wide bitfields, big arrays). */
int bh_push_lua_decoder(lua_State *L, const struct bh_plan *p)
{
	int composite = p->kind == BH_K_STRUCT || p->kind == BH_K_UNION;
	struct gen g;
	int ok;

	g.budget = 512;
	luaL_buffinit(L, &g.b);
	gen_add(&g, "local u64, s64, chars, fstring, f32, f64 = ...\nreturn function(p) return ");
	ok = gen_expr(&g, p, composite ? "p" : "p.value", 0);
	gen_add(&g, " end");
	if (ok && composite) {
		gen_add(&g, ",\nfunction(p, t)\n");
		ok = gen_fields(&g, p, "p", 0, "t");
		gen_add(&g, "return t end");
	}
	gen_add(&g, "\n");
	luaL_pushresult(&g.b);
	if (!ok) {
		lua_pop(L, 1);
		return 0;
	}
	return 1;
}

/*
 * The encoder: the source of a chunk that takes (type, floor, getmetatable,
 * next, istype, uint64_t, int64_t, INT64_MAX as uint64_t, ffi.copy, huge)
 * and returns function(d, v): d a pointer of the declared type to zeroed
 * bytes, v the Lua value. It writes what enc() would and returns true, or
 * returns false as soon as v is not plain: a wrong type, a number out of
 * range or not integral, a table with a metatable or a key the type does not
 * have, two members of one union, a 64-bit number beyond 2^53, a byte
 * array given as a table, a name no enumerator has (numeric strings too).
 * Checks mirror enc()'s, so whatever it accepts, enc() accepts with the same
 * bytes.
 */
static int enc_gen(struct gen *g, const struct bh_plan *p, const char *a, const char *x, int d);

/* The enums in p whose names the encoder maps (g->enums), up to 32. */
static void enc_collect(struct gen *g, const struct bh_plan *p, int depth)
{
	uint32_t i;
	int j;

	if (depth > 64)
		return;
	switch (p->kind) {
	case BH_K_ENUM:
		if (p->flags & BH_PLAN_ENUM_CUT) /* names are an error (enum_cut) */
			return;
		for (j = 0; j < g->nenums; j++)
			if (g->enums[j] == p)
				return;
		if (g->nenums < (int)(sizeof(g->enums) / sizeof(g->enums[0])))
			g->enums[g->nenums++] = p;
		return;
	case BH_K_ARRAY:
		enc_collect(g, p->elem, depth + 1);
		return;
	case BH_K_STRUCT:
	case BH_K_UNION:
		for (i = 0; i < p->count; i++)
			enc_collect(g, p->fields[i].plan, depth + 1);
		return;
	default:
		return;
	}
}

/*
 * local E = {{["RED"] = 0, ...}, ...}: names as get_int() reads them, for
 * values within 2^53 and the first 4096 names (a name left out is not plain).
 */
static void enc_enum_tables(struct gen *g)
{
	int j, left = 4096;
	uint32_t i;

	gen_add(g, "local E = {");
	for (j = 0; j < g->nenums; j++) {
		const struct bh_plan *p = g->enums[j];

		gen_add(g, "{");
		for (i = 0; i < p->count && left > 0; i++, left--) {
			int64_t v = p->enums[i].val;

			if (!is_ident(p->enums[i].name))
				continue;
			if (p->is_signed && v >= -(1LL << 53) && v <= (1LL << 53))
				gen_printf(g, "[\"%s\"]=%lld,", p->enums[i].name, (long long)v);
			else if (!p->is_signed && (uint64_t)v <= (1ULL << 53))
				gen_printf(g, "[\"%s\"]=%llu,", p->enums[i].name,
					   (unsigned long long)(uint64_t)v);
		}
		gen_add(g, "},");
	}
	gen_add(g, "}\n");
}

/* An enum given by name: its value, into x (an unknown name is not plain). */
static void enc_enum_name(struct gen *g, const struct bh_plan *p, const char *x)
{
	int j;

	if (p->kind != BH_K_ENUM)
		return;
	for (j = 0; j < g->nenums; j++)
		if (g->enums[j] == p)
			gen_printf(g, "if type(%s) == 'string' then %s = E[%d][%s] "
				      "if %s == nil then return false end end\n", x, x, j + 1, x, x);
}

/* An integer of bits bits (signed or not) given a plain Lua number, into a. */
static void enc_int_range(struct gen *g, const char *a, const char *x, unsigned bits, int is_signed)
{
	double lo = is_signed ? -ldexp(1, (int)bits - 1) : 0;
	double hi = is_signed ? ldexp(1, (int)bits - 1) - 1 : ldexp(1, (int)bits) - 1;

	gen_printf(g, "if type(%s) ~= 'number' or %s < %.0f or %s > %.0f or floor(%s) ~= %s "
		      "then return false end\n", x, x, lo, x, hi, x, x);
	gen_printf(g, "%s = %s\n", a, x);
}

static int enc_fields(struct gen *g, const struct bh_plan *p, const char *a, const char *x, int d)
{
	char acc[320], y[16];
	uint32_t i;
	int k;

	if (p->ngroups > 60)
		return 0;
	snprintf(y, sizeof(y), "x%d", d + 1);
	gen_printf(g, "if type(%s) ~= 'table' or getmetatable(%s) ~= nil then return false end\n",
		   x, x);
	gen_printf(g, "do local n%d = 0\n", d);
	for (k = 1; k <= p->ngroups; k++)
		gen_printf(g, "local g%d_%d = 0\n", d, k);
	for (i = 0; i < p->count; i++) {
		const struct bh_field *f = &p->fields[i];
		int gi = f->group, m = f->member;

		if (!is_ident(f->name) || --g->budget < 0)
			return 0;
		snprintf(acc, sizeof(acc), "%s[\"%s\"]", a, f->name);
		gen_printf(g, "do local %s = %s[\"%s\"] if %s ~= nil then n%d = n%d + 1\n", y, x,
			   f->name, y, d, d);
		/* one member per union, at every level: the C codec checks any more */
		for (; gi; m = p->groups[gi].member, gi = p->groups[gi].parent)
			gen_printf(g, "if g%d_%d ~= 0 and g%d_%d ~= %d then return false end "
				      "g%d_%d = %d\n", d, gi, d, gi, m, d, gi, m);
		if (f->bit_size) {
			if (f->bit_off + f->bit_size > 32)
				return 0;
			if (f->plan->kind == BH_K_BOOL) {
				gen_printf(g, "if type(%s) ~= 'boolean' then return false end\n", y);
				gen_printf(g, "%s = %s and 1 or 0\n", acc, y);
			} else {
				enc_enum_name(g, f->plan, y);
				enc_int_range(g, acc, y, f->bit_size, f->plan->is_signed);
			}
		} else if (!enc_gen(g, f->plan, acc, y, d + 1)) {
			return 0;
		}
		gen_add(g, "end end\n");
	}
	gen_printf(g, "if n%d ~= nkeys(%s) then return false end\nend\n", d, x);
	return 1;
}

static int enc_gen(struct gen *g, const struct bh_plan *p, const char *a, const char *x, int d)
{
	char acc[320], y[16];

	if (--g->budget < 0 || strlen(a) > 200 || d > 24)
		return 0;
	switch (p->kind) {
	case BH_K_INT:
	case BH_K_ENUM:
		enc_enum_name(g, p, x);
		if (p->size < 8) {
			enc_int_range(g, a, x, p->size * 8, p->is_signed);
			return 1;
		}
		/* numbers within 2^53, and the 64-bit cdata decode gives beyond */
		gen_printf(g, "if type(%s) == 'number' then\n", x);
		gen_printf(g, "if %s < %s or %s > 9007199254740992 or floor(%s) ~= %s then "
			      "return false end\n", x, p->is_signed ? "-9007199254740992" : "0", x, x, x);
		if (p->is_signed)
			gen_printf(g, "elseif not (istype(s64t, %s) or (istype(u64t, %s) and %s <= "
				      "s64max)) then return false end\n", x, x, x);
		else
			gen_printf(g, "elseif not (istype(u64t, %s) or (istype(s64t, %s) and %s >= 0))"
				      " then return false end\n", x, x, x);
		gen_printf(g, "%s = %s\n", a, x);
		return 1;
	case BH_K_BOOL:
		gen_printf(g, "if type(%s) ~= 'boolean' then return false end\n", x);
		if (p->size == 1)
			gen_printf(g, "%s = %s\n", a, x);
		else
			gen_printf(g, "%s = %s and 1 or 0\n", a, x);
		return 1;
	case BH_K_FLOAT:
		gen_printf(g, "if type(%s) ~= 'number' then return false end\n", x);
		/* enc_float: a finite double beyond float's range is an error */
		if (p->size == 4)
			gen_printf(g, "if (%s > %.17g and %s < huge) or (%s < -%.17g and %s > -huge) "
				      "then return false end\n", x, (double)FLT_MAX, x, x,
				   (double)FLT_MAX, x);
		gen_printf(g, "%s = %s\n", a, x);
		return 1;
	case BH_K_CHARS:
		gen_printf(g, "if type(%s) ~= 'string' or #%s > %u then return false end\n", x, x,
			   p->count);
		gen_printf(g, "copy(%s, %s, #%s)\n", a, x, x);
		return 1;
	case BH_K_BYTES:
	case BH_K_RAW:
		gen_printf(g, "if type(%s) ~= 'string' or #%s ~= %u then return false end\n", x, x,
			   p->kind == BH_K_RAW ? p->size : p->count);
		gen_printf(g, "copy(%s, %s, %u)\n", a, x, p->kind == BH_K_RAW ? p->size : p->count);
		return 1;
	case BH_K_ARRAY:
		snprintf(y, sizeof(y), "x%d", d + 1);
		snprintf(acc, sizeof(acc), "%s[i%d]", a, d);
		gen_printf(g, "if type(%s) ~= 'table' or getmetatable(%s) ~= nil then return false "
			      "end\n", x, x);
		/* (long): a zero-length array (int x[0]) loops from 0 to -1 */
		gen_printf(g, "do local n%d = 0\nfor i%d = 0, %ld do local %s = %s[i%d + 1] "
			      "if %s ~= nil then n%d = n%d + 1\n", d, d, (long)p->count - 1, y, x, d, y,
			   d, d);
		if (!enc_gen(g, p->elem, acc, y, d + 1))
			return 0;
		gen_printf(g, "end end\nif n%d ~= nkeys(%s) then return false end\nend\n", d, x);
		return 1;
	case BH_K_STRUCT:
	case BH_K_UNION:
		return enc_fields(g, p, a, x, d);
	}
	return 0;
}

/* Push the encoder's source; 0, pushing nothing, for types it does not cover. */
int bh_push_lua_encoder(lua_State *L, const struct bh_plan *p)
{
	struct gen g;
	int ok;

	g.budget = 512;
	g.nenums = 0;
	luaL_buffinit(L, &g.b);
	gen_add(&g, "local type, floor, getmetatable, next, istype, u64t, s64t, s64max, copy, huge"
		    " = ...\nlocal function nkeys(t) local n = 0 for _ in next, t do n = n + 1 end "
		    "return n end\n");
	enc_collect(&g, p, 0);
	enc_enum_tables(&g);
	gen_add(&g, "return function(d, x0)\n");
	ok = enc_gen(&g, p, p->kind == BH_K_STRUCT || p->kind == BH_K_UNION ? "d" : "d.value", "x0",
		     0);
	gen_add(&g, "return true\nend\n");
	luaL_pushresult(&g.b);
	if (!ok) {
		lua_pop(L, 1);
		return 0;
	}
	return 1;
}

/*
 * T:__codegen() (private: codecgen.lua's): the FFI declaration "const <type>
 * *" (or nil), the decoder's and the encoder's sources (or nil), the offset
 * of every field the declaration holds at top level, by name ({value = 0}
 * for a scalar or an array), for checking the layout, and the plan's kind.
 */
static int type_codegen(lua_State *L)
{
	static const char *const kinds[] = { "raw",   "int",   "bool",  "enum",   "float",
					     "chars", "bytes", "array", "struct", "union" };
	struct bh_type *t = type_self(L);
	const struct bh_plan *p = t->root;
	uint32_t i;

	_Static_assert(sizeof(kinds) / sizeof(kinds[0]) == BH_K_UNION + 1, "a name per kind");
	if (!bh_push_ffi_decl(L, p))
		lua_pushnil(L);
	if (!bh_push_lua_decoder(L, p))
		lua_pushnil(L);
	if (!bh_push_lua_encoder(L, p))
		lua_pushnil(L);
	lua_newtable(L);
	if (p->kind == BH_K_STRUCT || p->kind == BH_K_UNION) {
		for (i = 0; i < p->count; i++) {
			if (p->fields[i].bit_size)
				continue;
			lua_pushinteger(L, p->fields[i].off);
			lua_setfield(L, -2, p->fields[i].name);
		}
	} else {
		lua_pushinteger(L, 0);
		lua_setfield(L, -2, "value");
	}
	lua_pushstring(L, kinds[p->kind]);
	return 5;
}

/* ------------------------------------------------------------------------ */
/* -- BTF from a plan (map_create) ----------------------------------------- */

/*
 * A map made by bpf.map_create with Types gets BTF in the kernel, so that
 * every other reader (bpf.map_by_id in another process, bpftool map dump,
 * the REPL) sees it typed too. The BTF is written from the plan: ints (with
 * the Type's name as a typedef when it is one: u32, __u64), _Bool, enums,
 * floats, char[N], unsigned char[N], arrays, structs and unions with their
 * bitfields. What a plan cannot say faithfully gives -1, and the map is made
 * without BTF (as before): raw bytes, and structs holding anonymous unions
 * (the plan flattens them; the union would be lost, and with it encode's
 * one-member rule for other readers).
 */
struct btfgen {
	struct btf *btf;
	int depth;
	int u32_id; /* the index type of arrays */
};

static int btfgen_type(struct btfgen *g, const struct bh_plan *p);
static int btfgen_int(struct btfgen *g, const struct bh_plan *p);

/* The INT named name (one of each), added when not there yet. */
static int btfgen_named_int(struct btfgen *g, const char *name, uint32_t size, int enc)
{
	int id = btf__find_by_name_kind(g->btf, name, BTF_KIND_INT);

	return id > 0 ? id : btf__add_int(g->btf, name, size, enc);
}

/*
 * Type id named as p when p's name is another (a typedef: u32, bool,
 * __u64), and not base, what id is called anyway.
 */
static int btfgen_typedef(struct btfgen *g, int id, const struct bh_plan *p, const char *base)
{
	int td;

	if (id <= 0 || !p->cname || !is_ident(p->cname) || !strcmp(p->cname, base))
		return id;
	td = btf__find_by_name_kind(g->btf, p->cname, BTF_KIND_TYPEDEF);
	return td > 0 ? td : btf__add_typedef(g->btf, p->cname, id);
}

/* INT of p's size and sign, named as C does ("unsigned int"), or a typedef of it named as p. */
static int btfgen_int(struct btfgen *g, const struct bh_plan *p)
{
	static const char *const names[2][4] = {
		{ "unsigned char", "unsigned short", "unsigned int", "long long unsigned int" },
		{ "signed char", "short", "int", "long long int" },
	};
	int k = p->size == 1 ? 0 : p->size == 2 ? 1 : p->size == 4 ? 2 : p->size == 8 ? 3 : -1;
	int id;

	if (k < 0)
		return -1;
	id = btfgen_named_int(g, names[!!p->is_signed][k], p->size,
			      p->is_signed ? BTF_INT_SIGNED : 0);
	return btfgen_typedef(g, id, p, "int");
}

/* "struct stats" -> "stats"; NULL (anonymous) for anything that is not a name. */
static const char *btfgen_tag(const char *cname, const char *kw)
{
	size_t n = strlen(kw);

	if (cname && !strncmp(cname, kw, n) && cname[n] == ' ' && is_ident(cname + n + 1))
		return cname + n + 1;
	return NULL;
}

static int btfgen_composite(struct btfgen *g, const struct bh_plan *p)
{
	int is_union = p->kind == BH_K_UNION, id;
	uint32_t i, last = 0;
	int *ids;

	if (p->count > 4096)
		return -1;
	ids = calloc(p->count ? p->count : 1, sizeof(*ids));
	if (!ids)
		return -1;
	/* the members' types first: a struct's fields must follow it directly */
	for (i = 0; i < p->count; i++) {
		const struct bh_field *f = &p->fields[i];
		uint32_t bits = f->off * 8 + f->bit_off;

		/* only the union itself (root) or none: no flattened anonymous unions */
		if (f->group != (is_union ? 1 : 0) || (is_union && f->member != (int)i + 1) ||
		    (is_union && bits) || (!is_union && bits < last) || !f->name || !*f->name) {
			free(ids);
			return -1;
		}
		last = bits;
		ids[i] = btfgen_type(g, f->plan);
		if (ids[i] < 0) {
			free(ids);
			return -1;
		}
	}
	id = is_union ? btf__add_union(g->btf, btfgen_tag(p->cname, "union"), p->size)
		      : btf__add_struct(g->btf, btfgen_tag(p->cname, "struct"), p->size);
	for (i = 0; id > 0 && i < p->count; i++) {
		const struct bh_field *f = &p->fields[i];

		if (btf__add_field(g->btf, f->name, ids[i], f->off * 8 + f->bit_off, f->bit_size))
			id = -1;
	}
	free(ids);
	return id;
}

static int btfgen_enum(struct btfgen *g, const struct bh_plan *p)
{
	const char *name = btfgen_tag(p->cname, "enum");
	uint32_t i;
	int id;

	if (p->flags & BH_PLAN_ENUM_CUT) {
		/* its names are unusable (the codec takes numbers only): an int */
		struct bh_plan num = { .kind = BH_K_INT, .size = p->size, .is_signed = p->is_signed };

		return btfgen_int(g, &num);
	}
	if (p->size == 8) {
		id = btf__add_enum64(g->btf, name, 8, p->is_signed);
		for (i = 0; id > 0 && i < p->count; i++)
			if (btf__add_enum64_value(g->btf, p->enums[i].name, (uint64_t)p->enums[i].val))
				id = -1;
		return id;
	}
	id = btf__add_enum(g->btf, name, p->size);
	for (i = 0; id > 0 && i < p->count; i++)
		if (btf__add_enum_value(g->btf, p->enums[i].name, p->enums[i].val))
			id = -1;
	/* kflag: a signed enum (the kernel reads it since 6.0) */
	if (id > 0 && p->is_signed) {
		struct btf_type *t = (struct btf_type *)btf__type_by_id(g->btf, (uint32_t)id);

		t->info |= 1u << 31;
	}
	return id;
}

/* char[n] or unsigned char[n], the element named as in p's name ("__u8[6]"). */
static int btfgen_bytes(struct btfgen *g, const struct bh_plan *p, uint32_t n, int chars)
{
	struct bh_plan elem = { .kind = BH_K_INT };
	char name[104];
	int eid = chars ? btfgen_named_int(g, "char", 1, BTF_INT_SIGNED)
			: btfgen_named_int(g, "unsigned char", 1, 0);
	const char *br = p->cname ? strchr(p->cname, '[') : NULL;

	if (br && (size_t)(br - p->cname) < sizeof(name)) {
		memcpy(name, p->cname, (size_t)(br - p->cname));
		name[br - p->cname] = '\0';
		elem.cname = name;
		eid = btfgen_typedef(g, eid, &elem, chars ? "char" : "unsigned char");
	}
	if (eid < 0)
		return -1;
	return btf__add_array(g->btf, g->u32_id, eid, n);
}

static int btfgen_type(struct btfgen *g, const struct bh_plan *p)
{
	int id = -1;

	if (++g->depth > 32) {
		g->depth--;
		return -1;
	}
	switch (p->kind) {
	case BH_K_RAW:
		break;
	case BH_K_INT:
		id = btfgen_int(g, p);
		break;
	case BH_K_BOOL:
		id = p->size == 1 ? btfgen_named_int(g, "_Bool", 1, BTF_INT_BOOL) : -1;
		id = btfgen_typedef(g, id, p, "_Bool");
		break;
	case BH_K_ENUM:
		id = btfgen_enum(g, p);
		break;
	case BH_K_FLOAT:
		id = btf__add_float(g->btf, p->size == 4 ? "float" : "double", p->size);
		id = btfgen_typedef(g, id, p, p->size == 4 ? "float" : "double");
		break;
	case BH_K_CHARS:
		id = btfgen_bytes(g, p, p->count, 1);
		break;
	case BH_K_BYTES:
		id = btfgen_bytes(g, p, p->count ? p->count : p->size, 0);
		break;
	case BH_K_ARRAY: {
		int eid = btfgen_type(g, p->elem);

		id = eid < 0 ? -1 : btf__add_array(g->btf, g->u32_id, eid, p->count);
		break;
	}
	case BH_K_STRUCT:
	case BH_K_UNION:
		id = btfgen_composite(g, p);
		break;
	}
	g->depth--;
	return id < 0 ? -1 : id;
}

/*
 * Add the type of t to btf: its id, or -1 when its plan has no faithful BTF
 * (see above) or libbpf refused. btf is new (btf__new_empty) or was made
 * by earlier calls.
 */
int bh_type_to_btf(struct btf *btf, const struct bh_type *t)
{
	struct btfgen g = { .btf = btf };
	int id;

	g.u32_id = btfgen_named_int(&g, "unsigned int", 4, 0);
	if (g.u32_id <= 0)
		return -1;
	id = btfgen_type(&g, t->root);
	if (id > 0 && btf__resolve_size(btf, (uint32_t)id) != (long long)t->root->size)
		return -1;
	return id;
}

/* ------------------------------------------------------------------------ */
/* -- bpf.sum ------------------------------------------------------------- */

static char add_key;

/* A number, or a cdata number (int64_t, uint64_t, double, ...). */
static int is_num(lua_State *L, int idx)
{
	int t = lua_type(L, idx);

	if (t == LUA_TNUMBER)
		return 1;
#ifdef BH_LUAJIT
	if (t == 10) { /* LUA_TCDATA */
		uint64_t raw;
		int kind;

		if (idx < 0)
			idx = lua_gettop(L) + idx + 1;
		kind = unbox_cdata(L, idx, &raw);
		if (kind != 1 && kind != 2)
			lua_pop(L, 1);
		return kind != 0;
	}
#endif
	return 0;
}

/* Pop two numbers (or 64-bit cdata), push their sum. */
static void sum_add(lua_State *L)
{
	if (lua_type(L, -1) == LUA_TNUMBER && lua_type(L, -2) == LUA_TNUMBER) {
#if LUA_VERSION_NUM >= 503
		lua_arith(L, LUA_OPADD);
#else
		lua_Number s = lua_tonumber(L, -2) + lua_tonumber(L, -1);

		lua_pop(L, 2);
		lua_pushnumber(L, s);
#endif
		return;
	}
	/* cdata: let Lua add them (int64 + number is int64) */
	lua_pushlightuserdata(L, &add_key);
	lua_rawget(L, LUA_REGISTRYINDEX);
	lua_insert(L, -3);
	lua_call(L, 2, 1);
}

struct sumpath {
	int n;
	int i;               /* values[i] being added */
	struct {
		const char *name;
		lua_Number idx;
	} seg[32];
};

static __attribute__((noreturn)) void sum_error(lua_State *L, struct sumpath *sp, int have,
						int got)
{
	luaL_Buffer b;
	int j;

	luaL_buffinit(L, &b);
	lua_pushfstring(L, "bpf.sum: values[%d]", sp->i);
	luaL_addvalue(&b);
	for (j = 0; j < sp->n; j++) {
		char ib[32];

		/* not %f: Lua 5.4 shows whole numbers as 1.0 */
		snprintf(ib, sizeof(ib), "%.14g", (double)sp->seg[j].idx);
		if (sp->seg[j].name)
			lua_pushfstring(L, ".%s", sp->seg[j].name);
		else
			lua_pushfstring(L, "[%s]", ib);
		luaL_addvalue(&b);
	}
	lua_pushfstring(L, " is a %s where values[1] has a %s", lua_typename(L, got),
			lua_typename(L, have));
	luaL_addvalue(&b);
	luaL_pushresult(&b);
	lua_error(L);
	abort();
}

/* acc (a table) += the table at idx, field by field; nested tables are copied. */
static void sum_into(lua_State *L, int acc, int idx, struct sumpath *sp)
{
	if (sp->n >= 32)
		luaL_error(L, "bpf.sum: values nest deeper than 32 levels");
	luaL_checkstack(L, 10, "bpf.sum: values nest too deeply");
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int top = lua_gettop(L); /* key at top - 1, value at top */
		int vt = lua_type(L, top), at;

		sp->seg[sp->n].name = lua_type(L, top - 1) == LUA_TSTRING ? lua_tostring(L, top - 1)
									   : NULL;
		sp->seg[sp->n].idx = lua_type(L, top - 1) == LUA_TNUMBER ? lua_tonumber(L, top - 1)
									  : 0;
		sp->n++;
		lua_pushvalue(L, top - 1);
		lua_rawget(L, acc); /* key, value, acc[key] */
		at = lua_type(L, -1);
		if (at == LUA_TNIL) {
			lua_pop(L, 1);
			lua_pushvalue(L, top - 1);
			if (vt == LUA_TTABLE) {
				lua_newtable(L);
				sum_into(L, lua_gettop(L), top, sp);
			} else {
				lua_pushvalue(L, top);
			}
			lua_rawset(L, acc);
		} else if (is_num(L, -1) && is_num(L, top)) {
			lua_pushvalue(L, top - 1);
			lua_insert(L, -2);
			lua_pushvalue(L, top); /* key, value, key, old, value */
			sum_add(L);
			lua_rawset(L, acc);
		} else if (at == LUA_TTABLE && vt == LUA_TTABLE) {
			sum_into(L, lua_gettop(L), top, sp);
		} else if (at != vt && !(is_num(L, -1) && is_num(L, top))) {
			sum_error(L, sp, at, vt);
		}
		/* strings, booleans: the first value stands */
		sp->n--;
		lua_settop(L, top - 1);
	}
}

static int l_sum(lua_State *L)
{
	struct sumpath sp;
	int n, i;

	luaL_checktype(L, 1, LUA_TTABLE);
	n = (int)bh_rawlen(L, 1);
	lua_settop(L, 1);
	if (n == 0) {
		lua_pushinteger(L, 0);
		return 1;
	}
	sp.n = 0;
	lua_rawgeti(L, 1, 1);
	if (lua_type(L, 2) != LUA_TTABLE) {
		if (!is_num(L, 2))
			luaL_error(L, "bpf.sum: values[1] is a %s, not a number or a table",
				   luaL_typename(L, 2));
		for (i = 2; i <= n; i++) {
			lua_rawgeti(L, 1, i);
			if (!is_num(L, -1))
				luaL_error(L,
					   "bpf.sum: values[%d] is a %s where values[1] is a number",
					   i, luaL_typename(L, -1));
			sum_add(L);
		}
		return 1;
	}
	lua_pop(L, 1);
	lua_newtable(L); /* the sum, at 2 */
	for (i = 1; i <= n; i++) {
		lua_rawgeti(L, 1, i);
		if (lua_type(L, -1) != LUA_TTABLE)
			luaL_error(L, "bpf.sum: values[%d] is a %s where values[1] is a table", i,
				   luaL_typename(L, -1));
		sp.i = i;
		sum_into(L, 2, 3, &sp);
		lua_pop(L, 1);
	}
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Kernel BTF ---------------------------------------------------------- */

static char vmlinux_key;

static int btf_gc(lua_State *L)
{
	struct btf **b = lua_touserdata(L, 1);

	if (b && *b) {
		btf__free(*b);
		*b = NULL;
	}
	return 0;
}

/* Push a holder that frees btf when collected (set *holder = NULL to keep it). */
struct btf **bh_btf_hold(lua_State *L, struct btf *btf)
{
	struct btf **b = lua_newuserdata(L, sizeof(*b));

	*b = btf;
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, btf_gc);
	lua_setfield(L, -2, "__gc");
	lua_setmetatable(L, -2);
	return b;
}

/* The running kernel's BTF, loaded once per Lua state and freed with it. */
const struct btf *bh_vmlinux_btf(lua_State *L, const char *op)
{
	struct btf **b;
	struct btf *btf;

	lua_pushlightuserdata(L, &vmlinux_key);
	lua_rawget(L, LUA_REGISTRYINDEX);
	b = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (b && *b)
		return *b;
	btf = btf__load_vmlinux_btf();
	if (!btf)
		bh_fail_msg(L, op, NULL, NULL, errno, "cannot read the kernel's BTF",
			    "the kernel needs CONFIG_DEBUG_INFO_BTF (/sys/kernel/btf/vmlinux)", NULL);
	lua_pushlightuserdata(L, &vmlinux_key);
	bh_btf_hold(L, btf);
	lua_rawset(L, LUA_REGISTRYINDEX);
	return btf;
}

/* bpf.kernel_type(name): a Type from the running kernel's BTF. */
static int l_kernel_type(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);

	bh_type_from_spec(L, bh_vmlinux_btf(L, "kernel_type"), name, "kernel_type");
	return 1;
}

static const luaL_Reg type_meta[] = {
	{ "__gc", type_gc },
	{ "__tostring", type_tostring },
	{ NULL, NULL },
};

void bh_codec_init(lua_State *L)
{
	luaL_newmetatable(L, BH_TYPE_MT);
	bh_setfuncs(L, type_meta, 0);
	lua_pushliteral(L, BH_TYPE_MT);
	lua_setfield(L, -2, "__name");
	lua_newtable(L); /* mt, methods */
	lua_pushvalue(L, -2);
	lua_pushcclosure(L, type_encode, 1);
	lua_setfield(L, -2, "encode");
	lua_pushvalue(L, -2);
	lua_pushcclosure(L, type_decode, 1);
	lua_setfield(L, -2, "decode");
	lua_getfield(L, -1, "encode");
	lua_getfield(L, -2, "decode");
	lua_pushvalue(L, -4);
	lua_pushcclosure(L, type_codegen, 1);
	lua_pushcclosure(L, type_index, 3);
	lua_setfield(L, -3, "__index");
	lua_setfield(L, -2, "__methods"); /* for the REPL's completion and the docs check */
	lua_pop(L, 1);

#ifdef BH_LUAJIT
	lua_pushlightuserdata(L, &slot_key);
	memset(lua_newuserdata(L, sizeof(uint64_t)), 0, sizeof(uint64_t));
	if (luaL_loadstring(L, helper_src) == 0) {
		lua_pushlightuserdata(L, lua_touserdata(L, -2));
		if (lua_pcall(L, 1, 3, 0) == 0) {
			lua_pushlightuserdata(L, &unbox_key);
			lua_insert(L, -2);
			lua_rawset(L, LUA_REGISTRYINDEX);
			lua_pushlightuserdata(L, &boxs_key);
			lua_insert(L, -2);
			lua_rawset(L, LUA_REGISTRYINDEX);
			lua_pushlightuserdata(L, &boxu_key);
			lua_insert(L, -2);
			lua_rawset(L, LUA_REGISTRYINDEX);
			lua_rawset(L, LUA_REGISTRYINDEX); /* the slot, anchored */
		} else {
			lua_pop(L, 3); /* no FFI: beyond 2^53, numbers (rounded) */
		}
	} else {
		lua_pop(L, 3);
	}
#endif
	lua_pushlightuserdata(L, &add_key);
	luaL_loadstring(L, "local a, b = ... return a + b");
	lua_rawset(L, LUA_REGISTRYINDEX);
	/* module table is at -1 */
	lua_pushcfunction(L, l_sum);
	lua_setfield(L, -2, "sum");
	lua_pushcfunction(L, l_kernel_type);
	lua_setfield(L, -2, "kernel_type");
}
