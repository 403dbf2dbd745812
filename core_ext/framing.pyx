"""Splits an RTSP TCP stream into RTSP messages and `$`-framed interleaved channel data.

Channel data goes straight to the channel's depacketiser in C; Python objects are created
only for RTSP messages (rare) and completed access units.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t

from core_ext.depacketize cimport Depacketizer


class FramingError(ValueError):
    """The byte stream is not RTSP interleaved framing; the connection must be restarted."""


# What may start an RTSP message: a response or a request (RFC 2326 §6.1 methods).
_STARTS = (b"RTSP/", b"OPTIONS ", b"DESCRIBE ", b"ANNOUNCE ", b"SETUP ", b"PLAY ", b"PAUSE ",
           b"TEARDOWN ", b"GET_PARAMETER ", b"SET_PARAMETER ", b"REDIRECT ", b"RECORD ")
_LONGEST_START = max(len(s) for s in _STARTS)


cdef class InterleavedDemuxer:
    """feed() bytes as they arrive; get RTSP messages (bytes) and AccessUnits, in stream order."""

    def __cinit__(self, Py_ssize_t max_message=64 * 1024):
        self._buf = bytearray()
        self._chan = [None] * 256
        self.max_message = max_message

    def add_channel(self, int channel, Depacketizer depacketizer not None):
        if not 0 <= channel <= 255:
            raise ValueError(f"interleaved channel must be 0..255, got {channel}")
        self._chan[channel] = depacketizer

    @property
    def buffered(self):
        """Bytes waiting for the rest of a frame or message."""
        return len(self._buf)

    def feed(self, data):
        """Messages and access units completed by `data`, in stream order; with a `cache`, without the units it
        took (gop.pyx)."""
        cdef list out = []
        cdef list handed
        cdef Py_ssize_t used
        if not self._buf and type(data) is bytes:
            # Common case: parse the caller's bytes in place, keep only the incomplete tail.
            used = self._parse(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), out)
            if used < PyBytes_GET_SIZE(data):
                self._buf += (<bytes>data)[used:]
        else:
            self._buf += data
            used = self._parse(<const uint8_t*>PyByteArray_AS_STRING(self._buf), len(self._buf), out)
            del self._buf[:used]                       # O(1) amortised: bytearray moves its start
        self.consumed += used
        if self.cache is None or not out:
            return out
        handed = []
        self.cache.take_c(out, handed)
        return handed

    cdef Py_ssize_t _parse(self, const uint8_t* p, Py_ssize_t n, list out) except -1:
        """Consume every complete frame/message in p[:n]; return how many bytes were used."""
        cdef Py_ssize_t pos = 0, length, end
        cdef int channel
        cdef object dep
        while pos < n:
            if p[pos] == 0x24:                         # '$' channel(1) length(2) payload
                if n - pos < 4:
                    break
                channel = p[pos + 1]
                length = (<Py_ssize_t>p[pos + 2] << 8) | p[pos + 3]
                if n - pos - 4 < length:
                    break
                self.frames += 1
                dep = self._chan[channel]
                if dep is not None:
                    (<Depacketizer>dep).push_c(p + pos + 4, length, out)
                elif channel & 1 and self._chan[channel - 1] is not None:
                    self.rtcp_frames += 1
                else:
                    self.unknown_channel_frames += 1
                pos += 4 + length
            else:
                try:
                    end = self._message(p + pos, n - pos, out)
                except FramingError as exc:
                    raise FramingError(f"at stream offset {self.consumed + pos}: {exc}") from None
                if end < 0:
                    break
                pos += end
        return pos

    cdef int _check_start(self, const uint8_t* p, Py_ssize_t n) except -2:
        """1: an RTSP message starts here; 0: too few bytes to tell; raise: garbage."""
        cdef bytes head = PyBytes_FromStringAndSize(<const char*>p, min(n, _LONGEST_START))
        for start in _STARTS:
            if head.startswith(start):
                return 1
        for start in _STARTS:
            if start.startswith(head):
                return 0
        raise FramingError(f"unexpected byte 0x{p[0]:02x} (stream data {head!r}): "
                           "neither '$' nor the start of an RTSP message")

    cdef Py_ssize_t _message(self, const uint8_t* p, Py_ssize_t n, list out) except -2:
        """Length of the complete RTSP message at p, or -1 if more bytes are needed."""
        cdef Py_ssize_t i, limit, header_len, body_len
        if self._check_start(p, n) == 0:
            return -1
        limit = min(n, self.max_message)
        header_len = -1
        for i in range(3, limit):
            if p[i] == 0x0A and p[i - 1] == 0x0D and p[i - 2] == 0x0A and p[i - 3] == 0x0D:
                header_len = i + 1
                break
        if header_len < 0:
            if n >= self.max_message:
                raise FramingError(f"RTSP header block larger than max_message={self.max_message}")
            return -1
        body_len = _content_length(PyBytes_FromStringAndSize(<const char*>p, header_len))
        if body_len > self.max_message:
            raise FramingError(f"RTSP body of {body_len} bytes exceeds max_message={self.max_message}")
        if n < header_len + body_len:
            return -1
        out.append(PyBytes_FromStringAndSize(<const char*>p, header_len + body_len))
        self.messages += 1
        return header_len + body_len


cdef Py_ssize_t _content_length(bytes header) except -1:
    for line in header.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            value = value.strip()
            # digits only (no sign), and short enough for Py_ssize_t: a 2**63 length is garbage, not an overflow
            if not value.isdigit() or len(value) > 18:
                raise FramingError(f"bad Content-Length {value[:40]!r}")
            return int(value)
    return 0
