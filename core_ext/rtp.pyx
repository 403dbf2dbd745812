"""RTP fixed-header parsing (RFC 3550 §5.1), loss accounting and 32->64-bit timestamp extension.

Everything here runs in C on a borrowed pointer; Python objects are made only by the
test/debug entry point ``RtpReceiver.parse``.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t

# RFC 3550 appendix A.1: a forward jump beyond MAX_DROPOUT or a backward one beyond
# MAX_MISORDER is a restart of the sender's sequence, not loss.
cdef enum:
    MAX_DROPOUT = 3000
    MAX_MISORDER = 100


cdef class RtpStats:
    """Counters of one RTP stream (all monotonic, readonly from Python)."""

    def __repr__(self):
        fields = ("packets", "bytes", "lost", "reordered", "duplicates", "resyncs", "bad_version",
                  "bad_padding", "truncated", "bad_payload_type", "unsupported", "discarded_aus",
                  "oversized")
        return "RtpStats(" + ", ".join(f"{f}={getattr(self, f)}" for f in fields) + ")"

    def as_dict(self):
        return {f: getattr(self, f) for f in (
            "packets", "bytes", "lost", "reordered", "duplicates", "resyncs", "bad_version",
            "bad_padding", "truncated", "bad_payload_type", "unsupported", "discarded_aus", "oversized")}


cdef bint parse_header(const uint8_t* buf, Py_ssize_t n, RtpPacket* pkt, RtpStats stats) noexcept:
    """Fill pkt from buf[:n]; on a malformed header count it in stats and return False."""
    cdef Py_ssize_t off, end
    cdef unsigned int pad
    if n < 12:
        stats.truncated += 1
        return False
    if buf[0] >> 6 != 2:
        stats.bad_version += 1
        return False
    off = 12 + 4 * (buf[0] & 0x0F)                        # CSRC list
    if buf[0] & 0x10:                                     # header extension: 16-bit id, 16-bit length in words
        if n < off + 4:
            stats.truncated += 1
            return False
        off += 4 + 4 * ((<Py_ssize_t>buf[off + 2] << 8) | buf[off + 3])
    if off > n:
        stats.truncated += 1
        return False
    end = n
    if buf[0] & 0x20:                                     # padding: last byte counts itself
        pad = buf[n - 1]
        if pad == 0 or pad > n - off:
            stats.bad_padding += 1
            return False
        end = n - pad
    pkt.marker = buf[1] >> 7
    pkt.payload_type = buf[1] & 0x7F
    pkt.seq = (<uint16_t>buf[2] << 8) | buf[3]
    pkt.timestamp = (<uint32_t>buf[4] << 24) | (<uint32_t>buf[5] << 16) | (<uint32_t>buf[6] << 8) | buf[7]
    pkt.ssrc = (<uint32_t>buf[8] << 24) | (<uint32_t>buf[9] << 16) | (<uint32_t>buf[10] << 8) | buf[11]
    pkt.payload = buf + off
    pkt.payload_len = end - off
    return True


cdef class RtpHeader:
    """A parsed packet, for tests and debugging (the hot path never builds one)."""

    cdef readonly bint marker
    cdef readonly int payload_type
    cdef readonly int seq
    cdef readonly unsigned int timestamp
    cdef readonly long long ext_timestamp
    cdef readonly unsigned int ssrc
    cdef readonly bytes payload
    cdef readonly bint gap

    def __repr__(self):
        return (f"RtpHeader(seq={self.seq}, ts={self.timestamp}, ext_ts={self.ext_timestamp}, "
                f"pt={self.payload_type}, marker={self.marker}, gap={self.gap}, len={len(self.payload)})")


cdef class RtpReceiver:
    """One RTP stream: validates packets, tracks the sequence and extends the timestamp."""

    def __cinit__(self, int payload_type=-1):
        self.stats = RtpStats()
        self.payload_type = payload_type

    cdef RtpVerdict receive(self, const uint8_t* buf, Py_ssize_t n, RtpPacket* pkt) noexcept:
        self.stats.packets += 1
        self.stats.bytes += n
        if not parse_header(buf, n, pkt, self.stats):
            return RTP_DROP
        if self.payload_type >= 0 and pkt.payload_type != self.payload_type:
            self.stats.bad_payload_type += 1
            return RTP_DROP
        cdef RtpVerdict verdict = self._sequence(pkt.seq)
        if verdict != RTP_DROP:
            pkt.ext_timestamp = self._extend(pkt.timestamp)
        return verdict

    cdef RtpVerdict _sequence(self, uint16_t seq) noexcept:
        cdef uint16_t delta
        if not self._have_seq:
            self._have_seq = True
            self._max_seq = seq
            return RTP_OK
        delta = <uint16_t>(seq - self._max_seq)           # modulo 2**16: handles 65535 -> 0
        if delta == 0:
            self.stats.duplicates += 1
            return RTP_DROP
        if delta <= MAX_DROPOUT:
            self._max_seq = seq
            if delta == 1:
                return RTP_OK
            self.stats.lost += delta - 1
            return RTP_GAP
        if delta >= 0x10000 - MAX_MISORDER:
            # A late packet: it was already counted lost and its access unit is gone.
            self.stats.reordered += 1
            if self.stats.lost:
                self.stats.lost -= 1
            return RTP_DROP
        self.stats.resyncs += 1                           # sender restarted its sequence
        self._max_seq = seq
        return RTP_GAP

    cdef int64_t _extend(self, uint32_t ts) noexcept:
        """Signed 32-bit difference from the newest timestamp seen: wraps and B-frame
        reordering both come out right; the reference only moves forward."""
        cdef int32_t diff
        cdef int64_t ext
        if not self._have_ts:
            self._have_ts = True
            self._last_ts = ts
            self._last_ext = ts
            return ts
        diff = <int32_t>(ts - self._last_ts)
        ext = self._last_ext + diff
        if diff > 0:
            self._last_ts = ts
            self._last_ext = ext
        return ext

    def parse(self, packet):
        """Run one packet through the receiver; None if it was dropped (see ``stats``)."""
        cdef const uint8_t[::1] view = _as_view(packet)
        cdef RtpPacket pkt
        cdef Py_ssize_t n = view.shape[0]
        cdef RtpVerdict verdict = self.receive(&view[0] if n else <const uint8_t*>b"", n, &pkt)
        if verdict == RTP_DROP:
            return None
        cdef RtpHeader h = RtpHeader.__new__(RtpHeader)
        h.marker = pkt.marker
        h.payload_type = pkt.payload_type
        h.seq = pkt.seq
        h.timestamp = pkt.timestamp
        h.ext_timestamp = pkt.ext_timestamp
        h.ssrc = pkt.ssrc
        h.payload = (<const char*>pkt.payload)[:pkt.payload_len]
        h.gap = verdict == RTP_GAP
        return h


cdef const uint8_t[::1] _as_view(object packet):
    if isinstance(packet, memoryview):
        packet = (<memoryview>packet).cast("B")
    return packet
