// SPDX-License-Identifier: GPL-2.0
/*
 * Fixture for the program and link specs: one program per attach kind that
 * this kernel can run, each counting into .bss what it saw from the process
 * whose tgid the spec writes into .rodata before load.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>

const volatile u32 target_tgid = 0;
const volatile long target_nr = 0;   /* a syscall number, for raw_tp and tp_btf */

u64 tp_hits = 0;
u64 raw_hits = 0;
u64 btf_hits = 0;
u64 kprobe_hits = 0;
u64 uprobe_hits = 0;
s32 uprobe_arg = 0;
u64 uretprobe_hits = 0;
s32 uretprobe_ret = 0;
u64 usdt_hits = 0;
s64 usdt_arg = 0;
u64 perf_hits = 0;
u64 cgroup_hits = 0;
u32 seen_tgid = 0;     /* CO-RE read of the current task's tgid, by tp_btf */

static __always_inline int ours(void)
{
	return (u32)(bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int on_openat(void *ctx)
{
	if (ours())
		__sync_fetch_and_add(&tp_hits, 1);
	return 0;
}

SEC("raw_tp/sys_enter")
int on_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	if (ours() && (long)ctx->args[1] == target_nr)
		__sync_fetch_and_add(&raw_hits, 1);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter_btf, struct pt_regs *regs, long id)
{
	struct task_struct *t;

	if (!ours() || id != target_nr)
		return 0;
	__sync_fetch_and_add(&btf_hits, 1);
	t = bpf_get_current_task_btf();
	seen_tgid = BPF_CORE_READ(t, tgid);
	return 0;
}

/* Loads (kprobe programs exist without CONFIG_KPROBES); attaching it cannot work here. */
SEC("kprobe/do_sys_openat2")
int on_read(struct pt_regs *ctx)
{
	__sync_fetch_and_add(&kprobe_hits, 1);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(on_target, int x)
{
	__sync_fetch_and_add(&uprobe_hits, 1);
	uprobe_arg = x;
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(on_target_ret, int ret)
{
	__sync_fetch_and_add(&uretprobe_hits, 1);
	uretprobe_ret = ret;
	return 0;
}

SEC("usdt")
int BPF_USDT(on_usdt, int x)
{
	__sync_fetch_and_add(&usdt_hits, 1);
	usdt_arg = x;
	return 0;
}

SEC("perf_event")
int on_perf(void *ctx)
{
	__sync_fetch_and_add(&perf_hits, 1);
	return 0;
}

/* Counts sockets created in the cgroup it is attached to; lets them be made. */
SEC("cgroup/sock_create")
int on_sock_create(struct bpf_sock *sk)
{
	__sync_fetch_and_add(&cgroup_hits, 1);
	return 1;
}

/* One line per task of the target process: "tgid pid comm". */
SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;

	if (!task || task->tgid != target_tgid)
		return 0;
	BPF_SEQ_PRINTF(seq, "%d %d %s\n", task->tgid, task->pid, task->comm);
	return 0;
}

/* A map for the map iterator: one line per element. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u32);
	__type(value, u64);
} iter_items SEC(".maps");

SEC("iter/bpf_map_elem")
int dump_items(struct bpf_iter__bpf_map_elem *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	u32 *k = ctx->key;
	u64 *v = ctx->value;

	if (!k || !v)
		return 0;
	BPF_SEQ_PRINTF(seq, "%u=%llu\n", *k, *v);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
