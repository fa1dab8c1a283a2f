"""Masks, masked optimizers, early-bird detection and the IMP driver (overparam.prune)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from overparam import prune
from overparam.errors import ConfigError
from overparam.games.mean_matching import MeanMatching, MeanMatchingSpec
from overparam.theory.masked import masked_jjt, masked_jjt_mean_matching, masked_predicted_rates
from overparam.theory.spectral import predicted_rates


def _params(key, shapes=((6, 4), (5, 3, 2))):
    ks = jax.random.split(key, len(shapes) + 1)
    tree = {f"l{i}": {"kernel": jax.random.normal(k, s), "bias": jnp.ones(s[-1])} for i, (k, s) in enumerate(zip(ks, shapes))}
    tree["bn"] = {"scale": jnp.ones(4), "mean": jnp.zeros(4)}
    return tree


# -- magnitude masks -------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.floats(0.05, 0.6), rounds=st.integers(1, 8),
       scope=st.sampled_from(prune.SCOPES), rows=st.integers(1, 9), cols=st.integers(1, 7))
def test_iterated_magnitude_pruning_hits_exact_sparsity_and_prunes_the_smallest(seed, p, rounds, scope, rows, cols):
    params = _params(jax.random.PRNGKey(seed), ((rows, cols), (3, cols, 2)))
    cfg = prune.IMPConfig(rounds=rounds, prune_fraction=p, scope=scope)
    mask = None
    for r in range(1, rounds + 1):
        target = cfg.target_sparsity(r)
        assert target == pytest.approx(1 - (1 - p) ** r)
        new = prune.magnitude_mask(params, target, scope, current=mask)
        counts = prune.leaf_counts(new)
        assert set(counts) == {"l0/kernel", "l1/kernel"}       # biases, BN scale/mean never pruned
        groups = [list(counts.values())] if scope == "global" else [[c] for c in counts.values()]
        for g in groups:
            kept, total = sum(k for k, _ in g), sum(n for _, n in g)
            assert abs(kept - (1 - p) ** r * total) <= 0.5 + 1e-9   # exact to one entry
        # nested, and the survivors are the largest |w| among the previous survivors (per group)
        for name in ("l0", "l1"):
            m_new = np.asarray(new[name]["kernel"])
            if mask is not None:
                assert not np.any(m_new & ~np.asarray(mask[name]["kernel"]))
        def vals(tree_mask, flag):
            return np.concatenate([np.abs(np.asarray(params[n]["kernel"]))[np.asarray(tree_mask[n]["kernel"]) == flag]
                                   for n in ("l0", "l1")])
        if scope == "global":
            prev = new if mask is None else mask
            kept_v = vals(new, True)
            dropped = np.concatenate([np.abs(np.asarray(params[n]["kernel"]))[
                np.asarray(prev[n]["kernel"]) & ~np.asarray(new[n]["kernel"])] for n in ("l0", "l1")])
            if kept_v.size and dropped.size:
                assert kept_v.min() >= dropped.max()
        mask = new


def test_ties_are_broken_by_index_deterministically():
    params = {"w": {"kernel": jnp.ones((2, 5))}}
    m = prune.magnitude_mask(params, 0.3)
    assert np.asarray(m["w"]["kernel"]).ravel().tolist() == [True] * 7 + [False] * 3
    # a larger entry survives ahead of earlier ties; repeated calls agree
    w = np.ones((2, 5), np.float32)
    w[1, 4] = 2.0
    m2 = prune.magnitude_mask({"w": {"kernel": jnp.asarray(w)}}, 0.5)
    assert np.asarray(m2["w"]["kernel"]).ravel().tolist() == [True] * 4 + [False] * 5 + [True]
    m3 = prune.magnitude_mask({"w": {"kernel": jnp.asarray(w)}}, 0.5)
    assert np.array_equal(m2["w"]["kernel"], m3["w"]["kernel"])


def test_layer_scope_differs_from_global_on_unequal_layers():
    params = {"a": {"kernel": 10.0 * jnp.ones((4, 5))}, "b": {"kernel": jnp.arange(1.0, 21.0).reshape(4, 5) / 10}}
    g = prune.leaf_counts(prune.magnitude_mask(params, 0.5, "global"))
    lay = prune.magnitude_mask(params, 0.5, "layer")
    assert prune.leaf_counts(lay) == {"a/kernel": (10, 20), "b/kernel": (10, 20)}
    assert g == {"a/kernel": (20, 20), "b/kernel": (0, 20)}      # one threshold: every entry of b is below a's
    assert np.asarray(lay["b"]["kernel"]).ravel().tolist() == [False] * 10 + [True] * 10
    assert np.asarray(lay["a"]["kernel"]).ravel().tolist() == [True] * 10 + [False] * 10   # ties: lower index


def test_default_prunable_selects_kernels_only():
    tree = {"params": {"Conv_0": {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.ones(4)},
                       "BatchNorm_0": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
                       "Dense_0": {"kernel": jnp.ones((4, 2))}},
            "batch_stats": {"BatchNorm_0": {"mean": jnp.zeros(4), "var": jnp.ones(4)},
                            "SN": {"u": jnp.ones((1, 4)), "sigma": jnp.ones(())}}}
    assert set(prune.leaf_counts(prune.dense_mask(tree))) == {"params/Conv_0/kernel", "params/Dense_0/kernel"}
    only = prune.dense_mask(tree, prune.matching("params/Dense_*"))
    assert set(prune.leaf_counts(only)) == {"params/Dense_0/kernel"}


# -- random masks ----------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), s=st.floats(0.0, 0.95), scope=st.sampled_from(prune.SCOPES))
def test_random_mask_has_the_same_counts_in_every_leaf(seed, s, scope):
    params = _params(jax.random.PRNGKey(seed))
    m = prune.magnitude_mask(params, s, scope)
    r = prune.random_mask(jax.random.PRNGKey(seed + 1), m)
    assert prune.leaf_counts(r) == prune.leaf_counts(m)
    assert r["l0"]["bias"] is None and r["bn"]["scale"] is None
    r2 = prune.random_mask(jax.random.PRNGKey(seed + 1), m)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(r), jax.tree_util.tree_leaves(r2)))


def test_random_mask_is_uniform_over_positions():
    like = {"w": np.zeros((50,), bool)}
    like["w"][:10] = True
    hits = np.mean([np.asarray(prune.random_mask(jax.random.PRNGKey(i), like)["w"]) for i in range(400)], axis=0)
    assert np.allclose(hits, 0.2, atol=0.08)          # each position survives with probability 10/50


# -- masked optimizer ------------------------------------------------------------------------
def _regression():
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(7), 3)
    X = jax.random.normal(kx, (32, 6))
    Y = jax.random.normal(ky, (32, 3))
    params = {"dense": {"kernel": 0.3 * jax.random.normal(kp, (6, 3)), "bias": jnp.zeros(3)}}
    loss = lambda p: jnp.mean((X @ p["dense"]["kernel"] + p["dense"]["bias"] - Y) ** 2)
    return params, loss


def _scan_train(opt, loss, params, steps):
    def body(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    (p, s), _ = jax.jit(lambda p, s: jax.lax.scan(body, (p, s), None, length=steps))(params, opt.init(params))
    return p, s


@pytest.mark.parametrize("inner", [optax.adam(1e-2), optax.adamw(1e-2, weight_decay=0.1), optax.sgd(0.05, momentum=0.9)])
def test_masked_optimizer_keeps_pruned_entries_exactly_zero(inner):
    params, loss = _regression()
    mask = prune.magnitude_mask(params, 0.5)
    start = prune.apply_mask(params, mask)
    p, s = _scan_train(prune.masked(inner, mask), loss, start, 300)
    M = np.asarray(mask["dense"]["kernel"])
    W, W0 = np.asarray(p["dense"]["kernel"]), np.asarray(start["dense"]["kernel"])
    assert np.all(W[~M] == 0.0)                          # exactly zero, not small
    assert np.all(np.abs(W[M] - W0[M]) > 1e-4)           # every survivor moved
    assert np.any(np.asarray(p["dense"]["bias"]) != 0)   # unpruned leaf trains
    for leaf in jax.tree_util.tree_leaves(s.inner):      # Adam's mu / nu, momentum trace
        if np.shape(leaf) == M.shape:
            assert np.all(np.asarray(leaf)[~M] == 0.0)
    assert float(loss(p)) < float(loss(start))


def test_dense_mask_gives_the_dense_run_exactly():
    params, loss = _regression()
    dense = prune.dense_mask(params)
    # op by op (no XLA fusion): M ⊙ inner(M ⊙ g) with M = 1 is the inner optimizer, bit for bit
    with jax.disable_jit():
        p1, s1 = _scan_train(prune.masked(optax.adam(1e-2), dense), loss, params, 30)
        p2, s2 = _scan_train(optax.adam(1e-2), loss, params, 30)
    for a, b in zip(jax.tree_util.tree_leaves((p1, s1.inner)), jax.tree_util.tree_leaves((p2, s2))):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # compiled, the two programs fuse differently: equal to float32 rounding
    p1, _ = _scan_train(prune.masked(optax.adam(1e-2), dense), loss, params, 200)
    p2, _ = _scan_train(optax.adam(1e-2), loss, params, 200)
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_mask_is_data_one_compile_serves_every_mask():
    params, loss = _regression()
    inner = optax.adam(1e-2)
    traces = []

    @jax.jit
    def step(p, s):
        traces.append(1)
        u, s = prune.masked(inner, None).update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    for sp in (0.2, 0.5, 0.8):
        m = prune.magnitude_mask(params, sp)
        p, s = prune.apply_mask(params, m), prune.masked(inner, m).init(params)
        p, s = step(p, s)
        assert np.all(np.asarray(p["dense"]["kernel"])[~np.asarray(m["dense"]["kernel"])] == 0)
    assert len(traces) == 1


# -- distances and early-bird ------------------------------------------------------------------
def _flip(mask, idx):
    m = np.array(mask["w"])
    m[list(idx)] = ~m[list(idx)]
    return {"w": m, "b": None}


def test_mask_distance_is_the_normalized_hamming_distance():
    a = {"w": np.ones(100, bool), "b": None}
    assert prune.mask_distance(a, a) == 0.0
    assert prune.mask_distance(a, _flip(a, range(7))) == pytest.approx(0.07)
    c = {"w": np.ones((4, 5), bool), "v": np.zeros(5, bool)}
    d = {"w": np.zeros((4, 5), bool), "v": np.zeros(5, bool)}
    assert prune.mask_distance(c, d) == pytest.approx(20 / 25)


def test_early_bird_fires_exactly_when_the_last_five_masks_agree():
    eb = prune.EarlyBird(queue=5, eps=0.1)
    base = {"w": np.ones(100, bool), "b": None}
    # epochs 0..3: masks far apart (30 % flips); then five masks within 5 % of each other
    seq = [_flip(base, range(30 * (i % 2), 30 * (i % 2) + 30)) for i in range(4)]
    seq += [_flip(base, range(j)) for j in (0, 2, 4, 1, 3)]
    s, fired = eb.init(), []
    for m in seq:
        s = eb.update(s, m)
        fired.append(s.fired)
    assert fired == [False] * 8 + [True]
    assert len(s.distances) == 4 and max(s.distances) <= 0.1 and s.epoch == 9


def test_early_bird_does_not_fire_when_one_old_mask_is_far():
    eb = prune.EarlyBird(queue=5, eps=0.1)
    base = {"w": np.ones(100, bool)}
    seq = [_flip(base, range(50, 61))] + [_flip(base, range(j)) for j in (0, 1, 2, 3)]  # oldest 14 % away
    s = eb.init()
    for m in [{"w": x["w"]} for x in seq]:
        s = eb.update(s, m)
    assert not s.fired and s.distances == pytest.approx((0.14, 0.03, 0.02, 0.01))
    s = eb.update(s, {"w": base["w"]})                   # the far one leaves the queue
    assert s.fired


def test_early_bird_on_channel_masks_of_batchnorm_scales():
    eb = prune.EarlyBird(queue=3, eps=0.0)
    gammas = {"bn1": {"scale": jnp.asarray([0.1, 2.0, 0.3, 1.0])}, "bn2": {"scale": jnp.asarray([5.0, 0.01])},
              "conv": {"kernel": jnp.ones((3, 3, 2, 4))}}
    cm = prune.channel_mask(gammas, 0.5)
    assert np.asarray(cm["bn1"]["scale"]).tolist() == [False, True, False, True]
    assert np.asarray(cm["bn2"]["scale"]).tolist() == [True, False] and cm["conv"]["kernel"] is None
    s = eb.init()
    for scale in (1.0, 1.5, 0.7):                        # rescaling γ keeps the channel ranking
        s = eb.update(s, prune.channel_mask(jax.tree_util.tree_map(lambda x: scale * x, gammas), 0.5))
    assert s.fired
    # per-channel kernel norms: channel c of a flax kernel is the last axis
    k = {"conv": {"kernel": jnp.arange(24.0).reshape(1, 1, 6, 4)}}
    sc = prune.channel_scores(k, select=prune.matching("*kernel"))
    assert np.allclose(sc["conv"]["kernel"], np.abs(np.arange(24.0).reshape(6, 4)).sum(0))


# -- masked Jacobian (theory) ----------------------------------------------------------------
def test_masked_jacobian_closed_form_matches_autodiff_and_finite_differences():
    with jax.enable_x64(True):
        spec = MeanMatchingSpec(m=4, d=3, k=12, n=9, phi="tanh")
        game = MeanMatching.create(spec, jax.random.PRNGKey(1), np.zeros((2, 4)))
        gen, _ = game.init(jax.random.PRNGKey(2))
        mask = {"W": np.asarray(jax.random.bernoulli(jax.random.PRNGKey(3), 0.4, (12, 3)))}
        A = np.asarray(masked_jjt(game.mean_map, gen, mask))
        B = np.asarray(masked_jjt_mean_matching(game, gen, mask))
        assert np.allclose(A, B, rtol=1e-12, atol=1e-14)
        # central differences of W ↦ f(W ⊙ M) over the surviving coordinates only
        Wm = np.where(mask["W"], np.asarray(gen["W"]), 0.0)
        fj = jax.jit(lambda W: game.mean_map({"W": jnp.where(mask["W"], W, 0.0)}))
        f = lambda W: np.asarray(fj(jnp.asarray(W)))
        cols, h = [], 1e-6
        for i, j in zip(*np.nonzero(mask["W"])):
            e = np.zeros_like(Wm)
            e[i, j] = h
            cols.append((f(Wm + e) - f(Wm - e)) / (2 * h))
        J = np.stack(cols, 1)
        assert np.allclose(J @ J.T, B, rtol=1e-6, atol=1e-9)
        # the all-True mask gives the unmasked closed form; a masked row is a dead unit
        full = np.asarray(masked_jjt_mean_matching(game, gen, {"W": np.ones((12, 3), bool)}))
        assert np.allclose(full, np.asarray(game.jjt_closed_form(gen)), rtol=1e-12)
        few = np.zeros((12, 3), bool)
        few[:3, 0] = True                                # 3 live units < m = 4: singular
        lam = np.linalg.eigvalsh(np.asarray(masked_jjt_mean_matching(game, gen, {"W": few})))
        assert lam[0] < 1e-14 * lam[-1] + 1e-16
        rates = masked_predicted_rates(B, 0.5, 1.0)
        assert rates == pytest.approx(predicted_rates(B, 0.5, 1.0), rel=1e-12)


# -- IMP driver ------------------------------------------------------------------------------
def _imp_setup(rewind_step=0, members=None):
    params, loss = _regression()
    inner = optax.adam(2e-2)
    steps = 40

    @jax.jit
    def _train(p, mask, opt_state):
        opt = prune.masked(inner, mask)

        def body(carry, _):
            q, s = carry
            u, s = opt.update(jax.grad(loss)(q), s, q)
            return (optax.apply_updates(q, u), s), q

        (q, s), traj = jax.lax.scan(body, (p, opt_state), None, length=steps)
        rewind = jax.tree_util.tree_map(lambda t: t[rewind_step], traj)  # params at step rewind_step
        return q, rewind, loss(q)

    calls = []

    def train(p, mask, opt_state):
        calls.append(opt_state)
        q, rw, l = _train(p, mask, opt_state)
        return prune.TrainOutcome(jax.device_get(q), jax.device_get(rw), float(l))

    init_opt = lambda p, mask: prune.masked(inner, mask).init(p)
    fresh = {"dense": {"kernel": 0.3 * jax.random.normal(jax.random.PRNGKey(99), (6, 3)), "bias": jnp.zeros(3)}}
    return params, train, init_opt, fresh, calls


def _same(a, b):
    la, da = jax.tree_util.tree_flatten(a, is_leaf=lambda x: x is None)
    lb, db = jax.tree_util.tree_flatten(b, is_leaf=lambda x: x is None)
    return da == db and all((x is None and y is None) or (x is not None and y is not None and np.array_equal(
        np.asarray(x), np.asarray(y)) and np.asarray(x).dtype == np.asarray(y).dtype) for x, y in zip(la, lb))


def test_imp_rewinds_bit_for_bit_and_resets_the_optimizer():
    params0, train, init_opt, fresh, calls = _imp_setup()
    cfg = prune.IMPConfig(rounds=3, prune_fraction=0.3)
    imp = prune.IMP(cfg, train, init_opt, fresh=fresh)
    state = imp.init(params0)
    seen = []
    state = imp.run(params0, on_round=lambda s, runs: seen.append(runs))
    assert state.round == 4 and [h["round"] for h in state.history] == [0, 1, 2, 3]
    assert _same(state.rewind, jax.device_get(params0))          # rewind point = θ_0 exactly
    N = 18
    for r, runs in enumerate(seen):
        assert set(runs) == ({"ticket"} if r == 0 else {"ticket", "random", "reinit"})
        t = runs["ticket"]
        assert _same(t.start, prune.apply_mask(params0, t.mask))  # survivors rewound bit for bit
        assert prune.leaf_counts(t.mask)["dense/kernel"][0] == round(0.7 ** r * N)
        if r:
            assert _same(runs["random"].start, prune.apply_mask(params0, runs["random"].mask))
            assert _same(runs["reinit"].start, prune.apply_mask(fresh, t.mask))
            assert prune.leaf_counts(runs["random"].mask) == prune.leaf_counts(t.mask)
            assert state.history[r]["sparsity"] == pytest.approx(1 - round(0.7 ** r * N) / N)
    # every run started from a fresh optimizer state (step count 0, zero moments)
    assert len(calls) == 1 + 3 * 3
    for s in calls:
        adam = s.inner[0]
        assert int(adam.count) == 0 and all(np.all(np.asarray(x) == 0) for x in jax.tree_util.tree_leaves(adam.mu))


def test_late_rewinding_uses_the_dense_runs_step_k():
    params0, train, init_opt, fresh, _ = _imp_setup(rewind_step=10)
    imp = prune.IMP(prune.IMPConfig(rounds=2, arms=("ticket",)), train, init_opt)
    runs0 = []
    state = imp.run(params0, on_round=lambda s, runs: runs0.append(runs))
    assert set(runs0[1]) == {"ticket"}
    assert not _same(state.rewind, jax.device_get(params0))
    assert _same(state.rewind, runs0[0]["ticket"].outcome.rewind_point)
    assert _same(runs0[2]["ticket"].start, prune.apply_mask(state.rewind, runs0[2]["ticket"].mask))


@pytest.mark.parametrize("via", ["npz", "json"])
def test_imp_resume_after_an_interrupted_round_equals_the_uninterrupted_run(tmp_path, via):
    params0, train, init_opt, fresh, _ = _imp_setup()
    cfg = prune.IMPConfig(rounds=3, prune_fraction=0.25, seed=5)
    full_runs = []
    full = prune.IMP(cfg, train, init_opt, fresh=fresh).run(params0, on_round=lambda s, r: full_runs.append(r))

    class Killed(Exception):
        pass

    path = tmp_path / "imp.npz"
    blob = {}

    def checkpoint_then_die(s, runs):
        if via == "npz":
            prune.save_state(path, s, params0)
        else:
            blob["state"] = prune.state_to_jsonable(s, params0)
        if s.round == 2:
            raise Killed

    with pytest.raises(Killed):
        prune.IMP(cfg, train, init_opt, fresh=fresh).run(params0, on_round=checkpoint_then_die)
    saved = prune.load_state(path, params0) if via == "npz" else prune.state_from_jsonable(blob["state"], params0)
    assert saved.round == 2
    rest = []
    resumed = prune.IMP(cfg, train, init_opt, fresh=fresh).run(params0, state=saved, on_round=lambda s, r: rest.append(r))
    for name in ("mask", "rewind", "trained"):
        assert _same(getattr(resumed, name), getattr(full, name)), name
    assert resumed.history == full.history
    for a, b in zip(rest, full_runs[2:]):
        for arm in a:
            assert _same(a[arm].mask, b[arm].mask) and _same(a[arm].outcome.params, b[arm].outcome.params)


def test_imp_with_members_prunes_each_network_separately():
    params0, train, init_opt, fresh, _ = _imp_setup()
    two = jax.tree_util.tree_map(lambda x: jnp.stack([x, -2.0 * x[::-1]]), params0)
    masks = []

    def train2(p, mask, opt_state):
        return prune.TrainOutcome(jax.device_get(p), jax.device_get(p), None)   # identity trainer

    imp = prune.IMP(prune.IMPConfig(rounds=1, prune_fraction=0.5, arms=("ticket",)), train2,
                    lambda p, m: None, members=2)
    imp.run(two, on_round=lambda s, runs: masks.append(runs["ticket"].mask))
    m = np.asarray(masks[1]["dense"]["kernel"])
    assert m.shape == (2, 6, 3) and m[0].sum() == m[1].sum() == 9
    for i in range(2):
        single = prune.magnitude_mask(jax.tree_util.tree_map(lambda x: x[i], two), 0.5)
        assert np.array_equal(m[i], single["dense"]["kernel"])


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-0.1, 1.0, 20.0, float("nan"), "x"])
def test_sparsity_outside_unit_interval_is_one_config_error(bad):
    params, _ = _regression()
    with pytest.raises(ConfigError, match="sparsity"):
        prune.magnitude_mask(params, bad)


def test_bad_scope_shapes_and_structures_are_config_errors():
    params, _ = _regression()
    with pytest.raises(ConfigError, match="scope"):
        prune.magnitude_mask(params, 0.5, scope="row")
    wrong = {"dense": {"kernel": np.ones((3, 6), bool), "bias": None}}
    with pytest.raises(ConfigError, match="shape"):
        prune.apply_mask(params, wrong)
    with pytest.raises(ConfigError, match="shape"):
        prune.masked(optax.adam(1e-3), wrong).init(params)
    with pytest.raises(ConfigError, match="shape"):
        prune.magnitude_mask(params, 0.5, current=wrong)
    with pytest.raises(ConfigError, match="structure"):
        prune.apply_mask(params, {"dense": {"kernel": np.ones((6, 3), bool)}})
    with pytest.raises(ConfigError, match="boolean"):
        prune.apply_mask(params, {"dense": {"kernel": np.ones((6, 3)), "bias": None}})
    m = prune.magnitude_mask(params, 0.5)
    with pytest.raises(ConfigError, match="already prunes"):
        prune.magnitude_mask(params, 0.2, current=m)
    with pytest.raises(ConfigError, match="prune_fraction"):
        prune.IMPConfig(prune_fraction=20)
    with pytest.raises(ConfigError, match="no prunable"):
        prune.magnitude_mask({"b": jnp.ones(3)}, 0.5)
    with pytest.raises(ConfigError):
        prune.EarlyBird(queue=1)
