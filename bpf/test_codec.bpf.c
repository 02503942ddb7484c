// SPDX-License-Identifier: GPL-2.0
/*
 * Fixture for the codec specs: maps whose keys and values cover every row of
 * DESIGN.md's codec table. No program touches them; the specs read and write
 * them from user space.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* -- Scalars ------------------------------------------------------------- */

typedef u32 counter_t;
typedef const counter_t counter2_t; /* a typedef of a const typedef */

enum color { RED = 0, GREEN = 5, BLUE = 300 };
/* Signed: clang 14 still emits it as an unsigned (kflag 0) ENUM. */
enum delta_e { D_NEG = -2, D_ZERO = 0, D_POS = 7 };
/* 64-bit: clang 14 emits an 8-byte ENUM with the values cut to 32 bits. */
enum wide { W_SMALL = 1, W_BIG = 0x100000000ULL };
enum __attribute__((packed)) tiny { T_A = 1, T_B = 200 };

/* Every scalar kind as one value. */
struct scalars {
	s8 i8;
	u8 u8v;
	s16 i16;
	u16 u16v;
	s32 i32;
	u32 u32v;
	s64 i64;
	u64 u64v;
	bool flag;
	float f32;
	double f64;
	enum color color;
	enum delta_e delta;
	enum tiny tiny;
	enum wide wide;
	void *ptr;
	const char *cstr;
	const volatile u32 cv;
	counter2_t td;
	u32 *restrict rp;
};

/* -- The example ------------------------------------------------- */

struct flow_key {
	char ifname[16];
	u8 mac[6];
	__u8 addr[4];
	u16 port;
};

/*
 * Bitfields signed and unsigned, some crossing byte boundaries (mid spans
 * bits 3..9, sdelta 10..14, big a 40-bit run across six bytes), an anonymous
 * union and an anonymous struct flattened into the table.
 */
struct stats {
	u64 packets;
	s32 delta;
	bool seen;
	u32 hist[8];
	u32 lo : 3;
	u32 mid : 7;
	s32 sdelta : 5;
	s64 big : 40;
	u64 ubig : 60;
	bool on : 1;
	enum color col : 9;
	union {
		u32 addr4;
		u8 addr6[16];
	};
	struct {
		u16 sport;
		u16 dport;
	};
};

/* -- Arrays, nesting, unions, padding ------------------------------------ */

struct point {
	s32 x;
	s32 y;
};

struct inner {
	struct point at;
	u16 tag;
};

struct shape {
	struct point pts[3];
	u16 grid[2][3];
	char names[2][8];
	u8 keys[2][4];
	bool bits[4];
	s8 small[4];
	struct {
		struct point a, b;
	} seg;
	struct inner nested;
};

union val {
	u64 u;
	s64 s;
	double d;
	u8 bytes[8];
	struct {
		u32 lo32;
		u32 hi32;
	} parts;
};

/* Nested anonymous union inside an anonymous union's struct member. */
struct variant {
	u32 kind;
	union {
		u64 num;
		struct {
			u32 a;
			u32 b;
		};
		union {
			float f;
			s16 h;
		};
	};
};

struct padded_key {
	u8 a;
	u32 b;
	u16 c;
};

struct padded {
	u8 a;
	u64 b;
	u16 c;
	bool d;
};

struct locked {
	struct bpf_spin_lock lock;
	u32 count;
	u64 total;
};

/* -- Per-CPU values ------------------------------------------------------ */

/* 12 bytes: not a multiple of 8, so each CPU's slot is padded to 16. */
struct pcval {
	u32 packets;
	u32 bytes;
	u16 port;
	u8 proto;
};

struct pccounters {
	u64 packets;
	u64 bytes;
	struct {
		u32 drops;
		s16 errs;
	} sub;
};

/* -- Maps ---------------------------------------------------------------- */

#define MAP(NAME, TYPE, K, V, N)              \
	struct {                              \
		__uint(type, TYPE);           \
		__uint(max_entries, N);       \
		__type(key, K);               \
		__type(value, V);             \
	} NAME SEC(".maps")

MAP(ints8, BPF_MAP_TYPE_HASH, s8, u8, 64);
MAP(ints16, BPF_MAP_TYPE_HASH, u16, s16, 64);
MAP(ints32, BPF_MAP_TYPE_HASH, s32, u32, 64);
MAP(ints64, BPF_MAP_TYPE_HASH, s64, u64, 64);
MAP(intsu64, BPF_MAP_TYPE_HASH, u64, s64, 64);
MAP(enums, BPF_MAP_TYPE_HASH, enum delta_e, enum color, 64);
MAP(wides, BPF_MAP_TYPE_HASH, enum tiny, enum wide, 64);
MAP(bools, BPF_MAP_TYPE_HASH, bool, bool, 4);
MAP(ptrs, BPF_MAP_TYPE_HASH, void *, counter2_t, 64);
MAP(floats, BPF_MAP_TYPE_HASH, double, float, 64);
MAP(names, BPF_MAP_TYPE_HASH, char[16], u8[6], 64);
MAP(scalars, BPF_MAP_TYPE_HASH, u32, struct scalars, 64);
MAP(flows, BPF_MAP_TYPE_HASH, struct flow_key, struct stats, 64);
MAP(shapes, BPF_MAP_TYPE_HASH, struct point, struct shape, 64);
MAP(unions, BPF_MAP_TYPE_HASH, u32, union val, 64);
MAP(variants, BPF_MAP_TYPE_HASH, u32, struct variant, 64);
MAP(paddeds, BPF_MAP_TYPE_HASH, struct padded_key, struct padded, 64);
MAP(lockeds, BPF_MAP_TYPE_HASH, u32, struct locked, 8);
MAP(grids, BPF_MAP_TYPE_ARRAY, u32, s32[2][3], 4);

MAP(pc_hash, BPF_MAP_TYPE_PERCPU_HASH, u32, struct pcval, 64);
MAP(pc_array, BPF_MAP_TYPE_PERCPU_ARRAY, u32, struct pcval, 4);
MAP(pc_lru, BPF_MAP_TYPE_LRU_PERCPU_HASH, u32, struct pccounters, 64);
MAP(pc_grid, BPF_MAP_TYPE_PERCPU_ARRAY, u32, u16[2][3], 4);
MAP(pc_byte, BPF_MAP_TYPE_PERCPU_ARRAY, u32, u8, 4);
MAP(pc_u64, BPF_MAP_TYPE_PERCPU_HASH, u32, u64, 64);

char LICENSE[] SEC("license") = "GPL";
