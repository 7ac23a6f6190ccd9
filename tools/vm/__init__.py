"""VM test harness: boot the pod-VM image under QEMU, talk to its agent, run tests inside it.

- :mod:`.qemu`: one QEMU ``microvm`` per boot (TCG), console capture, kill by PID.
- :mod:`.hvsock`: Kata's hybrid-vsock unix socket, bridged over virtio-serial to the agent.
- :mod:`.share`: the test tree (repo, ../shared, pytest) as a read-only erofs disk.
- :mod:`.guest_tests`: run a pytest selection inside the guest and map results onto host items.
"""
