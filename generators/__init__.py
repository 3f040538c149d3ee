"""Synthetic-data generators (installed as ``alldata.generators``), one file per family.

* ``diffusion`` (:mod:`alldata.generators.ddpm`): class- and morphology-conditional UNet
  (diffusers), classifier-free guidance, EMA, DDIM / DPM-Solver++ sampling.
* ``gan`` (:mod:`alldata.generators.gan`): conditional GAN with spectral norm and
  DiffAugment, for tiny data.
* ``overlap`` (:mod:`alldata.generators.overlap`): real cells with masks composed onto
  real smear backgrounds, with exact instance masks.

Importing this package is light; a family's module (and torch) is imported on first use
through :func:`get_family`.
"""

from alldata.generators.base import FAMILY_MODULES, GENERATORS, Generator, GeneratorError, get_family

__all__ = ["FAMILY_MODULES", "GENERATORS", "Generator", "GeneratorError", "get_family"]
