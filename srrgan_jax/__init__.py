"""srrgan-jax: super-resolution and restoration GAN (U-Net + PatchGAN) in JAX/Flax."""

__version__ = '0.1.0'
