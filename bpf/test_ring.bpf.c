// SPDX-License-Identifier: GPL-2.0
/*
 * Fixture for spec/ringbuf_spec.lua and spec/perfbuf_spec.lua. Every program
 * is XDP so that BPF_PROG_TEST_RUN with repeat = N runs it exactly N times;
 * each run emits one record. seq numbers every record of a program; check
 * is 0xffffffff - (u32)seq, so a consumer can tell a torn record.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "bh_ringbuf.h"

struct ring_event {
	__u64 seq;
	__u32 pid;
	__u32 check;
	char comm[16];
};

struct ring_sample {
	__u32 id;
	__u16 kind;
	__u8 flag;
	__u8 pad;
	__s64 delta;
};

enum ring_color { RED = 1, GREEN = 2, BLUE = -3 };

/* Every kind the codec knows, for comparing the decoders and the view. */
struct ring_mixed {
	__u8 b8;
	__s16 s16;
	__s32 s32;
	__u64 big;          /* beyond 2^53: cdata */
	__s64 neg;
	_Bool yes;
	enum ring_color color;
	char name[12];
	unsigned char raw[5];
	__u16 grid[2][3];
	struct {
		__u32 x;
		char tag[4];
	} pts[2];
	union {
		__u32 word;
		__u8 bytes[4];
	};
	__u32 lo : 3, mid : 13, hi : 16;
	__s32 sbits : 7;
	double ratio;
	float f;
};

/* Beyond the generated decoder (a 64-bit bitfield, a long array): decoded in C. */
struct ring_wide {
	__u64 seq;
	__u64 wide : 40, rest : 24;
	__u16 arr[600];
};

/* Keep the record types in BTF for obj:type (ring maps carry no value type). */
const struct ring_event *unused_ring_event __attribute__((unused));
const struct ring_sample *unused_ring_sample __attribute__((unused));
const struct ring_mixed *unused_ring_mixed __attribute__((unused));
const struct ring_wide *unused_ring_wide __attribute__((unused));

BH_RINGBUF(ring, 1 << 20);     /* large: N records fit */
BH_RINGBUF(small, 4096);       /* one page: overflows */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} ring2 SEC(".maps");          /* a second ring, another type, no _lost map */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} echo SEC(".maps");           /* what echo_user read from the user ring */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} ring3 SEC(".maps");          /* struct ring_mixed records */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} ring4 SEC(".maps");          /* struct ring_wide records */           /* what echo_user read from the user ring */

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 16 * 1024);
} urb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf SEC(".maps");

/* stats[0]: user records drained; stats[1]: user records of a wrong size */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Not a ring: for the "not a ring buffer" argument specs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} not_a_ring SEC(".maps");

__u64 seq_ring, seq_ring2, seq_small, seq_perf, seq_var, seq_mixed, seq_wide;

static __always_inline void fill(struct ring_event *e, __u64 seq)
{
	e->seq = seq;
	e->pid = 4242;
	e->check = 0xffffffffu - (__u32)seq;
	__builtin_memcpy(e->comm, "bpfhost-ring\0\0\0", 16);
}

static __always_inline int emit_one(void)
{
	struct ring_event e;

	fill(&e, __sync_fetch_and_add(&seq_ring, 1));
	bh_ringbuf_output(ring, &e, sizeof(e), 0);
	return XDP_PASS;
}

SEC("xdp")
int emit(struct xdp_md *ctx)
{
	return emit_one();
}

SEC("xdp")
int emit_small(struct xdp_md *ctx)
{
	struct ring_event e;

	fill(&e, __sync_fetch_and_add(&seq_small, 1));
	bh_ringbuf_output(small, &e, sizeof(e), 0);
	return XDP_PASS;
}

SEC("xdp")
int emit2(struct xdp_md *ctx)
{
	__u64 seq = __sync_fetch_and_add(&seq_ring2, 1);
	struct ring_sample s = {
		.id = (__u32)seq,
		.kind = 7,
		.flag = 1,
		.delta = -(__s64)seq,
	};

	bpf_ringbuf_output(&ring2, &s, sizeof(s), 0);
	return XDP_PASS;
}

/* Each run reserves and discards a record, then emits one: only that one is seen. */
SEC("xdp")
int emit_discard(struct xdp_md *ctx)
{
	struct ring_event *p = bh_ringbuf_reserve(ring, sizeof(*p));

	if (!p)
		return XDP_PASS;
	fill(p, 0);
	bpf_ringbuf_discard(p, 0);
	return emit_one();
}

/* Variable-length records: 8 + seq % 57 bytes, the seq then bytes k = k. */
SEC("xdp")
int emit_bytes(struct xdp_md *ctx)
{
	__u64 seq = __sync_fetch_and_add(&seq_var, 1);
	__u32 len = (__u32)(seq % 57);
	__u8 buf[72];
	int k;

	__builtin_memcpy(buf, &seq, 8);
	for (k = 8; k < 72; k++)
		buf[k] = (__u8)k;
	/* hide len from clang so that the mask stays for the verifier */
	asm volatile("" : "+r"(len));
	len &= 63;
	bh_ringbuf_output(ring, buf, len + 8, 0);
	return XDP_PASS;
}

SEC("xdp")
int emit_perf(struct xdp_md *ctx)
{
	struct ring_event e;

	fill(&e, __sync_fetch_and_add(&seq_perf, 1));
	bpf_perf_event_output(ctx, &perf, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return XDP_PASS;
}

/* A ring_mixed whose every field moves with seq. */
SEC("xdp")
int emit_mixed(struct xdp_md *ctx)
{
	__u64 seq = __sync_fetch_and_add(&seq_mixed, 1);
	struct ring_mixed *m = bpf_ringbuf_reserve(&ring3, sizeof(*m), 0);
	int i, j;

	if (!m)
		return XDP_PASS;
	__builtin_memset(m, 0, sizeof(*m));
	m->b8 = (__u8)(200 + seq);
	m->s16 = -(__s16)(1000 + seq);
	m->s32 = -(__s32)(100000 * (seq + 1));
	m->big = 0xfedcba9876543210ULL + seq;
	m->neg = -(__s64)(seq + 1) * 1000000007LL;
	m->yes = seq & 1;
	m->color = seq % 3 == 0 ? RED : seq % 3 == 1 ? GREEN : BLUE;
	__builtin_memcpy(m->name, "mixed-00", 8);
	m->name[7] = '0' + (seq % 10);
	for (i = 0; i < 5; i++)
		m->raw[i] = (__u8)(seq + i * 50);
	for (i = 0; i < 2; i++)
		for (j = 0; j < 3; j++)
			m->grid[i][j] = (__u16)(seq * 10 + i * 3 + j);
	for (i = 0; i < 2; i++) {
		m->pts[i].x = (__u32)(seq + i);
		m->pts[i].tag[0] = 'p';
		m->pts[i].tag[1] = '0' + i;
	}
	m->word = 0x04030201u + (__u32)seq;
	m->lo = seq & 7;
	m->mid = (seq * 37) & 0x1fff;
	m->hi = 0xffff - (__u32)seq;
	m->sbits = -(__s32)(seq % 64);
	{
		/* no floating point in BPF: the bits of 2.5 or -2.0, and of 1.5f */
		__u64 d = seq & 1 ? 0x4004000000000000ULL : 0xc000000000000000ULL;
		__u32 f = 0x3fc00000u;

		__builtin_memcpy(&m->ratio, &d, 8);
		__builtin_memcpy(&m->f, &f, 4);
	}
	bpf_ringbuf_submit(m, 0);
	return XDP_PASS;
}

SEC("xdp")
int emit_wide(struct xdp_md *ctx)
{
	__u64 seq = __sync_fetch_and_add(&seq_wide, 1);
	struct ring_wide *w = bpf_ringbuf_reserve(&ring4, sizeof(*w), 0);
	int i;

	if (!w)
		return XDP_PASS;
	w->seq = seq;
	w->wide = 0xabcdef0123ULL + seq;
	w->rest = 0x123456 - seq;
	for (i = 0; i < 600; i++)
		w->arr[i] = (__u16)(seq + i);
	bpf_ringbuf_submit(w, 0);
	return XDP_PASS;
}

/* Attached by obj:attach() in the signal specs, so that a link exists. */
SEC("tracepoint/syscalls/sys_enter_getppid")
int ring_tp_getppid(void *ctx)
{
	return 0;
}

static __always_inline void bump(__u32 k)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &k);

	if (n)
		__sync_fetch_and_add(n, 1);
}

static long echo_one(struct bpf_dynptr *dynptr, void *ctx)
{
	struct ring_event e;

	if (bpf_dynptr_read(&e, sizeof(e), dynptr, 0, 0)) {
		bump(1);
		return 0;
	}
	e.pid += 1;
	bpf_ringbuf_output(&echo, &e, sizeof(e), 0);
	bump(0);
	return 0;
}

/* Drain the user ring into echo, each record with pid + 1. */
SEC("xdp")
int echo_user(struct xdp_md *ctx)
{
	bpf_user_ringbuf_drain(&urb, echo_one, NULL, 0);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
