"""The sky and the array: station positions, coordinates, the primary beam, the VLA calibrator
list, point-source sky models and their visibilities, catalogues."""
