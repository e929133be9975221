"""Benchmarks (run by path, e.g. ``python benchmarks/decode_speed.py``) and the GPU check
(``python -m benchmarks.gpu.check``). A regular package, so that ``benchmarks.gpu`` resolves
here even where some installed distribution ships a top-level ``benchmarks`` package."""
