"""Bundled AMD and Intel trust anchors (package data, pinned in attestation.trust)."""
