"""``cell.rebuild_model``: a worker's copy of the model computes exactly what the reference's did, whichever
way it was built (on the meta device, or the ordinary way when that cannot hold the model)."""

from __future__ import annotations

import pytest
import torch

from infertune.cell import rebuild_model
from infertune.config import ModelConfig
from infertune.models import load_model


@pytest.mark.parametrize("name", ["resnet18", "tests.fixture_models:non_persistent_buffer",
                                  "tests.fixture_models:needs_real_tensors"])
def test_the_rebuilt_model_computes_what_the_saved_one_did(tmp_path, name):
    torch.manual_seed(1)
    original = load_model(name, pretrained=False, seed=7, warn=lambda m: None).module
    with torch.no_grad():  # weights unlike the seeded ones, so a rebuild that ignored the file would differ
        for p in original.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "weights.pt"
    torch.save(original.state_dict(), path)
    rebuilt = rebuild_model(ModelConfig(name=name, seed=7), str(path))
    assert not any(t.is_meta for t in (*rebuilt.parameters(), *rebuilt.buffers()))
    size = 224 if name == "resnet18" else 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(original.eval()(x), rebuilt(x))
