"""Test peers, not product code: simulated RTSP cameras for the demo, the tests and the benchmarks.

Nothing in the server imports this package; only the demo (mediaserver/cli/demo.py), tests/ and benchmarks/ do
(tests/test_layers.py checks it).

`gst_camera.py` runs under Debian's /usr/bin/python3 (PyGObject + gst-rtsp-server) as its own process;
`clips.py` makes its input clips with ffmpeg and is importable from the project's Python.
"""

from pathlib import Path

GST_CAMERA = Path(__file__).with_name("gst_camera.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter that has `gi`; the project's venv does not
