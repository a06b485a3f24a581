"""Stage 1 alternatives to k-means: region proposers and turning their masks into one label per pixel.

- :mod:`tagseg.segmenters.sam`: Segment Anything's automatic mask generation (``SamMaskGenerator``).
- :mod:`tagseg.segmenters.regions`: overlapping masks into a label map (``regions_from_masks``).
- :mod:`tagseg.segmenters.boxes`: mask boxes and box NMS without torchvision.
"""
