"""Evidence providers: /dev/sev-guest ioctls, configfs-tsm, a simulator, and detection."""
