"""fstool: reproducible filesystem (ext2/3/4, SquashFS, FAT) and disk (GPT, MBR) images."""

__version__ = "0.1.0"
