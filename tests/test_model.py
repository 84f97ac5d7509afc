"""Models: the shapes and sizes the labs rely on."""

from __future__ import annotations

import pytest
import torch

from shared.config import load_config
from shared.model import CNN, MLP, build_model, count_parameters


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_models_map_a_batch_to_ten_logits(name):
    model = build_model(load_config("configs/default.yaml", [f"model.name={name}"]).model)
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert model(torch.zeros(5, 28, 28)).shape == (5, 10)


def test_parameter_counts_follow_the_sizes():
    # 784*128+128 + 128*10+10
    assert count_parameters(MLP([128])) == 101_770
    # conv 5x5 1->16 (416) + 3x3 16->32 (4,640) + fc 800->256 (205,056) + 256->10 (2,570)
    assert count_parameters(CNN([16, 32], 256, batch_norm=False)) == 212_682
    # with BatchNorm the convs lose their biases (-48) and each BN has a scale and shift (+96)
    assert count_parameters(CNN([16, 32], 256, batch_norm=True)) == 212_730
    frozen = MLP([8])
    frozen.net[1].weight.requires_grad_(False)
    assert count_parameters(frozen) == count_parameters(frozen, trainable_only=False) - 784 * 8


def test_build_model_uses_config_sizes():
    cfg = load_config("configs/smoke.yaml")
    model = build_model(cfg.model)
    assert isinstance(model, CNN)
    assert model.features[0].out_channels == 8 and model.classifier[1].out_features == 64
