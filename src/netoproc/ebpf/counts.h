/* What the counting filter (counts.bpf.c) hands over, in the layouts
 * netoproc/capture/counts.py reads; checked by tests/capture/test_counts.py
 * against a C compiler's own reading of this header. */
#ifndef NETOPROC_COUNTS_H
#define NETOPROC_COUNTS_H

/* One flow as the local host sees it (44 bytes). Addresses are IPv6 or
 * IPv4-mapped IPv6 (::ffff:a.b.c.d), in network order. */
struct flow_key {
	__u8 laddr[16];
	__u8 raddr[16];
	__u32 ifindex;
	__u16 lport; /* host order */
	__u16 rport;
	__u8 proto;
	__u8 pad[3];
};

/* What a flow moved since the counters were last taken (88 bytes). Bytes are
 * IP-layer bytes. The TCP figures count the segments this filter kept: the
 * ones it passes up (SYN, FIN, RST, DNS) the packet path counts. */
struct flow_counts {
	__u64 rx_bytes;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 tx_packets;
	__u64 first_ns; /* CLOCK_MONOTONIC */
	__u64 last_ns;
	__u32 retransmits; /* segments the local side sent again */
	__u32 segments_sent; /* with payload */
	__u32 peer_retransmits;
	__u32 dup_acks;
	__u32 rtt_samples; /* how many RTT samples went to the `rtt` ring */
	__u32 pad;
	__u64 pad2;
};

/* An RTT sample: a data segment sent, its acknowledgement received (Karn's
 * rule: never a segment sent again) (64 bytes). */
struct rtt_sample {
	struct flow_key key;
	__u32 pad;
	__u64 rtt_ns;
	__u64 at_ns; /* when the acknowledgement arrived, CLOCK_MONOTONIC */
};

/* config[0]: which of the two counter maps the filter fills now (0 or 1). */
/* overflow[0]: packets passed up because the counter map was full. */

#endif
