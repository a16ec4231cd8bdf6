"""Triton kernels vs the torch path, on the CPU through the Triton interpreter, or on a GPU.

``PROBCIRC_KERNEL_DEVICE=cuda`` runs the same tests compiled on the GPU, both paths on the card
(benchmarks/pc_gpu_device.sh does); the default, ``cpu``, uses the interpreter. Every test draws
fresh random shapes and values (the seed is in the failure message), poisons the buffers a kernel
should fill with NaN, and compares in float32: log-values within 1e-5 relative (to max(1, |ref|)),
-inf exactly where the torch path has -inf.
"""

from __future__ import annotations

import os

DEVICE = os.environ.get("PROBCIRC_KERNEL_DEVICE", "cpu")
ON_GPU = DEVICE != "cpu"
# The interpreter must be chosen before Triton is imported (restored after this module).
_PREVIOUS_INTERPRET = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "0" if ON_GPU else "1"

import random  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import probcirc  # noqa: E402
from probcirc import backend  # noqa: E402
from probcirc.inputs import Categorical  # noqa: E402
from probcirc.layers import InputLayer, ProductLayer, SumLayer  # noqa: E402

pytestmark = [pytest.mark.triton, pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")]

try:
    from probcirc import kernels

    kernels.require_triton()
    from probcirc.kernels import _common

    if ON_GPU and not torch.cuda.is_available():
        raise RuntimeError(f"PROBCIRC_KERNEL_DEVICE={DEVICE} but torch sees no CUDA device")
except Exception as exc:
    if ON_GPU:  # asked for the GPU: a skip would read as a pass
        raise  # pragma: no cover - depends on the environment
    if _PREVIOUS_INTERPRET is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _PREVIOUS_INTERPRET
    pytest.skip(f"Triton cannot run in interpreter mode here: {exc}", allow_module_level=True)

INF = float("inf")
RTOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _restore_interpret_flag():
    yield
    if _PREVIOUS_INTERPRET is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _PREVIOUS_INTERPRET


@pytest.fixture
def rng(request):
    seed = random.SystemRandom().randrange(2**31)
    request.node.user_properties.append(("seed", seed))
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    return g


@pytest.fixture(autouse=True)
def on_device():
    """Tensors the tests make land on DEVICE (the library's own say where they go)."""
    with torch.device(DEVICE):
        yield


def compiled_on_device(root_fn, seed: int, zero_fraction: float = 0.0):
    """A float32 circuit built and compiled on the CPU (symbolic structures are host objects), then moved."""
    from .circuits import randomize

    with torch.device("cpu"):
        pc = probcirc.compile(randomize(root_fn(), seed % 1000, zero_fraction), dtype=torch.float32)
    return pc.to(DEVICE)


@pytest.fixture(autouse=True)
def poisoned():
    """Kernel-allocated outputs start as NaN; the backend is restored afterwards."""
    old = _common.POISON
    _common.POISON = True
    yield
    _common.POISON = old
    probcirc.set_backend("auto")


def run(name, fn, *args):
    probcirc.set_backend(name)
    try:
        return fn(*args)
    finally:
        probcirc.set_backend("auto")


def close(got, ref, what, seed, rtol=RTOL):
    """Equal -inf patterns, no NaN, and |got - ref| <= rtol · max(1, |ref|) elsewhere."""
    assert got.shape == ref.shape, what
    assert not torch.isnan(ref).any(), f"{what}: the torch reference has NaN (a bad test case), seed {seed}"
    assert not torch.isnan(got).any(), f"{what}: NaN (unwritten or invalid) elements, seed {seed}"
    assert torch.equal(torch.isinf(got), torch.isinf(ref)), f"{what}: -inf pattern differs, seed {seed}"
    fin = torch.isfinite(ref)
    err = ((got[fin] - ref[fin]).abs() / ref[fin].abs().clamp_min(1.0)).max() if fin.any() else torch.tensor(0.0)
    assert err <= rtol, f"{what}: max relative error {float(err):.2e} > {rtol}, seed {seed}"


def randint(rng, lo, hi):
    return int(torch.randint(lo, hi + 1, (1,), generator=rng))


def random_mars(rng, slots, B, p_inf=0.1):
    mars = torch.randn(slots, B, generator=rng) * 3 - 2
    mars[torch.rand(slots, B, generator=rng) < p_inf] = -INF
    mars[0] = 0.0
    return mars


def sum_layer(rng, sparse: bool, shared: bool):
    """A random sum layer reading from slots [1, num_children]; returns (layer, num_slots)."""
    G, n_out = (
        randint(rng, 1, 3),
        randint(rng, 1, 20) if randint(rng, 0, 1) else randint(rng, 65, 80),
    )  # > 64: several output blocks
    n_in = randint(rng, 66, 130) if sparse else randint(rng, 1, 70)  # > 64: several blocks of children
    pool = G * n_in if not shared else max(n_in, G * n_in // 2)
    if shared:
        child = torch.stack([torch.randperm(pool, generator=rng)[:n_in] for _ in range(G)]) + 1
    else:
        child = torch.randperm(pool, generator=rng).view(G, n_in) + 1
    w = torch.rand(G, n_out, n_in, generator=rng) + 0.1
    zero = torch.rand(G, n_out, n_in, generator=rng) < 0.15  # zero weights on existing edges
    zero[:, :, -1] = False  # but every node keeps one positive weight
    w[zero] = 0.0
    mask = None
    if sparse:
        mask = torch.rand(G, n_out, n_in, generator=rng) < 0.5
        mask[:, :, :64] = False  # whole empty blocks of children, skipped by the kernels
        mask[:, :, -1] = True
        w = w * mask
        w[:, :, -1] += 0.1
    w = w / w.sum(-1, keepdim=True)
    return SumLayer(child, w, mask, pool + 1), pool + 1 + G * n_out


def impossible_group(mars, layer, b):
    """Make every child of group 0 -inf in sample b (the all-impossible case)."""
    mars[layer.child_idx[0], b] = -INF


# ------------------------------------------------------------------ sum layer
@pytest.mark.parametrize("sparse,shared", [(False, False), (True, False), (False, True)])
def test_sum_layer_forward_backward(rng, sparse, shared):
    seed = rng.initial_seed()
    layer, slots = sum_layer(rng, sparse, shared)
    B = randint(rng, 1, 70)
    mars = random_mars(rng, slots, B)
    impossible_group(mars, layer, 0)

    ref = mars.clone()
    run("torch", layer, ref)
    got = mars.clone()
    got[layer.start : layer.stop] = float("nan")
    run("triton", layer, got)
    close(got, ref, "sum forward", seed)
    if sparse:
        from probcirc.kernels.sum_layer import _meta

        assert _meta(layer).live_fraction < 1.0, "the test must exercise skipped tiles"
    assert torch.isneginf(got[layer.start : layer.start + layer.weight.shape[1], 0]).all()

    flows = torch.zeros(slots, B)
    flows[layer.start : layer.stop] = torch.rand(layer.stop - layer.start, B, generator=rng)
    flows[1 : layer.start] = torch.rand(layer.start - 1, B, generator=rng)  # flows from other layers
    f_ref, f_got = flows.clone(), flows.clone()
    g_ref = run("torch", layer.backward, ref, f_ref)
    g_got = run("triton", layer.backward, ref, f_got)
    close(f_got, f_ref, "child flows", seed)
    on = layer.edge_mask if layer.edge_mask is not None else torch.ones_like(g_ref, dtype=torch.bool)
    scale = g_ref.abs().max().clamp_min(1e-30)
    assert not torch.isnan(g_got).any(), f"unwritten gradient, seed {seed}"
    assert ((g_got - g_ref).abs()[on] / scale).max() <= RTOL, f"weight gradient, seed {seed}"
    assert (g_got[~on] == 0).all(), f"gradient off the edge mask must be 0, seed {seed}"
    e_ref, e_got = layer.weight * g_ref, layer.weight * g_got
    assert ((e_got - e_ref).abs() / e_ref.abs().max().clamp_min(1e-30)).max() <= RTOL, f"edge flows, seed {seed}"


def test_launch_parameters_change_in_process(rng):
    """set_tuning takes effect on the next call (new tile sizes, same values) and rejects bad values by name."""
    from probcirc.kernels.sum_layer import _meta

    seed = rng.initial_seed()
    layer, slots = sum_layer(rng, sparse=True, shared=False)
    mars = random_mars(rng, slots, randint(rng, 17, 40))
    ref = mars.clone()
    run("torch", layer, ref)
    bk_before = _meta(layer).BK
    old = _common.set_tuning(max_block=16, block_b=16, num_warps=2)
    try:
        assert _meta(layer).BK == 16, "a new max_block must rebuild the layer's block table"
        got = mars.clone()
        got[layer.start : layer.stop] = float("nan")
        run("triton", layer, got)
        close(got, ref, "sum forward with 16-wide tiles", seed)
    finally:
        _common.set_tuning(**old)
    assert bk_before == _meta(layer).BK
    for bad in ({"block_b": 24}, {"max_block": 8}, {"num_warp": 4}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _common.set_tuning(**bad)


def test_sum_layer_all_impossible_and_empty_batch(rng):
    layer, slots = sum_layer(rng, sparse=False, shared=False)
    mars = torch.full((slots, 5), -INF)
    mars[0] = 0.0
    run("triton", layer, mars)
    assert torch.isneginf(mars[layer.start : layer.stop]).all()
    flows = torch.zeros(slots, 5)
    flows[layer.start : layer.stop] = 1.0
    g = run("triton", layer.backward, mars, flows)
    assert not torch.isnan(flows).any() and (flows[: layer.start] == 0).all() and (g == 0).all()
    run("triton", layer, torch.zeros(slots, 0))


@pytest.mark.parametrize("mode", ["tf32x3", "tf32", "bf16"])
def test_sum_layer_approximate_modes(rng, mode):
    """The fast modes run and stay near the exact result; exact() switches them off."""
    layer, slots = sum_layer(rng, sparse=False, shared=False)
    mars = random_mars(rng, slots, 20, p_inf=0.0)
    ref = mars.clone()
    run("torch", layer, ref)
    got = mars.clone()
    with backend.approximate(mode):
        assert backend.matmul_precision() == mode
        run("triton", layer, got)
        with backend.exact():
            assert backend.matmul_precision() == "ieee"
    close(got, ref, f"{mode} forward", rng.initial_seed(), rtol=5e-2)


def test_em_update(rng):
    seed = rng.initial_seed()
    for sparse in (False, True):
        layer, _ = sum_layer(rng, sparse, shared=False)
        flows = torch.rand(layer.weight.shape, generator=rng) * 3
        flows[0, 0] = 0.0  # a node without flow: with pseudocount 0 it keeps its weights
        if layer.edge_mask is not None:
            flows = flows * layer.edge_mask
        for alpha in (0.0, 0.1):
            a, b = (
                SumLayer(layer.child_idx, layer.weight.clone(), layer.edge_mask, layer.start),
                SumLayer(layer.child_idx, layer.weight.clone(), layer.edge_mask, layer.start),
            )
            run("torch", a.em_update, flows, 0.3, alpha)
            run("triton", b.em_update, flows, 0.3, alpha)
            assert torch.allclose(b.weight, a.weight, rtol=RTOL, atol=1e-7), (
                f"em update sparse={sparse} alpha={alpha}, seed {seed}"
            )
            if layer.edge_mask is not None:
                assert (b.weight[~layer.edge_mask] == 0).all()


# -------------------------------------------------------------- product layer
def test_product_layer(rng):
    seed = rng.initial_seed()
    n_children, n_prod = randint(rng, 5, 40), randint(rng, 1, 30)
    parents, kids = [], []
    for p in range(n_prod):  # shared children, varying arity (some products have one child)
        k = randint(rng, 1, min(6, n_children))
        parents.append(torch.full((k,), p))
        kids.append(torch.randperm(n_children, generator=rng)[:k] + 1)
    perm = torch.randperm(sum(len(k) for k in kids), generator=rng)  # edges in no particular order
    parent_idx, child_idx = torch.cat(parents)[perm], torch.cat(kids)[perm]
    layer = ProductLayer(parent_idx, child_idx, n_prod, n_children + 1)
    B = randint(rng, 1, 150)
    mars = random_mars(rng, n_children + 1 + n_prod, B)
    ref = mars.clone()
    run("torch", layer, ref)
    got = mars.clone()
    got[layer.start :] = float("nan")
    run("triton", layer, got)
    close(got, ref, "product forward", seed)

    flows = torch.rand(mars.shape, generator=rng)
    f_ref, f_got = flows.clone(), flows.clone()
    run("torch", layer.backward, ref, f_ref)
    run("triton", layer.backward, ref, f_got)
    close(f_got, f_ref, "product backward", seed)
    again = flows.clone()
    run("triton", layer.backward, ref, again)
    assert torch.equal(again, f_got), "product backward must be deterministic"


# ---------------------------------------------------------------- input layer
def test_categorical_input(rng):
    seed = rng.initial_seed()
    V, k, C, B = randint(rng, 1, 5), randint(rng, 1, 20), randint(rng, 2, 40), randint(rng, 1, 90)
    params = torch.rand(V * k, C, generator=rng)
    params[torch.rand(V * k, C, generator=rng) < 0.2] = 0.0  # exact zeros: log 0 = -inf
    params[:, 0] += 0.01
    params = params / params.sum(-1, keepdim=True)
    node_var = torch.arange(V).repeat_interleave(k)
    layer = InputLayer(Categorical(C), node_var, params, 1)
    x = torch.randint(0, C, (V, B), generator=rng).float()
    missing = torch.rand(V, B, generator=rng) < 0.2
    x[missing] = 0.0
    mars = torch.zeros(1 + V * k, B)
    ref = mars.clone()
    ref[1:] = layer.log_values(layer.params, x, missing)
    got = mars.clone()
    got[1:] = float("nan")
    kernels.categorical_forward(layer, got, x, missing)
    close(got, ref, "categorical forward", seed)

    flows = torch.rand(1 + V * k, B, generator=rng)
    s_ref = layer.em_stats(flows, x, missing)
    s_got = kernels.categorical_stats(layer, flows, x, missing)
    torch.testing.assert_close(s_got, s_ref, rtol=RTOL, atol=1e-6, msg=lambda m: f"counts, seed {seed}: {m}")

    s_ref[0] = 0.0  # a leaf without data
    for alpha in (0.0, 0.1):
        n_ref = layer.dist.m_step(s_ref, layer.params, alpha)
        n_got = kernels.categorical_m_step(s_ref, layer.params, alpha)
        torch.testing.assert_close(n_got, n_ref, rtol=RTOL, atol=1e-7, msg=lambda m: f"m-step, seed {seed}: {m}")


# ------------------------------------------------------------- whole circuits
def test_whole_circuit_passes(rng):
    """Forward, backward and one EM step of compiled circuits: both backends agree."""
    from probcirc.structures import PD

    from .circuits import dag

    seed = rng.initial_seed()
    for root in (lambda: dag(Categorical(3)), lambda: PD((2, 2), num_latents=3, input_dist=Categorical(3))):
        pc = compiled_on_device(root, seed, zero_fraction=0.2)
        B = randint(rng, 1, 40)
        data = torch.randint(0, 3, (B, pc.num_vars), generator=rng)
        mask = torch.rand(B, pc.num_vars, generator=rng) < 0.2
        x, missing = pc._prepare(data, mask)
        m_ref = run("torch", pc._forward_pass, x, missing)
        m_got = run("triton", pc._forward_pass, x, missing)
        close(m_got, m_ref, "circuit forward", seed)
        root_flow = torch.ones(B)
        f_ref, g_ref = run("torch", pc._backward_pass, m_ref, root_flow)
        f_got, g_got = run("triton", pc._backward_pass, m_ref, root_flow)
        close(f_got, f_ref, "circuit flows", seed)
        for layer, a, b in zip(pc._sum_layers, g_ref, g_got):
            ea, eb = layer.weight * a, layer.weight * b
            assert ((ea - eb).abs() / ea.abs().max().clamp_min(1e-30)).max() <= RTOL, f"circuit edge flows, seed {seed}"
        lp_ref = run("torch", pc.log_prob, data, mask)
        lp_got = run("triton", pc.log_prob, data, mask)
        close(lp_got, lp_ref, "log_prob", seed)


def test_batch_of_one(rng):
    """A single sample: prepare() gives a (V, 1) view whose unused stride the kernels must not trip over."""
    from probcirc.structures import PD

    seed = rng.initial_seed()
    pc = compiled_on_device(lambda: PD((2, 2), num_latents=3, input_dist=Categorical(3)), seed)
    data = torch.randint(0, 3, (1, pc.num_vars), generator=rng)
    mask = torch.tensor([[False, True, False, False]])
    x, missing = pc._prepare(data, mask)
    close(
        run("triton", pc._forward_pass, x, missing),
        run("torch", pc._forward_pass, x, missing),
        "forward, batch of one",
        seed,
    )


def test_em_epoch_through_the_layers(rng):
    """A whole EM run dispatched through the layers (categorical leaves included): both backends agree."""
    import copy

    from probcirc.learn import em
    from probcirc.structures import PD

    seed = rng.initial_seed()
    pc = compiled_on_device(lambda: PD((2, 2), num_latents=3, input_dist=Categorical(3)), seed)
    B = randint(rng, 8, 40)
    data = torch.randint(0, 3, (B, pc.num_vars), generator=rng)
    mask = torch.rand(B, pc.num_vars, generator=rng) < 0.2
    fitted = {}
    for name in ("torch", "triton"):
        c = copy.deepcopy(pc)
        ll = run(name, em, c, data, 1, 16, 0.5, 0.1, 1, mask, 0, False)
        fitted[name] = (c, ll)
    (ref, ll_ref), (got, ll_got) = fitted["torch"], fitted["triton"]
    assert abs(ll_got[-1] - ll_ref[-1]) <= RTOL * max(1.0, abs(ll_ref[-1])), f"log-likelihood, seed {seed}"
    for a, b in zip(ref._input_layers, got._input_layers):
        assert torch.allclose(b.params, a.params, rtol=1e-4, atol=1e-6), f"leaf parameters, seed {seed}"
    for a, b in zip(ref._sum_layers, got._sum_layers):
        assert torch.allclose(b.weight, a.weight, rtol=1e-4, atol=1e-6), f"sum weights, seed {seed}"


@pytest.mark.skipif(ON_GPU, reason="checks how CPU tensors pick a path under the interpreter")
def test_backend_selection():
    assert backend.get_backend() == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        probcirc.set_backend("cuda")
    t = torch.zeros(2, 2)
    probcirc.set_backend("auto")
    assert not backend.use_triton(t)  # CPU tensors take the torch path under "auto"
    probcirc.set_backend("triton")
    assert backend.use_triton(t)  # allowed here: the interpreter is on
    with pytest.raises(ValueError, match="float32"):
        backend.use_triton(t.double())
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
            backend.use_triton(t)
    finally:
        os.environ["TRITON_INTERPRET"] = "1"
    probcirc.set_backend("torch")
    assert not backend.use_triton(t)
    with pytest.raises(ValueError, match="precision"), backend.approximate("fp8"):
        pass


def test_deterministic_and_copyable(rng):
    """Shared children go through the segment sum: two runs agree bit for bit; the kernel cache
    neither breaks pickling nor survives a copy with new buffers."""
    import copy
    import pickle

    layer, slots = sum_layer(rng, sparse=False, shared=True)
    mars = random_mars(rng, slots, 33)
    run("triton", layer, mars)
    flows = torch.zeros(slots, 33)
    flows[layer.start : layer.stop] = torch.rand(layer.stop - layer.start, 33, generator=rng)
    a, b = flows.clone(), flows.clone()
    ga = run("triton", layer.backward, mars, a)
    gb = run("triton", layer.backward, mars, b)
    assert torch.equal(a, b) and torch.equal(ga, gb)
    twin = pickle.loads(pickle.dumps(layer))
    clone = copy.deepcopy(layer)
    for other in (twin, clone):
        c = flows.clone()
        assert torch.equal(run("triton", other.backward, mars, c), ga) and torch.equal(c, a)


@pytest.mark.slow
def test_kernels_compile_for_a_gpu(tmp_path):
    """Code generation for sm_90, ahead of time and without a GPU: catches what the interpreter cannot."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile for real, not from an earlier run's cache
    r = subprocess.run(
        [sys.executable, "-m", "probcirc.kernels._aot", "90", "quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = r.stdout + r.stderr
    if r.returncode != 0 and "ptxas" in out and ("not found" in out or "No such file" in out):
        pytest.skip("this Triton install has no ptxas to compile for CUDA")
    assert r.returncode == 0 and "all kernels compiled" in r.stdout, out[-4000:]
