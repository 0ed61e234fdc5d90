"""Benchmarks of the live stream (`python -m benchmarks.stream`) and the paper's headline (`python -m benchmarks.paper`).

See RESULTS.md for measured figures and the commands that produced them.
"""
