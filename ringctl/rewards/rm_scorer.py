"""Reward models: scalar sequence classifiers with their own tokenizer and chat template.

    scorer = RewardModelScorer("runs/.../reward_model/outputs/model")    # or a Skywork-Reward-V2 directory
    scorer.score(prompts, responses) -> [float, ...]                    # one logit per (prompt, response)

The policy's response is stripped of `<think>...</think>` and re-templated with the RM's OWN chat template
(`rm_input_ids`), which the reward_model stage also uses to build its training pairs: training and scoring see
the same text. Hugging Face's *ForSequenceClassification models read the score at the last token that is not
`config.pad_token_id`, so that id must be set (and must not end a real sequence). torch/transformers are imported
inside functions: `check_reward_model_dir` runs during `ringctl validate` and reads JSON files only.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

Template = Literal["chat", "plain"]

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def strip_thinking(text: str) -> str:
    """The answer part of a response: `<think>...</think>` blocks removed.

    A lone `</think>` (templates such as Qwen3's open the think block in the generation prompt, so the response
    starts inside it) ends the reasoning: only what follows the last one is kept. An unterminated `<think>` means
    the model never got to an answer: it and everything after it are dropped (a response that is all unfinished
    reasoning gives "")."""
    text = _THINK_BLOCK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    return text.strip()


# ------------------------------------------------------------------------------------------------------------
# input ids: the RM's own template, truncated from the start of the response (the final answer is kept)
# ------------------------------------------------------------------------------------------------------------
def _encode(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _as_ids(out: Any) -> list[int]:
    """apply_chat_template returns a list, or (transformers 5) a BatchEncoding."""
    if hasattr(out, "keys"):
        out = out["input_ids"]
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(i) for i in out]


def _source_name(tok) -> str:
    return getattr(tok, "name_or_path", "") or "<in-memory tokenizer>"


def _format(tok, prompt: str, response: str, template: Template) -> list[int]:
    if template == "plain":
        # documented fallback for RMs trained without a chat template: "prompt\n\nresponse" + eos
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        return _encode(tok, f"{prompt}\n\n{response}") + eos
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"reward model {_source_name(tok)}: its tokenizer has no chat template; a reward model "
                         f"scores (prompt, response) through its own chat template (or set `chat_template: plain` "
                         f"in the reward source to format 'prompt\\n\\nresponse' + eos)")
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return _as_ids(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=False))


def rm_input_ids(tok, prompt: str, response: str, max_length: int, strip_think: bool = True,
                 template: Template = "chat") -> list[int]:
    """Token ids of (prompt, response) in the RM's own format, at most `max_length` long.

    Too long: the response loses tokens from its START (its tail holds the final answer, which is what an RM
    judges); if the prompt alone leaves the response less than half the room, the prompt keeps only its last
    tokens and the response keeps at least half the room. Cut texts are re-templated, and the cut tightened
    until the templated ids fit (re-tokenising at a cut may change the count by a token or two)."""
    if template not in ("chat", "plain"):
        raise ValueError(f"template must be 'chat' or 'plain', got {template!r}")
    if strip_think:
        response = strip_thinking(response)
    ids = _format(tok, prompt, response, template)
    if len(ids) <= max_length:
        return ids
    p_ids, r_ids = _encode(tok, prompt), _encode(tok, response)
    overhead = max(len(ids) - len(p_ids) - len(r_ids), 0)
    room = max_length - overhead
    if room < 2:
        raise ValueError(f"max_length {max_length} is too small: the template alone takes {overhead} tokens")
    keep_r = min(len(r_ids), max(room - len(p_ids), room // 2))
    keep_p = min(len(p_ids), room - keep_r)
    for _ in range(16):
        p_text = prompt if keep_p >= len(p_ids) else tok.decode(p_ids[len(p_ids) - keep_p:]) if keep_p else ""
        r_text = response if keep_r >= len(r_ids) else tok.decode(r_ids[len(r_ids) - keep_r:]) if keep_r else ""
        ids = _format(tok, p_text, r_text, template)
        excess = len(ids) - max_length
        if excess <= 0:
            return ids
        # tighten the prompt while it is cut and the response keeps half the room, else the response's start
        if 0 < keep_p and (keep_p < len(p_ids) or keep_r <= room // 2):
            keep_p = max(keep_p - excess, 0)
        else:
            keep_r = max(keep_r - excess, 0)
    raise ValueError(f"could not fit (prompt, response) into max_length {max_length} tokens")  # pragma: no cover


# ------------------------------------------------------------------------------------------------------------
# batched forward: padding, attention mask and positions right on either padding side
# ------------------------------------------------------------------------------------------------------------
def pad_batch(ids_list: list[list[int]], pad_id: int, side: str = "right", device: Any = "cpu"):
    """(input_ids, attention_mask, position_ids) tensors. Position ids count real tokens only, so that a
    left-padded item gets the positions it has alone."""
    import torch

    width = max(len(ids) for ids in ids_list)
    input_ids = torch.full((len(ids_list), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(ids_list), width), dtype=torch.long)
    for i, ids in enumerate(ids_list):
        sl = slice(0, len(ids)) if side == "right" else slice(width - len(ids), width)
        input_ids[i, sl] = torch.tensor(ids, dtype=torch.long)
        mask[i, sl] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids.to(device), mask.to(device), positions.to(device)


def forward_scores(model, ids_list: list[list[int]], pad_id: int, side: str = "right", device: Any = "cpu"):
    """Scalar scores [len(ids_list)] (float32, with gradients when enabled) of a sequence classifier, or of an
    engine that wraps one (DDP, DeepSpeed)."""
    input_ids, mask, positions = pad_batch(ids_list, pad_id, side, device)
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False)
    return out.logits[:, 0].float()


def token_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped so that (items in a batch) x (longest item) <= batch_tokens, longest items first; at least
    one item per batch (an item longer than batch_tokens goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        # sorted longest first: the batch's first item is its longest
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def ensure_pad_token(model, tok) -> int:
    """Make the tokenizer and the model's config agree on a pad id (the classifier reads the last non-pad token).
    A tokenizer without one pads with eos, as Hugging Face's recipes do."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    pad_id = int(tok.pad_token_id)
    model.config.pad_token_id = pad_id
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    if text_config is not None and text_config is not model.config:
        text_config.pad_token_id = pad_id
    return pad_id


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class RewardModelScorer:
    """A sequence-classification reward model, loaded once, in eval mode, scoring without gradients.

    deepspeed_config: a ZeRO-3 DeepSpeed config (the policy's, without optimizer) to load the RM partitioned over
    the ranks like the policy (zero.Init: no rank holds it whole) and run it through a DeepSpeed engine. Every
    forward then gathers parameters collectively, so all ranks run the same number of forwards: `score` pads a
    rank's batches with one-token dummies up to the largest count over the ranks, and every rank must call it,
    with or without items of its own (`lockstep`)."""

    def __init__(self, path: str | Path, device: Any = "cpu", max_length: int = 4096, batch_tokens: int = 65536,
                 strip_thinking: bool = True, template: Template = "chat", dtype: Any = None,
                 trust_remote_code: bool = False, deepspeed_config: dict | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path = str(path)
        self.device = torch.device(device)
        self.max_length, self.batch_tokens = max_length, batch_tokens
        self.strip_thinking, self.template = strip_thinking, template
        if dtype is None:  # float32 on CPU (exact, and bf16 matmuls are slow there); bf16 on GPU
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        elif isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        local = {"local_files_only": True} if hub_offline() or Path(self.path).is_dir() else {}
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust_remote_code, **local)
        if template == "chat" and not getattr(self.tokenizer, "chat_template", None):
            _format(self.tokenizer, "", "", "chat")  # raises the error that names the path
        if deepspeed_config is not None:
            from ringctl.train.models import activate_zero3

            activate_zero3(deepspeed_config)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                self.path, dtype=dtype, trust_remote_code=trust_remote_code, **local)
        finally:
            if deepspeed_config is not None:
                from ringctl.train.models import deactivate_zero3

                deactivate_zero3()
        from ringctl.train.models import apply_experts_implementation

        apply_experts_implementation(self.model)
        if self.model.config.num_labels != 1:
            raise ValueError(f"reward model {self.path}: num_labels is {self.model.config.num_labels}, a reward "
                             f"model has one scalar output (num_labels 1)")
        self.pad_id = ensure_pad_token(self.model, self.tokenizer)
        self.padding_side = getattr(self.tokenizer, "padding_side", "right") or "right"
        self.lockstep = False
        if deepspeed_config is not None:
            import deepspeed

            from ringctl.dist import rank_and_world
            from ringctl.train.models import mark_moe_leaf_modules

            mark_moe_leaf_modules(self.model)
            self.model.requires_grad_(False)
            config = {k: v for k, v in deepspeed_config.items() if k not in ("optimizer", "scheduler")}
            self.model, *_ = deepspeed.initialize(model=self.model, config=config)
            self.lockstep = rank_and_world()[1] > 1
        else:
            self.model.to(self.device)
        self.model.eval()

    def encode(self, prompts: list[str], responses: list[str]) -> list[list[int]]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [rm_input_ids(self.tokenizer, p, r, self.max_length, self.strip_thinking, self.template)
                for p, r in zip(prompts, responses)]

    def score_ids(self, ids_list: list[list[int]]) -> list[float]:
        import torch

        for ids in ids_list:
            if ids and ids[-1] == self.pad_id:
                raise ValueError(f"reward model {self.path}: a templated sequence ends with the pad token "
                                 f"(id {self.pad_id}); the classifier would read the score at an earlier token. "
                                 f"Give the tokenizer a pad token distinct from the template's last token")
        scores = [0.0] * len(ids_list)
        batches = token_batches([len(ids) for ids in ids_list], self.batch_tokens)
        if self.lockstep:  # ZeRO-3: as many forwards as the rank with the most batches
            from ringctl.dist import max_over_ranks

            batches += [[]] * (max_over_ranks(len(batches)) - len(batches))
        with torch.no_grad():
            for batch in batches:
                if not batch:  # a dummy forward (one token) that keeps this rank in step with the others
                    forward_scores(self.model, [[self.pad_id]], self.pad_id, self.padding_side, self.device)
                    continue
                out = forward_scores(self.model, [ids_list[i] for i in batch], self.pad_id, self.padding_side,
                                     self.device)
                for i, s in zip(batch, out.tolist()):
                    scores[i] = float(s)
        return scores

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One scalar per (prompt, response), in the input order."""
        return self.score_ids(self.encode(prompts, responses))


# ------------------------------------------------------------------------------------------------------------
# cheap checks (no torch): what `ringctl validate` can say about an RM directory before anything runs
# ------------------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"{path.name} is not readable JSON ({e})"
    return (data, None) if isinstance(data, dict) else (None, f"{path.name} is not a JSON object")


def check_reward_model_dir(path: str | Path) -> list[str]:
    """Problems that make `path` unusable as a reward model (empty list: fine), from its JSON files only:
    a sequence-classification architecture with one output, and a chat template."""
    root = Path(path)
    if not root.is_dir():
        return [f"{root} is not a directory"]
    problems = []
    config, err = _read_json(root / "config.json") if (root / "config.json").exists() else (None, None)
    if config is None:
        problems.append(err or f"{root} has no config.json (not a Hugging Face model directory)")
    else:
        archs = config.get("architectures") or []
        if not any(str(a).endswith("ForSequenceClassification") for a in archs):
            problems.append(f"config.json architectures {archs} has no *ForSequenceClassification entry: not a "
                            f"reward model (a causal LM's checkpoint must be trained as one first, e.g. by a "
                            f"reward_model stage with `init:`)")
        # transformers saves id2label only when it is not its default of 2 labels
        labels = config.get("num_labels") or (len(config["id2label"]) if isinstance(config.get("id2label"), dict)
                                              else 2)
        if labels != 1:
            problems.append(f"config.json has {labels} labels; a reward model has one scalar output (num_labels 1)")
    has_template = any((root / f).exists() for f in _CHAT_TEMPLATE_FILES)
    if not has_template and (root / "tokenizer_config.json").exists():
        tok_config, err = _read_json(root / "tokenizer_config.json")
        if err:
            problems.append(err)
        has_template = bool(tok_config and tok_config.get("chat_template"))
    if not has_template:
        problems.append("no chat template (tokenizer_config.json chat_template, chat_template.jinja or "
                        "chat_template.json): the reward model scores (prompt, response) through its own chat "
                        "template (or set `template: plain`)")
    return problems
