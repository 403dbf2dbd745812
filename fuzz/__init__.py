"""Fuzz targets for what a camera sends (see fuzz/README.md); fuzz/run.py runs them."""
