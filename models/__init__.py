"""Generation, with no Discord in it: the backend interface, the catalog, the backends and natty's own models."""
