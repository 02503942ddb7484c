/*
 * codec_fuzz.c: libFuzzer harness for the codec (bindings/codec.c), over
 * every type in the BTF of the spec fixtures (the .bpf.o files in $(O)/bpf).
 *
 * An input is: 2 bytes choosing a type, 1 byte choosing the mode, then data.
 *
 * Mode "bytes" (mode byte even): data, cut or zero-extended to the type's
 * size, is b. The property, with c = T:encode(T:decode(b)):
 *
 *   - decode never fails: every byte pattern is a value of the type;
 *   - encode of a decoded value succeeds, except where a union holds bytes
 *     that one of its members cannot give back (a char array with bytes
 *     after its NUL, a _Bool that is not 0 or 1, a NaN whose payload a
 *     double does not keep): then the only error allowed is the codec's
 *     "share a union" refusal;
 *   - c equals b on every bit that carries a value: integers, enums,
 *     pointers, bitfields, unsigned char arrays, floats that are not NaN,
 *     char arrays up to and including their first NUL; c is 0 on padding,
 *     on kernel-managed members (bpf_spin_lock, ...), and in char arrays
 *     after the first NUL; a _Bool byte of c is 1 where b's was not 0; a
 *     NaN stays a NaN (its payload is not kept); union bytes are only
 *     checked through the next point;
 *   - encoding is canonical: T:encode(T:decode(c)) == c.
 *
 * Mode "values" (mode byte odd): codec_fuzz.lua builds a Lua value for the
 * type from data (in range, out of range, wrong types, extra and missing
 * fields, union members that disagree, ...) and checks that encode either
 * gives T.size bytes that round-trip as above, or raises a clean error.
 *
 * Any failed property aborts (a finding), as do the sanitizers.
 */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>
#include <bpf/btf.h>

#include "bh.h"

#ifndef BH_FUZZ_BPF
#define BH_FUZZ_BPF "build/bpf"
#endif
#ifndef BH_FUZZ_SRC
#define BH_FUZZ_SRC "spec/fuzz"
#endif

#define MAX_TYPES 4096
#define MAX_BTFS  64

void __lsan_disable(void);
void __lsan_enable(void);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static struct btf *btfs[MAX_BTFS];
static int nbtfs;
static struct {
	const struct btf *btf;
	uint32_t id;
	int ref; /* the Type, in the registry */
	uint32_t size;
} types[MAX_TYPES];
static int ntypes;

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "codec_fuzz: %s: %s\n", what, msg ? msg : "");
	abort();
}

/* ------------------------------------------------------------------------ */
/* -- What a round trip must give ----------------------------------------- */

struct expect {
	const struct btf *btf;
	const unsigned char *in;
	unsigned char *out; /* what c must hold on the bits that are checked */
	unsigned char *dc;  /* bits not checked here: unions, NaNs */
	int has_union;
};

static const struct btf_type *resolve(const struct btf *btf, uint32_t *id)
{
	const struct btf_type *t = btf__type_by_id(btf, *id);

	while (t && (btf_is_mod(t) || btf_is_typedef(t))) {
		*id = t->type;
		t = btf__type_by_id(btf, *id);
	}
	return t;
}

static int kernel_managed(const struct btf *btf, const struct btf_type *t)
{
	static const char *const names[] = { "bpf_spin_lock", "bpf_timer", "bpf_list_head",
					     "bpf_list_node", "bpf_rb_root", "bpf_rb_node",
					     "bpf_refcount", "bpf_wq", NULL };
	const char *n = btf__name_by_offset(btf, t->name_off);
	int i;

	for (i = 0; btf_is_struct(t) && n && names[i]; i++)
		if (!strcmp(n, names[i]))
			return 1;
	return 0;
}

static void copy_bits(struct expect *e, size_t bit, size_t nbits)
{
	size_t i;

	for (i = bit; i < bit + nbits; i++)
		if (e->in[i / 8] & (1u << (i % 8)))
			e->out[i / 8] |= (unsigned char)(1u << (i % 8));
}

static void dont_care(struct expect *e, size_t off, size_t n)
{
	memset(e->dc + off, 0xff, n);
}

static void walk(struct expect *e, uint32_t id, size_t off, int depth)
{
	const struct btf_type *t = resolve(e->btf, &id);
	uint32_t i, n;

	if (!t || depth > 64)
		return;
	switch (btf_kind(t)) {
	case BTF_KIND_INT:
		if (btf_int_encoding(t) & BTF_INT_BOOL)
			e->out[off] = e->in[off] != 0;
		else
			memcpy(e->out + off, e->in + off, t->size);
		break;
	case BTF_KIND_ENUM:
	case BTF_KIND_ENUM64:
		memcpy(e->out + off, e->in + off, t->size);
		break;
	case BTF_KIND_PTR:
		memcpy(e->out + off, e->in + off, 8);
		break;
	case BTF_KIND_FLOAT: {
		int nan = 0;

		if (t->size == 4) {
			float f;

			memcpy(&f, e->in + off, 4);
			nan = isnan(f);
		} else if (t->size == 8) {
			double d;

			memcpy(&d, e->in + off, 8);
			nan = isnan(d);
		}
		if (nan)
			dont_care(e, off, t->size);
		else
			memcpy(e->out + off, e->in + off, t->size);
		break;
	}
	case BTF_KIND_ARRAY: {
		const struct btf_array *a = btf_array(t);
		uint32_t eid = a->type;
		const struct btf_type *et = resolve(e->btf, &eid);
		const char *en = et ? btf__name_by_offset(e->btf, et->name_off) : NULL;
		int64_t esz = btf__resolve_size(e->btf, a->type);

		if (!et || esz <= 0)
			break;
		if (btf_is_int(et) && et->size == 1 && en && !strcmp(en, "char")) {
			for (i = 0; i < a->nelems; i++) {
				e->out[off + i] = e->in[off + i];
				if (!e->in[off + i])
					break;
			}
			break;
		}
		for (i = 0; i < a->nelems; i++)
			walk(e, a->type, off + (size_t)i * (size_t)esz, depth + 1);
		break;
	}
	case BTF_KIND_STRUCT: {
		const struct btf_member *m = btf_members(t);

		n = btf_vlen(t);
		for (i = 0; i < n; i++, m++) {
			uint32_t bo = btf_member_bit_offset(t, i), bs = btf_member_bitfield_size(t, i);
			uint32_t mid = m->type;
			const struct btf_type *mt = resolve(e->btf, &mid);

			if (!mt || kernel_managed(e->btf, mt))
				continue;
			if (bs)
				copy_bits(e, off * 8 + bo, bs);
			else
				walk(e, m->type, off + bo / 8, depth + 1);
		}
		break;
	}
	case BTF_KIND_UNION:
		e->has_union = 1;
		dont_care(e, off, t->size);
		break;
	case BTF_KIND_DATASEC: {
		const struct btf_var_secinfo *v = btf_var_secinfos(t);

		n = btf_vlen(t);
		for (i = 0; i < n; i++, v++) {
			const struct btf_type *vt = btf__type_by_id(e->btf, v->type);

			if (vt && btf_is_var(vt))
				walk(e, vt->type, off + v->offset, depth + 1);
		}
		break;
	}
	default:
		memcpy(e->out + off, e->in + off, t->size);
		break;
	}
}

/* ------------------------------------------------------------------------ */
/* -- Lua ----------------------------------------------------------------- */

/* Push T:method(arg) (arg at the top, popped); returns the pcall status. */
static int call_type(int ti, const char *method)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, types[ti].ref); /* arg T */
	lua_getfield(L, -1, method);                      /* arg T fn */
	lua_insert(L, -3);                                /* fn arg T */
	lua_insert(L, -2);                                /* fn T arg */
	return lua_pcall(L, 2, 1, 0);
}

static void check_bytes(int ti, const unsigned char *data, size_t len)
{
	uint32_t sz = types[ti].size, i;
	unsigned char *in = calloc(1, sz), *out = calloc(1, sz), *dc = calloc(1, sz);
	struct expect e = { types[ti].btf, in, out, dc, 0 };
	const char *c;
	size_t clen;
	int top = lua_gettop(L);

	if (!in || !out || !dc)
		die("calloc", NULL);
	memcpy(in, data, len < sz ? len : sz);
	walk(&e, types[ti].id, 0, 0);

	lua_pushlstring(L, (const char *)in, sz);
	if (call_type(ti, "decode"))
		die("decode failed", lua_tostring(L, -1));
	if (call_type(ti, "encode")) {
		const char *msg = lua_tostring(L, -1);

		if (!e.has_union || !msg || !strstr(msg, "share a union"))
			die("encode of a decoded value failed", msg);
		goto done;
	}
	c = lua_tolstring(L, -1, &clen);
	if (!c || clen != sz)
		die("encode gave the wrong size", NULL);
	for (i = 0; i < sz; i++) {
		if (((unsigned char)c[i] & ~dc[i]) != (out[i] & ~dc[i])) {
			char msg[160];

			lua_rawgeti(L, LUA_REGISTRYINDEX, types[ti].ref);
			lua_getfield(L, -1, "name");
			snprintf(msg, sizeof(msg), "%s: byte %u is 0x%02x, expected 0x%02x (input 0x%02x)",
				 lua_tostring(L, -1), i, (unsigned char)c[i], out[i], in[i]);
			die("round trip", msg);
		}
	}
	/* canonical: once more gives the same bytes */
	lua_pushvalue(L, -1);
	if (call_type(ti, "decode"))
		die("decode of an encoding failed", lua_tostring(L, -1));
	if (call_type(ti, "encode")) {
		const char *msg = lua_tostring(L, -1);

		if (!e.has_union || !msg || !strstr(msg, "share a union"))
			die("encode of a decoded encoding failed", msg);
	} else if (!lua_rawequal(L, -1, -2)) {
		die("encoding is not canonical", NULL);
	}
done:
	lua_settop(L, top);
	free(in);
	free(out);
	free(dc);
}

static void check_values(int ti, const unsigned char *data, size_t len)
{
	int top = lua_gettop(L);

	lua_getfield(L, LUA_REGISTRYINDEX, "codec_fuzz");
	lua_getfield(L, -1, "values");
	lua_rawgeti(L, LUA_REGISTRYINDEX, types[ti].ref);
	lua_pushlstring(L, (const char *)data, len);
	if (lua_pcall(L, 2, 0, 0))
		die("values", lua_tostring(L, -1));
	lua_settop(L, top);
}

/* ------------------------------------------------------------------------ */
/* -- libFuzzer ----------------------------------------------------------- */

static int add_type(lua_State *Ls)
{
	const struct btf *btf = lua_touserdata(Ls, 1);
	uint32_t id = (uint32_t)lua_tointeger(Ls, 2);

	bh_type_new(Ls, btf, id);
	return 1;
}

static void load_btf(const char *path)
{
	struct btf *btf = btf__parse_elf(path, NULL);
	uint32_t id, n;

	if (!btf || nbtfs == MAX_BTFS) {
		btf__free(btf);
		return;
	}
	btfs[nbtfs++] = btf;
	n = btf__type_cnt(btf);
	for (id = 1; id < n && ntypes < MAX_TYPES; id++) {
		const struct btf_type *t = btf__type_by_id(btf, id);
		int64_t sz;

		switch (btf_kind(t)) {
		case BTF_KIND_INT:
		case BTF_KIND_ENUM:
		case BTF_KIND_ENUM64:
		case BTF_KIND_FLOAT:
		case BTF_KIND_ARRAY:
		case BTF_KIND_STRUCT:
		case BTF_KIND_UNION:
		case BTF_KIND_TYPEDEF:
		case BTF_KIND_DATASEC:
			break;
		default:
			continue;
		}
		sz = btf__resolve_size(btf, id);
		if (sz <= 0 || sz > 65536)
			continue;
		lua_pushcfunction(L, add_type);
		lua_pushlightuserdata(L, btf);
		lua_pushinteger(L, id);
		if (lua_pcall(L, 2, 1, 0)) {
			lua_pop(L, 1); /* a type the codec refuses (it says why) */
			continue;
		}
		lua_getfield(L, -1, "size");
		if (lua_tointeger(L, -1) != sz)
			die("Type size differs from BTF's", path);
		lua_pop(L, 1);
		types[ntypes].btf = btf;
		types[ntypes].id = id;
		types[ntypes].size = (uint32_t)sz;
		types[ntypes].ref = luaL_ref(L, LUA_REGISTRYINDEX);
		ntypes++;
	}
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("BH_FUZZ_BPF") ? getenv("BH_FUZZ_BPF") : BH_FUZZ_BPF;
	const char *src = getenv("BH_FUZZ_SRC") ? getenv("BH_FUZZ_SRC") : BH_FUZZ_SRC;
	char path[4096], *names[256];
	struct dirent *de;
	int n = 0, i;
	DIR *d;

	(void)argc;
	(void)argv;
	/* what lives for the whole run is referenced from Lua's heap, which LSan cannot see */
	__lsan_disable();
	L = luaL_newstate();
	luaL_openlibs(L);
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, luaopen_bpfhost);
	lua_setfield(L, -2, "bpfhost");
	lua_pop(L, 2);
	if (luaL_dostring(L, "require 'bpfhost'"))
		die("require", lua_tostring(L, -1));
	d = opendir(dir);
	if (!d)
		die("no fixture directory", dir);
	while ((de = readdir(d)) && n < 256)
		if (strstr(de->d_name, ".bpf.o"))
			names[n++] = strdup(de->d_name);
	closedir(d);
	qsort(names, (size_t)n, sizeof(names[0]), cmp_names); /* the same type numbers every run */
	for (i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		load_btf(path);
		free(names[i]);
	}
	if (!ntypes)
		die("no types in", dir);
	snprintf(path, sizeof(path), "%s/codec_fuzz.lua", src);
	if (luaL_dofile(L, path))
		die("codec_fuzz.lua", lua_tostring(L, -1));
	lua_setfield(L, LUA_REGISTRYINDEX, "codec_fuzz");
	lua_gc(L, LUA_GCCOLLECT, 0);
	__lsan_enable();
	fprintf(stderr, "codec_fuzz: %d types from %d objects in %s\n", ntypes, nbtfs, dir);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int ti;

	if (size < 3)
		return 0;
	ti = (int)(((unsigned)data[0] | (unsigned)data[1] << 8) % (unsigned)ntypes);
	if (data[2] & 1)
		check_values(ti, data + 3, size - 3);
	else
		check_bytes(ti, data + 3, size - 3);
	/* free this input's garbage now, so that LSan sees no false leak */
	lua_gc(L, LUA_GCCOLLECT, 0);
	return 0;
}
