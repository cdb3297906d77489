"""Circular PSF profiles (Moffat, Gaussian) and what square pixels make of them.

Shared by the PSF measurement (a nominal FWHM must be compared after pixelation) and by the
synthetic images that inject stars of known width.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq

__all__ = ["Profile", "fwhm_after_pixelation", "moffat_gamma", "pixel_value", "profile_value"]

Profile = Literal["moffat", "gaussian"]


def moffat_gamma(fwhm_pix: float, alpha: float) -> float:
    """Moffat core width γ in pixels for a FWHM in pixels and power index α."""
    return fwhm_pix / (2.0 * math.sqrt(2.0 ** (1.0 / alpha) - 1.0))


def profile_value(
    r2: NDArray[np.float64], fwhm_pix: float, profile: Profile, alpha: float
) -> NDArray[np.float64]:
    """Unit-flux circular PSF at squared radii r2 (pixels²), per pixel²."""
    if profile == "gaussian":
        sigma2 = (fwhm_pix / (2.0 * math.sqrt(2.0 * math.log(2.0)))) ** 2
        return np.exp(-0.5 * r2 / sigma2) / (2.0 * math.pi * sigma2)
    if profile == "moffat":
        gamma2 = moffat_gamma(fwhm_pix, alpha) ** 2
        return (alpha - 1.0) / (math.pi * gamma2) * (1.0 + r2 / gamma2) ** (-alpha)
    msg = f"profile must be 'moffat' or 'gaussian', got {profile!r}"
    raise ValueError(msg)


def pixel_value(
    dx: float, dy: float, fwhm_pix: float, profile: Profile, alpha: float, sub: int = 40
) -> float:
    """Mean of the unit-flux PSF over the pixel whose centre is (dx, dy) from the star."""
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    gx, gy = np.meshgrid(dx + offsets, dy + offsets)
    return float(profile_value(gx**2 + gy**2, fwhm_pix, profile, alpha).mean())


def fwhm_after_pixelation(
    fwhm_pix: float, profile: Profile = "moffat", alpha: float = 2.5
) -> float:
    """FWHM in pixels of a circular PSF after integration over square pixels.

    The profile integrated over a pixel is what pixel values sample; its half-maximum radius is
    averaged over the pixel axis and the diagonal, since the pixel box is not round.  A radial
    profile fit on real pixels measures this, not the optical FWHM (the handbook tables give the
    latter).
    """
    peak = pixel_value(0.0, 0.0, fwhm_pix, profile, alpha)
    widths = []
    for ux, uy in ((1.0, 0.0), (math.sqrt(0.5), math.sqrt(0.5))):

        def excess(d: float, ux: float = ux, uy: float = uy) -> float:
            return pixel_value(d * ux, d * uy, fwhm_pix, profile, alpha) - 0.5 * peak

        widths.append(2.0 * brentq(excess, 1e-3, 5.0 * fwhm_pix + 2.0))
    return float(np.mean(widths))
