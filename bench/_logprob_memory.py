"""Peak memory of log-probs + entropy + backward: ringctl's chunked scorer vs a full [N, R, V] tensor.

    .venv/bin/python bench/_logprob_memory.py --json

Both variants run ringctl's `response_logprobs` and `policy_loss` (entropy bonus on, so the entropy has a graph)
and one backward, on the same inputs:
- the "model" is a stand-in: final hidden states [N, 1 + R, H] (a leaf with requires_grad, so the gradient flows
  back into them as it would into the transformer) and the output head nn.Linear(H, V), exposed as `lm_head`
  through get_output_embeddings() like a Hugging Face causal LM. The transformer's own memory is not the question;
  the head + log_softmax + backward are;
- ours: response_logprobs(..., chunk_tokens=None) (the default: one [chunk, V] float32 tensor holds
  DEFAULT_CHUNK_ELEMENTS values); naive: chunk_tokens=0, the full-vocab path (what ringctl did before issue 11).
Each variant runs in a fresh subprocess, after a three-token warm-up of the same variant (lazily imported code is
not counted); its figure is the peak resident set (VmHWM, reset through /proc/self/clear_refs once the inputs are
built) during log-probs + loss + backward, minus the resident set at that point. Both run under a fixed glibc
mmap threshold (MALLOC_MMAP_THRESHOLD below: with glibc's default, freed chunk-sized blocks stay resident).
If the naive variant would not fit in this machine's available memory (about 5 float32 [tokens, V] tensors live
at once), the token count is halved until it fits, for both variants, and "tokens" says what ran
("tokens_requested" what was asked).

measure() returns {"logprob_peak_mb", "naive_peak_mb", "ratio" (naive / ours), "tokens", "tokens_requested",
"vocab", "hidden", "chunk_tokens", "rows", "hwm_reset", "malloc_mmap_threshold"}; bench/rl_scaling.py puts these
keys into its JSON. --json prints the same dict as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
RESPONSE_LENGTH = 512  # tokens per response row: rows = tokens / RESPONSE_LENGTH
# glibc's default raises its mmap threshold (up to 32 MiB) each time a large block is freed, after which blocks of
# a chunk's size come from the heap and freed ones stay resident (fragmentation): the resident set would then grow
# by one [chunk, V] tensor per chunk, although no tensor outlives its chunk. A fixed 1 MiB threshold (blocks above
# it are mmapped and returned when freed, as a device's caching allocator reuses them) is set in both variants.
MALLOC_MMAP_THRESHOLD = 1 << 20


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def _run_variant(variant: str, tokens: int, vocab: int, hidden: int, chunk_tokens: int | None,
                 threads: int) -> dict:
    """In this (fresh) process: build the inputs, reset the high-water mark, run log-probs + loss + backward."""
    import gc

    import torch

    from ringctl.rl.loss import LossCoefficients, policy_loss
    from ringctl.train.logprobs import DEFAULT_CHUNK_ELEMENTS, build_training_batch, response_logprobs

    torch.set_num_threads(threads)
    rows = max(1, tokens // RESPONSE_LENGTH)
    width = tokens // rows

    class HiddenStatesModel(torch.nn.Module):
        """Returns lm_head(hidden states) for the batch's rows and columns, like a causal LM's forward."""

        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(vocab_size=vocab)
            self.lm_head = torch.nn.Linear(hidden, vocab, bias=False)
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                self.lm_head.weight.normal_(0, hidden ** -0.5, generator=g)
            self.hidden = torch.randn(rows, 1 + width, hidden, generator=g).requires_grad_()

        def get_output_embeddings(self):
            return self.lm_head

        def forward(self, input_ids, **_):
            return SimpleNamespace(logits=self.lm_head(self.hidden[:input_ids.shape[0], :input_ids.shape[1]]))

    model = HiddenStatesModel()
    g = torch.Generator().manual_seed(1)
    responses = torch.randint(0, vocab, (rows, width), generator=g).tolist()
    batch = build_training_batch([[1]] * rows, responses)
    old = torch.zeros(rows, width)
    advantages = torch.randn(rows, generator=g)
    coefs = LossCoefficients(kl_beta=0.0, entropy_coef=1e-3, load_balance_coef=0.0, z_loss_coef=0.0)
    chunk = 0 if variant == "naive" else chunk_tokens
    # warm-up on three tokens, outside the measured window: the one-off head probe, and the modules that the first
    # checkpointed backward imports (a few hundred MB of code and data, not memory that grows with the batch)
    warm = build_training_batch([[1]], [[2, 3]])
    response_logprobs(model, warm, chunk_tokens=chunk)["logprobs"].sum().backward()
    model.hidden.grad = model.lm_head.weight.grad = None
    del responses, warm
    gc.collect()
    baseline_kb = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
        reset = True
    except OSError:
        reset = False
    out = response_logprobs(model, batch, temperature=1.0, with_entropy=True, chunk_tokens=chunk)
    loss, _ = policy_loss(out["logprobs"], old, advantages, batch.loss_mask, token_budget=rows * width,
                          coefs=coefs, entropy=out["entropy"])
    loss.backward()
    peak_kb = _status_kb("VmHWM")
    assert model.hidden.grad is not None and model.lm_head.weight.grad is not None
    return {"peak_mb": (peak_kb - baseline_kb) / 1024, "hwm_reset": reset, "tokens": rows * width, "rows": rows,
            "chunk_tokens": chunk if chunk is not None else max(1, DEFAULT_CHUNK_ELEMENTS // vocab)}


def _in_subprocess(variant: str, tokens: int, vocab: int, hidden: int, chunk_tokens: int | None,
                   threads: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--tokens", str(tokens),
           "--vocab", str(vocab), "--hidden", str(hidden), "--threads", str(threads)]
    if chunk_tokens is not None:
        cmd += ["--chunk-tokens", str(chunk_tokens)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               MALLOC_MMAP_THRESHOLD_=str(MALLOC_MMAP_THRESHOLD))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} variant failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(tokens: int = 32768, vocab: int = 32768, hidden: int = 256, chunk_tokens: int | None = None,
            threads: int = 2) -> dict:
    """Peak MB of log-probs + entropy + backward, chunked (ringctl) vs naive (full [N, R, V]); see the module doc."""
    requested = tokens
    # the naive path holds about 5 float32 [tokens, V] tensors at once: keep it within 70% of what is available
    while tokens > RESPONSE_LENGTH and 5 * tokens * vocab * 4 / 2**20 > 0.7 * _available_mb():
        tokens //= 2
    ours = _in_subprocess("chunked", tokens, vocab, hidden, chunk_tokens, threads)
    naive = _in_subprocess("naive", tokens, vocab, hidden, chunk_tokens, threads)
    return {"logprob_peak_mb": round(ours["peak_mb"], 1), "naive_peak_mb": round(naive["peak_mb"], 1),
            "ratio": round(naive["peak_mb"] / max(ours["peak_mb"], 1e-9), 2), "tokens": ours["tokens"],
            "tokens_requested": requested, "vocab": vocab, "hidden": hidden, "chunk_tokens": ours["chunk_tokens"],
            "rows": ours["rows"], "hwm_reset": ours["hwm_reset"] and naive["hwm_reset"],
            "malloc_mmap_threshold": MALLOC_MMAP_THRESHOLD}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--chunk-tokens", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", choices=["chunked", "naive"], help=argparse.SUPPRESS)  # the subprocess
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(_run_variant(args.variant, args.tokens, args.vocab, args.hidden, args.chunk_tokens,
                                      args.threads)))
        return
    result = measure(args.tokens, args.vocab, args.hidden, args.chunk_tokens, args.threads)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")


if __name__ == "__main__":
    main()
