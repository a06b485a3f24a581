"""The model wrappers behind the seams, and where their weights come from.

* :mod:`tagseg.backbones.hub` — Hugging Face ids, the local cache and model directories: loading
  with clear offline errors, downloads, cache status (imports no torch).
* :mod:`tagseg.backbones.base` — what every backbone shares: device and dtype, the checkpoint
  check, the pixel check and normalisation with the model's own mean/std (:class:`ImageBackbone`).
* :mod:`tagseg.backbones.dinov2` — :class:`~tagseg.backbones.dinov2.Dinov2Features` (Stage 1).
* :mod:`tagseg.backbones.clip` — :class:`~tagseg.backbones.clip.GEMDenseCLIP` (Stage 2) and
  :class:`~tagseg.backbones.clip.CLIPTextEncoder` (Stage 3).

Which backbone a configuration gets is decided in :mod:`tagseg.builder`. This package module
imports nothing, so ``import tagseg.backbones.hub`` stays free of torch.
"""
