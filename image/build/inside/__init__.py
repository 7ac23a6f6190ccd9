"""Code and scripts that run inside the pod VM (installed into the image with the project).

- ``INIT_SCRIPT``: PID 1 after switch_root (busybox sh).
- ``boot``: starts the guest agent and the hybrid-vsock relay.
- ``mux``: the sans-IO frame codec the relay and the host bridge share.
"""

from __future__ import annotations

__all__ = ["INIT_SCRIPT", "TEST_SHARE_SERIAL"]

# The test share is an extra virtio disk with this serial. It is only looked at when the (measured)
# kernel command line carries cg.test=1, so a production launch cannot be made to run host code.
TEST_SHARE_SERIAL = "cg-test-share"

INIT_SCRIPT = r"""#!/bin/sh
# Pod-VM PID 1 (after the initramfs mapped the verity root): tmpfs for /run and /tmp, loopback,
# then the guest agent. The VM powers off when the agent exits (like Kata's FailureAction=poweroff).
# python3 -S with PYTHONPATH: site.py's path probing costs ~0.15 s under TCG and adds nothing here.
export PATH=/usr/bin:/usr/sbin HOME=/root PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/usr/lib/python3/dist-packages
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
# cgroup v2 for the containers' limits, stats and OOM events (the agent stays in the root cgroup).
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
echo "+cpu +memory +pids +io" > /sys/fs/cgroup/cgroup.subtree_control
hostname pod-vm
ip link set lo up
echo "MARK init uptime=$(cut -d' ' -f1 /proc/uptime)"
python3 -S -m image.build.inside.boot &
agent=$!
case " $(cat /proc/cmdline) " in
*" cg.test=1 "*)
    # The builtin agent loads the deferred kernel modules while its backend starts; test runs (an
    # echo stand-in as the agent) need them for the storage and container tests.
    while read -r m; do
        insmod "/usr/lib/modules/$m" || echo "MARK insmod $m failed"
    done < /usr/lib/modules/deferred.load
    for s in /sys/block/vd*/serial; do
        [ "$(cat "$s" 2>/dev/null)" = "cg-test-share" ] || continue
        dev=/dev/$(basename "$(dirname "$s")")
        mkdir -p /mnt/share && mount -t erofs -o ro "$dev" /mnt/share && break
    done
    if [ -x /mnt/share/run ]; then /mnt/share/run; else echo "MARK test-share missing"; fi
    sync
    reboot -f
    ;;
esac
wait $agent
echo "MARK agent exited rc=$?"
reboot -f
"""
