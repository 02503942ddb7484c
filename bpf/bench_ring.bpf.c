// SPDX-License-Identifier: GPL-2.0
/*
 * Producers for scripts/bench/ring.lua, run with BPF_PROG_TEST_RUN:
 * fill_big pre-fills a 64 MiB ring (16 records per run, no wake-ups),
 * produce_live feeds a 1 MiB ring one record per run while a consumer
 * keeps up. Drops are counted in NAME_lost (bh_ringbuf.h).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "bh_ringbuf.h"

struct bench_ev {
	__u64 seq;
	__u32 pid;
	__u32 val;
};

const struct bench_ev *unused_bench_ev __attribute__((unused));

BH_RINGBUF(big, 64 << 20);
BH_RINGBUF(live, 1 << 20);

__u64 seq;

SEC("xdp")
int fill_big(struct xdp_md *ctx)
{
	int i;

	for (i = 0; i < 16; i++) {
		__u64 s = __sync_fetch_and_add(&seq, 1);
		struct bench_ev e = { .seq = s, .pid = 1, .val = (__u32)s & 0xff };

		bh_ringbuf_output(big, &e, sizeof(e), BPF_RB_NO_WAKEUP);
	}
	return XDP_PASS;
}

SEC("xdp")
int produce_live(struct xdp_md *ctx)
{
	__u64 s = __sync_fetch_and_add(&seq, 1);
	struct bench_ev e = { .seq = s, .pid = 1, .val = (__u32)s & 0xff };

	bh_ringbuf_output(live, &e, sizeof(e), 0);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
