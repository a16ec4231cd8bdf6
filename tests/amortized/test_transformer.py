"""Output validity, padding invariance, permutation equivariance, round trip and errors."""

import pytest
import torch

from amortized import DistributionTransformer, roll_forward
from amortized.tasks import LinearGaussian, LTIFilter, linear_predict
from probcirc import GaussianMixture, io


def _model(dim=2, k=3, obs_dim=2, seed=0):
    torch.manual_seed(seed)
    m = DistributionTransformer(dim, k, obs_dim, d_model=32, n_layers=2, n_heads=4)
    # Random (non-zero) head weights: an untrained model would return the prior and prove nothing.
    torch.nn.init.normal_(m.head.weight, std=0.3)
    torch.nn.init.normal_(m.head.bias, std=0.3)
    return m.eval()


def _problems(n=6, dim=2, k=3, gen=None):
    task = LinearGaussian(dim=dim, n_components=k, max_obs=5)
    return task.sample(n, gen).to(torch.float32)


def _assert_valid(post: GaussianMixture):
    assert bool(torch.isfinite(post.means).all()) and bool(torch.isfinite(post.scale_tril).all())
    assert torch.allclose(post.weights.sum(-1), torch.ones(post.batch_shape), atol=1e-5)
    assert bool((post.weights >= 0).all())
    _, info = torch.linalg.cholesky_ex(post.covariances.double())
    assert bool((info == 0).all()), "a posterior covariance is not positive definite"
    GaussianMixture.from_cholesky(post.logits, post.means, post.scale_tril, validate=True)


def test_output_is_a_valid_gmm(gen):
    p = _problems(gen=gen)
    _assert_valid(_model()(p.prior, p.observations, p.obs_mask))


@pytest.mark.parametrize("scale", [1e-4, 1e4])
def test_output_valid_from_extreme_inputs(scale):
    m = _model()
    k, d = 3, 2
    prior = GaussianMixture(
        torch.tensor([[1 - 2e-12, 1e-12, 1e-12]]).double(),
        torch.randn(1, k, d).double() * scale,
        (torch.eye(d) * scale**2).expand(1, k, d, d).double(),
    ).to(torch.float32)
    obs = torch.randn(1, 4, 2) * scale * 10
    post = m(prior, obs)
    _assert_valid(post)


def test_zero_observations(gen):
    m = _model()
    p = _problems(gen=gen)
    a = m(p.prior, None)
    b = m(p.prior, p.observations[:, :0], p.obs_mask[:, :0])
    c = m(p.prior, p.observations, torch.ones_like(p.obs_mask))
    _assert_valid(a)
    for other in (b, c):
        assert torch.allclose(a.means, other.means, atol=1e-5)
        assert torch.allclose(a.scale_tril, other.scale_tril, atol=1e-5)


def test_untrained_model_returns_the_prior(gen):
    m = DistributionTransformer(2, 3, 2, d_model=16, n_layers=1, n_heads=2)
    p = _problems(gen=gen)
    post = m(p.prior, p.observations, p.obs_mask)
    assert torch.allclose(post.weights, p.prior.weights, atol=1e-6)
    assert torch.allclose(post.means, p.prior.means, atol=1e-6)


def test_padding_invariance(gen):
    m = _model()
    p = _problems(gen=gen)
    base = m(p.prior, p.observations, p.obs_mask)
    # Extra masked slots holding garbage (even NaN) must change nothing.
    junk = torch.full((len(p), 3, 2), float("nan"))
    obs = torch.cat([p.observations, junk], 1)
    mask = torch.cat([p.obs_mask, torch.ones(len(p), 3, dtype=torch.bool)], 1)
    padded = m(p.prior, obs, mask)
    assert torch.allclose(base.logits, padded.logits, atol=1e-5)
    assert torch.allclose(base.means, padded.means, atol=1e-5)
    assert torch.allclose(base.scale_tril, padded.scale_tril, atol=1e-5)


def test_observation_order_does_not_matter(gen):
    m = _model()
    p = _problems(gen=gen)
    perm = torch.randperm(p.observations.shape[1])
    a = m(p.prior, p.observations, p.obs_mask)
    b = m(p.prior, p.observations[:, perm], p.obs_mask[:, perm])
    assert torch.allclose(a.means, b.means, atol=1e-5)


def test_component_permutation_equivariance(gen):
    m = _model()
    p = _problems(gen=gen)
    perm = torch.tensor([2, 0, 1])
    prior = p.prior
    permuted = GaussianMixture.from_cholesky(prior.logits[:, perm], prior.means[:, perm], prior.scale_tril[:, perm])
    a = m(p.prior, p.observations, p.obs_mask)
    b = m(permuted, p.observations, p.obs_mask)
    assert torch.allclose(a.logits[:, perm], b.logits, atol=1e-5)
    assert torch.allclose(a.means[:, perm], b.means, atol=1e-5)
    assert torch.allclose(a.scale_tril[:, perm], b.scale_tril, atol=1e-5)


def test_batching_matches_one_at_a_time(gen):
    m = _model()
    p = _problems(gen=gen)
    batched = m(p.prior, p.observations, p.obs_mask)
    for i in range(len(p)):
        one = p[i]
        single = m(one.prior, one.observations, one.obs_mask)
        assert torch.allclose(single.means, batched.means[i : i + 1], atol=1e-5)
    # An unbatched prior is shared by a batch of data sets.
    shared = GaussianMixture.from_cholesky(p.prior.logits[0], p.prior.means[0], p.prior.scale_tril[0])
    out = m(shared, p.observations, p.obs_mask)
    assert tuple(out.batch_shape) == (len(p),)
    assert torch.allclose(out.means[0], batched.means[0], atol=1e-5)


def test_float64_prior_gives_float64_posterior(gen):
    p = _problems(gen=gen)
    post = _model()(p.prior.to(torch.float64), p.observations.double(), p.obs_mask)
    assert post.means.dtype == torch.float64


def test_roll_forward_chains_posteriors(gen):
    task = LTIFilter(n_components=2)
    m = _model(dim=1, k=2, obs_dim=3)
    seq = task.simulate_sequence(4, 3, gen)
    prior = seq["prior"].to(torch.float32)
    obs, mask = seq["observations"].float(), seq["obs_mask"]
    step = lambda g: linear_predict(g, task.a, task.q)  # noqa: E731
    posts = roll_forward(m, prior, obs, mask, transition=step)
    manual = m(step(m(prior, obs[0], mask[0])), obs[1], mask[1])
    assert len(posts) == 4
    assert torch.allclose(posts[1].means, manual.means, atol=1e-6)


def test_save_load_round_trip(tmp_path, gen):
    m = _model()
    m.task, m.task_config = "linear_gaussian", {"dim": 2, "n_components": 3}
    path = tmp_path / "m.h5"
    io.save(m, path)
    back = io.load(path, kind=DistributionTransformer)
    assert back.config() == m.config()
    p = _problems(gen=gen)
    a, b = m(p.prior, p.observations, p.obs_mask), back(p.prior, p.observations, p.obs_mask)
    assert torch.equal(a.means, b.means) and torch.equal(a.scale_tril, b.scale_tril) and torch.equal(a.logits, b.logits)
    with pytest.raises(FileExistsError):
        io.save(m, path)


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda p: (
                GaussianMixture(torch.ones(1, 1), torch.zeros(1, 1, 3), torch.eye(3)[None, None]),
                p.observations,
                p.obs_mask,
            ),
            "dimension",
        ),
        (
            lambda p: (
                GaussianMixture(torch.full((1, 2), 0.5), torch.zeros(1, 2, 2), torch.eye(2).expand(1, 2, 2, 2)),
                p.observations[:1],
                p.obs_mask[:1],
            ),
            "components",
        ),
        (lambda p: (p.prior, p.observations[..., :1], p.obs_mask), "obs_dim"),
        (lambda p: (p.prior, p.observations, p.obs_mask[:, :-1]), "obs_mask"),
        (lambda p: (p.prior, p.observations, p.obs_mask.float()), "bool"),
        (lambda p: (p.prior, p.observations[:2], p.obs_mask[:2]), "batch shape"),
        (lambda p: (p.prior, p.observations.masked_fill(~p.obs_mask[..., None], float("inf")), p.obs_mask), "finite"),
        (lambda p: (p.prior.means, p.observations, p.obs_mask), "GaussianMixture"),
    ],
)
def test_bad_input_errors(make, match, gen):
    p = _problems(gen=gen)
    p.obs_mask[:, 0] = False
    with pytest.raises((ValueError, TypeError), match=match):
        _model()(*make(p))


def test_invalid_covariance_is_refused_by_the_prior():
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]))


@pytest.mark.parametrize("kwargs", [dict(d_model=30, n_heads=4), dict(n_layers=0), dict(dim=0)])
def test_bad_construction(kwargs):
    args = dict(dim=2, n_components=3, obs_dim=2, d_model=32, n_layers=1, n_heads=4) | kwargs
    with pytest.raises(ValueError):
        DistributionTransformer(**args)


def test_lean_decoder_layer_matches_torch_module(gen):
    """Our dispatch-free layer computes exactly what nn.TransformerDecoderLayer computes with the same weights."""
    from amortized.transformer import _decoder_layer, _layer_weights

    layer = torch.nn.TransformerDecoderLayer(
        16, 4, 32, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    for p in layer.parameters():  # away from the zero-bias initialisation, so every term matters
        torch.nn.init.normal_(p, std=0.3, generator=gen)
    x, mem = torch.randn(3, 5, 16, generator=gen), torch.randn(3, 7, 16, generator=gen)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 3:], pad[2, 1:] = True, True
    want = layer(x, mem, memory_key_padding_mask=pad)
    got = _decoder_layer(_layer_weights(layer), x, mem, pad.logical_not()[:, None, None, :])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_cached_weights_follow_parameter_updates(gen):
    """Inference reuses gathered weights; in-place updates, load_state_dict and dtype changes must still show."""
    m = _model()
    p = _problems(gen=gen)
    with torch.inference_mode():
        before = m(p.prior, p.observations, p.obs_mask).means
    with torch.no_grad():
        m.head.bias.add_(0.5)  # in place, as an optimiser step does
    with torch.inference_mode():
        after = m(p.prior, p.observations, p.obs_mask).means
    assert not torch.allclose(before, after)
    fresh = _model(seed=1)
    with torch.inference_mode():
        fresh(p.prior, p.observations, p.obs_mask)  # caches fresh's own weights
    fresh.load_state_dict(m.state_dict())  # copies in place into the cached tensors
    with torch.inference_mode():
        torch.testing.assert_close(fresh(p.prior, p.observations, p.obs_mask).means, after)
    m64 = m.double()
    with torch.inference_mode():
        out = m64(p.prior.to(torch.float64), p.observations.double(), p.obs_mask)
    torch.testing.assert_close(out.means.float(), after, rtol=1e-4, atol=1e-4)


def _prior64(batch: int, mean: float = 0.0, scale: float = 1.0, k: int = 3, d: int = 2) -> GaussianMixture:
    tril = (scale * torch.eye(d, dtype=torch.float64)).expand(batch, k, d, d)
    return GaussianMixture.from_cholesky(
        torch.zeros(batch, k, dtype=torch.float64), torch.full((batch, k, d), mean, dtype=torch.float64), tril
    )


@pytest.mark.parametrize("n_obs", [0, 4])
def test_empty_batch_gives_an_empty_posterior_batch(n_obs):
    m = _model()
    post = m(_prior64(0).to(torch.float32), torch.zeros(0, n_obs, 2), torch.zeros(0, n_obs, dtype=torch.bool))
    assert tuple(post.batch_shape) == (0,) and tuple(post.means.shape) == (0, 3, 2)
    assert tuple(post.scale_tril.shape) == (0, 3, 2, 2) and tuple(post.logits.shape) == (0, 3)
    # a batch of zero data sets sharing one prior is empty too
    shared = GaussianMixture.from_cholesky(torch.zeros(3), torch.zeros(3, 2), torch.eye(2).expand(3, 2, 2))
    assert tuple(m(shared, torch.zeros(0, n_obs, 2)).batch_shape) == (0,)


@pytest.mark.parametrize("where", ["observations", "prior means", "prior scales"])
def test_extreme_inputs_raise_instead_of_returning_nan(where):
    from probmod.errors import NumericalError

    m = _model()
    obs = torch.zeros(1, 4, 2, dtype=torch.float64)
    prior = _prior64(1)
    if where == "observations":
        obs = torch.full_like(obs, 1e200)
    elif where == "prior means":
        prior = _prior64(1, mean=1e200)
    else:
        # The network reads log-scales, so only the update of the mean, L·δ, can overflow: force a large δ.
        prior = _prior64(1, scale=1e290)
        with torch.no_grad():
            m.head.bias[1:3] = 1e30
    with pytest.raises(NumericalError, match="rescale"):
        m(prior, obs)


def test_huge_but_representable_prior_scales_give_a_valid_posterior():
    post = _model()(_prior64(1, scale=1e150), torch.zeros(1, 4, 2, dtype=torch.float64))
    assert bool(torch.isfinite(post.means).all()) and bool(torch.isfinite(post.covariances).all())
    assert bool((torch.diagonal(post.scale_tril, dim1=-2, dim2=-1) > 0).all())
    torch.testing.assert_close(post.weights.sum(-1), torch.ones(1, dtype=torch.float64))


def test_nan_observation_is_a_usage_error_unless_masked(gen):
    from probmod.errors import UsageError

    m = _model()
    p = _problems(gen=gen)
    p.obs_mask[:, 0] = False
    nan = p.observations.clone()
    nan[0, 0, 1] = float("nan")
    with pytest.raises(UsageError, match="finite"):
        m(p.prior, nan, p.obs_mask)
    masked = p.obs_mask.clone()
    masked[0, 0] = True
    out = m(p.prior, nan, masked)
    assert bool(torch.isfinite(out.means).all())
