"""What the benchmark scripts share (none of these is run by itself): the camera farm's clip, RTSP side, process
handle and sink (`camfarm_*`), process measurements (`camfarm_measure`), the soak's HTTP view and reports
(`soak_api`, `soak_report`, `ramp_report`), the wall-clock stamp (`stamp.py`, `stamp.js`) and the cheap WebRTC
probe viewer (`viewer_probe`). Scripts import them as `lib.NAME` with benchmarks/ on sys.path."""
