// SPDX-License-Identifier: GPL-2.0
/* Who owns a socket, told by the kernel at the moment a process uses it.
 *
 * Three tracepoints, attached as tp_btf programs (raw tracepoints the
 * verifier knows the arguments' types of, so fields are read with plain loads
 * rather than a helper call each), all in the context of the process that
 * uses the socket: sock_send_length and sock_recv_length (Linux >= 6.4; they fire in
 * sock_sendmsg/sock_recvmsg for every send and receive, whatever the system
 * call: send, write, sendmmsg, splice, io_uring) and inet_sock_set_state when
 * a process closes a TCP connection (a server that accepts and closes without
 * reading). Each socket and process is reported once, through a ring buffer:
 * the socket's addresses and ports, the process (tgid, start time, the group
 * leader's name: a thread may be called anything), its uid and cgroup, and
 * the network namespace. An LRU map remembers what was reported, so a busy socket costs
 * one event, not one per send; when its addresses change (an unconnected UDP
 * socket that connects) it is reported again.
 *
 * Built by scripts/build-bpf; the object ships with the package.
 */
#include "kernel.h"
#include "owners.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TCP_FIN_WAIT1 4
#define TCP_LAST_ACK 9

enum hook { HOOK_SEND = 1, HOOK_RECV = 2, HOOK_CLOSE = 3 };

struct seen_key {
	__u64 sk;
	__u32 tgid;
	__u32 pad;
};

/* 256 KiB: 2,730 events of 96 bytes. The reader drains it the moment it is
 * woken, and the kernel maps a ring's pages twice, all of them resident from
 * the start, so every KiB here is two of RSS. 5,000 connections closing at
 * once lose none; bench/owners.py --clients 2000 names every client. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct seen_key);
	__type(value, __u64);
} seen SEC(".maps");

/* The socket each hook last let pass on this CPU, already reported: a busy
 * socket's next send (or receive) is answered here, without hashing into
 * `seen`. One per hook, so a sender and a receiver sharing a CPU do not evict
 * each other. (A socket answered here does not refresh its `seen` entry; if
 * that is evicted meanwhile, the socket is reported once more: a repeat, never
 * a wrong owner.) */
struct recent {
	struct seen_key key;
	__u64 shape;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOOK_CLOSE + 1);
	__type(key, __u32);
	__type(value, struct recent);
} recent SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct owner_config);
} config SEC(".maps");

/* [0]: events the ring buffer had no room for */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* What the socket looks like now, folded to 64 bits: a change is reported again. */
static __always_inline __u64 fold(const struct owner_event *e)
{
	const __u64 *l = (const __u64 *)e->laddr, *r = (const __u64 *)e->raddr;
	__u64 h = ((__u64)e->lport << 32 | (__u64)e->rport << 16 | e->proto) * 0x9E3779B97F4A7C15ULL;
	h ^= l[0] * 0xC2B2AE3D27D4EB4FULL;
	h ^= l[1] * 0x165667B19E3779F9ULL;
	h ^= r[0] * 0x27D4EB2F165667C5ULL;
	h ^= r[1] * 0x94D049BB133111EBULL;
	return h ^ (h >> 31);
}

#define MAX_PIDNS_LEVEL 32 /* the kernel's own limit on nested pid namespaces */

/* The process's tgid as netoproc's pid namespace numbers it; 0 if it has none
 * there (a process of an enclosing or a sibling namespace). */
static __always_inline __u32 visible_tgid(void)
{
	__u32 zero = 0;
	struct owner_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || cfg->pidns_inum == 0)
		return bpf_get_current_pid_tgid() >> 32; /* the host's namespace */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct pid *pid = BPF_CORE_READ(task, group_leader, thread_pid);
	if (!pid)
		return 0;
	unsigned int deepest = BPF_CORE_READ(pid, level);
	for (unsigned int level = 0; level <= MAX_PIDNS_LEVEL && level <= deepest; level++) {
		struct upid upid;
		if (bpf_core_read(&upid, sizeof(upid), &pid->numbers[level]))
			return 0;
		if (BPF_CORE_READ(upid.ns, ns.inum) == cfg->pidns_inum)
			return upid.nr;
	}
	return 0;
}

/* Every send and receive of every process comes here, so the path to "seen
 * already" reads the socket directly (tp_btf: the verifier knows `sk`'s type,
 * so a field is one load, not a helper call) and calls one helper besides the
 * map lookup. What only a new socket needs is read after that. */
static __always_inline int report(struct sock *sk, enum hook hook)
{
	unsigned short family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0; /* unix, netlink and the rest: by far the most common, leave at once */
	__u8 proto = sk->sk_protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;

	struct owner_event e = {};
	e.family = family;
	e.proto = proto;
	e.hook = hook;
	e.lport = sk->__sk_common.skc_num;
	e.rport = __builtin_bswap16(sk->__sk_common.skc_dport);
	if (e.lport == 0 || (proto == IPPROTO_TCP && e.rport == 0))
		return 0; /* not bound, or a TCP socket not connected: nothing to match yet */
	if (family == AF_INET) {
		*(__u32 *)e.laddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)e.raddr = sk->__sk_common.skc_daddr;
	} else {
		__u32 *l = (__u32 *)e.laddr, *r = (__u32 *)e.raddr;
		for (int i = 0; i < 4; i++) {
			l[i] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			r[i] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];
		}
	}
	e.tgid = visible_tgid();
	if (e.tgid == 0)
		return 0; /* no pid netoproc could show */

	struct seen_key key = {.sk = (__u64)sk, .tgid = e.tgid};
	__u64 shape = fold(&e);
	__u32 slot = hook;
	struct recent *last = bpf_map_lookup_elem(&recent, &slot);
	if (last && last->key.sk == key.sk && last->key.tgid == key.tgid && last->shape == shape)
		return 0;
	__u64 *known = bpf_map_lookup_elem(&seen, &key);
	if (known && *known == shape)
		goto remember;

	e.uid = (__u32)bpf_get_current_uid_gid();
	e.cgroup = bpf_get_current_cgroup_id();
	e.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	BPF_CORE_READ_STR_INTO(&e.comm, task, group_leader, comm);
	e.started = BPF_CORE_READ(task, group_leader, start_time);

	if (bpf_ringbuf_output(&events, &e, sizeof(e), 0) != 0) {
		__u32 zero = 0;
		__u64 *count = bpf_map_lookup_elem(&lost, &zero);
		if (count)
			__sync_fetch_and_add(count, 1);
		return 0; /* not remembered: the next send tries again */
	}
	bpf_map_update_elem(&seen, &key, &shape, BPF_ANY);
remember:
	if (last) {
		last->key = key;
		last->shape = shape;
	}
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(on_send, struct sock *sk, int ret, int flags)
{
	return report(sk, HOOK_SEND);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(on_recv, struct sock *sk, int ret, int flags)
{
	return report(sk, HOOK_RECV);
}

/* Only the transitions a process makes itself, by closing the socket:
 * others happen in softirq context, where the current task is anybody. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state, struct sock *sk, int oldstate, int newstate)
{
	if (newstate != TCP_FIN_WAIT1 && newstate != TCP_LAST_ACK)
		return 0;
	return report(sk, HOOK_CLOSE);
}

char LICENSE[] SEC("license") = "GPL";
