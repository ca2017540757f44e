"""python -m fstool"""
from .cli import run

if __name__ == "__main__":
    run()
