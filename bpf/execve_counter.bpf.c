// SPDX-License-Identifier: GPL-2.0
/* Counts execve() calls under the key "execve_counter". */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define KEY_LEN 64

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, char[KEY_LEN]);
	__type(value, u64);
} execve_counter SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_execve")
int count_execve(void *ctx)
{
	char key[KEY_LEN] = "execve_counter";
	u64 *v = bpf_map_lookup_elem(&execve_counter, key);

	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
