/* object.c: bpfhost.object, an ELF object opened and loaded through libbpf. */
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "bh.h"

/* ------------------------------------------------------------------------ */
/* -- Checking ------------------------------------------------------------ */

static struct bh_object *object_checkraw(lua_State *L, int idx)
{
	return bh_checkud(L, idx, BH_OBJECT_MT);
}

static struct bh_object *object_check_op(lua_State *L, int idx, const char *op)
{
	struct bh_object *o = object_checkraw(L, idx);

	if (!o->obj)
		luaL_error(L, "%s object '%s': object is closed", op, o->path ? o->path : "?");
	return o;
}

struct bh_object *bh_object_check(lua_State *L, int idx)
{
	return object_check_op(L, idx, "use");
}

/* Push field k of the object's uservalue table (maps, progs, links). */
static void object_uvfield(lua_State *L, int idx, const char *k)
{
	bh_getuv(L, idx);
	lua_getfield(L, -1, k);
	lua_remove(L, -2);
}

/* Push table kind of the object's pre-load settings (uservalue.cfg[kind]). */
void bh_object_cfg(lua_State *L, int objidx, const char *kind)
{
	bh_getuv(L, objidx);
	lua_getfield(L, -1, "cfg");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, -3, "cfg");
	}
	lua_getfield(L, -1, kind);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, -3, kind);
	}
	lua_replace(L, -3);
	lua_pop(L, 1);
}

/* ------------------------------------------------------------------------ */
/* -- Open ---------------------------------------------------------------- */

static const char *const open_opts[] = { "pin_root", "name", "btf_custom_path", "kconfig",
					 "log_size", NULL };

/* The first verifier log buffer of each program; it grows when a log does not fit. */
#define LOG_SIZE_DEFAULT (256u * 1024)
#define LOG_SIZE_MAX     (1024u * 1024 * 1024 - 1) /* the kernel's limit */

/* Where an object comes from, to open it again for a longer verifier log. */
struct open_args {
	const char *path;  /* a file, or NULL */
	const char *buf;   /* else bytes in memory (kept alive in the uservalue) */
	size_t len;
	const char *pin_root, *name, *btf_path, *kconfig;
};

static const char *opt_string(lua_State *L, int idx, const char *k, const char *fn)
{
	const char *s = NULL;

	if (!lua_istable(L, idx))
		return NULL;
	lua_getfield(L, idx, k);
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "%s: option '%s' must be a string, got %s", fn, k,
				   luaL_typename(L, -1));
		s = lua_tostring(L, -1);
	}
	lua_pop(L, 1); /* the string stays alive in the options table */
	return s;
}

/* Read the open options at optidx (kept in the object's uservalue) into a. */
static void open_args_get(lua_State *L, int optidx, struct open_args *a, const char *fn)
{
	a->pin_root = opt_string(L, optidx, "pin_root", fn);
	a->name = opt_string(L, optidx, "name", fn);
	a->btf_path = opt_string(L, optidx, "btf_custom_path", fn);
	a->kconfig = opt_string(L, optidx, "kconfig", fn);
}

/* Open a as a libbpf object; NULL with errno set on failure. Calls no Lua. */
static struct bpf_object *open_args_open(const struct open_args *a)
{
	LIBBPF_OPTS(bpf_object_open_opts, oo, .object_name = a->name, .pin_root_path = a->pin_root,
		    .btf_custom_path = a->btf_path, .kconfig = a->kconfig);

	if (a->path)
		return bpf_object__open_file(a->path, &oo);
	return bpf_object__open_mem(a->buf, a->len, &oo);
}

/*
 * libbpf 1.1 follows the type ids and name offsets of an object's .BTF
 * without checking them (1.2 added the check): a corrupt object crashes it.
 * So check them first, as libbpf 1.2's btf_sanity_check does. A .BTF that
 * does not parse at all is left to libbpf, which drops it.
 */
static int btf_bad_id(const struct btf *btf, uint32_t id, uint32_t n)
{
	return id >= n || !btf__type_by_id(btf, id);
}

static int btf_sane(const struct btf *btf, char *why, size_t whyn)
{
	uint32_t n = btf__type_cnt(btf), id, i;

	for (id = 1; id < n; id++) {
		const struct btf_type *t = btf__type_by_id(btf, id);
		uint32_t bad = 0, vlen;

		if (!t || !btf__str_by_offset(btf, t->name_off)) {
			snprintf(why, whyn, ".BTF: type %u has a bad name offset", id);
			return 0;
		}
		vlen = btf_vlen(t);
		switch (btf_kind(t)) {
		case BTF_KIND_INT:
		case BTF_KIND_FWD:
		case BTF_KIND_FLOAT:
			break;
		case BTF_KIND_PTR:
		case BTF_KIND_TYPEDEF:
		case BTF_KIND_VOLATILE:
		case BTF_KIND_CONST:
		case BTF_KIND_RESTRICT:
		case BTF_KIND_VAR:
		case BTF_KIND_DECL_TAG:
		case BTF_KIND_TYPE_TAG:
		case BTF_KIND_FUNC:
			bad = btf_bad_id(btf, t->type, n);
			if (!bad && btf_kind(t) == BTF_KIND_FUNC)
				bad = !btf_is_func_proto(btf__type_by_id(btf, t->type));
			break;
		case BTF_KIND_ARRAY:
			bad = btf_bad_id(btf, btf_array(t)->type, n) ||
			      btf_bad_id(btf, btf_array(t)->index_type, n);
			break;
		case BTF_KIND_STRUCT:
		case BTF_KIND_UNION:
			for (i = 0; i < vlen && !bad; i++)
				bad = btf_bad_id(btf, btf_members(t)[i].type, n) ||
				      !btf__str_by_offset(btf, btf_members(t)[i].name_off);
			break;
		case BTF_KIND_ENUM:
			for (i = 0; i < vlen && !bad; i++)
				bad = !btf__str_by_offset(btf, btf_enum(t)[i].name_off);
			break;
		case BTF_KIND_ENUM64:
			for (i = 0; i < vlen && !bad; i++)
				bad = !btf__str_by_offset(btf, btf_enum64(t)[i].name_off);
			break;
		case BTF_KIND_FUNC_PROTO:
			bad = btf_bad_id(btf, t->type, n);
			for (i = 0; i < vlen && !bad; i++)
				bad = btf_bad_id(btf, btf_params(t)[i].type, n) ||
				      !btf__str_by_offset(btf, btf_params(t)[i].name_off);
			break;
		case BTF_KIND_DATASEC:
			for (i = 0; i < vlen && !bad; i++)
				bad = btf_bad_id(btf, btf_var_secinfos(t)[i].type, n);
			break;
		default:
			snprintf(why, whyn, ".BTF: type %u is of unknown kind %u", id, btf_kind(t));
			return 0;
		}
		if (bad) {
			snprintf(why, whyn, ".BTF: type %u refers to a type or name that does not exist",
				 id);
			return 0;
		}
	}
	return 1;
}

/*
 * Check the .BTF of the ELF image buf (len bytes) before libbpf reads it;
 * 0, or -1 with why filled. Calls no Lua.
 */
static int elf_btf_check(const void *buf, size_t len, char *why, size_t whyn)
{
	Elf *elf;
	Elf_Scn *scn = NULL;
	size_t shstrndx;
	int ok = 1;

	elf_version(EV_CURRENT);
	elf = elf_memory((char *)(uintptr_t)buf, len);
	if (!elf)
		return 0; /* libbpf says what is wrong with it */
	if (elf_getshdrstrndx(elf, &shstrndx)) {
		elf_end(elf);
		return 0;
	}
	while ((scn = elf_nextscn(elf, scn))) {
		GElf_Shdr sh;
		const char *name;
		Elf_Data *d;
		struct btf *btf;

		if (!gelf_getshdr(scn, &sh))
			break;
		name = elf_strptr(elf, shstrndx, sh.sh_name);
		if (!name || strcmp(name, ".BTF"))
			continue;
		d = elf_getdata(scn, NULL);
		if (!d || !d->d_buf || !d->d_size)
			break;
		btf = btf__new(d->d_buf, (uint32_t)d->d_size);
		if (btf) {
			ok = btf_sane(btf, why, whyn);
			btf__free(btf);
		}
		break;
	}
	elf_end(elf);
	return ok ? 0 : -1;
}

/* elf_btf_check for a file; errors reading it are left to libbpf. */
static int file_btf_check(const char *path, char *why, size_t whyn)
{
	struct stat st;
	void *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return 0;
	if (!fstat(fd, &st) && S_ISREG(st.st_mode) && st.st_size > 0) {
		p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p != MAP_FAILED) {
			r = elf_btf_check(p, (size_t)st.st_size, why, whyn);
			munmap(p, (size_t)st.st_size);
		}
	}
	close(fd);
	return r;
}

/*
 * bpf.open(path[, opts]) and bpf.open_mem(bytes[, opts]): push the object.
 * The argument at 1 is the path, or with mem the bytes of the ELF file.
 */
static struct bh_object *object_open(lua_State *L, const char *fn, int mem)
{
	size_t len;
	const char *src = luaL_checklstring(L, 1, &len);
	struct open_args a;
	struct bh_object *o;
	struct bpf_object *obj;
	lua_Number logsz = LOG_SIZE_DEFAULT;
	const char *log;
	char why[128];
	int err;

	memset(&a, 0, sizeof(a));
	bh_opt_check(L, 2, fn, open_opts);
	open_args_get(L, 2, &a, fn);
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "log_size");
		if (!lua_isnil(L, -1)) {
			if (lua_type(L, -1) != LUA_TNUMBER)
				luaL_error(L, "%s: option 'log_size' must be a number, got %s", fn,
					   luaL_typename(L, -1));
			logsz = lua_tonumber(L, -1);
			if (logsz != (lua_Number)(uint32_t)logsz || logsz < 128 ||
			    logsz > LOG_SIZE_MAX)
				luaL_error(L, "%s: option 'log_size' must be an integer in [128, %d], "
					   "got %s", fn, (int)LOG_SIZE_MAX, bh_numstr(L, logsz));
		}
		lua_pop(L, 1);
	}
	if (mem) {
		a.buf = src;
		a.len = len;
		if (len < 64 || memcmp(src, "\177ELF", 4))
			luaL_argerror(L, 1, "not an ELF file (BPF object bytes expected)");
		if (!a.name)
			a.name = "mem";
	} else {
		a.path = src;
	}

	o = bh_newud(L, sizeof(*o));
	memset(o, 0, sizeof(*o));
	o->log_size = (size_t)logsz;
	luaL_getmetatable(L, BH_OBJECT_MT);
	lua_setmetatable(L, -2);
	lua_createtable(L, 0, 6);
	lua_newtable(L);
	lua_setfield(L, -2, "maps");
	lua_newtable(L);
	lua_setfield(L, -2, "progs");
	lua_newtable(L);
	lua_setfield(L, -2, "links");
	lua_newtable(L);
	lua_setfield(L, -2, "live");
	lua_pushvalue(L, 1);
	lua_setfield(L, -2, "src"); /* the bytes stay alive as long as the object */
	lua_pushboolean(L, mem);
	lua_setfield(L, -2, "mem");
	if (lua_istable(L, 2)) {
		lua_pushvalue(L, 2);
		lua_setfield(L, -2, "opts");
	}
	bh_setuv(L, -2);
	o->path = strdup(mem ? a.name : src);
	if (!o->path)
		bh_fail(L, fn, "object", src, ENOMEM, NULL, NULL);

	if (!mem && access(src, R_OK)) {
		err = errno;
		bh_fail_msg(L, "open", "object", src, err,
			    err == ENOENT ? "no such file" : NULL,
			    err == ENOENT ? "BPF objects are built into build/bpf/ by make" : NULL,
			    NULL);
	}
	if (a.pin_root && bh_ensure_bpffs())
		bh_fail_msg(L, "open", "object", o->path, errno,
			    "bpffs is not mounted at /sys/fs/bpf", "mount -t bpf bpf /sys/fs/bpf",
			    NULL);
	if (a.pin_root)
		bh_check_bpffs(L, "open", "object", o->path, a.pin_root, 1);
	if (mem ? elf_btf_check(a.buf, a.len, why, sizeof(why)) :
		  file_btf_check(a.path, why, sizeof(why)))
		bh_fail_msg(L, "open", "object", o->path, EINVAL,
			    lua_pushfstring(L, "not a valid BPF object file: %s", why), NULL, NULL);
	bh_log_begin();
	obj = open_args_open(&a);
	err = obj ? 0 : errno;
	log = bh_log_end();
	/* libbpf's own codes (LIBBPF_ERRNO__FORMAT, ...) from 4000 on: a file it cannot read */
	if (!obj)
		bh_fail_msg(L, "open", "object", o->path, err,
			    err == EINVAL || err == ENOEXEC || err == EILSEQ ||
					    (err >= 4000 && err < 4100) ?
				    "not a valid BPF object file" : NULL,
			    NULL, log);
	o->obj = obj;
	return o;
}

static int l_open(lua_State *L)
{
	object_open(L, "open", 0);
	return 1;
}

static int l_open_mem(lua_State *L)
{
	object_open(L, "open_mem", 1);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Load, and what a failed load says ----------------------------------- */

static int reset_map_pcall(lua_State *L)
{
	bh_map_reset(L, 1);
	return 0;
}

/*
 * Tell the map handles made so far that the object loaded or closed. A handle
 * that cannot get ready (its types do not compile, say) must not fail the
 * load that already happened: it stays unready and says why when used.
 */
static void reset_maps(lua_State *L, int idx)
{
	object_uvfield(L, idx, "maps");
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		lua_pushcfunction(L, reset_map_pcall);
		lua_pushvalue(L, -2);
		if (lua_pcall(L, 1, 0, 0))
			lua_pop(L, 1);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

/*
 * The verifier log buffers of one load, owned by a userdata so that a Lua
 * error on the way (memory) frees them; so does the scratch object of a
 * retry. libbpf keeps a pointer to each buffer but reads it only during load.
 */
struct logbufs {
	size_t n;
	struct bpf_object *scratch;
	char *big;
	char *bufs[1];
};

static void logbufs_free(struct logbufs *lb)
{
	size_t i;

	for (i = 0; i < lb->n; i++) {
		free(lb->bufs[i]);
		lb->bufs[i] = NULL;
	}
	free(lb->big);
	lb->big = NULL;
	if (lb->scratch) {
		bpf_object__close(lb->scratch);
		lb->scratch = NULL;
	}
}

static int logbufs_gc(lua_State *L)
{
	logbufs_free(lua_touserdata(L, 1));
	return 0;
}

static struct logbufs *logbufs_new(lua_State *L, size_t n)
{
	struct logbufs *lb = lua_newuserdata(L, sizeof(*lb) + n * sizeof(char *));

	memset(lb, 0, sizeof(*lb) + n * sizeof(char *));
	lb->n = n;
	luaL_getmetatable(L, "bpfhost.logbufs");
	lua_setmetatable(L, -2);
	return lb;
}

/* The program the verifier refused, from libbpf's log, for the message. */
static const char *failed_prog(const char *log, char *buf, size_t n)
{
	const char *p = log ? strstr(log, "prog '") : NULL;

	while (p) {
		const char *q = strchr(p + 6, '\'');

		if (q && strstr(q, "failed to load")) {
			size_t len = (size_t)(q - p - 6);

			if (len >= n)
				len = n - 1;
			memcpy(buf, p + 6, len);
			buf[len] = '\0';
			return buf;
		}
		p = strstr(p + 6, "prog '");
	}
	return NULL;
}

static int starts(const char *s, size_t n, const char *prefix)
{
	size_t k = strlen(prefix);

	return n >= k && !memcmp(s, prefix, k);
}

/*
 * The verifier's last meaningful line: the last one that is not its
 * statistics, copied into out (without the newline).
 */
static const char *last_line(const char *log, char *out, size_t outn)
{
	const char *end, *p;

	if (!log)
		return NULL;
	end = log + strlen(log);
	while (end > log) {
		size_t n;

		p = end;
		while (p > log && p[-1] != '\n')
			p--;
		n = (size_t)(end - p);
		while (n && (p[n - 1] == '\n' || p[n - 1] == ' ' || p[n - 1] == '\r'))
			n--;
		if (n && !starts(p, n, "processed ") && !starts(p, n, "verification time") &&
		    !starts(p, n, "stack depth") && !starts(p, n, "-- END") &&
		    !starts(p, n, "libbpf: prog '") && !starts(p, n, "libbpf: failed to load")) {
			if (starts(p, n, "libbpf: ")) {
				p += 8;
				n -= 8;
			}
			if (n >= outn)
				n = outn - 1;
			memcpy(out, p, n);
			out[n] = '\0';
			return out;
		}
		end = p > log ? p - 1 : log;
	}
	return NULL;
}

/* Do we hold cap (effective)? */
static int have_cap(int cap)
{
	struct {
		uint32_t version;
		int pid;
	} hdr = { 0x20080522, 0 }; /* _LINUX_CAPABILITY_VERSION_3 */
	struct {
		uint32_t effective, permitted, inheritable;
	} data[2];

	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data))
		return geteuid() == 0;
	return !!(data[cap / 32].effective & (1u << (cap % 32)));
}

static int is_trampoline(const struct bpf_program *prog)
{
	enum bpf_prog_type t = bpf_program__type(prog);
	enum bpf_attach_type a = bpf_program__expected_attach_type(prog);

	if (t == BPF_PROG_TYPE_EXT || t == BPF_PROG_TYPE_LSM)
		return 1;
	return t == BPF_PROG_TYPE_TRACING && (a == BPF_TRACE_FENTRY || a == BPF_TRACE_FEXIT ||
					      a == BPF_MODIFY_RETURN);
}

/*
 * A hint for a failed load from its errno, the verifier log and libbpf's
 * messages; pushed (or nil).
 */
static void push_hint(lua_State *L, int err, const struct bpf_program *prog, const char *vlog,
		      const char *liblog, const char *btf_path)
{
	const char *s;
	struct rlimit rl;

	if (liblog && strstr(liblog, "failed to parse target BTF")) {
		if (btf_path)
			lua_pushfstring(L, "btf_custom_path '%s' could not be read as BTF", btf_path);
		else
			lua_pushliteral(L, "the kernel's BTF (/sys/kernel/btf/vmlinux) could not be "
					   "read; pass btf_custom_path to bpf.open");
		return;
	}

	if (err == EPERM && prog && is_trampoline(prog) && have_cap(39 /* CAP_BPF */) &&
	    have_cap(38 /* CAP_PERFMON */)) {
		lua_pushliteral(L, "this kernel refuses BPF trampolines, which fentry, fexit, "
				   "fmod_ret, freplace and lsm programs need; use tp_btf, "
				   "raw_tp or tracepoint programs");
		return;
	}
	if ((err == EPERM || err == EACCES) && !(have_cap(39) || have_cap(21 /* SYS_ADMIN */))) {
		lua_pushliteral(L, "needs root, or CAP_BPF and CAP_PERFMON (missing: CAP_BPF)");
		return;
	}
	if ((err == EPERM || err == EACCES) && prog &&
	    bpf_program__type(prog) != BPF_PROG_TYPE_SOCKET_FILTER && !have_cap(38) &&
	    !have_cap(21)) {
		lua_pushliteral(L, "needs root, or CAP_BPF and CAP_PERFMON (missing: CAP_PERFMON)");
		return;
	}
	if (vlog && strstr(vlog, "_or_null'")) {
		lua_pushliteral(L, "a pointer that may be NULL (a map lookup's result) is used without "
				   "a NULL check");
		return;
	}
	if (vlog && strstr(vlog, "invalid access to packet")) {
		lua_pushliteral(L, "a packet access is not proven to stay below data_end: compare "
				   "data + offset + size with data_end first");
		return;
	}
	if (vlog && (strstr(vlog, "unbounded memory access") ||
		     strstr(vlog, "min value is negative"))) {
		lua_pushliteral(L, "an index or size is not bounded: check it against its limits "
				   "before using it");
		return;
	}
	if (vlog && (s = strstr(vlog, "unknown func ")) != NULL) {
		const char *e = strchr(s, '\n');

		lua_pushlstring(L, s + 13, e ? (size_t)(e - s - 13) : strlen(s + 13));
		lua_pushfstring(L, "this kernel has no helper %s; check the helpers of this kernel "
				   "(bpftool feature probe)", lua_tostring(L, -1));
		lua_remove(L, -2);
		return;
	}
	if (vlog && (s = strstr(vlog, "cannot use helper")) != NULL) {
		lua_pushliteral(L, "the program calls a helper that its program type may not use");
		return;
	}
	if ((vlog && (strstr(vlog, "calling kernel function") || strstr(vlog, "kernel function") ||
		      strstr(vlog, "kfunc"))) ||
	    (liblog && strstr(liblog, "(func ksym)"))) {
		lua_pushliteral(L, "the program calls a kfunc this kernel does not have or does not "
				   "allow for this program type");
		return;
	}
	if (liblog && (strstr(liblog, "vmlinux BTF") || strstr(liblog, "kernel BTF") ||
		       strstr(liblog, "failed to find valid kernel BTF"))) {
		lua_pushliteral(L, "no usable kernel BTF: this kernel needs CONFIG_DEBUG_INFO_BTF "
				   "(/sys/kernel/btf/vmlinux), or pass btf_custom_path to bpf.open");
		return;
	}
	if (vlog && (strstr(vlog, "BPF program is too large") ||
		     strstr(vlog, "too many states"))) {
		lua_pushliteral(L, "the program is too complex for the verifier (1M instructions "
				   "processed); bound its loops or split it");
		return;
	}
	if ((err == EPERM || err == ENOMEM) && bh_memlock_charged() &&
	    !getrlimit(RLIMIT_MEMLOCK, &rl) && rl.rlim_cur != RLIM_INFINITY) {
		lua_pushfstring(L, "RLIMIT_MEMLOCK is %d KiB; kernels before 5.11 charge BPF memory "
				   "to it: raise it (ulimit -l unlimited)",
				(int)(rl.rlim_cur / 1024));
		return;
	}
	if (vlog && *vlog) {
		lua_pushliteral(L, "err.log holds the verifier's whole reasoning; its last lines "
				   "show where it gave up");
		return;
	}
	lua_pushnil(L);
}

/*
 * Copy what matters of from into to, a fresh open of the same object, so
 * that loading to fails the same way: program selection and targets, map
 * definitions, the global data images, reused and inner maps. Pin paths are
 * cleared: a reload for a log must not touch bpffs.
 */
static void replay(lua_State *L, int idx, struct bpf_object *from, struct bpf_object *to,
		   const char *only)
{
	struct bpf_program *tp;
	struct bpf_map *tm;

	bpf_object__for_each_program(tp, to) {
		const char *n = bpf_program__name(tp);
		struct bpf_program *fp = bpf_object__find_program_by_name(from, n);

		bpf_program__set_autoload(tp, only ? !strcmp(n, only) : fp && bpf_program__autoload(fp));
	}
	bh_object_cfg(L, idx, "target");
	lua_pushnil(L);
	while (lua_next(L, -2)) { /* targets, name, {func, prog} */
		struct bpf_program *p = bpf_object__find_program_by_name(to, lua_tostring(L, -2));
		struct bh_prog *t;
		int tfd = 0;

		lua_rawgeti(L, -1, 2);
		t = bh_testud(L, -1, BH_PROG_MT);
		if (t && (!t->parent || (t->parent->obj && t->parent->loaded)) && bh_prog_fd(t) >= 0)
			tfd = bh_prog_fd(t);
		lua_pop(L, 1);
		lua_rawgeti(L, -1, 1);
		if (p)
			bpf_program__set_attach_target(p, tfd, lua_tostring(L, -1));
		lua_pop(L, 2);
	}
	lua_pop(L, 1);
	bpf_object__for_each_map(tm, to) {
		struct bpf_map *fm = bpf_object__find_map_by_name(from, bpf_map__name(tm));

		bpf_map__set_pin_path(tm, NULL);
		if (!fm)
			continue;
		if (bpf_map__is_internal(fm)) {
			size_t sz = 0;
			const void *v = bpf_map__initial_value(fm, &sz);

			if (v)
				bpf_map__set_initial_value(tm, v, sz);
			continue;
		}
		if (bpf_map__type(fm) != bpf_map__type(tm))
			bpf_map__set_type(tm, bpf_map__type(fm));
		bpf_map__set_max_entries(tm, bpf_map__max_entries(fm));
		bpf_map__set_map_flags(tm, bpf_map__map_flags(fm));
	}
	bh_object_cfg(L, idx, "inner");
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		struct bpf_map *m = bpf_object__find_map_by_name(to, lua_tostring(L, -2));
		struct bh_map *in = lua_touserdata(L, -1);

		if (m && in && bh_rawlen(L, -1) == sizeof(*in) && in->magic == BH_MAP_MAGIC &&
		    in->fd >= 0)
			bpf_map__set_inner_map_fd(m, in->fd);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	bh_object_cfg(L, idx, "reuse");
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		struct bpf_map *m = bpf_object__find_map_by_name(to, lua_tostring(L, -2));

		if (m && lua_type(L, -1) == LUA_TSTRING) {
			int fd = bpf_obj_get(lua_tostring(L, -1));

			if (fd >= 0) {
				bpf_map__reuse_fd(m, fd);
				close(fd);
			}
		} else if (m) {
			struct bh_map *r = lua_touserdata(L, -1);

			if (r && bh_rawlen(L, -1) == sizeof(*r) && r->magic == BH_MAP_MAGIC &&
			    r->fd >= 0)
				bpf_map__reuse_fd(m, r->fd);
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

static int log_truncated(int err, const char *buf, size_t size)
{
	return err == ENOSPC || (buf && strlen(buf) + 1 >= size);
}

/*
 * Load the failed program prog again, alone, in a fresh open of the object
 * at idx, with log buffers 8 times larger each round, until its verifier log
 * fits. Returns the log (in lb->big) and updates *err with the errno of the
 * last round that said why (not ENOSPC).
 */
static const char *longer_log(lua_State *L, int idx, struct bh_object *o, struct logbufs *lb,
			      const char *prog, size_t size, int *err)
{
	const char *log = NULL;
	struct open_args a;

	memset(&a, 0, sizeof(a));
	bh_getuv(L, idx);
	lua_getfield(L, -1, "src");
	lua_getfield(L, -2, "opts");
	open_args_get(L, lua_gettop(L), &a, "load");
	lua_getfield(L, -3, "mem");
	if (lua_toboolean(L, -1)) {
		a.buf = lua_tolstring(L, -3, &a.len);
		if (!a.name)
			a.name = "mem";
	} else {
		a.path = lua_tostring(L, -3);
	}
	lua_pop(L, 4); /* the strings stay alive in the uservalue */

	while (size < LOG_SIZE_MAX) {
		struct bpf_program *p;
		int e;

		size = size > LOG_SIZE_MAX / 8 ? LOG_SIZE_MAX : size * 8;
		lb->scratch = open_args_open(&a);
		if (!lb->scratch)
			break;
		replay(L, idx, o->obj, lb->scratch, prog);
		p = bpf_object__find_program_by_name(lb->scratch, prog);
		free(lb->big);
		lb->big = malloc(size);
		if (!p || !lb->big)
			break;
		lb->big[0] = '\0';
		bpf_program__set_log_buf(p, lb->big, size);
		bh_log_begin();
		e = bpf_object__load(lb->scratch);
		bh_log_end();
		bpf_object__close(lb->scratch);
		lb->scratch = NULL;
		if (!e || !lb->big[0])
			break; /* it loaded alone, or said nothing: keep the first log */
		log = lb->big;
		if (-e != ENOSPC)
			*err = -e;
		if (!log_truncated(-e, lb->big, size))
			break;
	}
	return log;
}

/*
 * After load, point libbpf's image of each mmap'able global section at the
 * map's own memory, as bpf_object__load_skeleton does (libbpf 1.1 does not
 * for plain objects): reads and writes of obj.bss then reach the kernel,
 * with no syscall. The new mapping is tried elsewhere first, so that a
 * failure leaves the old image in place. uservalue.live records the
 * sections that were remapped; globals.c uses syscalls for the others.
 */
static void remap_globals(lua_State *L, int idx, struct bh_object *o)
{
	long page = sysconf(_SC_PAGESIZE);
	struct bpf_map *m;

	object_uvfield(L, idx, "live");
	bpf_object__for_each_map(m, o->obj) {
		size_t sz = 0, msz;
		void *p, *q;
		int prot, fd = bpf_map__fd(m);

		if (!bpf_map__is_internal(m) || !(bpf_map__map_flags(m) & BPF_F_MMAPABLE) || fd < 0)
			continue;
		p = (void *)(uintptr_t)bpf_map__initial_value(m, &sz);
		if (!p)
			continue;
		msz = ((size_t)((bpf_map__value_size(m) + 7) & ~7u) * bpf_map__max_entries(m) +
		       (size_t)page - 1) & ~((size_t)page - 1);
		prot = bpf_map__map_flags(m) & BPF_F_RDONLY_PROG ? PROT_READ : PROT_READ | PROT_WRITE;
		q = mmap(NULL, msz, prot, MAP_SHARED, fd, 0);
		if (q == MAP_FAILED)
			continue;
		munmap(q, msz);
		if (mmap(p, msz, prot, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
			continue;
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, bpf_map__name(m));
	}
	lua_pop(L, 1);
}

/*
 * Load the object at idx. Each program gets its own verifier log buffer; if
 * one fails, its whole log goes into the error object (err.log), loading it
 * again with larger buffers until the log fits; err.message names the
 * program and the verifier's last meaningful line, err.hint a likely cause.
 */
static void object_do_load(lua_State *L, int idx, struct bh_object *o, int close_on_fail)
{
	struct bpf_program *prog, *bad = NULL;
	struct logbufs *lb;
	const char *liblog, *vlog = NULL;
	char pname[64], line[512], reason[700];
	size_t n = 0, i, badsize = 0;
	int err;

	if (o->loaded)
		luaL_error(L, "load object '%s': already loaded", o->path);
	object_uvfield(L, idx, "failed");
	if (lua_toboolean(L, -1))
		luaL_error(L, "load object '%s': its load failed already; libbpf loads an object "
			   "once (open it again)", o->path);
	lua_pop(L, 1);
	bpf_object__for_each_program(prog, o->obj)
		n++;
	lb = logbufs_new(L, n);
	i = 0;
	bpf_object__for_each_program(prog, o->obj) {
		if (bpf_program__autoload(prog)) {
			lb->bufs[i] = malloc(o->log_size);
			if (!lb->bufs[i])
				luaL_error(L, "load object '%s': out of memory", o->path);
			lb->bufs[i][0] = '\0';
			bpf_program__set_log_buf(prog, lb->bufs[i], o->log_size);
		}
		i++;
	}
	bh_log_begin();
	err = bpf_object__load(o->obj);
	liblog = bh_log_end();
	lua_pushstring(L, liblog); /* the capture buffer is reused by the next load */
	liblog = lua_tostring(L, -1);
	if (!err) {
		o->loaded = 1;
		logbufs_free(lb);
		lua_pop(L, 2);
		remap_globals(L, idx, o);
		reset_maps(L, idx);
		return;
	}
	err = -err;
	bh_getuv(L, idx);
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "failed");
	lua_pop(L, 1);

	/* which program: the one with a log, else the one libbpf names */
	i = 0;
	bpf_object__for_each_program(prog, o->obj) {
		if (lb->bufs[i] && lb->bufs[i][0]) {
			bad = prog;
			vlog = lb->bufs[i];
			break;
		}
		i++;
	}
	if (!bad && failed_prog(liblog, pname, sizeof(pname)))
		bad = bpf_object__find_program_by_name(o->obj, pname);
	if (bad)
		snprintf(pname, sizeof(pname), "%s", bpf_program__name(bad));
	badsize = o->log_size;
	if (bad && vlog && log_truncated(err, vlog, badsize)) {
		const char *longer = longer_log(L, idx, o, lb, pname, badsize, &err);

		if (longer)
			vlog = longer;
	}

	if (bad && vlog && last_line(vlog, line, sizeof(line)))
		snprintf(reason, sizeof(reason), "program '%s' was rejected by the verifier: %s",
			 pname, line);
	else if (bad && err == EPERM && is_trampoline(bad) && have_cap(39) && have_cap(38))
		snprintf(reason, sizeof(reason), "program '%s' (%s) was refused: this kernel does "
			 "not allow BPF trampolines (fentry/fexit/fmod_ret/lsm)", pname,
			 bpf_program__section_name(bad));
	else if (bad)
		snprintf(reason, sizeof(reason), "program '%s' failed to load: %s", pname,
			 err == EPERM ? "operation not permitted" : strerror(err));
	else if (last_line(liblog, line, sizeof(line)))
		snprintf(reason, sizeof(reason), "%s", line);
	else
		snprintf(reason, sizeof(reason), "%s", strerror(err));
	object_uvfield(L, idx, "opts");
	lua_pushstring(L, opt_string(L, lua_gettop(L), "btf_custom_path", "load"));
	lua_remove(L, -2);
	push_hint(L, err, bad, vlog, liblog, lua_tostring(L, -1));
	lua_remove(L, -2);
	lua_pushstring(L, vlog && *vlog ? vlog : liblog); /* lb, liblog, hint, log */
	logbufs_free(lb);
	if (close_on_fail) {
		bpf_object__close(o->obj);
		o->obj = NULL;
	}
	bh_fail_msg(L, "load", "object", o->path, err, reason, lua_tostring(L, -2),
		    lua_tostring(L, -1));
}

static int object_load(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "load");

	object_do_load(L, 1, o, 0);
	lua_settop(L, 1);
	return 1;
}

/* bpf.load(path[, opts]): open and load; a failed load closes what it opened. */
static int l_load(lua_State *L)
{
	struct bh_object *o = object_open(L, "load", 0);

	object_do_load(L, lua_gettop(L), o, 1);
	return 1;
}

/* Close every link of the object at idx, then drop its handles' fds. */
static void object_release(lua_State *L, int idx, struct bh_object *o)
{
	int n, i;

	object_uvfield(L, idx, "links");
	n = (int)bh_rawlen(L, -1);
	for (i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, i);
		bh_link_close_ud(L, lua_gettop(L));
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	if (o->obj) {
		struct bpf_object *obj = o->obj;

		o->obj = NULL;
		reset_maps(L, idx);
		bpf_object__close(obj);
	}
}

static int object_close(lua_State *L)
{
	struct bh_object *o = object_checkraw(L, 1);

	if (o->busy)
		luaL_error(L, "close object '%s': one of its buffers is being polled", o->path);
	object_release(L, 1, o);
	lua_pushboolean(L, 1);
	return 1;
}

/* __gc never raises and never calls Lua: links and maps are C-side closes. */
static int object_gc(lua_State *L)
{
	struct bh_object *o = lua_touserdata(L, 1);

	if (!o)
		return 0;
	object_release(L, 1, o);
	free(o->path);
	o->path = NULL;
	return 0;
}

static int object_tostring(lua_State *L)
{
	struct bh_object *o = object_checkraw(L, 1);

	if (!o->obj)
		lua_pushfstring(L, "object '%s' (closed)", o->path ? o->path : "?");
	else
		lua_pushfstring(L, "object '%s' (%s)", bpf_object__name(o->obj),
				o->loaded ? "loaded" : "not loaded");
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Maps and programs --------------------------------------------------- */

static void push_names(lua_State *L, struct bh_object *o, int maps)
{
	luaL_Buffer b;
	int first = 1;

	luaL_buffinit(L, &b);
	if (maps) {
		struct bpf_map *m;

		bpf_object__for_each_map(m, o->obj) {
			if (!first)
				luaL_addstring(&b, ", ");
			luaL_addstring(&b, bpf_map__name(m));
			first = 0;
		}
	} else {
		struct bpf_program *p;

		bpf_object__for_each_program(p, o->obj) {
			if (!first)
				luaL_addstring(&b, ", ");
			luaL_addstring(&b, bpf_program__name(p));
			first = 0;
		}
	}
	if (first)
		luaL_addstring(&b, "none");
	luaL_pushresult(&b);
}

/* Push the cached handle for map, creating it on first use. */
static void push_map_handle(lua_State *L, int idx, struct bpf_map *map)
{
	const char *name = bpf_map__name(map);

	object_uvfield(L, idx, "maps");
	lua_getfield(L, -1, name);
	if (!lua_isnil(L, -1)) {
		struct bh_map *m = lua_touserdata(L, -1);

		if (m && !m->closed) {
			lua_remove(L, -2);
			return;
		}
	}
	lua_pop(L, 1);
	bh_map_push(L, idx, map);
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, name);
	lua_remove(L, -2);
}

static int object_get_map(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "get_map");
	const char *name = luaL_checkstring(L, 2);
	struct bpf_map *map = bpf_object__find_map_by_name(o->obj, name);

	if (!map) {
		push_names(L, o, 1);
		return luaL_error(L, "get_map: no map '%s' in object '%s' (maps: %s)", name,
				  o->path, lua_tostring(L, -1));
	}
	push_map_handle(L, 1, map);
	return 1;
}

static int object_maps(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "maps");
	struct bpf_map *map;

	lua_newtable(L);
	bpf_object__for_each_map(map, o->obj) {
		push_map_handle(L, 1, map);
		lua_setfield(L, -2, bpf_map__name(map));
	}
	return 1;
}

static void push_prog_handle(lua_State *L, int idx, struct bpf_program *prog)
{
	const char *name = bpf_program__name(prog);

	object_uvfield(L, idx, "progs");
	lua_getfield(L, -1, name);
	if (!lua_isnil(L, -1)) {
		lua_remove(L, -2);
		return;
	}
	lua_pop(L, 1);
	bh_prog_push(L, idx, prog);
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, name);
	lua_remove(L, -2);
}

static int object_program(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "program");
	const char *name = luaL_checkstring(L, 2);
	struct bpf_program *prog = bpf_object__find_program_by_name(o->obj, name);

	if (!prog) {
		push_names(L, o, 0);
		return luaL_error(L, "program: no program '%s' in object '%s' (programs: %s)", name,
				  o->path, lua_tostring(L, -1));
	}
	push_prog_handle(L, 1, prog);
	return 1;
}

static int object_programs(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "programs");
	struct bpf_program *prog;

	lua_newtable(L);
	bpf_object__for_each_program(prog, o->obj) {
		push_prog_handle(L, 1, prog);
		lua_setfield(L, -2, bpf_program__name(prog));
	}
	return 1;
}

/* obj:type(name): a Type from the object's BTF, or a built-in scalar. */
static int object_type(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "type");
	const char *name = luaL_checkstring(L, 2);

	bh_type_from_spec(L, bpf_object__btf(o->obj), name, "type");
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- Attach -------------------------------------------------------------- */

/*
 * Attach every loaded program whose SEC() says where. Programs that need a
 * target (xdp, tc, cgroup, bare uprobe) are left for their explicit attach.
 * If one attach fails, the links made by this call are destroyed before the
 * error is raised: nothing stays half-attached.
 */
static int object_attach(lua_State *L)
{
	struct bh_object *o = object_check_op(L, 1, "attach");
	struct bpf_program *prog;
	int result;

	if (!o->loaded)
		luaL_error(L, "attach object '%s': not loaded (call obj:load() first)", o->path);
	lua_newtable(L);
	result = lua_gettop(L);
	bpf_object__for_each_program(prog, o->obj) {
		struct bh_prog *p;
		int pidx;

		if (!bpf_program__autoload(prog) || !bpf_program__autoattach(prog))
			continue;
		push_prog_handle(L, 1, prog);
		pidx = lua_gettop(L);
		p = lua_touserdata(L, pidx);
		lua_pushcfunction(L, bh_prog_attach_pcall);
		lua_pushvalue(L, pidx);
		if (lua_pcall(L, 1, 1, 0)) {
			/* undo: destroy what this call attached, then re-raise */
			lua_pushnil(L);
			while (lua_next(L, result)) {
				bh_link_close_ud(L, lua_gettop(L));
				lua_pop(L, 1);
			}
			return lua_error(L);
		}
		if (!lua_isnil(L, -1))
			lua_setfield(L, result, p->name);
		else
			lua_pop(L, 1);
		lua_settop(L, result);
	}
	return 1;
}

/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* -- Globals and fields -------------------------------------------------- */

/* obj:globals(section): the variables of ".data", ".bss", ".rodata", ".data.NAME", ".kconfig". */
static int object_globals(lua_State *L)
{
	const char *sec = luaL_checkstring(L, 2);

	object_check_op(L, 1, "globals");
	bh_globals_push(L, 1, sec, "globals");
	return 1;
}

/*
 * __index: methods first (upvalue 1), then obj.rodata, obj.data, obj.bss
 * (the globals of those sections) and the fields path, name and loaded.
 */
static int object_index(lua_State *L)
{
	struct bh_object *o = object_checkraw(L, 1);
	const char *k;

	lua_pushvalue(L, 2);
	lua_rawget(L, lua_upvalueindex(1));
	if (!lua_isnil(L, -1) || lua_type(L, 2) != LUA_TSTRING)
		return 1;
	k = lua_tostring(L, 2);
	if (!strcmp(k, "rodata") || !strcmp(k, "data") || !strcmp(k, "bss")) {
		char sec[16];

		snprintf(sec, sizeof(sec), ".%s", k);
		if (!o->obj) {
			/* no position: this is a field read, not a call */
			lua_pushfstring(L, "%s object '%s': object is closed", k,
					o->path ? o->path : "?");
			return lua_error(L);
		}
		bh_globals_push(L, 1, sec, k);
	} else if (!strcmp(k, "path")) {
		lua_pushstring(L, o->path);
	} else if (!strcmp(k, "name")) {
		if (o->obj)
			lua_pushstring(L, bpf_object__name(o->obj));
		else
			lua_pushnil(L);
	} else if (!strcmp(k, "loaded")) {
		lua_pushboolean(L, o->obj && o->loaded);
	} else {
		lua_pushnil(L);
	}
	return 1;
}

static const luaL_Reg object_meta[] = {
	{ "__gc", object_gc },
	{ "__tostring", object_tostring },
#if LUA_VERSION_NUM >= 504
	{ "__close", object_gc },
#endif
	{ NULL, NULL },
};

static const luaL_Reg object_methods[] = {
	{ "load", object_load },
	{ "attach", object_attach },
	{ "get_map", object_get_map },
	{ "maps", object_maps },
	{ "program", object_program },
	{ "type", object_type },
	{ "programs", object_programs },
	{ "globals", object_globals },
	{ "close", object_close },
	{ NULL, NULL },
};

static const luaL_Reg object_funcs[] = {
	{ "open", l_open },
	{ "open_mem", l_open_mem },
	{ "load", l_load },
	{ NULL, NULL },
};

void bh_object_init(lua_State *L)
{
	bh_newmetatable(L, BH_OBJECT_MT, object_meta, NULL);
	lua_newtable(L);
	bh_setfuncs(L, object_methods, 0);
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, "__methods");
	lua_pushcclosure(L, object_index, 1);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	luaL_newmetatable(L, "bpfhost.logbufs");
	lua_pushcfunction(L, logbufs_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);
	bh_globals_init(L);
	bh_setfuncs(L, object_funcs, 0);
}
