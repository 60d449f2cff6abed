import pytest
import torch

from tctseg.network import SegmentationNetwork, UNet3D, count_parameters


def test_paper_configuration_has_4_12_million_parameters():
    net = SegmentationNetwork(num_classes=5)  # width 16, depth 5: paper Tab. 6
    backbone_and_msh = count_parameters(net.backbone) + count_parameters(net.main_head)
    conv_only = count_parameters(net.backbone, include_norm=False) + count_parameters(net.main_head, include_norm=False)
    assert abs(backbone_and_msh - 4.12e6) / 4.12e6 < 0.005
    assert abs(conv_only - 4.12e6) / 4.12e6 < 0.005
    # each ATH is one 3×3×3 conv 16 → 2: 2·16·27 + 2 = 866 parameters
    ath = count_parameters(net.aux_heads)
    print(f"backbone+MSH {backbone_and_msh:,} (conv only {conv_only:,}); ATHs {ath:,} = 5 × {ath // 5}")
    assert ath == 5 * 866


def test_paper_convolution_channels_follow_table_6():
    convs = [m for m in UNet3D().modules() if isinstance(m, torch.nn.Conv3d)]
    pairs = [(c.in_channels, c.out_channels) for c in convs]
    assert pairs == [
        (1, 16), (16, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128),
        (128, 128), (128, 256),
        (384, 128), (128, 128), (192, 64), (64, 64), (96, 32), (32, 32), (48, 16), (16, 16),
    ]



def test_published_stage_channels_are_what_each_stage_outputs():
    net = UNet3D(width=4, depth=4).eval()
    seen = {}

    def record(kind, index, features):
        seen[kind, index] = features.shape[1]
        return features

    net.forward_stages(torch.randn(1, 1, 8, 8, 8), record)
    assert seen == {(kind, index): net.stage_channels(kind, index) for kind, index in seen}
    assert (net.encoder_channels, net.bottleneck_channels, net.decoder_channels) == ((4, 8, 16), 32, (16, 8, 4))
    assert net.out_channels == 4


def test_training_returns_main_and_auxiliary_logits():
    net = SegmentationNetwork(num_classes=3, width=4, depth=3).train()
    out = net(torch.randn(2, 1, 16, 16, 8))
    assert out.main_logits.shape == (2, 4, 16, 16, 8)
    assert out.aux_logits.shape == (2, 3, 2, 16, 16, 8)


def test_auxiliary_heads_are_not_run_at_inference():
    net = SegmentationNetwork(num_classes=3, width=4, depth=3)
    calls = []
    both_heads = net.both_heads
    net.both_heads = lambda features: calls.append(1) or both_heads(features)
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 16, 16, 8))
    assert out.aux_logits is None and calls == []
    net(torch.randn(1, 1, 16, 16, 8), aux=True)
    assert calls == [1]


def test_grouped_auxiliary_heads_equal_separate_binary_convolutions():
    net = SegmentationNetwork(num_classes=3, width=4, depth=3)
    features = torch.randn(1, 4, 6, 6, 4)
    together = net.aux_heads(features)
    weight, bias = net.aux_heads.conv.weight, net.aux_heads.conv.bias
    for j in range(3):
        alone = torch.nn.functional.conv3d(features, weight[2 * j : 2 * j + 2], bias[2 * j : 2 * j + 2], padding=1)
        torch.testing.assert_close(together[:, j], alone)


def test_both_heads_as_one_convolution_equal_the_two_heads():
    net = SegmentationNetwork(num_classes=3, width=4, depth=3).to(memory_format=torch.channels_last_3d)
    features = torch.randn(2, 4, 8, 8, 4).contiguous(memory_format=torch.channels_last_3d)
    main, aux = net.both_heads(features)
    torch.testing.assert_close(main, net.main_head(features))
    torch.testing.assert_close(aux, net.aux_heads(features))
    assert main.stride(1) == 1 and aux.stride(2) == 1  # views of one channels-last output


def test_instance_norm_is_torch_instance_norm_and_keeps_channels_last():
    from tctseg.network.norm import InstanceNorm

    torch.manual_seed(0)
    ours, torchs = InstanceNorm(6), torch.nn.InstanceNorm3d(6, affine=True)
    with torch.no_grad():
        torchs.weight.uniform_(0.5, 2.0)
        torchs.bias.uniform_(-1.0, 1.0)
    ours.load_state_dict(torchs.state_dict())  # the same parameters: checkpoints load either way
    # a mean far from 0 against the spread, as after a convolution: one-pass sums lose digits
    x = (0.5 * torch.randn(2, 6, 24, 20, 12) + 2.0).contiguous(memory_format=torch.channels_last_3d)
    grad = torch.randn(2, 6, 24, 20, 12)
    results = {}
    for name, module, dtype in (("ours", ours, torch.float32), ("torch", torchs, torch.float32), ("float64", torchs, torch.float64)):
        module = module.to(dtype)
        module.zero_grad()
        xi = x.to(dtype).clone().contiguous(memory_format=torch.channels_last_3d).requires_grad_()
        y = module(xi)
        y.backward(grad.to(dtype))
        results[name] = [t.detach().double() for t in (y, xi.grad, module.weight.grad, module.bias.grad)]
        if name == "ours":
            assert y.is_contiguous(memory_format=torch.channels_last_3d)
        module.float()
    for k, what in enumerate(("output", "input gradient", "weight gradient", "bias gradient")):
        exact = results["float64"][k]
        error = {n: float((results[n][k] - exact).norm() / exact.norm()) for n in ("ours", "torch")}
        # at least as accurate as torch's own kernel (within a small factor) and near float32's limit
        assert error["ours"] < max(4 * error["torch"], 1e-6), (what, error)


def test_a_decoder_stage_on_two_parts_equals_it_on_their_concatenation():
    from tctseg.network.unet import ConvBlock

    torch.manual_seed(0)
    block = ConvBlock(6 + 4, 4, 4, "instance").double()
    first = torch.randn(2, 6, 8, 8, 4, dtype=torch.float64, requires_grad=True)
    second = torch.randn(2, 4, 8, 8, 4, dtype=torch.float64, requires_grad=True)
    apart = block.forward_concatenated(first, second)
    together = block(torch.cat([first, second], dim=1))
    torch.testing.assert_close(apart, together)
    grads = torch.autograd.grad(apart.square().sum(), (first, second, block[0].weight))
    expected = torch.autograd.grad(together.square().sum(), (first, second, block[0].weight))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_instance_norm_gradients_pass_gradcheck():
    from tctseg.network.norm import instance_norm

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    b = torch.rand(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: instance_norm(x, w, b), (x, w, b))


@pytest.mark.parametrize("shape", [(17, 9, 5), (33, 16, 7), (1, 1, 1)])
def test_odd_spatial_sizes_keep_their_shape(shape):
    net = SegmentationNetwork(num_classes=2, width=4, depth=4).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, *shape))
    assert out.main_logits.shape == (1, 3, *shape)


def test_network_without_aux_heads_refuses_aux():
    net = SegmentationNetwork(num_classes=2, width=4, depth=3, aux_heads=False)
    with pytest.raises(ValueError, match="without auxiliary"):
        net(torch.randn(1, 1, 8, 8, 8), aux=True)


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_norms(norm):
    net = SegmentationNetwork(num_classes=2, width=8, depth=3, norm=norm)
    assert net(torch.randn(2, 1, 8, 8, 8)).main_logits.shape == (2, 3, 8, 8, 8)


def test_channels_last_gives_the_same_result():
    torch.manual_seed(0)
    net = SegmentationNetwork(num_classes=2, width=4, depth=3).eval()
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        plain = net(x).main_logits
        net_cl = net.to(memory_format=torch.channels_last_3d)
        fast = net_cl(x.contiguous(memory_format=torch.channels_last_3d)).main_logits
    torch.testing.assert_close(plain, fast, rtol=1e-4, atol=1e-5)
