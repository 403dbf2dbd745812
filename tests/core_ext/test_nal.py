"""The NAL helpers of core_ext/nal.pxd as gop.pyx uses them: a keyframe begins with its parameter sets."""

from __future__ import annotations

import pytest
from helpers.rtp_synth import AUD, H5_IDR, H5_PPS, H5_SPS, H5_VPS, IDR, PPS, SPS, annexb

from core_ext.gop import starts_with_parameter_sets

H5_AUD = b"\x46\x01\x10"


@pytest.mark.parametrize(
    ("codec", "data", "expected"),
    [
        ("h264", annexb(SPS, PPS, IDR), True),
        ("h264", annexb(AUD, SPS, PPS, IDR), True),
        ("h264", b"\x00\x00\x01" + SPS, True),  # 3-byte start code
        ("h264", annexb(PPS, IDR), False),  # a PPS alone does not start a decodable unit
        ("h264", annexb(AUD, IDR), False),
        ("h264", annexb(IDR), False),
        ("h264", annexb(AUD), False),  # nothing after the delimiter
        ("h264", SPS, False),  # no start code
        ("h264", b"", False),
        ("h264", b"\x00\x00\x01", False),  # a start code without a header byte
        ("h265", annexb(H5_VPS, H5_SPS, H5_PPS, H5_IDR), True),
        ("h265", annexb(H5_AUD, H5_VPS, H5_SPS, H5_PPS, H5_IDR), True),
        ("h265", annexb(H5_SPS, H5_PPS, H5_IDR), True),
        ("h265", annexb(H5_PPS, H5_IDR), False),
        ("h265", annexb(H5_AUD, H5_IDR), False),
        ("h265", annexb(SPS, PPS, IDR), False),  # H.264 types read as H.265 ones
    ],
)
def test_starts_with_parameter_sets(codec: str, data: bytes, expected: bool) -> None:
    assert starts_with_parameter_sets(codec, data) is expected
