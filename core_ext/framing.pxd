# C-level interface of the RTSP-over-TCP demuxer (RFC 2326 §10.12 interleaved frames).
from libc.stdint cimport uint8_t, uint64_t

from core_ext.gop cimport GopCache


cdef class InterleavedDemuxer:
    cdef bytearray _buf                 # unconsumed bytes carried over to the next feed()
    cdef list _chan                     # 256 slots: Depacketizer or None
    cdef public GopCache cache          # the camera's hub cache: takes units while nobody watches (gop.pyx)
    cdef readonly Py_ssize_t max_message
    cdef readonly uint64_t frames
    cdef readonly uint64_t messages
    cdef readonly uint64_t rtcp_frames
    cdef readonly uint64_t unknown_channel_frames
    cdef readonly uint64_t consumed     # stream offset of the first buffered byte

    cdef Py_ssize_t _parse(self, const uint8_t* p, Py_ssize_t n, list out) except -1
    cdef Py_ssize_t _message(self, const uint8_t* p, Py_ssize_t n, list out) except -2
    cdef int _check_start(self, const uint8_t* p, Py_ssize_t n) except -2
