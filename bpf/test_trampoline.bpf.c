// SPDX-License-Identifier: GPL-2.0
/*
 * Fixture for programs that need BPF trampolines (fentry, fexit, fmod_ret,
 * lsm). Kernels that refuse trampolines refuse these at load; the specs
 * load one at a time (set_autoload) and check the error says so.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

u64 hits = 0;

SEC("fentry/do_sys_openat2")
int BPF_PROG(on_open_entry, int dfd, const char *filename)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("fexit/do_sys_openat2")
int BPF_PROG(on_open_exit, int dfd, const char *filename, struct open_how *how, long ret)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("fmod_ret/security_file_open")
int BPF_PROG(on_file_open_ret, struct file *file)
{
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(on_lsm_file_open, struct file *file)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
