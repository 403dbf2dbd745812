"""RTP over UDP, many datagrams per system call: recvmmsg(2) on a non-blocking socket, each datagram from
the camera pushed straight into its depacketiser in C; Python sees only completed access units.

"From the camera" means its address, its RTP source port (SETUP's `server_port`, else the first port seen) and
its SSRC (SETUP's `ssrc=`, else the first one seen): anyone else who can reach the socket, even from the
camera's host, is counted and dropped before RTP parsing.

The receive slots are shared by every receiver in the process (a worker is one thread and a drain never
yields), so a camera costs no buffer memory of its own beyond its depacketiser. The GIL is held throughout:
the socket is non-blocking, so the call never waits, and no other thread can touch the slots meanwhile.
"""

import socket as _socket

from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcmp, memcpy, strerror
from posix.uio cimport iovec

from core_ext.depacketize cimport Depacketizer
from core_ext.gop cimport GopCache
from core_ext.sockets cimport (
    AF_INET, AF_INET6, MSG_DONTWAIT, MSG_TRUNC, mmsghdr, msghdr, recvmmsg, sa_family_t, sockaddr_storage, socklen_t,
)


cdef extern from "<netinet/in.h>" nogil:
    cdef struct in_addr:
        pass
    cdef struct in6_addr:
        pass
    cdef struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    cdef struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        in6_addr sin6_addr
    uint16_t ntohs(uint16_t)


cdef enum:
    BATCH = 64                 # datagrams per recvmmsg call
    SLOT = 65536               # any UDP datagram fits: none is cut, a garbage giant is still counted whole

# The shared slots (BSS: a page becomes resident only once a datagram has been written to it).
cdef uint8_t _slots[BATCH * SLOT]
cdef iovec _iov[BATCH]
cdef sockaddr_storage _names[BATCH]
cdef mmsghdr _msgs[BATCH]
cdef bint _busy = False


cdef void _init_slots() noexcept:
    cdef int i
    for i in range(BATCH):
        _iov[i].iov_base = &_slots[i * SLOT]
        _iov[i].iov_len = SLOT
        _msgs[i].msg_hdr.msg_name = &_names[i]
        _msgs[i].msg_hdr.msg_iov = &_iov[i]
        _msgs[i].msg_hdr.msg_iovlen = 1
        _msgs[i].msg_hdr.msg_control = NULL
        _msgs[i].msg_hdr.msg_controllen = 0

_init_slots()

BATCH_SIZE = BATCH
SLOT_SIZE = SLOT
DEFAULT_LIMIT = 16 * BATCH


cdef class UdpReceiver:
    """Reads RTP datagrams from `fd` (a non-blocking UDP socket the caller owns and closes after close())
    and pushes those from `source` (the camera's IP address) into `depacketizer`. With a `cache` (the camera's
    hub's GopCache), the units that cache takes on its own (gop.pyx: nobody watches) go there and are not
    returned, so a steady unwatched camera costs Python nothing per frame."""

    def __cinit__(self, int fd, Depacketizer depacketizer not None, str source, object owner=None,
                  GopCache cache=None):
        cdef bytes packed = None
        address = source.partition("%")[0]             # an IPv6 zone index is not part of the address
        for family in (_socket.AF_INET, _socket.AF_INET6):
            try:
                packed = _socket.inet_pton(family, address)
            except OSError:
                continue
            self._family = AF_INET if family == _socket.AF_INET else AF_INET6
            break
        if packed is None:
            raise ValueError(f"not an IP address: {source!r}")
        memcpy(self._source, <const char*>packed, len(packed))
        self.fd = fd
        self._depacketizer = depacketizer
        self.owner = owner
        self.cache = cache
        self._done = []
        self._port = -1
        self._ssrc_known = False

    def pin(self, port=None, ssrc=None):
        """Accept RTP only from this source port and with this SSRC (SETUP's Transport `server_port` and
        `ssrc`); each left None is latched from the first datagram from the camera's address."""
        if port is not None and not 0 < port <= 0xFFFF:
            raise ValueError(f"source port out of range: {port!r}")
        if ssrc is not None and not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC out of range: {ssrc!r}")
        self._port = -1 if port is None else port
        self._ssrc_known = ssrc is not None
        self._ssrc = 0 if ssrc is None else ssrc

    @property
    def source_port(self):
        """The RTP source port accepted (None until pinned or latched)."""
        return None if self._port < 0 else self._port

    @property
    def ssrc(self):
        """The SSRC accepted (None until pinned or latched)."""
        return self._ssrc if self._ssrc_known else None

    @property
    def depacketizer(self):
        return self._depacketizer

    def close(self):
        """Forget the fd (before the caller closes it): later drains read nothing, never a reused fd."""
        self.fd = -1

    def drain(self, Py_ssize_t limit=DEFAULT_LIMIT):
        """Read until the socket is empty or `limit` datagrams were taken (the rest stays queued for the next
        call); returns the access units they completed that the cache did not take. Raises OSError on a socket
        error."""
        cdef list out = []
        self.drain_c(out, limit)
        return out

    def as_dict(self):
        return {"datagrams": self.datagrams, "bytes": self.bytes, "foreign": self.foreign,
                "foreign_ssrc": self.foreign_ssrc, "oversized": self.oversized, "reads": self.reads}

    cdef Py_ssize_t drain_c(self, list out, Py_ssize_t limit) except -1:
        """Returns the number of datagrams read (from anyone)."""
        global _busy
        cdef Py_ssize_t total = 0
        cdef int got, i, err
        cdef unsigned int want, j
        if self.fd < 0:
            return 0
        if _busy:                                      # only a finaliser run mid-drain could get here
            raise RuntimeError("UdpReceiver.drain re-entered")
        _busy = True
        try:
            while total < limit:
                want = <unsigned int>min(<Py_ssize_t>BATCH, limit - total)
                for j in range(want):
                    _msgs[j].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
                got = recvmmsg(self.fd, _msgs, want, MSG_DONTWAIT, NULL)
                self.reads += 1
                if got < 0:
                    err = errno
                    if err == EINTR:
                        continue
                    if err == EAGAIN:                  # == EWOULDBLOCK on Linux
                        break
                    raise OSError(err, strerror(err).decode(errors="replace"))
                for i in range(got):
                    self._one(i, self._done)
                total += got
                if <unsigned int>got < want:
                    break                              # the queue ran dry: save the call that says EAGAIN
        finally:
            _busy = False
            if self._done:
                self._hand_on(out)
        return total

    cdef int _hand_on(self, list out) except -1:
        """Completed units to the cache (those it takes) or to `out`, in order."""
        if self.cache is not None:
            self.cache.take_c(self._done, out)
        else:
            out.extend(self._done)
        del self._done[:]
        return 0

    cdef int _one(self, int i, list out) except -1:
        cdef msghdr* hdr = &_msgs[i].msg_hdr
        if hdr.msg_flags & MSG_TRUNC:
            self.oversized += 1
            return 0
        cdef const uint8_t* p = &_slots[i * SLOT]
        cdef unsigned int n = _msgs[i].msg_len
        cdef uint32_t ssrc
        if not self._from_source(hdr.msg_name, hdr.msg_namelen):
            self.foreign += 1
            return 0
        if n >= 12 and p[0] >> 6 == 2:                 # else the depacketiser counts it (truncated, bad_version)
            ssrc = (<uint32_t>p[8] << 24) | (<uint32_t>p[9] << 16) | (<uint32_t>p[10] << 8) | p[11]
            if not self._ssrc_known:
                self._ssrc, self._ssrc_known = ssrc, True
            elif ssrc != self._ssrc:
                self.foreign_ssrc += 1
                return 0
        self.datagrams += 1
        self.bytes += n
        self._depacketizer.push_c(p, n, out)
        return 0

    cdef bint _from_source(self, const void* name, unsigned int namelen) noexcept:
        """The camera's address and RTP port (the first port seen from the address, unless pinned)."""
        cdef const sockaddr_storage* ss = <const sockaddr_storage*>name
        cdef int port
        if namelen < sizeof(sa_family_t) or ss.ss_family != self._family:
            return False
        if self._family == AF_INET:
            if (namelen < sizeof(sockaddr_in)
                    or memcmp(&(<const sockaddr_in*>name).sin_addr, self._source, 4) != 0):
                return False
            port = ntohs((<const sockaddr_in*>name).sin_port)
        else:
            if (namelen < sizeof(sockaddr_in6)
                    or memcmp(&(<const sockaddr_in6*>name).sin6_addr, self._source, 16) != 0):
                return False
            port = ntohs((<const sockaddr_in6*>name).sin6_port)
        if self._port < 0:
            self._port = port
        return port == self._port


def drain_each(receivers, Py_ssize_t limit=DEFAULT_LIMIT):
    """Drain every receiver in `receivers` (any iterable of UdpReceiver) in one call, so a batch of idle cameras
    costs Python nothing per camera that completed no access unit. Returns [(receiver, units or the exception
    its drain raised)] for the others; one camera's error never stops the rest."""
    cdef list ready = []
    cdef list out
    cdef UdpReceiver receiver
    for item in receivers:
        receiver = <UdpReceiver?>item
        out = []
        try:
            receiver.drain_c(out, limit)
        except Exception as exc:                       # a socket error (OSError) or a bug: that camera's alone
            ready.append((receiver, exc))
            continue
        if out:
            ready.append((receiver, out))
    return ready
