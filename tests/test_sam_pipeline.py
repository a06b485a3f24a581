"""segmenter="sam" wired in: settings, builder, the pipeline, instances in the exports and records, CLI, service."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import skimage.data
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from tagseg import builder, toy
from tagseg.cli import app
from tagseg.config import SamSettings, TAGConfig, config_toml, load_config, preset
from tagseg.errors import ConfigError, ModelNotAvailableError
from tagseg.exports import DEFAULT_MIN_INSTANCE_AREA, CategoryTable, RunExporter
from tagseg.exports.writer import classified_instances
from tagseg.interfaces import MaskProposals
from tagseg.pipeline import TAG
from tagseg.result import Segmentation, segmentation_schema
from tagseg.backbones.sam import SamMaskGenerator
from tagseg.testing import save_random_sam
from toy_support import named_iou

runner = CliRunner()

# The random model's predicted IoUs are about 1e-3: its masks pass only with the quality filters off.
_UNFILTERED = {"points_per_side": 3, "pred_iou_threshold": 0.0, "stability_threshold": 0.0, "box_nms_threshold": 1.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_sam(tmp_path_factory.mktemp("sam") / "tiny")


@pytest.fixture(scope="module")
def toy_seams() -> TAG:
    return TAG.from_pretrained("toy", image_size=128, crf=False, kmeans_restarts=2)


def _with_proposer(base: TAG, proposer, **settings) -> TAG:
    config = base.config.replace(segmenter="sam", **settings)
    return TAG(base.features, base.embedder, base.text_encoder, base.database, config, proposer=proposer)


class _ShapesOnly:
    """The toy world's true masks without the background's: its pixels are left uncovered."""

    model_id = "test/shapes-only"

    def __init__(self, truth: np.ndarray, scores: list[float]) -> None:
        self.truth, self.scores = truth, scores

    def __call__(self, image: np.ndarray) -> MaskProposals:
        masks = np.stack([self.truth == region for region in range(1, int(self.truth.max()) + 1)])
        return MaskProposals(masks, np.asarray(self.scores, dtype=np.float32))


# ----------------------------------------------------------------------------- settings and builder


def test_settings_are_declared_once_and_read_from_toml(tmp_path: Path) -> None:
    config = TAGConfig()
    assert (config.segmenter, config.uncovered, config.sam_model) == ("kmeans", "fallback", "facebook/sam-vit-base")
    assert config.clusters.sam == SamSettings() and SamSettings().points_per_side == 16
    file = tmp_path / "sam.toml"
    file.write_text('[clusters]\nsegmenter = "sam"\nuncovered = "unlabelled"\n[clusters.sam]\npoints_per_side = 8\n')
    loaded = load_config(file)
    assert (loaded.segmenter, loaded.uncovered, loaded.clusters.sam.points_per_side) == ("sam", "unlabelled", 8)
    assert load_config_text(tmp_path, config_toml(loaded)) == loaded  # config show's TOML reads back
    with pytest.raises(ConfigError, match="segmenter"):
        TAGConfig(segmenter="slic")
    with pytest.raises(ConfigError, match="sam.points_per_side"):
        TAGConfig(sam={"points_per_side": 0})
    with pytest.raises(ConfigError, match="Unknown setting"):
        TAGConfig(sam={"points": 4})


def load_config_text(folder: Path, text: str) -> TAGConfig:
    path = folder / "shown.toml"
    path.write_text(text)
    return load_config(path)


def test_the_builder_builds_the_proposer_from_sam_model(tiny_sam: Path) -> None:
    config = preset("toy", segmenter="sam", sam_model=str(tiny_sam), sam=_UNFILTERED)
    seams = builder.build(config)
    assert isinstance(seams.proposer, SamMaskGenerator)
    assert asdict(seams.proposer.options) == asdict(config.clusters.sam) and seams.proposer.model_id == str(tiny_sam)
    assert builder.build(preset("toy")).proposer is None  # k-means loads no SAM
    with pytest.raises(ConfigError, match="provides no region proposer"):
        builder.build_proposer(preset("toy", sam_model="toy"))


def test_models_list_includes_sam_model_only_for_sam(tiny_sam: Path) -> None:
    listed = runner.invoke(app, ["models", "list", "--segmenter", "sam", "--sam-model", str(tiny_sam)], env={"COLUMNS": "400"})
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if str(tiny_sam) in line)
    assert "ready" in row
    assert str(tiny_sam) not in builder.config_models(preset("paper", sam_model=str(tiny_sam)))
    assert builder.config_models(preset("paper", segmenter="sam", sam_model=str(tiny_sam)))[-1] == str(tiny_sam)


# ----------------------------------------------------------------------------- the pipeline


@pytest.mark.parametrize("seed", [0, 3])
def test_the_whole_pipeline_returns_the_true_masks_with_their_names(toy_seams: TAG, seed: int, tmp_path: Path) -> None:
    image, truth, names = toy.toy_scene(seed)
    tag = _with_proposer(toy_seams, toy.ToyMaskGenerator(truth))
    result = tag(image)
    assert named_iou(result, truth, names) == [1.0] * len(names)
    assert "sam" in result.timings and "features" not in result.timings  # every pixel covered: no DINOv2, no k-means
    assert result.models["proposer"] == "tagseg/toy-truth"
    for segment in result.segments:
        assert segment.candidates and segment.retrieved
        assert [(region.proposal, region.score) for region in segment.regions] == [(names.index(segment.label), 1.0)]
    # COCO: one instance per true region, read back with pycocotools
    exporter = RunExporter(tmp_path, ["coco", "panoptic"], CategoryTable())
    exporter.add("scene", result, "scene.png")
    exporter.finish()
    coco = COCO(str(tmp_path / "coco" / "instances.json"))
    annotations = coco.loadAnns(coco.getAnnIds())
    assert len(annotations) == len(names)
    for annotation in annotations:
        region = names.index(coco.cats[annotation["category_id"]]["name"])
        assert np.array_equal(coco.annToMask(annotation).astype(bool), truth == region)
        assert annotation["proposal"] == region and annotation["score"] == 1.0
    panoptic = json.loads((tmp_path / "panoptic" / "panoptic.json").read_text())
    assert all(category["isthing"] == 1 for category in panoptic["categories"])


def test_uncovered_pixels_unlabelled_or_from_k_means(toy_seams: TAG, tmp_path: Path) -> None:
    image, truth, names = toy.toy_scene(1)
    scores = [0.9, 0.8, 0.7]
    unlabelled = _with_proposer(toy_seams, _ShapesOnly(truth, scores), uncovered="unlabelled")(image)
    assert "features" not in unlabelled.timings
    unknown = [s for s in unlabelled.segments if s.label == "unknown"]
    assert len(unknown) == 1 and np.array_equal(unknown[0].mask, truth == 0)
    assert not unknown[0].candidates and [(r.proposal, r.score) for r in unknown[0].regions] == [(-1, None)]
    assert named_iou(unlabelled, truth, names)[1:] == [1.0] * 3

    filled = _with_proposer(toy_seams, _ShapesOnly(truth, scores), uncovered="fallback")(image)
    assert "features" in filled.timings and "kmeans" in filled.timings
    # the background named from its k-means segments; k-means pixels on a shape's blurred rim may take its name
    assert min(named_iou(filled, truth, names)) > 0.95
    # instances: one thing per mask scored by its mask's score, the k-means pixels as stuff
    for segment in filled.segments:
        instances = segment.instances()
        assert sum(int(i.mask.sum()) for i in instances) == segment.area
        for instance in instances:
            if instance.thing:
                assert instance.score == pytest.approx(scores[instance.proposal])
                assert np.array_equal(instance.mask, truth == instance.proposal + 1)
            else:
                assert instance.proposal is None and instance.score == segment.score
    exporter = RunExporter(tmp_path, ["panoptic", "yolo"], CategoryTable())
    exporter.add("scene", filled, "scene.png")
    exporter.finish()
    panoptic = json.loads((tmp_path / "panoptic" / "panoptic.json").read_text())
    isthing = {c["name"]: c["isthing"] for c in panoptic["categories"]}
    assert isthing[names[0]] == 0 and all(isthing[name] == 1 for name in names[1:])
    infos = panoptic["annotations"][0]["segments_info"]
    # the exports keep the instances of at least the minimum area (k-means may leave smaller specks on rims)
    exported = classified_instances(filled, CategoryTable(), DEFAULT_MIN_INSTANCE_AREA)
    things = [i for _, _, i in exported if i.thing]
    stuff_names = {s.label for s, _, i in exported if not i.thing}
    assert len(things) == 3 and len(infos) == len(things) + len(stuff_names)  # stuff: one segment per name and image
    ids = np.asarray(Image.open(tmp_path / "panoptic" / "scene.png"), dtype=np.uint32) @ np.array([1, 256, 65536], np.uint32)
    for info in infos:
        assert (ids == info["id"]).sum() == info["area"] >= DEFAULT_MIN_INSTANCE_AREA
    yolo = (tmp_path / "yolo" / "labels" / "scene.txt").read_text().splitlines()
    assert len(yolo) == len(exported)


def test_records_keep_each_regions_mask_index_and_score(toy_seams: TAG) -> None:
    image, truth, names = toy.toy_scene(2)
    result = _with_proposer(toy_seams, _ShapesOnly(truth, [0.5, 0.75, 0.25]))(image)
    record = json.loads(json.dumps(result.to_record("scene.png")))
    jsonschema.validate(record, segmentation_schema())
    back = Segmentation.from_record(record)
    for original, restored in zip(result.segments, back.segments):
        assert [(r.proposal, r.score) for r in restored.regions] == [(r.proposal, r.score) for r in original.regions]
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(original.regions, restored.regions))
        assert [(i.proposal, i.thing, int(i.mask.sum())) for i in restored.instances()] == [
            (i.proposal, i.thing, int(i.mask.sum())) for i in original.instances()
        ]


def test_sam_loads_lazily_and_takes_per_call_knobs(toy_seams: TAG, tiny_sam: Path) -> None:
    config = toy_seams.config.replace(models={"sam_model": str(tiny_sam)})
    tag = TAG(toy_seams.features, toy_seams.embedder, toy_seams.text_encoder, toy_seams.database, config)
    photo = skimage.data.astronaut()[::4, ::4].copy()  # 128x128, a real photo
    kmeans = tag(photo)
    assert tag.proposer is None and "proposer" not in kmeans.models and not any(s.regions for s in kmeans.segments)
    two = tag(photo, segmenter="sam", sam={**_UNFILTERED, "points_per_side": 2})
    assert isinstance(tag.proposer, SamMaskGenerator) and two.models["proposer"] == str(tiny_sam)
    indices = [r.proposal for s in two.segments for r in s.regions if r.proposal >= 0]
    assert indices and max(indices) < 2 * 2 * 3  # 4 points, 3 masks each
    four = tag(photo, segmenter="sam", sam={**_UNFILTERED, "points_per_side": 4})
    assert max(r.proposal for s in four.segments for r in s.regions) >= 2 * 2 * 3
    assert asdict(tag.proposer.options) == asdict(config.clusters.sam)  # the loaded generator keeps the TAG's own knobs
    missing = TAG(toy_seams.features, toy_seams.embedder, toy_seams.text_encoder, toy_seams.database,
                  toy_seams.config.replace(models={"sam_model": str(tiny_sam.parent / "missing")}))
    with pytest.raises(ModelNotAvailableError, match="no such directory"):
        missing(photo, segmenter="sam")


# ----------------------------------------------------------------------------- command line and service


@pytest.mark.parametrize("which", ["photo", "toy"])
def test_segment_command_with_a_random_sam(tiny_sam: Path, tmp_path: Path, which: str) -> None:
    pixels = skimage.data.astronaut() if which == "photo" else toy.toy_scene(4)[0]
    path = tmp_path / f"{which}.png"
    Image.fromarray(pixels).resize((160, 120)).save(path)
    settings = tmp_path / "sam.toml"
    settings.write_text("[clusters.sam]\n" + "".join(f"{k} = {v}\n" for k, v in _UNFILTERED.items()))
    out = tmp_path / "out"
    done = runner.invoke(app, [
        "segment", str(path), "--preset", "toy", "--image-size", "128", "--no-crf", "--config", str(settings),
        "--segmenter", "sam", "--sam-model", str(tiny_sam), "--out", str(out), "--export", "coco",
    ])
    assert done.exit_code == 0, done.output
    record = json.loads((out / f"{which}.json").read_text())
    jsonschema.validate(record, segmentation_schema())
    assert record["models"]["proposer"] == str(tiny_sam) and record["settings"]["segmenter"] == "sam"
    assert "sam" in record["timings"]
    result = Segmentation.from_record(record)
    assert any(r.proposal >= 0 for s in result.segments for r in s.regions)
    for segment in result.segments:
        assert segment.label and segment.retrieved
    coco = COCO(str(out / "export" / "coco" / "instances.json"))
    annotations = coco.loadAnns(coco.getAnnIds())
    # one annotation per instance of at least the minimum area: whether a random SAM leaves specks
    # smaller than that depends on the CPU's float path, the rule does not
    exported = classified_instances(result, CategoryTable(), DEFAULT_MIN_INSTANCE_AREA)
    assert exported and len(annotations) == len(exported)
    assert sorted((a["area"], coco.cats[a["category_id"]]["name"]) for a in annotations) == sorted(
        (int(i.mask.sum()), s.label) for s, _, i in exported
    )
    scores = {r.proposal: r.score for s in result.segments for r in s.regions if r.proposal >= 0}
    for annotation in annotations:
        if "proposal" in annotation:
            assert annotation["score"] == pytest.approx(scores[annotation["proposal"]], abs=1e-6)


def test_the_service_chooses_the_segmenter_per_request(toy_seams: TAG) -> None:
    from tagseg.serve import ServeSettings, create_app
    from tagseg.serve.labelstudio import parse_label_config, to_predictions

    image, truth, names = toy.toy_scene(5, size=(120, 160))
    tag = TAG(toy_seams.features, toy_seams.embedder, toy_seams.text_encoder, toy.toy_database(toy_seams.text_encoder),
              toy_seams.config, proposer=_ShapesOnly(truth, [0.6, 0.7, 0.8]))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    with TestClient(create_app(tag, ServeSettings())) as client:
        sam = client.post("/v1/segment", files={"image": ("s.png", buffer.getvalue(), "image/png")}, data={"segmenter": "sam"})
        kmeans = client.post("/v1/segment", files={"image": ("s.png", buffer.getvalue(), "image/png")})
        wrong = client.post("/v1/segment", files={"image": ("s.png", buffer.getvalue(), "image/png")}, data={"segmenter": "slic"})
    assert sam.status_code == 200 and kmeans.status_code == 200, (sam.text, kmeans.text)
    assert sam.json()["models"]["proposer"] == "test/shapes-only"
    assert sorted(r["proposal"] for s in sam.json()["segments"] for r in s.get("regions", []) if r["proposal"] >= 0) == [0, 1, 2]
    assert not any("regions" in s for s in kmeans.json()["segments"]) and "proposer" not in kmeans.json()["models"]
    assert wrong.status_code == 422
    # Label Studio: one brush region per SAM mask, scored by the mask's score
    target = parse_label_config('<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image"/></View>')
    prediction = to_predictions(tag(image, segmenter="sam", uncovered="unlabelled"), target, None, "test")
    scores = sorted(item["score"] for item in prediction["result"])
    assert len(prediction["result"]) == 4 and scores[1:] == [0.6, 0.7, 0.8]  # three masks and the unlabelled rest


def test_eval_runs_with_sam_and_records_it(tiny_sam: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    done = runner.invoke(app, [
        "eval", "--dataset", "toy", "--toy-images", "1", "--protocol", "oracle-image", "--no-cache", "--no-progress",
        "--segmenter", "sam", "--sam-model", str(tiny_sam), "--out", str(out),
    ])
    assert done.exit_code == 0, done.output
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["pipeline"]["segmenter"] == "sam"
    assert report["settings"]["pipeline"]["sam_model"] == str(tiny_sam)
    assert f"Segment Anything ({tiny_sam}, uncovered pixels: fallback)" in (out / "report.md").read_text()
