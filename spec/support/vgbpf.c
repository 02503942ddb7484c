/*
 * vgbpf.c: preloaded into luajit under valgrind by make check (never part
 * of bpfhost). memcheck does not know what the kernel writes through
 * pointers inside bpf()'s attr for some commands: it leaves the map batch
 * commands' keys and values, and the buffers that BPF_OBJ_GET_INFO_BY_FD
 * fills behind the info struct (a BTF blob, a program's map ids, a link's
 * names), undefined, and every use of them is then reported. This wraps
 * libc's syscall() (which libbpf calls for bpf()) and, after the real call,
 * tells memcheck what the kernel wrote. It only marks memory defined; it
 * changes no argument and no result.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/bpf.h>
#include <valgrind/memcheck.h>

long syscall(long nr, ...);

static long (*real_syscall)(long, ...);

#define PTR(x) ((void *)(uintptr_t)(x))

static long raw_bpf(int cmd, union bpf_attr *attr, unsigned size)
{
	return real_syscall(__NR_bpf, cmd, attr, size);
}

/* What an fd is, from /proc/self/fdinfo: 'm' map, 'p' prog, 'l' link, 'b' btf, or 0. */
static int fd_kind(int fd)
{
	char path[64], buf[512];
	int f, n;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = (int)real_syscall(__NR_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return 0;
	n = (int)real_syscall(__NR_read, f, buf, sizeof(buf) - 1);
	real_syscall(__NR_close, f);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if (strstr(buf, "map_type:"))
		return 'm';
	if (strstr(buf, "link_type:"))
		return 'l';
	if (strstr(buf, "prog_type:"))
		return 'p';
	if (strstr(buf, "btf_id:"))
		return 'b';
	return 0;
}

/* key and value sizes of the map behind fd, the value for all CPUs. */
static int map_sizes(int fd, uint32_t *ksz, size_t *vsz)
{
	union bpf_attr a;
	struct bpf_map_info mi;
	long ncpu;

	memset(&a, 0, sizeof(a));
	memset(&mi, 0, sizeof(mi));
	a.info.bpf_fd = (uint32_t)fd;
	a.info.info_len = sizeof(mi);
	a.info.info = (uint64_t)(uintptr_t)&mi;
	if (raw_bpf(BPF_OBJ_GET_INFO_BY_FD, &a, sizeof(a)))
		return -1;
	VALGRIND_MAKE_MEM_DEFINED(&mi, sizeof(mi));
	*ksz = mi.key_size;
	*vsz = mi.value_size;
	switch (mi.type) {
	case BPF_MAP_TYPE_PERCPU_HASH:
	case BPF_MAP_TYPE_PERCPU_ARRAY:
	case BPF_MAP_TYPE_LRU_PERCPU_HASH:
	case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
		ncpu = sysconf(_SC_NPROCESSORS_CONF);
		*vsz = ((*vsz + 7) & ~(size_t)7) * (size_t)(ncpu > 0 ? ncpu : 1);
		break;
	}
	return 0;
}

static void after_info(union bpf_attr *attr)
{
	int kind = fd_kind((int)attr->info.bpf_fd);
	void *info = PTR(attr->info.info);

	if (!info)
		return;
	if (kind == 'b') {
		struct bpf_btf_info *b = info;

		if (b->btf && attr->info.info_len >= offsetof(struct bpf_btf_info, id))
			VALGRIND_MAKE_MEM_DEFINED(PTR(b->btf), b->btf_size);
		if (b->name && b->name_len)
			VALGRIND_MAKE_MEM_DEFINED(PTR(b->name), b->name_len);
	} else if (kind == 'p') {
		struct bpf_prog_info *p = info;

		if (p->map_ids)
			VALGRIND_MAKE_MEM_DEFINED(PTR(p->map_ids), (size_t)p->nr_map_ids * 4);
		if (p->xlated_prog_insns)
			VALGRIND_MAKE_MEM_DEFINED(PTR(p->xlated_prog_insns), p->xlated_prog_len);
		if (p->jited_prog_insns)
			VALGRIND_MAKE_MEM_DEFINED(PTR(p->jited_prog_insns), p->jited_prog_len);
	} else if (kind == 'l') {
		struct bpf_link_info *l = info;

		if (l->type == BPF_LINK_TYPE_RAW_TRACEPOINT && l->raw_tracepoint.tp_name)
			VALGRIND_MAKE_MEM_DEFINED(PTR(l->raw_tracepoint.tp_name),
						  l->raw_tracepoint.tp_name_len);
		if (l->type == BPF_LINK_TYPE_ITER && l->iter.target_name)
			VALGRIND_MAKE_MEM_DEFINED(PTR(l->iter.target_name), l->iter.target_name_len);
	}
}

static void after_batch(union bpf_attr *attr)
{
	uint32_t ksz;
	size_t vsz;

	if (map_sizes((int)attr->batch.map_fd, &ksz, &vsz))
		return;
	if (attr->batch.keys)
		VALGRIND_MAKE_MEM_DEFINED(PTR(attr->batch.keys), (size_t)attr->batch.count * ksz);
	if (attr->batch.values)
		VALGRIND_MAKE_MEM_DEFINED(PTR(attr->batch.values),
					  (size_t)attr->batch.count * vsz);
	/* the cursor: a bucket number (hash) or a key (array); at most a key's size */
	if (attr->batch.out_batch)
		VALGRIND_MAKE_MEM_DEFINED(PTR(attr->batch.out_batch), ksz > 8 ? ksz : 8);
}

long syscall(long nr, ...)
{
	va_list ap;
	long a[6], ret;
	int i, err;

	va_start(ap, nr);
	for (i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (!real_syscall)
		real_syscall = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
	ret = real_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
	err = errno;
	if (nr == __NR_bpf && a[1]) {
		union bpf_attr *attr = PTR(a[1]);

		switch ((int)a[0]) {
		case BPF_OBJ_GET_INFO_BY_FD:
			if (ret == 0)
				after_info(attr);
			break;
		case BPF_MAP_LOOKUP_BATCH:
		case BPF_MAP_LOOKUP_AND_DELETE_BATCH:
			/* also on ENOENT (the last chunk) and ENOSPC: count says how many */
			after_batch(attr);
			break;
		}
	}
	errno = err;
	return ret;
}
