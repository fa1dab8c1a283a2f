"""Grafting: Δ = ‖Δ_M‖ / (‖Δ_D‖ + ε) · Δ_D, per array or over the whole pytree.

The reference route runs the magnitude optimizer M and the direction optimizer D on their
own (optax's transformations, separate states) on the same gradient stream and compares
norms and directions step by step, in float64.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import assume, given, strategies as st

from overparam import optim

SHAPES = {"w": (2, 3), "b": (3,), "s": ()}
SIZE = sum(int(np.prod(s)) for s in SHAPES.values())
nonzero = st.floats(-10, 10, allow_nan=False).filter(lambda v: abs(v) > 1e-3)
streams = st.lists(st.lists(nonzero, min_size=SIZE, max_size=SIZE), min_size=1, max_size=6)
lrs = st.floats(1e-3, 1.0)


def _tree(flat):
    out, i = {}, 0
    for k, s in SHAPES.items():
        n = int(np.prod(s))
        out[k] = jnp.asarray(np.asarray(flat[i:i + n], float).reshape(s), jnp.float64)
        i += n
    return out


def _steps(tx, grads):
    """The updates of ``tx`` along the gradient stream ``grads`` (params fixed at zero)."""
    params = jax.tree_util.tree_map(jnp.zeros_like, grads[0])
    state, out = tx.init(params), []
    for g in grads:
        u, state = tx.update(g, state, params)
        out.append(u)
    return out


def _norm(x):
    return float(np.linalg.norm(np.ravel(x)))


PAIRS = {
    "adam<-sgd": (lambda lr: optax.adam(lr), lambda lr: optax.sgd(lr)),
    "sgd<-adam": (lambda lr: optax.sgd(lr), lambda lr: optax.adam(lr)),
    "momentum<-rmsprop": (lambda lr: optax.sgd(lr, momentum=0.9), lambda lr: optax.rmsprop(lr)),
}


@pytest.mark.parametrize("pair", list(PAIRS))
@given(stream=streams, lr=lrs)
def test_per_tensor_graft_has_m_norm_and_d_direction(pair, stream, lr):
    with jax.enable_x64(True):
        grads = [_tree(f) for f in stream]
        make_m, make_d = PAIRS[pair]
        graft = _steps(optim.graft(make_m(lr), make_d(lr), per_tensor=True), grads)
        mags, dirs = _steps(make_m(lr), grads), _steps(make_d(lr), grads)
        for u, um, ud in zip(graft, mags, dirs):
            for k in SHAPES:
                a, m, d = np.asarray(u[k]), np.asarray(um[k]), np.asarray(ud[k])
                assume(_norm(d) > 1e-8)
                assert _norm(a) == pytest.approx(_norm(m), rel=1e-10)
                if _norm(m) > 0:
                    np.testing.assert_allclose(a / _norm(a), d / _norm(d), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pair", list(PAIRS))
@given(stream=streams, lr=lrs)
def test_global_graft_has_m_norm_and_d_direction_over_the_pytree(pair, stream, lr):
    with jax.enable_x64(True):
        grads = [_tree(f) for f in stream]
        make_m, make_d = PAIRS[pair]
        graft = _steps(optim.graft(make_m(lr), make_d(lr), per_tensor=False), grads)
        mags, dirs = _steps(make_m(lr), grads), _steps(make_d(lr), grads)
        for u, um, ud in zip(graft, mags, dirs):
            nd = float(optim.tree_norm(ud))
            assume(nd > 1e-8)
            assert float(optim.tree_norm(u)) == pytest.approx(float(optim.tree_norm(um)), rel=1e-10)
            # the same scale on every array: Δ = c · Δ_D with one c > 0
            c = float(optim.tree_norm(um)) / nd
            for k in SHAPES:
                np.testing.assert_allclose(np.asarray(u[k]), c * np.asarray(ud[k]), rtol=1e-10, atol=1e-14)


def test_per_tensor_and_global_differ_on_several_arrays():
    """Guard: with two arrays the two granularities give different steps (tests above can fail)."""
    with jax.enable_x64(True):
        g = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([0.0, 100.0])}
        per = _steps(optim.graft(optax.adam(0.1), optax.sgd(0.1), per_tensor=True), [g])[0]
        glob = _steps(optim.graft(optax.adam(0.1), optax.sgd(0.1), per_tensor=False), [g])[0]
        assert abs(float(per["a"][0]) - float(glob["a"][0])) > 1e-3


@pytest.mark.parametrize("name, opts", [("sgd", {}), ("adam", {}), ("momentum", {}), ("rmsprop", {}),
                                        ("nsgd", {}), ("ogd", {})])
@pytest.mark.parametrize("per_tensor", [True, False])
@given(stream=streams, lr=lrs)
def test_grafting_an_optimizer_onto_itself_is_that_optimizer(name, opts, per_tensor, stream, lr):
    with jax.enable_x64(True):
        grads = [_tree(f) for f in stream]
        alone = _steps(optim.make(name, lr, **opts), grads)
        self_graft = _steps(optim.graft(optim.make(name, lr, **opts), optim.make(name, lr, **opts),
                                        per_tensor=per_tensor), grads)
        eps = 1e-16  # graft's default ε: Δ = ‖Δ‖/(‖Δ‖ + ε) · Δ, equal to Δ up to ε/‖Δ‖
        for u, v in zip(self_graft, alone):
            total = float(optim.tree_norm(v))
            for k in SHAPES:
                n = _norm(v[k]) if per_tensor else total
                assume(n > 1e-8)
                np.testing.assert_allclose(np.asarray(u[k]), np.asarray(v[k]), rtol=1e-13 + 2 * eps / n, atol=0)


@pytest.mark.parametrize("pair", list(PAIRS))
@given(stream=st.lists(st.lists(nonzero, min_size=5, max_size=5), min_size=1, max_size=6), lr=lrs)
def test_global_and_per_tensor_agree_on_a_single_tensor(pair, stream, lr):
    with jax.enable_x64(True):
        grads = [{"only": jnp.asarray(f, jnp.float64)} for f in stream]
        make_m, make_d = PAIRS[pair]
        a = _steps(optim.graft(make_m(lr), make_d(lr), per_tensor=True), grads)
        b = _steps(optim.graft(make_m(lr), make_d(lr), per_tensor=False), grads)
        for u, v in zip(a, b):
            np.testing.assert_allclose(np.asarray(u["only"]), np.asarray(v["only"]), rtol=1e-14, atol=0)


@pytest.mark.parametrize("per_tensor", [True, False])
@given(stream=streams, lr=lrs)
def test_ada_nsgda_is_adam_magnitude_on_the_negative_gradient_direction(per_tensor, stream, lr):
    """ada_nsgda: Δ = −‖Δ_Adam‖ · g/‖g‖ (per array, or over the pytree)."""
    with jax.enable_x64(True):
        grads = [_tree(f) for f in stream]
        ours = _steps(optim.make("ada_nsgda", lr, per_tensor=per_tensor), grads)
        adam = _steps(optax.adam(lr), grads)
        for u, ua, g in zip(ours, adam, grads):
            if per_tensor:
                for k in SHAPES:
                    expected = -_norm(ua[k]) * np.asarray(g[k]) / _norm(g[k])
                    np.testing.assert_allclose(np.asarray(u[k]), expected, rtol=1e-10, atol=1e-14)
            else:
                scale = float(optim.tree_norm(ua)) / float(optim.tree_norm(g))
                for k in SHAPES:
                    np.testing.assert_allclose(np.asarray(u[k]), -scale * np.asarray(g[k]), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("per_tensor", [True, False])
@given(stream=streams, lr=lrs)
def test_sgda_ada_is_sgd_magnitude_on_adams_direction(per_tensor, stream, lr):
    """sgda_ada: Δ = lr‖g‖ · Δ_Adam/‖Δ_Adam‖ (per array, or over the pytree)."""
    with jax.enable_x64(True):
        grads = [_tree(f) for f in stream]
        ours = _steps(optim.make("sgda_ada", lr, per_tensor=per_tensor), grads)
        adam = _steps(optax.adam(lr), grads)
        for u, ua, g in zip(ours, adam, grads):
            if per_tensor:
                for k in SHAPES:
                    assume(_norm(ua[k]) > 1e-8)
                    expected = lr * _norm(g[k]) * np.asarray(ua[k]) / _norm(ua[k])
                    np.testing.assert_allclose(np.asarray(u[k]), expected, rtol=1e-10, atol=1e-14)
            else:
                assume(float(optim.tree_norm(ua)) > 1e-8)
                scale = lr * float(optim.tree_norm(g)) / float(optim.tree_norm(ua))
                for k in SHAPES:
                    np.testing.assert_allclose(np.asarray(u[k]), scale * np.asarray(ua[k]), rtol=1e-10, atol=1e-14)


def test_presets_differ_from_adam_and_sgd():
    """Guard: the presets are neither parent (so the preset tests above can fail)."""
    with jax.enable_x64(True):
        grads = [_tree(np.linspace(-2, 3, SIZE) + i) for i in range(3)]
        a = _steps(optim.make("ada_nsgda", 0.1), grads)[-1]
        adam = _steps(optax.adam(0.1), grads)[-1]
        sgd = _steps(optax.sgd(0.1), grads)[-1]
        assert _norm(a["w"] - adam["w"]) > 1e-4 and _norm(a["w"] - sgd["w"]) > 1e-4


def test_zero_gradient_grafts_to_zero_step():
    with jax.enable_x64(True):
        g = {"w": jnp.zeros((2, 3)), "b": jnp.array([1.0, -2.0, 0.5])}
        for per_tensor in (True, False):
            u = _steps(optim.graft(optax.adam(0.1), optax.sgd(0.1), per_tensor=per_tensor), [g])[0]
            assert np.all(np.isfinite(np.asarray(u["w"]))) and _norm(u["w"]) == 0.0
            assert np.all(np.isfinite(np.asarray(u["b"])))
