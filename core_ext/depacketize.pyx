"""RTP -> Annex-B access units for H.264 (RFC 6184) and H.265 (RFC 7798).

Per packet everything stays in C: the payload is copied once into a malloc'd buffer that
holds the access unit being assembled (FU fragments are appended in place). Python objects
are created only when an access unit completes.

What a camera sends cannot grow a depacketiser without bound: every byte of an access unit,
the parameter sets cut out of it included, counts toward `max_au_size`, and the stored
parameter sets are one per kind and id, capped in count and bytes.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

from core_ext.nal cimport (
    H264_AUD, H264_IDR, H264_PPS, H264_SPS, H265_AUD, H265_PPS, H265_SPS, H265_VPS, h264_is_vcl, h264_type,
    h265_is_vcl, h265_type, is_keyframe, parameter_set_id,
)
from core_ext.rtp cimport RTP_DROP, RTP_GAP, RtpPacket, RtpReceiver, RtpVerdict

cdef enum NalKind:
    NK_OTHER = 0
    NK_VCL = 1      # a slice
    NK_KEY = 2      # IDR (H.264) / IRAP (H.265) slice
    NK_AUD = 3
    NK_VPS = 4      # parameter sets: kind - NK_VPS is the index into _ps
    NK_SPS = 5
    NK_PPS = 6

cdef enum:
    PS_VPS = 1 << 0
    PS_SPS = 1 << 1
    PS_PPS = 1 << 2
    INITIAL_CAPACITY = 64 * 1024
    # A camera has one VPS/SPS/PPS per id and a handful of ids: these bounds are far above any real stream and
    # keep a hostile one (issue 15: a flood of distinct parameter sets) from growing the store.
    MAX_PS_PER_KIND = 32
    MAX_PS_BYTES = 64 * 1024

# for tests and callers (the .pyi)
MAX_PARAMETER_SETS_PER_KIND = MAX_PS_PER_KIND
MAX_PARAMETER_SET_BYTES = MAX_PS_BYTES

cdef const uint8_t* START_CODE = <const uint8_t*>b"\x00\x00\x00\x01"


cdef class AccessUnit:
    """One coded picture: Annex-B bytes (4-byte start codes), 90 kHz pts, keyframe flag."""

    def __init__(self, bytes data, long long pts, bint keyframe, str codec):
        self.data = data
        self.pts = pts
        self.keyframe = keyframe
        self.codec = codec

    def __repr__(self):
        return (f"AccessUnit(codec={self.codec!r}, pts={self.pts}, keyframe={self.keyframe}, "
                f"size={len(self.data)})")


cdef class Depacketizer:
    """Common RTP -> access unit logic; subclasses implement the payload formats."""

    def __cinit__(self, int payload_type=-1, Py_ssize_t max_au_size=4 * 1024 * 1024):
        self._rtp = RtpReceiver(payload_type)
        self.max_au_size = max_au_size
        self._ps = [{}, {}, {}]
        self._buf = NULL

    def __dealloc__(self):
        free(self._buf)

    @property
    def stats(self):
        return self._rtp.stats

    @property
    def payload_type(self):
        return self._rtp.payload_type

    @property
    def parameter_set_count(self):
        """Parameter sets stored (all kinds); at most MAX_PARAMETER_SETS_PER_KIND of each."""
        return sum([len(sets) for sets in self._ps])

    @property
    def codec(self):
        return self._codec

    def push(self, packet):
        """Feed one RTP packet; returns the access units it completed (usually 0 or 1)."""
        cdef list out = []
        cdef Py_ssize_t n
        cdef const uint8_t[::1] view
        if type(packet) is bytes:                     # fast paths: no buffer export
            self.push_c(<const uint8_t*>PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet), out)
        elif type(packet) is bytearray:
            self.push_c(<const uint8_t*>PyByteArray_AS_STRING(packet), PyByteArray_GET_SIZE(packet), out)
        else:
            view = memoryview(packet).cast("B")
            n = view.shape[0]
            self.push_c(&view[0] if n else <const uint8_t*>b"", n, out)
        return out

    def flush(self):
        """End of stream: emit the pending access unit if it is intact (its marker never came)."""
        cdef list out = []
        self._finish(out)
        return out

    def set_parameter_sets(self, nals):
        """Parameter sets from the SDP (sprop-*): raw NAL units, no start codes needed. The call is one batch: the
        stored sets of each kind it carries are replaced by its own."""
        cdef bytes nal
        cdef int kind
        cdef list batch = []
        for item in nals:
            nal = bytes(item)
            while nal.startswith(b"\x00\x00\x01") or nal.startswith(b"\x00\x00\x00\x01"):
                nal = nal[nal.index(b"\x01") + 1:]
            if nal:
                kind = self._nal_kind(<const uint8_t*>PyBytes_AS_STRING(nal))
                if kind >= NK_VPS:
                    batch.append((kind, b"\x00\x00\x00\x01" + nal))
        for kind in {k for k, _ in batch}:
            self.parameter_set_bytes -= sum([len(old) for old in self._ps[kind - NK_VPS].values()])
            self._ps[kind - NK_VPS].clear()
        for kind, nal in batch:
            self._store_ps(kind, nal)

    def parameter_sets(self):
        """The stored parameter sets as one Annex-B blob (VPS, SPS, PPS order)."""
        return b"".join([b"".join(sets.values()) for sets in self._ps])

    # -- per packet ------------------------------------------------------------------

    cdef int push_c(self, const uint8_t* p, Py_ssize_t n, list out) except -1:
        cdef RtpPacket pkt
        cdef RtpVerdict verdict = self._rtp.receive(p, n, &pkt)
        if verdict == RTP_DROP:
            return 0
        if verdict == RTP_GAP and self._open:
            self._broken = True                       # the lost packets may be this AU's tail
        if self._open and pkt.ext_timestamp != self._ts:
            self._finish(out)                         # new timestamp: the marker was missing
        if not self._open:
            self._start(pkt.ext_timestamp)
        if verdict == RTP_GAP:
            self._broken = True                       # ... or this AU's head
        if not self._broken and pkt.payload_len:
            self._payload(pkt.payload, pkt.payload_len)
        if pkt.marker:
            self._finish(out)
        return 0

    cdef int _payload(self, const uint8_t* p, Py_ssize_t n) except -1:
        raise NotImplementedError

    cdef int _nal_kind(self, const uint8_t* nal) noexcept:
        return NK_OTHER

    # -- access unit assembly --------------------------------------------------------

    cdef int _start(self, int64_t ts) noexcept:
        self._open = True
        self._ts = ts
        self._len = 0
        self._au_bytes = 0
        self._broken = False
        self._too_big = False
        self._keyframe = False
        self._vcl_seen = False
        self._fu_open = False
        self._insert_at = 0
        self._nals = 0
        self._seen_ps = 0
        return 0

    cdef int _finish(self, list out) except -1:
        if not self._open:
            return 0
        self._open = False
        if self._too_big:
            self._rtp.stats.oversized += 1
        elif self._broken or self._fu_open:
            self._rtp.stats.discarded_aus += 1
        elif self._len:
            out.append(self._build())
        return 0

    cdef AccessUnit _build(self):
        """Copy the buffer into bytes, inserting the stored parameter sets into a keyframe
        that lacks any of them so every keyframe decodes on its own."""
        cdef AccessUnit au = AccessUnit.__new__(AccessUnit)
        cdef bytes ps = b""
        cdef char* dst
        if self._keyframe and self._required_ps & ~self._seen_ps:
            ps = b"".join([b"".join(sets.values()) for sets in self._ps])
        cdef Py_ssize_t ps_len = PyBytes_GET_SIZE(ps)
        if ps_len == 0:
            au.data = PyBytes_FromStringAndSize(<const char*>self._buf, self._len)
        else:
            au.data = PyBytes_FromStringAndSize(NULL, self._len + ps_len)
            dst = PyBytes_AS_STRING(au.data)
            memcpy(dst, self._buf, self._insert_at)
            memcpy(dst + self._insert_at, PyBytes_AS_STRING(ps), ps_len)
            memcpy(dst + self._insert_at + ps_len, self._buf + self._insert_at, self._len - self._insert_at)
        au.pts = self._ts
        au.keyframe = self._keyframe
        au.codec = self._codec
        return au

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t cap = self._cap if self._cap else INITIAL_CAPACITY
        cdef uint8_t* grown
        while cap < self._len + extra:
            cap *= 2
        if cap != self._cap:
            grown = <uint8_t*>realloc(self._buf, cap)
            if grown == NULL:
                raise MemoryError()
            self._buf = grown
            self._cap = cap
        return 0

    cdef int _write(self, const uint8_t* p, Py_ssize_t n) except -1:
        # Every byte of the unit counts, the parameter sets _end_nal cuts out again included.
        if self._au_bytes + n > self.max_au_size:
            self._broken = True
            self._too_big = True
            return 0
        self._au_bytes += n
        if self._len + n > self._cap:
            self._reserve(n)
        memcpy(self._buf + self._len, p, n)
        self._len += n
        return 0

    cdef int _begin_nal(self) except -1:
        self._write(START_CODE, 4)
        self._nal_start = self._len
        return 0

    cdef int _end_nal(self) except -1:
        """Classify the NAL just written: keyframe, leading AUD, parameter set to remember."""
        if self._broken or self._len <= self._nal_start:
            return 0
        cdef int kind = self._nal_kind(self._buf + self._nal_start)
        if kind == NK_VCL or kind == NK_KEY:
            self._vcl_seen = True
            self._keyframe |= kind == NK_KEY
        elif kind == NK_AUD:
            if self._nals == 0:
                self._insert_at = self._len
        elif kind >= NK_VPS:
            self._store_ps(kind, PyBytes_FromStringAndSize(
                <const char*>self._buf + self._nal_start - 4, self._len - self._nal_start + 4))
            if self._vcl_seen:
                # rtph264pay config-interval=-1 repeats SPS/PPS before every IDR *slice*; after a
                # slice they would start a new access unit for a decoder, so keep them out.
                self._len = self._nal_start - 4
                return 0
            self._seen_ps |= 1u << (kind - NK_VPS)
        self._nals += 1
        return 0

    cdef int _store_ps(self, int kind, bytes nal) except -1:
        """Keep `nal` (Annex-B) as the set of its kind and id, replacing the one stored with that id (a set whose id
        cannot be read has one slot per kind, key -1); a new id beyond the caps on count or bytes is refused."""
        cdef dict sets = self._ps[kind - NK_VPS]
        cdef long key = parameter_set_id(<const uint8_t*>PyBytes_AS_STRING(nal) + 4, PyBytes_GET_SIZE(nal) - 4,
                                         self._codec == "h265")
        cdef bytes old = sets.get(key)
        cdef Py_ssize_t old_len = 0 if old is None else PyBytes_GET_SIZE(old)
        if old is not None and old == nal:
            return 0
        if ((old is None and len(sets) >= MAX_PS_PER_KIND)
                or self.parameter_set_bytes - old_len + PyBytes_GET_SIZE(nal) > MAX_PS_BYTES):
            self.parameter_sets_refused += 1
            return 0
        sets[key] = nal
        self.parameter_set_bytes += PyBytes_GET_SIZE(nal) - old_len
        return 0

    # -- payload structures shared by both codecs -------------------------------------

    cdef int _single(self, const uint8_t* p, Py_ssize_t n) except -1:
        if self._fu_open:                              # an FU lost its end fragment
            self._broken = True
            return 0
        self._begin_nal()
        self._write(p, n)
        self._end_nal()
        return 0

    cdef int _aggregate(self, const uint8_t* p, Py_ssize_t n, Py_ssize_t off) except -1:
        """STAP-A / AP: 16-bit size + NAL unit, repeated."""
        cdef Py_ssize_t size
        while off + 2 <= n:
            size = (<Py_ssize_t>p[off] << 8) | p[off + 1]
            if size == 0 or off + 2 + size > n:
                break
            self._single(p + off + 2, size)
            off += 2 + size
            if self._broken:
                return 0
        if off != n:                                   # a unit runs past the packet, or a stray byte
            self._rtp.stats.truncated += 1
            self._broken = True
        return 0

    cdef int _fragment(self, bint start, bint end, uint8_t h0, uint8_t h1, int hlen,
                       const uint8_t* data, Py_ssize_t n) except -1:
        """FU-A / FU: the start fragment rebuilds the NAL header (hlen bytes), the rest append."""
        cdef uint8_t header[2]
        if start:
            if self._fu_open:                          # a new FU while one is open: lost its end
                self._broken = True
                return 0
            header[0] = h0
            header[1] = h1
            self._begin_nal()
            self._write(header, hlen)
            self._fu_open = True
        elif not self._fu_open:                        # middle/end without start: lost its start
            self._broken = True
            return 0
        self._write(data, n)
        if end:
            self._fu_open = False
            self._end_nal()
        return 0


cdef class H264Depacketizer(Depacketizer):
    """RFC 6184 non-interleaved mode: single NAL (1-23), STAP-A (24), FU-A (28)."""

    def __cinit__(self, int payload_type=-1, Py_ssize_t max_au_size=4 * 1024 * 1024):
        self._codec = "h264"
        self._required_ps = PS_SPS | PS_PPS

    cdef int _nal_kind(self, const uint8_t* nal) noexcept:
        cdef int t = h264_type(nal[0])
        if t == H264_IDR:
            return NK_KEY
        if h264_is_vcl(t):
            return NK_VCL
        if t == H264_SPS:
            return NK_SPS
        if t == H264_PPS:
            return NK_PPS
        if t == H264_AUD:
            return NK_AUD
        return NK_OTHER

    cdef int _payload(self, const uint8_t* p, Py_ssize_t n) except -1:
        cdef int t = h264_type(p[0])                   # RFC 6184's payload structures reuse the NAL type field
        if 1 <= t <= 23:
            self._single(p, n)
        elif t == 24:
            if self._fu_open:
                self._broken = True
            else:
                self._aggregate(p, n, 1)
        elif t == 28:
            if n < 2:
                self._rtp.stats.truncated += 1
                self._broken = True
            else:
                self._fragment(p[1] & 0x80, p[1] & 0x40, (p[0] & 0xE0) | (p[1] & 0x1F), 0, 1, p + 2, n - 2)
        elif t == 25 or t == 26 or t == 27 or t == 29:
            self._rtp.stats.unsupported += 1          # STAP-B / MTAP / FU-B: interleaved mode only
            self._broken = True                        # their slices are lost to this AU
        else:
            self._rtp.stats.unsupported += 1          # 0, 30, 31: reserved, ignored per RFC 6184
        return 0


cdef class H265Depacketizer(Depacketizer):
    """RFC 7798 without DONL (sprop-max-don-diff = 0): single NAL, AP (48), FU (49)."""

    def __cinit__(self, int payload_type=-1, Py_ssize_t max_au_size=4 * 1024 * 1024):
        self._codec = "h265"
        self._required_ps = PS_VPS | PS_SPS | PS_PPS

    cdef int _nal_kind(self, const uint8_t* nal) noexcept:
        cdef int t = h265_type(nal[0])
        if is_keyframe(t, True):
            return NK_KEY
        if h265_is_vcl(t):
            return NK_VCL
        if t == H265_VPS:
            return NK_VPS
        if t == H265_SPS:
            return NK_SPS
        if t == H265_PPS:
            return NK_PPS
        if t == H265_AUD:
            return NK_AUD
        return NK_OTHER

    cdef int _payload(self, const uint8_t* p, Py_ssize_t n) except -1:
        if n < 2:
            self._rtp.stats.truncated += 1
            self._broken = True
            return 0
        cdef int t = h265_type(p[0])                   # RFC 7798's payload structures reuse the NAL type field
        if t < 48:
            self._single(p, n)
        elif t == 48:
            if self._fu_open:
                self._broken = True
            else:
                self._aggregate(p, n, 2)
        elif t == 49:
            if n < 3:
                self._rtp.stats.truncated += 1
                self._broken = True
            else:
                self._fragment(p[2] & 0x80, p[2] & 0x40, (p[0] & 0x81) | ((p[2] & 0x3F) << 1), p[1], 2,
                               p + 3, n - 3)
        elif t == 50:
            self._rtp.stats.unsupported += 1          # PACI: its payload is not decoded here
            self._broken = True
        else:
            self._rtp.stats.unsupported += 1          # 51-63: unspecified, ignored
        return 0
