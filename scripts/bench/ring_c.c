// SPDX-License-Identifier: GPL-2.0
/*
 * ring_c: the C side of the ring buffer benchmark (scripts/bench/ring.lua),
 * also used by the ring specs to run a program from another process.
 *
 *   ring_c run MAP_ID PROG REPEAT
 *	BPF_PROG_TEST_RUN the program named PROG that uses map MAP_ID,
 *	REPEAT times, with a 64-byte packet. Prints "retval duration_ns".
 *   ring_c drain MAP_ID COUNT
 *	libbpf ring_buffer__poll with an empty callback until COUNT records
 *	are consumed (the limit the Lua paths are measured against).
 *	Prints "records wall_seconds cpu_seconds".
 *   ring_c keep MAP_ID LOST_MAP_ID TOTAL TIMEOUT_S
 *	the same while a producer runs, until records + lost reach TOTAL.
 *	Prints "records lost seconds".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static double clock_s(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now(void)
{
	return clock_s(CLOCK_MONOTONIC);
}

static void die(const char *what, int err)
{
	fprintf(stderr, "ring_c: %s: %s\n", what, strerror(err));
	exit(1);
}

static int map_fd_by_id(const char *s)
{
	int fd = bpf_map_get_fd_by_id((__u32)strtoul(s, NULL, 0));

	if (fd < 0)
		die("map by id", errno);
	return fd;
}

/* The program named name among those that use map_id. */
static int prog_fd_by_map(__u32 map_id, const char *name)
{
	__u32 id = 0;

	while (!bpf_prog_get_next_id(id, &id)) {
		struct bpf_prog_info info;
		__u32 len = sizeof(info), maps[64], i;
		int fd = bpf_prog_get_fd_by_id(id);

		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		info.nr_map_ids = 64;
		info.map_ids = (__u64)(unsigned long)maps;
		if (!bpf_obj_get_info_by_fd(fd, &info, &len) && !strcmp(info.name, name)) {
			for (i = 0; i < info.nr_map_ids && i < 64; i++)
				if (maps[i] == map_id)
					return fd;
		}
		close(fd);
	}
	fprintf(stderr, "ring_c: no program '%s' uses map %u\n", name, map_id);
	exit(1);
}

static int cmd_run(char **argv)
{
	unsigned char pkt[64] = { 0 };
	int fd = prog_fd_by_map((__u32)strtoul(argv[0], NULL, 0), argv[1]);
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt, .data_size_in = sizeof(pkt),
		    .repeat = (int)strtoul(argv[2], NULL, 0));

	if (bpf_prog_test_run_opts(fd, &o))
		die("test_run", errno);
	printf("%u %u\n", o.retval, o.duration);
	return 0;
}

static long long seen;

static int on_sample(void *ctx, void *data, size_t len)
{
	seen++;
	return 0;
}

static int cmd_drain(char **argv)
{
	int fd = map_fd_by_id(argv[0]);
	long long want = strtoll(argv[1], NULL, 0);
	struct ring_buffer *rb = ring_buffer__new(fd, on_sample, NULL, NULL);
	double t0, t1, c0, c1;

	if (!rb)
		die("ring_buffer__new", errno);
	t0 = now();
	c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
	while (seen < want) {
		int n = ring_buffer__poll(rb, 100);

		if (n < 0)
			die("ring_buffer__poll", -n);
		if (n == 0 && now() - t0 > 10)
			break;
	}
	t1 = now();
	c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
	printf("%lld %.9f %.9f\n", seen, t1 - t0, c1 - c0);
	ring_buffer__free(rb);
	return seen == want ? 0 : 1;
}

static long long lost_sum(int fd)
{
	int ncpus = libbpf_num_possible_cpus(), i;
	__u64 vals[1024];
	__u32 zero = 0;
	long long sum = 0;

	if (ncpus <= 0 || ncpus > 1024 || bpf_map_lookup_elem(fd, &zero, vals))
		die("lost counter", errno ? errno : EINVAL);
	for (i = 0; i < ncpus; i++)
		sum += (long long)vals[i];
	return sum;
}

static int cmd_keep(char **argv)
{
	int fd = map_fd_by_id(argv[0]), lfd = map_fd_by_id(argv[1]);
	long long total = strtoll(argv[2], NULL, 0), lost = 0;
	double limit = atof(argv[3]), t0 = now();
	struct ring_buffer *rb = ring_buffer__new(fd, on_sample, NULL, NULL);

	if (!rb)
		die("ring_buffer__new", errno);
	while (seen + lost < total && now() - t0 < limit) {
		int n = ring_buffer__poll(rb, 10);

		if (n < 0)
			die("ring_buffer__poll", -n);
		lost = lost_sum(lfd);
	}
	printf("%lld %lld %.9f\n", seen, lost, now() - t0);
	ring_buffer__free(rb);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "run"))
		return cmd_run(argv + 2);
	if (argc == 4 && !strcmp(argv[1], "drain"))
		return cmd_drain(argv + 2);
	if (argc == 6 && !strcmp(argv[1], "keep"))
		return cmd_keep(argv + 2);
	fprintf(stderr, "usage: ring_c run MAP_ID PROG REPEAT | drain MAP_ID COUNT | "
			"keep MAP_ID LOST_MAP_ID TOTAL TIMEOUT_S\n");
	return 2;
}
