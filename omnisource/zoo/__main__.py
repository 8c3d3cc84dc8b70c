"""``python -m omnisource.zoo``: rewrite configs/ from the zoo table."""
from omnisource.zoo import write_recipes

if __name__ == "__main__":  # pragma: no cover
    paths = write_recipes()
    print(f"wrote {len(paths)} recipes under configs/")
