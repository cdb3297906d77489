"""Names shared by several test modules."""

REAL_FILES = (
    "ldfd01010_jif.fits.gz",
    "ldfd01010_jit.fits.gz",
    "ldfd01010_asn.fits.gz",
    "ldngz2szj_jit.fits.gz",
    "ldxe02010_jit.fits.gz",
    "ibxy01z8q_ima.fits",
    "sample_ipppssoot_flc.fits",
    "sample_ipppssoot_flt.fits",
)
