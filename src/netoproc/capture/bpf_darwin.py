"""Darwin's BPF device and PKTAP interface, as data: ioctl numbers, kernel
structures, and the walk of a BPF read buffer.

Pure (no I/O, no macOS library), so every layout here is checked on Linux
against docs/MACOS.md. Sources, all xnu-11417.101.15 unless noted:

- ioctl encoding: `bsd/sys/ioccom.h` (`_IOC`); BPF ioctls: `bsd/net/bpf.h`;
  interface ioctls: `bsd/sys/sockio.h`, `bsd/sys/sockio_private.h`.
- `struct bpf_hdr` (`BPF_TIMEVAL` is `timeval32` on LP64), `bpf_stat`,
  `bpf_program`, `bpf_insn`, `BPF_WORDALIGN`: `bsd/net/bpf.h`.
- `struct ifreq`, `struct ifdrv` (`#pragma pack(4)`): `bsd/net/if.h`;
  `struct if_descreq`: `bsd/net/if_private.h`.
- `struct pktap_header` (v1), `struct pktap_v2_hdr`, `struct pktap_filter`,
  `PTH_FLAG_*`, `PKTP_CMD_FILTER_SET`: `bsd/net/pktap.h`.
- The plain-BPF filter's snap lengths follow `capture/bpf.py` (Linux).

Everything is little-endian: every Mac is, and the kernel writes these
structures in host order.
"""

from __future__ import annotations

import ctypes
import struct

from netoproc.capture import bpf
from netoproc.capture.records import LINKTYPE_DLT_RAW_12, LINKTYPE_ETHERNET, LINKTYPE_NULL
from netoproc.model import DNS_PORT

# -- ioctl numbers (bsd/sys/ioccom.h) -----------------------------------------

IOCPARM_MASK = 0x1FFF
IOC_VOID = 0x20000000
IOC_OUT = 0x40000000
IOC_IN = 0x80000000
IOC_INOUT = IOC_IN | IOC_OUT


def _ioc(direction: int, group: str, number: int, size: int) -> int:
    return direction | (size & IOCPARM_MASK) << 16 | ord(group) << 8 | number


def _io(group: str, number: int) -> int:
    return _ioc(IOC_VOID, group, number, 0)


def _ior(group: str, number: int, ctype: type[ctypes._CData]) -> int:
    return _ioc(IOC_OUT, group, number, ctypes.sizeof(ctype))


def _iow(group: str, number: int, ctype: type[ctypes._CData]) -> int:
    return _ioc(IOC_IN, group, number, ctypes.sizeof(ctype))


def _iowr(group: str, number: int, ctype: type[ctypes._CData]) -> int:
    return _ioc(IOC_INOUT, group, number, ctypes.sizeof(ctype))


# -- structures ---------------------------------------------------------------

IFNAMSIZ = 16
PKTAP_IFXNAMESIZE = IFNAMSIZ + 8
MAXCOMLEN = 16
IF_DESCSIZE = 128
PKTAP_MAX_FILTERS = 8


class Struct(ctypes.LittleEndianStructure):
    """Natural alignment, as the C compiler lays the structure out."""


class Packed4(ctypes.LittleEndianStructure):
    """`#pragma pack(4)`: 8-byte members are aligned to 4 bytes only."""

    _pack_ = 4
    _layout_ = "ms"  # what _pack_ implies; said so Python >= 3.14 does not warn


class Timeval32(Struct):
    _fields_ = (("tv_sec", ctypes.c_int32), ("tv_usec", ctypes.c_int32))


class Timeval(Struct):
    """`struct timeval` on LP64 (`user64_timeval`): 64-bit seconds, 32-bit microseconds."""

    _fields_ = (("tv_sec", ctypes.c_int64), ("tv_usec", ctypes.c_int32))


class BpfHdr(Struct):
    _fields_ = (
        ("bh_tstamp", Timeval32),
        ("bh_caplen", ctypes.c_uint32),
        ("bh_datalen", ctypes.c_uint32),
        ("bh_hdrlen", ctypes.c_uint16),
    )


SIZEOF_BPF_HDR = 18  # the kernel's SIZEOF_BPF_HDR: the struct without its tail padding


class BpfStat(Struct):
    _fields_ = (("bs_recv", ctypes.c_uint), ("bs_drop", ctypes.c_uint))


class BpfInsn(Struct):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class BpfProgram(Struct):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p))


class IfReqData(ctypes.Union):
    """The part of `ifr_ifru` we use; sized and aligned as the whole union (sockaddr, caddr_t)."""

    _fields_ = (
        ("ifru_intval", ctypes.c_int),
        ("ifru_data", ctypes.c_void_p),
        ("ifru_addr", ctypes.c_uint8 * 16),
    )


class IfReq(Struct):
    _fields_ = (("ifr_name", ctypes.c_char * IFNAMSIZ), ("ifr_ifru", IfReqData))


class IfDescReq(Struct):
    _fields_ = (
        ("ifdr_name", ctypes.c_char * IFNAMSIZ),
        ("ifdr_len", ctypes.c_uint32),
        ("ifdr_desc", ctypes.c_uint8 * IF_DESCSIZE),
    )


class IfDrv(Packed4):
    _fields_ = (
        ("ifd_name", ctypes.c_char * IFNAMSIZ),
        ("ifd_cmd", ctypes.c_ulong),
        ("ifd_len", ctypes.c_size_t),
        ("ifd_data", ctypes.c_void_p),
    )


class PktapFilterParam(ctypes.Union):
    _fields_ = (
        ("if_type", ctypes.c_uint32),
        ("if_name", ctypes.c_char * PKTAP_IFXNAMESIZE),
    )


class PktapFilter(Struct):
    _fields_ = (
        ("filter_op", ctypes.c_uint32),
        ("filter_param", ctypes.c_uint32),
        ("param", PktapFilterParam),
    )


PktapFilters = PktapFilter * PKTAP_MAX_FILTERS


class PktapHeader(Struct):
    """`struct pktap_header` (v1) as of xnu-11417; older kernels write a prefix of it.

    `pth_ipproto` moved in xnu-11417 (docs/MACOS.md §1.3): never read it.
    """

    _fields_ = (
        ("pth_length", ctypes.c_uint32),
        ("pth_type_next", ctypes.c_uint32),
        ("pth_dlt", ctypes.c_uint32),
        ("pth_ifname", ctypes.c_char * PKTAP_IFXNAMESIZE),
        ("pth_flags", ctypes.c_uint32),
        ("pth_protocol_family", ctypes.c_uint32),
        ("pth_frame_pre_length", ctypes.c_uint32),
        ("pth_frame_post_length", ctypes.c_uint32),
        ("pth_pid", ctypes.c_int32),
        ("pth_comm", ctypes.c_char * (MAXCOMLEN + 1)),
        ("pth_ipproto", ctypes.c_uint8),
        ("pth_trace_tag", ctypes.c_uint16),
        ("pth_svc", ctypes.c_uint32),
        ("pth_iftype", ctypes.c_uint16),
        ("pth_ifunit", ctypes.c_uint16),
        ("pth_epid", ctypes.c_int32),
        ("pth_ecomm", ctypes.c_char * (MAXCOMLEN + 1)),
        ("pth_pad2", ctypes.c_uint8),
        ("pth_pad3", ctypes.c_uint16),
        ("pth_flowid", ctypes.c_uint32),
        ("pth_comp_gencnt", ctypes.c_uint32),
        ("pth_tstamp", Timeval32),
        ("pth_uuid", ctypes.c_uint8 * 16),
        ("pth_euuid", ctypes.c_uint8 * 16),
    )


# The first public header (xnu-2422) ended after pth_ecomm: the smallest v1
# header a kernel writes, and all the fields we read.
PKTAP_V1_MIN_LENGTH = 108


class PktapV2Header(Struct):
    """`struct pktap_v2_hdr`: a fixed part; strings follow at byte offsets (0 = absent)."""

    _fields_ = (
        ("pth_length", ctypes.c_uint8),
        ("pth_uuid_offset", ctypes.c_uint8),
        ("pth_e_uuid_offset", ctypes.c_uint8),
        ("pth_ifname_offset", ctypes.c_uint8),
        ("pth_comm_offset", ctypes.c_uint8),
        ("pth_e_comm_offset", ctypes.c_uint8),
        ("pth_dlt", ctypes.c_uint16),
        ("pth_frame_pre_length", ctypes.c_uint16),
        ("pth_frame_post_length", ctypes.c_uint16),
        ("pth_iftype", ctypes.c_uint16),
        ("pth_ipproto", ctypes.c_uint16),
        ("pth_protocol_family", ctypes.c_uint32),
        ("pth_svc", ctypes.c_uint32),
        ("pth_flowid", ctypes.c_uint32),
        ("pth_pid", ctypes.c_int32),
        ("pth_e_pid", ctypes.c_int32),
        ("pth_flags", ctypes.c_uint32),
    )


PTH_FLAG_DIR_IN = 0x00000001
PTH_FLAG_DIR_OUT = 0x00000002
PTH_FLAG_PROC_DELEGATED = 0x00000004
PTH_FLAG_V2_HDR = 0x00080000
PTH_FLAGS_AT = 36  # pth_flags sits here in v1 and v2: it tells them apart

PKTP_CMD_FILTER_SET = 3
PKTAP_FILTER_OP_PASS = 1
PKTAP_FILTER_PARAM_IF_TYPE = 1
PKTAP_FILTER_PARAM_IF_NAME = 2

# -- ioctls -------------------------------------------------------------------

BIOCGBLEN = _ior("B", 102, ctypes.c_uint)
BIOCSBLEN = _iowr("B", 102, ctypes.c_uint)
BIOCSETF = _iow("B", 103, BpfProgram)
BIOCGDLT = _ior("B", 106, ctypes.c_uint)
BIOCSETIF = _iow("B", 108, IfReq)
BIOCSRTIMEOUT = _iow("B", 109, Timeval)
BIOCGSTATS = _ior("B", 111, BpfStat)
BIOCIMMEDIATE = _iow("B", 112, ctypes.c_uint)
BIOCGIFATTACHCOUNT = _iowr("B", 125, IfReq)
BIOCSWANTPKTAP = _iowr("B", 127, ctypes.c_uint)
BIOCSTRUNCATE = _iow("B", 129, ctypes.c_uint)

SIOCIFCREATE = _iowr("i", 120, IfReq)
SIOCIFDESTROY = _iow("i", 121, IfReq)
SIOCSDRVSPEC = _iow("i", 123, IfDrv)
SIOCSIFDESC = _iowr("i", 143, IfDescReq)
SIOCGIFDESC = _iowr("i", 144, IfDescReq)

# -- link types ---------------------------------------------------------------

DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW = 12
DLT_PKTAP = 149  # DLT_USER2 in the kernel; 258 only in files
# The link types we decode, DLT (kernel) -> LINKTYPE (RecordBlock).
LINKTYPE_OF_DLT = {
    DLT_NULL: LINKTYPE_NULL,
    DLT_EN10MB: LINKTYPE_ETHERNET,
    DLT_RAW: LINKTYPE_DLT_RAW_12,
}

# Loopback and utun headers carry the address family in host order (docs/MACOS.md §2.4).
AF_INET = 2
AF_INET6_DARWIN = 30

# -- read buffers -------------------------------------------------------------


class BpfBufferError(Exception):
    """A read buffer whose records do not add up; `starts` holds the good ones before it."""

    def __init__(self, message: str, starts: list[int]) -> None:
        super().__init__(message)
        self.starts = starts


def wordalign(n: int) -> int:
    """BPF_WORDALIGN: records start on 4-byte boundaries."""
    return (n + 3) & ~3


_CAPLEN_AND_HDRLEN = struct.Struct("<I4xH")  # bh_caplen, (bh_datalen), bh_hdrlen
_CAPLEN_AT = BpfHdr.bh_caplen.offset


def record_starts(buf: bytes, length: int) -> list[int]:
    """Offsets of the records in the first `length` bytes of a read buffer.

    Walks as the kernel writes them: each record is its header (`bh_hdrlen`
    bytes, padding included) then `bh_caplen` bytes, the next one at the
    word-aligned end. Raises `BpfBufferError` if a record runs past the end.
    """
    starts: list[int] = []
    at = 0
    unpack = _CAPLEN_AND_HDRLEN.unpack_from
    while at < length:
        if at + SIZEOF_BPF_HDR > length:
            raise BpfBufferError(f"BPF buffer ends inside a record header at byte {at}", starts)
        caplen, hdrlen = unpack(buf, at + _CAPLEN_AT)
        if hdrlen < SIZEOF_BPF_HDR or at + hdrlen + caplen > length:
            raise BpfBufferError(
                f"BPF record at byte {at} (header {hdrlen}, captured {caplen}) "
                f"does not fit the {length}-byte buffer",
                starts,
            )
        starts.append(at)
        at = wordalign(at + hdrlen + caplen)
    return starts


# -- the plain-BPF filter (fallback without PKTAP) ----------------------------

LD_W_ABS = 0x20
AND_K = 0x54


def headers_and_dns(dlt: int, keep_dns: bool = True) -> bytes:
    """A classic BPF program for one interface's link type: IP headers of every
    packet, all of a DNS packet when `keep_dns`, nothing for non-IP frames.

    The same program as the Linux capture's, with loads shifted past the link
    header; the snap length counts from the start of the link header.
    """
    link = {DLT_EN10MB: 14, DLT_NULL: 4, DLT_RAW: 0}[dlt]
    listing: list[bpf.Instruction]
    if dlt == DLT_EN10MB:
        listing = [
            (None, bpf.LD_H_ABS, 12, 0, 0),
            (None, bpf.JEQ_K, 0x0800, "v4", 0),
            (None, bpf.JEQ_K, 0x86DD, "v6", "drop"),
        ]
    elif dlt == DLT_NULL:  # a host-order (little-endian) family; accept either order
        little_v4, little_v6 = AF_INET << 24, AF_INET6_DARWIN << 24
        listing = [
            (None, LD_W_ABS, 0, 0, 0),
            (None, bpf.JEQ_K, little_v4, "v4", 0),
            (None, bpf.JEQ_K, AF_INET, "v4", 0),
            (None, bpf.JEQ_K, little_v6, "v6", 0),
            (None, bpf.JEQ_K, AF_INET6_DARWIN, "v6", "drop"),
        ]
    else:
        listing = [
            (None, bpf.LD_B_ABS, 0, 0, 0),
            (None, AND_K, 0xF0, 0, 0),
            (None, bpf.JEQ_K, 0x40, "v4", 0),
            (None, bpf.JEQ_K, 0x60, "v6", "drop"),
        ]
    dns = "whole" if keep_dns else "v4_headers"
    dns6 = "whole" if keep_dns else "v6_headers"
    listing += [
        ("v4", bpf.LD_B_ABS, link + 9, 0, 0),
        (None, bpf.JEQ_K, 17, "v4_ports", 0),
        (None, bpf.JEQ_K, 6, "v4_ports", "v4_headers"),
        ("v4_ports", bpf.LD_H_ABS, link + 6, 0, 0),
        (None, bpf.JSET_K, 0x1FFF, "v4_headers", 0),  # a later fragment has no ports
        (None, bpf.LDX_B_MSH, link, 0, 0),
        (None, bpf.LD_H_IND, link, 0, 0),
        (None, bpf.JEQ_K, DNS_PORT, dns, 0),
        (None, bpf.LD_H_IND, link + 2, 0, 0),
        (None, bpf.JEQ_K, DNS_PORT, dns, "v4_headers"),
        ("v6", bpf.LD_B_ABS, link + 6, 0, 0),
        (None, bpf.JEQ_K, 17, "v6_ports", 0),
        (None, bpf.JEQ_K, 6, "v6_ports", "v6_headers"),
        ("v6_ports", bpf.LD_H_ABS, link + 40, 0, 0),
        (None, bpf.JEQ_K, DNS_PORT, dns6, 0),
        (None, bpf.LD_H_ABS, link + 42, 0, 0),
        (None, bpf.JEQ_K, DNS_PORT, dns6, "v6_headers"),
        ("v4_headers", bpf.RET_K, link + bpf.HEADERS_V4, 0, 0),
        ("v6_headers", bpf.RET_K, link + bpf.HEADERS_V6, 0, 0),
        ("whole", bpf.RET_K, bpf.WHOLE, 0, 0),
        ("drop", bpf.RET_K, 0, 0, 0),
    ]
    return bpf.assemble(listing)
