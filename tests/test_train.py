"""LayerSkip training: the loss falls, exit weights follow the recipe, the corpus splits cleanly."""

import torch

from eesim.model import EarlyExitLM
from eesim.model.corpus import Document
from eesim.model.train import TrainConfig, exit_weights, layerskip_loss, lr_at
from tests.conftest import TINY


def test_a_few_training_steps_lower_the_loss_on_a_tiny_batch():
    torch.manual_seed(0)
    model = EarlyExitLM(TINY)
    cfg = TrainConfig(batch_size=4, seq_len=16, exit_curriculum=0, max_layer_dropout=0.1)
    batch = torch.randint(0, 300, (4, 17), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(30):
        loss, final = layerskip_loss(model, batch, step, cfg, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(final.item())
    assert losses[-1] < 0.7 * losses[0]


def test_exit_weights_rotate_include_the_last_layer_and_sum_to_one():
    cfg = TrainConfig(rotation=2, exit_curriculum=0)
    even, odd = exit_weights(0, 8, cfg), exit_weights(1, 8, cfg)
    assert set(even) == {0, 2, 4, 6, 7} and set(odd) == {1, 3, 5, 7}
    assert abs(sum(even.values()) - 1) < 1e-9
    assert even[2] < even[4] < even[6] < even[7]  # deeper exits weigh more


def test_exit_curriculum_ramps_early_exit_loss_in():
    cfg = TrainConfig(rotation=1, exit_curriculum=100)
    assert exit_weights(0, 4, cfg)[3] > exit_weights(99, 4, cfg)[3]


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(steps=1000, warmup=100, lr=1e-3)
    assert lr_at(0, cfg) < lr_at(99, cfg) == cfg.lr
    assert lr_at(999, cfg) < lr_at(500, cfg) < cfg.lr


def test_split_is_by_document_and_deterministic():
    docs = [Document("code", f"mod{i}.py", "x = 1\n") for i in range(400)]
    splits = [d.split for d in docs]
    assert splits == [Document("code", f"mod{i}.py", "other text").split for i in range(400)]
    assert 0.05 < splits.count("heldout") / len(splits) < 0.15
