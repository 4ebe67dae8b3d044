"""Pure library code of the deep-ranking pipeline.

Nothing in this package knows about Luigi: every function takes plain values,
arrays or paths and returns results, so it can be tested and reused on its own.
The Luigi wiring lives in :mod:`tasks`.
"""
