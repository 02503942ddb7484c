// SPDX-License-Identifier: GPL-2.0
/*
 * Fixture for the globals specs: variables of every data section, of
 * scalar, struct and array types. The program (run with test_run) reads
 * the configuration in .rodata, adds .bss's step to .data's total, and
 * records what it saw, so that the specs watch globals change behaviour.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct config {
	u32 mult;
	char label[8];
	u16 ports[4];
};

const volatile u32 threshold = 10;
const volatile struct config cfg = { .mult = 1, .label = "dflt" };
const volatile u8 weights[4] = { 1, 2, 3, 4 };

u64 total = 5;           /* .data */
s32 signed_val = -3;

u64 step = 0;            /* .bss */
u64 runs = 0;
u32 last_verdict = 0;
u16 seen_ports[4] = {};
struct {
	u64 a;
	u32 b;
} pair = {};

u32 extra_counter SEC(".data.extra") = 7;
char extra_name[16] SEC(".data.extra") = "extra";

const volatile u32 ro_custom SEC(".rodata.custom") = 99;

extern u32 CONFIG_BH_TEST_VALUE __kconfig __weak;
u32 kconfig_seen = 0;

SEC("xdp")
int run(struct xdp_md *ctx)
{
	int i;

	runs++;
	total += step * cfg.mult;
	extra_counter++;
	kconfig_seen = CONFIG_BH_TEST_VALUE;
	for (i = 0; i < 4; i++)
		seen_ports[i] = cfg.ports[i] + weights[i];
	pair.a = total;
	pair.b = ro_custom;
	/* verdict: XDP_DROP (1) above the threshold, XDP_PASS (2) otherwise */
	last_verdict = total > threshold ? XDP_DROP : XDP_PASS;
	return last_verdict;
}

char LICENSE[] SEC("license") = "GPL";
