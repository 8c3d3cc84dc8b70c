"""Small shared helpers (atomic file output, hashing, logging)."""
