"""Worker of tests/vllm/test_tensor_parallel.py: each rank samples its own block of 4 prompts (rows seeded by their
global index) through VLLMRolloutEngine with the given tensor_parallel_size; writes its rollouts and the engine's
parallel config to OUT/r<rank>.json."""

import json
import os
import sys

import torch.distributed as dist

from ringctl.rollout.base import SamplingParams
from ringctl.rollout.vllm import VLLMRolloutEngine

PROMPTS, N = [[5, 9, 12, 30], [7, 8], [20, 21, 22, 23], [40, 41, 42]], 2

path, out, tp = sys.argv[1], sys.argv[2], int(sys.argv[3])
world = int(os.environ.get("WORLD_SIZE", "1"))
if world > 1:
    dist.init_process_group("gloo")
rank = dist.get_rank() if world > 1 else 0
lo, hi = rank * len(PROMPTS) // world, (rank + 1) * len(PROMPTS) // world
engine = VLLMRolloutEngine(path, dtype="float32", max_model_len=256, tensor_parallel_size=tp)
params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=3, row_offset=lo * N, total_rows=len(PROMPTS) * N)
rollouts = engine.generate(PROMPTS[lo:hi], n=N, params=params)
parallel = engine.llm.llm_engine.vllm_config.parallel_config
with open(f"{out}/r{rank}.json", "w") as f:
    json.dump({"responses": [r.response_ids for r in rollouts], "tp": parallel.tensor_parallel_size,
               "executor": str(parallel.distributed_executor_backend)}, f)
engine.shutdown()
if world > 1:
    dist.destroy_process_group()
