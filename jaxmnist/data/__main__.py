"""`python -m jaxmnist.data`: see jaxmnist.data.cli."""

from jaxmnist.data.cli import main

raise SystemExit(main())
