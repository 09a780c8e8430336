"""RL building blocks for C3PO (Ring-lite §3.2) and the GRPO baseline: advantages, token-budget selection, loss."""
