"""The starting checkpoint the RL benches share: the tiny model, untrained or after a short ringctl SFT."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace


def prepare_model(init: str, sft_epochs: int, seed: int, work: Path) -> Path:
    """A Hugging Face checkpoint directory: the tiny model as built (`init="random"`) or after `sft_epochs` of
    ringctl's SFT stage on 2,000 synthetic arithmetic long-CoT samples (the tiny recipe's SFT settings), which is
    what RL starts from in the pipeline: responses then end at varying lengths, as in real RL."""
    from ringctl.train.config import ModelConfig
    from ringctl.train.models import save_tiny

    random_init = save_tiny(ModelConfig(), work / "random", seed=seed)
    if init == "random":
        return random_init
    import stages.sft as sft
    from ringctl.data.records import write_jsonl
    from ringctl.data.synth import generate_sft
    from ringctl.pipeline.context import StageContext
    from ringctl.recipe.schema import ResourcesConfig
    from ringctl.train.config import BackendsConfig

    data = work / "sft.jsonl"
    write_jsonl(data, [dict(r) for r in generate_sft(2000, seed, domains=["arithmetic"])])
    recipe = SimpleNamespace(model=ModelConfig(name_or_path=str(random_init)), backends=BackendsConfig(),
                             resources=ResourcesConfig(), seed=seed, deterministic=False)
    ctx = StageContext.for_test(work, "sft", inputs={"data.sft": data}, recipe=recipe, seed=seed)
    cfg = sft.Config(data="data.sft", epochs=sft_epochs, lr=3e-3, weight_decay=0.1, warmup_ratio=0.05,
                     schedule="cosine", max_seq_len=256, batch_rows=4, save_every=10**6, heldout_fraction=0.0,
                     eval_num_prompts=0)
    return sft.run(cfg, ctx)["final"].path


def add_common_args(parser, start: bool = True) -> None:
    """--seed, --threads, --json for every training bench; --init / --sft-epochs for those starting from
    `prepare_model`."""
    import os

    if start:
        parser.add_argument("--init", choices=["sft", "random"], default="sft")
        parser.add_argument("--sft-epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", action="store_true")


def parse_args(parser):
    """Parse, go offline, and pin torch's threads (both sides of a comparison run with the same)."""
    import os

    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    return args


def save_tiny_reward_model(directory: Path, seed: int = 0) -> Path:
    """An untrained reward model of the tiny architecture (a one-output sequence classifier, char tokenizer and
    chat template), saved as a Hugging Face directory: what the general-RL equivalence checks score with."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from ringctl.train.config import ModelConfig
    from ringctl.train.models import build_char_tokenizer, tiny_model_config

    tok = build_char_tokenizer()
    config = tiny_model_config(ModelConfig().tiny, len(tok))
    config.num_labels, config.pad_token_id = 1, tok.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # a score head as large as a trained one's, so that scores (and advantages) differ
        model.score.weight.normal_(0, 1.0)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return Path(directory)
