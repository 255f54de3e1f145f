"""Shared services every layer may use: errors, paths, files, the one subprocess helper,
interrupts, process locks, redaction, progress reporting. Imports nothing else of kboot.
"""
