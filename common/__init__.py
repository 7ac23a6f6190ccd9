"""Helpers every component shares: durable file writes, the small HTTP server, Prometheus text, logging.

This package imports nothing else of the project, so every component (attestation included) may use it.
"""
