"""From FITS files (a local tree or MAST) to plain records, written by one batched writer."""
