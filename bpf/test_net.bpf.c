// SPDX-License-Identifier: GPL-2.0
/*
 * Fixture for the network specs and scripts/xdp_count.lua: XDP, tc and
 * socket-filter programs that count IPv4/IPv6 UDP packets to one port (set
 * through .rodata), per CPU, and pass or drop them as configured.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP   0x0800
#define ETH_P_IPV6 0x86DD
#define TC_ACT_OK   0
#define TC_ACT_SHOT 2

const volatile u16 udp_port = 0;     /* 0: every UDP packet */
const volatile bool drop = false;    /* drop what matches */

/* [0]: packets that matched, [1]: bytes */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u64);
} counts SEC(".maps");

u64 tc_ingress = 0;
u64 tc_egress = 0;
u64 xdp_seen = 0;    /* every packet the XDP program saw */
u64 xdp_other = 0;   /* by the second XDP program, for replace specs */

/* The UDP destination port of the frame in [data, end), or -1. */
static __always_inline int udp_dport(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct udphdr *udp;
	u8 proto;

	if ((void *)(eth + 1) > end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->ihl != 5)
			return -1;
		proto = ip->protocol;
		udp = (void *)(ip + 1);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return -1;
		proto = ip6->nexthdr;
		udp = (void *)(ip6 + 1);
	} else {
		return -1;
	}
	if (proto != IPPROTO_UDP || (void *)(udp + 1) > end)
		return -1;
	return bpf_ntohs(udp->dest);
}

static __always_inline int matches(void *data, void *end)
{
	int port = udp_dport(data, end);

	return port >= 0 && (!udp_port || port == udp_port);
}

static __always_inline void count(u64 len)
{
	u32 k = 0;
	u64 *v = bpf_map_lookup_elem(&counts, &k);

	if (v)
		*v += 1;
	k = 1;
	v = bpf_map_lookup_elem(&counts, &k);
	if (v)
		*v += len;
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	__sync_fetch_and_add(&xdp_seen, 1);
	if (!matches(data, end))
		return XDP_PASS;
	count(end - data);
	return drop ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int xdp_other_prog(struct xdp_md *ctx)
{
	__sync_fetch_and_add(&xdp_other, 1);
	return XDP_PASS;
}

/* Swaps the Ethernet addresses and bounces the frame: the output packet of a test run. */
SEC("xdp")
int xdp_bounce(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	u8 tmp[6];

	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(tmp, eth->h_dest, 6);
	__builtin_memcpy(eth->h_dest, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, tmp, 6);
	return XDP_TX;
}

SEC("tc")
int tc_in(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (matches(data, end))
		__sync_fetch_and_add(&tc_ingress, 1);
	return TC_ACT_OK;
}

SEC("tc")
int tc_out(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (!matches(data, end))
		return TC_ACT_OK;
	__sync_fetch_and_add(&tc_egress, 1);
	/* the mark shows in the test run's output ctx */
	skb->mark = 0x1234;
	return drop ? TC_ACT_SHOT : TC_ACT_OK;
}

/* Keeps the whole packet when it matches, nothing otherwise. */
SEC("socket")
int sock_filter(struct __sk_buff *skb)
{
	u16 proto = bpf_ntohs(skb->protocol);
	u8 ipproto = 0;
	u16 dport = 0;
	u32 off;

	if (proto == ETH_P_IP) {
		bpf_skb_load_bytes(skb, offsetof(struct iphdr, protocol), &ipproto, 1);
		off = sizeof(struct iphdr);
	} else if (proto == ETH_P_IPV6) {
		bpf_skb_load_bytes(skb, offsetof(struct ipv6hdr, nexthdr), &ipproto, 1);
		off = sizeof(struct ipv6hdr);
	} else {
		return 0;
	}
	if (ipproto != IPPROTO_UDP)
		return 0;
	if (bpf_skb_load_bytes(skb, off + offsetof(struct udphdr, dest), &dport, 2))
		return 0;
	if (udp_port && bpf_ntohs(dport) != udp_port)
		return 0;
	return skb->len;
}

char LICENSE[] SEC("license") = "GPL";
