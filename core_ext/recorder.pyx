"""The recording ring's C side: units appended to an in-memory batch, batches written with the GIL released, and
the per-camera index of what is on disk in 16-byte entries.

The event loop only copies: `append_c` (called by gop.pyx for every unit a hub caches, on the Python path and on
the receivers' C path alike) puts a record header, the camera id and the unit into `_active`. The writer thread
(mediaserver/recording.py) swaps `_active` for `_writing` under the GIL (`take`), writes it with the GIL released
(`write_taken`), then `commit`s its entries into the index and into the chunk's footer (`footer` at rotation).

Record: 40-byte header (little-endian) | camera id | unit data
    u32 magic "GTR1" | u32 crc | u16 id length | u8 flags (1: keyframe) | u8 0 | u32 data length |
    i64 wall ns (CLOCK_REALTIME) | i64 pts (90 kHz) | u32 slot | u32 0
The CRC (IEEE) covers header bytes 8..40, the id and the first and last 16 bytes of the data: it cuts a torn or
zeroed tail at a record boundary without hashing every byte recorded.
Footer (at chunk rotation): u32 names | names (u16 length, bytes; index = slot) | entries (32 bytes each, `Pending`)
    | trailer: u64 footer start | u32 entries | u32 names bytes | u32 crc of footer body | u32 magic "GTFE"
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EINTR, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove, memset
from libc.time cimport timespec


cdef extern from "<time.h>" nogil:
    int clock_gettime(int clk_id, timespec* tp)
    int CLOCK_REALTIME


cdef extern from "<unistd.h>" nogil:
    ssize_t write(int fd, const void* buf, size_t n)


DEF HEADER = 40
DEF PENDING = 32
DEF TRAILER = 24
RECORD_HEADER = HEADER
ENTRY_SIZE = PENDING
TRAILER_SIZE = TRAILER
RECORD_MAGIC = 0x31525447  # "GTR1"
FOOTER_MAGIC = 0x45465447  # "GTFE"
cdef uint32_t _RECORD_MAGIC = 0x31525447
cdef uint32_t _FOOTER_MAGIC = 0x45465447
cdef uint32_t _CRC_TABLE[256]


cdef void _crc_init() noexcept:
    cdef uint32_t c
    cdef int i, k
    for i in range(256):
        c = i
        for k in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if (c & 1) else (c >> 1)
        _CRC_TABLE[i] = c


_crc_init()


cdef inline uint32_t _crc(uint32_t crc, const uint8_t* p, size_t n) noexcept nogil:
    cdef size_t i
    crc = ~crc
    for i in range(n):
        crc = _CRC_TABLE[(crc ^ p[i]) & 0xFF] ^ (crc >> 8)
    return ~crc


cdef uint32_t _record_crc(const uint8_t* rec, size_t name_len, size_t n) noexcept nogil:
    """CRC of a record starting at `rec` (header, id, then `n` data bytes)."""
    cdef const uint8_t* data = rec + HEADER + name_len
    cdef uint32_t c = _crc(0, rec + 8, HEADER - 8 + name_len)
    cdef size_t k = 16 if n > 16 else n
    c = _crc(c, data, k)
    return _crc(c, data + n - k, k)


cdef inline int64_t _realtime_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def realtime_ns():
    """CLOCK_REALTIME in ns, as the ring stamps units."""
    return _realtime_ns()


def crc32(const uint8_t[:] data not None):
    """The IEEE CRC-32 the ring uses (zlib.crc32 gives the same)."""
    return _crc(0, &data[0], data.shape[0]) if data.shape[0] else 0


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept nogil:
    memcpy(p, &v, 4)


cdef inline void _put64(uint8_t* p, int64_t v) noexcept nogil:
    memcpy(p, &v, 8)


cdef inline uint32_t _get32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline int64_t _get64(const uint8_t* p) noexcept nogil:
    cdef int64_t v
    memcpy(&v, p, 8)
    return v


cdef int _reserve(Batch* b, size_t data, size_t ents) except -1:
    cdef size_t cap
    cdef void* p
    if b.len + data > b.cap:
        cap = b.cap * 2 if b.cap else 1 << 20
        while cap < b.len + data:
            cap *= 2
        p = realloc(b.data, cap)
        if p == NULL:
            raise MemoryError()
        b.data = <uint8_t*>p
        b.cap = cap
    if b.n + ents > b.ncap:
        cap = b.ncap * 2 if b.ncap else 4096
        while cap < b.n + ents:
            cap *= 2
        p = realloc(b.ents, cap * sizeof(Pending))
        if p == NULL:
            raise MemoryError()
        b.ents = <Pending*>p
        b.ncap = cap
    return 0


cdef void _free_batch(Batch* b) noexcept:
    free(b.data)
    free(b.ents)
    memset(b, 0, sizeof(Batch))


cdef class Recorder:
    """One worker's recording ring in memory: the batch being filled, the one being written, the index."""

    def __cinit__(self, int64_t epoch_ms, size_t max_entries, size_t max_total_entries,
                  size_t max_batch_bytes=64 << 20):
        self.epoch_ms = epoch_ms
        self.max_entries = max(max_entries, 2)
        self.max_total_entries = max_total_entries
        self.max_batch_bytes = max_batch_bytes
        self._names = []
        self._slots = {}

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self._ncams):
            free(self._cams[i].e)
        free(self._cams)
        _free_batch(&self._active)
        _free_batch(&self._writing)
        _free_batch(&self._footer)

    # --- cameras ---
    def camera(self, str camera_id not None):
        """The slot of a camera (new ones get the next); ids are kept in chunks, so at most 65535 bytes."""
        slot = self._slots.get(camera_id)
        if slot is not None:
            return slot
        name = camera_id.encode()
        if len(name) > 0xFFFF:
            raise ValueError("camera id too long to record")
        if self._ncams == self._cams_cap:
            cap = self._cams_cap * 2 if self._cams_cap else 64
            p = realloc(self._cams, cap * sizeof(CamIndex))
            if p == NULL:
                raise MemoryError()
            self._cams = <CamIndex*>p
            self._cams_cap = cap
        memset(&self._cams[self._ncams], 0, sizeof(CamIndex))
        slot = self._ncams
        self._ncams += 1
        self._names.append(name)
        self._slots[camera_id] = slot
        return slot

    def slot(self, str camera_id not None):
        """The camera's slot, or None if it was never recorded."""
        return self._slots.get(camera_id)

    def name_length(self, Py_ssize_t slot):
        return len(self._names[slot])

    def break_stream(self, Py_ssize_t slot):
        self.break_c(slot)

    cdef void break_c(self, Py_ssize_t slot) noexcept:
        """The stream broke: record again from the camera's next keyframe."""
        if 0 <= slot < self._ncams:
            self._cams[slot].started = False

    # --- the event loop's side: one copy per unit ---
    def append(self, Py_ssize_t slot, bytes data not None, int64_t pts, bint keyframe):
        self.append_c(slot, <const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), pts, keyframe)

    cdef int append_c(self, Py_ssize_t slot, const uint8_t* p, size_t n, int64_t pts, bint keyframe) except -1:
        if slot < 0 or slot >= self._ncams:
            return 0
        cdef CamIndex* cam = &self._cams[slot]
        if not keyframe and not cam.started:
            self.skipped += 1
            return 0
        if self.stopped or self._active.len + n > self.max_batch_bytes or n >= (1u << 31):
            self.dropped += 1
            cam.started = False  # what follows a gap is not decodable until the next keyframe
            return 0
        cam.started = True
        cdef bytes name = <bytes>self._names[slot]
        cdef size_t name_len = PyBytes_GET_SIZE(name)
        cdef size_t size = HEADER + name_len + n
        _reserve(&self._active, size, 1)
        cdef uint8_t* rec = self._active.data + self._active.len
        cdef int64_t wall = _realtime_ns()
        _put32(rec, _RECORD_MAGIC)
        rec[8] = name_len & 0xFF
        rec[9] = name_len >> 8
        rec[10] = 1 if keyframe else 0
        rec[11] = 0
        _put32(rec + 12, <uint32_t>n)
        _put64(rec + 16, wall)
        _put64(rec + 24, pts)
        _put32(rec + 32, <uint32_t>slot)
        _put32(rec + 36, 0)
        memcpy(rec + HEADER, PyBytes_AS_STRING(name), name_len)
        memcpy(rec + HEADER + name_len, p, n)
        _put32(rec + 4, _record_crc(rec, name_len, n))
        cdef Pending* e = &self._active.ents[self._active.n]
        e.slot = <uint32_t>slot
        e.flags = 1 if keyframe else 0
        e.wall_ns = wall
        e.pts = pts
        e.offset = <uint32_t>self.chunk_pos
        e.length = <uint32_t>n
        self._active.n += 1
        self._active.len += size
        self.chunk_pos += size
        self.units += 1
        self.bytes_in += n
        return 0

    @property
    def pending_bytes(self):
        return self._active.len

    # --- the writer thread's side ---
    def take(self, size_t rotate_at):
        """Swap the filled batch out for writing; returns its chunk, or -1 if empty. The next units go to a new
        chunk when this one reached `rotate_at` bytes (the caller then writes the footer after this batch)."""
        if self._active.len == 0 or self._writing.len:
            return -1
        cdef Batch t = self._writing
        self._writing = self._active
        self._active = t
        self._active.len = 0
        self._active.n = 0
        self.writing_chunk = self.chunk
        if self.chunk_pos >= rotate_at:
            self.rotate()
        return self.writing_chunk

    def rotate(self):
        """Units from now on go to the next chunk."""
        self.chunk += 1
        self.chunk_pos = 0

    def write_taken(self, int fd):
        """Write the taken batch to `fd` with the GIL released; returns 0 or the errno of a failed write (the
        batch is then dropped: what reached the file before is cut by the record scan on recovery)."""
        cdef const uint8_t* p = self._writing.data
        cdef size_t left = self._writing.len
        cdef ssize_t r
        cdef int err = 0
        with nogil:
            while left:
                r = write(fd, p, left)
                if r < 0:
                    if errno == EINTR:
                        continue
                    err = errno
                    break
                if r == 0:
                    err = 28  # ENOSPC: the kernel wrote nothing and said nothing
                    break
                p += r
                left -= r
        self.bytes_written += self._writing.len - left
        return err

    def commit(self):
        """The taken batch is on disk: index its units and keep their entries for the chunk's footer; returns the
        newest wall time (ns) in it, or 0."""
        cdef size_t i
        cdef Pending* e
        cdef int64_t newest = 0
        _reserve(&self._footer, 0, self._writing.n)
        memcpy(self._footer.ents + self._footer.n, self._writing.ents, self._writing.n * sizeof(Pending))
        self._footer.n += self._writing.n
        for i in range(self._writing.n):
            e = &self._writing.ents[i]
            self._index(e.slot, <uint32_t>(e.wall_ns // 1000000 - self.epoch_ms), self.writing_chunk, e.offset,
                        e.length | ((e.flags & 1) << 31))
            if e.wall_ns > newest:
                newest = e.wall_ns
        self._writing.len = 0
        self._writing.n = 0
        return newest

    def discard_taken(self):
        self._writing.len = 0
        self._writing.n = 0

    def stop(self):
        """A write failed: drop what is batched and record nothing more (ingest is not affected)."""
        self.stopped = True
        self.dropped += self._active.n
        self._active.len = 0
        self._active.n = 0
        self.discard_taken()

    def footer(self, Py_ssize_t start):
        """The footer of the chunk whose committed entries were kept (it begins at byte `start`); resets them."""
        cdef bytearray out = bytearray()
        out += len(self._names).to_bytes(4, "little")
        for name in self._names:
            out += len(name).to_bytes(2, "little") + name
        names_len = len(out)
        count = self._footer.n
        out += PyBytes_FromStringAndSize(<char*>self._footer.ents, count * PENDING)
        self._footer.n = 0
        body = bytes(out)
        trailer = (start.to_bytes(8, "little") + count.to_bytes(4, "little") + names_len.to_bytes(4, "little")
                   + crc32(body).to_bytes(4, "little") + FOOTER_MAGIC.to_bytes(4, "little"))
        return body + trailer

    # --- the index ---
    cdef int _index(self, Py_ssize_t slot, uint32_t wall_ms, uint32_t chunk, uint32_t offset,
                    uint32_t len_kf) except -1:
        if slot < 0 or slot >= self._ncams:
            return 0
        cdef CamIndex* cam = &self._cams[slot]
        cdef size_t live
        cdef void* p
        if cam.end - cam.head >= self.max_entries or (
                self.max_total_entries and self.total_entries >= self.max_total_entries and cam.end > cam.head):
            cam.head += 1  # bounded RAM: this camera's oldest entry goes
            self.total_entries -= 1
        if cam.end == cam.cap:
            live = cam.end - cam.head
            if cam.head and live <= cam.cap // 2:
                memmove(cam.e, cam.e + cam.head, live * sizeof(Entry))
            else:
                p = realloc(cam.e, (cam.cap * 2 if cam.cap else 64) * sizeof(Entry))
                if p == NULL:
                    raise MemoryError()
                cam.e = <Entry*>p
                cam.cap = cam.cap * 2 if cam.cap else 64
                if cam.head:
                    memmove(cam.e, cam.e + cam.head, live * sizeof(Entry))
            cam.head = 0
            cam.end = live
        cam.e[cam.end] = Entry(wall_ms, chunk, offset, len_kf)
        cam.end += 1
        self.total_entries += 1
        return 0

    def load(self, uint32_t chunk, const uint8_t[:] entries not None, list slots not None):
        """Index a chunk's entries recovered from disk (footer format; `slots[i]` is the slot of footer name i)."""
        cdef Py_ssize_t i, count = entries.shape[0] // PENDING
        cdef const uint8_t* e
        cdef int64_t wall_ms
        cdef Py_ssize_t ref
        for i in range(count):
            e = &entries[i * PENDING]
            ref = _get32(e)
            if ref >= len(slots):
                continue
            wall_ms = _get64(e + 8) // 1000000 - self.epoch_ms
            if wall_ms < 0:
                continue
            self._index(slots[ref], <uint32_t>wall_ms, chunk, _get32(e + 24),
                        _get32(e + 28) | ((_get32(e + 4) & 1) << 31))
        return count

    def drop_chunk(self, uint32_t chunk):
        """A chunk was deleted: every camera forgets its entries in it and older ones."""
        cdef Py_ssize_t i
        cdef CamIndex* cam
        for i in range(self._ncams):
            cam = &self._cams[i]
            while cam.head < cam.end and cam.e[cam.head].chunk <= chunk:
                cam.head += 1
                self.total_entries -= 1

    def count(self, Py_ssize_t slot):
        return self._cams[slot].end - self._cams[slot].head if 0 <= slot < self._ncams else 0

    def entries(self, Py_ssize_t slot, Py_ssize_t first, Py_ssize_t end):
        """Entries first..end-1 (0: the oldest) of a camera, taken at once (the writer thread may drop chunks
        between two Python calls): [(wall ms, chunk, record offset, data length, keyframe)]."""
        if slot < 0 or slot >= self._ncams:
            return []
        cdef CamIndex* cam = &self._cams[slot]
        cdef Py_ssize_t live = cam.end - cam.head, i
        cdef Entry e
        out = []
        for i in range(max(first, 0), min(end, live)):
            e = cam.e[cam.head + i]
            out.append((e.wall_ms + self.epoch_ms, e.chunk, e.offset, e.len_kf & 0x7FFFFFFF, bool(e.len_kf >> 31)))
        return out

    def locate(self, Py_ssize_t slot, int64_t wall_ms):
        """The index of the newest keyframe at or before `wall_ms`, or -1 if none is indexed."""
        if slot < 0 or slot >= self._ncams:
            return -1
        cdef CamIndex* cam = &self._cams[slot]
        cdef int64_t rel = wall_ms - self.epoch_ms
        cdef size_t lo = cam.head, hi = cam.end, mid
        while lo < hi:  # first entry after rel
            mid = (lo + hi) // 2
            if cam.e[mid].wall_ms <= rel:
                lo = mid + 1
            else:
                hi = mid
        while lo > cam.head:
            lo -= 1
            if cam.e[lo].len_kf >> 31:
                return <Py_ssize_t>(lo - cam.head)
        return -1

    def range(self, Py_ssize_t slot):
        """(wall ms of the oldest keyframe, of the newest unit), or None when nothing playable is indexed."""
        if slot < 0 or slot >= self._ncams:
            return None
        cdef CamIndex* cam = &self._cams[slot]
        cdef size_t i
        for i in range(cam.head, cam.end):
            if cam.e[i].len_kf >> 31:
                return (cam.e[i].wall_ms + self.epoch_ms, cam.e[cam.end - 1].wall_ms + self.epoch_ms)
        return None

    @property
    def cameras(self):
        return self._ncams

    @property
    def index_bytes(self):
        """RAM held by the index (allocated entries)."""
        cdef Py_ssize_t i
        cdef size_t total = 0
        for i in range(self._ncams):
            total += self._cams[i].cap
        return total * sizeof(Entry) + self._ncams * sizeof(CamIndex)


def scan(const uint8_t[:] buf not None):
    """Records of a chunk without a footer, up to the first torn or damaged one: (good length, names, entries in
    the footer format with name refs)."""
    cdef Py_ssize_t at = 0, size = buf.shape[0]
    cdef const uint8_t* rec
    cdef size_t name_len, n
    names: dict = {}
    out = bytearray()
    cdef uint8_t ent[PENDING]
    while at + HEADER <= size:
        rec = &buf[at]
        if _get32(rec) != _RECORD_MAGIC:
            break
        name_len = rec[8] | (rec[9] << 8)
        n = _get32(rec + 12)
        if at + HEADER + name_len + n > <size_t>size or _get32(rec + 4) != _record_crc(rec, name_len, n):
            break
        name = PyBytes_FromStringAndSize(<char*>rec + HEADER, name_len)
        ref = names.setdefault(name, len(names))
        _put32(ent, <uint32_t>ref)
        _put32(ent + 4, rec[10] & 1)
        _put64(ent + 8, _get64(rec + 16))
        _put64(ent + 16, _get64(rec + 24))
        _put32(ent + 24, <uint32_t>at)
        _put32(ent + 28, <uint32_t>n)
        out += PyBytes_FromStringAndSize(<char*>ent, PENDING)
        at += HEADER + name_len + n
    return at, list(names), bytes(out)


def read_record(const uint8_t[:] rec not None):
    """(wall ns, pts, keyframe, camera id, data) of one whole record, checked; ValueError if damaged."""
    if rec.shape[0] < HEADER or _get32(&rec[0]) != _RECORD_MAGIC:
        raise ValueError("not a record")
    cdef size_t name_len = rec[8] | (rec[9] << 8)
    cdef size_t n = _get32(&rec[12])
    if HEADER + name_len + n > <size_t>rec.shape[0] or _get32(&rec[4]) != _record_crc(&rec[0], name_len, n):
        raise ValueError("damaged record")
    return (_get64(&rec[16]), _get64(&rec[24]), bool(rec[10] & 1),
            PyBytes_FromStringAndSize(<char*>&rec[HEADER], name_len).decode(),
            PyBytes_FromStringAndSize(<char*>&rec[HEADER + name_len], n))
