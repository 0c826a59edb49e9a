"""``python -m trackcheck +model=resnet``"""

from trackcheck.cli import main

if __name__ == "__main__":
    main()
