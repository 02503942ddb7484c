/* features.c: privileges at start-up, and the --features report. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <linux/capability.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "bh.h"
#include "host.h"

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

#define BPF_FS_MAGIC_     0xcafe4a11
#define TRACEFS_MAGIC_    0x74726163
#define DEBUGFS_MAGIC_    0x64626720
#define CGROUP2_MAGIC_    0x63677270

/* ------------------------------------------------------------------------ */
/* -- Privileges ---------------------------------------------------------- */

/* The effective capability set, two words as capget(2) gives them. */
static int effective_caps(uint32_t eff[2])
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &h, d))
		return -1;
	eff[0] = d[0].effective;
	eff[1] = d[1].effective;
	return 0;
}

static int has_cap(const uint32_t eff[2], int cap)
{
	return !!(eff[cap >> 5] & (1u << (cap & 31)));
}

/*
 * Can this process use bpf()? CAP_BPF, or CAP_SYS_ADMIN (which covers it).
 * When not, *msg says what is missing, in one line.
 */
int host_privileged(const char **msg)
{
	uint32_t eff[2];

	if (effective_caps(eff)) {
		*msg = "cannot read this process's capabilities (capget failed)";
		return 0;
	}
	if (has_cap(eff, CAP_BPF) || has_cap(eff, CAP_SYS_ADMIN))
		return 1;
	*msg = "needs root, or CAP_BPF (with CAP_PERFMON for tracing, CAP_NET_ADMIN for "
	       "XDP/tc): this process has neither CAP_BPF nor CAP_SYS_ADMIN";
	return 0;
}

/* ------------------------------------------------------------------------ */
/* -- The report ---------------------------------------------------------- */

/* Words wrapped under a label, with a hanging indent. */
struct wrap {
	int col;
	int first;
};

#define LABEL_W 14

static void wrap_begin(struct wrap *w, const char *label)
{
	printf("%-*s", LABEL_W, label);
	w->col = LABEL_W;
	w->first = 1;
}

static void wrap_word(struct wrap *w, const char *word)
{
	int len = (int)strlen(word);

	if (!w->first && w->col + 1 + len > 78) {
		printf("\n%-*s", LABEL_W, "");
		w->col = LABEL_W;
	} else if (!w->first) {
		putchar(' ');
		w->col++;
	}
	fputs(word, stdout);
	w->col += len;
	w->first = 0;
}

static void wrap_end(struct wrap *w)
{
	(void)w;
	putchar('\n');
}

static const char *fs_at(const char *path, long magic)
{
	struct statfs st;

	if (statfs(path, &st) || (long)st.f_type != magic)
		return NULL;
	return path;
}

static int file_has_word(const char *path, const char *word)
{
	char buf[512];
	FILE *f = fopen(path, "re");
	size_t n;
	char *p;

	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	for (p = strtok(buf, ",\n "); p; p = strtok(NULL, ",\n "))
		if (!strcmp(p, word))
			return 1;
	return 0;
}

static int read_int_file(const char *path, long *v)
{
	FILE *f = fopen(path, "re");
	int ok;

	if (!f)
		return -1;
	ok = fscanf(f, "%ld", v) == 1;
	fclose(f);
	return ok ? 0 : -1;
}

/*
 * One line per probed family: the names supported, then those not. A probe
 * that fails with an error (EPERM without privileges) is "not probed".
 */
static int probe_family(const char *label, int map, int can_probe)
{
	struct wrap w;
	char missing[2048] = "", unknown[2048] = "";
	int t, yes = 0, total = 0, perm = 0;

	wrap_begin(&w, label);
	if (!can_probe) {
		fputs("(not probed: needs CAP_BPF)", stdout);
		wrap_end(&w);
		return -1;
	}
	for (t = 1;; t++) {
		const char *name = map ? libbpf_bpf_map_type_str((enum bpf_map_type)t) :
					 libbpf_bpf_prog_type_str((enum bpf_prog_type)t);
		int r;

		if (!name)
			break;
		/* these attach by BTF id, which libbpf 1.1 cannot probe: see attach_kinds */
		if (!map && (t == BPF_PROG_TYPE_TRACING || t == BPF_PROG_TYPE_LSM ||
			     t == BPF_PROG_TYPE_EXT))
			continue;
		total++;
		r = map ? libbpf_probe_bpf_map_type((enum bpf_map_type)t, NULL) :
			  libbpf_probe_bpf_prog_type((enum bpf_prog_type)t, NULL);
		if (r > 0) {
			wrap_word(&w, name);
			yes++;
		} else if (r == 0) {
			if (strlen(missing) + strlen(name) + 2 < sizeof(missing)) {
				strcat(missing, " ");
				strcat(missing, name);
			}
		} else {
			if (r == -EPERM || r == -EACCES)
				perm++;
			if (strlen(unknown) + strlen(name) + 2 < sizeof(unknown)) {
				strcat(unknown, " ");
				strcat(unknown, name);
			}
		}
	}
	if (perm == total) {
		fputs("(not probed: needs CAP_BPF)", stdout);
		wrap_end(&w);
		return -1;
	}
	wrap_end(&w);
	if (*missing)
		printf("%-*snot supported:%s\n", LABEL_W, "", missing);
	if (*unknown)
		printf("%-*snot probed by libbpf %s:%s\n", LABEL_W, "", libbpf_version_string(),
		       unknown);
	return yes;
}

static int prog_ok(enum bpf_prog_type t)
{
	return libbpf_probe_bpf_prog_type(t, NULL) > 0;
}

/*
 * Programs that attach by BTF id (fentry, iter, lsm): libbpf 1.1's probe
 * does not know them, so load "return 0" against a kernel function the way
 * a real object would. 1 when the kernel takes it.
 */
static int btf_prog_err; /* errno of the last refusal, for the report */

static int btf_prog_ok(const struct btf *vmlinux, enum bpf_prog_type type,
		       enum bpf_attach_type at, const char *const funcs[])
{
	struct bpf_insn insns[2];
	int i, fd;

	btf_prog_err = ENOENT;
	if (!vmlinux)
		return 0;
	memset(insns, 0, sizeof(insns));
	insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = 0 */
	insns[1].code = BPF_JMP | BPF_EXIT;
	for (i = 0; funcs[i]; i++) {
		int id = btf__find_by_name_kind(vmlinux, funcs[i], BTF_KIND_FUNC);
		LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = at);

		if (id <= 0)
			continue;
		opts.attach_btf_id = (uint32_t)id;
		fd = bpf_prog_load(type, NULL, "GPL", insns, 2, &opts);
		if (fd >= 0) {
			close(fd);
			return 1;
		}
		btf_prog_err = errno;
	}
	return 0;
}

static const char *refused(const char *what, int ok)
{
	static char buf[4][96];
	static int n;
	char *b = buf[n++ & 3];

	if (!ok)
		snprintf(b, sizeof(buf[0]), "the kernel refuses %s programs (%s)", what,
			 bh_errname(btf_prog_err));
	return b;
}

/* How programs can be attached here: a program type plus what the kernel exposes. */
static void attach_kinds(int can_probe)
{
	const char *tracefs = fs_at("/sys/kernel/tracing", TRACEFS_MAGIC_);
	int btf = !access("/sys/kernel/btf/vmlinux", R_OK);
	/* the PMU, or tracefs's probe files: what bpfhost's attach needs (prog.c) */
	int kprobe_any = !access("/sys/bus/event_source/devices/kprobe/type", R_OK) ||
			 (tracefs && !access("/sys/kernel/tracing/kprobe_events", F_OK));
	int uprobe_pmu = !access("/sys/bus/event_source/devices/uprobe/type", R_OK);
	int uprobe_any = uprobe_pmu || (tracefs && !access("/sys/kernel/tracing/uprobe_events", F_OK));
	int lsm = file_has_word("/sys/kernel/security/lsm", "bpf");
	int cg2 = fs_at("/sys/fs/cgroup", CGROUP2_MAGIC_) || fs_at("/sys/fs/cgroup/unified",
								   CGROUP2_MAGIC_);
	int fentry, iter, lsm_prog;
	const char *fentry_why, *iter_why, *lsm_why;
	static const char *const fentry_funcs[] = { "bpf_fentry_test1", "do_unlinkat", NULL };
	static const char *const iter_funcs[] = { "bpf_iter_task", NULL };
	static const char *const lsm_funcs[] = { "bpf_lsm_file_open", NULL };
	struct btf *vmlinux = can_probe && btf ? btf__load_vmlinux_btf() : NULL;

	fentry = btf_prog_ok(vmlinux, BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY, fentry_funcs);
	fentry_why = btf ? refused("tracing", fentry) : "needs kernel BTF";
	iter = btf_prog_ok(vmlinux, BPF_PROG_TYPE_TRACING, BPF_TRACE_ITER, iter_funcs);
	iter_why = btf ? refused("iterator", iter) : "needs kernel BTF";
	lsm_prog = btf_prog_ok(vmlinux, BPF_PROG_TYPE_LSM, BPF_LSM_MAC, lsm_funcs);
	if (!lsm_prog)
		lsm_why = btf ? refused("LSM", 0) : "needs kernel BTF";
	else if (lsm < 0)
		lsm_why = "cannot tell whether the bpf LSM is active: securityfs is not mounted";
	else
		lsm_why = "'bpf' is not in /sys/kernel/security/lsm (boot with lsm=...,bpf)";
	struct {
		const char *name;
		int ok;
		const char *why;
	} k[] = {
		{ "tracepoint", prog_ok(BPF_PROG_TYPE_TRACEPOINT), "no tracepoint programs" },
		{ "raw_tp", prog_ok(BPF_PROG_TYPE_RAW_TRACEPOINT), "no raw_tracepoint programs" },
		{ "kprobe", prog_ok(BPF_PROG_TYPE_KPROBE) && kprobe_any,
		  "no kprobe support (CONFIG_KPROBES, CONFIG_KPROBE_EVENTS)" },
		{ "uprobe", prog_ok(BPF_PROG_TYPE_KPROBE) && uprobe_any,
		  "no uprobe PMU (CONFIG_UPROBE_EVENTS)" },
		{ "usdt", prog_ok(BPF_PROG_TYPE_KPROBE) && uprobe_pmu, "no uprobe PMU" },
		{ "fentry/fexit", fentry, fentry_why },
		{ "iter", iter, iter_why },
		{ "lsm", lsm_prog && lsm == 1, lsm_why },
		{ "perf_event", prog_ok(BPF_PROG_TYPE_PERF_EVENT), "no perf_event programs" },
		{ "xdp", prog_ok(BPF_PROG_TYPE_XDP), "no XDP programs" },
		{ "tc", prog_ok(BPF_PROG_TYPE_SCHED_CLS), "no sched_cls programs" },
		{ "cgroup", prog_ok(BPF_PROG_TYPE_CGROUP_SKB) && cg2,
		  "needs cgroup programs and a cgroup v2 mount" },
		{ "struct_ops", prog_ok(BPF_PROG_TYPE_STRUCT_OPS) && btf, "no struct_ops programs" },
	};
	struct wrap w;
	size_t i;
	int missing = 0;

	btf__free(vmlinux);
	wrap_begin(&w, "attach");
	if (!can_probe) {
		fputs("(not probed: needs CAP_BPF)", stdout);
		wrap_end(&w);
		return;
	}
	for (i = 0; i < sizeof(k) / sizeof(k[0]); i++)
		if (k[i].ok)
			wrap_word(&w, k[i].name);
		else
			missing++;
	wrap_end(&w);
	for (i = 0; i < sizeof(k) / sizeof(k[0]); i++)
		if (!k[i].ok)
			printf("%-*sno %s: %s\n", LABEL_W, "", k[i].name, k[i].why);
}

int host_features(void)
{
	struct utsname u;
	struct rlimit rl;
	uint32_t eff[2];
	static const struct {
		int cap;
		const char *name;
	} caps[] = {
		{ CAP_BPF, "CAP_BPF" },
		{ CAP_PERFMON, "CAP_PERFMON" },
		{ CAP_NET_ADMIN, "CAP_NET_ADMIN" },
		{ CAP_SYS_ADMIN, "CAP_SYS_ADMIN" },
	};
	const char *msg, *p;
	struct wrap w;
	long v;
	size_t i;
	int priv;

	if (uname(&u))
		memset(&u, 0, sizeof(u));
	printf("bpfhost %s, libbpf %s, kernel %s %s\n", BH_VERSION, libbpf_version_string(),
	       u.release, u.machine);

	priv = host_privileged(&msg);
	wrap_begin(&w, "privileges");
	wrap_word(&w, geteuid() == 0 ? "uid 0;" : "not root;");
	if (effective_caps(eff)) {
		wrap_word(&w, "capabilities unknown");
	} else {
		int any = 0;

		for (i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
			if (has_cap(eff, caps[i].cap)) {
				wrap_word(&w, caps[i].name);
				any = 1;
			}
		}
		if (!any)
			wrap_word(&w, "no BPF capabilities");
	}
	if (!priv)
		wrap_word(&w, "(bpf() refused: run as root or with CAP_BPF)");
	wrap_end(&w);
	wrap_begin(&w, "");
	if (!getrlimit(RLIMIT_MEMLOCK, &rl)) {
		char b[64];

		if (rl.rlim_cur == RLIM_INFINITY)
			snprintf(b, sizeof(b), "memlock unlimited;");
		else
			snprintf(b, sizeof(b), "memlock %llu KiB;",
				 (unsigned long long)rl.rlim_cur / 1024);
		wrap_word(&w, b);
	}
	if (!read_int_file("/proc/sys/kernel/unprivileged_bpf_disabled", &v)) {
		char b[64];

		snprintf(b, sizeof(b), "unprivileged_bpf_disabled=%ld", v);
		wrap_word(&w, b);
	}
	wrap_end(&w);

	printf("%-*s%s\n", LABEL_W, "BTF",
	       !access("/sys/kernel/btf/vmlinux", R_OK) ?
		       "/sys/kernel/btf/vmlinux" :
		       "missing (no /sys/kernel/btf/vmlinux: CONFIG_DEBUG_INFO_BTF is off)");
	p = fs_at("/sys/fs/bpf", BPF_FS_MAGIC_);
	printf("%-*s%s\n", LABEL_W, "bpffs",
	       p ? "mounted at /sys/fs/bpf" : "not mounted (bpfhost mounts it when pinning)");
	p = fs_at("/sys/kernel/tracing", TRACEFS_MAGIC_);
	if (!p && fs_at("/sys/kernel/debug/tracing", TRACEFS_MAGIC_))
		p = "/sys/kernel/debug/tracing";
	printf("%-*s%s%s\n", LABEL_W, "tracefs", p ? "mounted at " : "",
	       p ? p : "not mounted (bpfhost mounts it when attaching)");

	/* without privileges libbpf's probes fail as if nothing were supported */
	probe_family("map types", 1, priv);
	probe_family("prog types", 0, priv);
	attach_kinds(priv);
	fflush(stdout);
	return 0;
}
