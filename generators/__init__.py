"""Synthetic-data generators (installed as ``alldata.generators``), one file per family.

Families register themselves in :data:`GENERATORS` by name; none ships in this release
yet (diffusion, GAN and overlap composition are the planned families).
"""

from alldata.registry import Registry

__all__ = ["GENERATORS"]

#: Generator families by name.
GENERATORS: Registry = Registry("generator")
