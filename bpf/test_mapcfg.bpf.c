// SPDX-License-Identifier: GPL-2.0
/*
 * Fixture for the pre-load map settings: a plain hash to resize, retype and
 * share, and an array of maps declared without its inner map (the spec
 * gives it one with set_inner_map).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, u32);
	__type(value, u64);
} plain SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 4);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} outer SEC(".maps");

/* Counts runs in plain[1], and in element 0 of the map at outer[0] when there is one. */
SEC("xdp")
int bump(struct xdp_md *ctx)
{
	u32 k = 1, zero = 0;
	u64 one = 1, *v;
	void *inner;

	v = bpf_map_lookup_elem(&plain, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&plain, &k, &one, BPF_NOEXIST);
	inner = bpf_map_lookup_elem(&outer, &zero);
	if (inner) {
		v = bpf_map_lookup_elem(inner, &zero);
		if (v)
			__sync_fetch_and_add(v, 1);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
