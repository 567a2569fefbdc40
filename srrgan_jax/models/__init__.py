"""The SRRGAN generator (U-Net) and discriminator (PatchGAN) as Flax modules."""

from srrgan_jax.models.discriminator import build_discriminator
from srrgan_jax.models.discriminator import init_discriminator
from srrgan_jax.models.forward import GeneratorForward
from srrgan_jax.models.forward import from_unit
from srrgan_jax.models.forward import generate
from srrgan_jax.models.forward import to_unit
from srrgan_jax.models.generator import build_generator
from srrgan_jax.models.generator import init_generator

__all__ = [
    'GeneratorForward', 'build_discriminator', 'build_generator', 'from_unit', 'generate',
    'init_discriminator', 'init_generator', 'to_unit'
]
