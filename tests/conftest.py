"""Shared fixtures: a tiny untrained teacher (built in a second, never trained)."""

from __future__ import annotations

import pytest
import torch

from study.models.teacher import TeacherArchitecture, build_processor, build_teacher

TINY = TeacherArchitecture(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vision_hidden_size=32,
    vision_intermediate_size=64,
    vision_layers=2,
    vision_heads=2,
)
WORDS = ["What colour is the object at the top left ?", "red blue circle square yes no", "Is there a red circle in the image ?"]


@pytest.fixture(scope="session")
def tiny_arch() -> TeacherArchitecture:
    return TINY


@pytest.fixture(scope="session")
def tiny_processor():
    return build_processor(WORDS, TINY)


@pytest.fixture
def tiny_model(tiny_processor):
    torch.manual_seed(0)
    return build_teacher(TINY, tiny_processor, seed=0)
