"""The darwin capture's ioctl numbers and kernel structures, against docs/MACOS.md.

Every expected number below is copied from docs/MACOS.md (section in
the comment), which computed them from xnu's headers independently of this
code; a transcription slip in `capture/bpf_darwin.py` shows up as a mismatch.
"""

from __future__ import annotations

import ctypes

import pytest

from netoproc.capture import bpf_darwin as k

# docs/MACOS.md §2.3 (LP64, computed from _IOC in xnu bsd/sys/ioccom.h)
IOCTLS = {
    "BIOCGBLEN": 0x40044266,
    "BIOCSBLEN": 0xC0044266,
    "BIOCSETF": 0x80104267,
    "BIOCGDLT": 0x4004426A,
    "BIOCSETIF": 0x8020426C,
    "BIOCSRTIMEOUT": 0x8010426D,
    "BIOCGSTATS": 0x4008426F,
    "BIOCIMMEDIATE": 0x80044270,
    "BIOCSWANTPKTAP": 0xC004427F,
    "BIOCSTRUNCATE": 0x80044281,
    "SIOCIFCREATE": 0xC0206978,
    "SIOCIFDESTROY": 0x80206979,
    "SIOCSDRVSPEC": 0x8028697B,
    "SIOCSIFDESC": 0xC094698F,
    "SIOCGIFDESC": 0xC0946990,
}


@pytest.mark.parametrize(("name", "value"), IOCTLS.items())
def test_ioctl_numbers_are_the_documented_values(name: str, value: int) -> None:
    assert getattr(k, name) == value


def test_attach_count_ioctl() -> None:
    # xnu bsd/net/bpf.h _IOWR('B', 125, struct ifreq), computed by hand
    by_hand = 0xC0000000 | 32 << 16 | ord("B") << 8 | 125
    assert by_hand == k.BIOCGIFATTACHCOUNT


def _layout(struct: type[ctypes.Structure]) -> dict[str, int]:
    return {name: getattr(struct, name).offset for name, *_ in struct._fields_}


def test_bpf_hdr() -> None:
    # docs/MACOS.md §2.1: timeval32 at 0, caplen 8, datalen 12, hdrlen 16; sizeof 20
    assert _layout(k.BpfHdr) == {"bh_tstamp": 0, "bh_caplen": 8, "bh_datalen": 12, "bh_hdrlen": 16}
    assert ctypes.sizeof(k.BpfHdr) == 20
    assert k.SIZEOF_BPF_HDR == 18


@pytest.mark.parametrize(
    ("struct", "size"),
    [
        (k.BpfStat, 8),  # §2.3 bpf_stat {u_int bs_recv; u_int bs_drop;}
        (k.BpfProgram, 16),  # §2.3 BIOCSETF: 16 B on LP64
        (k.IfReq, 32),  # §2.3 BIOCSETIF: struct ifreq 32 B
        (k.Timeval, 16),  # §2.3 BIOCSRTIMEOUT: struct timeval 16 B
        (k.IfDescReq, 148),  # §2.3 if_descreq = 16 + 4 + 128
        (k.PktapFilter, 32),  # §1.7
        (k.PktapFilters, 256),  # §1.7 PKTAP_MAX_FILTERS 8 x 32
        (k.IfDrv, 40),  # §1.7 #pragma pack(4), LP64
        (k.PktapHeader, 156),  # §1.3
        (k.PktapV2Header, 40),  # §1.4
    ],
)
def test_structure_sizes(struct: type[ctypes.Structure], size: int) -> None:
    assert ctypes.sizeof(struct) == size


def test_ifdrv_is_packed_to_4() -> None:
    # {char ifd_name[16]; unsigned long ifd_cmd; size_t ifd_len; void *ifd_data;}
    assert _layout(k.IfDrv) == {"ifd_name": 0, "ifd_cmd": 16, "ifd_len": 24, "ifd_data": 32}


def test_pktap_filter() -> None:
    # §1.7: {u32 filter_op; u32 filter_param; union {u32 if_type; char if_name[24];}}
    assert _layout(k.PktapFilter) == {"filter_op": 0, "filter_param": 4, "param": 8}
    assert (k.PKTAP_FILTER_OP_PASS, k.PKTAP_FILTER_PARAM_IF_TYPE) == (1, 1)
    assert (k.PKTAP_FILTER_PARAM_IF_NAME, k.PKTP_CMD_FILTER_SET) == (2, 3)


def test_pktap_v1_header() -> None:
    # docs/MACOS.md §1.3, xnu-11417.101.15
    assert _layout(k.PktapHeader) == {
        "pth_length": 0, "pth_type_next": 4, "pth_dlt": 8, "pth_ifname": 12, "pth_flags": 36,
        "pth_protocol_family": 40, "pth_frame_pre_length": 44, "pth_frame_post_length": 48,
        "pth_pid": 52, "pth_comm": 56, "pth_ipproto": 73, "pth_trace_tag": 74, "pth_svc": 76,
        "pth_iftype": 80, "pth_ifunit": 82, "pth_epid": 84, "pth_ecomm": 88, "pth_pad2": 105,
        "pth_pad3": 106, "pth_flowid": 108, "pth_comp_gencnt": 112, "pth_tstamp": 116,
        "pth_uuid": 124, "pth_euuid": 140,
    }  # fmt: skip
    assert k.PKTAP_V1_MIN_LENGTH == 108  # §1.3: xnu-2422's header, through pth_ecomm


def test_pktap_v2_header() -> None:
    # docs/MACOS.md §1.4
    assert _layout(k.PktapV2Header) == {
        "pth_length": 0, "pth_uuid_offset": 1, "pth_e_uuid_offset": 2, "pth_ifname_offset": 3,
        "pth_comm_offset": 4, "pth_e_comm_offset": 5, "pth_dlt": 6, "pth_frame_pre_length": 8,
        "pth_frame_post_length": 10, "pth_iftype": 12, "pth_ipproto": 14,
        "pth_protocol_family": 16, "pth_svc": 20, "pth_flowid": 24, "pth_pid": 28,
        "pth_e_pid": 32, "pth_flags": 36,
    }  # fmt: skip


def test_pktap_flags_and_link_types() -> None:
    # docs/MACOS.md §1.5 and §1.2
    assert (k.PTH_FLAG_DIR_IN, k.PTH_FLAG_DIR_OUT, k.PTH_FLAG_PROC_DELEGATED) == (1, 2, 4)
    assert k.PTH_FLAG_V2_HDR == 0x80000
    assert (k.DLT_NULL, k.DLT_EN10MB, k.DLT_RAW, k.DLT_PKTAP) == (0, 1, 12, 149)


def test_wordalign() -> None:
    # docs/MACOS.md §2.2: BPF_WORDALIGN(x) = ((x)+3) & ~3
    assert [k.wordalign(n) for n in (0, 1, 3, 4, 5, 174)] == [0, 4, 4, 4, 8, 176]
