"""The DSA-110 simulator: real layout and file format, a known sky, gains, noise and RFI."""

from contimg.sim.simulate import SimulatedGroup, simulate

__all__ = ["simulate", "SimulatedGroup"]
