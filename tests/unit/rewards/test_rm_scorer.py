"""ringctl.rewards.rm_scorer: thinking stripped, the RM's own template with the answer kept when truncating,
directory checks without torch, and a scorer whose batching and padding never change a score."""

from __future__ import annotations

import json

import pytest

from ringctl.rewards.rm_scorer import check_reward_model_dir, rm_input_ids, strip_thinking, token_batches


@pytest.fixture(scope="module")
def tok():
    from ringctl.train.models import build_char_tokenizer

    return build_char_tokenizer()


@pytest.mark.parametrize("text, expected", [
    ("<think>let me see</think> the answer is 4.", "the answer is 4."),
    ("  plain answer  ", "plain answer"),
    ("<think>a</think>one <think>b\nc</think>two", "one two"),
    ("<think>never finished, ran out of tokens", ""),
    ("reasoning that started in the prompt</think>\n\nfinal", "final"),
    ("<think>\n\n</think>\n\n\\boxed{42}", "\\boxed{42}"),
    ("", ""),
])
def test_strip_thinking(text, expected):
    assert strip_thinking(text) == expected


def test_rm_input_ids_is_the_chat_template_of_the_stripped_response(tok):
    ids = rm_input_ids(tok, "what is 2+2?", "<think>hmm</think>4", max_length=512)
    assert tok.decode(ids) == "<|im_start|>user\nwhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    kept = rm_input_ids(tok, "q", "<think>hmm</think>4", max_length=512, strip_think=False)
    assert "<think>hmm</think>4" in tok.decode(kept)


def test_truncation_keeps_the_end_of_the_response(tok):
    response = "step. " * 200 + "so the answer is \\boxed{42}"
    for max_length in (40, 64, 100, 300):
        ids = rm_input_ids(tok, "solve it", response, max_length=max_length)
        text = tok.decode(ids)
        assert len(ids) <= max_length
        assert text.endswith("\\boxed{42}<|im_end|>\n"), text
        assert text.startswith("<|im_start|>user\nsolve it<|im_end|>")  # a short prompt is kept whole
    # a prompt too long on its own keeps its last tokens; the response keeps at least half the room
    ids = rm_input_ids(tok, "context " * 300 + "the question?", response, max_length=120)
    text = tok.decode(ids)
    assert len(ids) <= 120 and text.endswith("\\boxed{42}<|im_end|>\n") and "the question?<|im_end|>" in text
    assert len(text.split("<|im_start|>assistant\n")[1]) >= (120 - 25) // 2


def test_plain_template_and_missing_chat_template(tok):
    ids = rm_input_ids(tok, "p", "r", 64, template="plain")
    assert tok.decode(ids) == "p\n\nr<|im_end|>"
    assert len(rm_input_ids(tok, "p", "x" * 200 + "END", 50, template="plain")) <= 50
    from ringctl.train.models import build_char_tokenizer

    bare = build_char_tokenizer()
    bare.chat_template = None
    bare.name_or_path = "/models/my-rm"
    with pytest.raises(ValueError, match=r"/models/my-rm.*no chat template.*chat_template: plain"):
        rm_input_ids(bare, "p", "r", 64)
    assert rm_input_ids(bare, "p", "r", 64, template="plain")  # the documented fallback needs none


def test_token_batches_respect_the_budget_and_cover_every_item():
    lengths = [5, 50, 7, 30, 30, 2, 200, 9]
    batches = token_batches(lengths, 60)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 60
    assert [6] in batches  # longer than the budget: alone


def _write_dir(path, config: dict | None, chat_template: bool = True, tokenizer_config: dict | None = None):
    path.mkdir(parents=True)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    if chat_template:
        (path / "chat_template.jinja").write_text("{{ messages }}")
    if tokenizer_config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


def test_check_reward_model_dir(tmp_path):
    good = {"architectures": ["Qwen3ForSequenceClassification"], "id2label": {"0": "LABEL_0"}}
    assert check_reward_model_dir(_write_dir(tmp_path / "good", good)) == []
    inline = _write_dir(tmp_path / "inline", {**good, "num_labels": 1}, chat_template=False,
                        tokenizer_config={"chat_template": "{{ messages }}"})
    assert check_reward_model_dir(inline) == []
    causal = check_reward_model_dir(_write_dir(tmp_path / "causal", {"architectures": ["Qwen3ForCausalLM"]}))
    assert len(causal) == 2 and "ForSequenceClassification" in causal[0] and "2 labels" in causal[1]
    two = check_reward_model_dir(_write_dir(tmp_path / "two", {**good, "id2label": {"0": "a", "1": "b"}}))
    assert two == ["config.json has 2 labels; a reward model has one scalar output (num_labels 1)"]
    none = check_reward_model_dir(_write_dir(tmp_path / "none", good, chat_template=False,
                                             tokenizer_config={"model_max_length": 10}))
    assert len(none) == 1 and "no chat template" in none[0]
    empty = check_reward_model_dir(_write_dir(tmp_path / "empty", None))
    assert any("no config.json" in p for p in empty)
    assert check_reward_model_dir(tmp_path / "missing") == [f"{tmp_path / 'missing'} is not a directory"]


# ------------------------------------------------------------------------------------------------------------
# the scorer, on a tiny randomly initialised sequence classifier
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    import torch
    from transformers import AutoModelForSequenceClassification

    from ringctl.train.config import TinyModelConfig
    from ringctl.train.models import build_char_tokenizer, tiny_model_config

    tok = build_char_tokenizer()
    config = tiny_model_config(TinyModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                               num_key_value_heads=2, moe_intermediate_size=64, intermediate_size=128,
                                               num_experts=4, num_experts_per_tok=2), len(tok))
    config.num_labels = 1
    config.pad_token_id = tok.pad_token_id
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # a score head as large as a trained one, so that scores differ visibly
        model.score.weight.normal_(0, 1.0)
    path = tmp_path_factory.mktemp("rm") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_saved_classifier_passes_the_directory_check(rm_dir):
    assert check_reward_model_dir(rm_dir) == []


@pytest.mark.parametrize("side", ["right", "left"])
def test_scores_alone_equal_scores_in_a_padded_batch(rm_dir, side):
    from ringctl.rewards.rm_scorer import RewardModelScorer

    scorer = RewardModelScorer(rm_dir, max_length=256)
    scorer.padding_side = side
    prompts = ["tell me about bees.", "describe the sea as calm, please, in one line.", "q"]
    responses = ["bees are kind. hope this helps.", "<think>the sea...</think>the sea is calm.", "a" * 90]
    together = scorer.score(prompts, responses)
    alone = [scorer.score([p], [r])[0] for p, r in zip(prompts, responses)]
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(round(s, 4) for s in alone)) == 3  # the items really differ
    # the think block is stripped before scoring
    assert scorer.score([prompts[1]], ["the sea is calm."])[0] == pytest.approx(together[1], abs=1e-5)


def test_small_token_batches_keep_the_input_order(rm_dir):
    from ringctl.rewards.rm_scorer import RewardModelScorer

    prompts = [f"prompt {i}" + "." * (7 * i % 23) for i in range(12)]
    responses = [f"answer {i} " + "x" * (11 * i % 31) for i in range(12)]
    big = RewardModelScorer(rm_dir, max_length=256).score(prompts, responses)
    small = RewardModelScorer(rm_dir, max_length=256, batch_tokens=150)
    batches = token_batches([len(ids) for ids in small.encode(prompts, responses)], 150)
    assert len(batches) >= 4
    assert small.score(prompts, responses) == pytest.approx(big, abs=1e-5)
    assert small.score(prompts[::-1], responses[::-1]) == pytest.approx(big[::-1], abs=1e-5)


def test_scorer_refuses_a_directory_without_chat_template(rm_dir, tmp_path):
    import shutil

    from ringctl.rewards.rm_scorer import RewardModelScorer

    bare = tmp_path / "bare"
    shutil.copytree(rm_dir, bare)
    (bare / "chat_template.jinja").unlink()
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="no chat template"):
        RewardModelScorer(bare)
    plain = RewardModelScorer(bare, template="plain")
    assert len(plain.score(["p"], ["r"])) == 1
