"""Init container: attests the pod to the Coordinator over aTLS and writes the mesh certificates and secrets."""
