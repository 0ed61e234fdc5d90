"""Benchmarks of the live stream (`python -m benchmarks.stream`), the paper's headline (`python -m benchmarks.paper`),
and a soak for leaks, lost strokes and late frames (`python -m benchmarks.soak`).

See RESULTS.md for measured figures and the commands that produced them; docs/reliability.md for the soak's.
"""
