"""The batch image transforms, where ``spikebridge.data`` users import them; defined in
:mod:`spikebridge.batch_transforms` (a leaf module below both this package and the event
augmentation of :mod:`spikebridge.events`)."""

from spikebridge.batch_transforms import normalize, random_crop, random_horizontal_flip, to_float

__all__ = ["normalize", "random_crop", "random_horizontal_flip", "to_float"]
