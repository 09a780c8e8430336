"""Rollout engines: sample responses with their log-probs for RL (hf.py on CPU/GPU, vllm.py on GPU)."""
