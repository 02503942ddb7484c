// SPDX-License-Identifier: GPL-2.0
/*
 * opensnoop: every openat(), sent through a perf buffer (one ring per CPU;
 * the kernel counts what it had no room for, and bpfhost reports it per CPU).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct open_event {
	__u32 pid;
	__u32 uid;
	__s32 flags;
	__s32 dfd;
	char comm[16];
	char filename[128];
};

const struct open_event *unused_open_event __attribute__((unused));

/* Set by opensnoop.lua -p PID before load. */
const volatile __u32 targ_pid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} opens SEC(".maps");

/* Too big for the stack beside the rest: one per CPU instead. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct open_event);
} scratch SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int opensnoop_openat(struct trace_event_raw_sys_enter *ctx)
{
	__u32 zero = 0, pid = bpf_get_current_pid_tgid() >> 32;
	struct open_event *e;

	if (targ_pid && pid != targ_pid)
		return 0;
	e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	e->pid = pid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->dfd = (__s32)ctx->args[0];
	e->flags = (__s32)ctx->args[2];
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_user_str(e->filename, sizeof(e->filename), (const char *)ctx->args[1]);
	bpf_perf_event_output(ctx, &opens, BPF_F_CURRENT_CPU, e, sizeof(*e));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
