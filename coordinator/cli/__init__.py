"""The data owner's CLI (``python -m coordinator.cli``): generate, set, verify, recover."""
