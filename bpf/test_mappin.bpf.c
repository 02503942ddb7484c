// SPDX-License-Identifier: GPL-2.0
/*
 * Fixture for pinning by name (spec/mapsys_spec.lua): open it with
 * {pin_root = dir} and "persist" is pinned at dir/persist, and reused by the
 * next open with the same pin_root.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, u32);
	__type(value, u64);
} persist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u32);
	__type(value, u64);
} scratch SEC(".maps");

SEC("tp/syscalls/sys_enter_getpgid")
int pin_touch(void *ctx)
{
	u32 k = 0;
	u64 *v = bpf_map_lookup_elem(&persist, &k);

	if (v)
		__sync_fetch_and_add(v, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
