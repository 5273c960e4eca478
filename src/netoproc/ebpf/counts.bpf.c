// SPDX-License-Identifier: GPL-2.0
/* Counting in the kernel: the capture socket's filter, which sums most packets
 * per flow where they arrive and hands user space only what it still needs.
 *
 * Attached to the AF_PACKET capture socket (SOCK_DGRAM: offset 0 is the
 * network header) with SO_ATTACH_BPF: nothing on the system changes. For each
 * packet it returns a snap length, as the classic filter it replaces did:
 *   - 0 for what it counted: TCP and UDP on IPv4 without options or fragments
 *     and IPv6 without extension headers, into a hash of per-flow counters;
 *   - the headers, or DNS whole, for what user space reads packet by packet:
 *     DNS (port 53), TCP SYN, FIN and RST (handshake RTT, connection state),
 *     other protocols, options, fragments, extension headers, super-packets
 *     without a length, and anything once the counter map is full (counted).
 * Flows are keyed as the engine keys them: interface, protocol, local and
 * remote address and port, local being the sender of an outgoing packet.
 *
 * Two counter maps take turns: user space switches `config[0]` to the other
 * one, lets the packets already inside this filter finish, and takes the
 * first with one batched lookup-and-delete, so no count is read twice or lost.
 * They are shared by all CPUs (atomic adds), not per-CPU: a per-CPU entry holds
 * a value for every possible CPU, 11 MiB per CPU for two full maps.
 *
 * TCP health for the segments counted here: retransmissions either way (a
 * segment whose sequence range that side already sent; keep-alives and
 * zero-window probes excepted), segments sent, duplicate ACKs, and RTT
 * samples under Karn's rule, each sent to the `rtt` ring buffer. The state
 * behind them (high-water marks, the open probe) outlives the counters, in
 * an LRU map of its own.
 *
 * Built by scripts/build-bpf; the object ships with the package.
 */
#include "kernel.h"
#include "counts.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define PACKET_OUTGOING 4
#define DNS_PORT 53
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
/* snap lengths, as the classic filter's (capture/bpf.py) */
#define HEADERS_V4 128
#define HEADERS_V6 256
#define WHOLE 0x40000
#define MAX_FLOWS 65536

struct counter_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_counts);
};
struct counter_map counts0 SEC(".maps");
struct counter_map counts1 SEC(".maps");

struct tcp_state {
	__u32 tx_hw; /* the highest sequence number each side has sent, + 1 */
	__u32 rx_hw;
	__u32 last_ack;
	__u32 probe_end; /* the open RTT probe: the ACK that resolves it */
	__u64 probe_ns;
	__u16 last_window;
	__u8 known; /* bits: tx_hw, rx_hw, last_ack */
	__u8 probe; /* bits: open, spoilt (sent again: Karn) */
	__u8 peer_window_zero;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct tcp_state);
} tcp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} rtt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} config SEC(".maps");

/* [0] packets passed up because the counter map was full; [1] RTT samples
 * the ring had no room for */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} overflow SEC(".maps");

static __always_inline void count_overflow(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&overflow, &which);
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline __s32 after(__u32 a, __u32 b) /* a - b in sequence space */
{
	return (__s32)(a - b);
}

/* A segment of `len` bytes from `seq`: was its range sent before? Moves the
 * side's high-water mark. Keep-alives (0 or 1 byte just below the mark) and
 * repeated zero-window probes are not retransmissions. */
static __always_inline int resent(__u32 *hw, __u8 *known, __u8 bit, __u32 seq, __u32 len,
				  int zero_window)
{
	__u32 end = seq + len;
	if (!(*known & bit)) {
		*hw = end;
		*known |= bit;
		return 0;
	}
	if (after(end, *hw) > 0) {
		*hw = end;
		return 0;
	}
	if (len <= 1 && end == *hw)
		return 0; /* keep-alive */
	if (len == 1 && zero_window)
		return 0;
	return 1;
}

static __always_inline void tcp_health(struct flow_key *key, struct flow_counts *c, int tx,
				       __u32 seq, __u32 ack, __u8 flags, __u16 window,
				       __u32 payload, __u64 now)
{
	struct tcp_state *st = bpf_map_lookup_elem(&tcp, key);
	if (!st) {
		struct tcp_state fresh = {};
		bpf_map_update_elem(&tcp, key, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&tcp, key);
		if (!st)
			return;
	}
	if (tx) {
		if (payload == 0)
			return;
		__sync_fetch_and_add(&c->segments_sent, 1);
		int again = resent(&st->tx_hw, &st->known, 1, seq, payload, st->peer_window_zero);
		if (again) {
			__sync_fetch_and_add(&c->retransmits, 1);
			if ((st->probe & 1) && after(seq, st->probe_end) < 0)
				st->probe |= 2;
		} else if (!(st->probe & 1)) {
			st->probe = 1;
			st->probe_end = seq + payload;
			st->probe_ns = now;
		}
		return;
	}
	if (payload > 0 && resent(&st->rx_hw, &st->known, 2, seq, payload, 0))
		__sync_fetch_and_add(&c->peer_retransmits, 1);
	if (!(flags & TCP_ACK))
		return;
	if ((st->probe & 1) && after(ack, st->probe_end) >= 0) {
		if (!(st->probe & 2)) {
			struct rtt_sample sample = {.rtt_ns = now - st->probe_ns, .at_ns = now};
			__builtin_memcpy(&sample.key, key, sizeof(*key));
			if (bpf_ringbuf_output(&rtt, &sample, sizeof(sample), 0) == 0)
				__sync_fetch_and_add(&c->rtt_samples, 1);
			else
				count_overflow(1);
		}
		st->probe = 0;
	}
	if (payload == 0 && (st->known & 4) && ack == st->last_ack && window == st->last_window)
		__sync_fetch_and_add(&c->dup_acks, 1);
	st->last_ack = ack;
	st->last_window = window;
	st->known |= 4;
	st->peer_window_zero = window == 0;
}

SEC("socket")
int count_flows(struct __sk_buff *skb)
{
	struct flow_key key = {};
	__u8 src[16] = {}, dst[16] = {};
	__u32 length, header, pass;
	__u8 proto;
	__u16 protocol = bpf_ntohs(skb->protocol);

	if (protocol == ETH_P_IP) {
		__u8 ip[20];
		if (bpf_skb_load_bytes(skb, 0, ip, sizeof(ip)))
			return HEADERS_V4;
		pass = HEADERS_V4;
		length = (__u32)ip[2] << 8 | ip[3];
		__u16 fragment = ((__u16)ip[6] << 8 | ip[7]) & 0x3FFF; /* MF and the offset */
		if (ip[0] != 0x45 || fragment || length == 0)
			return pass; /* options, fragments, super-packets: the packet path reads them */
		proto = ip[9];
		src[10] = src[11] = dst[10] = dst[11] = 0xff;
		__builtin_memcpy(&src[12], &ip[12], 4);
		__builtin_memcpy(&dst[12], &ip[16], 4);
		header = 20;
	} else if (protocol == ETH_P_IPV6) {
		__u8 ip[40];
		if (bpf_skb_load_bytes(skb, 0, ip, sizeof(ip)))
			return HEADERS_V6;
		pass = HEADERS_V6;
		length = 40 + ((__u32)ip[4] << 8 | ip[5]);
		proto = ip[6];
		if (length == 40)
			return pass; /* a jumbogram or BIG TCP: the packet path reads its length */
		__builtin_memcpy(src, &ip[8], 16);
		__builtin_memcpy(dst, &ip[24], 16);
		header = 40;
	} else {
		return 0; /* not IP: nothing to count, as before */
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return pass; /* extension headers, ICMP and the rest */

	__u8 l4[20] = {};
	if (bpf_skb_load_bytes(skb, header, l4, proto == IPPROTO_TCP ? 20 : 8))
		return pass;
	__u16 sport = (__u16)l4[0] << 8 | l4[1], dport = (__u16)l4[2] << 8 | l4[3];
	if (sport == DNS_PORT || dport == DNS_PORT)
		return WHOLE; /* the DNS observatory reads every message */
	__u8 flags = l4[13];
	if (proto == IPPROTO_TCP && (flags & (TCP_SYN | TCP_FIN | TCP_RST)))
		return pass;

	int tx = skb->pkt_type == PACKET_OUTGOING;
	if (tx) {
		__builtin_memcpy(key.laddr, src, 16);
		__builtin_memcpy(key.raddr, dst, 16);
		key.lport = sport;
		key.rport = dport;
	} else {
		__builtin_memcpy(key.laddr, dst, 16);
		__builtin_memcpy(key.raddr, src, 16);
		key.lport = dport;
		key.rport = sport;
	}
	key.ifindex = skb->ifindex;
	key.proto = proto;

	__u32 zero = 0;
	__u32 *active = bpf_map_lookup_elem(&config, &zero);
	void *counts = active && *active ? (void *)&counts1 : (void *)&counts0;
	__u64 now = bpf_ktime_get_ns();
	struct flow_counts *c = bpf_map_lookup_elem(counts, &key);
	if (!c) {
		struct flow_counts fresh = {.first_ns = now, .last_ns = now};
		bpf_map_update_elem(counts, &key, &fresh, BPF_NOEXIST);
		c = bpf_map_lookup_elem(counts, &key);
		if (!c) {
			count_overflow(0);
			return pass; /* full: this packet goes the packet path's way */
		}
	}
	if (tx) {
		__sync_fetch_and_add(&c->tx_bytes, length);
		__sync_fetch_and_add(&c->tx_packets, 1);
	} else {
		__sync_fetch_and_add(&c->rx_bytes, length);
		__sync_fetch_and_add(&c->rx_packets, 1);
	}
	if (now > c->last_ns)
		c->last_ns = now;
	if (proto == IPPROTO_TCP) {
		__u32 seq = (__u32)l4[4] << 24 | (__u32)l4[5] << 16 | (__u32)l4[6] << 8 | l4[7];
		__u32 ack = (__u32)l4[8] << 24 | (__u32)l4[9] << 16 | (__u32)l4[10] << 8 | l4[11];
		__u32 tcp_header = (l4[12] >> 4) * 4;
		__u32 payload = length > header + tcp_header ? length - header - tcp_header : 0;
		tcp_health(&key, c, tx, seq, ack, flags, (__u16)l4[14] << 8 | l4[15], payload, now);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
