// SPDX-License-Identifier: GPL-2.0
/*
 * What scripts/exporter.lua serves as Prometheus metrics:
 *  - execs: execve() calls by the calling task's uid and comm;
 *  - syscall_lat: per-syscall latency as counts per log2 slot of the
 *    nanoseconds between sys_enter and sys_exit, keyed by {syscall id, slot},
 *    and syscall_lat_sum: the total nanoseconds per syscall (the _sum).
 * target[0] (a pid; 0: every process) limits the latency maps to one process.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define EEXIST 17

#define MAX_SLOT 63

struct exec_key {
	__u32 uid;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct exec_key);
	__type(value, __u64);
} execs SEC(".maps");

struct lat_key {
	__u32 id;   /* syscall number */
	__u32 slot; /* bit length of the latency in ns: 2^(slot-1) <= ns < 2^slot */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct lat_key);
	__type(value, __u64);
} syscall_lat SEC(".maps");

struct lat_sum_key {
	__u32 id;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct lat_sum_key);
	__type(value, __u64);
} syscall_lat_sum SEC(".maps");

struct start {
	__u64 ts;
	__u32 id;
};

/* In flight: the syscall each thread is in, since when. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct start);
} starts SEC(".maps");

/* target[0]: the only process whose latency is measured; 0: every process */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

static __always_inline int skip(__u64 pid_tgid)
{
	__u32 zero = 0, *t = bpf_map_lookup_elem(&target, &zero);

	return t && *t && (pid_tgid >> 32) != *t;
}

/* Bit length of v: 0 for 0, 1 for 1, 2 for 2..3, ... */
static __always_inline __u32 bit_length(__u64 v)
{
	__u32 n = 0;

	if (v >> 32) {
		v >>= 32;
		n += 32;
	}
	if (v >> 16) {
		v >>= 16;
		n += 16;
	}
	if (v >> 8) {
		v >>= 8;
		n += 8;
	}
	if (v >> 4) {
		v >>= 4;
		n += 4;
	}
	if (v >> 2) {
		v >>= 2;
		n += 2;
	}
	if (v >> 1) {
		v >>= 1;
		n += 1;
	}
	return n + (__u32)v;
}

static __always_inline void add(void *map, void *key, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(map, key);

	if (v) {
		__sync_fetch_and_add(v, n);
		return;
	}
	if (bpf_map_update_elem(map, key, &n, BPF_NOEXIST) == -EEXIST) {
		/* another CPU created it first: add to theirs */
		v = bpf_map_lookup_elem(map, key);
		if (v)
			__sync_fetch_and_add(v, n);
	}
}

SEC("tracepoint/syscalls/sys_enter_execve")
int count_exec(void *ctx)
{
	struct exec_key k = {};

	k.uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(k.comm, sizeof(k.comm));
	add(&execs, &k, 1);
	return 0;
}

SEC("raw_tp/sys_enter")
int lat_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct start s;

	if (skip(pid_tgid))
		return 0;
	s.ts = bpf_ktime_get_ns();
	s.id = (__u32)ctx->args[1];
	bpf_map_update_elem(&starts, &tid, &s, BPF_ANY);
	return 0;
}

SEC("raw_tp/sys_exit")
int lat_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct start *s;
	struct lat_key k = {};
	struct lat_sum_key sk = {};
	__u64 ns;

	if (skip(pid_tgid))
		return 0;
	s = bpf_map_lookup_elem(&starts, &tid);
	if (!s)
		return 0;
	ns = bpf_ktime_get_ns() - s->ts;
	k.id = s->id;
	sk.id = s->id;
	bpf_map_delete_elem(&starts, &tid);
	k.slot = bit_length(ns);
	if (k.slot > MAX_SLOT)
		k.slot = MAX_SLOT;
	add(&syscall_lat, &k, 1);
	add(&syscall_lat_sum, &sk, ns);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
