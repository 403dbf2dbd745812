"""The composition root: the command line, the front process (`serve`) and the demo.

The only modules that may import both sides, the media workers (`mediaserver`) and the front (`signaling`);
tests/test_layers.py fails on any other crossing.
"""

from mediaserver.cli.commands import main

__all__ = ["main"]
