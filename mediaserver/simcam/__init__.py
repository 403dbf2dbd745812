"""Simulated RTSP cameras for the demo, the tests and the benchmarks.

`gst_camera.py` runs under Debian's /usr/bin/python3 (PyGObject + gst-rtsp-server) as its own process;
`clips.py` makes its input clips with ffmpeg and is importable from the project's Python.
"""

from pathlib import Path

GST_CAMERA = Path(__file__).with_name("gst_camera.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter that has `gi`; the project's venv does not
