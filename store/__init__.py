"""store: the pure, synchronous library under boxfs: formats and algorithms, no I/O framework."""
