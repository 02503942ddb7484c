// SPDX-License-Identifier: GPL-2.0
/*
 * Fixture for load failures: programs the verifier must reject. Each is
 * "?"-prefixed (not loaded unless a spec turns it on with set_autoload) so
 * that the object also loads with only the good program.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} vals SEC(".maps");

u64 sink = 0;

SEC("xdp")
int good(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* Uses a map value without checking the lookup for NULL. */
SEC("?xdp")
int null_deref(struct xdp_md *ctx)
{
	u32 k = 0;
	u64 *v = bpf_map_lookup_elem(&vals, &k);

	return *v ? XDP_DROP : XDP_PASS;
}

/*
 * A long straight run of checked lookups, then the same mistake: a
 * verifier log of several hundred kilobytes at log level 1.
 */
SEC("?xdp")
int long_log(struct xdp_md *ctx)
{
	u64 acc = 0, *v;
	u32 k;

#pragma clang loop unroll(full)
	for (k = 0; k < 600; k++) {
		u32 key = k & 3;

		v = bpf_map_lookup_elem(&vals, &key);
		if (v)
			acc += *v;
	}
	sink = acc;
	k = 1;
	v = bpf_map_lookup_elem(&vals, &k);
	return *v ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
