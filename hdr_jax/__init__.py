"""hdr_jax: single-image HDR reconstruction in JAX/Flax.

Stage 1 (DrTMO, Endo et al. 2017) generates an exposure bracket from one LDR photo and merges it
into an HDR radiance map; stage 2 (CF-Net, Deng et al. 2021) fuses an extreme under/over pair and
super-resolves it.

Conventions: images are NHWC float32; exposure brackets are NDHWC with D the exposure axis.
"""

__version__ = "0.1.0"
