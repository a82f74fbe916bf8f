"""Benchmarks: callbridge side by side with a bare ``websockets`` ceiling and a
python-socketio peer.

``callbridge bench SCENARIO`` (see docs/performance.md). Servers under test run as
subprocesses; clients run in worker processes; the driver (this process) injects events, reads
the server's CPU and memory from ``/proc`` and writes the results.
"""
