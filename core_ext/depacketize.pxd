# C-level interface of the depacketisers (framing.pyx calls push_c without Python overhead).
from libc.stdint cimport int64_t, uint8_t

from core_ext.rtp cimport RtpReceiver


cdef class AccessUnit:
    cdef readonly bytes data
    cdef readonly int64_t pts
    cdef readonly bint keyframe
    cdef readonly str codec


cdef class Depacketizer:
    cdef RtpReceiver _rtp
    cdef readonly Py_ssize_t max_au_size
    cdef str _codec
    cdef unsigned int _required_ps      # parameter-set kinds a keyframe needs (bit per kind)
    cdef list _ps                       # stored parameter sets: [VPS, SPS, PPS] dicts of id -> Annex-B NAL
    cdef readonly Py_ssize_t parameter_set_bytes  # their bytes, at most MAX_PS_BYTES
    cdef readonly unsigned long long parameter_sets_refused   # new ids past the caps, not stored
    # the access unit being assembled (Annex-B in a malloc'd buffer)
    cdef uint8_t* _buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _au_bytes           # every byte received for this AU (cut-out parameter sets too): the cap's count
    cdef Py_ssize_t _cap
    cdef bint _open
    cdef bint _broken
    cdef bint _too_big
    cdef bint _keyframe
    cdef bint _vcl_seen
    cdef bint _fu_open
    cdef int64_t _ts
    cdef Py_ssize_t _nal_start          # offset of the current NAL's header byte
    cdef Py_ssize_t _insert_at          # where missing parameter sets go (after a leading AUD)
    cdef int _nals
    cdef unsigned int _seen_ps          # parameter-set kinds present in this AU

    cdef int push_c(self, const uint8_t* p, Py_ssize_t n, list out) except -1
    cdef int _payload(self, const uint8_t* p, Py_ssize_t n) except -1
    cdef int _nal_kind(self, const uint8_t* nal) noexcept
    cdef int _start(self, int64_t ts) noexcept
    cdef int _finish(self, list out) except -1
    cdef AccessUnit _build(self)
    cdef int _reserve(self, Py_ssize_t extra) except -1
    cdef int _write(self, const uint8_t* p, Py_ssize_t n) except -1
    cdef int _begin_nal(self) except -1
    cdef int _end_nal(self) except -1
    cdef int _single(self, const uint8_t* p, Py_ssize_t n) except -1
    cdef int _aggregate(self, const uint8_t* p, Py_ssize_t n, Py_ssize_t off) except -1
    cdef int _fragment(self, bint start, bint end, uint8_t h0, uint8_t h1, int hlen,
                       const uint8_t* data, Py_ssize_t n) except -1
    cdef int _store_ps(self, int kind, bytes nal) except -1


cdef class H264Depacketizer(Depacketizer):
    pass


cdef class H265Depacketizer(Depacketizer):
    pass
