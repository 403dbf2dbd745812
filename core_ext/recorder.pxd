# C-level interface of the recording ring's batch (gop.pyx appends every cached unit here without Python).
from libc.stdint cimport int64_t, uint8_t, uint32_t


cdef struct Entry:                      # the in-memory index of one unit: 16 bytes
    uint32_t wall_ms                    # CLOCK_REALTIME ms since the ring's epoch
    uint32_t chunk
    uint32_t offset                     # of the record (header) in its chunk
    uint32_t len_kf                     # data length | keyframe << 31


cdef struct Pending:                    # one unit in a batch, and its footer entry on disk: 32 bytes
    uint32_t slot
    uint32_t flags                      # 1: keyframe
    int64_t wall_ns
    int64_t pts
    uint32_t offset
    uint32_t length


cdef struct Batch:
    uint8_t* data
    size_t len
    size_t cap
    Pending* ents
    size_t n
    size_t ncap


cdef struct CamIndex:
    Entry* e
    size_t head                         # first live entry
    size_t end
    size_t cap
    bint started                        # a keyframe was recorded since the last break


cdef class Recorder:
    cdef CamIndex* _cams
    cdef Py_ssize_t _ncams
    cdef Py_ssize_t _cams_cap
    cdef list _names                    # slot -> camera id (bytes)
    cdef dict _slots                    # camera id (str) -> slot
    cdef Batch _active                  # appended to under the GIL
    cdef Batch _writing                 # written by the writer thread with the GIL released
    cdef Batch _footer                  # the current chunk's committed entries (its footer at rotation)
    cdef readonly int64_t epoch_ms
    cdef readonly uint32_t chunk        # chunk the active batch belongs to
    cdef readonly uint32_t writing_chunk
    cdef readonly size_t chunk_pos      # bytes assigned in the current chunk
    cdef readonly size_t max_batch_bytes
    cdef readonly size_t max_entries    # per camera
    cdef readonly size_t max_total_entries
    cdef readonly size_t total_entries
    cdef public bint stopped            # a write failed: recording stopped, ingest goes on
    cdef readonly unsigned long long units
    cdef readonly unsigned long long bytes_in       # unit bytes recorded
    cdef readonly unsigned long long bytes_written  # bytes written to chunks (records and footers)
    cdef readonly unsigned long long dropped        # units not recorded: batch full or stopped
    cdef readonly unsigned long long skipped        # units before a camera's first keyframe

    cdef int append_c(self, Py_ssize_t slot, const uint8_t* p, size_t n, int64_t pts, bint keyframe) except -1
    cdef void break_c(self, Py_ssize_t slot) noexcept
    cdef int _index(self, Py_ssize_t slot, uint32_t wall_ms, uint32_t chunk, uint32_t offset,
                    uint32_t len_kf) except -1
