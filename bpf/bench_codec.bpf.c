// SPDX-License-Identifier: GPL-2.0
/*
 * Maps for the codec benchmark (scripts/bench/codec.lua): each typed map has
 * a twin of the same sizes without BTF, whose keys and values are plain
 * bytes, so that the codec's own cost shows as the difference.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* 64 bytes, a flow record as a tracer keeps one. */
struct bench_flow {
	u64 packets;
	u64 bytes;
	u64 first_ns;
	u64 last_ns;
	u32 saddr;
	u32 daddr;
	u16 sport;
	u16 dport;
	u8 proto;
	u8 flags;
	u16 ifindex;
	char comm[16];
};

/* 24 bytes per CPU. */
struct bench_cpu {
	u64 packets;
	u64 bytes;
	u32 drops;
	u32 errors;
};

#define TYPED(NAME, TYPE, V)                          \
	struct {                                      \
		__uint(type, TYPE);                   \
		__uint(max_entries, 1024);            \
		__type(key, u32);                     \
		__type(value, V);                     \
	} NAME SEC(".maps")

#define BYTES(NAME, TYPE, V)                          \
	struct {                                      \
		__uint(type, TYPE);                   \
		__uint(max_entries, 1024);            \
		__uint(key_size, sizeof(u32));        \
		__uint(value_size, sizeof(V));        \
	} NAME SEC(".maps")

TYPED(h_u64, BPF_MAP_TYPE_HASH, u64);
BYTES(h_u64_bytes, BPF_MAP_TYPE_HASH, u64);
TYPED(h_flow, BPF_MAP_TYPE_HASH, struct bench_flow);
BYTES(h_flow_bytes, BPF_MAP_TYPE_HASH, struct bench_flow);
TYPED(pc_cpu, BPF_MAP_TYPE_PERCPU_HASH, struct bench_cpu);
BYTES(pc_cpu_bytes, BPF_MAP_TYPE_PERCPU_HASH, struct bench_cpu);

char LICENSE[] SEC("license") = "GPL";
