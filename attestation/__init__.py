"""Shared attestation core: SNP and TDX evidence parsing, verification, reference values and providers."""
