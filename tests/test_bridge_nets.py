"""Conv-GAN networks: shapes against the papers' architecture tables, width scaling, the
latent conv's padding, spectral norm against numpy's SVD, batch-norm running averages."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flax")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from overparam.bridge import nets  # noqa: E402
from overparam.errors import ConfigError  # noqa: E402


def layer_shapes(net, x):
    """Parameter shapes and each named layer's output shape, without computing anything."""

    def f():
        v = net.init({"params": jax.random.PRNGKey(0)}, x, train=False)
        _, st = net.apply(v, x, train=True, capture_intermediates=True, mutable=["intermediates", "batch_stats",
                                                                                 "spectral"])
        return v, st["intermediates"]

    v, inter = jax.eval_shape(f)
    outs = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(inter)[0]:
        keys = [str(getattr(p, "key", p)) for p in path if hasattr(p, "key")]
        outs["/".join(k for k in keys if k != "__call__") or "."] = tuple(leaf.shape)
    return v["params"], outs


def numpy_init(net, x, seed=0):
    """Variables of ``net`` filled from numpy (kernels N(0, 1/fan_in), BN identity, unit SN
    vectors): numeric tests without compiling flax's random initializers."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: net.init({"params": jax.random.PRNGKey(0)}, x, train=False))

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            a = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        elif name in ("scale", "var"):
            a = np.ones(leaf.shape)
        elif name == "u":
            a = rng.normal(size=leaf.shape)
            a /= np.linalg.norm(a)
        else:
            a = np.zeros(leaf.shape)
        return jnp.asarray(a, jnp.float32)

    v = jax.tree_util.tree_map_with_path(fill, shapes)
    v = dict(v)
    return v.pop("params"), v


@pytest.mark.parametrize("arch", nets.ARCHS)
@pytest.mark.parametrize("res,ch", [(8, 1), (16, 3), (64, 3)])
def test_output_shapes_follow_the_data(arch, res, ch):
    gan = nets.make_gan(arch, res, ch, width=1 / 16, latent_dim=8)
    _, g_out = layer_shapes(gan.G, jnp.zeros((3, 8)))
    _, d_out = layer_shapes(gan.D, jnp.zeros((3, res, res, ch)))
    assert g_out["."] == (3, res, res, ch)
    assert d_out["."] == (3,)


def test_resnet_forward_is_finite_and_in_range():
    """One numeric pass (the trainer tests run the other two architectures)."""
    gan = nets.make_gan("resnet", 8, 3, width=1 / 16, latent_dim=8)
    z = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (3, 8))
    gp, gs = numpy_init(gan.G, z)
    dp, ds = numpy_init(gan.D, jnp.zeros((3, 8, 8, 3)))

    @jax.jit
    def forward(gp, gs, dp, ds):
        x, _ = nets.apply(gan.G, gp, gs, z, train=True)
        return x, nets.apply(gan.D, dp, ds, x, train=True)[0]

    x, y = forward(gp, gs, dp, ds)
    assert float(jnp.max(jnp.abs(x))) <= 1.0 and float(jnp.std(x)) > 0
    assert y.shape == (3,) and bool(jnp.all(jnp.isfinite(y)))


def test_stoch_dcgan_matches_yazici_tables():
    """Appendix tables 2 and 3 of Yazici et al.: every layer's output shape and kernel."""
    gan = nets.make_gan("stoch_dcgan", 32, 3)
    assert gan.latent_dim == 512
    gp, g_out = layer_shapes(gan.G, jnp.zeros((2, 512)))
    assert g_out["conv0"] == (2, 4, 4, 1024)
    assert g_out["conv1"] == (2, 8, 8, 512)
    assert g_out["conv2"] == (2, 16, 16, 256)
    assert g_out["out"] == (2, 32, 32, 3)
    assert gp["conv0"]["kernel"].shape == (4, 4, 512, 1024)
    assert gp["conv1"]["kernel"].shape == (3, 3, 1024, 512)
    assert gp["out"]["kernel"].shape == (3, 3, 256, 3)
    n_g = (16 * 512 * 1024 + 1024) + (9 * 1024 * 512 + 512) + (9 * 512 * 256 + 256) + (9 * 256 * 3 + 3)
    assert nets.param_count(gp) == n_g
    dp, d_out = layer_shapes(gan.D, jnp.zeros((2, 32, 32, 3)))
    assert [d_out[f"conv{i}"] for i in range(4)] == [(2, 16, 16, 128), (2, 8, 8, 256), (2, 4, 4, 512),
                                                     (2, 4, 4, 1024)]
    assert d_out["out"] == (2, 1, 1, 1)
    assert [dp[f"conv{i}"]["kernel"].shape[:2] for i in range(4)] == [(5, 5)] * 4
    assert dp["out"]["kernel"].shape == (4, 4, 1024, 1)
    n_d = (25 * 3 * 128 + 128) + (25 * 128 * 256 + 256) + (25 * 256 * 512 + 512) + (25 * 512 * 1024 + 1024) \
        + (16 * 1024 + 1)
    assert nets.param_count(dp) == n_d


def test_dcgan_64_matches_radford_layout():
    gan = nets.make_gan("dcgan", 64, 3)
    _, g_out = layer_shapes(gan.G, jnp.zeros((2, 100)))
    assert [g_out[f"conv{i}"] for i in range(4)] == [(2, 4, 4, 512), (2, 8, 8, 256), (2, 16, 16, 128),
                                                     (2, 32, 32, 64)]
    assert g_out["out"] == (2, 64, 64, 3)
    assert all(f"bn{i}" in g_out for i in range(4))
    _, d_out = layer_shapes(gan.D, jnp.zeros((2, 64, 64, 3)))
    assert [d_out[f"conv{i}"] for i in range(4)] == [(2, 32, 32, 64), (2, 16, 16, 128), (2, 8, 8, 256),
                                                     (2, 4, 4, 512)]
    assert "bn0" not in d_out and all(f"bn{i}" in d_out for i in (1, 2, 3))


def test_sngan_resnet_32_layout():
    gan = nets.make_gan("resnet", 32, 3)
    gp, g_out = layer_shapes(gan.G, jnp.zeros((2, 128)))
    assert gp["fc"]["kernel"].shape == (128, 4 * 4 * 256)
    assert [g_out[f"block{i}"] for i in range(3)] == [(2, 8, 8, 256), (2, 16, 16, 256), (2, 32, 32, 256)]
    _, d_out = layer_shapes(gan.D, jnp.zeros((2, 32, 32, 3)))
    assert [d_out[f"block{i}"] for i in range(4)] == [(2, 16, 16, 128), (2, 8, 8, 128), (2, 8, 8, 128),
                                                      (2, 8, 8, 128)]
    assert d_out["out"] == (2, 1)


@pytest.mark.parametrize("arch", nets.ARCHS)
def test_width_multiplier_scales_every_hidden_channel_count(arch):
    w = 0.25
    full = nets.make_gan(arch, 32, 3, width=1.0)
    thin = nets.make_gan(arch, 32, 3, width=w)
    for net_f, net_t, x in ((full.G, thin.G, jnp.zeros((2, full.latent_dim))),
                            (full.D, thin.D, jnp.zeros((2, 32, 32, 3)))):
        pf, _ = layer_shapes(net_f, x)
        pt, _ = layer_shapes(net_t, x)
        kf, kt = dict(nets.kernels(pf)), dict(nets.kernels(pt))
        assert kf.keys() == kt.keys()
        for name in kf:
            out_f, out_t = kf[name].shape[-1], kt[name].shape[-1]
            if name.startswith("out"):  # image channels or the scalar logit
                assert out_t == out_f
            elif name == "fc/kernel":  # 4*4*c
                assert out_t == 16 * round(out_f / 16 * w)
            else:
                assert out_t == round(out_f * w), name


def test_latent_conv_pad3_is_a_dense_map():
    """conv 4x4, pad 3 on the 1x1 latent: out[i, j, c] = sum_l z_l K[3-i, 3-j, l, c] + b."""
    layer = nets.Conv(5, (4, 4), padding=3)
    z = np.random.default_rng(0).normal(size=(2, 1, 1, 3)).astype(np.float32)
    v = layer.init(jax.random.PRNGKey(0), z)
    k = np.asarray(v["params"]["kernel"], np.float64)
    b = np.random.default_rng(1).normal(size=5)
    v = {"params": {"kernel": v["params"]["kernel"], "bias": jnp.asarray(b, jnp.float32)}}
    out = np.asarray(layer.apply(v, z))
    ref = np.einsum("nl,ijlc->nijc", z[:, 0, 0].astype(np.float64), k[::-1, ::-1]) + b
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


CONV_CASES = [  # (input side, kernel, stride, padding, lhs dilation)
    (4, 5, 1, 2, 1), (8, 5, 2, 2, 1), (4, 4, 1, "VALID", 1), (1, 4, 1, 3, 1), (8, 4, 2, 1, 1),
    (7, 3, 2, "SAME", 1), (6, 4, 2, "SAME", 1), (9, 3, 1, 1, 1), (5, 4, 1, ((2, 3), (2, 2)), 2),
    (4, 3, 2, ((-1, 2), (0, 1)), 2),
]


def _lax_ref(x, w, stride, pad, dil):
    pads = pad if isinstance(pad, str) else ([(pad, pad)] * 2 if isinstance(pad, int) else pad)
    return jax.lax.conv_general_dilated(x, w, (stride, stride), pads, lhs_dilation=(dil, dil),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("route", ["dense", "loopsafe"])
@pytest.mark.parametrize("h,k,stride,pad,dil", CONV_CASES)
def test_conv2d_routes_equal_lax_values_and_gradients(route, h, k, stride, pad, dil):
    """Both conv routes (dense matrix; lax forward with the hand-written backward pass) equal
    lax.conv_general_dilated and its autodiff gradients (the layers' tests cover the choice)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, h, h, 2)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, 2, 3)), jnp.float32)
    if isinstance(pad, (int, str)):
        pads = nets.conv_padding(pad, (h, h), (k, k), stride) if dil == 1 else None
    else:
        pads = pad
    if route == "dense":
        def ours(x, w):
            return nets.conv2d_dense(x, w, stride, pads, dil)
    else:
        def ours(x, w):
            return nets.conv2d_loopsafe(x, w, stride, pads, dil)

    ref = _lax_ref(x, w, stride, pad, dil)
    np.testing.assert_allclose(np.asarray(ours(x, w)), np.asarray(ref), rtol=1e-5, atol=1e-5)
    gy = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
    g_ours = jax.grad(lambda x, w: jnp.sum(ours(x, w) * gy), argnums=(0, 1))(x, w)
    g_ref = jax.grad(lambda x, w: jnp.sum(_lax_ref(x, w, stride, pad, dil) * gy), argnums=(0, 1))(x, w)
    for a, b in zip(g_ours, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("h,k,stride,pad", [(1, 4, 1, "VALID"), (4, 4, 2, "SAME"), (3, 3, 2, "VALID"), (5, 4, 2, 1)])
def test_conv2d_transpose_equals_lax_conv_transpose(h, k, stride, pad):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, h, h, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, 3, 2)), jnp.float32)
    lax_pad = pad if isinstance(pad, str) else [(pad, pad)] * 2
    ref = jax.lax.conv_transpose(x, w, (stride, stride), lax_pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(np.asarray(nets.conv2d_transpose(x, w, stride, pad)), np.asarray(ref),
                               rtol=1e-5, atol=1e-5)


def test_power_iteration_one_step_by_hand():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(7, 4))
    u = rng.normal(size=4)
    u /= np.linalg.norm(u)
    v = w @ u / np.linalg.norm(w @ u)
    u1 = w.T @ v / np.linalg.norm(w.T @ v)
    sigma, u_new = nets.power_iteration(jnp.asarray(w, jnp.float32), jnp.asarray(u, jnp.float32))
    np.testing.assert_allclose(np.asarray(u_new), u1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(sigma), v @ w @ u1, rtol=1e-5)


@pytest.mark.parametrize("transpose", [False, True])
def test_spectral_norm_converges_to_svd(transpose):
    """After many forward passes the stored u gives sigma = the top singular value of the
    kernel as a (kh*kw*in, out) matrix, and the layer computes conv(x, W / sigma_max)."""
    layer = nets.Conv(6, (3, 3), padding="SAME", transpose=transpose, sn=True, use_bias=False)
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 5, 4))
    v = layer.init(jax.random.PRNGKey(0), x)
    fwd = jax.jit(lambda v: layer.apply(v, x, mutable=["spectral"]))
    for _ in range(200):
        _, upd = fwd(v)
        v = {**v, **upd}
    k = np.asarray(v["params"]["kernel"], np.float64)
    s_max = np.linalg.svd(k.reshape(-1, 6), compute_uv=False)[0]
    sigma, _ = nets.power_iteration(nets.kernel_matrix(v["params"]["kernel"]), v["spectral"]["u"])
    np.testing.assert_allclose(float(sigma), s_max, rtol=1e-4)
    out = layer.apply(v, x)  # immutable: does not store u, uses it
    plain = nets.Conv(6, (3, 3), padding="SAME", transpose=transpose, use_bias=False)
    ref = plain.apply({"params": {"kernel": jnp.asarray(k / s_max, jnp.float32)}}, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-3, atol=1e-5)


def test_spectral_vector_stored_only_when_mutable():
    layer = nets.Dense(3, sn=True)
    x = jnp.ones((2, 5))
    v = layer.init(jax.random.PRNGKey(0), x)
    u0 = np.asarray(v["spectral"]["u"])
    _, upd = layer.apply(v, x, mutable=["spectral"])
    w = np.asarray(v["params"]["kernel"], np.float64)
    vv = w @ u0 / np.linalg.norm(w @ u0)
    u1 = w.T @ vv / np.linalg.norm(w.T @ vv)
    np.testing.assert_allclose(np.asarray(upd["spectral"]["u"]), u1, rtol=1e-5, atol=1e-6)
    out_frozen = layer.apply(v, x)
    np.testing.assert_allclose(np.asarray(v["spectral"]["u"]), u0)  # unchanged
    assert out_frozen.shape == (2, 3)


def test_batch_norm_running_average_moves_by_momentum():
    """Radford G: after one training forward the running mean of bn0 is 0.9*0 + 0.1*batch mean."""
    gan = nets.make_gan("dcgan", 8, 1, width=1 / 32, latent_dim=6)
    z = jax.random.normal(jax.random.PRNGKey(2), (5, 6))
    gp, gs = numpy_init(gan.G, z)
    _, st = gan.G.apply({"params": gp, **gs}, z, train=True, capture_intermediates=True,
                        mutable=["intermediates", "batch_stats"])
    pre = st["intermediates"]["conv0"]["__call__"][0]  # conv0's output, the input of bn0
    _, new_state = nets.apply(gan.G, gp, gs, z, train=True)
    batch_mean = np.asarray(pre, np.float64).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(new_state["batch_stats"]["bn0"]["mean"]), 0.1 * batch_mean,
                               rtol=1e-4, atol=1e-6)
    # eval mode uses the running averages, train mode the batch statistics: outputs differ
    x_train, _ = nets.apply(gan.G, gp, gs, z, train=True)
    x_eval, _ = nets.apply(gan.G, gp, gs, z, train=False)
    assert float(jnp.max(jnp.abs(x_train - x_eval))) > 1e-4


@pytest.mark.parametrize("kwargs,match", [
    (dict(arch="stoch_dcgan", resolution=12, channels=3), "power of two"),
    (dict(arch="stoch_dcgan", resolution=4, channels=3), "power of two"),
    (dict(arch="biggan", resolution=32, channels=3), "architecture"),
    (dict(arch="dcgan", resolution=32, channels=3, width=0.0), "width"),
    (dict(arch="dcgan", resolution=32, channels=0), "channels"),
])
def test_bad_network_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        nets.make_gan(**kwargs)
