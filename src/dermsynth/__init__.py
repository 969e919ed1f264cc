"""dermsynth: targeted synthetic augmentation for fair dermatology classifiers."""

__version__ = "0.1.0"

from dermsynth.errors import DermsynthError

__all__ = ["DermsynthError", "__version__"]
