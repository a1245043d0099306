import pytest
import torch

from stexture.training.models import MODELS, BasicBlock, build_model, resnet18, small_resnet

# one OpenMP thread per process: see the fixture in conftest.py
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet18_has_the_parameter_count_of_the_paper_layout():
    # torchvision.models.resnet18() has 11,689,512 parameters at 1000 classes
    assert parameter_count(resnet18(1000)) == 11_689_512


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [32, 64, 96])
def test_models_map_a_batch_to_one_logit_per_class(name, size):
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_small_model_is_much_smaller_than_resnet18():
    assert parameter_count(small_resnet(10)) < parameter_count(resnet18(10)) / 20


def test_a_fresh_block_with_identity_shortcut_is_relu_of_its_input():
    block = small_resnet(3).stages[0][0].eval()  # 32 -> 32 channels, stride 1
    x = torch.randn(2, 32, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(x))


def test_a_strided_block_halves_the_resolution_and_changes_width():
    block = BasicBlock(8, 16, stride=2)
    assert block(torch.randn(1, 8, 10, 10)).shape == (1, 16, 5, 5)


def test_unknown_model_and_bad_class_count_are_value_errors():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg", 3)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("small", 0)
