"""RTP fan-out: a frame is packetised once, whatever the number of its viewers.

`packetize_h264` splits an Annex-B access unit into RTP payloads (RFC 6184: single NAL units, STAP-A for the
small parameter sets, FU-A for the rest) once per frame; the result (`RtpFrame`) is shared by every viewer of
the stream. Per viewer (`RtpOutput`) only what must differ is done, in C: the 12-byte header and header
extensions (SSRC, sequence, timestamp offset, abs-send-time, mid) are written in front of the shared payload,
the packet is encrypted with the viewer's own SRTP context (libsrtp, the very context aiortc negotiated over
DTLS, called through its C function pointer), and all packets of the frame go to the kernel with one
sendmmsg(2). `send_all` does that for a list of viewers in one C loop.

Each viewer keeps a small history (sequence -> shared frame + packet index) to answer NACKs, by RTX (RFC 4588)
when negotiated. The scratch buffers are per process and reused: the kernel has copied the datagrams by the
time sendmmsg returns, so nothing per viewer outlives the call.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, EINVAL, EIO, ENOPROTOOPT, EOPNOTSUPP, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec
from posix.uio cimport iovec

from core_ext.nal cimport H264_AUD, H264_FILLER, h264_type, is_start_code
from core_ext.sockets cimport (
    CMSG_DATA, CMSG_LEN, CMSG_SPACE, MSG_DONTWAIT, SOCK_DGRAM, cmsghdr, mmsghdr, msghdr, sendmmsg, sockaddr,
    socklen_t,
)

cdef extern from *:
    """
    #ifndef SOL_UDP
    #define SOL_UDP 17
    #endif
    #ifndef UDP_SEGMENT
    #define UDP_SEGMENT 103
    #endif
    """
    int SOL_UDP
    int UDP_SEGMENT

cdef extern from "<netdb.h>":
    struct addrinfo:
        int ai_flags
        int ai_family
        int ai_socktype
        int ai_protocol
        socklen_t ai_addrlen
        sockaddr* ai_addr
        char* ai_canonname
        addrinfo* ai_next
    int getaddrinfo(const char* node, const char* service, const addrinfo* hints, addrinfo** res)
    void freeaddrinfo(addrinfo* res)
    const char* gai_strerror(int errcode)
    enum:
        AI_NUMERICHOST
        AI_NUMERICSERV

# libsrtp 2: srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr)
ctypedef int (*protect_fn)(void* ctx, void* hdr, int* length) noexcept nogil

cdef enum:
    SLOT = 1536           # bytes per packet in the scratch arena (payload + header + SRTP tag fit)
    MAX_PAYLOAD = 1200    # RTP payload bytes: 1200 + 12 + extensions + SRTP tag stays under 1280 (IPv6 minimum MTU)
    HISTORY = 512         # packets per viewer kept for NACKs (~5 s at 1 Mbit/s); fanout.pxd sizes its arrays
    MAX_SEGMENTS = 64     # the kernel's limit of datagrams in one UDP_SEGMENT send
    MAX_GSO_BYTES = 65000
    CONTROL = 32          # ancillary bytes per message: one UDP_SEGMENT cmsg
cdef uint64_t NTP_EPOCH = 2208988800ULL

cdef uint8_t* _arena = NULL
cdef mmsghdr* _msgs = NULL
cdef iovec* _iovs = NULL
cdef uint8_t* _control = NULL
cdef Py_ssize_t* _counts = NULL
cdef Py_ssize_t _capacity = 0
# UDP generic segmentation offload (Linux >= 4.18): a run of equal-size packets to one viewer is handed to the
# kernel as one datagram it splits, so the IP/UDP send path runs once per run, not once per packet (~2.5x less
# kernel time per packet, measured on loopback). Turned off for the process if the kernel refuses it.
cdef bint _gso = True


cdef void* _grow(void* p, size_t size) except NULL:
    p = realloc(p, size)
    if p == NULL:
        raise MemoryError()
    return p


cdef int _reserve(Py_ssize_t packets) except -1:
    """Grow the per-process scratch arena to hold `packets` datagrams (and as many messages)."""
    global _arena, _msgs, _iovs, _control, _counts, _capacity
    if packets <= _capacity:
        return 0
    cdef Py_ssize_t n = max(packets, 2 * _capacity, 64)
    _arena = <uint8_t*>_grow(_arena, n * SLOT)
    _msgs = <mmsghdr*>_grow(_msgs, n * sizeof(mmsghdr))
    _iovs = <iovec*>_grow(_iovs, n * sizeof(iovec))
    _control = <uint8_t*>_grow(_control, n * CONTROL)
    _counts = <Py_ssize_t*>_grow(_counts, n * sizeof(Py_ssize_t))
    _capacity = n
    return 0


def gso_enabled():
    """Whether sends use UDP generic segmentation offload (False once the kernel refused it)."""
    return _gso


def set_gso(bint enabled):
    """Turn UDP segmentation offload on or off for this process (benchmarks compare both)."""
    global _gso
    _gso = enabled


cdef inline uint64_t _ntp_now() noexcept nogil:
    """The wall clock as a 64-bit NTP timestamp (RTCP sender reports, abs-send-time)."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ((<uint64_t>(ts.tv_sec + NTP_EPOCH)) << 32) | ((<uint64_t>ts.tv_nsec << 32) // 1000000000)


cdef class RtpFrame:
    """The RTP payloads of one access unit (shared by all viewers) and its 90 kHz timestamp."""

    def __cinit__(self):
        self.offsets = NULL
        self.count = 0

    def __dealloc__(self):
        free(self.offsets)

    def __len__(self):
        return self.count

    def payload(self, Py_ssize_t i):
        """Payload i as bytes (tests, debugging)."""
        if i < 0 or i >= self.count:
            raise IndexError(i)
        return self.data[self.offsets[i]:self.offsets[i + 1]]

    @property
    def size(self):
        return len(self.data)


cdef Py_ssize_t _split_nals(const uint8_t* p, Py_ssize_t n, list nals) except -1:
    """(start, end) of every NAL unit in an Annex-B buffer; AUD and filler units are dropped."""
    cdef Py_ssize_t i = 0, start = -1, end
    cdef uint8_t kind
    while i < n:
        if is_start_code(p, i, n):
            if start >= 0:
                end = i
                while end > start and p[end - 1] == 0:  # trailing zero of a 4-byte start code
                    end -= 1
                nals.append((start, end))
            i += 3
            start = i
        else:
            i += 1
    if start >= 0 and start < n:
        nals.append((start, n))
    elif start < 0 and n > 0:
        nals.append((0, n))  # no start code: one bare NAL unit
    cdef list kept = [(s, e) for s, e in nals
                      if e > s and h264_type(p[s]) != H264_AUD and h264_type(p[s]) != H264_FILLER]
    nals[:] = kept
    return len(nals)


def packetize_h264(bytes data not None, int64_t pts, Py_ssize_t max_payload=MAX_PAYLOAD):
    """RTP payloads for one H.264 access unit (Annex-B); `pts` in 90 kHz units."""
    if max_payload < 16 or max_payload > MAX_PAYLOAD:
        raise ValueError(f"max_payload must be 16..{MAX_PAYLOAD}")
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef list nals = []
    _split_nals(p, n, nals)
    cdef bytearray out = bytearray()
    cdef list offsets = [0]
    cdef Py_ssize_t i = 0, j, s, e, size, total, pieces, chunk, pos
    cdef uint8_t header, fu_indicator
    while i < len(nals):
        s, e = nals[i]
        size = e - s
        # STAP-A: consecutive NAL units that fit one packet together (SPS + PPS + SEI, typically)
        j, total = i, 1
        while j < len(nals) and total + 2 + (nals[j][1] - nals[j][0]) <= max_payload:
            total += 2 + (nals[j][1] - nals[j][0])
            j += 1
        if j - i >= 2:
            header = 0
            for s, e in nals[i:j]:
                header = max(header, p[s] & 0x60)
            out.append(header | 24)  # STAP-A with the highest NRI of its units
            for s, e in nals[i:j]:
                out += (e - s).to_bytes(2, "big")
                out += data[s:e]
            offsets.append(len(out))
            i = j
            continue
        if size <= max_payload:
            out += data[s:e]
            offsets.append(len(out))
        else:
            # FU-A, fragments of (nearly) equal size
            header = p[s]
            fu_indicator = (header & 0xE0) | 28
            pieces = (size - 1 + max_payload - 3) // (max_payload - 2)
            chunk = (size - 1 + pieces - 1) // pieces
            pos = s + 1
            while pos < e:
                out.append(fu_indicator)
                out.append(h264_type(header) | (0x80 if pos == s + 1 else 0) | (0x40 if pos + chunk >= e else 0))
                out += data[pos:min(pos + chunk, e)]
                offsets.append(len(out))
                pos += chunk
        i += 1
    cdef RtpFrame frame = RtpFrame()
    frame.data = bytes(out)
    frame.pts = pts
    frame.count = len(offsets) - 1
    frame.offsets = <Py_ssize_t*>malloc(len(offsets) * sizeof(Py_ssize_t))
    if frame.offsets == NULL:
        raise MemoryError()
    for i in range(len(offsets)):
        frame.offsets[i] = offsets[i]
    return frame


cdef class RtpOutput:
    """One viewer's RTP stream: header state, SRTP context, socket and NACK history.

    `srtp_ctx` and `protect` are the addresses of a libsrtp session and of its srtp_protect function;
    `keepalive` holds whatever owns them (the session object), so they stay valid while this output lives."""

    def __cinit__(self, uint32_t ssrc, int payload_type, *, uint16_t first_seq=0, uint32_t ts_offset=0,
                  uint32_t rtx_ssrc=0, int rtx_payload_type=-1, int abs_send_time_id=0, int mid_id=0,
                  bytes mid=b"", uintptr_t srtp_ctx=0, uintptr_t protect=0, object keepalive=None):
        if not 0 <= payload_type < 128 or not -1 <= rtx_payload_type < 128:
            raise ValueError("payload types are 0..127")
        if srtp_ctx == 0 or protect == 0:
            raise ValueError("an SRTP context and protect function are required")
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.seq = first_seq
        self.ts_offset = ts_offset
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self.rtx_seq = first_seq ^ 0x5A5A
        self._ctx = <void*>srtp_ctx
        self._protect = <void*>protect
        self._keepalive = keepalive
        self.fd = -1
        self._addrlen = 0
        self._history = [None] * HISTORY
        memset(self._hist_seq, 0, sizeof(self._hist_seq))
        memset(self._hist_index, 0, sizeof(self._hist_index))
        self._build_template(abs_send_time_id, mid_id, mid)

    cdef int _build_template(self, int ast_id, int mid_id, bytes mid) except -1:
        """The viewer's fixed header: V=2, X when extensions are negotiated, its SSRC; one-byte extensions."""
        if len(mid) > 16 or not 0 <= ast_id < 15 or not 0 <= mid_id < 15:
            raise ValueError("bad header extension (ids 1..14, mid up to 16 bytes)")
        cdef bytearray t = bytearray(12)
        cdef bytearray ext = bytearray()
        self._ast_offset = -1
        if ast_id:
            self._ast_offset = 16 + len(ext) + 1
            ext += bytes([(ast_id << 4) | 2, 0, 0, 0])
        if mid_id and mid:
            ext += bytes([(mid_id << 4) | (len(mid) - 1)]) + mid
        if ext:
            while len(ext) % 4:
                ext.append(0)
            t[0] = 0x90
            t += b"\xbe\xde" + (len(ext) // 4).to_bytes(2, "big") + ext
        else:
            t[0] = 0x80
        t[8:12] = self.ssrc.to_bytes(4, "big")
        self._header_len = len(t)
        memcpy(self._template, <char*>t, self._header_len)
        return 0

    def set_target(self, int fd, str host, int port):
        """Where to send: the socket of the viewer's selected ICE pair and the viewer's address."""
        if self.target == (fd, host, port):
            return
        cdef addrinfo hints
        cdef addrinfo* res = NULL
        memset(&hints, 0, sizeof(hints))
        hints.ai_socktype = SOCK_DGRAM
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV
        rc = getaddrinfo(host.encode(), str(port).encode(), &hints, &res)
        if rc != 0:
            raise ValueError(f"bad address {host}:{port}: {gai_strerror(rc).decode()}")
        try:
            if res.ai_addrlen > sizeof(self._addr):
                raise ValueError("address too long")
            memcpy(&self._addr, res.ai_addr, res.ai_addrlen)
            self._addrlen = res.ai_addrlen
        finally:
            freeaddrinfo(res)
        self.fd = fd
        self.target = (fd, host, port)

    cdef Py_ssize_t _write(self, uint8_t* buf, RtpFrame frame, Py_ssize_t i, uint16_t seq, uint32_t ssrc,
                           int pt, int original_seq, uint32_t ast) noexcept:
        """Header + payload i of the frame into buf, encrypted; its length, or -1 (SRTP refused it).
        `original_seq` >= 0 makes it an RTX packet (RFC 4588) carrying that original sequence number."""
        cdef const uint8_t* data = <const uint8_t*>PyBytes_AS_STRING(frame.data)
        cdef Py_ssize_t start = frame.offsets[i]
        cdef Py_ssize_t size = frame.offsets[i + 1] - start
        cdef Py_ssize_t h = self._header_len
        cdef uint32_t ts = <uint32_t>(self.ts_offset + <uint32_t>frame.pts)
        cdef bint marker = i == frame.count - 1
        memcpy(buf, self._template, h)
        buf[1] = <uint8_t>pt | (0x80 if marker else 0)
        buf[2] = seq >> 8
        buf[3] = seq & 0xFF
        buf[4] = ts >> 24
        buf[5] = (ts >> 16) & 0xFF
        buf[6] = (ts >> 8) & 0xFF
        buf[7] = ts & 0xFF
        buf[8] = ssrc >> 24
        buf[9] = (ssrc >> 16) & 0xFF
        buf[10] = (ssrc >> 8) & 0xFF
        buf[11] = ssrc & 0xFF
        if self._ast_offset >= 0:
            buf[self._ast_offset] = (ast >> 16) & 0xFF
            buf[self._ast_offset + 1] = (ast >> 8) & 0xFF
            buf[self._ast_offset + 2] = ast & 0xFF
        if original_seq >= 0:
            buf[h] = (original_seq >> 8) & 0xFF
            buf[h + 1] = original_seq & 0xFF
            h += 2
        memcpy(buf + h, data + start, size)
        cdef int length = <int>(h + size)
        if (<protect_fn>self._protect)(self._ctx, buf, &length) != 0:
            return -1
        return length

    cdef Py_ssize_t _messages(self, Py_ssize_t first, Py_ssize_t count) noexcept:
        """Messages for prepared datagrams first..count-1: with GSO, one per run of equal-size datagrams (the
        last of a run may be shorter); the number of messages."""
        cdef Py_ssize_t m = 0, i = first, n, total
        cdef size_t seg
        cdef msghdr* hdr
        cdef cmsghdr* cm
        while i < count:
            seg = _iovs[i].iov_len
            n, total = 1, <Py_ssize_t>seg
            if _gso:
                while i + n < count and n < MAX_SEGMENTS and _iovs[i + n].iov_len <= seg and (
                        total + <Py_ssize_t>_iovs[i + n].iov_len <= MAX_GSO_BYTES):
                    total += _iovs[i + n].iov_len
                    n += 1
                    if _iovs[i + n - 1].iov_len < seg:
                        break  # a shorter datagram ends the run
            hdr = &_msgs[m].msg_hdr
            memset(hdr, 0, sizeof(msghdr))
            hdr.msg_name = &self._addr
            hdr.msg_namelen = self._addrlen
            hdr.msg_iov = &_iovs[i]
            hdr.msg_iovlen = n
            if n > 1:
                hdr.msg_control = _control + m * CONTROL
                hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
                memset(hdr.msg_control, 0, CONTROL)
                cm = <cmsghdr*>hdr.msg_control
                cm.cmsg_len = CMSG_LEN(sizeof(uint16_t))
                cm.cmsg_level = SOL_UDP
                cm.cmsg_type = UDP_SEGMENT
                (<uint16_t*>CMSG_DATA(cm))[0] = <uint16_t>seg
            _counts[m] = n
            m += 1
            i += n
        return m

    cdef int _flush(self, Py_ssize_t count) noexcept:
        """Send the first `count` prepared datagrams (sendmmsg); the number the kernel took."""
        global _gso
        cdef Py_ssize_t sent = 0, done = 0, k
        cdef Py_ssize_t m = self._messages(0, count)
        cdef int rc, err
        while done < m:
            rc = sendmmsg(self.fd, _msgs + done, <unsigned int>(m - done), MSG_DONTWAIT)
            if rc < 0:
                err = errno
                if err == EINTR:
                    continue
                if _gso and (err == EIO or err == EINVAL or err == ENOPROTOOPT or err == EOPNOTSUPP):
                    _gso = False  # no segmentation offload here: send the rest one datagram per message
                    m, done = self._messages(sent, count), 0
                    continue
                if err == EAGAIN:  # == EWOULDBLOCK on Linux
                    self.dropped += count - sent
                    self.stalls += 1
                else:
                    self.errors += 1
                    self.last_errno = err
                    self.failed = True
                break
            for k in range(done, done + rc):
                sent += _counts[k]
            done += rc
        return <int>sent

    cdef int _prepare(self, Py_ssize_t slot, Py_ssize_t length) noexcept:
        _iovs[slot].iov_base = _arena + slot * SLOT
        _iovs[slot].iov_len = <size_t>length
        return 0

    cdef int _send(self, RtpFrame frame, uint64_t ntp) except -1:
        cdef Py_ssize_t i, slot = 0, length, octets = 0
        cdef uint32_t ast = <uint32_t>((ntp >> 14) & 0xFFFFFF)
        cdef uint16_t seq
        if self.fd < 0 or frame.count == 0:
            return 0
        _reserve(frame.count)
        for i in range(frame.count):
            seq = self.seq
            self.seq = <uint16_t>(self.seq + 1)
            self._history[seq % HISTORY] = frame
            self._hist_seq[seq % HISTORY] = seq
            self._hist_index[seq % HISTORY] = <uint16_t>i
            length = self._write(_arena + slot * SLOT, frame, i, seq, self.ssrc, self.payload_type, -1, ast)
            if length < 0:
                self.errors += 1
                continue
            self._prepare(slot, length)
            octets += frame.offsets[i + 1] - frame.offsets[i]
            slot += 1
        sent = self._flush(slot)
        self.packets += sent
        self.octets += octets if sent == slot else 0
        self.frames += 1
        self.last_ntp = ntp
        self.last_rtp_timestamp = <uint32_t>(self.ts_offset + <uint32_t>frame.pts)
        return sent

    def send(self, RtpFrame frame not None):
        """Send one frame; the number of datagrams the kernel accepted."""
        return self._send(frame, _ntp_now())

    def retransmit(self, int seq):
        """Resend a packet a viewer reported lost (NACK), by RTX when negotiated. False: no longer in history."""
        seq &= 0xFFFF
        cdef Py_ssize_t slot = seq % HISTORY, length
        cdef RtpFrame frame = self._history[slot]
        if frame is None or self._hist_seq[slot] != seq or self.fd < 0:
            return False
        _reserve(1)
        cdef uint32_t ast = <uint32_t>((_ntp_now() >> 14) & 0xFFFFFF)
        if self.rtx_payload_type >= 0:
            length = self._write(_arena, frame, self._hist_index[slot], self.rtx_seq, self.rtx_ssrc,
                                 self.rtx_payload_type, seq & 0xFFFF, ast)
            self.rtx_seq = <uint16_t>(self.rtx_seq + 1)
        else:
            length = self._write(_arena, frame, self._hist_index[slot], <uint16_t>seq, self.ssrc,
                                 self.payload_type, -1, ast)
        if length < 0:
            self.errors += 1
            return False
        self._prepare(0, length)
        if self._flush(1) == 1:
            self.retransmitted += 1
            return True
        return False

    def close(self):
        """Stop sending (the socket is about to close) and let go of the SRTP context and history."""
        self.fd = -1
        self.target = None
        self._ctx = NULL
        self._keepalive = None
        self._history = [None] * HISTORY


def send_all(list outputs not None, RtpFrame frame not None, Py_ssize_t start=0, Py_ssize_t stop=-1,
             object owner=None):
    """Send one frame to outputs[start:stop] (one sendmmsg each); with `owner`, only to outputs whose `owner` it
    still is (a viewer that left a group meanwhile is skipped). The outputs whose socket failed (not merely full)."""
    cdef uint64_t ntp = _ntp_now()
    cdef list failed = []
    cdef RtpOutput out
    cdef Py_ssize_t i
    if stop < 0 or stop > len(outputs):
        stop = len(outputs)
    for i in range(max(start, 0), stop):
        out = outputs[i]
        if owner is not None and out.owner is not owner:
            continue
        out._send(frame, ntp)
        if out.failed:
            failed.append(out)
    return failed


def ntp_now():
    """The wall clock as a 64-bit NTP timestamp."""
    return _ntp_now()
