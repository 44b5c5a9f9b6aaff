"""Perceptual hashes (pHash, dHash) as 64-bit ints, and as unit vectors whose dot product encodes the Hamming distance.

Both follow the `imagehash` library's definitions bit for bit (grayscale, Lanczos resize, bits in row-major order,
the first bit the most significant, so `f"{h:016x}"` is imagehash's string):
- pHash: 32x32 grayscale, 2-D type-II DCT (unnormalised, as `scipy.fftpack.dct` on both axes), the top-left 8x8
  low-frequency block (the DC term included), each bit = coefficient > the block's median;
- dHash: 9x8 grayscale, each bit = a pixel brighter than its left neighbour.

They survive re-encoding and resizing and catch exact and near-exact copies cheaply, but not crops or edits:
SSCD is the learned alternative. `hash_to_vector` maps a hash to +-1/sqrt(nbits) entries, so that
`dot = 1 - 2 * hamming / nbits` and the same cosine-threshold search serves hashes and embeddings.

Example:
    >>> from PIL import Image
    >>> image = Image.effect_mandelbrot((256, 256), (-2, -1, 1, 1.5), 100).convert("RGB")
    >>> hamming(dhash(image), dhash(image.resize((64, 64)))), hamming(dhash(image), dhash(image.rotate(90)))
    (2, 35)
    >>> hamming_to_cosine(4)
    0.875
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from PIL import Image


NBITS = 64  # bits of an 8x8 hash


def _to_int(bits: np.ndarray) -> int:
    """Boolean bits in row-major order as an int, the first bit the most significant (as imagehash's hex)."""
    return int("".join("1" if bit else "0" for bit in bits.ravel()), 2)


def phash(image: Image.Image, hash_size: int = 8, highfreq_factor: int = 4) -> int:
    """The perceptual (DCT) hash of an image, `hash_size ** 2` bits (64 by default), as imagehash's `phash`.

    Example:
        >>> image = Image.effect_mandelbrot((256, 256), (-2, -1, 1, 1.5), 100).convert("RGB")
        >>> f"{phash(image):016x}", hamming(phash(image), phash(image.resize((64, 64))))
        ('c4e41b9a61733967', 2)
    """
    side = hash_size * highfreq_factor
    pixels = np.asarray(image.convert("L").resize((side, side), Image.Resampling.LANCZOS), dtype=np.float64)
    dct = scipy.fft.dctn(pixels, type=2)  # unnormalised, like scipy.fftpack.dct on axis 0 then axis 1
    low = dct[:hash_size, :hash_size]
    return _to_int(low > np.median(low))


def dhash(image: Image.Image, hash_size: int = 8) -> int:
    """The difference hash of an image, `hash_size ** 2` bits (64 by default), as imagehash's `dhash`.

    Example:
        >>> f"{dhash(Image.linear_gradient('L').rotate(90)):016x}"
        'ffffffffffffffff'
    """
    pixels = np.asarray(image.convert("L").resize((hash_size + 1, hash_size), Image.Resampling.LANCZOS))
    return _to_int(pixels[:, 1:] > pixels[:, :-1])


def hamming(a: int, b: int) -> int:
    """The number of differing bits of two hashes.

    Example:
        >>> hamming(0b1011, 0b0001)
        2
    """
    return (a ^ b).bit_count()


def hash_to_vector(bits: int, nbits: int = NBITS) -> np.ndarray:
    """A hash as a float32 unit vector of +-1/sqrt(nbits) (most significant bit first): dot = 1 - 2 * hamming / nbits.

    Example:
        >>> a, b = hash_to_vector(0b1111, nbits=4), hash_to_vector(0b1110, nbits=4)
        >>> float(a @ b), hamming_to_cosine(1, nbits=4)
        (0.5, 0.5)
    """
    if bits < 0 or bits >> nbits:
        raise ValueError(f"{bits:#x} is not a {nbits}-bit hash")
    packed = np.frombuffer(bits.to_bytes((nbits + 7) // 8, "big"), dtype=np.uint8)
    set_bits = np.unpackbits(packed)[-nbits:].astype(bool)
    return np.where(set_bits, np.float32(1), np.float32(-1)) / np.float32(np.sqrt(nbits))


def hamming_to_cosine(distance: float, nbits: int = NBITS) -> float:
    """The dot product of two `hash_to_vector` vectors whose hashes differ in `distance` bits.

    Example:
        >>> hamming_to_cosine(0), hamming_to_cosine(32)
        (1.0, 0.0)
    """
    return 1.0 - 2.0 * distance / nbits


__all__ = ["NBITS", "dhash", "hamming", "hamming_to_cosine", "hash_to_vector", "phash"]
