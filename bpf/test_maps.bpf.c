// SPDX-License-Identifier: GPL-2.0
/* Fixture for the map specs: maps of several key and value shapes. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct stats {
	u64 packets;
	u64 bytes;
	u32 flags;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, u64);
} u32_u64 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, char[16]);
	__type(value, struct stats);
} name_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, s16);
	__type(value, u8);
} small SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, u32);
	__type(value, u64);
} arr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, u32);
	__type(value, u64);
} pcpu SEC(".maps");

/* No BTF key/value: only sizes (as bpftool or old loaders make them). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__uint(key_size, 6);
	__uint(value_size, 4);
} sized SEC(".maps");

SEC("raw_tp/sys_enter")
int touch(void *ctx)
{
	u32 k = 0;
	u64 *v = bpf_map_lookup_elem(&arr, &k);

	if (v)
		__sync_fetch_and_add(v, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
