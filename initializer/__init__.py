"""Init container: attests the pod to the Coordinator over aTLS, writes mesh certificates and secrets."""
