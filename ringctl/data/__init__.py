"""Data: the normalised record schema, readers, filters and the synthetic task suite."""
