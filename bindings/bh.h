/* bh.h: the only internal header of bpfhost; never installed. */
#ifndef BH_H
#define BH_H

#include <stddef.h>
#include <stdint.h>
#include <signal.h>

#include <lua.h>
#include <lauxlib.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>

#ifndef BH_VERSION
#define BH_VERSION "0.0.0"
#endif

#define BH_API    __attribute__((visibility("default")))
#define BH_LOCAL  __attribute__((visibility("hidden")))
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* -- Metatable names ----------------------------------------------------- */

#define BH_OBJECT_MT "bpfhost.object"
#define BH_MAP_MT    "bpfhost.map"
#define BH_PROG_MT   "bpfhost.prog"
#define BH_LINK_MT   "bpfhost.link"
#define BH_TYPE_MT   "bpfhost.type"
#define BH_ERROR_MT  "bpfhost.error"
#define BH_EXPORTER_MT "bpfhost.exporter"
#define BH_RINGBUF_MT      "bpfhost.ringbuf"
#define BH_USER_RINGBUF_MT "bpfhost.user_ringbuf"
#define BH_PERFBUF_MT      "bpfhost.perfbuf"

/* -- Lua 5.1 / 5.4 ------------------------------------------------------- */

/*
 * Every bpfhost userdata has one uservalue: a table. Children keep their
 * parent there (STYLE "Lifetime" 2); objects keep their links and handles.
 */
#if LUA_VERSION_NUM >= 504
#define bh_newud(L, sz) lua_newuserdatauv(L, (sz), 1)
#define bh_getuv(L, i)  lua_getiuservalue(L, (i), 1)
#define bh_setuv(L, i)  lua_setiuservalue(L, (i), 1)
#define bh_rawlen(L, i) lua_rawlen(L, (i))
#else
#define bh_newud(L, sz) lua_newuserdata(L, (sz))
#define bh_getuv(L, i)  lua_getfenv(L, (i))
#define bh_setuv(L, i)  lua_setfenv(L, (i))
#define bh_rawlen(L, i) lua_objlen(L, (i))
#endif

#if LUA_VERSION_NUM < 502
#define BH_LUAJIT 1
#endif

/*
 * Scoped state: what a C function must undo on every way out, errors
 * included (signal handlers, busy counts, a half-made ring). LuaJIT raises
 * by unwinding C frames with the C ABI's unwinder, so a cleanup attribute
 * runs on the way (the units using one are built with -fexceptions). Lua
 * 5.4's lua_error longjmps and runs none: there the state lives in a
 * to-be-closed userdata pushed on the stack, whose __close runs fn when the
 * function returns or an error passes (a message handler still sees the
 * stack as it was). BH_SCOPE(T, var, fn) declares T *var, zeroed, with fn
 * its cleanup; under 5.4 it takes one stack slot, so place it after any
 * lua_settop that would drop it. BH_SCOPE_END(var) runs fn at once under
 * 5.4 and drops the slot and everything above it; LuaJIT runs fn when var
 * goes out of scope, so use it right before returning.
 */
#ifdef BH_LUAJIT
#define BH_SCOPE(T, var, fn) \
	T var##_scope __attribute__((cleanup(fn))) = { 0 }; \
	T *var = &var##_scope
#define BH_SCOPE_END(var) ((void)0)
#else
BH_LOCAL void *bh_scope_push(lua_State *L, size_t size, void (*fn)(void *));
#define BH_SCOPE(T, var, fn) \
	int var##_slot __attribute__((unused)) = lua_gettop(L) + 1; \
	T *var = bh_scope_push(L, sizeof(T), (void (*)(void *))(fn))
#define BH_SCOPE_END(var) lua_settop(L, var##_slot - 1)
#endif

/* -- Payloads ------------------------------------------------------------ */

struct bh_type;

struct bh_object {
	struct bpf_object *obj; /* NULL once closed */
	int loaded;
	int busy;               /* > 0 while one of its buffers is polling */
	char *path;             /* for messages */
	size_t log_size;        /* first size of each program's verifier log buffer */
};

#define BH_MAP_MAGIC 0x62686d70u

/*
 * A map handle. Its metatable is its own (so that m.name and friends are
 * plain table fields and m:lookup resolves without a C __index), so the hot
 * path recognises a map by size and magic instead of by metatable.
 * bindings/lua/mapops.lua mirrors this struct for LuaJIT's FFI (checked by
 * size only): change them together.
 */
struct bh_map {
	uint32_t magic;
	int fd;                    /* -1 until ready, and once closed */
	int owns_fd;               /* maps not borrowed from an object */
	int closed;
	struct bpf_map *map;       /* borrowed from the parent object, or NULL */
	struct bh_object *parent;  /* parent payload (kept alive by the uservalue) */
	uint32_t type, key_size, value_size, max_entries, map_flags;
	uint32_t value_bufsz;      /* value_size, or round_up(value_size, 8) * ncpus */
	int ncpus;                 /* per-CPU maps: possible CPUs; 0 otherwise */
	struct bh_type *ktype;     /* codec plans, anchored in the uservalue */
	struct bh_type *vtype;
	unsigned char *kbuf;       /* scratch buffers, sized when the map is ready */
	unsigned char *vbuf;
	unsigned char *kbuf2;
	unsigned special;          /* BH_MS_* for map types that are not plain key/value */
	char *pin_path;            /* where m:pin() put it (maps without an object) */
	char name[BPF_OBJ_NAME_LEN];
	int fast;                  /* read by bindings/lua/mapops.lua: see map_fast_code() */
};

#define BH_MS_KEYLESS  0x01  /* queue, stack, bloom_filter: push/pop/peek/contains */
#define BH_MS_EVENTS   0x02  /* ringbuf, user_ringbuf, perf_event_array */
#define BH_MS_FDMAP    0x04  /* values: map handles or fds in, map ids out */
#define BH_MS_FDPROG   0x08  /* values: program handles or fds in, program ids out */
#define BH_MS_ARRAY    0x10  /* keys are indexes below max_entries */
#define BH_MS_NODELETE 0x20  /* array, percpu_array: elements cannot be deleted */
#define BH_MS_LPM      0x40  /* lpm_trie: "10.0.0.0/8" keys */
#define BH_MS_BLOOM    0x80

struct bh_prog {
	struct bpf_program *prog;  /* borrowed from the parent object; NULL when pinned */
	struct bh_object *parent;  /* NULL: opened from a pin (bpf.open_pinned) */
	int fd;                    /* pinned: its own fd, -1 once closed; else -1 */
	uint32_t type;             /* pinned: enum bpf_prog_type */
	char name[64];
};

/* What a link handle owns (link.c): a libbpf link, a bare kernel link fd, or a netlink attachment. */
enum { BH_LINK_NONE, BH_LINK_LIBBPF, BH_LINK_FD, BH_LINK_TC, BH_LINK_XDP };

struct bh_link {
	struct bpf_link *link;     /* BH_LINK_LIBBPF: owned; NULL once closed */
	char name[64];             /* program name, for messages */
	char kind[24];             /* "tracepoint", "raw_tp", ... */
	int impl;                  /* BH_LINK_*; BH_LINK_NONE once closed */
	int fd;                    /* BH_LINK_FD: the link; BH_LINK_XDP: a dup of the program */
	int ifindex;               /* tc, xdp */
	uint32_t flags;            /* xdp: mode flags; tc: attach point */
	uint32_t handle, priority; /* tc filter */
	int qref;                  /* tc: holds a reference to a clsact qdisc that attach_tc made */
	int owner;                 /* pid that attached: only it detaches at exit */
	struct bh_link *next;      /* netlink attachments, detached at exit */
};

/* -- Codec (codec.c) ----------------------------------------------------- */

enum bh_kind {
	BH_K_RAW,    /* no type: exact-size bytes, or an integer for sizes 1/2/4/8 */
	BH_K_INT,    /* 1, 2, 4, 8 bytes, signed or not; also pointers */
	BH_K_BOOL,
	BH_K_ENUM,
	BH_K_FLOAT,  /* 4 or 8 bytes */
	BH_K_CHARS,  /* char[N]: string, NUL-padded */
	BH_K_BYTES,  /* unsigned char[N]: exact N-byte string */
	BH_K_ARRAY,
	BH_K_STRUCT,
	BH_K_UNION,
};

struct bh_plan;

struct bh_field {
	const char *name;
	struct bh_plan *plan;
	uint32_t off;        /* byte offset of the storage unit */
	uint16_t bit_off;    /* bitfields: offset in bits from off */
	uint16_t bit_size;   /* 0 unless a bitfield */
	int group;           /* the innermost (flattened) union holding it: 1..ngroups, or 0 */
	int member;          /* which member of that union it belongs to, from 1 */
};

/* A union among a struct's flattened fields; an anonymous union can sit in another's member. */
struct bh_group {
	int parent;          /* the enclosing union's group, or 0 */
	int member;          /* the member of the parent union this one sits in */
};

struct bh_enumval {
	const char *name;
	int64_t val;
};

struct bh_plan {
	enum bh_kind kind;
	uint32_t size;
	int is_signed;
	uint32_t count;            /* array elements, fields or enumerators */
	struct bh_plan *elem;      /* arrays */
	struct bh_field *fields;   /* struct, union (flattened) */
	struct bh_enumval *enums;
	int ngroups;
	struct bh_group *groups;   /* [1..ngroups] */
	unsigned flags;            /* BH_PLAN_* */
	int names_ref;             /* registry ref: the field names as Lua strings, or 0 */
	int names_base;            /* fields[i]'s name is at names_base + i + 1 in it */
	const char *cname;         /* C spelling for messages: "struct stats" */
};

/* An 8-byte ENUM from a compiler that cut its values to 32 bits: names are unusable. */
#define BH_PLAN_ENUM_CUT 0x01
/* The bytes of {raw = true} on a map that may have BTF (not a map without it). */
#define BH_PLAN_RAW_OPT 0x02

/* A compiled type: the plan tree and the arena that holds it. */
struct bh_type {
	struct bh_plan *root;
	char *decl;                /* C declaration, for tostring */
	void *arena;
	int names_ref;             /* released by __gc (see bh_plan.names_ref) */
};

/* Where an encode or decode is happening, for error messages. */
struct bh_cctx {
	lua_State *L;
	const char *op;        /* "update" */
	const char *what;      /* "map" */
	const char *name;      /* "counts" */
	const char *root;      /* "key", "value" */
	int depth;
	struct {
		const char *name;  /* field name, or NULL for an index */
		long idx;
	} seg[32];
};

BH_LOCAL struct bh_type *bh_type_new(lua_State *L, const struct btf *btf, uint32_t type_id);
BH_LOCAL struct bh_type *bh_type_raw(lua_State *L, uint32_t size);
BH_LOCAL struct bh_type *bh_type_check(lua_State *L, int idx);
BH_LOCAL struct bh_type *bh_type_from_spec(lua_State *L, const struct btf *btf, const char *spec,
					   const char *fn);
BH_LOCAL const struct btf *bh_vmlinux_btf(lua_State *L, const char *op);
BH_LOCAL struct btf **bh_btf_hold(lua_State *L, struct btf *btf);
BH_LOCAL int bh_type_to_btf(struct btf *btf, const struct bh_type *t);
BH_LOCAL void bh_encode(struct bh_cctx *c, const struct bh_plan *p, int idx, void *dst);
BH_LOCAL void bh_decode(struct bh_cctx *c, const struct bh_plan *p, const void *src);
BH_LOCAL void bh_encode_percpu(struct bh_cctx *c, const struct bh_plan *p, int idx, void *dst,
			       int ncpus);
BH_LOCAL void bh_decode_percpu(struct bh_cctx *c, const struct bh_plan *p, const void *src,
			       int ncpus);
/*
 * LuaJIT's generated codecs (codec.c, "Generated codecs"): push the FFI
 * declaration "const <type> *", the decoder's or the encoder's Lua source;
 * 0, pushing nothing, for a plan they do not cover.
 */
BH_LOCAL int bh_push_ffi_decl(lua_State *L, const struct bh_plan *p);
BH_LOCAL int bh_push_lua_decoder(lua_State *L, const struct bh_plan *p);
BH_LOCAL int bh_push_lua_encoder(lua_State *L, const struct bh_plan *p);
BH_LOCAL int bh_codec_error(struct bh_cctx *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));
BH_LOCAL void bh_codec_init(lua_State *L);

/* -- Errors (err.c) ------------------------------------------------------ */

BH_LOCAL const char *bh_errname(int err);
/* Does this kernel charge BPF memory to RLIMIT_MEMLOCK (before 5.11)? */
BH_LOCAL int bh_memlock_charged(void);
/*
 * Raise the error object for a refusal by the kernel or libbpf. err is a
 * positive errno. hint and log may be NULL. Never returns.
 */
BH_LOCAL int bh_fail(lua_State *L, const char *op, const char *what, const char *name, int err,
		     const char *hint, const char *log) __attribute__((noreturn));
BH_LOCAL int bh_fail_msg(lua_State *L, const char *op, const char *what, const char *name, int err,
			 const char *reason, const char *hint, const char *log)
	__attribute__((noreturn));
BH_LOCAL void bh_error_push(lua_State *L, const char *op, const char *what, const char *name,
			   int err, const char *reason, const char *hint, const char *log);
BH_LOCAL void bh_err_init(lua_State *L);
BH_LOCAL void bh_log_begin(void);
BH_LOCAL const char *bh_log_end(void);
BH_LOCAL void bh_set_debug(int on);

/* -- Userdata units ------------------------------------------------------ */

BH_LOCAL void bh_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
BH_LOCAL void bh_newmetatable(lua_State *L, const char *name, const luaL_Reg *meta,
			      const luaL_Reg *methods);
BH_LOCAL void *bh_checkud(lua_State *L, int idx, const char *tname);
BH_LOCAL void *bh_testud(lua_State *L, int idx, const char *tname);
/* The type of the value at idx for messages: its metatable's __name, else luaL_typename. */
BH_LOCAL const char *bh_typename(lua_State *L, int idx);
BH_LOCAL int bh_opt_check(lua_State *L, int idx, const char *fn, const char *const known[]);
/*
 * Push n as messages show numbers ("%.14g": 1, 1.5) and return it. Lua 5.4's
 * lua_pushfstring("%f") shows whole numbers as 1.0; LuaJIT's as 1.
 */
BH_LOCAL const char *bh_numstr(lua_State *L, lua_Number n);
BH_LOCAL int bh_opt_bool(lua_State *L, int idx, const char *field, int def);
BH_LOCAL long long bh_fdinfo(int fd, const char *field);

BH_LOCAL struct bh_object *bh_object_check(lua_State *L, int idx);
BH_LOCAL struct bh_map *bh_map_check(lua_State *L, int idx);
/* The map payload at idx, or NULL when it is not a map handle (no readiness check). */
BH_LOCAL struct bh_map *bh_map_testud(lua_State *L, int idx);
BH_LOCAL void bh_check_bpffs(lua_State *L, const char *op, const char *kind, const char *name,
			     const char *path, int is_dir);
BH_LOCAL uint32_t bh_map_flag_names(lua_State *L, const char *s, size_t len, const char *op,
				     const char *name);
BH_LOCAL const char *bh_map_type_name(uint32_t type);
BH_LOCAL struct bh_prog *bh_prog_check(lua_State *L, int idx);

/* Push a map handle for an object's map; the object is at index objidx. */
BH_LOCAL void bh_map_push(lua_State *L, int objidx, struct bpf_map *map);
BH_LOCAL void bh_map_reset(lua_State *L, int idx);
/* Push a handle for the map behind fd (closed with the handle when owns). */
BH_LOCAL void bh_map_push_fd(lua_State *L, int fd, int owns, const char *op);
BH_LOCAL void bh_prog_push(lua_State *L, int objidx, struct bpf_program *prog);
/* Push a link handle owning link; the object it belongs to is at objidx. */
BH_LOCAL void bh_link_push(lua_State *L, int objidx, struct bpf_link *link, const char *name,
			   const char *kind);
BH_LOCAL int bh_link_close_ud(lua_State *L, int idx);
/*
 * Push a link handle taking over what tmpl holds (impl and its fields; name
 * and kind), kept by the object at objidx. If making the handle raises, the
 * attachment is released first. Netlink attachments (tc, xdp without a
 * link) are also detached at exit; for tc, created says that attaching made
 * the interface's clsact qdisc.
 */
BH_LOCAL struct bh_link *bh_link_adopt(lua_State *L, int objidx, const struct bh_link *tmpl,
				       int created);
/* Push the globals view of section (".bss", ".data.x") of the object at objidx. */
BH_LOCAL void bh_globals_push(lua_State *L, int objidx, const char *section, const char *op);
BH_LOCAL void bh_globals_init(lua_State *L);
/* Push table kind ("reuse", "inner", "target") of pre-load settings of the object at objidx. */
BH_LOCAL void bh_object_cfg(lua_State *L, int objidx, const char *kind);
/* Pre-load map methods (mapcfg.c), registered into the map methods table at -1. */
BH_LOCAL void bh_mapcfg_register(lua_State *L);
/* lua_CFunction: attach the program at 1 by SEC(); nil when SEC() names no target. */
BH_LOCAL int bh_prog_attach_pcall(lua_State *L);

BH_LOCAL void bh_object_init(lua_State *L);
BH_LOCAL void bh_map_init(lua_State *L);
BH_LOCAL void bh_prog_init(lua_State *L);
BH_LOCAL void bh_link_init(lua_State *L);
BH_LOCAL void bh_loop_init(lua_State *L);
BH_LOCAL void bh_exporter_init(lua_State *L);
BH_LOCAL void bh_ringbuf_init(lua_State *L);
BH_LOCAL void bh_perfbuf_init(lua_State *L);
BH_LOCAL void bh_lualib_init(lua_State *L);
BH_LOCAL void bh_sys_init(lua_State *L);
BH_LOCAL void bh_gc_init(lua_State *L);
BH_LOCAL void bh_mmap_init(lua_State *L);
/*
 * A program handle for a program fd that belongs to no object (pinned, by
 * id); owns fd. Weak: prog.c provides it.
 */
BH_LOCAL void bh_prog_push_fd(lua_State *L, int fd, const char *path);
BH_LOCAL int bh_prog_fd(const struct bh_prog *p);

/* -- Mounts and signals -------------------------------------------------- */

BH_LOCAL int bh_ensure_tracefs(void);
BH_LOCAL int bh_ensure_bpffs(void);

/*
 * Set by a SIGINT/SIGTERM handler (the host's or the module's own during a
 * wait) to the signal number. Compiled traces ignore Lua hooks, so every
 * wait checks this flag as well.
 */
extern BH_LOCAL volatile sig_atomic_t bh_interrupted;
/* The host's "interrupted!" hook, so a wait that handles the signal can disarm it. */
extern BH_LOCAL lua_Hook bh_interrupt_hook;
BH_LOCAL void bh_interrupt_consume(lua_State *L);

/* -- Waiting and event sources (loop.c; ringbuf.c, perfbuf.c) ------------ */

struct epoll_event;
struct bh_source;

/*
 * What bpf.poll, bpf.run and every buffer's poll need from a buffer. A
 * buffer payload starts with struct bh_source. begin raises when the buffer
 * is closed or already polling; end undoes begin in C only, since it also
 * runs while a handler's error unwinds; dispatch hands what is ready now to
 * the handler at hidx without waiting (at most about budget records) and
 * sets *stop when the handler returned false or closed the buffer.
 */
struct bh_source_ops {
	int (*fd)(struct bh_source *s);     /* readable (EPOLLIN) when records wait */
	int (*queued)(struct bh_source *s); /* records copied out, not handed over yet */
	void (*begin)(lua_State *L, struct bh_source *s, const char *op);
	void (*end)(struct bh_source *s);
	long (*dispatch)(lua_State *L, int idx, struct bh_source *s, int hidx, long budget,
			 int *stop);
};

struct bh_source {
	const struct bh_source_ops *ops;
};

/* Our SIGINT/SIGTERM handler (it only sets bh_interrupted) while installed. */
struct bh_guard {
	struct sigaction oint, oterm;
	int on;
};

BH_LOCAL void bh_guard_begin(struct bh_guard *g);
BH_LOCAL void bh_guard_end(struct bh_guard *g);
/* > 0 events, 0 time up (or another signal), -1 SIGINT/SIGTERM, -2 failure (errno). */
BH_LOCAL int bh_epoll_wait(int epfd, struct epoll_event *ev, int maxev, int timeout_ms);
BH_LOCAL void bh_raise_interrupted(lua_State *L, const char *op) __attribute__((noreturn));
/* CLOCK_MONOTONIC in seconds. */
BH_LOCAL double bh_mono_now(void);
/* Milliseconds from now until end (rounded up, so a wait never ends early; 0 when passed; -1 for INFINITY). */
BH_LOCAL int bh_ms_left(double end);
/*
 * Wait up to ms (< 0: no limit) for epfd to be readable, with our SIGINT/
 * SIGTERM handler in place: 1 when it is, 0 once the time is up (a signal
 * other than those waits out the rest). Raises op's "interrupted" error, or
 * the failure of epoll naming kind and name.
 */
BH_LOCAL int bh_wait_readable(lua_State *L, int epfd, int ms, const char *op, const char *kind,
			      const char *name);
BH_LOCAL struct bh_source *bh_source_test(lua_State *L, int idx);
BH_LOCAL long bh_source_poll(lua_State *L, int idx, int hidx, int timeout_ms, const char *fn);
/* A timeout argument in milliseconds; nil or -1: no limit (returns -1). */
BH_LOCAL int bh_check_ms(lua_State *L, int idx, const char *fn);

BH_API int luaopen_bpfhost(lua_State *L);

#endif
