"""Portable media (IHE PDI, RAD-47): reading a CD/DVD/USB file-set (DICOMDIR) and showing it."""
