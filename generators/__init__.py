"""Synthetic-data generators (installed as ``alldata.generators``), one file per family.

* ``diffusion`` (:mod:`alldata.generators.diffusion`): class- and morphology-conditional
  UNet (diffusers), classifier-free guidance, EMA, DDIM / DPM-Solver++ sampling.
* ``gan`` (:mod:`alldata.generators.gan`): conditional GAN with spectral norm and
  DiffAugment, for tiny data.
* ``overlap`` (:mod:`alldata.generators.overlap`): real cells with masks composed onto
  real smear backgrounds, with exact instance masks.

A new family is one file with one ``@GENERATORS.register("name")`` on a :class:`Generator`
subclass. Importing this package is light: a family's module (and torch) is imported the
first time :data:`GENERATORS` is asked for it.
"""

from alldata.generators.base import GENERATORS, Generator, GeneratorError, family_traits, trainable_families

__all__ = ["GENERATORS", "Generator", "GeneratorError", "family_traits", "trainable_families"]
