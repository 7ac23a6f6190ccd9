"""Intel TDX: quote ABI, PCK certificates, collateral, verification and validation."""
