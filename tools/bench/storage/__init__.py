"""Storage benchmark: the encrypted volume against the same device plain, inside one pod VM."""
