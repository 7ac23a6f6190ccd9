"""Pod-VM image tooling: dm-verity hash trees, image builds and launch measurements."""
