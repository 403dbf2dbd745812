# H.264 (ITU-T H.264 §7.3/7.4) and H.265 (ITU-T H.265 §7.3/7.4) NAL unit helpers, shared by depacketize, gop and
# fanout. Inline and header-only: nothing here allocates or touches Python objects.
from libc.stdint cimport uint8_t


cdef enum:
    # H.264 nal_unit_type (the low 5 bits of the one-byte header)
    H264_NON_IDR = 1
    H264_IDR = 5
    H264_SPS = 7
    H264_PPS = 8
    H264_AUD = 9
    H264_FILLER = 12
    # H.265 nal_unit_type (bits 1-6 of the first of two header bytes)
    H265_IRAP_FIRST = 16    # BLA_W_LP
    H265_IRAP_LAST = 23     # RSV_IRAP_VCL23
    H265_VPS = 32
    H265_SPS = 33
    H265_PPS = 34
    H265_AUD = 35
    # parameter-set ids: the values the standards allow
    H264_MAX_SPS_ID = 31
    H264_MAX_PPS_ID = 255
    H265_MAX_VPS_ID = 15
    H265_MAX_SPS_ID = 15
    H265_MAX_PPS_ID = 63


cdef inline int h264_type(uint8_t header) noexcept nogil:
    return header & 0x1F


cdef inline int h265_type(uint8_t header) noexcept nogil:
    return (header >> 1) & 0x3F


cdef inline int nal_type(uint8_t header, bint h265) noexcept nogil:
    return h265_type(header) if h265 else h264_type(header)


cdef inline bint h264_is_vcl(int t) noexcept nogil:
    return H264_NON_IDR <= t <= H264_IDR


cdef inline bint h265_is_vcl(int t) noexcept nogil:
    return t < 32


cdef inline bint is_keyframe(int t, bint h265) noexcept nogil:
    """An H.264 IDR slice or an H.265 IRAP picture."""
    return H265_IRAP_FIRST <= t <= H265_IRAP_LAST if h265 else t == H264_IDR


cdef inline bint is_aud(int t, bint h265) noexcept nogil:
    return t == (H265_AUD if h265 else H264_AUD)


cdef inline bint is_parameter_set(int t, bint h265) noexcept nogil:
    return H265_VPS <= t <= H265_PPS if h265 else t == H264_SPS or t == H264_PPS


cdef inline bint is_start_code(const uint8_t* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Whether a 3-byte start code (00 00 01) begins at p[i] (a 4-byte one ends with it)."""
    return i + 2 < n and p[i] == 0 and p[i + 1] == 0 and p[i + 2] == 1


cdef inline Py_ssize_t after_start_code(const uint8_t* p, Py_ssize_t start, Py_ssize_t n) noexcept nogil:
    """The offset of the NAL header byte after the first start code at or after `start`; -1 if none is followed by
    a header byte."""
    cdef Py_ssize_t i
    for i in range(start, n - 3):
        if p[i] == 0 and p[i + 1] == 0 and p[i + 2] == 1:
            return i + 3
    return -1


# -- exp-Golomb reading of an RBSP (emulation prevention bytes 00 00 03 skipped) --------------------------------------

cdef struct BitReader:
    const uint8_t* p
    Py_ssize_t n          # bytes
    Py_ssize_t byte       # the next byte to read
    int bit               # bits of p[byte] already read (0-7)
    int zeros             # consecutive 0x00 bytes just consumed (for emulation prevention)
    bint overrun          # a read ran past the end


cdef inline void bits_init(BitReader* r, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    r.p = p
    r.n = n
    r.byte = 0
    r.bit = 0
    r.zeros = 0
    r.overrun = False


cdef inline int read_bit(BitReader* r) noexcept nogil:
    cdef uint8_t b
    if r.bit == 0:                         # entering a byte: skip an emulation prevention byte
        if r.zeros >= 2 and r.byte < r.n and r.p[r.byte] == 3:
            r.byte += 1
            r.zeros = 0
        if r.byte >= r.n:
            r.overrun = True
            return 0
        r.zeros = r.zeros + 1 if r.p[r.byte] == 0 else 0
    b = (r.p[r.byte] >> (7 - r.bit)) & 1
    r.bit += 1
    if r.bit == 8:
        r.bit = 0
        r.byte += 1
    return b


cdef inline unsigned int read_bits(BitReader* r, int count) noexcept nogil:
    cdef unsigned int v = 0
    cdef int i
    for i in range(count):
        v = (v << 1) | read_bit(r)
    return v


cdef inline long read_ue(BitReader* r) noexcept nogil:
    """ue(v); -1 on overrun or a code longer than 31 bits (no id is that large)."""
    cdef int zeros = 0
    while read_bit(r) == 0:
        if r.overrun or zeros == 31:
            return -1
        zeros += 1
    cdef long v = (1 << zeros) - 1 + read_bits(r, zeros)
    return -1 if r.overrun else v


cdef inline bint skip_bits(BitReader* r, int count) noexcept nogil:
    while count > 0 and not r.overrun:
        read_bit(r)
        count -= 1
    return not r.overrun


cdef inline bint skip_h265_profile_tier_level(BitReader* r, int max_sub_layers_minus1) noexcept nogil:
    """profile_tier_level(1, max_sub_layers_minus1), H.265 §7.3.3."""
    cdef int i
    cdef unsigned int profile_present = 0, level_present = 0
    skip_bits(r, 96)                        # general profile (88 bits) and general_level_idc
    for i in range(max_sub_layers_minus1):
        profile_present |= read_bit(r) << i
        level_present |= read_bit(r) << i
    if max_sub_layers_minus1 > 0:
        skip_bits(r, 2 * (8 - max_sub_layers_minus1))   # reserved_zero_2bits
    for i in range(max_sub_layers_minus1):
        if profile_present >> i & 1:
            skip_bits(r, 88)
        if level_present >> i & 1:
            skip_bits(r, 8)
    return not r.overrun


cdef inline long parameter_set_id(const uint8_t* nal, Py_ssize_t n, bint h265) noexcept nogil:
    """The id of an SPS/PPS (H.264) or VPS/SPS/PPS (H.265) NAL unit, header included; -1 if it is not one, is
    truncated, or the id is out of the standard's range."""
    cdef BitReader r
    cdef long v
    cdef int t
    if n < (2 if h265 else 1):
        return -1
    t = nal_type(nal[0], h265)
    if h265:
        bits_init(&r, nal + 2, n - 2)
        if t == H265_VPS:
            v = read_bits(&r, 4)                    # vps_video_parameter_set_id
            return -1 if r.overrun else v
        if t == H265_SPS:
            skip_bits(&r, 4)                        # sps_video_parameter_set_id
            v = read_bits(&r, 3)                    # sps_max_sub_layers_minus1
            skip_bits(&r, 1)                        # sps_temporal_id_nesting_flag
            if v > 6 or not skip_h265_profile_tier_level(&r, v):
                return -1
            v = read_ue(&r)                         # sps_seq_parameter_set_id
            return v if v <= H265_MAX_SPS_ID else -1
        if t == H265_PPS:
            v = read_ue(&r)                         # pps_pic_parameter_set_id
            return v if v <= H265_MAX_PPS_ID else -1
        return -1
    bits_init(&r, nal + 1, n - 1)
    if t == H264_SPS:
        skip_bits(&r, 24)                           # profile_idc, constraint flags, level_idc
        v = read_ue(&r)                             # seq_parameter_set_id
        return v if v <= H264_MAX_SPS_ID else -1
    if t == H264_PPS:
        v = read_ue(&r)                             # pic_parameter_set_id
        return v if v <= H264_MAX_PPS_ID else -1
    return -1
