# C-level interface of the RTP layer (cimported by depacketize.pyx and framing.pyx).
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

# Result of RtpReceiver.receive(): what the caller should do with the packet.
cdef enum RtpVerdict:
    RTP_DROP = 0      # counted and skipped (malformed, wrong payload type, duplicate, late)
    RTP_OK = 1        # next packet in sequence
    RTP_GAP = 2       # accepted, but packets before it were lost (or the sequence jumped)

cdef struct RtpPacket:
    bint marker
    int payload_type
    uint16_t seq
    uint32_t timestamp
    int64_t ext_timestamp
    uint32_t ssrc
    const uint8_t* payload
    Py_ssize_t payload_len

cdef class RtpStats:
    cdef readonly uint64_t packets
    cdef readonly uint64_t bytes
    cdef readonly uint64_t lost
    cdef readonly uint64_t reordered
    cdef readonly uint64_t duplicates
    cdef readonly uint64_t resyncs
    cdef readonly uint64_t bad_version
    cdef readonly uint64_t bad_padding
    cdef readonly uint64_t truncated
    cdef readonly uint64_t bad_payload_type
    cdef readonly uint64_t unsupported
    cdef readonly uint64_t discarded_aus
    cdef readonly uint64_t oversized

cdef class RtpReceiver:
    cdef readonly RtpStats stats
    cdef readonly int payload_type
    cdef bint _have_seq
    cdef uint16_t _max_seq
    cdef bint _have_ts
    cdef uint32_t _last_ts
    cdef int64_t _last_ext

    cdef RtpVerdict receive(self, const uint8_t* buf, Py_ssize_t n, RtpPacket* pkt) noexcept
    cdef RtpVerdict _sequence(self, uint16_t seq) noexcept
    cdef int64_t _extend(self, uint32_t ts) noexcept

cdef bint parse_header(const uint8_t* buf, Py_ssize_t n, RtpPacket* pkt, RtpStats stats) noexcept
