"""The darwin capture against a recorded kernel: devices, the PKTAP clone, reads, cleanup.

`FakeBpfKernel` decodes every ioctl by docs/MACOS.md's numbers and layouts
(§1.7, §2.3) and refuses what xnu refuses (BIOCSBLEN or BIOCSWANTPKTAP
after BIOCSETIF, a read of the wrong size, BIOCSETIF on an unknown
interface), so these tests check the capture asks the kernel the right
things in the right order, and gives back what it was handed.
"""

from __future__ import annotations

import errno
import logging
import os
import struct

import pytest

from netoproc.capture import CaptureUnavailable
from netoproc.capture.darwin import PktapCapture, PlainBpfCapture, open_capture
from netoproc.decode.columnar import decode_block
from netoproc.model import Direction
from tests import builders as b
from tests.capture.darwin_kernel import (
    BIOCIMMEDIATE,
    BIOCSBLEN,
    BIOCSETIF,
    BIOCSRTIMEOUT,
    BIOCSTRUNCATE,
    BIOCSWANTPKTAP,
    DLT_EN10MB,
    DLT_NULL,
    DLT_RAW,
    SIOCIFCREATE,
    FakeBpfKernel,
    bpf_buffer,
    bpf_record,
    run_filter,
)

SYN = b.ipv4(b.TCP, b.tcp(50000, 443, flags=b.SYN), src="192.0.2.10", dst="198.51.100.7")
PKTAP_BUFFER = bpf_buffer(
    bpf_record(b.pktap_v1(b.ethernet(SYN), ifname="en0", flags=b.PTH_FLAG_DIR_OUT, pid=501,
                          comm="curl")),
    bpf_record(b.pktap_v1(b.null(SYN), dlt=DLT_NULL, ifname="lo0", flags=b.PTH_FLAG_DIR_IN,
                          pid=88, comm="nginx")),
)  # fmt: skip
DESCRIPTION = b"libpcap auto cloned device"  # Apple libpcap's mark (docs/MACOS.md §1.7)


def _filters(raw: bytes) -> list[tuple[int, int, bytes]]:
    """struct pktap_filter[8] (docs/MACOS.md §1.7): op, param, then the 24-byte union."""
    assert len(raw) == 8 * 32
    return [struct.unpack_from("<II24s", raw, i * 32) for i in range(8)]


def test_pktap_capture_is_set_up_as_libpcap_does() -> None:
    kernel = FakeBpfKernel(busy=2, buffers={"pktap": [PKTAP_BUFFER]})
    capture = open_capture(None, 1 << 18, True, kernel)
    assert isinstance(capture, PktapCapture)
    (fd,) = kernel.open_fds
    device = kernel.open_fds[fd]
    assert device.path == "/dev/bpf2"  # bpf0 and bpf1 were busy
    assert kernel.created == ["pktap0"] and device.interface == "pktap0"
    assert kernel.descriptions["pktap0"] == DESCRIPTION + f" - netoproc.{os.getpid()}\0".encode()
    # every interface type, loopback included: one PASS IF_TYPE 0 entry
    assert _filters(kernel.filters["pktap0"]) == [(1, 1, bytes(24))] + [(0, 0, bytes(24))] * 7
    assert (device.buffer, device.pktap, device.truncate) == (1 << 18, True, True)
    assert device.immediate and device.timeout == (0, 100_000)
    order = kernel.requests(fd)
    wanted = [BIOCSBLEN, BIOCSWANTPKTAP, BIOCSTRUNCATE, BIOCSETIF, BIOCIMMEDIATE, BIOCSRTIMEOUT]
    assert [r for r in order if r in wanted] == wanted
    capture.close()


def test_pktap_capture_reads_decodes_and_cleans_up(caplog: pytest.LogCaptureFixture) -> None:
    kernel = FakeBpfKernel(buffers={"pktap": [PKTAP_BUFFER, PKTAP_BUFFER]})
    capture = open_capture(None, 1 << 20, True, kernel)
    with caplog.at_level(logging.DEBUG, "netoproc"):
        (block,) = capture.read(0.01)
    # what a first run on a new macOS shows with NETOP_LOG=debug (docs/MACOS.md §9 item 1)
    assert "first PKTAP header: pth_length 156, flags 0x2, dlt 1, interface en0" in caplog.text
    batch = decode_block(block)
    assert batch.pid.tolist() == [501, 88]
    assert [batch.interfaces.name(i) for i in batch.iface.tolist()] == ["en0", "lo0"]
    assert batch.direction.tolist() == [Direction.TX, Direction.RX]
    assert batch.process_names == {501: "curl", 88: "nginx"}
    assert len(capture.drain()) == 1
    assert capture.read(0.01) == [] and capture.drain() == []
    capture.close()
    assert kernel.destroyed == ["pktap0"]
    assert kernel.open_fds == {} and kernel.sockets == set()


def test_buffer_size_is_what_the_kernel_granted() -> None:
    kernel = FakeBpfKernel(buffers={"pktap": [PKTAP_BUFFER]}, max_buffer=0x80000)
    capture = open_capture(None, 16 << 20, True, kernel)
    assert isinstance(capture, PktapCapture)
    assert capture.device.buffer_size == 0x80000  # reads ask for exactly this (the fake checks)
    assert len(capture.read(0)) == 1
    capture.close()


def test_one_interface_is_a_pass_by_name_filter() -> None:
    kernel = FakeBpfKernel()
    capture = open_capture("en0", 1 << 20, True, kernel)
    assert _filters(kernel.filters["pktap0"])[0] == (1, 2, b"en0".ljust(24, b"\0"))
    capture.close()


def test_an_unknown_interface_is_refused_before_anything_opens() -> None:
    kernel = FakeBpfKernel()
    with pytest.raises(CaptureUnavailable, match="cannot capture on en9: no such interface"):
        open_capture("en9", 1 << 20, True, kernel)
    assert kernel.open_fds == {} and kernel.created == []


def test_a_leaked_clone_of_ours_or_libpcaps_is_reused() -> None:
    kernel = FakeBpfKernel(interfaces=[(1, "lo0"), (4, "en0"), (9, "pktap3")])
    kernel.descriptions["pktap3"] = DESCRIPTION + b" - tcpdump.4242\0"
    capture = open_capture(None, 1 << 20, True, kernel)
    assert isinstance(capture, PktapCapture)
    assert SIOCIFCREATE not in [r for _, r in kernel.calls] and capture.source.endswith("pktap3")
    capture.close()
    assert kernel.destroyed == ["pktap3"]


@pytest.mark.parametrize(
    ("description", "attached"),
    [(DESCRIPTION + b" - tcpdump.4242\0", 1), (b"someone else's\0", 0), (b"", 0)],
    ids=["in-use", "not-libpcaps", "no-description"],
)
def test_other_clones_are_left_alone(description: bytes, attached: int) -> None:
    kernel = FakeBpfKernel(interfaces=[(1, "lo0"), (4, "en0"), (9, "pktap3")])
    kernel.descriptions["pktap3"] = description
    kernel.attached["pktap3"] = attached
    capture = open_capture(None, 1 << 20, True, kernel)
    capture.close()
    assert kernel.created == ["pktap0"] and kernel.destroyed == ["pktap0"]


def test_all_bpf_devices_busy_is_one_line_naming_them() -> None:
    kernel = FakeBpfKernel(busy=4, devices=4)
    with pytest.raises(CaptureUnavailable) as raised:
        open_capture(None, 1 << 20, True, kernel)
    assert str(raised.value) == (
        "cannot open BPF device: all of /dev/bpf0 to /dev/bpf3 are in use "
        "(close Wireshark, tcpdump, or other capture tools)"
    )


def test_no_permission_says_so() -> None:
    kernel = FakeBpfKernel(open_error=errno.EACCES)
    with pytest.raises(CaptureUnavailable, match=r"/dev/bpf0: permission denied \(run with sudo\)"):
        open_capture(None, 1 << 20, True, kernel)


@pytest.mark.parametrize(
    "kernel",
    [
        FakeBpfKernel(refuse={SIOCIFCREATE: errno.EPERM}),
        FakeBpfKernel(refuse={BIOCSWANTPKTAP: errno.EINVAL}),
        FakeBpfKernel(pktap_dlt=DLT_RAW),  # a kernel that ignores BIOCSWANTPKTAP
    ],
    ids=["no-clone", "no-wantpktap", "raw-dlt"],
)
def test_without_pktap_each_interface_gets_plain_bpf(
    kernel: FakeBpfKernel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "netoproc"):
        capture = open_capture(None, 1 << 20, False, kernel)
    assert isinstance(capture, PlainBpfCapture)
    assert "PKTAP capture is unavailable" in caplog.text
    assert kernel.destroyed == kernel.created  # a clone made before the failure is gone
    devices = {d.interface: d for d in kernel.open_fds.values()}
    assert set(devices) == {"lo0", "en0"}
    assert not any(d.pktap for d in devices.values())
    # the kernel filter keeps IPv4 headers (link header + 128) for DNS too without keep_dns
    dns = b.ipv4(b.UDP, b.udp(40000, 53, bytes(100)))
    en0, lo0 = devices["en0"].program, devices["lo0"].program
    assert en0 is not None and lo0 is not None
    assert (run_filter(en0, b.ethernet(dns)), run_filter(lo0, b.null(dns))) == (142, 132)
    capture.close()
    assert kernel.open_fds == {}


def test_plain_bpf_reads_every_interface() -> None:
    mac = bytes.fromhex("a483e7000001")
    kernel = FakeBpfKernel(
        refuse={SIOCIFCREATE: errno.EPERM},
        dlts={"lo0": DLT_NULL, "en0": DLT_EN10MB, "utun3": 147},  # DLT_USER0: not decoded
        interfaces=[(1, "lo0"), (4, "en0"), (12, "utun3")],
        macs={"en0": mac},
        buffers={
            "en0": [bpf_buffer(bpf_record(b.ethernet(SYN, src=mac), hdrlen=18))],
            "lo0": [bpf_buffer(bpf_record(b.null(SYN)))],
        },
    )
    capture = open_capture(None, 1 << 20, True, kernel)
    assert isinstance(capture, PlainBpfCapture)
    assert {d.interface for d in kernel.open_fds.values()} == {"lo0", "en0"}
    batches = [decode_block(block) for block in capture.read(0.01)]
    seen = {
        batch.interfaces.name(int(batch.iface[0])): int(batch.direction[0]) for batch in batches
    }
    assert seen == {"en0": Direction.TX, "lo0": Direction.UNKNOWN}
    assert all(batch.pid.tolist() == [-1] for batch in batches)
    capture.close()


def test_kernel_drops_survive_the_32_bit_counter_wrapping() -> None:
    kernel = FakeBpfKernel()
    capture = open_capture(None, 1 << 20, True, kernel)
    assert isinstance(capture, PktapCapture)
    device = kernel.open_fds[capture.device.fd]
    device.drops = 0xFFFFFFFA
    assert capture.kernel_drops() == 0xFFFFFFFA
    device.drops = 0x1_00000005  # reported as 5
    assert capture.kernel_drops() == 0x1_00000005
    capture.close()


def test_a_failing_read_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    kernel = FakeBpfKernel(buffers={"pktap": [PKTAP_BUFFER]}, read_error=errno.ENXIO)
    capture = open_capture(None, 1 << 20, True, kernel)
    with caplog.at_level(logging.WARNING, "netoproc"):
        assert capture.read(0) == []
    assert "reading /dev/bpf0 on pktap0 failed" in caplog.text
    capture.close()
