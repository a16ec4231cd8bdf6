"""probcirc.inpaint: the steering posterior against enumeration, weight 0 = the plain sampler bit for bit,
RePaint against diffusers' own pipeline, mask errors, and the command line end to end."""

import importlib.util
import itertools

import numpy as np
import pytest
import torch

import probcirc
from probcirc.cli import main
from probcirc.inputs import Categorical
from probcirc.nodes import inputs, multiply, summate

# Found, not imported: importing diffusers imports Triton, and test_kernels must be the first to
# import Triton (it picks the interpreter then). Tests import diffusers when they run.
if importlib.util.find_spec("diffusers") is None:
    pytest.skip("the inpaint extra (diffusers) is not installed", allow_module_level=True)

from probcirc.inpaint import Steering, inpaint, make_mask, pixel_posterior  # noqa: E402
from probcirc.inpaint.diffusion import Diffusion, save_diffusion, small_unet  # noqa: E402
from probmod.errors import UsageError  # noqa: E402
from probmod.io import new_file_mode  # noqa: E402


def _diffusers():
    import diffusers

    return diffusers


K = 3  # levels of the tiny circuit


def _tiny_circuit(seed=0):
    """Three ternary variables in nested mixtures (X0 and X1 share a mixture): not fully factorised."""
    g = torch.Generator().manual_seed(seed)

    def simplex(n, k):
        p = torch.rand(n, k, generator=g, dtype=torch.float64) + 0.1
        return p / p.sum(-1, keepdim=True)

    def leaf(v, n):
        return inputs(v, n, Categorical(K), params=simplex(n, K))

    left = summate(multiply(leaf(0, 2), leaf(1, 2)), num_nodes=2, params=simplex(2, 2))
    root = summate(multiply(left, leaf(2, 2)), num_nodes=1, params=simplex(1, 2))
    return probcirc.compile(root, dtype=torch.float64)


def test_posterior_matches_enumeration():
    pc = _tiny_circuit()
    g = torch.Generator().manual_seed(1)
    w = torch.rand(4, 3, K, generator=g, dtype=torch.float64)
    w[0, 1] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # hard evidence X1 = 2
    xs = torch.tensor(list(itertools.product(range(K), repeat=3)), dtype=torch.float64)
    joint = pc.log_prob(xs).exp()  # (27,)
    for b in range(len(w)):
        score = joint * torch.stack([w[b, j, xs[:, j].long()] for j in range(3)]).prod(0)
        expect = torch.stack([torch.stack([score[xs[:, j] == v].sum() for v in range(K)]) for j in range(3)])
        torch.testing.assert_close(pixel_posterior(pc, w)[b], expect / score.sum(), rtol=1e-10, atol=1e-12)


def _pixel_circuit(h, w, seed=0):
    """A two-component mixture of fully factorised 256-level images."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(h * w, 2, 256, generator=g) + 0.01
    probs = probs / probs.sum(-1, keepdim=True)
    leaves = [inputs(v, 2, Categorical(256), params=probs[v]) for v in range(h * w)]
    return probcirc.compile(summate(multiply(*leaves), num_nodes=1))


@pytest.fixture(scope="module")
def tiny():
    unet = small_unet(channels=(8, 8, 8), size=8, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8)).astype(np.uint8)
    return unet, images, _pixel_circuit(8, 8)


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "repaint"])
def test_weight_zero_is_the_plain_sampler_bit_for_bit(tiny, scheduler):
    unet, images, pc = tiny
    sched = {
        "ddpm": _diffusers().DDPMScheduler,
        "ddim": _diffusers().DDIMScheduler,
        "repaint": _diffusers().RePaintScheduler,
    }
    pair = (unet, sched[scheduler](num_train_timesteps=50))
    plain = "repaint" if scheduler == "repaint" else "replace"
    known = make_mask("center", (8, 8))
    run = dict(steps=5, jump_length=2, jump_n_sample=2 if scheduler == "repaint" else 1, seed=3)
    base = inpaint(images, known, pc, pair, method=plain, **run)
    zero = inpaint(images, known, pc, pair, method="steered", steering=Steering(weight=0.0), **run)
    steered = inpaint(images, known, pc, pair, method="steered", steering=Steering(weight=0.9, fraction=1.0), **run)
    assert np.array_equal(base, zero)
    assert not np.array_equal(base, steered)  # the check above is not vacuous: steering does change the result
    assert np.array_equal(steered[:, known], images[:, known])


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_repaint_matches_diffusers_pipeline(tiny, eta):
    from probcirc.inpaint.diffusion import to_unit
    from probcirc.inpaint.steer import diffuse

    unet, images, _ = tiny
    known = torch.from_numpy(make_mask("left", (8, 8)))[None, None].expand(3, 1, 8, 8).float()
    ours = diffuse(
        unet,
        _diffusers().RePaintScheduler(num_train_timesteps=50),
        to_unit(images),
        known,
        5,
        torch.Generator().manual_seed(4),
        jump_length=2,
        jump_n_sample=2,
        eta=eta,
    )
    pipe = _diffusers().RePaintPipeline(unet=unet, scheduler=_diffusers().RePaintScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        to_unit(images),
        known,
        num_inference_steps=5,
        jump_length=2,
        jump_n_sample=2,
        eta=eta,
        generator=torch.Generator().manual_seed(4),
        output_type="np",
    ).images
    assert np.array_equal((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), ref)


def test_circuit_only_keeps_known_pixels_and_mpe_is_deterministic(tiny):
    _, images, pc = tiny
    known = make_mask("random:0.8", (8, 8), seed=2)
    a = inpaint(images, known, pc, method="mpe")
    assert np.array_equal(a, inpaint(images, known, pc, method="mpe"))
    s = inpaint(images, known, pc, method="sample", seed=1)
    assert np.array_equal(s[:, known], images[:, known]) and np.array_equal(a[:, known], images[:, known])


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.ones((4, 4), bool), "is 4x4 but the images are 8x8"),
        (np.ones((8, 8), bool), "leaves no pixel missing"),
        (np.zeros((8, 8), bool), "hides every pixel"),
    ],
)
def test_bad_masks_are_clear_errors(tiny, mask, message):
    _, images, pc = tiny
    with pytest.raises(UsageError, match=message):
        inpaint(images, mask, pc)


def test_unknown_mask_kind():
    with pytest.raises(UsageError, match="unknown mask kind 'diagonal'"):
        make_mask("diagonal", (8, 8))


def test_cli_end_to_end(tiny, tmp_path, capsys):
    from PIL import Image

    unet, images, _ = tiny
    data = tmp_path / "imgs.npy"
    np.save(data, np.random.default_rng(1).integers(0, 256, (40, 8, 8)).astype(np.uint8))
    model = tmp_path / "pc.h5"
    assert main(["train", str(data), "--latents", "2", "--epochs", "1", "-q", "-o", str(model)]) == 0
    save_diffusion(Diffusion(unet, _diffusers().DDPMScheduler(num_train_timesteps=50)), tmp_path / "ddpm")
    for f in (tmp_path / "ddpm").iterdir():  # finished files follow the umask, like every probmod output
        assert f.stat().st_mode & 0o777 == new_file_mode(), f.name
    np.save(tmp_path / "few.npy", images)
    argv = [
        str(tmp_path / "few.npy"),
        "--mask-kind",
        "center",
        "--circuit",
        str(model),
        "--diffusion",
        str(tmp_path / "ddpm"),
        "--steps",
        "4",
        "--jump-length",
        "2",
        "-q",
        "-o",
        str(tmp_path / "out"),
    ]
    capsys.readouterr()
    assert main(["inpaint", *argv]) == 0
    sheet = np.asarray(Image.open(tmp_path / "out" / "sheet.png"))
    drawn = 8 * 3  # 8x8 images are drawn 3x larger
    assert sheet.shape == (3 * drawn + 4, 3 * drawn + 4)  # three triplets side by side
    assert np.array_equal(sheet[:drawn:3, :drawn:3], images[0])  # the first original, top left
    first = np.asarray(Image.open(tmp_path / "out" / "few_0000.png"))
    known = make_mask("center", (8, 8))
    assert np.array_equal(first[known], images[0][known])
    assert main(["inpaint", *argv]) == 6  # no overwrite without --force
    assert "exists" in capsys.readouterr().err
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "m.png")
    bad = [a if a != "center" else str(tmp_path / "m.png") for a in argv]
    bad[bad.index("--mask-kind")] = "--mask"
    assert main(["inpaint", *bad, "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is 5x5 but the images are 8x8" in err


def test_coded_posterior_mean_equals_the_exact_posterior():
    from probcirc.inpaint.posterior import CodedPosteriorMean, evidence_table, posterior_mean

    pc = _tiny_circuit(seed=5)
    table = evidence_table(0.7, K)
    codes = torch.tensor([[0, 1, 2], [3 + 2, 1, 0], [2, 3 + 0, 3 + 1]])  # soft, soft+hard, mostly hard
    torch.testing.assert_close(CodedPosteriorMean(pc, table)(codes), posterior_mean(pc, table[codes]))


@pytest.mark.parametrize("kind", ["left", "top", "center", "random:0.8", "strips:v", "strips:h"])
def test_mask_kinds(kind):
    known = make_mask(kind, (28, 28), seed=4)
    share = 1 - known.mean()
    assert 0.2 < share < 0.9 and known.any() and not known.all()
    if kind == "strips:v":
        assert (known == known[0]).all()  # every row the same: vertical bands
    if kind == "strips:h":
        assert (known[:, :1] == known).all()
    if kind == "random:0.8":
        assert not np.array_equal(known, make_mask(kind, (28, 28), seed=5))


def test_mask_from_png(tmp_path):
    from PIL import Image

    from probcirc.inpaint import load_mask

    img = np.zeros((8, 8), np.uint8)
    img[2:4, 3:6] = 255
    Image.fromarray(img).save(tmp_path / "hole.png")
    assert np.array_equal(load_mask(tmp_path / "hole.png"), img < 128)
