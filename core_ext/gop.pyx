"""A hub's GOP cache and counters in C: the units since the last keyframe, bounded in bytes and units.

Most cameras are watched by nobody most of the time; for them the cache is the only consumer of every unit.
While that holds (`direct`, kept by the hub) the UDP receiver and the TCP demuxer add a camera's units here
straight from what they parsed, so such a camera costs no Python per frame: only a session's first keyframe
(which marks it as having a picture) and the units of a camera someone watches go through `Hub.publish`.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t
from libc.time cimport timespec

from core_ext.depacketize cimport AccessUnit
from core_ext.recorder cimport Recorder
from core_ext.nal cimport H264_SPS, H265_SPS, H265_VPS, after_start_code, is_aud, nal_type


cdef extern from "<time.h>" nogil:
    int clock_gettime(int clk_id, timespec* tp)
    int CLOCK_MONOTONIC


cdef double monotonic_c() noexcept nogil:
    """What time.monotonic() returns (CPython reads the same clock)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def starts_with_parameter_sets(str codec, bytes data not None):
    """Whether an access unit begins (after an access unit delimiter, if any) with a parameter set: SPS for H.264;
    VPS or SPS for H.265. Keyframes from core_ext do whenever the SDP or the stream gave them; the session and
    `GopCache.takes_c` both require it of a keyframe."""
    return _starts_with_parameter_sets(data, codec == "h265")


cdef bint _starts_with_parameter_sets(bytes data, bint h265) noexcept:
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t at = after_start_code(p, 0, n)
    if at < 0:
        return False
    cdef int kind = nal_type(p[at], h265)
    if is_aud(kind, h265):
        at = after_start_code(p, at + 1, n)
        if at < 0:
            return False
        kind = nal_type(p[at], h265)
    return (kind == H265_VPS or kind == H265_SPS) if h265 else kind == H264_SPS


cdef class GopCache:
    def __cinit__(self, Py_ssize_t max_bytes, Py_ssize_t max_units):
        self._units = []
        self.max_bytes = max_bytes
        self.max_units = max_units

    def add(self, unit, double now):
        """Count a published unit and cache it: a keyframe starts a new GOP; a unit before any keyframe is not
        decodable and is not kept; a GOP past the bounds is cut until the next keyframe."""
        cdef bytes data = unit.data
        cdef bint keyframe = bool(unit.keyframe)
        self.add_c(unit, len(data), keyframe, now)
        if self.recorder is not None:
            self.recorder.append_c(self.record_slot, <const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                                   unit.pts, keyframe)

    cdef int add_c(self, object unit, Py_ssize_t size, bint keyframe, double now) except -1:
        self.units += 1
        self.bytes += size
        self.last_unit_at = now
        if keyframe:
            self.keyframes += 1
            self.last_keyframe_at = now
            self._units = [unit]
            self.nbytes = size
            return 0
        if not self._units:
            return 0
        self.nbytes += size
        if self.nbytes > self.max_bytes or len(self._units) >= self.max_units:
            self._units = []
            self.nbytes = 0
            return 0
        self._units.append(unit)
        return 0

    cdef bint takes_c(self, AccessUnit unit) noexcept:
        """Whether the receiver may add `unit` here itself: nobody else consumes the camera, a GOP is cached (so
        this session's first keyframe went through Python, which vetted it and marked the session as having a
        picture) and, for a keyframe, it begins with its parameter sets as the session requires (else Python
        drops it, as it always has)."""
        if not self.direct or len(self._units) == 0:
            return False
        return not unit.keyframe or _starts_with_parameter_sets(unit.data, unit.codec == "h265")

    cdef int take_c(self, list items, list out) except -1:
        """Add the units of `items` (a drain's or a read's output, in stream order) that this cache takes, and put
        the rest in `out`. Once a unit goes to Python, every later one does too, or the cache would see units out of
        order; anything that is not an AccessUnit (an RTSP message) always goes to Python."""
        cdef double now = monotonic_c()
        cdef bint diverted = False
        cdef AccessUnit unit
        for item in items:
            if type(item) is AccessUnit:
                unit = <AccessUnit>item
                if not diverted and self.takes_c(unit):
                    self.add_c(unit, len(unit.data), unit.keyframe, now)
                    if self.recorder is not None:
                        self.recorder.append_c(self.record_slot, <const uint8_t*>PyBytes_AS_STRING(unit.data),
                                               PyBytes_GET_SIZE(unit.data), unit.pts, unit.keyframe)
                    continue
                diverted = True
            out.append(item)
        return 0

    def snapshot(self):
        """A copy of the cached units (the first one is the keyframe), or [] if none is cached."""
        return list(self._units)

    def __len__(self):
        return len(self._units)

    def clear(self):
        """Forget the GOP (the stream broke); the counters stay, and the recording resumes at a keyframe."""
        self._units = []
        self.nbytes = 0
        if self.recorder is not None:
            self.recorder.break_c(self.record_slot)
