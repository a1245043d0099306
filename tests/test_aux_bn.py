import pytest
import torch
from torch import nn

from stexture.training import DualBatchNorm, aux_bn, fit, route, small_resnet
from stexture.training.trainer import TrainConfig, predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def _batch(seed: int, conflict_rows: int = 4, rows: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 3, 8, 8, generator=g)
    x[rows - conflict_rows:] = x[rows - conflict_rows:] * 3 + 5  # composites: other moments
    y = torch.nn.functional.one_hot(torch.arange(rows) % 2, 2).float()
    is_conflict = torch.arange(rows) >= rows - conflict_rows
    return x, y, {"is_conflict": is_conflict}


def test_every_batchnorm_becomes_a_pair_with_separate_affine():
    model = aux_bn(small_resnet(3))
    plain = small_resnet(3)
    pairs = [m for m in model.modules() if isinstance(m, DualBatchNorm)]
    assert len(pairs) == sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    for pair in pairs:
        assert pair.main.weight is not pair.aux.weight
        torch.testing.assert_close(pair.aux.weight, pair.main.weight)  # same start
    with pytest.raises(ValueError, match="already"):
        aux_bn(model)
    with pytest.raises(ValueError, match="no BatchNorm"):
        aux_bn(nn.Linear(2, 2))


def test_routing_sends_composites_to_aux_and_originals_to_main():
    torch.manual_seed(0)
    model = aux_bn(_tiny())
    reference = _tiny()
    reference.load_state_dict({k.replace(".main", ""): v for k, v in model.state_dict().items()
                               if ".aux." not in k})
    x, y, info = _batch(0)
    model.train()
    reference.train()
    with route(model, info["is_conflict"]):
        out = model(x)
    pair = model[1]
    clean, comp = ~info["is_conflict"], info["is_conflict"]
    # main saw only the originals, aux only the composites: compare with plain BNs fed each
    bn_main, bn_aux = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
    conv = model[0](x).detach()
    bn_main(conv[clean])
    bn_aux(conv[comp])
    torch.testing.assert_close(pair.main.running_mean, bn_main.running_mean)
    torch.testing.assert_close(pair.aux.running_mean, bn_aux.running_mean)
    torch.testing.assert_close(pair.aux.running_var, bn_aux.running_var)
    # the originals' outputs equal a plain model's on the originals alone
    torch.testing.assert_close(out[clean], reference(x[clean]))


def test_builtin_trainer_changes_aux_statistics_only_from_composites_and_evaluates_with_main():
    torch.manual_seed(0)
    model = aux_bn(_tiny())
    vanilla_batches = [_batch(s, conflict_rows=0) for s in range(3)]
    fit(model, vanilla_batches, None, TrainConfig(epochs=1, patience=None))
    pair = model[1]
    assert pair.aux.num_batches_tracked.item() == 0  # no composite: aux untouched
    torch.testing.assert_close(pair.aux.running_mean, torch.zeros(4))
    assert pair.main.num_batches_tracked.item() == 3
    mixed = [_batch(s) for s in range(3)]
    main_before = pair.main.running_mean.clone()
    fit(model, mixed, None, TrainConfig(epochs=1, patience=None))
    assert pair.aux.num_batches_tracked.item() == 3
    assert pair.aux.running_mean.abs().sum() > 0
    assert not torch.equal(pair.main.running_mean, main_before)
    # evaluation: the main statistics, whatever the aux ones hold
    x, y, _ = _batch(9, conflict_rows=0)
    probs = predict(model, [(x, y)])["probs"]
    plain = _tiny()
    plain.load_state_dict({k.replace(".main", ""): v for k, v in model.state_dict().items()
                           if ".aux." not in k})
    plain.eval()
    torch.testing.assert_close(torch.from_numpy(probs), torch.softmax(plain(x), 1))


def test_aux_bn_model_without_info_is_a_value_error():
    model = aux_bn(_tiny())
    x, y, _ = _batch(0)
    with pytest.raises(ValueError, match="with_info=True"):
        fit(model, [(x, y)], None, TrainConfig(epochs=1, patience=None))
