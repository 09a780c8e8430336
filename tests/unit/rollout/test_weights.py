from safetensors import safe_open

from ringctl.rollout.weights import checkpoint_format_state_dict, iter_named_weights


def test_checkpoint_format_matches_what_save_pretrained_writes(tiny_moe, tmp_path):
    state = checkpoint_format_state_dict(tiny_moe)
    # transformers 5 fuses the experts in memory; the checkpoint (and vLLM's load_weights) names them one by one
    assert "model.layers.0.mlp.experts.gate_up_proj" in tiny_moe.state_dict()
    assert state["model.layers.0.mlp.experts.3.gate_proj.weight"].shape == (64, 64)
    tiny_moe.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as saved:
        saved_keys = set(saved.keys())
        assert set(state) == saved_keys
        for name in ("model.layers.1.mlp.experts.2.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"):
            assert saved.get_tensor(name).equal(state[name])
    assert dict(iter_named_weights(tiny_moe)).keys() == state.keys()
    assert dict(iter_named_weights(state)) is not state and dict(iter_named_weights(state)).keys() == state.keys()
