// SPDX-License-Identifier: GPL-2.0
/*
 * Fixture for the map operation specs (spec/map*_spec.lua) and the map
 * benchmarks: maps of every type an object can declare, and programs that
 * write them while user space reads. Every program fires on getpgid() and
 * only for the process whose tgid the spec wrote into cfg[slot], so specs
 * trigger them with ffi getpgid(0) (in process) or a child that loops on it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

enum { CFG_COUNT, CFG_CHURN, CFG_TAIL, CFG_MMAP, CFG_SLOTS };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CFG_SLOTS);
	__type(key, u32);
	__type(value, u32);
} cfg SEC(".maps");

/* counters incremented in place, and the number of increments */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, u32);
	__type(value, u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} total SEC(".maps");

/* a big hash a program inserts into and deletes from while user space iterates */
#define CHURN_KEYS 200000
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, u32);
	__type(value, u64);
} big SEC(".maps");

/* tail calls */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u32);
} jmp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} hits SEC(".maps");

/* a memory-mapped array, and where a program copies what it reads there */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, u32);
	__type(value, u64);
} shared SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} mm_out SEC(".maps");

/* types only user space touches, declared here so that they carry BTF */
struct lpm_v4 {
	u32 prefixlen;
	u8 data[4];
};

struct lpm_v6 {
	u32 prefixlen;
	u8 data[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, u32);
} lpm4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6);
	__type(value, u32);
} lpm6 SEC(".maps");

struct point {
	s32 x;
	s32 y;
};

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 4);
	__type(value, struct point);
} fifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 4);
	__type(value, u32);
} lifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 64);
	__type(value, u64);
} bloom SEC(".maps");

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u64);
};

struct inner inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, u32);
	__array(values, struct inner);
} outer SEC(".maps") = {
	.values = { [0] = &inner_a },
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, struct point);
} pcpu_points SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, u32);
	__type(value, u64);
} lru_pcpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} perf SEC(".maps");

static __always_inline int mine(u32 slot)
{
	u32 *want = bpf_map_lookup_elem(&cfg, &slot);

	return want && *want && *want == (u32)(bpf_get_current_pid_tgid() >> 32);
}

static __always_inline void bump(void *map, u32 k)
{
	u64 *v = bpf_map_lookup_elem(map, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
}

/* counts[k]++ for a k among 16, and total[0]++: their sums stay equal */
SEC("tp/syscalls/sys_enter_getpgid")
int count_calls(void *ctx)
{
	u32 k = bpf_get_prandom_u32() % 16;
	u64 one = 1, *v;

	if (!mine(CFG_COUNT))
		return 0;
	v = bpf_map_lookup_elem(&counts, &k);
	if (v) {
		__sync_fetch_and_add(v, 1);
	} else if (bpf_map_update_elem(&counts, &k, &one, BPF_NOEXIST)) {
		/* not counted: total[1] says so */
		bump(&total, 1);
		return 0;
	}
	bump(&total, 0);
	return 0;
}

/* inserts a random key of big when absent, deletes it when present */
SEC("tp/syscalls/sys_enter_getpgid")
int churn(void *ctx)
{
	u32 k = bpf_get_prandom_u32() % CHURN_KEYS;
	u64 v = k;

	if (!mine(CFG_CHURN))
		return 0;
	if (bpf_map_lookup_elem(&big, &k)) {
		if (!bpf_map_delete_elem(&big, &k))
			bump(&total, 2);
	} else if (!bpf_map_update_elem(&big, &k, &v, BPF_NOEXIST)) {
		bump(&total, 3);
	}
	return 0;
}

SEC("tp/syscalls/sys_enter_getpgid")
int tail_entry(void *ctx)
{
	if (!mine(CFG_TAIL))
		return 0;
	bpf_tail_call(ctx, &jmp, 0);
	bump(&hits, 3); /* jmp[0] is empty */
	return 0;
}

SEC("tp")
int tail_one(void *ctx)
{
	bump(&hits, 1);
	return 0;
}

SEC("tp")
int tail_two(void *ctx)
{
	bump(&hits, 2);
	return 0;
}

/* mm_out[0] = shared[0]; shared[1] = shared[0] * 2 */
SEC("tp/syscalls/sys_enter_getpgid")
int mm_copy(void *ctx)
{
	u32 k0 = 0, k1 = 1;
	u64 *src, *dst, *twice;

	if (!mine(CFG_MMAP))
		return 0;
	src = bpf_map_lookup_elem(&shared, &k0);
	dst = bpf_map_lookup_elem(&mm_out, &k0);
	twice = bpf_map_lookup_elem(&shared, &k1);
	if (src && dst && twice) {
		*dst = *src;
		*twice = *src * 2;
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
