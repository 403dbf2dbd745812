"""Test helpers, shared by tests/ and benchmarks/ (which put tests/ on sys.path).

`peers`: real peers (simulated gst-rtsp-server cameras, ffprobe/ffmpeg, raw RTSP); `feed`: clips and paced access
units; `viewers`: aiortc WHEP viewers; `browser`: Debian Chromium for Playwright; `serve_process`: a `mediaserver
serve` subprocess; `access`: agencies, incidents and stream tokens for access-controlled tests; `rtp_synth`:
hand-built RTP packets for the core_ext tests.
"""
