"""Frozen COS (methods/cos_frozen.py): COS's calibrated v(0) averaged over calibration images
into a static per-neuron v(0)."""

from __future__ import annotations

import torch

import spikebridge as sb
from spikebridge.checkpoint import load_checkpoint
from spikebridge.shipped import SHIPPED_MODEL_DIR


def test_frozen_on_one_image_is_online_cos_on_that_image():
    """Calibrated on a single image, the mean is that image's own calibration: the static
    network then gives online COS's outputs on it, bit for bit, with no pre-simulation."""
    ann, _ = load_checkpoint(SHIPPED_MODEL_DIR)
    torch.manual_seed(0)
    image = torch.randn(1, 1, 28, 28)
    frozen = sb.convert(ann, "cos-frozen", rho=4, calibration_data=[(image, torch.zeros(1))],
                        calibration_samples=1)
    assert not frozen.method.needs_sequence_mode() and frozen.frames_needed(1) == 1
    online = sb.convert(ann, "cos", rho=4)
    assert torch.equal(sb.simulate(frozen, image, 6), sb.simulate(online, image, 6, mode="layer"))


def test_frozen_state_is_the_mean_over_images():
    ann, _ = load_checkpoint(SHIPPED_MODEL_DIR)
    torch.manual_seed(1)
    images = torch.randn(4, 1, 28, 28)
    together = sb.convert(ann, "cos-frozen", calibration_data=[(images, torch.zeros(4))],
                          calibration_samples=4)
    first = next(iter(together.neurons()))
    # the first IF layer sees only the constant input current: its calibration is per image
    singles = [sb.convert(ann, "cos-frozen", calibration_data=[(images[i:i + 1], torch.zeros(1))],
                          calibration_samples=1).neurons()[first].initial_state
               for i in range(4)]
    expected = torch.stack(singles).to(torch.float64).mean(0).to(torch.float32)
    assert torch.allclose(together.neurons()[first].initial_state, expected, atol=1e-6)
