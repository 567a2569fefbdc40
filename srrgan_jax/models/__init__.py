"""The SRRGAN generator (U-Net) and discriminator (PatchGAN) as Flax modules."""

from srrgan_jax.models.discriminator import build_discriminator
from srrgan_jax.models.discriminator import init_discriminator
from srrgan_jax.models.generator import build_generator
from srrgan_jax.models.generator import init_generator

__all__ = [
    'build_discriminator', 'build_generator', 'init_discriminator', 'init_generator'
]
