// SPDX-License-Identifier: GPL-2.0
/*
 * Fixture for BPF_F_LOCK (spec/maptypes_spec.lua): a map whose value holds a
 * struct bpf_spin_lock. The kernel needs the value's BTF to find the lock,
 * so the map comes from an object. (No program here: this kernel has no
 * fentry, and tp/kprobe programs may not take a bpf_spin_lock; the specs
 * race two user-space processes on the lock instead.)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct locked {
	struct bpf_spin_lock lock;
	u64 a;
	u64 b;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, struct locked);
} pairs SEC(".maps");

char LICENSE[] SEC("license") = "GPL";
