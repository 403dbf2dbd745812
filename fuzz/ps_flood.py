"""Issue 15's parameter-set flood, measured: one access unit of a slice followed by N distinct PPS.

    python fuzz/ps_flood.py [--count 20000] [--size 1024] [--codec h264|h265]

Prints the CPU seconds the depacketiser spent and what it kept (stored parameter-set bytes and count, and whether
the unit came out or was dropped as oversize).
"""

from __future__ import annotations

import argparse
import random
import struct
import time

from core_ext.depacketize import H264Depacketizer, H265Depacketizer

H264_IDR = b"\x65" + bytes(range(1, 40))
H265_IDR = b"\x26\x01" + bytes(range(1, 60))


def rtp(seq: int, ts: int, payload: bytes, marker: bool = False, pt: int = 96) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, 0x11223344) + payload


def ue(value: int) -> str:
    """Exp-Golomb ue(v) as a bit string."""
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def pps(pps_id: int, size: int, h265: bool, tag: int, filler: bytes = b"") -> bytes:
    """A PPS of `size` bytes whose pic_parameter_set_id is `pps_id`, made distinct by `tag` in its last 4 bytes
    (the attack's worst case: two sets compare equal up to their end)."""
    header = b"\x44\x01" if h265 else b"\x68"
    bits = ue(pps_id) + ue(0)  # pps_id, then the SPS it refers to
    bits += "0" * (-len(bits) % 8)
    body = int(bits, 2).to_bytes(len(bits) // 8, "big")
    pad = max(0, size - len(header) - len(body) - 4)
    return header + body + (filler[:pad] + bytes(pad))[:pad] + tag.to_bytes(4, "big")


def flood(count: int, size: int, h265: bool, seed: int = 15) -> list[bytes]:
    """A keyframe slice, then `count` distinct PPS of `size` bytes (ids cycling through every id the codec allows),
    all in one access unit (marker on the last)."""
    filler = random.Random(seed).randbytes(size)
    ids = 64 if h265 else 256
    packets = [rtp(0, 0, H265_IDR if h265 else H264_IDR)]
    for i in range(count):
        packets.append(rtp(i + 1, 0, pps(i % ids, size, h265, i, filler), marker=i == count - 1))
    return packets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--codec", choices=["h264", "h265"], default="h264")
    args = ap.parse_args()
    packets = flood(args.count, args.size, args.codec == "h265")
    dep = H265Depacketizer() if args.codec == "h265" else H264Depacketizer()
    start = time.process_time()
    units = [au for p in packets for au in dep.push(p)]
    cpu = time.process_time() - start
    stored = dep.parameter_sets()
    count = getattr(dep, "parameter_set_count", None)  # absent before the fix: count the start codes
    if count is None:
        count = stored.count(b"\x00\x00\x00\x01")
    print(
        f"{args.codec} {args.count} x {args.size} B PPS in one AU: cpu {cpu:.3f} s, stored {len(stored)} B"
        f" ({count} sets), units out {len(units)},"
        f" oversized {dep.stats.oversized}"
    )


if __name__ == "__main__":
    main()
