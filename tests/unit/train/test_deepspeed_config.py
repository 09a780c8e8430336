"""One DeepSpeed config for zero.Init loading and the engine."""

import pytest

from ringctl.train.config import DeepSpeedConfig
from ringctl.train.engine import OptimSpec, deepspeed_config


def test_loader_and_engine_share_the_partitioning_settings():
    ds = DeepSpeedConfig(zero_stage=3, offload_params=True, offload_optimizer=True, bf16=True)
    for on_gpu in (False, True):
        load, train = deepspeed_config(ds, on_gpu=on_gpu), deepspeed_config(ds, OptimSpec(lr=1e-3, micro_batches=4),
                                                                              on_gpu=on_gpu)
        assert load["zero_optimization"] == train["zero_optimization"]
        assert load["bf16"] == train["bf16"] == {"enabled": on_gpu}
    assert train["gradient_accumulation_steps"] == 4
    assert train["zero_optimization"]["offload_param"] == {"device": "cpu"}


def test_activate_zero3_refuses_other_stages():
    from ringctl.train.models import activate_zero3

    with pytest.raises(ValueError, match="stage = 3"):
        activate_zero3(deepspeed_config(DeepSpeedConfig(zero_stage=2)))
