"""Recipe schema (Pydantic) and loading (Hydra compose + overrides, positions for errors)."""
