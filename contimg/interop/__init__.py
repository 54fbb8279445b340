"""Interoperability: Measurement Set export (and, to come, UVFITS/UVH5 export and generic input)."""
