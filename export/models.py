"""The learned models, in PyTorch: an eigen-image refiner for denoising and a residue classifier.

Denoiser: signal subspace + learned spatial refinement of the eigen-images
--------------------------------------------------------------------------
A farmland cube is spectrally low-rank, and the classical stage
(:mod:`onboard.stages.denoise`) already does everything a subspace method needs, for any
band count >= ``MIN_BANDS``: dead-pixel fill, column-stripe removal, the band noise
covariance (band-dependent and band-correlated noise), whitening and the signal subspace.
What it does least well is the last step, denoising the eigen-images: a local Wiener
gain on an undecimated Haar transform is a fixed rule that blurs parcel borders and leaves
some noise in texture. That step is learned here, on simulated parcels and on real texture
(the training-split real cubes, ``export/real_cubes.py``).

Why this split and not a network over the whole cube (3-D or band-sliding convolutions):

* **Any band count, any instrument**: the network never sees bands, only eigen-images in
  whitened units, where the noise is white with standard deviation 1 whatever the sensor,
  the band count or how the noise varied across bands. One model serves ImSPOC (24
  reconstructed, band-correlated bands) and the push-broom (81 bands, stripes, dead pixels).
* **Cost**: the network runs on k (typically 4-10) eigen-images instead of B (24-81)
  bands, and the B x B linear algebra is cheap numpy.
* **INT8**: the leading eigen-image carries a signal hundreds of times its noise, more
  dynamic range than 8 bits hold, so a quantised network fed the eigen-image itself loses
  the noise under its quantisation step. The network is therefore fed what the classical
  rule removed, ``z - y0`` (noise plus the detail the rule blurred, a few noise standard
  deviations in range), and a guide ``y0 / scale`` (the classical estimate, unit range,
  telling it where the borders are); it returns a correction, and ``y0 + correction``
  (added in float32 outside the network) is the estimate. Every tensor inside the network
  is of unit order, so per-tensor INT8 scales lose little.

Input ``eigenimages`` (k, 2, H, W) float32; output ``correction`` (k, 1, H, W) float32 in
whitened units; k, H, W dynamic.

Residue classifier
------------------
Per pixel with a 17 x 17 context: the spectrum divided by its band mean (brightness-free
shape) and the log of that mean, then 1 x 1 convolutions over the bands (a learned
spectral feature extractor, like an MLP on each spectrum), four 3 x 3 convolutions with
dilations 1, 1, 2, 4 for the context, a softmax head for the residue / soil / green
fractions (non-negative, summing to one) and a head for the spread ``s`` of the residue
fraction's error (``SPREAD_RANGE``). The tillage class probabilities are not a head of their
own: they are the probabilities that the true cover lies in each class's interval if it is
Gaussian around the estimate ``f`` with standard deviation ``s`` (``Phi`` by the logistic
approximation ``sigmoid(1.702 z)``, within 0.01), the same rule as the classical stage's
confidence (onboard/stages/confidence.py). Why: with a head of its own, the class drifted
from the fraction on unseen spectra (ImSPOC validation: class 44.5 % where the fraction's own
class was 50.3 %; a map whose class contradicts its cover), and the spread, trained by the
class's likelihood, makes the confidence an error estimate of the pixel rather than a
softmax's certainty. Bands inside the atmospheric water bands
(``onboard.stages.residue.WATER_BANDS_NM``) are multiplied by zero inside the graph, before
anything else: what a sensor reads there is the atmosphere, and the real spectral libraries
have no samples there (a bridge), so the model must not learn from them. Why that much context: a tillage class
belongs to a parcel (tens of pixels across), and a 24-band snapshot reconstruction carries
~0.02 reflectance of noise per pixel, so the class is read from the neighbourhood. Measured
on the ImSPOC (160 training tiles, 24 held-out, 1500 steps): a 5 x 5 context gave 84.4 %
tillage accuracy / 0.048 residue MAE, 17 x 17 90.4 % / 0.041 (33 x 33 with 48-pixel crops:
+1.1 points for 2.4 x the training time; not taken). The features of the spectrum itself are concatenated to the context's, so a pixel
at a parcel border keeps its own spectrum's say. The band grid is fixed per model (the
manifest records it); input ``cube`` (1, B, H, W) reflectance, outputs
``probabilities`` and ``fractions`` (1, 3, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from onboard.formats.types import TILLAGE_THRESHOLDS

#: Channels of the eigen-image refiner (inputs: residual, guide).
DENOISER_IN = 2
#: Added to a pixel's mean reflectance before dividing by it (an invalid pixel is 0).
BRIGHTNESS_FLOOR = 1e-3
#: (least, most) standard deviation of the residue cover's error the spread head gives.
SPREAD_RANGE = (0.01, 0.4)
#: Logistic approximation of the normal distribution function: Phi(z) ~ sigmoid(PHI_GAIN z).
PHI_GAIN = 1.702


class EigenRefiner(nn.Module):
    """Residual CNN on eigen-images: (k, 2, H, W) -> correction (k, 1, H, W).

    ``width`` feature channels, ``depth`` 3 x 3 convolutions in all (receptive field
    ``2 depth + 1`` pixels). Padding is zero-padding (1 pixel per layer), fine for any H, W.
    """

    def __init__(self, width: int = 24, depth: int = 6) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError("depth must be >= 2")
        layers: list[nn.Module] = [nn.Conv2d(DENOISER_IN, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        last = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(last.weight)  # starts as the classical estimate (correction 0)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.body = nn.Sequential(*layers)
        self.width, self.depth = width, depth

    def forward(self, eigenimages: torch.Tensor) -> torch.Tensor:
        return self.body(eigenimages)


class ResidueNet(nn.Module):
    """Per-pixel residue classifier with a spatial context: (1, B, H, W) -> probabilities,
    fractions (1, 3, H, W) each, both summing to one over the channel axis. ``dilations``: one 3 x 3
    context convolution per entry (context side ``1 + 2 sum(dilations)`` pixels)."""

    def __init__(self, bands: int, width: int = 32, dilations: tuple[int, ...] = (1, 1, 2, 4),
                 usable: Sequence[bool] | None = None) -> None:
        super().__init__()
        mask = torch.ones(bands) if usable is None else torch.tensor([float(u) for u in usable])
        if mask.numel() != bands or not mask.any():
            raise ValueError(f"usable marks {mask.numel()} bands, none of them usable or not {bands}")
        # (1, B, 1, 1): 1 for the bands read, 0 for the water bands
        self.register_buffer("band_weight", mask.reshape(1, bands, 1, 1))
        self.usable_count = float(mask.sum())
        self.spectral = nn.Sequential(
            nn.Conv2d(bands + 1, width, 1), nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU())
        context: list[nn.Module] = []
        for d in dilations:
            context += [nn.Conv2d(width, width, 3, padding=d, dilation=d,
                                  padding_mode="replicate"), nn.ReLU()]
        self.context = nn.Sequential(*context)
        self.dilations = tuple(dilations)
        # Per-feature standardisation of (shape, log brightness), set from the training data
        # (``set_standardisation``): subtle spectral differences become of unit order.
        self.register_buffer("feature_mean", torch.zeros(1, bands + 1, 1, 1))
        self.register_buffer("feature_std", torch.ones(1, bands + 1, 1, 1))
        self.fractions = nn.Conv2d(2 * width, 3, 1)
        self.spread = nn.Conv2d(2 * width, 1, 1)
        self.register_buffer("thresholds", torch.tensor(TILLAGE_THRESHOLDS, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.bands, self.width = bands, width

    @property
    def context_px(self) -> int:
        """Side of the square of pixels each output sees."""
        return 1 + 2 * sum(self.dilations)

    def inputs(self, cube: torch.Tensor) -> torch.Tensor:
        """Brightness (illumination, slope, exposure) scales a whole spectrum: the spectral
        layers see the shape (spectrum / its mean over the usable bands) and the log brightness
        apart, (1, B + 1, H, W), before standardisation; water bands are zero."""
        cube = cube * self.band_weight
        level = cube.sum(dim=1, keepdim=True).abs() / self.usable_count + BRIGHTNESS_FLOOR
        return torch.cat([cube / level, torch.log(level)], dim=1)

    def set_standardisation(self, cubes: torch.Tensor) -> None:
        """Feature mean and standard deviation from training cubes (n, B, H, W)."""
        with torch.no_grad():
            f = self.inputs(cubes)
            self.feature_mean.copy_(f.mean(dim=(0, 2, 3), keepdim=True))
            self.feature_std.copy_(f.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6))

    def features(self, cube: torch.Tensor) -> torch.Tensor:
        x = (self.inputs(cube) - self.feature_mean) / self.feature_std
        f = self.spectral(x)
        return torch.cat([f, self.context(f)], dim=1)

    def forward(self, cube: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.features(cube)
        fractions = torch.softmax(self.fractions(g), dim=1)
        lo, hi = SPREAD_RANGE
        spread = lo + (hi - lo) * torch.sigmoid(self.spread(g))
        # P(cover < threshold) for each threshold, then the mass of each class's interval
        below = torch.sigmoid(PHI_GAIN * (self.thresholds - fractions[:, :1]) / spread)
        probabilities = torch.cat([below[:, :1], below[:, 1:] - below[:, :-1], 1 - below[:, -1:]], dim=1)
        return probabilities, fractions


def parameter_count(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
