"""Cython hot paths: RTP parsing (rtp), depacketising to access units (depacketize) and
RTSP interleaved framing (framing). Build with `python setup.py build_ext --inplace`."""
