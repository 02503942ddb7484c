// SPDX-License-Identifier: GPL-2.0
/*
 * execsnoop: every execve(), with its result. sys_enter_execve notes the
 * pid, parent and file name in starts; sys_exit_execve adds the result and
 * the (new) comm and sends the event through the ring buffer events.
 * Refused records are counted in events_lost (bh_ringbuf.h), which
 * bpfhost reports as ring.lost.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "bh_ringbuf.h"

#define FILENAME_LEN 256

struct exec_event {
	__u64 ts;                 /* bpf_ktime_get_ns() at the call */
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__s32 ret;                /* 0, or -errno */
	char comm[16];
	char filename[FILENAME_LEN];
};

const struct exec_event *unused_exec_event __attribute__((unused));

/* Set by execsnoop.lua -p PID before load: only PID and its children. */
const volatile __u32 targ_pid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct exec_event);
} starts SEC(".maps");

BH_RINGBUF(events, 256 * 1024);

SEC("tracepoint/syscalls/sys_enter_execve")
int execsnoop_enter(struct trace_event_raw_sys_enter *ctx)
{
	static const struct exec_event zero;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id, pid = id >> 32;
	__u32 ppid = BPF_CORE_READ(task, real_parent, tgid);
	struct exec_event *e;

	if (targ_pid && pid != targ_pid && ppid != targ_pid)
		return 0;
	if (bpf_map_update_elem(&starts, &tid, &zero, BPF_ANY))
		return 0;
	e = bpf_map_lookup_elem(&starts, &tid);
	if (!e)
		return 0;
	e->ts = bpf_ktime_get_ns();
	e->pid = pid;
	e->ppid = ppid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_probe_read_user_str(e->filename, sizeof(e->filename), (const char *)ctx->args[0]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int execsnoop_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct exec_event *e = bpf_map_lookup_elem(&starts, &tid);

	if (!e)
		return 0;
	e->ret = (__s32)ctx->ret;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bh_ringbuf_output(events, e, sizeof(*e), 0);
	bpf_map_delete_elem(&starts, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
