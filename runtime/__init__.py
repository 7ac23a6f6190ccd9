"""Host side of a confidential pod: the containerd shim v2 ``containerd-shim-contrast-cc-v2``.

containerd starts the shim (runtime type ``io.containerd.contrast-cc.v2``); the shim boots one
pod VM per sandbox (``podvm``) from the measured image and drives the guest agent over hybrid
vsock the way Kata's runtime does (``service``). The host is outside the trust boundary: nothing
here is trusted by the guest, but the shim must not let a containerd client reach files outside
the bundle and state directories either (``validate``).
"""
