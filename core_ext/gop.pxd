# C-level interface of a hub's GOP cache (udprecv.pyx and framing.pyx add an unwatched camera's units in C).
from libc.stdint cimport uint64_t

from core_ext.depacketize cimport AccessUnit
from core_ext.recorder cimport Recorder


cdef double monotonic_c() noexcept nogil


cdef class GopCache:
    cdef list _units                    # since the last keyframe; [] until one arrives or after a cut
    cdef readonly Py_ssize_t nbytes     # bytes in _units
    cdef readonly Py_ssize_t max_bytes
    cdef readonly Py_ssize_t max_units
    cdef public uint64_t units          # published, cached or not
    cdef public uint64_t keyframes
    cdef public uint64_t bytes
    cdef public double last_unit_at     # monotonic seconds
    cdef public double last_keyframe_at
    cdef public bint direct             # the cache is the only consumer: ingest may add here from C
    cdef public Recorder recorder       # the worker's recording ring (None: not recorded); every unit added goes there
    cdef public Py_ssize_t record_slot  # this camera's slot in it

    cdef int add_c(self, object unit, Py_ssize_t size, bint keyframe, double now) except -1
    cdef bint takes_c(self, AccessUnit unit) noexcept
    cdef int take_c(self, list items, list out) except -1
