"""H.264 / H.265 depacketising to access units (core_ext.depacketize), from synthetic packets."""

from __future__ import annotations

import random
import time

import pytest
from helpers.rtp_synth import (
    AUD,
    H5_CRA,
    H5_IDR,
    H5_PPS,
    H5_SPS,
    H5_TRAIL,
    H5_VPS,
    IDR,
    PPS,
    SLICE,
    SPS,
    Stream,
    annexb,
    ap_h265,
    fu_a,
    fu_h265,
    rtp,
    stap_a,
)

from core_ext.depacketize import (
    MAX_PARAMETER_SET_BYTES,
    MAX_PARAMETER_SETS_PER_KIND,
    AccessUnit,
    H264Depacketizer,
    H265Depacketizer,
)
from fuzz.ps_flood import flood, pps, ue


def push_all(dep: H264Depacketizer | H265Depacketizer, packets: list[bytes]) -> list[AccessUnit]:
    return [au for p in packets for au in dep.push(p)]


# --- H.264 -------------------------------------------------------------------------------------


def test_single_nal_au() -> None:
    d = H264Depacketizer(96)
    s = Stream()
    assert d.push(s.packet(9000, SLICE)) == []  # no marker yet
    [au] = d.push(s.packet(9000, SLICE, marker=True))
    assert (au.data, au.pts, au.keyframe, au.codec) == (annexb(SLICE, SLICE), 9000, False, "h264")


def test_stap_a_with_parameter_sets_and_idr() -> None:
    d = H264Depacketizer()
    [au] = d.push(rtp(1, 0, stap_a(SPS, PPS, IDR), marker=True))
    assert au.keyframe and au.data == annexb(SPS, PPS, IDR)
    assert d.parameter_sets() == annexb(SPS, PPS)


def test_fu_a_start_middle_end() -> None:
    d = H264Depacketizer()
    big = IDR * 20
    fus = fu_a(big, 100)
    assert len(fus) > 3
    [au] = push_all(d, Stream().au(0, [stap_a(SPS, PPS), *fus]))
    assert au.keyframe and au.data == annexb(SPS, PPS, big)


def test_fu_a_with_start_and_end_bits_in_one_packet() -> None:
    d = H264Depacketizer()
    [au] = d.push(rtp(1, 0, bytes([0x7C, 0xC1]) + SLICE[1:], marker=True))
    assert au.data == annexb(bytes([0x61]) + SLICE[1:])


def test_lost_fu_middle_discards_au() -> None:
    d = H264Depacketizer()
    s = Stream()
    packets = s.au(0, fu_a(SLICE * 10, 50))
    del packets[2]
    assert push_all(d, packets) == []
    assert (d.stats.lost, d.stats.discarded_aus) == (1, 1)
    [au] = push_all(d, s.au(3600, [SLICE]))  # the next AU is intact
    assert au.pts == 3600


def test_fu_without_start_discards_au() -> None:
    d = H264Depacketizer()
    fus = fu_a(SLICE * 10, 50)
    assert push_all(d, Stream().au(0, fus[1:])) == []
    assert d.stats.discarded_aus == 1 and d.stats.lost == 0


def test_fu_start_while_open_discards_au() -> None:
    d = H264Depacketizer()
    fus = fu_a(SLICE * 10, 50)
    assert push_all(d, Stream().au(0, [fus[0], *fus])) == []
    assert d.stats.discarded_aus == 1


def test_single_nal_inside_open_fu_discards_au() -> None:
    d = H264Depacketizer()
    fus = fu_a(SLICE * 10, 50)
    assert push_all(d, Stream().au(0, [fus[0], SLICE])) == []
    assert d.stats.discarded_aus == 1


def test_sequence_wrap_inside_fu() -> None:
    d = H264Depacketizer()
    big = SLICE * 10
    [au] = push_all(d, Stream(seq=65533).au(0, fu_a(big, 40)))
    assert au.data == annexb(big) and d.stats.lost == 0


def test_timestamp_wrap_keeps_pts_monotonic() -> None:
    d = H264Depacketizer()
    s = Stream()
    stamps = [0xFFFF_FFFF - 3600, 0xFFFF_FFFF - 100, 3500 - 101, 7100 - 101]
    pts = [au.pts for ts in stamps for au in push_all(d, s.au(ts, [SLICE]))]
    assert pts == [0xFFFF_FFFF - 3600, 0xFFFF_FFFF - 100, 2**32 + 3399, 2**32 + 6999]


def test_multi_slice_au() -> None:
    d = H264Depacketizer()
    s = Stream()
    slices = [IDR, IDR[:1] + bytes(30), *fu_a(IDR * 5, 64)]
    [au] = push_all(d, s.au(0, [stap_a(SPS, PPS), *slices]))
    assert au.keyframe and au.data == annexb(SPS, PPS, IDR, IDR[:1] + bytes(30), IDR * 5)


def test_parameter_sets_repeated_between_slices_are_kept_out() -> None:
    """rtph264pay config-interval=-1 sends SPS/PPS before every IDR slice; after a slice they
    would split the picture for a decoder, so the AU keeps only the leading ones."""
    d = H264Depacketizer()
    [au] = push_all(d, Stream().au(0, [stap_a(SPS, PPS), IDR, stap_a(SPS, PPS), IDR, SPS, PPS, IDR]))
    assert au.data == annexb(SPS, PPS, IDR, IDR, IDR)
    assert d.parameter_sets() == annexb(SPS, PPS)


def test_missing_marker_timestamp_change_ends_au() -> None:
    d = H264Depacketizer()
    s = Stream()
    assert d.push(s.packet(0, SLICE)) == []
    assert d.push(s.packet(0, SLICE)) == []
    [au] = d.push(s.packet(3600, SLICE))  # the previous AU completes
    assert au.pts == 0 and au.data == annexb(SLICE, SLICE)
    [au] = d.flush()  # end of stream: the pending one is intact
    assert au.pts == 3600 and d.flush() == []


def test_gap_before_new_timestamp_discards_both_sides() -> None:
    """The lost packet may be the open AU's tail or the next AU's head: neither is trusted."""
    d = H264Depacketizer()
    d.push(rtp(1, 0, SLICE))
    assert d.push(rtp(3, 3600, SLICE, marker=True)) == []
    assert d.stats.discarded_aus == 2
    assert len(d.push(rtp(4, 7200, SLICE, marker=True))) == 1


def test_oversized_au_is_discarded() -> None:
    d = H264Depacketizer(max_au_size=1000)
    s = Stream()
    assert push_all(d, s.au(0, fu_a(SLICE * 50, 100))) == []
    assert (d.stats.oversized, d.stats.discarded_aus) == (1, 0)
    assert len(push_all(d, s.au(3600, [SLICE]))) == 1


def test_buffer_grows_beyond_initial_capacity() -> None:
    d = H264Depacketizer()
    big = IDR[:1] + bytes(range(256)) * 1200  # ~300 KB, several reallocations
    [au] = push_all(d, Stream().au(0, [stap_a(SPS, PPS), *fu_a(big, 1400)]))
    assert au.data == annexb(SPS, PPS, big)


def test_sprop_parameter_sets_inserted_before_keyframe() -> None:
    d = H264Depacketizer()
    d.set_parameter_sets([SPS, b"\x00\x00\x00\x01" + PPS])  # a start code is tolerated
    s = Stream()
    [au] = push_all(d, s.au(0, [IDR]))
    assert au.data == annexb(SPS, PPS, IDR)
    [au] = push_all(d, s.au(3600, [SLICE]))
    assert au.data == annexb(SLICE)  # only keyframes get them


def test_parameter_sets_go_after_a_leading_aud() -> None:
    d = H264Depacketizer()
    d.set_parameter_sets([SPS, PPS])
    [au] = push_all(d, Stream().au(0, [AUD, IDR]))
    assert au.data == annexb(AUD, SPS, PPS, IDR)


def test_in_band_parameter_sets_replace_stored_ones() -> None:
    d = H264Depacketizer()
    d.set_parameter_sets([SPS, PPS])
    s = Stream()
    sps2, pps2, pps3 = SPS + b"\x02", PPS + b"\x03", PPS[:1] + b"\x7f"
    [au] = push_all(d, s.au(0, [stap_a(sps2, pps2, pps3, IDR)]))
    assert au.data == annexb(sps2, pps2, pps3, IDR)  # complete: nothing inserted
    [au] = push_all(d, s.au(3600, [IDR]))
    assert au.data == annexb(sps2, pps2, pps3, IDR)  # both PPS of that AU are kept


def test_keyframe_lacking_only_pps_gets_the_stored_set() -> None:
    d = H264Depacketizer()
    d.set_parameter_sets([SPS, PPS])
    [au] = push_all(d, Stream().au(0, [stap_a(SPS, IDR)]))
    assert au.data == annexb(SPS, PPS, SPS, IDR)


def test_keyframe_without_any_known_parameter_sets_is_passed_through() -> None:
    [au] = push_all(H264Depacketizer(), Stream().au(0, [IDR]))
    assert au.keyframe and au.data == annexb(IDR)


@pytest.mark.parametrize("nal_type", [25, 26, 27, 29])
def test_interleaved_mode_packets_are_unsupported(nal_type: int) -> None:
    d = H264Depacketizer()
    assert push_all(d, Stream().au(0, [SLICE, bytes([nal_type, 0x80, 1, 2, 3])])) == []
    assert (d.stats.unsupported, d.stats.discarded_aus) == (1, 1)


@pytest.mark.parametrize("nal_type", [0, 30, 31])
def test_reserved_nal_types_are_ignored(nal_type: int) -> None:
    d = H264Depacketizer()
    [au] = push_all(d, Stream().au(0, [SLICE, bytes([nal_type, 1, 2])]))
    assert au.data == annexb(SLICE) and d.stats.unsupported == 1


@pytest.mark.parametrize(
    "payload",
    [stap_a(SPS)[:-1], stap_a(SPS) + b"\x00", b"\x18\x00\x00", b"\x1c"],
    ids=["short-unit", "dangling-byte", "zero-size", "fu-without-header"],
)
def test_truncated_aggregates_and_fragments(payload: bytes) -> None:
    d = H264Depacketizer()
    assert push_all(d, Stream().au(0, [payload])) == []
    assert (d.stats.truncated, d.stats.discarded_aus) == (1, 1)


def test_wrong_payload_type_is_skipped() -> None:
    d = H264Depacketizer(payload_type=96)
    assert d.push(rtp(1, 0, SLICE, marker=True, pt=100)) == []
    assert d.stats.bad_payload_type == 1


def test_packet_with_csrc_extension_and_padding() -> None:
    d = H264Depacketizer()
    [au] = d.push(rtp(1, 0, SLICE, marker=True, csrc=(9,), ext=b"\x00" * 4, pad=3))
    assert au.data == annexb(SLICE)


def test_accepts_bytes_bytearray_and_memoryview() -> None:
    packet = rtp(1, 0, SLICE, marker=True)
    for wrap in (bytes, bytearray, memoryview):
        d = H264Depacketizer()
        [au] = d.push(wrap(packet))
        assert au.data == annexb(SLICE)
    d = H264Depacketizer()
    [au] = d.push(memoryview(b"junk" + packet)[4:])
    assert au.data == annexb(SLICE)
    assert H264Depacketizer().push(memoryview(b"")) == []


@pytest.mark.parametrize("cls", [H264Depacketizer, H265Depacketizer])
def test_random_garbage_never_raises(cls: type[H264Depacketizer]) -> None:
    rng = random.Random(7)
    d = cls()
    good = rtp(0, 0, SLICE)
    for _ in range(20000):
        if rng.random() < 0.5:
            packet = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
        else:  # valid RTP headers, mutated payloads
            mutated = bytearray(good)
            mutated[2:4] = rng.randrange(65536).to_bytes(2, "big")
            for _ in range(rng.randrange(1, 6)):
                mutated[rng.randrange(12, len(mutated))] = rng.getrandbits(8)
            packet = bytes(mutated[: rng.randrange(12, len(mutated) + 1)])
        for au in d.push(packet):
            assert au.data.startswith(b"\x00\x00\x00\x01")
    d.flush()
    assert d.stats.packets == 20000


# --- H.265 -------------------------------------------------------------------------------------


def test_h265_single_nal_and_aggregation() -> None:
    d = H265Depacketizer()
    s = Stream()
    [au] = push_all(d, s.au(0, [ap_h265(H5_VPS, H5_SPS, H5_PPS), H5_IDR]))
    assert (au.codec, au.keyframe) == ("h265", True)
    assert au.data == annexb(H5_VPS, H5_SPS, H5_PPS, H5_IDR)
    [au] = push_all(d, s.au(3600, [H5_TRAIL]))
    assert not au.keyframe and au.data == annexb(H5_TRAIL)


def test_h265_fragmentation_rebuilds_header() -> None:
    d = H265Depacketizer()
    big = H5_IDR * 10
    [au] = push_all(d, Stream().au(0, fu_h265(big, 80)))
    assert au.keyframe and au.data == annexb(big)


def test_h265_lost_fragment_discards_au() -> None:
    d = H265Depacketizer()
    packets = Stream().au(0, fu_h265(H5_IDR * 10, 80))
    del packets[1]
    assert push_all(d, packets) == [] and d.stats.discarded_aus == 1


def test_h265_irap_range_and_parameter_set_insertion() -> None:
    d = H265Depacketizer()
    d.set_parameter_sets([H5_VPS, H5_SPS, H5_PPS])
    [au] = push_all(d, Stream().au(0, [H5_CRA]))
    assert au.keyframe and au.data == annexb(H5_VPS, H5_SPS, H5_PPS, H5_CRA)


def test_h265_paci_is_unsupported() -> None:
    d = H265Depacketizer()
    assert push_all(d, Stream().au(0, [bytes([50 << 1, 1, 0, 0, 0])])) == []
    assert (d.stats.unsupported, d.stats.discarded_aus) == (1, 1)


def test_h265_one_byte_payload_is_truncated() -> None:
    d = H265Depacketizer()
    assert push_all(d, Stream().au(0, [b"\x02"])) == []
    assert d.stats.truncated == 1


# --- stored parameter sets: keyed by id, bounded (issue 15: a hostile camera's parameter-set flood) ------------------

CODECS = [(H264Depacketizer, False), (H265Depacketizer, True)]


def bits_to_bytes(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def h264_sps(sps_id: int) -> bytes:
    return b"\x67\x42\xc0\x1e" + bits_to_bytes(ue(sps_id) + "1" * 9)


def h265_sps(sps_id: int, sub_layers: int = 0) -> bytes:
    """VPS id 0, `sub_layers` extra temporal layers each with a profile and a level (profile_tier_level grows)."""
    bits = "0000" + format(sub_layers, "03b") + "1" + "0" * 88 + "0" * 8  # general profile + level
    bits += "11" * sub_layers + ("00" * (8 - sub_layers) if sub_layers else "")
    bits += ("0" * 88 + "0" * 8) * sub_layers
    return b"\x42\x01" + bits_to_bytes(bits + ue(sps_id) + "1")


@pytest.mark.parametrize(("cls", "h265"), CODECS, ids=["h264", "h265"])
def test_parameter_set_flood_in_one_au_is_bounded(cls: type[H264Depacketizer], h265: bool) -> None:
    """20,000 distinct PPS after a slice (cut out of the frame, so the frame cap never saw them): the store keeps
    one per id up to its caps, in linear time (the old list compared each new set with all earlier ones)."""
    d = cls()
    start = time.process_time()
    [au] = push_all(d, flood(20000, 100, h265))  # 2 MB: under the 4 MiB unit cap
    assert time.process_time() - start < 5  # a hang guard only (was quadratic)
    assert au.keyframe and au.data.endswith(annexb(H5_IDR if h265 else IDR))  # the stored sets go before it
    assert len(au.data) == len(annexb(H5_IDR if h265 else IDR)) + d.parameter_set_bytes
    assert d.parameter_set_count <= MAX_PARAMETER_SETS_PER_KIND
    assert d.parameter_set_bytes == len(d.parameter_sets()) <= MAX_PARAMETER_SET_BYTES
    assert d.parameter_sets_refused > 0


@pytest.mark.parametrize(("cls", "h265"), CODECS, ids=["h264", "h265"])
def test_issue_15_flood_is_an_oversize_unit(cls: type[H264Depacketizer], h265: bool) -> None:
    """The review's reproduction: 20,000 distinct 1 KB PPS in one unit, 20 MB: dropped at the 4 MiB cap."""
    d = cls()
    assert push_all(d, flood(20000, 1024, h265)) == []
    assert (d.stats.oversized, d.stats.discarded_aus) == (1, 0)
    assert len(d.parameter_sets()) <= MAX_PARAMETER_SET_BYTES


@pytest.mark.parametrize(("cls", "h265"), CODECS, ids=["h264", "h265"])
def test_parameter_sets_count_toward_the_unit_cap(cls: type[H264Depacketizer], h265: bool) -> None:
    d = cls(max_au_size=2000)
    s = Stream()
    slice_ = H5_IDR if h265 else IDR
    sets = [pps(i, 300, h265, i) for i in range(10)]  # 3 KB of sets after the slice: over the cap
    assert push_all(d, s.au(0, [slice_, *sets])) == []
    assert (d.stats.oversized, d.stats.discarded_aus) == (1, 0)
    [au] = push_all(d, s.au(3600, [slice_, *sets[:2]]))  # 600 B of sets: fits
    assert au.keyframe and au.data.endswith(annexb(slice_))  # the stored sets go before it


@pytest.mark.parametrize(("cls", "h265"), CODECS, ids=["h264", "h265"])
def test_the_byte_cap_holds_for_large_sets(cls: type[H264Depacketizer], h265: bool) -> None:
    d = cls()
    s = Stream()
    for i in range(30):  # 30 ids of 3 KB each: 90 KB, over the 64 KiB store
        push_all(d, s.au(i * 3600, [H5_IDR if h265 else IDR, pps(i, 3000, h265, i)]))
    assert d.parameter_set_bytes == len(d.parameter_sets()) <= MAX_PARAMETER_SET_BYTES
    assert d.parameter_set_count == MAX_PARAMETER_SET_BYTES // 3004
    assert d.parameter_sets_refused == 30 - d.parameter_set_count


@pytest.mark.parametrize(("cls", "h265"), CODECS, ids=["h264", "h265"])
def test_a_set_replaces_the_one_with_its_id_and_keeps_the_others(cls: type[H264Depacketizer], h265: bool) -> None:
    d = cls()
    s = Stream()
    slice_ = H5_IDR if h265 else IDR
    pps0, pps1, pps0_new = pps(0, 20, h265, 1), pps(1, 20, h265, 2), pps(0, 20, h265, 3)
    push_all(d, s.au(0, [pps0, pps1, slice_]))
    push_all(d, s.au(3600, [pps0_new, slice_]))  # a later unit renews id 0 only: id 1 still holds
    assert d.parameter_sets() == annexb(pps0_new, pps1)
    assert (d.parameter_set_count, d.parameter_set_bytes) == (2, 48)


def test_h264_sps_are_keyed_by_seq_parameter_set_id() -> None:
    d = H264Depacketizer()
    d.set_parameter_sets([h264_sps(0), h264_sps(1), h264_sps(31), h264_sps(32), PPS])  # 32: out of range
    assert d.parameter_sets() == annexb(h264_sps(0), h264_sps(1), h264_sps(31), h264_sps(32), PPS)
    push_all(d, Stream().au(0, [h264_sps(1) + b"\x80", IDR]))  # an update of id 1
    assert d.parameter_sets() == annexb(h264_sps(0), h264_sps(1) + b"\x80", h264_sps(31), h264_sps(32), PPS)


@pytest.mark.parametrize("sub_layers", [0, 1, 6])
def test_h265_sps_id_is_read_past_profile_tier_level(sub_layers: int) -> None:
    d = H265Depacketizer()
    d.set_parameter_sets([H5_VPS, h265_sps(0, sub_layers), h265_sps(5, sub_layers), H5_PPS])
    assert d.parameter_set_count == 4
    push_all(d, Stream().au(0, [h265_sps(5, sub_layers) + b"\x01", H5_IDR]))
    assert d.parameter_sets() == annexb(H5_VPS, h265_sps(0, sub_layers), h265_sps(5, sub_layers) + b"\x01", H5_PPS)


def test_sets_whose_id_cannot_be_read_share_one_slot() -> None:
    d = H265Depacketizer()
    truncated = [H5_SPS + bytes([i]) for i in range(100)]  # too short for profile_tier_level
    push_all(d, Stream().au(0, [H5_IDR, *truncated]))
    assert d.parameter_sets() == annexb(truncated[-1])


def test_sdp_parameter_sets_replace_the_stored_kinds_they_carry() -> None:
    d = H264Depacketizer()
    d.set_parameter_sets([h264_sps(0), h264_sps(1), PPS])
    d.set_parameter_sets([h264_sps(2)])  # a new SDP: its SPS replace all stored SPS; the PPS stays
    assert d.parameter_sets() == annexb(h264_sps(2), PPS)
    assert d.parameter_set_bytes == len(annexb(h264_sps(2), PPS))
