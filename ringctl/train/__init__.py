"""Training core: models + tokenizers (incl. the tiny CPU model), packing, engines, checkpoints."""
