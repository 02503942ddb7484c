/* err.c: the error object, errno names, and libbpf print capture. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "bh.h"

/* ------------------------------------------------------------------------ */
/* -- errno names --------------------------------------------------------- */

/* Own table: strerrorname_np needs glibc 2.32. */
static const struct {
	int err;
	const char *name;
} errnames[] = {
#define E(x) { x, #x }
	E(EPERM),   E(ENOENT),    E(ESRCH),     E(EINTR),     E(EIO),       E(ENXIO),
	E(E2BIG),   E(ENOEXEC),   E(EBADF),     E(ECHILD),    E(EAGAIN),    E(ENOMEM),
	E(EACCES),  E(EFAULT),    E(EBUSY),     E(EEXIST),    E(EXDEV),     E(ENODEV),
	E(ENOTDIR), E(EISDIR),    E(EINVAL),    E(ENFILE),    E(EMFILE),    E(ENOTTY),
	E(EFBIG),   E(ENOSPC),    E(ESPIPE),    E(EROFS),     E(EMLINK),    E(EPIPE),
	E(EDOM),    E(ERANGE),    E(EDEADLK),   E(ENAMETOOLONG), E(ENOLCK), E(ENOSYS),
	E(ENOTEMPTY), E(ELOOP),   E(ENOMSG),    E(EIDRM),     E(ENODATA),   E(ETIME),
	E(ENOLINK), E(EPROTO),    E(EBADMSG),   E(EOVERFLOW), E(EILSEQ),    E(EUSERS),
	E(ENOTSOCK), E(EMSGSIZE), E(EPROTOTYPE), E(ENOPROTOOPT), E(EPROTONOSUPPORT),
	E(EOPNOTSUPP), E(EAFNOSUPPORT), E(EADDRINUSE), E(EADDRNOTAVAIL), E(ENETDOWN),
	E(ENETUNREACH), E(ECONNABORTED), E(ECONNRESET), E(ENOBUFS), E(EISCONN),
	E(ENOTCONN), E(ETIMEDOUT), E(ECONNREFUSED), E(EHOSTUNREACH), E(EALREADY),
	E(EINPROGRESS), E(ESTALE), E(EDQUOT), E(ECANCELED), E(EKEYREJECTED),
	E(EOWNERDEAD), E(ENOTRECOVERABLE), E(ERFKILL), E(EHWPOISON),
#undef E
	/* kernel-internal values that bpf() can leak */
	{ 512, "ERESTARTSYS" }, { 524, "ENOTSUPP" }, { 525, "ETOOSMALL" },
	/* libbpf's own (enum libbpf_errno), from a file it cannot read as an object */
#define E(x) { LIBBPF_ERRNO__##x, "LIBBPF_ERRNO__" #x }
	E(LIBELF),  E(FORMAT),    E(KVERSION),  E(ENDIAN),    E(INTERNAL),  E(RELOC),
	E(LOAD),    E(VERIFY),    E(PROG2BIG),  E(KVER),      E(PROGTYPE),  E(WRNGPID),
	E(INVSEQ),  E(NLPARSE),
#undef E
};

const char *bh_errname(int err)
{
	size_t i;

	if (err < 0)
		err = -err;
	for (i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (errnames[i].err == err)
			return errnames[i].name;
	return "EUNKNOWN";
}

/* What an errno means for a given operation, in words a user can act on. */
static const char *reason_for(const char *op, const char *what, int err)
{
	int map = what && !strcmp(what, "map");

	switch (err) {
	case E2BIG:
		if (map && op && !strcmp(op, "update"))
			return "map is full";
		if (map)
			return "key or value too big, or map is full";
		break;
	case ENOENT:
		if (map)
			return "no such key";
		break;
	case EEXIST:
		if (map)
			return "key already exists";
		break;
	case EPERM:
		return "operation not permitted";
	case EACCES:
		return "permission denied";
	case EOPNOTSUPP:
		return "operation not supported";
	case EINVAL:
		return "invalid argument";
	case ENOSPC:
		return "no space left (buffer too small)";
	case ENOMEM:
		return "out of memory";
	case 524:
		return "operation not supported by this kernel";
	}
	return NULL;
}

/*
 * Does this kernel charge BPF memory to RLIMIT_MEMLOCK? Before 5.11 it did;
 * since, maps and programs are charged to the memory cgroup and the rlimit
 * plays no part, so a hint about it would mislead.
 */
int bh_memlock_charged(void)
{
	static int charged = -1;
	struct utsname u;
	int major = 0, minor = 0;

	if (charged < 0) {
		charged = !uname(&u) && sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
			  (major < 5 || (major == 5 && minor < 11));
	}
	return charged;
}

static const char *hint_for(const char *op, const char *what, int err)
{
	int map = what && !strcmp(what, "map");

	switch (err) {
	case EPERM:
	case EACCES:
		return "bpfhost needs root, or CAP_BPF and CAP_PERFMON (CAP_NET_ADMIN for XDP/tc)";
	case E2BIG:
		if (map && op && !strcmp(op, "update"))
			return "delete entries first, or raise max_entries before load";
		break;
	case ENOMEM:
		if (bh_memlock_charged())
			return "the kernel could not allocate the memory; check RLIMIT_MEMLOCK "
			       "(ulimit -l) and max_entries";
		return "the kernel could not allocate the memory: lower max_entries or the "
		       "value size, or raise the memory cgroup's limit (BPF memory is charged "
		       "to it)";
	}
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* -- The error object ---------------------------------------------------- */

static void setfield_str(lua_State *L, const char *k, const char *v)
{
	if (!v)
		return;
	lua_pushstring(L, v);
	lua_setfield(L, -2, k);
}

/* Push the error object (see bh_fail_msg) without raising it. */
void bh_error_push(lua_State *L, const char *op, const char *what, const char *name, int err,
		   const char *reason, const char *hint, const char *log)
{
	char lbuf[128];
	const char *code;

	if (err < 0)
		err = -err;
	code = bh_errname(err);
	if (!reason)
		reason = reason_for(op, what, err);
	if (!reason && err >= __LIBBPF_ERRNO__START && err < __LIBBPF_ERRNO__END &&
	    !libbpf_strerror(err, lbuf, sizeof(lbuf)))
		reason = lbuf;
	if (!reason)
		reason = strerror(err);
	if (!hint)
		hint = hint_for(op, what, err);

	lua_createtable(L, 0, 8);
	setfield_str(L, "op", op);
	setfield_str(L, "name", name);
	setfield_str(L, "code", code);
	lua_pushinteger(L, err);
	lua_setfield(L, -2, "errno");
	if (name && what)
		lua_pushfstring(L, "%s %s '%s': %s (%s)", op, what, name, reason, code);
	else
		lua_pushfstring(L, "%s: %s (%s)", op, reason, code);
	lua_setfield(L, -2, "message");
	setfield_str(L, "hint", hint);
	setfield_str(L, "log", log);
	luaL_getmetatable(L, BH_ERROR_MT);
	lua_setmetatable(L, -2);
}

int bh_fail_msg(lua_State *L, const char *op, const char *what, const char *name, int err,
		const char *reason, const char *hint, const char *log)
{
	bh_error_push(L, op, what, name, err, reason, hint, log);
	lua_error(L);
	abort(); /* not reached */
}

int bh_fail(lua_State *L, const char *op, const char *what, const char *name, int err,
	    const char *hint, const char *log)
{
	bh_fail_msg(L, op, what, name, err, NULL, hint, log);
}

static int error_tostring(lua_State *L)
{
	lua_getfield(L, 1, "message");
	if (!lua_isstring(L, -1))
		lua_pushliteral(L, "bpfhost error");
	return 1;
}

/* ------------------------------------------------------------------------ */
/* -- libbpf print capture ------------------------------------------------ */

/*
 * libbpf's messages are captured, not discarded: with debug on they go to
 * stderr; between bh_log_begin and bh_log_end (a load) warnings are kept so
 * that a failed load can carry the whole verifier log.
 */
static int debug_on;
static int capturing;
static char *cap_buf;
static size_t cap_len, cap_cap;

void bh_set_debug(int on)
{
	debug_on = on;
}

static void cap_append(const char *s, size_t n)
{
	if (cap_len + n + 1 > cap_cap) {
		size_t nc = cap_cap ? cap_cap : 4096;
		char *nb;

		while (nc < cap_len + n + 1)
			nc *= 2;
		nb = realloc(cap_buf, nc);
		if (!nb)
			return;
		cap_buf = nb;
		cap_cap = nc;
	}
	memcpy(cap_buf + cap_len, s, n);
	cap_len += n;
	cap_buf[cap_len] = '\0';
}

static int print_fn(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char small[1024];
	char *s = small;
	int n;
	va_list ap2;

	va_copy(ap2, ap);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	if (n < 0) {
		va_end(ap2);
		return 0;
	}
	if ((size_t)n >= sizeof(small)) {
		s = malloc((size_t)n + 1);
		if (!s) {
			va_end(ap2);
			return 0;
		}
		vsnprintf(s, (size_t)n + 1, fmt, ap2);
	}
	va_end(ap2);
	if (debug_on)
		fputs(s, stderr);
	if (capturing && level <= LIBBPF_WARN)
		cap_append(s, (size_t)n);
	if (s != small)
		free(s);
	return n;
}

void bh_log_begin(void)
{
	capturing = 1;
	cap_len = 0;
	if (cap_buf)
		cap_buf[0] = '\0';
}

/* The captured text, valid until the next bh_log_begin. */
const char *bh_log_end(void)
{
	capturing = 0;
	return cap_len ? cap_buf : NULL;
}

/*
 * The capture buffer outlives every Lua state, but not the module: Lua
 * unloads it (dlclose) when the last state that required it closes.
 */
__attribute__((destructor)) static void cap_free(void)
{
	free(cap_buf);
	cap_buf = NULL;
	cap_len = cap_cap = 0;
}

void bh_err_init(lua_State *L)
{
	luaL_newmetatable(L, BH_ERROR_MT);
	lua_pushcfunction(L, error_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushliteral(L, BH_ERROR_MT);
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);
	libbpf_set_print(print_fn);
}
