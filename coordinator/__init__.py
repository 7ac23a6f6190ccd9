"""The Coordinator (attestation service, CA, manifest history) and the data owner's CLI."""
