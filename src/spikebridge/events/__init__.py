"""Event-camera data: formats, datasets, dense representations, batching and an emulator.

One concept per module:

=======================  ====================================================================
:mod:`.types`            the event array (structured numpy: x, y, t [µs], p) and validation
:mod:`.nmnist_bin`       N-MNIST / N-Caltech101 ``.bin`` (5-byte events): read and write
:mod:`.aedat_header`     the ASCII header of AEDAT files
:mod:`.aedat2`           AEDAT 2.0, DVS128 addresses (CIFAR10-DVS)
:mod:`.aedat31`          AEDAT 3.1 packets (DVS128 Gesture), windowed reads via a packet index
:mod:`.aedat`            version dispatch
:mod:`.npz`              SpikingJelly-style ``.npz`` samples (keys x, y, t, p)
:mod:`.dataset`          the lazily indexed, file-backed dataset base class
:mod:`.nmnist`           N-MNIST dataset
:mod:`.dvs_gesture`      DVS128 Gesture dataset (labelled windows, official split lists)
:mod:`.cifar10dvs`       CIFAR10-DVS dataset (deterministic per-class split)
:mod:`.frames`           frames by time / by count, count images, down-scaling
:mod:`.augment`          random crop + flip of a sample, the same for all of its frames
:mod:`.denoise`          background-activity filter
:mod:`.loader`           batches ``[T, B, C, H, W]`` / ``[B, C, H, W]``, one sample in memory
:mod:`.emulator`         image -> events along N-MNIST's saccades; N-MNIST tree writer
=======================  ====================================================================
"""

from .aedat import aedat_version, read_aedat
from .aedat2 import DVS128_SENSOR, decode_dvs128, read_aedat2
from .aedat31 import Aedat31File, read_aedat31
from .augment import EventAugmentation, augment_event_batch, flip_events, shift_events
from .cifar10dvs import CIFAR10DVS, CIFAR10DVS_CLASSES
from .dataset import EventDataset
from .denoise import background_activity_filter
from .dvs_gesture import DVS_GESTURE_CLASSES, DVSGesture, read_gesture_labels
from .emulator import (
    EmulatorConfig,
    dvs_pixel_events,
    emulate_image,
    emulate_images,
    render_saccades,
    saccade_displacements,
    write_nmnist_dataset,
)
from .frames import ToCounts, ToFrames, downscale_events, to_counts, to_frames
from .loader import EventBatchLoader
from .nmnist import NMNIST
from .nmnist_bin import (
    NMNIST_SENSOR,
    decode_nmnist,
    encode_nmnist,
    read_nmnist_file,
    write_nmnist_file,
)
from .npz import read_events_npz, write_events_npz
from .types import EVENT_DTYPE, SensorSize, empty_events, make_events, validate_events

__all__ = [
    "CIFAR10DVS",
    "CIFAR10DVS_CLASSES",
    "DVS128_SENSOR",
    "DVSGesture",
    "DVS_GESTURE_CLASSES",
    "EVENT_DTYPE",
    "NMNIST",
    "NMNIST_SENSOR",
    "Aedat31File",
    "EmulatorConfig",
    "EventAugmentation",
    "EventBatchLoader",
    "EventDataset",
    "SensorSize",
    "ToCounts",
    "ToFrames",
    "aedat_version",
    "augment_event_batch",
    "background_activity_filter",
    "decode_dvs128",
    "decode_nmnist",
    "downscale_events",
    "dvs_pixel_events",
    "emulate_image",
    "emulate_images",
    "empty_events",
    "encode_nmnist",
    "flip_events",
    "make_events",
    "read_aedat",
    "read_aedat2",
    "read_aedat31",
    "read_events_npz",
    "read_gesture_labels",
    "read_nmnist_file",
    "render_saccades",
    "saccade_displacements",
    "shift_events",
    "to_counts",
    "to_frames",
    "validate_events",
    "write_events_npz",
    "write_nmnist_dataset",
    "write_nmnist_file",
]
