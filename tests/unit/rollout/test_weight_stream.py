"""The block-by-block weight stream on ordinary (unpartitioned) modules: same pairs as save_pretrained's file.
The ZeRO-3 (partitioned, 2-process) case is tests/integration/test_zero3_weights.py."""

import torch
from safetensors.torch import load_file

from ringctl.rollout.weights import iter_checkpoint_weights, weight_blocks
from ringctl.train.config import ModelConfig
from ringctl.train.models import build_tiny


def _assert_same_as_saved(model, directory):
    model.save_pretrained(directory, safe_serialization=True)
    saved = load_file(str(directory / "model.safetensors"))
    streamed = {name: tensor.clone() for name, tensor in iter_checkpoint_weights(model)}
    assert sorted(streamed) == sorted(saved)
    for name, tensor in saved.items():
        assert streamed[name].shape == tensor.shape and torch.equal(streamed[name], tensor), name


def test_stream_equals_save_pretrained_untied(tiny_moe, tmp_path):
    _assert_same_as_saved(tiny_moe, tmp_path)


def test_stream_equals_save_pretrained_tied_tiny_default(tmp_path):
    model, _ = build_tiny(ModelConfig(), seed=0)
    _assert_same_as_saved(model, tmp_path)  # tied lm_head: written (and streamed) once, as embed_tokens


def test_blocks_are_decoder_layers_and_cover_each_parameter_once(tiny_moe):
    blocks = list(weight_blocks(tiny_moe))
    layer_blocks = [b for b in blocks if b[0][0].startswith("model.layers.")]
    assert len(layer_blocks) == tiny_moe.config.num_hidden_layers
    assert all(len({name.split(".")[2] for name, _ in b}) == 1 for b in layer_blocks)  # one layer per block
    names = [name for block in blocks for name, _ in block]
    assert len(names) == len(set(names))
    assert {id(p) for block in blocks for _, p in block} >= {id(p) for p in tiny_moe.parameters()}


def test_to_rank_other_than_this_process_receives_nothing(tiny_moe):
    assert list(iter_checkpoint_weights(tiny_moe, to_rank=1)) == []
    assert len(list(iter_checkpoint_weights(tiny_moe, to_rank=0))) == len(list(iter_checkpoint_weights(tiny_moe)))
