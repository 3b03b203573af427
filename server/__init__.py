"""boxfs-server: accounts, content-addressed storage, Merkle history and live events."""
