"""AMD SEV-SNP: report ABI, certificates, verification and validation."""
