"""``python -m spurlab.cli``."""
from spurlab.cli import main

main()
