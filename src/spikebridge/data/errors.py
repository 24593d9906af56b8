"""The dataset exceptions, where ``spikebridge.data`` users import them; defined in
:mod:`spikebridge.dataset_errors` (a leaf module below both the image readers here and the event
readers of :mod:`spikebridge.events`)."""

from spikebridge.dataset_errors import CorruptImageError, DatasetFormatError, DatasetNotFoundError

__all__ = ["CorruptImageError", "DatasetFormatError", "DatasetNotFoundError"]
