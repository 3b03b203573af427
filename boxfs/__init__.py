"""boxfs, the client: the CLI and the FUSE mount of the drive."""
