# C-level interface of the batched UDP receiver (recvmmsg into shared slots -> depacketiser).
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from core_ext.depacketize cimport Depacketizer
from core_ext.gop cimport GopCache


cdef class UdpReceiver:
    cdef readonly int fd                # -1 once closed: drain() then reads nothing
    cdef public object owner            # whoever the batch reader hands this receiver's units to
    cdef Depacketizer _depacketizer
    cdef public GopCache cache         # the camera's hub cache: takes units while nobody watches (gop.pyx)
    cdef list _done                     # units completed by the current drain
    cdef int _family                    # AF_INET or AF_INET6 of the expected source
    cdef uint8_t _source[16]            # the camera's address (4 or 16 bytes, network order)
    cdef int _port                      # its RTP source port (host order); -1: latch the first one seen
    cdef bint _ssrc_known               # else latch the first SSRC seen
    cdef uint32_t _ssrc
    cdef readonly uint64_t datagrams    # from the camera, handed to the depacketiser
    cdef readonly uint64_t bytes
    cdef readonly uint64_t foreign      # from any other address or port: dropped
    cdef readonly uint64_t foreign_ssrc # from the camera's address and port with another SSRC: dropped
    cdef readonly uint64_t oversized    # larger than a slot (MSG_TRUNC): dropped
    cdef readonly uint64_t reads        # recvmmsg(2) calls

    cdef Py_ssize_t drain_c(self, list out, Py_ssize_t limit) except -1
    cdef int _one(self, int i, list out) except -1
    cdef int _hand_on(self, list out) except -1
    cdef bint _from_source(self, const void* name, unsigned int namelen) noexcept
