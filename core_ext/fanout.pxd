# C-level interface of the RTP fan-out (see fanout.pyx).
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t


from core_ext.sockets cimport sockaddr_storage


cdef class RtpFrame:
    cdef readonly bytes data          # the payloads, back to back
    cdef readonly int64_t pts         # 90 kHz
    cdef Py_ssize_t* offsets          # payload i is data[offsets[i]:offsets[i + 1]]
    cdef readonly Py_ssize_t count


cdef class RtpOutput:
    cdef readonly uint32_t ssrc
    cdef readonly int payload_type
    cdef readonly uint16_t seq              # the next sequence number
    cdef readonly uint32_t ts_offset
    cdef readonly uint32_t rtx_ssrc
    cdef readonly int rtx_payload_type     # -1: no RTX, NACKs are answered with the original packet
    cdef readonly uint16_t rtx_seq
    cdef readonly int fd
    cdef readonly object target             # (fd, host, port) or None
    cdef public object owner                # the fan-out group sending to it, if any
    cdef readonly bint failed               # the socket failed (closed, unreachable): the viewer is gone
    # counters (RTCP sender reports, stats, admission control)
    cdef readonly uint64_t packets
    cdef readonly uint64_t octets
    cdef readonly uint64_t frames
    cdef readonly uint64_t dropped          # datagrams the kernel refused (socket buffer full)
    cdef readonly uint64_t stalls           # sends that hit a full socket buffer
    cdef readonly uint64_t errors           # SRTP or socket errors
    cdef readonly int last_errno
    cdef readonly uint64_t retransmitted
    cdef readonly uint64_t last_ntp         # when the newest packet was sent (NTP) ...
    cdef readonly uint32_t last_rtp_timestamp  # ... and its RTP timestamp
    cdef void* _ctx
    cdef void* _protect
    cdef object _keepalive
    cdef sockaddr_storage _addr
    cdef unsigned int _addrlen
    cdef uint8_t _template[64]
    cdef Py_ssize_t _header_len
    cdef Py_ssize_t _ast_offset
    cdef list _history
    cdef uint16_t _hist_seq[512]
    cdef uint16_t _hist_index[512]

    cdef int _build_template(self, int ast_id, int mid_id, bytes mid) except -1
    cdef Py_ssize_t _write(self, uint8_t* buf, RtpFrame frame, Py_ssize_t i, uint16_t seq, uint32_t ssrc,
                           int pt, int original_seq, uint32_t ast) noexcept
    cdef Py_ssize_t _messages(self, Py_ssize_t first, Py_ssize_t count) noexcept
    cdef int _flush(self, Py_ssize_t count) noexcept
    cdef int _prepare(self, Py_ssize_t slot, Py_ssize_t length) noexcept
    cdef int _send(self, RtpFrame frame, uint64_t ntp) except -1
