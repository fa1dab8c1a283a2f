"""The conv-gan benchmark's PyTorch DCGAN is our DCGAN: equal parameter counts and layer shapes,
and with our weights copied in, the same outputs (batch-norm in training mode)."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("flax")
torch = pytest.importorskip("torch")
import jax  # noqa: E402

from overparam.bench import conv_gan  # noqa: E402
from overparam.bridge import nets  # noqa: E402


@pytest.mark.parametrize("res,ch,width", [(32, 3, 1.0), (32, 3, 0.3), (64, 1, 0.125), (16, 3, 0.5)])
def test_parameter_counts_and_shapes_equal(res, ch, width):
    gan = nets.make_gan("dcgan", res, ch, width, None, sn_d=False)
    gp, _, dp, _ = jax.eval_shape(lambda k: nets.init_gan(gan, k), jax.random.PRNGKey(0))  # shapes only
    G, D = conv_gan.torch_dcgan(res, ch, width, gan.latent_dim)
    for ours, theirs in ((gp, G), (dp, D)):
        sizes = [math.prod(x.shape) for x in jax.tree_util.tree_leaves(ours)]
        assert conv_gan.torch_param_count(theirs) == sum(sizes)
        assert sorted(sizes) == sorted(p.numel() for p in theirs.parameters())


def test_same_function_with_copied_weights():
    gan = nets.make_gan("dcgan", 16, 3, 1 / 16, None, sn_d=False)
    gp, gs, dp, ds = nets.init_gan(gan, jax.random.PRNGKey(1))
    G, D = conv_gan.torch_dcgan(16, 3, 1 / 16, gan.latent_dim)
    conv_gan.copy_flax_to_torch(gp, G)
    conv_gan.copy_flax_to_torch(dp, D)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, gan.latent_dim)).astype(np.float32)
    x = np.tanh(rng.normal(size=(6, 16, 16, 3))).astype(np.float32)
    ours_g = np.asarray(nets.apply(gan.G, gp, gs, z, train=True)[0])
    ours_d = np.asarray(nets.apply(gan.D, dp, ds, x, train=True)[0])
    G.train()
    D.train()
    with torch.no_grad():
        theirs_g = G(torch.from_numpy(z)).numpy().transpose(0, 2, 3, 1)
        theirs_d = D(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(ours_g, theirs_g, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours_d, theirs_d, rtol=1e-4, atol=1e-5)
