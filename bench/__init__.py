"""Benchmarks: side-by-side measurements in one run. See bench/README.md."""
