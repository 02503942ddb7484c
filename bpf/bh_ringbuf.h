/* SPDX-License-Identifier: GPL-2.0 */
/*
 * bh_ringbuf.h: the bpfhost convention for ring buffer drops.
 *
 * The kernel does not count the records a full ring buffer refused; the
 * program sees the failure and must count it. bpfhost looks, beside each
 * ring map NAME, for a per-CPU array map NAME_lost (one u32 key, u64 values)
 * and reports its sum as ring.lost. BH_RINGBUF declares both maps;
 * bh_ringbuf_output and bh_ringbuf_reserve count their failures there.
 *
 *	BH_RINGBUF(events, 256 * 1024);
 *	...
 *	bh_ringbuf_output(events, &e, sizeof(e), 0);
 */
#ifndef BH_RINGBUF_H
#define BH_RINGBUF_H

#include <bpf/bpf_helpers.h>

#define BH_RINGBUF(name, size)                                 \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_RINGBUF);            \
		__uint(max_entries, size);                     \
	} name SEC(".maps");                                   \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);       \
		__uint(max_entries, 1);                        \
		__type(key, __u32);                            \
		__type(value, __u64);                          \
	} name##_lost SEC(".maps")

static __always_inline void bh_ringbuf_count_lost(void *lost_map)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(lost_map, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/* bpf_ringbuf_output that counts a refused record in name_lost. */
#define bh_ringbuf_output(name, data, size, flags)                              \
	({                                                                     \
		long __bh_err = bpf_ringbuf_output(&name, data, size, flags);  \
		if (__bh_err)                                                  \
			bh_ringbuf_count_lost(&name##_lost);                   \
		__bh_err;                                                      \
	})

/* bpf_ringbuf_reserve that counts a refused reservation in name_lost. */
#define bh_ringbuf_reserve(name, size)                                          \
	({                                                                     \
		void *__bh_rec = bpf_ringbuf_reserve(&name, size, 0);          \
		if (!__bh_rec)                                                 \
			bh_ringbuf_count_lost(&name##_lost);                   \
		__bh_rec;                                                      \
	})

#endif
