"""Service-mesh sidecar: transparent mTLS between pods with the Coordinator-issued mesh certificates."""
