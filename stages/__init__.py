"""Thin entry points, one per DVC stage: resolve config, call the library, write outputs."""
