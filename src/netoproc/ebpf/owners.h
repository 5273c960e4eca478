/* What the owner tracer (owners.bpf.c) reports: the layout
 * netoproc/platform/owners.py reads, checked by tests/platform/test_owners.py
 * against a C compiler's own reading of this header. */
#ifndef NETOPROC_OWNERS_H
#define NETOPROC_OWNERS_H

/* One sighting (88 bytes). */
struct owner_event {
	__u64 cgroup;
	__u64 started; /* the process's start (ns since boot): with tgid, one incarnation */
	__u32 tgid;
	__u32 uid;
	__u32 netns;
	__u16 family;
	__u8 proto;
	__u8 hook;
	__u8 laddr[16]; /* AF_INET: the address in the first 4 bytes */
	__u8 raddr[16];
	__u16 lport; /* host order */
	__u16 rport; /* host order */
	__u32 pad;
	char comm[16];
};

/* Set by netoproc before the programs attach: the inode number of the pid
 * namespace its /proc numbers processes in (0 for the host's), so processes
 * are reported by the pids netoproc shows. */
struct owner_config {
	__u32 pidns_inum;
	__u32 pad;
};

#endif
