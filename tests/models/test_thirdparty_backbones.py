"""TSN with the zoo's third-party backbones: torchvision / mmpretrain key layouts (our own
ResNeXt and DenseNet), and timm models through the optional extra (skipped, saying why, where
timm is not installed)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from omnisource.errors import ConfigError
from omnisource.models import create_model, get_family, load_checkpoint

HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="needs timm (pip install 'omnisource[timm]'), not installed here")


def test_resnext_and_densenet_keep_their_libraries_key_names():
    """mmaction2 checkpoints of these rows hold mmpretrain's / torchvision's names under backbone."""
    with torch.device("meta"):
        rx = create_model("tsn_imagenet-pretrained-rn101-32x4d_8xb32-1x1x3-100e_kinetics400-rgb").state_dict()
        dn = create_model("tsn_dense161_320p_1x1x3_100e_kinetics400_rgb").state_dict()
    assert rx["backbone.layer1.0.conv2.weight"].shape == (128, 4, 3, 3)        # 32 groups x 4
    assert "backbone.layer3.22.bn3.running_var" in rx and "backbone.layer1.0.downsample.1.weight" in rx
    assert rx["cls_head.fc_cls.weight"].shape == (400, 2048)
    assert dn["backbone.features.denseblock3.denselayer36.conv2.weight"].shape == (48, 192, 3, 3)
    assert "backbone.features.transition3.conv.weight" in dn and "backbone.features.norm5.weight" in dn
    assert dn["cls_head.fc_cls.weight"].shape == (400, 2208)


def test_imagenet_files_of_those_libraries_initialise_the_backbone(tmp_path):
    """A torchvision-style ImageNet file (with its own classifier) becomes the backbone, the
    classifier is dropped and the TSN head stays fresh."""
    tiny = get_family("tsn_densenet").tiny
    src = create_model("tsn_dense161_320p_1x1x3_100e_kinetics400_rgb", num_classes=5, **tiny)
    sd = {k[len("backbone."):]: v for k, v in src.state_dict().items() if k.startswith("backbone.")}
    sd["classifier.weight"] = torch.zeros(1000, src.backbone.feat_dim)
    sd["classifier.bias"] = torch.zeros(1000)
    torch.save(sd, tmp_path / "densenet.pth")
    m = create_model("tsn_dense161_320p_1x1x3_100e_kinetics400_rgb", num_classes=5,
                     pretrained=str(tmp_path / "densenet.pth"), **tiny)
    torch.testing.assert_close(m.backbone.features.norm5.weight, src.backbone.features.norm5.weight)
    torch.testing.assert_close(m.backbone.features.conv0.weight, src.backbone.features.conv0.weight)


@pytest.mark.skipif(HAS_TIMM, reason="timm is installed here: the missing-extra message cannot show")
def test_a_timm_row_without_timm_says_what_to_install():
    with pytest.raises(ConfigError, match=r"needs timm.*omnisource\[timm\]"):
        create_model("tsn_swin_transformer_video_320p_1x1x3_100e_kinetics400_rgb")


@needs_timm
def test_timm_rows_use_mmaction2_names_and_pooling(tmp_path):
    import timm

    m = create_model("tsn_efficientnet_b4_1x1x3_100e_kinetics400_rgb", num_classes=7, timm_model="resnet18").eval()
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    assert {k[len("backbone."):] for k in m.state_dict() if k.startswith("backbone.")} == set(net.state_dict())
    x = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():     # mmaction2: forward_features, global average, segment average, fc
        f = m.backbone.forward_features(x.flatten(0, 1)).mean(dim=(2, 3)).view(2, 3, -1).mean(1)
        ref = m.cls_head.fc_cls(f)
        torch.testing.assert_close(m(x), ref)
    # a timm ImageNet file (classifier included) initialises the backbone
    full = timm.create_model("resnet18", pretrained=False)
    torch.save(full.state_dict(), tmp_path / "r18.pth")
    m2 = create_model("tsn_efficientnet_b4_1x1x3_100e_kinetics400_rgb", num_classes=7, timm_model="resnet18",
                      pretrained=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(m2.backbone.conv1.weight, full.conv1.weight)
    # an mmaction2-style checkpoint round trip (keys backbone.*, cls_head.*)
    torch.save({"state_dict": m.state_dict()}, tmp_path / "mm.pth")
    m3 = create_model("tsn_efficientnet_b4_1x1x3_100e_kinetics400_rgb", num_classes=7, timm_model="resnet18").eval()
    report = load_checkpoint(m3, tmp_path / "mm.pth")
    assert not report.missing and not report.unexpected
    with torch.no_grad():
        torch.testing.assert_close(m3(x), m(x))


@needs_timm
def test_swin_rows_pool_nhwc_maps():
    from omnisource.models.tsn_timm import pool_features

    f = torch.randn(2, 7, 7, 16)
    torch.testing.assert_close(pool_features(f, "NHWC").flatten(1), f.mean(dim=(1, 2)))
    torch.testing.assert_close(pool_features(f.permute(0, 3, 1, 2), None).flatten(1), f.mean(dim=(1, 2)))
    tokens = torch.randn(2, 50, 16)
    torch.testing.assert_close(pool_features(tokens, None).flatten(1), tokens.mean(1))
    with pytest.raises(ConfigError, match="feature_shape"):
        pool_features(f, "NTHWC")


def test_mobileone_train_time_branches_fuse_into_the_deploy_row(tmp_path):
    """reparameterize() turns the train-time MobileOne into mmpretrain's deploy form: the same
    scores, and a state dict the deploy row loads strictly."""
    from omnisource.models.mobileone import reparameterize

    torch.manual_seed(0)
    tiny = get_family("tsn_mobileone").tiny
    m = create_model("tsn_mobileone_s4_1x1x8_100e_kinetics400_rgb", num_classes=5, **tiny).eval()
    with torch.no_grad():
        for mod in m.modules():                 # non-trivial BN statistics on every branch
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
    x = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        before = m(x)
        reparameterize(m)
        after = m(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    torch.save({"state_dict": m.state_dict()}, tmp_path / "deploy.pth")
    d = create_model("tsn_mobileone_s4_deploy_1x1x8_100e_kinetics400_rgb", num_classes=5, **tiny).eval()
    report = load_checkpoint(d, tmp_path / "deploy.pth")
    assert not report.missing and not report.unexpected
    with torch.no_grad():
        torch.testing.assert_close(d(x), after)
